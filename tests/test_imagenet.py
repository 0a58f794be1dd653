"""ImageNet pieces: torchvision ResNet-34/50 (where torchvision imports), ResNet-34-A/B, the recipe."""
import pytest
import torch

from rewindkit import models, pruning
from rewindkit.masks import Mask
from rewindkit.training import IMAGENET_RECIPE, make_optimizer

needs_torchvision = pytest.mark.skipif(not models.torchvision_available(),
                                       reason="torchvision does not import here (CUDA build next to a CPU torch)")


@needs_torchvision
@pytest.mark.parametrize("name,params,prunable", [("resnet34", 21_797_672, 21_779_648),
                                                  ("resnet50", 25_557_032, 25_502_912)])
def test_torchvision_resnets_as_the_paper_used_them(name, params, prunable):
    model = models.create(name)
    assert models.count_parameters(model) == params and Mask.ones(model).num_total() == prunable
    last_bn = "bn2" if name == "resnet34" else "bn3"
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    assert all(torch.count_nonzero(getattr(b, last_bn).weight) == 0 for b in blocks)


@needs_torchvision
@pytest.mark.parametrize("config,paper", [("resnet34_a", 0.9246), ("resnet34_b", 0.8937)])
def test_resnet34_structured_density_matches_paper(config, paper):
    assert abs(pruning.l1_filters(models.create("resnet34"), config).density() - paper) < 0.003


@pytest.mark.skipif(models.torchvision_available(), reason="only where torchvision fails to import")
def test_imagenet_models_without_torchvision_fail_clearly():
    with pytest.raises(RuntimeError, match="needs torchvision .*rewindkit\\[vision\\]"):
        models.create("resnet50")


def test_resnet34_configs_reject_other_networks():
    with pytest.raises(ValueError, match="defined for ResNet-34"):
        pruning.l1_filters(models.create("resnet56"), "resnet34_a")


def test_imagenet_recipe():
    sched = IMAGENET_RECIPE.schedule(1_281_167)
    spe = sched.steps_per_epoch
    assert spe == 1251 and sched.total_steps == 90 * 1251
    assert sched.lr(0) == 0.0 and sched.lr(5 * spe) == pytest.approx(0.4)
    assert sched.lr(int(2.5 * spe)) == pytest.approx(0.2, rel=1e-3)
    assert [sched.lr(e * spe) for e in (30, 60, 80)] == pytest.approx([0.04, 0.004, 0.0004])
    assert sched.final_lr == pytest.approx(0.0004)
    model = models.create("resnet20")  # any network with BatchNorm: weight decay excludes it
    opt = make_optimizer(model, IMAGENET_RECIPE)
    bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert all(g["nesterov"] for g in opt.param_groups)
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert (g["weight_decay"] == 0.0) == (ids <= bn) and (ids <= bn or not ids & bn)
