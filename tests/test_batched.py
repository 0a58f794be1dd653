import pytest
import torch
from helpers import assert_close_across_kernels, kernel_path_tolerance, momentum_buffers

from rewindkit import data, models, pruning, techniques
from vmap_batched import RunSlot, train_batched
from rewindkit.recipe import Recipe
from rewindkit.training import TrainState, make_optimizer, snapshot, train_dense, train_steps

RECIPE = Recipe(epochs=8, batch_size=32, lr=0.1, milestones=(4, 6), weight_decay=2e-4)


def build():
    return models.vision_network("mnist1d_resnet", depth=8, width=4, num_classes=4)


@pytest.fixture(scope="module")
def setup():
    ds = data.make_synthetic(n_train=256, n_test=64, shape=(1, 16), num_classes=4, seed=2)
    sched = RECIPE.schedule(ds.n_train)
    dense = train_dense(build, ds, RECIPE, seed=5, rewind_steps=techniques.rewind_steps_needed([4, 8], sched),
                          progress=False)
    return ds, sched, dense


def sequential(ds, slot):
    model = build()
    opt = make_optimizer(model, RECIPE)
    techniques.load_state(model, opt, slot.state)
    train_steps(model, opt, ds, slot.lr_schedule, slot.state.step, slot.stop, seed=slot.seed,
                batch_size=RECIPE.batch_size, mask=slot.mask, progress=False, evaluate_every_epoch=False)
    return snapshot(model, opt, slot.stop)


def slots_for(sched, dense, t=4):
    out = []
    for i, (tech, density) in enumerate([("lr_rewinding", 0.3), ("fine_tuning", 0.1), ("weight_rewinding", 0.2),
                                         ("lr_rewinding", 0.05)]):
        plan = techniques.plan_retraining(tech, t, sched)
        start = dense.checkpoints[plan.rewind_step] if plan.start_from == "rewind" else dense.final
        mask = pruning.global_magnitude(dense.model, density)
        out.append(RunSlot(TrainState(start.model, start.optimizer, plan.start_step), plan.stop_step, seed=10 + i,
                           lr_schedule=plan.lr_schedule, mask=mask))
    return out


def test_batched_runs_equal_sequential_runs(setup):
    ds, sched, dense = setup
    slots = slots_for(sched, dense)
    batched = train_batched(build, ds, RECIPE, slots)
    assert len(batched) == len(slots)
    steps = slots[0].stop - slots[0].state.step
    # the longest reduction of a step: a weight gradient over batch × positions (helpers.py derives it)
    tol = kernel_path_tolerance(steps, RECIPE.batch_size * ds.input_shape[-1])
    for slot, got in zip(slots, batched):
        want = sequential(ds, slot)
        assert got.step == want.step == slot.stop
        assert_close_across_kernels(got.model, want.model, tol, "weights")
        assert_close_across_kernels(momentum_buffers(got.optimizer), momentum_buffers(want.optimizer), tol,
                                    "momentum")
        for n in slot.mask:  # same masks exactly: pruned weights and momentum exactly zero
            assert torch.count_nonzero(got.model[n][~slot.mask[n]]) == 0
    # the comparison can fail: the same run on another data stream is told apart
    other = RunSlot(slots[0].state, slots[0].stop, seed=99, lr_schedule=slots[0].lr_schedule, mask=slots[0].mask)
    with pytest.raises(AssertionError, match="allowed"):
        assert_close_across_kernels(sequential(ds, other).model, batched[0].model, tol, "weights")


def test_batched_runs_need_equal_lengths(setup):
    ds, sched, dense = setup
    slots = slots_for(sched, dense)
    slots[0].stop += 1
    with pytest.raises(ValueError, match="same number of iterations"):
        train_batched(build, ds, RECIPE, slots)
