"""The training recipe (paper §2): what a dense run trains with, and therefore part of every run's
identity. :data:`IMAGENET_RECIPE` is the paper's ImageNet recipe; the defaults are its CIFAR-10 one.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

from .batches import steps_per_epoch
from ..platform import registry
from .schedules import (ANNEALING_SCHEDULES, FunctionSchedule, GnmtSchedule, StepSchedule, check_step_decay,
                        step_final_lr)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    # Beyond SGD and step decay (GNMT, §2): Adam (β, ε), gradient clipping, label smoothing, and the
    # LR schedule by name: "step" (the above), "gnmt" (exponential warm-up, staircase halving),
    # "cosine", "linear" or "one_cycle" (from lr to the step schedule's final LR, lr × gamma **
    # len(milestones), with warmup_epochs on top; core/schedules.py) or a registered one
    # (rewindkit.plugins.register_schedule). Left at their defaults they are not part
    # of to_dict(), so the ids of every run made before they existed stay as they were.
    optimizer: str = "sgd"  # "sgd" (momentum / Nesterov) or "adam"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip_norm: float | None = None  # clip the global gradient norm (GNMT: 5)
    label_smoothing: float = 0.0  # GNMT: 0.1
    lr_schedule: str = "step"
    schedule_options: dict = field(default_factory=dict)  # e.g. gnmt: warmup_steps, decay_count, decay_factor

    def __post_init__(self):
        if isinstance(self.milestones, (str, bytes)) or not hasattr(self.milestones, "__iter__"):
            raise ValueError(f"milestones must be a sequence of epochs, e.g. (91, 136); got {self.milestones!r}")
        object.__setattr__(self, "milestones", tuple(self.milestones))
        _check_whole("epochs", self.epochs)
        _check_whole("batch_size", self.batch_size)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < float("inf"):
            raise ValueError(f"lr must be a positive number (0.1 in the paper); got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
        betas = tuple(self.adam_betas) if hasattr(self.adam_betas, "__iter__") else ()
        if len(betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), e.g. (0.9, 0.999); got {self.adam_betas!r}")
        object.__setattr__(self, "adam_betas", betas)
        if not _is_number(self.adam_eps) or not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be a positive number (1e-8 in the paper); got {self.adam_eps!r}")
        if not _is_number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be a number in [0, 1) (GNMT: 0.1); got {self.label_smoothing!r}")
        if self.grad_clip_norm is not None and not (_is_number(self.grad_clip_norm) and self.grad_clip_norm > 0):
            raise ValueError(f"grad_clip_norm must be a positive norm (GNMT: 5) or None; got {self.grad_clip_norm!r}")
        for name, low, high, paper in (("momentum", 0, 1, "0.9"), ("weight_decay", 0, float("inf"), "2e-4")):
            value = getattr(self, name)
            if not (_is_number(value) and low <= value < high and value < float("inf")):
                raise ValueError(f"{name} must be a number in [{low}, {high:g}) ({paper} in the paper); got {value!r}")
        if not isinstance(self.nesterov, bool):
            raise ValueError(f"nesterov must be True or False; got {self.nesterov!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError(f"nesterov=True is SGD's Nesterov momentum: it needs optimizer='sgd' and momentum > 0 "
                             f"(ImageNet: 0.9); got optimizer={self.optimizer!r}, momentum={self.momentum!r}")
        if self.fine_tune_lr is not None and not (_is_number(self.fine_tune_lr) and 0 < self.fine_tune_lr < float("inf")):
            raise ValueError(f"fine_tune_lr must be a positive number, or None for the schedule's final LR; got "
                             f"{self.fine_tune_lr!r}")
        if not isinstance(self.schedule_options, dict):
            raise ValueError(f"schedule_options must be a dict; got {self.schedule_options!r}")
        valid = GNMT_SCHEDULE_OPTIONS if self.lr_schedule == "gnmt" else ()
        unknown = sorted(set(self.schedule_options) - set(valid))
        plugin = registry.get("schedule", self.lr_schedule) if isinstance(self.lr_schedule, str) else None
        if plugin is None:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; valid schedules: "
                             f"{', '.join(registry.names('schedule'))}")
        if unknown and plugin.builtin:  # a registered schedule reads its own options
            raise ValueError(f"unknown schedule_options {unknown} for lr_schedule={self.lr_schedule!r}; valid: "
                             f"{', '.join(valid) or 'none (step, cosine, linear and one_cycle take milestones, gamma, warmup_epochs)'}")
        if self.lr_schedule == "step" or self.lr_schedule in ANNEALING_SCHEDULES:  # their milestones, gamma, warm-up
            check_step_decay(self.epochs, self.milestones, self.gamma, self.warmup_epochs)

    def schedule(self, n_train: int):
        """The per-iteration LR schedule on a training set of ``n_train`` examples
        (:func:`batches.steps_per_epoch` iterations per epoch)."""
        spe = steps_per_epoch(n_train, self.batch_size)
        plugin = registry.lookup("schedule", self.lr_schedule)
        if plugin.builtin:
            return plugin.call(self, spe)
        return FunctionSchedule(lambda step, total: plugin.call(step, total, self), self.epochs, spe, plugin.name)

    def to_dict(self) -> dict:
        """The recipe as stored in run configurations; fields added after the first runs are left
        out while at their defaults, so old run ids do not change."""
        d = asdict(self)
        for name, default in _LATER_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d


OPTIMIZERS = ("sgd", "adam")
# The kit's own schedules, in the one registry of schedules (rewindkit.plugins): recipe → per-iteration schedule
registry.register_builtin("schedule", "step", lambda r, spe: StepSchedule(r.lr, r.epochs, spe, r.milestones, r.gamma,
                                                                          r.warmup_epochs))


def _gnmt(r: Recipe, spe: int) -> GnmtSchedule:
    """Recipe → the GNMT schedule; a value it refuses is named as the recipe sets it (``schedule_options``)."""
    try:
        return GnmtSchedule(r.lr, r.epochs, spe, **r.schedule_options)
    except ValueError as err:
        raise ValueError(f"lr_schedule='gnmt' with recipe.schedule_options={r.schedule_options} ({r.epochs} epochs of "
                         f"{spe} iterations): {err}. Set it in recipe.schedule_options (e.g. --set "
                         f"recipe.schedule_options='{{\"warmup_steps\": 4}}'; its options and defaults: "
                         f"{_gnmt_defaults()})") from None


def _gnmt_defaults() -> str:
    from dataclasses import fields
    return ", ".join(f"{f.name}={f.default!r}" for f in fields(GnmtSchedule) if f.init and f.name not in
                     ("peak_lr", "epochs", "steps_per_epoch"))


registry.register_builtin("schedule", "gnmt", _gnmt)


def _annealing(name, cls):
    """Recipe → an annealing schedule from ``lr`` to the step schedule's final LR (the fine-tuning LR
    of every schedule, §1), with the recipe's warm-up. That end is read from the recipe's milestones
    and gamma, so they are checked as step decay checks them, and a recipe without milestones (no
    end below ``lr``: nothing to anneal) is refused."""
    def build(r, spe):
        StepSchedule(r.lr, r.epochs, spe, r.milestones, r.gamma, r.warmup_epochs)  # the same checks as "step"
        if not r.milestones:
            raise ValueError(f"lr_schedule={name!r} anneals from lr to step decay's final LR, lr × gamma ** "
                             f"len(milestones), but milestones=() leaves it at lr = {r.lr}; give the step "
                             f"schedule's milestones (e.g. the profile's), or lr_schedule='step'")
        return cls(r.lr, r.epochs, spe, step_final_lr(r.lr, r.gamma, r.milestones), r.warmup_epochs)
    return build


for _name, _cls in ANNEALING_SCHEDULES.items():
    registry.register_builtin("schedule", _name, _annealing(_name, _cls))
LR_SCHEDULES = ("step", "gnmt", *ANNEALING_SCHEDULES)
GNMT_SCHEDULE_OPTIONS = tuple(f.name for f in fields(GnmtSchedule) if f.init and f.name not in ("peak_lr", "epochs",
                                                                                                "steps_per_epoch"))
_LATER_FIELDS = ("optimizer", "adam_betas", "adam_eps", "grad_clip_norm", "label_smoothing", "lr_schedule",
                 "schedule_options")  # added after the first runs: left out of to_dict() at their defaults
_LATER_DEFAULTS = {f.name: f.default if f.default_factory is MISSING else f.default_factory()
                   for f in fields(Recipe) if f.name in _LATER_FIELDS}


# Paper §2: ResNet-50 on ImageNet, 90 epochs at batch 1024, LR 0.4 after 5 warm-up epochs, ×0.1 at
# 30/60/80, Nesterov, weight decay 1e-4 without BatchNorm, fine-tuning at 0.0004.
IMAGENET_RECIPE = Recipe(epochs=90, batch_size=1024, lr=0.4, milestones=(30, 60, 80), warmup_epochs=5,
                         nesterov=True, weight_decay=1e-4, decay_batchnorm=False, fine_tune_lr=0.0004)
