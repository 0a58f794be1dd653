"""The training recipe (paper §2): what a dense run trains with, and therefore part of every run's
identity. :data:`IMAGENET_RECIPE` is the paper's ImageNet recipe; the defaults are its CIFAR-10 one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .batches import steps_per_epoch
from .schedules import StepSchedule


def _check_whole(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number ≥ 1; got {value!r}")


@dataclass(frozen=True)
class Recipe:
    """A training recipe (paper §2). Defaults are the paper's CIFAR-10 ResNet recipe: 182 epochs,
    batch 128, LR 0.1 ×0.1 at epochs 91 and 136, SGD momentum 0.9, weight decay 2e-4 on all
    parameters (BatchNorm included)."""

    epochs: int = 182
    batch_size: int = 128
    lr: float = 0.1
    milestones: tuple[float, ...] = (91, 136)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    decay_batchnorm: bool = True
    fine_tune_lr: float | None = None  # None: the schedule's final LR

    def __post_init__(self):
        if isinstance(self.milestones, (str, bytes)) or not hasattr(self.milestones, "__iter__"):
            raise ValueError(f"milestones must be a sequence of epochs, e.g. (91, 136); got {self.milestones!r}")
        object.__setattr__(self, "milestones", tuple(self.milestones))
        _check_whole("epochs", self.epochs)
        _check_whole("batch_size", self.batch_size)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < float("inf"):
            raise ValueError(f"lr must be a positive number (0.1 in the paper); got {self.lr!r}")

    def schedule(self, n_train: int) -> StepSchedule:
        """The per-iteration LR schedule on a training set of ``n_train`` examples
        (:func:`batches.steps_per_epoch` iterations per epoch)."""
        return StepSchedule(self.lr, self.epochs, steps_per_epoch(n_train, self.batch_size), self.milestones,
                            self.gamma, self.warmup_epochs)

    def to_dict(self) -> dict:
        return asdict(self)


# Paper §2: ResNet-50 on ImageNet, 90 epochs at batch 1024, LR 0.4 after 5 warm-up epochs, ×0.1 at
# 30/60/80, Nesterov, weight decay 1e-4 without BatchNorm, fine-tuning at 0.0004.
IMAGENET_RECIPE = Recipe(epochs=90, batch_size=1024, lr=0.4, milestones=(30, 60, 80), warmup_epochs=5,
                         nesterov=True, weight_decay=1e-4, decay_batchnorm=False, fine_tune_lr=0.0004)
