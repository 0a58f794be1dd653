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

from .data import Dataset
from .seeds import derive_seed
from .masks import Mask
from .schedules import ConstantSchedule, StepSchedule
from .training import (EpochRecord, Hardware, Recipe, TrainState, init_model, make_optimizer, prepare_model,
                       snapshot, train_steps)


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


@dataclass(frozen=True)
class RetrainPlan:
    """Where a retraining run starts and which iterations and learning rates it uses."""

    technique: Technique
    retrain_epochs: float
    start_from: str  # "final", "rewind" or "init"
    start_step: int
    stop_step: int
    rewind_step: int | None  # checkpoint to restore (T−t) for the weight-rewinding techniques
    constant_lr: float | None  # None: replay the original schedule
    schedule: StepSchedule = field(repr=False)

    @property
    def lr_schedule(self) -> StepSchedule | ConstantSchedule:
        return self.schedule if self.constant_lr is None else ConstantSchedule(self.constant_lr)

    @property
    def steps(self) -> int:
        return self.stop_step - self.start_step

    def lr_trace(self) -> list[float]:
        """The learning rate of every retraining iteration, in order."""
        return [self.lr_schedule.lr(s) for s in range(self.start_step, self.stop_step)]


def check_retrain_epochs(t, total_epochs: int) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= total_epochs:
        raise ValueError(f"retraining time t must be in (0, T] = (0, {total_epochs}] epochs; got {t!r}")
    return float(t)


def plan_retraining(technique, retrain_epochs: float, schedule: StepSchedule,
                    fine_tune_lr: float | None = None) -> RetrainPlan:
    """The paper's definition of ``technique`` with budget t = ``retrain_epochs`` (§1)."""
    tech = Technique.parse(technique)
    t = check_retrain_epochs(retrain_epochs, schedule.epochs)
    T = schedule.total_steps
    t_steps = schedule.epoch_to_step(t)
    ft_lr = schedule.final_lr if fine_tune_lr is None else fine_tune_lr
    rewind = T - t_steps
    table = {
        Technique.FINE_TUNING: ("final", T, T + t_steps, None, ft_lr),
        Technique.WEIGHT_REWINDING: ("rewind", rewind, T, rewind, None),
        Technique.LR_REWINDING: ("final", rewind, T, None, None),
        Technique.LOW_LR_WEIGHT_REWINDING: ("rewind", rewind, T, rewind, ft_lr),
        Technique.REINITIALIZATION: ("init", 0, T + t_steps, None, None),
    }
    start_from, start, stop, rewind_step, const = table[tech]
    return RetrainPlan(tech, t, start_from, start, stop, rewind_step, const, schedule)


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


@dataclass
class DenseRun:
    """A dense training run kept in memory: final state plus the checkpoints needed for rewinding."""

    model: nn.Module
    final: TrainState
    checkpoints: dict[int, TrainState]
    history: list[EpochRecord]
    schedule: StepSchedule


def train_dense(build: Callable[[], nn.Module], data: Dataset, recipe: Recipe, *, seed: int,
                rewind_steps=(), hardware: Hardware = Hardware(), log=None, progress=None) -> DenseRun:
    """Train the dense network for T epochs, keeping checkpoints (weights + momentum) at ``rewind_steps``."""
    schedule = recipe.schedule(data.n_train)
    model = prepare_model(init_model(build, seed), hardware)
    optimizer = make_optimizer(model, recipe, hardware)
    checkpoints: dict[int, TrainState] = {}
    history = train_steps(model, optimizer, data, schedule, 0, schedule.total_steps, seed=seed,
                          batch_size=recipe.batch_size, hardware=hardware, save_at=rewind_steps,
                          on_save=lambda s: checkpoints.__setitem__(s.step, s), log=log, progress=progress,
                          description="dense")
    return DenseRun(model, snapshot(model, optimizer, schedule.total_steps), checkpoints, history, schedule)


def start_retraining(build: Callable[[], nn.Module], recipe: Recipe, plan: RetrainPlan, *, final: TrainState,
                     rewind: TrainState | None, seed: int, hardware: Hardware = Hardware()):
    """Model and optimizer in the state ``plan`` starts from (before the mask is applied)."""
    if plan.start_from == "init":
        model = prepare_model(init_model(build, derive_seed(seed, "reinitialization")), hardware)
        return model, make_optimizer(model, recipe, hardware)
    model = prepare_model(build(), hardware)
    optimizer = make_optimizer(model, recipe, hardware)
    if plan.start_from == "rewind":
        if rewind is None or rewind.step != plan.rewind_step:
            have = None if rewind is None else rewind.step
            raise ValueError(f"{plan.technique.value} needs the checkpoint at iteration {plan.rewind_step}; got {have}")
        load_state(model, optimizer, rewind)
    else:
        load_state(model, optimizer, final)
    return model, optimizer


def retraining_data_seed(seed: int, technique, retrain_epochs: float, *identity) -> int:
    """The seed of a retraining run's training batches (order and augmentation).

    The authors' input pipeline reshuffles for every run, so a retraining run must not replay the
    dense run's minibatches over T−t … T (nor an iterative level the previous level's): each run
    draws its own stream from the trial seed, the technique, t and whatever else identifies it
    (``identity``: the pruning, the schedule, the level)."""
    return derive_seed(seed, "retrain", Technique.parse(technique).value, float(retrain_epochs), *identity)


def retrain(build: Callable[[], nn.Module], data: Dataset, recipe: Recipe, plan: RetrainPlan, mask: Mask, *,
            final: TrainState, rewind: TrainState | None = None, seed: int, data_seed: int | None = None,
            hardware: Hardware = Hardware(), log=None, progress=None,
            on_epoch=None) -> tuple[nn.Module, list[EpochRecord]]:
    """Run one retraining technique under ``mask`` and return the retrained model and its history.

    ``seed`` is the trial (it seeds reinitialization); the batches come from ``data_seed``, by
    default :func:`retraining_data_seed` of (seed, technique, t). Passing the dense run's seed
    replays the dense run's batches (a test does, to reproduce the dense run bit for bit)."""
    if data_seed is None:
        data_seed = retraining_data_seed(seed, plan.technique, plan.retrain_epochs)
    model, optimizer = start_retraining(build, recipe, plan, final=final, rewind=rewind, seed=seed, hardware=hardware)
    history = train_steps(model, optimizer, data, plan.lr_schedule, plan.start_step, plan.stop_step, seed=data_seed,
                          batch_size=recipe.batch_size, mask=mask, hardware=hardware, log=log, progress=progress,
                          on_epoch=on_epoch, description=plan.technique.value)
    return model, history
