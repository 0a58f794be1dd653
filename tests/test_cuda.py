"""The GPU path: the same invariants as on the CPU, on CUDA (skipped where there is no GPU, as in CI).

Run on a GPU machine with ``pytest tests/test_cuda.py``; benchmarks/RESULTS.md records where it ran.
"""
import math
import warnings

import pytest
import torch
from helpers import assert_close_across_kernels, kernel_path_tolerance, momentum_buffers, train_in_segments

from rewindkit import data, models, pruning, techniques
from vmap_batched import RunSlot, train_batched
from rewindkit.experiments import run_grid
from rewindkit.profiles import get_profile
from rewindkit.platform.hardware import Hardware
from rewindkit.recipe import Recipe
from rewindkit.training import TrainState, make_optimizer, snapshot, train_dense, train_steps

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = Hardware(device="cuda")
RECIPE = Recipe(epochs=6, batch_size=32, lr=0.1, milestones=(3, 5), weight_decay=2e-4)
REDUCTION = 32 * 16  # longest reduction of a step: a weight gradient over batch × positions (helpers.py)


def build():
    return models.vision_network("mnist1d_resnet", depth=8, width=8, num_classes=4)


@pytest.fixture(scope="module")
def ds():
    return data.make_synthetic(n_train=256, n_test=64, shape=(1, 16), num_classes=4, seed=1).to("cuda")


@pytest.fixture(scope="module")
def dense(ds):
    sched = RECIPE.schedule(ds.n_train)
    return train_dense(build, ds, RECIPE, seed=7, rewind_steps=techniques.rewind_steps_needed([2, 4], sched),
                         hardware=CUDA, progress=False)


@pytest.fixture
def exact_fp32():
    """TF32 off and deterministic cuDNN, so two ways of computing the same run differ only by fp32 rounding."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.deterministic,
     torch.backends.cudnn.benchmark) = saved


@pytest.mark.parametrize("net", ["resnet20", "mnist1d_resnet"])
def test_pruning_rules_give_the_same_masks_on_cuda_and_cpu(net):
    torch.manual_seed(0)
    cpu_model = models.vision_network(net)
    gpu_model = models.vision_network(net).cuda()
    gpu_model.load_state_dict(cpu_model.state_dict())
    for rule in (lambda m: pruning.global_magnitude(m, 0.2), lambda m: pruning.layerwise_magnitude(m, 0.3),
                 lambda m: pruning.random_pruning(m, 0.1, seed=3), lambda m: pruning.l1_filters(m, "generic_b", 2)):
        a, b = rule(cpu_model), rule(gpu_model)
        assert a.equal(b) and all(t.device.type == "cpu" for t in b.values())


def test_masked_cuda_training_keeps_pruned_weights_and_momentum_exactly_zero(ds, dense):
    model = dense.model
    optimizer = make_optimizer(model, RECIPE, CUDA)
    techniques.load_state(model, optimizer, dense.final)
    mask = pruning.global_magnitude(model, 0.1)
    params = dict(model.named_parameters())
    sched = dense.schedule

    def check(*_):
        for n in mask:
            keep = mask[n].cuda()
            assert torch.count_nonzero(params[n][~keep]) == 0, n
            assert torch.count_nonzero(optimizer.state[params[n]]["momentum_buffer"][~keep]) == 0, n

    train_steps(model, optimizer, ds, sched, 0, 2 * sched.steps_per_epoch, seed=1, batch_size=RECIPE.batch_size,
                mask=mask, hardware=CUDA, progress=False, on_epoch=check)
    check()
    assert abs(mask.density() - 0.1) < 1e-3


def test_cuda_run_matches_cpu_run(ds, exact_fp32):
    """Same recipe, data order and augmentation draws: only float rounding differs (fused SGD, cuDNN).
    One epoch: training amplifies rounding differences exponentially, so longer runs drift apart."""
    recipe = Recipe(epochs=1, batch_size=32, lr=0.1, milestones=(), weight_decay=2e-4)
    cpu = train_dense(build, ds.to("cpu"), recipe, seed=3, progress=False)
    gpu = train_dense(build, ds, recipe, seed=3, hardware=CUDA, progress=False)
    steps = recipe.schedule(ds.n_train).total_steps
    assert_close_across_kernels({k: v.cpu() for k, v in gpu.final.model.items()}, cpu.final.model,
                                kernel_path_tolerance(steps, REDUCTION))


def test_cuda_resumed_run_equals_uninterrupted(ds, exact_fp32):
    stop = RECIPE.schedule(ds.n_train).total_steps
    torch.manual_seed(0)
    initial = build()
    mask = pruning.global_magnitude(initial, 0.5)
    whole = train_in_segments(build, ds, RECIPE, initial, mask, [(0, stop)], CUDA)
    pieces = train_in_segments(build, ds, RECIPE, initial, mask, [(0, 5), (5, 19), (19, stop)], CUDA)
    for k in whole.model:
        assert torch.equal(whole.model[k], pieces.model[k]), k  # same kernels (deterministic cuDNN): bit for bit


def test_no_host_sync_inside_an_epoch(ds):
    """Syncs come from set-up (the mask's factors copied to the device), the once-per-epoch loss
    read and epoch draw, and the final evaluation — never per step. Counted for runs of 1 and of 3
    epochs: the difference is what two more epochs cost, at most 2 syncs each, where one sync per
    step would add 16 (on an H200 the eager data step turned each step's position into a device
    tensor: one sync a step)."""
    model = build().cuda()
    optimizer = make_optimizer(model, RECIPE, CUDA)
    sched = RECIPE.schedule(ds.n_train)
    mask = pruning.global_magnitude(model, 0.3)
    train_steps(model, optimizer, ds, sched, 0, 2, seed=0, batch_size=RECIPE.batch_size, mask=mask, hardware=CUDA,
                progress=False)  # warm-up: allocations, cuDNN choices

    def syncs(epochs):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train_steps(model, optimizer, ds, sched, 0, epochs * sched.steps_per_epoch, seed=0,
                            batch_size=RECIPE.batch_size, mask=mask, hardware=CUDA, progress=False,
                            evaluate_every_epoch=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message).lower()]

    one, three = syncs(1), syncs(3)
    assert sched.steps_per_epoch == 8
    assert len(three) - len(one) <= 2 * 2, (one, three)


@pytest.mark.parametrize("bf16", [False, True])
def test_cuda_graph_step_equals_eager_step(ds, dense, exact_fp32, bf16):
    """Whole-step CUDA graphs change how the step is launched, not what it computes: same weights,
    momentum and BatchNorm statistics as the eager loop, from the very first step (no momentum yet)
    and from a rewound state, with masks exact."""
    mask = pruning.global_magnitude(dense.model, 0.2)
    torch.manual_seed(5)
    fresh = build()
    initial = snapshot(fresh, make_optimizer(fresh, RECIPE), 0)  # no momentum buffers yet
    for start, begin in ((initial, 0), (dense.final, dense.schedule.total_steps - 8)):
        states = []
        for graphs in (False, True):
            hw = Hardware(device="cuda", bf16=bf16, cuda_graphs=graphs)
            model = build().cuda()
            opt = make_optimizer(model, RECIPE, hw)
            techniques.load_state(model, opt, TrainState(start.model, start.optimizer, begin))
            records = train_steps(model, opt, ds, dense.schedule, begin, begin + 12, seed=4,
                                  batch_size=RECIPE.batch_size, mask=mask, hardware=hw, progress=False)
            states.append((snapshot(model, opt, begin + 12), records))
        (eager, eager_records), (graphed, graphed_records) = states
        # bf16 autocast too: the kernels accumulate in fp32 and both paths round the same values to bf16
        tol = kernel_path_tolerance(12, REDUCTION)
        assert_close_across_kernels(graphed.model, eager.model, tol, "weights")
        assert_close_across_kernels(momentum_buffers(graphed.optimizer), momentum_buffers(eager.optimizer), tol,
                                    "momentum")
        assert [r.train_loss for r in graphed_records] == pytest.approx([r.train_loss for r in eager_records],
                                                                        rel=tol)
        assert [g["lr"] for g in graphed.optimizer["param_groups"]] == [g["lr"] for g in eager.optimizer["param_groups"]]
        for n in mask:
            assert torch.count_nonzero(graphed.model[n][~mask[n]]) == 0


def test_batched_runs_equal_sequential_runs_on_cuda(ds, dense, exact_fp32):
    sched = dense.schedule
    slots = []
    for i, (tech, density) in enumerate([("lr_rewinding", 0.3), ("fine_tuning", 0.1), ("weight_rewinding", 0.2)]):
        plan = techniques.plan_retraining(tech, 2, sched)
        start = dense.checkpoints[plan.rewind_step] if plan.start_from == "rewind" else dense.final
        slots.append(RunSlot(TrainState(start.model, start.optimizer, plan.start_step), plan.stop_step, seed=10 + i,
                             lr_schedule=plan.lr_schedule, mask=pruning.global_magnitude(dense.model, density)))
    batched = train_batched(build, ds, RECIPE, slots, CUDA)
    for slot, got in zip(slots, batched):
        model = build().cuda()
        opt = make_optimizer(model, RECIPE, CUDA)
        techniques.load_state(model, opt, slot.state)
        train_steps(model, opt, ds, slot.lr_schedule, slot.state.step, slot.stop, seed=slot.seed,
                    batch_size=RECIPE.batch_size, mask=slot.mask, hardware=CUDA, progress=False)
        want = snapshot(model, opt, slot.stop)
        assert_close_across_kernels(got.model, want.model, kernel_path_tolerance(slot.stop - slot.state.step, REDUCTION))
        for n in slot.mask:
            assert torch.count_nonzero(got.model[n][~slot.mask[n]]) == 0


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_bf16_fast_path_trains_under_masks(ds, dense, mode):
    """Retraining channels_last from a state saved in NCHW (buffers adopt the parameters' layout)."""
    hw = Hardware(device="cuda", bf16=True, channels_last=True, compile=True, compile_mode=mode)
    mask = pruning.global_magnitude(dense.model, 0.2)
    plan = techniques.plan_retraining("lr_rewinding", 2, dense.schedule)
    model, history = techniques.retrain(build, ds, RECIPE, plan, mask, final=dense.final, seed=7, hardware=hw,
                               progress=False)
    state = model.state_dict()
    for n in mask:
        assert torch.count_nonzero(state[n][~mask[n].cuda()]) == 0
    eager, eager_history = techniques.retrain(build, ds, RECIPE, plan, mask, final=dense.final, seed=7, hardware=CUDA,
                                     progress=False)
    losses = [h.train_loss for h in history]
    eager_losses = [h.train_loss for h in eager_history]
    assert all(map(math.isfinite, losses)), losses
    # bf16 changes rounding, not the recipe: the losses follow the fp32 run closely
    assert losses == pytest.approx(eager_losses, rel=0.1, abs=0.02)


def test_smoke_grid_on_cuda(tmp_path):
    profile = get_profile("smoke", device="cuda", bf16=True, workers=1)
    result = run_grid(profile, "one_shot", tmp_path, progress=False)
    assert len(result.results) > 0 and result.results["test_acc"].notna().all()
    assert sorted(result.results["density"].round(1).unique()) == [0.1, 0.5]


def test_cuda_graph_with_its_data_step_equals_eager_with_cifar_augmentation(exact_fp32):
    """The data step inside the graph (issue 13 §2): gather, pad-crop-flip and per-image
    standardisation read the batch position from a device tensor; the batches are those of the
    eager loop, so the weights agree to within the derived kernel-path tolerance."""
    import dataclasses
    cifar = dataclasses.replace(data.make_synthetic(n_train=128, n_test=32, shape=(3, 32, 32), num_classes=4, seed=2),
                                augmentation="cifar", per_image_standardization=True).to("cuda")

    def build20():
        return models.vision_network("resnet20", width=4, num_classes=4)

    states = []
    for graphs in (False, True):
        hw = Hardware(device="cuda", cuda_graphs=graphs)
        torch.manual_seed(3)
        model = build20().cuda()
        opt = make_optimizer(model, RECIPE, hw)
        sched = RECIPE.schedule(cifar.n_train)
        train_steps(model, opt, cifar, sched, 0, 2 * sched.steps_per_epoch + 1, seed=9, batch_size=RECIPE.batch_size,
                    hardware=hw, progress=False, evaluate_every_epoch=False)
        states.append(snapshot(model, opt, 0))
    steps = 2 * RECIPE.schedule(cifar.n_train).steps_per_epoch + 1
    tol = kernel_path_tolerance(steps, RECIPE.batch_size * 32 * 32)
    assert_close_across_kernels(states[1].model, states[0].model, tol, "weights")


def test_packed_runs_on_cuda_are_bitwise_the_runs_alone(tmp_path, exact_fp32):
    """K runs packed on one GPU, each replaying its own CUDA graph on its own stream, give the same
    final weights bit for bit as the same runs one at a time (issue 13 §1)."""
    profile = get_profile("smoke", device="cuda", cuda_graphs=True, workers=1, densities=(0.5,),
                          techniques=("fine_tuning", "weight_rewinding", "lr_rewinding"))
    alone = run_grid(profile, "one_shot", tmp_path / "alone", progress=False)
    packed = run_grid(get_profile(profile, packing=4), "one_shot", tmp_path / "packed", progress=False)
    assert alone.run_ids == packed.run_ids
    for run_id in packed.run_ids:
        a = torch.load(tmp_path / "alone" / "runs" / run_id / "final.pt")
        b = torch.load(tmp_path / "packed" / "runs" / run_id / "final.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), run_id
