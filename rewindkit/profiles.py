"""Experiment profiles: one object fixes network, data, recipe, grids and seeds (paper §2, §4).

* ``smoke`` — seconds; tiny MNIST-1D subset and network; every code path, for tests and CI.
* ``laptop`` — the default: offline, CPU, MNIST-1D with the 1-D ResNet, sized so the whole
  reproduction runs in minutes on 2 cores while the paper's phenomena stay visible.
* ``paper`` — the paper's CIFAR-10 recipe (ResNet-56, T=182, its t grid, densities 0.8^k, 3 trials),
  for a GPU with the data present.
* ``cifar_short`` — a shortened CIFAR-10 schedule (ResNet-20, T=30) for a single consumer GPU.
* ``imagenet`` / ``imagenet_resnet34`` — the paper's ImageNet recipe for ResNet-50 / ResNet-34
  (structured A/B), streamed from an ImageFolder (:mod:`rewindkit.imagenet`); GPUs required.

Any field can be overridden: ``get_profile("laptop", epochs=8)`` or ``--set epochs=8``.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field, fields, replace

from .training import COMPILE_MODES, Hardware, Recipe

GRID_KINDS = ("one_shot", "iterative", "structured")


@dataclass(frozen=True)
class Profile:
    name: str
    # network and data
    network: str = "mnist1d_resnet"
    model_options: dict = field(default_factory=dict)
    dataset: str = "mnist1d"
    dataset_options: dict = field(default_factory=dict)
    n_train: int | None = None  # subset of the training set (None: all)
    n_eval: int | None = None  # subset of validation and test sets (None: all)
    # recipe (paper §2)
    epochs: int = 182
    batch_size: int = 128
    lr: float = 0.1
    milestones: tuple = (91, 136)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    decay_batchnorm: bool = True
    fine_tune_lr: float | None = None
    # one-shot grid (paper §4)
    densities: tuple = tuple(round(0.8**k, 6) for k in range(1, 11))
    retrain_times: tuple = (10, 30, 50, 70, 90, 110, 130, 150, 170, 182)
    techniques: tuple = ("fine_tuning", "weight_rewinding", "lr_rewinding",
                         "low_lr_weight_rewinding", "reinitialization")
    # iterative chain: levels of 20% pruning; t per technique ("force_all" in the paper's plots, §5.3)
    iterative_levels: int = 17
    iterative_retrain_times: dict = field(default_factory=lambda: {
        "fine_tuning": 182, "weight_rewinding": 150, "lr_rewinding": 182})
    # and, per technique above, a chain at every t of this grid (empty: the fixed budgets only)
    iterative_retrain_grid: tuple = ()
    # reinitialization trains T + t epochs; True: at every t (the paper), False: once per cell at the
    # smallest t (an economy)
    reinit_every_t: bool = True
    # structured grid (paper §3.2)
    structured_configs: tuple = ("resnet56_a", "resnet56_b")
    structured_levels: tuple = (1, 2, 3, 4, 5)
    structured_retrain_times: tuple | None = None  # None: same as retrain_times
    structured_techniques: tuple | None = None  # None: same as techniques
    seeds: tuple = (1, 2, 3)
    # hardware (never part of a run's identity)
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False  # torch.compile (GPU fast path)
    compile_mode: str = "default"  # "reduce-overhead": torch.compile with CUDA graphs
    cuda_graphs: bool = False  # capture each whole training step as one CUDA graph (GPU fast path)
    workers: int = 1

    def __post_init__(self):
        for name in ("milestones", "densities", "retrain_times", "techniques", "structured_configs",
                     "structured_levels", "seeds", "iterative_retrain_grid", "structured_retrain_times",
                     "structured_techniques"):
            value = getattr(self, name)
            if value is None and name in ("structured_retrain_times", "structured_techniques"):
                continue  # None: same as retrain_times / techniques
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"{name} must be a sequence, e.g. {name}=({value!r},); got {value!r}")
            object.__setattr__(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        from . import data, models, pruning
        from .techniques import TECHNIQUES, check_retrain_epochs
        if self.network not in models.MODELS:
            raise ValueError(f"unknown network {self.network!r}; valid networks: {', '.join(models.MODELS)}")
        if self.dataset not in data.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(data.DATASETS)}")
        for d in self.densities:
            pruning._check_density(d)
        for t in (self.retrain_times + tuple(self.structured_retrain_times or ()) + tuple(self.iterative_retrain_times.values())
                  + self.iterative_retrain_grid):
            check_retrain_epochs(t, self.epochs)
        for tech in tuple(self.techniques) + tuple(self.iterative_retrain_times) + tuple(self.structured_techniques or ()):
            if tech not in TECHNIQUES:
                raise ValueError(f"unknown technique {tech!r}; valid techniques: {', '.join(TECHNIQUES)}")
        for c in self.structured_configs:
            if c not in pruning.FILTER_CONFIGS:
                raise ValueError(f"unknown filter-pruning config {c!r}; valid configs: {', '.join(pruning.FILTER_CONFIGS)}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number ≥ 1; got {value!r}")
        for name in ("n_train", "n_eval"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number ≥ 1, or None for the whole split; got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < float("inf"):
            raise ValueError(f"lr must be a positive number (0.1 in the paper); got {self.lr!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile_mode {self.compile_mode!r}; choose one of {', '.join(COMPILE_MODES)}")
        if self.workers < 1:
            raise ValueError(f"workers must be ≥ 1; got {self.workers}")

    @property
    def recipe(self) -> Recipe:
        """The training recipe; a profile repeats Recipe's fields flat so ``--set epochs=8`` works."""
        return Recipe(**{f.name: getattr(self, f.name) for f in fields(Recipe)})

    @property
    def hardware(self) -> Hardware:
        import torch
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        return Hardware(device=device, bf16=self.bf16, channels_last=self.channels_last,
                        compile=self.compile, compile_mode=self.compile_mode, cuda_graphs=self.cuda_graphs)

    def to_dict(self) -> dict:
        return asdict(self)


_PAPER_T = (10, 30, 50, 70, 90, 110, 130, 150, 170, 182)

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", network="mnist1d_resnet", model_options={"depth": 8, "width": 4},
        dataset="mnist1d", n_train=256, n_eval=100, epochs=4, batch_size=64, milestones=(2, 3),
        densities=(0.5, 0.1), retrain_times=(2, 4),
        iterative_levels=2, iterative_retrain_times={"fine_tuning": 4, "weight_rewinding": 3, "lr_rewinding": 4},
        structured_configs=("generic_a", "generic_b"), structured_levels=(1, 3), seeds=(1,), device="cpu",
        channels_last=True, reinit_every_t=False),
    "laptop": Profile(
        name="laptop", network="mnist1d_resnet", model_options={"depth": 8, "width": 16},
        dataset="mnist1d", epochs=12, batch_size=128, milestones=(6, 9),
        densities=tuple(round(0.8**k, 6) for k in (4, 8, 12, 16)), retrain_times=(3, 6, 9, 12),
        iterative_levels=8, iterative_retrain_times={"fine_tuning": 12, "weight_rewinding": 9, "lr_rewinding": 12},
        structured_configs=("generic_a", "generic_b"), structured_levels=(1, 3, 5), structured_retrain_times=(3, 12),
        structured_techniques=("fine_tuning", "weight_rewinding", "lr_rewinding", "reinitialization"),
        seeds=(1, 2, 3), device="cpu", channels_last=True, workers=2, reinit_every_t=False),
    "paper": Profile(
        name="paper", network="resnet56", dataset="cifar10", retrain_times=_PAPER_T, iterative_retrain_grid=_PAPER_T,
        structured_configs=("resnet56_a", "resnet56_b"), channels_last=True, cuda_graphs=True),
    "cifar_short": Profile(
        name="cifar_short", network="resnet20", dataset="cifar10", epochs=30, milestones=(15, 23),
        densities=tuple(round(0.8**k, 6) for k in (2, 4, 6, 8, 10)), retrain_times=(3, 9, 15, 23, 27, 30),
        iterative_levels=10, iterative_retrain_times={"fine_tuning": 30, "weight_rewinding": 27, "lr_rewinding": 30},
        structured_configs=("generic_a", "generic_b"), channels_last=True, cuda_graphs=True),
}
# ImageNet (paper §2): torchvision ResNet-50, 90 epochs at batch 1024, LR 0.4 after 5 warm-up epochs,
# ×0.1 at 30/60/80, Nesterov, weight decay 1e-4 without BatchNorm, fine-tuning at 0.0004, t = 9…90.
PROFILES["imagenet"] = Profile(
    name="imagenet", network="resnet50", dataset="imagenet", epochs=90, batch_size=1024, lr=0.4,
    milestones=(30, 60, 80), warmup_epochs=5, nesterov=True, weight_decay=1e-4, decay_batchnorm=False,
    fine_tune_lr=0.0004, retrain_times=tuple(range(9, 91, 9)), iterative_levels=10,
    iterative_retrain_times={"fine_tuning": 90, "weight_rewinding": 81, "lr_rewinding": 90},
    structured_configs=("resnet34_a", "resnet34_b"), structured_levels=(1,), bf16=True, channels_last=True)
# ResNet-34 with the structured A/B configurations (paper §3.2)
PROFILES["imagenet_resnet34"] = replace(PROFILES["imagenet"], name="imagenet_resnet34", network="resnet34")


def parse_value(text: str):
    """A ``--set`` value: a Python/JSON literal if it parses as one, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.strip().lower()
        if low in ("true", "false", "null", "none"):
            return {"true": True, "false": False}.get(low)
        return text


def get_profile(name: str, **overrides) -> Profile:
    """A named profile with fields overridden; unknown names raise errors listing the choices."""
    if isinstance(name, Profile):
        base = name
    elif name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    else:
        base = PROFILES[name]
    valid = [f.name for f in fields(Profile) if f.name != "name"]
    bad = [k for k in overrides if k not in valid]
    if bad:
        raise ValueError(f"unknown profile field {bad[0]!r}; valid fields: {', '.join(valid)}")
    return replace(base, **overrides)


def parse_overrides(pairs) -> dict:
    """``["epochs=8", "seeds=(1,2)"]`` → ``{"epochs": 8, "seeds": (1, 2)}``."""
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--set expects key=value; got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = parse_value(value)
    return out
