"""The five retraining techniques, as the paper's code defines them (paper §1, §7, §8).

All start from a network trained for T epochs and pruned to a mask; they differ only in where the
weights and optimizer state come from and which learning rates the t retraining epochs use:

================================  ===============================  ================================
technique                         weights and momentum from        learning rate, iterations
================================  ===============================  ================================
fine_tuning                       final (T)                        constant final LR, T → T+t
weight_rewinding                  checkpoint at T−t                schedule replayed, T−t → T
lr_rewinding                      final (T)                        schedule replayed, T−t → T
low_lr_weight_rewinding           checkpoint at T−t                constant final LR, T−t → T
reinitialization                  fresh init under the mask        full schedule, then t more
                                                                   epochs at its final LR: 0 → T+t
================================  ===============================  ================================

t (``retrain_epochs``) is the only knob. Reinitialization (Liu et al. 2019) trains from a fresh
initialisation with fresh optimizer state: the whole original schedule and then t epochs at its
final LR, as the authors' code runs it (their GNMT ``reinit`` trains ``max_train_epochs = T + t``
from ``--lottery_reset_to reinitialize``; the TF schedule stays at its last value past T).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import nn

from .batches import TrainingData
from ..platform.hardware import Hardware, prepare_model
from .masks import Mask
from .recipe import Recipe
from .schedules import ConstantSchedule, StepSchedule
from .seeds import canonical_json, derive_seed
from .training import EpochRecord, TrainState, fresh_start, make_optimizer, train_steps


class Technique(str, Enum):
    FINE_TUNING = "fine_tuning"
    WEIGHT_REWINDING = "weight_rewinding"
    LR_REWINDING = "lr_rewinding"
    LOW_LR_WEIGHT_REWINDING = "low_lr_weight_rewinding"
    REINITIALIZATION = "reinitialization"

    @classmethod
    def parse(cls, value) -> Technique:
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown technique {value!r}; valid techniques: "
                             f"{', '.join(t.value for t in cls)}") from None


TECHNIQUES = tuple(t.value for t in Technique)
CORE_TECHNIQUES = ("fine_tuning", "weight_rewinding", "lr_rewinding")
LABELS = {"fine_tuning": "Fine-tuning", "weight_rewinding": "Weight rewinding",
          "lr_rewinding": "Learning rate rewinding", "low_lr_weight_rewinding": "Low-LR weight rewinding",
          "reinitialization": "Reinitialization"}


class StartFrom(str, Enum):
    """Where a plan's weights and optimizer state come from."""

    FINAL = "final"  # the weights and optimizer state at the end of the run it retrains (T)
    REWIND = "rewind"  # the dense run's checkpoint at T − t
    INIT = "init"  # a fresh initialisation and fresh optimizer state


# The paper's table (§1) in one place. Each technique: where it starts, the span [start, stop) of
# the original schedule it trains as a function of T and t (the same in epochs and in iterations),
# and whether it trains at the constant fine-tuning LR instead of replaying the schedule.
_RULES: dict[Technique, tuple[StartFrom, Callable[[float, float], tuple[float, float]], bool]] = {
    Technique.FINE_TUNING: (StartFrom.FINAL, lambda T, t: (T, T + t), True),
    Technique.WEIGHT_REWINDING: (StartFrom.REWIND, lambda T, t: (T - t, T), False),
    Technique.LR_REWINDING: (StartFrom.FINAL, lambda T, t: (T - t, T), False),
    Technique.LOW_LR_WEIGHT_REWINDING: (StartFrom.REWIND, lambda T, t: (T - t, T), True),
    Technique.REINITIALIZATION: (StartFrom.INIT, lambda T, t: (0, T + t), False),
}


def starts_from(technique) -> StartFrom:
    return _RULES[Technique.parse(technique)][0]


def epochs_trained(technique, retrain_epochs: float, total_epochs: float) -> float:
    """Epochs a run of ``technique`` trains: t, or T + t for reinitialization (§1)."""
    start, stop = _RULES[Technique.parse(technique)][1](float(total_epochs), float(retrain_epochs))
    return stop - start


@dataclass(frozen=True)
class RetrainPlan:
    """Where a run starts and which iterations and learning rates it trains.

    Every run is a plan: the dense run is the plan with ``technique=None`` (from initialisation,
    iterations 0 → T, the whole schedule: :func:`dense_plan`); a retraining run is the plan of its
    technique and budget t (:func:`plan_retraining`)."""

    technique: Technique | None  # None: the dense run
    retrain_epochs: float
    start_from: StartFrom
    start_step: int
    stop_step: int
    rewind_step: int | None  # checkpoint to restore (T−t) for the weight-rewinding techniques
    constant_lr: float | None  # None: replay the original schedule
    schedule: StepSchedule = field(repr=False)

    @property
    def name(self) -> str:
        return "dense" if self.technique is None else self.technique.value

    @property
    def lr_schedule(self) -> StepSchedule | ConstantSchedule:
        return self.schedule if self.constant_lr is None else ConstantSchedule(self.constant_lr)

    @property
    def steps(self) -> int:
        return self.stop_step - self.start_step

    def lr_trace(self) -> list[float]:
        """The learning rate of every iteration of the plan, in order."""
        return [self.lr_schedule.lr(s) for s in range(self.start_step, self.stop_step)]

    def init_seed(self, seed: int) -> int:
        """The seed of the initial weights of a plan that starts from initialisation: the trial seed
        for the dense run, a seed of its own for reinitialization (a fresh draw, not the dense init)."""
        return seed if self.technique is None else derive_seed(seed, self.technique.value)


def iterative_budgets(T: float, retrain_times) -> dict[str, float]:
    """The fixed budget t of each technique in the paper's iterative comparison (§5.3, the authors'
    ``force_all`` curves): fine-tuning, LR rewinding and reinitialization at T; weight rewinding and
    low-LR weight rewinding at the largest t of the grid ≤ 0.9T (rewinding to initialisation, t = T,
    breaks weight rewinding). Whole numbers stay ints, as profiles write them (run ids hash them)."""
    times = sorted(set(float(t) for t in retrain_times))
    wr = max((t for t in times if t <= 0.9 * T + 1e-9), default=times[0])
    plain = (lambda t: int(t) if float(t).is_integer() else t)  # noqa: E731
    return {"fine_tuning": plain(T), "lr_rewinding": plain(T), "weight_rewinding": plain(wr),
            "low_lr_weight_rewinding": plain(wr), "reinitialization": plain(T)}


def check_retrain_epochs(t, total_epochs: int) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= total_epochs:
        raise ValueError(f"retraining time t must be in (0, T] = (0, {total_epochs}] epochs; got {t!r}")
    return float(t)


def dense_plan(schedule: StepSchedule) -> RetrainPlan:
    """The dense run as a plan: from initialisation, the whole schedule, iterations 0 → T (§2)."""
    return RetrainPlan(None, float(schedule.epochs), StartFrom.INIT, 0, schedule.total_steps, None, None, schedule)


def plan_retraining(technique, retrain_epochs: float, schedule: StepSchedule,
                    fine_tune_lr: float | None = None) -> RetrainPlan:
    """The paper's definition of ``technique`` with budget t = ``retrain_epochs`` (§1)."""
    tech = Technique.parse(technique)
    t = check_retrain_epochs(retrain_epochs, schedule.epochs)
    start_from, span, constant = _RULES[tech]
    start, stop = span(schedule.total_steps, schedule.epoch_to_step(t))
    ft_lr = schedule.final_lr if fine_tune_lr is None else fine_tune_lr
    return RetrainPlan(tech, t, start_from, start, stop, start if start_from is StartFrom.REWIND else None,
                       ft_lr if constant else None, schedule)


def rewind_steps_needed(retrain_epochs, schedule: StepSchedule, techniques=TECHNIQUES) -> set[int]:
    """Iterations T−t at which the dense run must save a checkpoint for the given techniques."""
    steps = set()
    for tech in techniques:
        for t in retrain_epochs:
            plan = plan_retraining(tech, t, schedule)
            if plan.rewind_step is not None:
                steps.add(plan.rewind_step)
    return steps


def load_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    """Copy ``state`` into ``model`` and ``optimizer``. The optimizer state is deep-copied:
    ``Optimizer.load_state_dict`` keeps tensors that are already on the right device, and training
    would then update the saved momentum buffers in place."""
    model.load_state_dict(state.model)
    # load_state_dict also restores the saved 'fused'/'foreach' flags; keep this optimizer's own
    # (a state saved by a CPU run must still step with fused CUDA kernels, which CUDA graphs need)
    flags = [{k: g.get(k) for k in ("fused", "foreach", "capturable")} for g in optimizer.param_groups]
    optimizer.load_state_dict(copy.deepcopy(state.optimizer))
    for group, own in zip(optimizer.param_groups, flags):
        group.update(own)
    # Buffers take their parameter's memory layout (a state saved in NCHW, retrained channels_last):
    # fused CUDA SGD needs parameters, gradients and buffers with the same strides.
    with torch.no_grad():
        for p, st in optimizer.state.items():
            for key, value in st.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    st[key] = torch.empty_like(p).copy_(value)


def start_state(build: Callable[[], nn.Module], recipe: Recipe, plan: RetrainPlan, *, seed: int,
                final: TrainState | None = None, rewind: TrainState | None = None,
                hardware: Hardware = Hardware()) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Model and optimizer in the state ``plan`` starts from (before a mask is applied): a fresh
    initialisation, the ``final`` state, or the ``rewind`` checkpoint at T − t."""
    if plan.start_from is StartFrom.INIT:
        return fresh_start(build, recipe, plan.init_seed(seed), hardware)
    state = rewind if plan.start_from is StartFrom.REWIND else final
    if state is None or (plan.start_from is StartFrom.REWIND and state.step != plan.rewind_step):
        want = f"the checkpoint at iteration {plan.rewind_step}" if plan.rewind_step is not None else "the final state"
        raise ValueError(f"{plan.name} needs {want}; got {None if state is None else f'iteration {state.step}'}")
    model = prepare_model(build(), hardware)
    optimizer = make_optimizer(model, recipe, hardware)
    load_state(model, optimizer, state)
    return model, optimizer


def retraining_data_seed(seed: int, technique, retrain_epochs: float, *identity) -> int:
    """The seed of a retraining run's training batches (order and augmentation).

    The authors' input pipeline reshuffles for every run, so a retraining run must not replay the
    dense run's minibatches over T−t … T (nor an iterative level the previous level's): each run
    draws its own stream from the trial seed, the technique, t and whatever else identifies it
    (``identity``: the pruning, the schedule, the level)."""
    return derive_seed(seed, "retrain", Technique.parse(technique).value, float(retrain_epochs), *identity)


def pruned_run_data_seed(seed: int, technique, retrain_epochs: float, pruning, pruning_schedule: str,
                         level: int) -> int:
    """The data seed of a grid's retraining run (the engine's rule, stored as ``data_seed``):
    :func:`retraining_data_seed` of the trial, technique, t, the pruning description (its canonical
    JSON), the pruning schedule (``one_shot`` / ``iterative``) and the level."""
    return retraining_data_seed(seed, technique, retrain_epochs, canonical_json(pruning.to_dict()), pruning_schedule,
                                level)


def run_plan(build: Callable[[], nn.Module], data: TrainingData, recipe: Recipe, plan: RetrainPlan, *, seed: int,
             data_seed: int, mask: Mask | None = None, final: TrainState | None = None,
             rewind: TrainState | None = None, resume: tuple[nn.Module, torch.optim.Optimizer, int] | None = None,
             hardware: Hardware = Hardware(), save_at=(), on_save=None, on_epoch=None,
             evaluate_every_epoch: bool = True, evaluate_at_end: bool = True, log=None, progress=None,
             description: str | None = None) -> tuple[nn.Module, torch.optim.Optimizer, list[EpochRecord]]:
    """Train ``plan`` (§1: where it starts, which iterations, which learning rates) under ``mask``,
    from its start state — or from ``resume`` = (model, optimizer, iteration) — to its stop, with one
    CPU thread per run (:func:`~rewindkit.platform.hardware.run_threads`). The one path every run takes: the
    engine's runs (:func:`rewindkit.engine.runner.execute`), :func:`~rewindkit.training.train_dense`,
    :func:`retrain` and the throughput probe (:func:`rewindkit.engine.costs.probe`)."""
    if resume is None:
        model, optimizer = start_state(build, recipe, plan, seed=seed, final=final, rewind=rewind, hardware=hardware)
        start = plan.start_step
    else:
        model, optimizer, start = resume
    history = train_steps(model, optimizer, data, plan.lr_schedule, start, plan.stop_step, seed=data_seed,
                          batch_size=recipe.batch_size, mask=mask, hardware=hardware, save_at=save_at,
                          on_save=on_save, on_epoch=on_epoch, evaluate_every_epoch=evaluate_every_epoch,
                          evaluate_at_end=evaluate_at_end, log=log, progress=progress,
                          description=description or plan.name, recipe=recipe)
    return model, optimizer, history


def retrain(build: Callable[[], nn.Module], data: TrainingData, recipe: Recipe, plan: RetrainPlan, mask, *,
            final: TrainState, rewind: TrainState | None = None, seed: int, data_seed: int | None = None,
            hardware: Hardware = Hardware(), log=None, progress=None,
            on_epoch=None) -> tuple[nn.Module, list[EpochRecord]]:
    """Run one retraining technique and return the retrained model and its history.

    ``mask`` is a :class:`~rewindkit.core.masks.Mask`, or a pruning description
    (:class:`~rewindkit.pruning.GlobalMagnitude`, :class:`~rewindkit.pruning.FilterPruning`), which is
    applied to the ``final`` weights here, as a grid's one-shot run applies it. ``seed`` is the trial
    (it seeds reinitialization). The batches come from ``data_seed``; by default, for a description,
    the stream the engine gives that one-shot run (:func:`retraining_data_seed` of the trial, technique,
    t, pruning, schedule and level), so the result is the grid run's bit for bit; for a bare mask a
    stream of (trial, technique, t). Passing the dense run's seed replays the dense run's batches."""
    if not isinstance(mask, Mask):
        description = mask
        probe = build()
        probe.load_state_dict(final.model)
        mask = description.apply(probe)
        if data_seed is None:
            data_seed = pruned_run_data_seed(seed, plan.technique, plan.retrain_epochs, description, "one_shot",
                                             getattr(description, "level", 1))
    if data_seed is None:
        data_seed = retraining_data_seed(seed, plan.technique, plan.retrain_epochs)
    model, _, history = run_plan(build, data, recipe, plan, seed=seed, data_seed=data_seed, mask=mask, final=final,
                                 rewind=rewind, hardware=hardware, on_epoch=on_epoch, log=log, progress=progress)
    return model, history
