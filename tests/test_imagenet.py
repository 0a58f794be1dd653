"""ImageNet pieces: torchvision ResNet-34/50 (where torchvision imports), ResNet-34-A/B, the recipe."""
import pytest
import torch

from rewindkit import models, pruning
from rewindkit.core.masks import Mask
from rewindkit.recipe import IMAGENET_RECIPE
from rewindkit.training import make_optimizer

needs_torchvision = pytest.mark.skipif(not models.torchvision_available(),
                                       reason="torchvision does not import here (CUDA build next to a CPU torch)")


@needs_torchvision
@pytest.mark.parametrize("name,params,prunable", [("resnet34", 21_797_672, 21_779_648),
                                                  ("resnet50", 25_557_032, 25_502_912)])
def test_torchvision_resnets_as_the_paper_used_them(name, params, prunable):
    model = models.vision_network(name)
    assert models.count_parameters(model) == params and Mask.ones(model).num_total() == prunable
    last_bn = "bn2" if name == "resnet34" else "bn3"
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    assert all(torch.count_nonzero(getattr(b, last_bn).weight) == 0 for b in blocks)


@needs_torchvision
@pytest.mark.parametrize("config,paper", [("resnet34_a", 0.9246), ("resnet34_b", 0.8937)])
def test_resnet34_structured_density_matches_paper(config, paper):
    assert abs(pruning.l1_filters(models.vision_network("resnet34"), config).density() - paper) < 0.003


@pytest.mark.skipif(models.torchvision_available(), reason="only where torchvision fails to import")
def test_imagenet_models_without_torchvision_fail_clearly():
    with pytest.raises(RuntimeError, match="needs torchvision .*rewindkit\\[vision\\]"):
        models.vision_network("resnet50")


def test_resnet34_configs_reject_other_networks():
    with pytest.raises(ValueError, match="defined for ResNet-34"):
        pruning.l1_filters(models.vision_network("resnet56"), "resnet34_a")


def test_imagenet_recipe():
    sched = IMAGENET_RECIPE.schedule(1_281_167)
    spe = sched.steps_per_epoch
    assert spe == 1251 and sched.total_steps == 90 * 1251
    assert sched.lr(0) == 0.0 and sched.lr(5 * spe) == pytest.approx(0.4)
    assert sched.lr(int(2.5 * spe)) == pytest.approx(0.2, rel=1e-3)
    assert [sched.lr(e * spe) for e in (30, 60, 80)] == pytest.approx([0.04, 0.004, 0.0004])
    assert sched.final_lr == pytest.approx(0.0004)
    model = models.vision_network("resnet20")  # any network with BatchNorm: weight decay excludes it
    opt = make_optimizer(model, IMAGENET_RECIPE)
    bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert all(g["nesterov"] for g in opt.param_groups)
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert (g["weight_decay"] == 0.0) == (ids <= bn) and (ids <= bn or not ids & bn)


# -- the ImageFolder pipeline -----------------------------------------------------------------------

from helpers import fabricate_imagefolder  # noqa: E402

from rewindkit import data
from rewindkit.data import imagenet  # noqa: E402
from rewindkit.profiles import get_profile  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return fabricate_imagefolder(tmp_path_factory.mktemp("imagenet"))


def test_missing_folder_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("REWINDKIT_IMAGENET", raising=False)
    with pytest.raises(FileNotFoundError, match=r"ImageNet not found: .*nowhere/train is missing.*REWINDKIT_IMAGENET"):
        data.load("imagenet", path=tmp_path / "nowhere")
    (tmp_path / "empty" / "train" / "n0").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "n0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="0 training and 0 validation images"):
        data.load("imagenet", path=tmp_path / "empty")


def test_folder_scan_and_the_authors_validation_split(folder, monkeypatch):
    monkeypatch.setenv("REWINDKIT_IMAGENET", str(folder))
    ds = data.load("imagenet")
    assert ds.classes == ("n00000000", "n00000001", "n00000002") and ds.num_classes == 3
    assert ds.n_train == 24 and sorted(set(ds.train_labels)) == [0, 1, 2]
    n_val = round(30 * 9_984 / 50_000)
    assert (ds.split_size("val"), ds.split_size("test")) == (n_val, 30 - n_val)
    assert not set(ds.val_files) & set(ds.test_files)
    assert imagenet.load_imagenet(folder).val_files == ds.val_files  # fixed, seed-independent split
    small = ds.subset(10, 4)
    assert small.n_train == 10 and set(small.train_files) <= set(ds.train_files) and small.split_size("val") == 4
    assert len(set(small.train_labels)) > 1  # a random subset, not the first class only
    with pytest.raises(ValueError, match="unknown decode 'gpu'; choose one of cpu, cuda"):
        imagenet.load_imagenet(folder, decode="gpu")


def test_both_datasets_satisfy_the_training_data_protocol(folder):
    """The in-memory Dataset and the streamed ImageFolderData give a run the same things, with one
    definition of the batch order: the examples of iteration s are those BatchOrder gives it."""
    from rewindkit.core.batches import BatchOrder, TrainingData
    streamed = imagenet.load_imagenet(folder, workers=0)
    memory = data.make_synthetic(n_train=24, n_test=10, num_classes=3)
    for ds in (streamed, memory):
        assert isinstance(ds, TrainingData)
        assert isinstance(ds.subset(12, 4), TrainingData) and isinstance(ds.to("cpu"), TrainingData)
    order = BatchOrder(24, 8, seed=3)
    want = [sorted(streamed.train_labels[i] for i in order.indices(s).tolist()) for s in range(4)]
    got = [sorted(y.tolist()) for _, y in streamed.batches(8, seed=3, start=0, stop=4)]
    assert got == want
    memory_labels = [y.tolist() for _, y in memory.batches(8, seed=3, start=0, stop=4)]
    assert memory_labels == [memory.train_y[order.indices(s)].tolist() for s in range(4)]
    for ds in (streamed, memory):
        with pytest.raises(ValueError, match=r"batch_size must be in 1..24 \(the training examples\); got 25"):
            next(ds.batches(25, seed=0, start=0, stop=1))


def test_random_resized_crop_box_stays_inside_the_image_with_the_paper_ranges():
    gen = torch.Generator().manual_seed(0)
    for h, w in ((375, 500), (500, 333), (32, 1000)):
        for _ in range(200):
            top, left, ch, cw = imagenet.random_resized_crop_box(h, w, gen)
            assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
    gen = torch.Generator().manual_seed(1)
    boxes = [imagenet.random_resized_crop_box(400, 400, gen) for _ in range(500)]
    areas = [b[2] * b[3] / 160_000 for b in boxes]
    ratios = [b[3] / b[2] for b in boxes]
    assert 0.07 < min(areas) < 0.15 and max(areas) > 0.9
    assert min(ratios) > 0.74 and max(ratios) < 1.34


def test_training_batches_are_a_function_of_seed_and_step(folder):
    ds = imagenet.load_imagenet(folder, workers=0)
    first = list(ds.batches(8, seed=3, start=0, stop=5))
    assert all(x.shape == (8, 3, 224, 224) and x.dtype == torch.float32 for x, _ in first)
    resumed = list(ds.batches(8, seed=3, start=3, stop=5))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first[3:], resumed))
    parallel = list(imagenet.load_imagenet(folder, workers=2).batches(8, seed=3, start=0, stop=5))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, parallel))
    other = next(ds.batches(8, seed=4, start=0, stop=1))
    assert not torch.equal(other[0], first[0][0])
    epoch = torch.cat([y for _, y in first[:3]])  # one epoch = 24 images = 3 batches: each image once
    assert sorted(epoch.tolist()) == sorted(ds.train_labels)
    x, y = next(ds.eval_batches("val", 4))
    assert x.shape == (4, 3, 224, 224) and abs(float(x.mean())) < 1.0


@needs_torchvision
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_decoding_gives_the_same_batches_as_cpu_decoding(folder):
    cpu = imagenet.load_imagenet(folder, workers=0).to("cuda")
    gpu = imagenet.load_imagenet(folder, workers=0, decode="cuda").to("cuda")
    for (a, ya), (b, yb) in zip(cpu.batches(8, 1, 0, 3), gpu.batches(8, 1, 0, 3)):
        assert torch.equal(ya, yb)
        # nvJPEG and libjpeg differ in IDCT rounding and chroma upsampling, so pixels differ by a few
        # levels; the crops, flips and order are the same, so the images correlate almost perfectly
        # (a different crop of these noise images would correlate near 0)
        corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
        assert corr > 0.9, corr


@needs_torchvision
def test_imagenet_grid_end_to_end_on_a_fabricated_folder(folder, tmp_path):
    from rewindkit.experiments import run_grid
    device = "cuda" if torch.cuda.is_available() else "cpu"
    profile = get_profile("imagenet", dataset_options={"path": str(folder), "workers": 2, "image_size": 64,
                                                       "resize": 72},
                          epochs=2, batch_size=8, warmup_epochs=1, milestones=(1,), densities=(0.5,),
                          retrain_times=(1, 2), techniques=("fine_tuning", "weight_rewinding", "lr_rewinding"),
                          iterative_retrain_times={"lr_rewinding": 2}, seeds=(1,), device=device,
                          bf16=device == "cuda")
    result = run_grid(profile, "one_shot", tmp_path / "runs", progress=False)
    assert len(result.results) == 6 and result.results.test_acc.between(0, 1).all()
    assert (result.results.density - 0.5).abs().max() < 1e-6
    assert result.base.network.tolist() == ["resnet50"]
    again = run_grid(profile, "one_shot", tmp_path / "runs", progress=False)  # cached: nothing retrained
    assert again.results.equals(result.results)


def test_imagenet_profiles_follow_the_paper():
    p = get_profile("imagenet")
    r = p.recipe
    assert (p.network, p.dataset, r.epochs, r.batch_size, r.lr, r.milestones, r.warmup_epochs) == \
        ("resnet50", "imagenet", 90, 1024, 0.4, (30, 60, 80), 5)
    assert r.nesterov and r.weight_decay == 1e-4 and not r.decay_batchnorm and r.fine_tune_lr == 0.0004
    assert p.retrain_times == (9, 18, 27, 36, 45, 54, 63, 72, 81, 90)
    assert get_profile("imagenet_resnet34").network == "resnet34"
    assert r.schedule(1_281_167).steps_per_epoch == 1251  # the paper's 112,590 steps = 90 × 1,251
