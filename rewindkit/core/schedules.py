"""Learning-rate schedules, defined per iteration (paper §2).

The paper's schedules are step decay with optional linear warmup: CIFAR 0.1, ×0.1 at epochs 91 and
136 of 182; ImageNet 0.4 with 5 warmup epochs, ×0.1 at 30, 60, 80 of 90. An epoch is a whole number
``steps_per_epoch`` of iterations, so epoch ↔ iteration conversion is exact integer arithmetic.

Beyond the paper (the authors tested step decay only; Le & Hua, ICLR 2021, retrain with one-cycle):
cosine, linear and one-cycle annealing from the peak LR to the step schedule's final LR
(:class:`CosineSchedule`, :class:`LinearSchedule`, :class:`OneCycleSchedule`), so fine-tuning trains
at the same LR under every schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


class _PerIteration:
    """What every schedule shares: T in iterations, exact epoch → iteration conversion, traces.
    A schedule defines ``epochs``, ``steps_per_epoch`` and ``lr(step)``."""

    def _check_length(self) -> None:
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive; got {self.epochs}")
        if self.steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive; got {self.steps_per_epoch}")

    @property
    def total_steps(self) -> int:
        """T in iterations."""
        return self.epochs * self.steps_per_epoch

    def epoch_to_step(self, epoch: float) -> int:
        """Iteration at which ``epoch`` starts; fractional epochs must land on a whole iteration."""
        steps = epoch * self.steps_per_epoch
        if abs(steps - round(steps)) > 1e-6:
            raise ValueError(f"epoch {epoch} is not a whole number of iterations at {self.steps_per_epoch} per epoch")
        return int(round(steps))

    def trace(self, start: int, stop: int) -> list[float]:
        return [self.lr(s) for s in range(start, stop)]


def _is_number(value) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_step_decay(epochs, milestones, gamma, warmup_epochs) -> None:
    """Step decay's own values (§2), in epochs, whatever the iterations per epoch: milestones strictly
    increasing inside (0, T), each drop a factor gamma in (0, 1], a warm-up in [0, T)."""
    ms = tuple(milestones)
    if (not all(_is_number(m) for m in ms) or any(a >= b for a, b in zip(ms, ms[1:]))
            or any(not 0 < m < epochs for m in ms)):
        raise ValueError(f"milestones must be increasing numbers of epochs inside (0, {epochs}); got {milestones}")
    if not (_is_number(gamma) and 0 < gamma <= 1):
        raise ValueError(f"gamma, the factor of each LR drop, must be a number in (0, 1] (0.1 in the paper); "
                         f"got {gamma!r}")
    if not (_is_number(warmup_epochs) and 0 <= warmup_epochs < epochs):
        raise ValueError(f"warmup_epochs must be a number in [0, {epochs}); got {warmup_epochs!r}")


@dataclass(frozen=True)
class StepSchedule(_PerIteration):
    """Step decay with optional linear warmup.

    ``lr(step)`` is ``base_lr × gamma^(number of milestones ≤ epoch)``; during the first
    ``warmup_epochs`` it is additionally scaled by ``step / warmup_steps`` (TF's warmup, which
    starts from zero). ``final_lr`` is the LR after the last milestone: the fine-tuning LR (§1).
    """

    base_lr: float
    epochs: int
    steps_per_epoch: int
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    milestone_steps: tuple[int, ...] = field(init=False, repr=False)
    warmup_steps: int = field(init=False, repr=False)

    def __post_init__(self):
        self._check_length()
        check_step_decay(self.epochs, self.milestones, self.gamma, self.warmup_epochs)
        object.__setattr__(self, "milestones", tuple(self.milestones))
        object.__setattr__(self, "milestone_steps", tuple(self.epoch_to_step(m) for m in self.milestones))
        object.__setattr__(self, "warmup_steps", self.epoch_to_step(self.warmup_epochs))

    def lr(self, step: int) -> float:
        """Learning rate used by the optimizer update of iteration ``step`` (0-based)."""
        decays = sum(step >= m for m in self.milestone_steps)
        return _warm_up(self.base_lr * self.gamma**decays, step, self.warmup_steps)

    @property
    def final_lr(self) -> float:
        """LR after every milestone: the fine-tuning LR (CIFAR 0.001, ImageNet 0.0004)."""
        return step_final_lr(self.base_lr, self.gamma, self.milestones)


def step_final_lr(base_lr: float, gamma: float, milestones) -> float:
    """Step decay's final LR, ``base_lr × gamma ** len(milestones)``: the fine-tuning LR (§1), and the
    LR every annealing schedule below ends at."""
    return base_lr * gamma ** len(milestones)


def _warm_up(lr: float, step: int, warmup_steps: int) -> float:
    """Linear warm-up from zero over ``warmup_steps`` on top of any schedule (:class:`StepSchedule`'s rule)."""
    return lr * (step / warmup_steps) if warmup_steps and step < warmup_steps else lr


@dataclass(frozen=True)
class _Annealing(_PerIteration):
    """A schedule that anneals from ``base_lr`` (p; one-cycle ramps up to it first) to ``final_lr`` (f)
    at S = T in iterations, then stays at f (fine-tuning trains there, reinitialization's last t epochs too), with
    :class:`StepSchedule`'s linear warm-up on top. A subclass gives the shape, :meth:`_anneal`.
    The recipe sets f to the step schedule's final LR (``lr × gamma ** len(milestones)``), so every
    schedule fine-tunes at the same LR (§1)."""

    base_lr: float
    epochs: int
    steps_per_epoch: int
    final_lr: float
    warmup_epochs: float = 0.0
    warmup_steps: int = field(init=False, repr=False)

    def __post_init__(self):
        self._check_length()
        for name in ("base_lr", "final_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite learning rate ≥ 0; got {value!r}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, {self.epochs}]; got {self.warmup_epochs}")
        object.__setattr__(self, "warmup_steps", self.epoch_to_step(self.warmup_epochs))

    def lr(self, step: int) -> float:
        """Learning rate used by the optimizer update of iteration ``step`` (0-based); f from T on."""
        lr = self.final_lr if step >= self.total_steps else self._anneal(step, self.total_steps)
        return _warm_up(lr, step, self.warmup_steps)

    def _anneal(self, s: int, S: int) -> float:
        raise NotImplementedError


def _cosine(p: float, f: float, x: float) -> float:
    """Cosine annealing from p (x = 0) to f (x = 1)."""
    return f + (p - f) * (1 + math.cos(math.pi * x)) / 2


@dataclass(frozen=True)
class CosineSchedule(_Annealing):
    """Cosine annealing (Loshchilov & Hutter 2017): ``lr(s) = f + (p − f) · (1 + cos(π s / S)) / 2``."""

    def _anneal(self, s: int, S: int) -> float:
        return _cosine(self.base_lr, self.final_lr, s / S)


@dataclass(frozen=True)
class LinearSchedule(_Annealing):
    """Linear decay: ``lr(s) = p − (p − f) · s / S``."""

    def _anneal(self, s: int, S: int) -> float:
        return self.base_lr - (self.base_lr - self.final_lr) * s / S


ONE_CYCLE_RAMP = 0.3  # the fraction of T spent ramping up (PyTorch's OneCycleLR pct_start)
ONE_CYCLE_START = 25  # the ramp starts at p / 25 (OneCycleLR's div_factor)


@dataclass(frozen=True)
class OneCycleSchedule(_Annealing):
    """One cycle (Smith & Topin 2019; Le & Hua, ICLR 2021, retrain with it): with w = ⌊0.3 S⌋, a
    linear ramp ``lr(s) = p/25 + (p − p/25) · s / w`` for s < w, then cosine annealing
    ``f + (p − f) · (1 + cos(π (s − w) / (S − w))) / 2``. A run of fewer than 4 iterations has w = 0:
    no ramp, it starts at p."""

    @property
    def ramp_steps(self) -> int:
        """w = ⌊0.3 S⌋."""
        return math.floor(ONE_CYCLE_RAMP * self.total_steps)

    def _anneal(self, s: int, S: int) -> float:
        p, w = self.base_lr, self.ramp_steps
        if s < w:
            return p / ONE_CYCLE_START + (p - p / ONE_CYCLE_START) * s / w
        return _cosine(p, self.final_lr, (s - w) / (S - w))


ANNEALING_SCHEDULES = {"cosine": CosineSchedule, "linear": LinearSchedule, "one_cycle": OneCycleSchedule}



@dataclass(frozen=True)
class ConstantSchedule:
    """Constant LR (fine-tuning and low-LR weight rewinding, §1)."""

    value: float

    def lr(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class GnmtSchedule(_PerIteration):
    """The paper's GNMT schedule (§2; MLPerf v0.5 GNMT), scaled to any training length T.

    Paper: Adam at peak LR 2e‑3, T = 5 epochs = 8,630 steps. TF NMT's ``"t2t"`` exponential warm-up
    over 200 steps starting at LR/100, ``lr(s) = peak · 0.01^((warmup_steps − s) / warmup_steps)``
    for s < warmup_steps; then ``luong234`` decay: from ``decay_start = ⌊2T/3⌋`` (5,753) the
    remaining third is cut into ``decay_count`` (4) intervals of ``⌊(T − decay_start) / decay_count⌋``
    steps (719), staircase, and the LR halves at the start of each interval after the first:
    0.002 until step 6,472, 0.001 until 7,191, 0.0005 until 7,910, then 0.00025. The fourth halving
    falls (in exact arithmetic) at T itself, so the schedule *ends* at ``peak · 0.5^(decay_count − 1)``
    = 0.00025, which is also the LR the authors' code pins at T and after, and the fine-tuning LR
    (§1, ``final_lr``). (TF's integer ``decay_steps`` would put a fourth halving on the single last
    step 8,629; here the exponent is capped at ``decay_count − 1`` so that ``lr(T − 1) == final_lr``.)
    Past T the LR stays at ``final_lr``. Milestone-free; ``lr`` is defined per iteration like
    :class:`StepSchedule`.
    """

    peak_lr: float
    epochs: int
    steps_per_epoch: int
    warmup_steps: int = 200
    decay_count: int = 4
    decay_factor: float = 0.5
    decay_start_fraction: float = 2.0 / 3.0
    decay_start: int = field(init=False, repr=False)
    decay_steps: int = field(init=False, repr=False)

    def __post_init__(self):
        self._check_length()
        if self.decay_count < 1:
            raise ValueError(f"decay_count must be at least 1; got {self.decay_count}")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(f"warmup_steps must be in 0..{self.total_steps - 1} (T − 1); got {self.warmup_steps}")
        if not 0 < self.decay_start_fraction < 1:
            raise ValueError(f"decay_start_fraction must be in (0, 1); got {self.decay_start_fraction}")
        start = int(self.total_steps * self.decay_start_fraction)
        object.__setattr__(self, "decay_start", start)
        object.__setattr__(self, "decay_steps", max(1, (self.total_steps - start) // self.decay_count))

    @property
    def base_lr(self) -> float:
        """The peak LR (the name :class:`StepSchedule` uses)."""
        return self.peak_lr

    def lr(self, step: int) -> float:
        """Learning rate used by the optimizer update of iteration ``step`` (0-based)."""
        lr = self.peak_lr
        if step >= self.decay_start:
            lr *= self.decay_factor ** min((step - self.decay_start) // self.decay_steps, self.decay_count - 1)
        if step < self.warmup_steps:
            lr *= 0.01 ** ((self.warmup_steps - step) / self.warmup_steps)
        return lr

    @property
    def final_lr(self) -> float:
        """The LR the schedule ends at, ``lr(T − 1)``: the fine-tuning LR (GNMT 0.00025)."""
        return self.lr(self.total_steps - 1)



class ScheduleValueError(ValueError):
    """A schedule gave a learning rate that is not a finite number ≥ 0."""


@dataclass(frozen=True)
class FunctionSchedule(_PerIteration):
    """Any step → LR rule ``lr_at(step, total_steps)`` as a schedule (a registered plug-in,
    :func:`rewindkit.plugins.register_schedule`). Its value at the last step, ``lr_at(T − 1, T)``,
    is the fine-tuning LR (§1); past T the LR stays there. Every step's value is computed and checked
    (a finite number ≥ 0) when the schedule is made, before anything trains."""

    lr_at: Callable[[int, int], float] = field(repr=False)
    epochs: int
    steps_per_epoch: int
    name: str = "custom"
    values: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self._check_length()
        total, values = self.total_steps, []
        for step in range(total):
            try:
                raw = self.lr_at(step, total)
            except Exception as err:  # the user's function: say which schedule, at which step, called how
                raise ScheduleValueError(f"schedule {self.name!r} failed at step {step} of {total}: {type(err).__name__}: "
                                         f"{err} (a schedule plug-in is called as lr_at(step, total_steps, recipe) "
                                         f"and returns the learning rate)") from err
            try:
                lr = float(raw)
            except (TypeError, ValueError):
                lr = math.nan
            if not (math.isfinite(lr) and lr >= 0) or isinstance(raw, (bool, str, bytes)):
                raise ScheduleValueError(f"schedule {self.name!r} gave the learning rate {raw!r} at step {step} "
                                         f"of {total}; a learning rate must be a finite number ≥ 0")
            values.append(lr)
        if values and not any(values):
            raise ScheduleValueError(f"schedule {self.name!r} gave the learning rate 0 at every one of its {total} steps: "
                                     f"the network would not train")
        object.__setattr__(self, "values", tuple(values))

    def lr(self, step: int) -> float:
        return self.values[min(step, self.total_steps - 1)]

    @property
    def final_lr(self) -> float:
        return self.lr(self.total_steps - 1)
