import pytest
import torch
from helpers import train_in_segments

from rewindkit import data, models, pruning, techniques
from rewindkit.core.masks import Mask, MaskEnforcer
from rewindkit.recipe import Recipe
from rewindkit.core.schedules import StepSchedule
from rewindkit.training import make_optimizer, snapshot, train_dense, train_steps

RECIPE = Recipe(epochs=6, batch_size=32, lr=0.1, milestones=(3, 5), weight_decay=2e-4)


@pytest.fixture(scope="module")
def ds():
    return data.make_synthetic(n_train=128, n_test=64, shape=(1, 16), num_classes=4, seed=1)


def build():
    return models.vision_network("mnist1d_resnet", depth=8, width=4, num_classes=4)


@pytest.fixture(scope="module")
def dense(ds):
    sched = RECIPE.schedule(ds.n_train)
    rewinds = techniques.rewind_steps_needed([2, 4, 6], sched)
    return train_dense(build, ds, RECIPE, seed=7, rewind_steps=rewinds, progress=False)


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_paper_cifar_schedule():
    s = Recipe().schedule(50_000)
    assert s.steps_per_epoch == 390 and s.total_steps == 182 * 390
    assert s.lr(0) == 0.1 and s.lr(91 * 390 - 1) == 0.1
    assert s.lr(91 * 390) == pytest.approx(0.01) and s.lr(136 * 390 - 1) == pytest.approx(0.01)
    assert s.lr(136 * 390) == pytest.approx(0.001) and s.final_lr == pytest.approx(0.001)


def test_warmup_schedule_is_linear_from_zero():
    s = StepSchedule(0.4, 90, 10, (30, 60, 80), warmup_epochs=5)
    assert s.warmup_steps == 50
    assert [s.lr(i) for i in (0, 25, 49, 50)] == pytest.approx([0.0, 0.2, 0.4 * 49 / 50, 0.4])
    assert s.lr(300) == pytest.approx(0.04) and s.final_lr == pytest.approx(0.0004)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="milestones"):
        StepSchedule(0.1, 10, 5, (12,))
    with pytest.raises(ValueError, match="whole number of iterations"):
        StepSchedule(0.1, 10, 3, (2.5,))


def test_pruned_weights_exactly_zero_after_every_step(ds, dense):
    """Momentum, weight decay and a momentum buffer carried over from dense training."""
    model = build()
    optimizer = make_optimizer(model, RECIPE)
    techniques.load_state(model, optimizer, dense.final)
    assert any(v["momentum_buffer"].abs().sum() > 0 for v in optimizer.state.values())
    mask = pruning.global_magnitude(model, 0.1)
    params = dict(model.named_parameters())
    sched = RECIPE.schedule(ds.n_train)

    def check(*_):
        for n in mask:
            assert torch.count_nonzero(params[n][~mask[n]]) == 0, n
            buf = optimizer.state[params[n]]["momentum_buffer"]
            assert torch.count_nonzero(buf[~mask[n]]) == 0, n

    stream_steps = sched.steps_per_epoch
    for step in range(0, 3 * stream_steps, stream_steps // 2 or 1):  # several short segments
        train_steps(model, optimizer, ds, sched, step, step + max(stream_steps // 2, 1), seed=1,
                    batch_size=RECIPE.batch_size, mask=mask, progress=False, on_epoch=check)
        check()
    # the surviving weights did move
    assert not torch.equal(params["fc.weight"][mask["fc.weight"]],
                           dense.final.model["fc.weight"][mask["fc.weight"]])


def test_saved_state_has_exact_zeros(ds, dense, tmp_path):
    mask = pruning.global_magnitude(dense.model, 0.2)
    plan = techniques.plan_retraining("lr_rewinding", 2, dense.schedule)
    model, _ = techniques.retrain(build, ds, RECIPE, plan, mask, final=dense.final, seed=7, progress=False)
    state = model.state_dict()
    for n in mask:
        assert torch.count_nonzero(state[n][~mask[n]]) == 0


@pytest.mark.parametrize("t", [2, 4, 6])
def test_lr_traces_of_the_techniques(ds, t):
    sched = RECIPE.schedule(ds.n_train)
    spe, total = sched.steps_per_epoch, sched.total_steps
    wr = techniques.plan_retraining("weight_rewinding", t, sched)
    lrr = techniques.plan_retraining("lr_rewinding", t, sched)
    ft = techniques.plan_retraining("fine_tuning", t, sched)
    original = sched.trace(0, total)
    assert wr.start_step == lrr.start_step == total - t * spe and wr.stop_step == lrr.stop_step == total
    assert wr.lr_trace() == lrr.lr_trace() == original[total - t * spe:]
    assert ft.start_step == total and ft.stop_step == total + t * spe
    assert ft.lr_trace() == [sched.final_lr] * (t * spe)
    low = techniques.plan_retraining("low_lr_weight_rewinding", t, sched)
    assert low.rewind_step == total - t * spe and low.lr_trace() == [sched.final_lr] * (t * spe)
    reinit = techniques.plan_retraining("reinitialization", t, sched)
    # the whole schedule from a fresh init, then t epochs at its final LR (the authors' T + t)
    assert (reinit.start_step, reinit.stop_step, reinit.start_from) == (0, total + t * spe, "init")
    assert reinit.lr_trace() == original + [sched.final_lr] * (t * spe)


def test_the_dense_run_is_a_plan_and_epochs_trained_follow_the_plan_table(ds, dense):
    sched = dense.schedule
    plan = techniques.dense_plan(sched)
    assert (plan.technique, plan.start_from, plan.start_step, plan.stop_step) == (None, techniques.StartFrom.INIT,
                                                                                   0, sched.total_steps)
    assert plan.lr_trace() == sched.trace(0, sched.total_steps) and plan.name == "dense"
    assert plan.init_seed(7) == 7  # the dense run's own initialisation; reinitialization draws another
    reinit = techniques.plan_retraining("reinitialization", 2, sched)
    assert reinit.init_seed(7) != 7
    # start_state from the dense plan is exactly the dense run's initial model (train_dense)
    model, optimizer = techniques.start_state(build, RECIPE, plan, seed=7)
    start = train_dense(build, ds, RECIPE, seed=7, rewind_steps={0}, progress=False).checkpoints[0]
    assert all(torch.equal(v, start.model[k]) for k, v in model.state_dict().items())
    for tech in techniques.TECHNIQUES:  # epochs per run = the plan's iterations / iterations per epoch
        p = techniques.plan_retraining(tech, 2, sched)
        assert techniques.epochs_trained(tech, 2, sched.epochs) == p.steps / sched.steps_per_epoch
    assert techniques.starts_from("weight_rewinding") is techniques.StartFrom.REWIND
    with pytest.raises(ValueError, match="fine_tuning needs the final state; got None"):
        techniques.start_state(build, RECIPE, techniques.plan_retraining("fine_tuning", 2, sched), seed=7)


def test_lr_actually_used_by_the_optimizer(ds, dense):
    """Record the LR the optimizer holds at every step of an LRR run."""
    sched = dense.schedule
    plan = techniques.plan_retraining("lr_rewinding", 4, sched)
    model, optimizer = techniques.start_state(build, RECIPE, plan, final=dense.final, rewind=None, seed=7)
    seen = []
    original_step = optimizer.step

    def spy(*a, **k):
        seen.append(optimizer.param_groups[0]["lr"])
        return original_step(*a, **k)

    optimizer.step = spy
    train_steps(model, optimizer, ds, plan.lr_schedule, plan.start_step, plan.stop_step, seed=7,
                batch_size=RECIPE.batch_size, mask=Mask.ones(model), progress=False)
    assert seen == sched.trace(plan.start_step, plan.stop_step)


def test_weight_rewinding_restores_weights_and_momentum(ds, dense):
    sched = dense.schedule
    plan = techniques.plan_retraining("weight_rewinding", 4, sched)
    saved = dense.checkpoints[plan.rewind_step]
    assert saved.step == sched.total_steps - 4 * sched.steps_per_epoch
    model, optimizer = techniques.start_state(build, RECIPE, plan, final=dense.final,
                                          rewind=saved, seed=7)
    assert states_equal(model.state_dict(), saved.model)
    got = snapshot(model, optimizer, saved.step).optimizer["state"]
    want = saved.optimizer["state"]
    assert got.keys() == want.keys() and len(want) > 0
    assert all(torch.equal(got[k]["momentum_buffer"], want[k]["momentum_buffer"]) for k in want)
    # LRR and FT keep the final weights and momentum instead
    for tech in ("lr_rewinding", "fine_tuning"):
        m, o = techniques.start_state(build, RECIPE, techniques.plan_retraining(tech, 4, sched), final=dense.final,
                                  rewind=None, seed=7)
        assert states_equal(m.state_dict(), dense.final.model)
    with pytest.raises(ValueError, match="needs the checkpoint at iteration"):
        techniques.start_state(build, RECIPE, plan, final=dense.final, rewind=dense.final, seed=7)


def test_weight_rewinding_to_init_with_ones_mask_reproduces_dense_run(ds, dense):
    sched = dense.schedule
    plan = techniques.plan_retraining("weight_rewinding", sched.epochs, sched)
    assert plan.rewind_step == 0
    model, history = techniques.retrain(build, ds, RECIPE, plan, Mask.ones(dense.model), final=dense.final,
                               rewind=dense.checkpoints[0], seed=7, data_seed=7, progress=False)
    assert states_equal(model.state_dict(), dense.final.model)
    assert [h.test_acc for h in history] == [h.test_acc for h in dense.history]
    # by default a retraining run draws its own batches, so the same start does not reproduce it
    fresh, _ = techniques.retrain(build, ds, RECIPE, plan, Mask.ones(dense.model), final=dense.final,
                         rewind=dense.checkpoints[0], seed=7, progress=False)
    assert not states_equal(fresh.state_dict(), dense.final.model)


def test_every_retraining_run_draws_its_own_batches():
    """The authors' pipeline reshuffles per run: no two runs of a grid share a data stream (§4)."""
    seeds = {techniques.retraining_data_seed(1, tech, t, "density=0.5", level)
             for tech in techniques.TECHNIQUES for t in (2, 4) for level in (1, 2)}
    assert len(seeds) == len(techniques.TECHNIQUES) * 2 * 2
    assert techniques.retraining_data_seed(1, "lr_rewinding", 4) == techniques.retraining_data_seed(1, "lr_rewinding", 4.0)


def test_resumed_run_equals_uninterrupted(ds):
    stop = RECIPE.schedule(ds.n_train).total_steps
    torch.manual_seed(0)
    initial = build()
    mask = pruning.global_magnitude(initial, 0.5)
    whole = train_in_segments(build, ds, RECIPE, initial, mask, [(0, stop)])
    pieces = train_in_segments(build, ds, RECIPE, initial, mask, [(0, 5), (5, 11), (11, stop)])
    assert states_equal(whole.model, pieces.model)
    assert all(torch.equal(whole.optimizer["state"][k]["momentum_buffer"], pieces.optimizer["state"][k]["momentum_buffer"])
               for k in whole.optimizer["state"])


def test_training_is_deterministic_and_learns(ds):
    a = train_dense(build, ds, RECIPE, seed=11, progress=False)
    b = train_dense(build, ds, RECIPE, seed=11, progress=False)
    c = train_dense(build, ds, RECIPE, seed=12, progress=False)
    assert states_equal(a.final.model, b.final.model)
    assert not states_equal(a.final.model, c.final.model)
    assert a.history[-1].val_acc > 0.5  # 4 classes: chance is 0.25


@pytest.mark.parametrize("t", [0, -1, 7, "3", None])
def test_bad_retraining_time(ds, t):
    sched = RECIPE.schedule(ds.n_train)
    with pytest.raises(ValueError, match=r"\(0, T\] = \(0, 6\] epochs; got"):
        techniques.plan_retraining("lr_rewinding", t, sched)


def test_unknown_technique_names_the_choices(ds):
    with pytest.raises(ValueError, match="'lottery'.*fine_tuning, weight_rewinding, lr_rewinding"):
        techniques.plan_retraining("lottery", 2, RECIPE.schedule(ds.n_train))


def test_mask_enforcer_rejects_foreign_mask(ds):
    model = build()
    other = models.vision_network("resnet20")
    with pytest.raises(ValueError, match="mask entry .* has shape|not a parameter"):
        MaskEnforcer(model, Mask.ones(other))


def test_retraining_never_modifies_the_saved_state(ds, dense):
    """Several techniques retrained in memory from one final state all start from the same momentum."""
    before = {k: v["momentum_buffer"].clone() for k, v in dense.final.optimizer["state"].items()}
    weights = {k: v.clone() for k, v in dense.final.model.items()}
    mask = pruning.global_magnitude(dense.model, 0.3)
    for tech in ("lr_rewinding", "fine_tuning"):
        techniques.retrain(build, ds, RECIPE, techniques.plan_retraining(tech, 2, dense.schedule), mask, final=dense.final,
                  seed=7, progress=False)
    assert all(torch.equal(dense.final.optimizer["state"][k]["momentum_buffer"], v) for k, v in before.items())
    assert states_equal(dense.final.model, weights)


def test_loaded_momentum_takes_the_parameters_memory_layout(dense):
    """A state saved in NCHW, retrained channels_last: fused SGD needs equal strides (found on a GPU)."""
    model = models.vision_network("resnet20")
    optimizer = make_optimizer(model, RECIPE)
    x = torch.randn(4, 3, 32, 32)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    saved = snapshot(model, optimizer, 1)
    target = models.vision_network("resnet20").to(memory_format=torch.channels_last)
    opt2 = make_optimizer(target, RECIPE)
    techniques.load_state(target, opt2, saved)
    conv = target.stem.weight if hasattr(target, "stem") else next(p for p in target.parameters() if p.dim() == 4)
    buf = opt2.state[conv]["momentum_buffer"]
    assert conv.stride() != tuple(torch.empty(conv.shape).stride())  # the parameter really is channels_last
    assert buf.stride() == conv.stride()
    assert torch.equal(buf, saved.optimizer["state"][list(dict(target.named_parameters())).index(
        next(n for n, p in target.named_parameters() if p is conv))]["momentum_buffer"])


def test_loading_a_state_keeps_the_optimizers_own_kernel_choice(dense):
    from rewindkit.platform.hardware import Hardware
    model = build()
    optimizer = make_optimizer(model, RECIPE, Hardware(device="cuda"))  # fused (constructed on the CPU here)
    saved = dense.final  # saved by a foreach optimizer
    assert saved.optimizer["param_groups"][0]["foreach"] is True
    techniques.load_state(model, optimizer, saved)
    assert optimizer.param_groups[0]["fused"] is True and not optimizer.param_groups[0]["foreach"]


def test_mask_factors_share_the_parameters_layout():
    """foreach multiplies fall back to one kernel per tensor when strides differ (seen on an H100)."""
    model = models.vision_network("resnet20").to(memory_format=torch.channels_last)
    enforcer = MaskEnforcer(model, pruning.random_pruning(model, 0.2, seed=1))
    assert any(p.dim() == 4 for p in enforcer.params)
    assert all(f.stride() == p.stride() and f.dtype == p.dtype for p, f in zip(enforcer.params, enforcer.factors))
    enforcer.apply_to_weights()
    for p, f in zip(enforcer.params, enforcer.factors):
        assert torch.count_nonzero(p[f == 0]) == 0
