"""Learning-rate schedules, defined per iteration (paper §2).

The paper's schedules are step decay with optional linear warmup: CIFAR 0.1, ×0.1 at epochs 91 and
136 of 182; ImageNet 0.4 with 5 warmup epochs, ×0.1 at 30, 60, 80 of 90. An epoch is a whole number
``steps_per_epoch`` of iterations, so epoch ↔ iteration conversion is exact integer arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StepSchedule:
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
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive; got {self.epochs}")
        if self.steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive; got {self.steps_per_epoch}")
        if list(self.milestones) != sorted(self.milestones) or any(not 0 < m < self.epochs for m in self.milestones):
            raise ValueError(f"milestones must be increasing epochs inside (0, {self.epochs}); got {self.milestones}")
        object.__setattr__(self, "milestones", tuple(self.milestones))
        object.__setattr__(self, "milestone_steps", tuple(self.epoch_to_step(m) for m in self.milestones))
        object.__setattr__(self, "warmup_steps", self.epoch_to_step(self.warmup_epochs))

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

    def lr(self, step: int) -> float:
        """Learning rate used by the optimizer update of iteration ``step`` (0-based)."""
        decays = sum(step >= m for m in self.milestone_steps)
        lr = self.base_lr * self.gamma**decays
        if self.warmup_steps and step < self.warmup_steps:
            lr *= step / self.warmup_steps
        return lr

    @property
    def final_lr(self) -> float:
        """LR after every milestone: the fine-tuning LR (CIFAR 0.001, ImageNet 0.0004)."""
        return self.base_lr * self.gamma ** len(self.milestones)

    def trace(self, start: int, stop: int) -> list[float]:
        return [self.lr(s) for s in range(start, stop)]


@dataclass(frozen=True)
class ConstantSchedule:
    """Constant LR (fine-tuning and low-LR weight rewinding, §1)."""

    value: float

    def lr(self, step: int) -> float:
        return self.value
