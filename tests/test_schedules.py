"""Cosine, linear and one-cycle schedules (issue 23 §1): every iteration's LR equals its formula, with
p = recipe.lr and f = step decay's final LR; warm-up on top; fine-tuning constant at f; weight and
LR rewinding replay the last t epochs of the same schedule; run ids of step decay unchanged."""
import math

import pytest

from rewindkit import techniques
from rewindkit.core.schedules import CosineSchedule, LinearSchedule, OneCycleSchedule, StepSchedule
from rewindkit.engine.runs import setup_from_profile
from rewindkit.profiles import get_profile
from rewindkit.recipe import LR_SCHEDULES, Recipe

N_TRAIN = 96  # 3 iterations per epoch at batch 32
RECIPE = dict(epochs=6, batch_size=32, lr=0.4, milestones=(3, 5), gamma=0.1)


def expected(name: str, p: float, f: float, s: int, S: int) -> float:
    """The issue's formulas, written out independently of the schedule classes."""
    if s >= S:
        return f
    if name == "cosine":
        return f + (p - f) * (1 + math.cos(math.pi * (s / S))) / 2
    if name == "linear":
        return p - (p - f) * s / S
    w = math.floor(0.3 * S)
    if s < w:
        return p / 25 + (p - p / 25) * s / w
    return f + (p - f) * (1 + math.cos(math.pi * ((s - w) / (S - w)))) / 2


@pytest.mark.parametrize("name", ["cosine", "linear", "one_cycle"])
def test_every_iteration_follows_the_formula_and_ends_at_step_decays_final_lr(name):
    recipe = Recipe(**RECIPE, lr_schedule=name)
    sched = recipe.schedule(N_TRAIN)
    S = sched.total_steps
    f = 0.4 * 0.1 ** 2
    assert sched.final_lr == f == StepSchedule(0.4, 6, 3, (3, 5)).final_lr
    assert [sched.lr(s) for s in range(S + 9)] == [expected(name, 0.4, f, s, S) for s in range(S + 9)]
    assert sched.lr(S) == sched.lr(S + 100) == f  # past T (fine-tuning, reinitialization's last t epochs): f


@pytest.mark.parametrize("name", ["cosine", "linear", "one_cycle"])
def test_warm_up_applies_on_top_as_for_step_decay(name):
    plain = Recipe(**RECIPE, lr_schedule=name).schedule(N_TRAIN)
    warm = Recipe(**RECIPE, lr_schedule=name, warmup_epochs=2).schedule(N_TRAIN)
    assert warm.warmup_steps == 6
    for s in range(warm.total_steps):
        assert warm.lr(s) == (plain.lr(s) * (s / 6) if s < 6 else plain.lr(s))
    step = Recipe(**RECIPE, warmup_epochs=2).schedule(N_TRAIN)  # the same rule as step decay's
    assert [step.lr(s) for s in range(6)] == [0.4 * (s / 6) for s in range(6)]


@pytest.mark.parametrize("name", ["step", "cosine", "linear", "one_cycle"])
@pytest.mark.parametrize("t", [2, 4, 6])
def test_lr_traces_of_each_technique_under_each_schedule(name, t):
    sched = Recipe(**RECIPE, lr_schedule=name, warmup_epochs=1).schedule(N_TRAIN)
    spe, S = sched.steps_per_epoch, sched.total_steps
    original = [sched.lr(s) for s in range(S)]
    f = 0.4 * 0.1 ** 2
    ft = techniques.plan_retraining("fine_tuning", t, sched)
    assert ft.lr_trace() == [f] * (t * spe)  # fine-tuning trains at f under every schedule
    for tech in ("weight_rewinding", "lr_rewinding"):  # replay the last t epochs of the same schedule
        plan = techniques.plan_retraining(tech, t, sched)
        assert (plan.start_step, plan.stop_step) == (S - t * spe, S)
        assert plan.lr_trace() == original[S - t * spe:]
    assert techniques.plan_retraining("low_lr_weight_rewinding", t, sched).lr_trace() == [f] * (t * spe)
    reinit = techniques.plan_retraining("reinitialization", t, sched)
    assert reinit.lr_trace() == original + [f] * (t * spe)


def test_registered_as_built_ins_and_run_ids_of_step_decay_unchanged():
    assert LR_SCHEDULES == ("step", "gnmt", "cosine", "linear", "one_cycle")
    assert "lr_schedule" not in Recipe().to_dict()  # step decay stays out of to_dict: old ids unchanged
    assert Recipe(lr_schedule="one_cycle").to_dict()["lr_schedule"] == "one_cycle"
    laptop = setup_from_profile(get_profile("laptop"))
    ids = {setup_from_profile(get_profile("laptop", lr_schedule=s))["recipe"].get("lr_schedule") for s in
           ("cosine", "linear", "one_cycle")}
    assert "lr_schedule" not in laptop["recipe"] and ids == {"cosine", "linear", "one_cycle"}
    assert "plugins" not in setup_from_profile(get_profile("laptop", lr_schedule="cosine"))  # the kit's own
    rows = dict((r["setting"], r["value"]) for r in get_profile("laptop", lr_schedule="one_cycle").describe())
    assert rows["LR schedule"] == "one-cycle from 0.2 to 0.002 (step decay's final LR)"


def test_bad_values_are_refused_naming_the_value_and_the_choices():
    with pytest.raises(ValueError, match="unknown lr_schedule 'cosin'; valid schedules: step, gnmt, cosine, linear, "
                                         "one_cycle"):
        Recipe(lr_schedule="cosin")
    with pytest.raises(ValueError, match=r"unknown schedule_options \['warmup_steps'\] for lr_schedule='cosine'"):
        Recipe(lr_schedule="cosine", schedule_options={"warmup_steps": 4})
    with pytest.raises(ValueError, match="final_lr must be a finite learning rate ≥ 0; got -0.1"):
        CosineSchedule(0.1, 4, 3, -0.1)
    with pytest.raises(ValueError, match="base_lr must be a finite learning rate ≥ 0; got inf"):
        LinearSchedule(math.inf, 4, 3, 0.001)
    with pytest.raises(ValueError, match=r"warmup_epochs must be in \[0, 4\]; got 5"):
        OneCycleSchedule(0.1, 4, 3, 0.001, warmup_epochs=5)
    with pytest.raises(ValueError, match="epochs must be positive; got 0"):
        CosineSchedule(0.1, 0, 3, 0.001)


@pytest.mark.parametrize("name", ["cosine", "linear", "one_cycle"])
def test_an_annealing_schedule_checks_the_milestones_it_reads_its_end_from(name):
    """The end LR is step decay's final LR: milestones outside the run are refused as for "step", and
    none at all (an end equal to the start: nothing anneals) is refused, naming the value."""
    with pytest.raises(ValueError, match=r"milestones must be increasing numbers of epochs inside \(0, 6\); got \(91, 136\)"):
        Recipe(lr_schedule=name, epochs=6, milestones=(91, 136)).schedule(1000)
    with pytest.raises(ValueError, match=f"lr_schedule='{name}' anneals .* milestones=\\(\\) leaves it at lr = 0.1"):
        Recipe(lr_schedule=name, lr=0.1, epochs=6, milestones=()).schedule(1000)
