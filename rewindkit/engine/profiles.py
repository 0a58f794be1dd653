"""Experiment profiles: one object fixes network, data, recipe, grids and seeds (paper §2, §4).

* ``smoke`` — seconds; tiny MNIST-1D subset and network; every code path, for tests and CI.
* ``laptop`` — the default: offline, CPU, MNIST-1D with the 1-D ResNet, sized so the whole
  reproduction (``make reproduce``, installation included) takes about 11 minutes on 2 cores on a
  typical day (``benchmarks/RESULTS.md`` has the slow-day budget) while the paper's phenomena stay visible; accuracy evaluated at the end of each run (notebook 01's own
  runs, whose curves it draws, every epoch).
* ``paper`` — the paper's CIFAR-10 recipe (ResNet-56, T=182, its t grid, densities 0.8^k, 3 trials),
  for a GPU with the data present.
* ``cifar_short`` — a shortened CIFAR-10 schedule (ResNet-20, T=30) for a single consumer GPU.
* ``imagenet`` / ``imagenet_resnet34`` — the paper's ImageNet recipe for ResNet-50 / ResNet-34
  (structured A/B), streamed from an ImageFolder (:mod:`rewindkit.data.imagenet`); GPUs required.

A profile nests its training :class:`~rewindkit.recipe.Recipe` (part of every run's identity) and
its :class:`~rewindkit.platform.hardware.Hardware` (never part of it). Any field can be overridden:
``get_profile("laptop", **{"recipe.epochs": 8})`` or ``--set recipe.epochs=8``; the flat aliases
``epochs=8`` / ``profile.epochs`` work too.
"""

from __future__ import annotations

import ast
import numbers
from dataclasses import asdict, dataclass, field, fields, replace

from ..platform.cores import check_workers
from ..platform.hardware import Hardware
from ..core.recipe import GNMT_SCHEDULE_OPTIONS, IMAGENET_RECIPE, Recipe
from ..core.pruning import geometric_density
from ..core.schedules import ANNEALING_SCHEDULES, GnmtSchedule, step_final_lr
from ..core.signs import check_signs
from ..core.techniques import iterative_budgets

GRID_KINDS = ("one_shot", "iterative", "structured")


def plain_time(t):
    """A retraining time t as a profile writes it (4, not 4.0), so run ids do not depend on how t was
    written or computed; anything else is left for :meth:`Profile.validate` to refuse."""
    if isinstance(t, numbers.Real) and not isinstance(t, (bool, int)) and float(t).is_integer():
        return int(t)
    return t


def chain_budgets(T: int, retrain_times) -> dict:
    """A profile's iterative chains: fine-tuning, weight rewinding and LR rewinding at the paper's
    fixed budgets for its t grid (:func:`rewindkit.core.techniques.iterative_budgets`)."""
    budgets = iterative_budgets(T, retrain_times)
    return {tech: budgets[tech] for tech in ("fine_tuning", "weight_rewinding", "lr_rewinding")}
PAPER_RETRAIN_TIMES = (10, 30, 50, 70, 90, 110, 130, 150, 170, 182)  # t of the paper's CIFAR-10 grid (§4)
NESTED = {"recipe": Recipe, "hardware": Hardware}  # sub-configurations of a profile (``--set recipe.epochs=8``)


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
    # validation and test metrics after every epoch (metrics.csv curves, notebook 01), or only at the
    # end of each run (False: what the tables and figures use; BLEU decoding costs as much as training)
    evaluate_every_epoch: bool = True
    # the training recipe (paper §2), part of every run's identity
    recipe: Recipe = field(default_factory=Recipe)
    # one-shot grid (paper §4)
    densities: tuple = tuple(geometric_density(k) for k in range(1, 11))
    retrain_times: tuple = PAPER_RETRAIN_TIMES
    techniques: tuple = ("fine_tuning", "weight_rewinding", "lr_rewinding",
                         "low_lr_weight_rewinding", "reinitialization")
    # beyond the paper (notebook 12): the one-shot and iterative grids' pruning — global magnitude (§3.1)
    # or a random mask, "random_magnitude" (magnitude's per-layer counts) or "random_uniform"
    # (core.pruning.UNSTRUCTURED_PRUNINGS) — and signs imposed on every retraining start: None (the
    # technique's own start) or "dense" (the dense network's final signs, core.signs)
    pruning: str = "global_magnitude"
    signs: str | None = None
    # iterative chain: levels of 20% pruning; t per technique ("force_all" in the paper's plots, §5.3)
    iterative_levels: int = 17
    iterative_retrain_times: dict | None = None  # None: the paper's fixed budgets for T and the t grid (chain_budgets)
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
    # where and how to compute (never part of a run's identity); device "auto": CUDA if visible
    hardware: Hardware = field(default_factory=lambda: Hardware(device="auto"))
    # runs at a time (local executor processes, Ray CPU slots): a number, or "auto" — every core available
    # to the process, capped by memory (platform.cores; one process on a GPU, where packing is the concurrency)
    workers: int | str = "auto"

    def __post_init__(self):
        for section, cls in NESTED.items():  # a dict (from JSON or ``--set recipe={...}``) becomes the dataclass
            value = getattr(self, section)
            if isinstance(value, dict):
                object.__setattr__(self, section, cls(**value))
            elif not isinstance(value, cls):
                raise ValueError(f"{section} must be a {cls.__name__} or a dict of its fields; got {value!r}")
        for name in ("densities", "retrain_times", "techniques", "structured_configs",
                     "structured_levels", "seeds", "iterative_retrain_grid", "structured_retrain_times",
                     "structured_techniques"):
            value = getattr(self, name)
            if value is None and name in ("structured_retrain_times", "structured_techniques"):
                continue  # None: same as retrain_times / techniques
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"{name} must be a sequence, e.g. {name}=({value!r},); got {value!r}")
            value = tuple(value)
            if name in ("retrain_times", "structured_retrain_times", "iterative_retrain_grid"):
                value = tuple(dict.fromkeys(plain_time(t) for t in value))  # 4.0 is 4: one run id, one run
            repeated = next((v for i, v in enumerate(value) if v in value[:i]), None)
            if repeated is not None:  # the same runs twice: a grid would silently have fewer trials or cells
                raise ValueError(f"{name} lists {repeated!r} more than once (got {list(getattr(self, name))}); give "
                                 f"each value once: a repeated value names the same runs")
            object.__setattr__(self, name, value)
        if isinstance(self.iterative_retrain_times, dict):
            object.__setattr__(self, "iterative_retrain_times",
                               {tech: plain_time(t) for tech, t in self.iterative_retrain_times.items()})
        if self.iterative_retrain_times is None:
            if not self.retrain_times:  # the chains' budgets come from it
                raise ValueError("retrain_times must hold at least one retraining time t (epochs), e.g. (2, 4, 6, 8), "
                                 "or give iterative_retrain_times")
            object.__setattr__(self, "iterative_retrain_times", chain_budgets(self.recipe.epochs, self.retrain_times))
        self.validate()

    def validate(self) -> None:
        from .. import data, models
        from ..core import pruning
        from ..core.techniques import Technique
        if self.network not in models.network_names():
            raise ValueError(f"unknown network {self.network!r}; valid networks: {', '.join(models.network_names())}")
        if self.dataset not in data.dataset_names():
            raise ValueError(f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(data.dataset_names())}")
        for d in self.densities:
            pruning.GlobalMagnitude(d)  # the pruning descriptions check their own values
        if self.pruning not in pruning.UNSTRUCTURED_PRUNINGS:
            raise ValueError(f"unknown pruning {self.pruning!r}; valid: {', '.join(pruning.UNSTRUCTURED_PRUNINGS)}")
        check_signs(self.signs)
        for what, times in self.retrain_time_fields().items():  # each within T only for the grid that uses it
            for t in times:
                if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
                    raise ValueError(f"{what} must hold retraining times t > 0 in epochs; got {t!r}")
        for tech in tuple(self.techniques) + tuple(self.iterative_retrain_times) + tuple(self.structured_techniques or ()):
            Technique.parse(tech)
        for c in self.structured_configs:
            for level in self.structured_levels:
                pruning.FilterPruning(c, level)
        if isinstance(self.iterative_levels, bool) or not isinstance(self.iterative_levels, int) or self.iterative_levels < 1:
            raise ValueError(f"iterative_levels must be a whole number ≥ 1 of rounds of pruning 20% (the paper's "
                             f"CIFAR chains have 17); got {self.iterative_levels!r}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        bad = [s for s in self.seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if bad:
            raise ValueError(f"seeds must be whole numbers ≥ 0 (each a trial, 1, 2, 3 in the paper); got {bad[0]!r}")

        for name in ("n_train", "n_eval"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number ≥ 1, or None for the whole split; got {value!r}")
        if not isinstance(self.evaluate_every_epoch, bool):
            raise ValueError(f"evaluate_every_epoch must be True or False; got {self.evaluate_every_epoch!r}")
        check_workers(self.workers)

    def retrain_time_fields(self, kind: str | None = None) -> dict[str, tuple]:
        """The fields holding retraining times t, by name, for one grid kind or all: one-shot
        ``retrain_times``; iterative ``iterative_retrain_times`` and ``iterative_retrain_grid``;
        structured ``structured_retrain_times`` (else ``retrain_times``)."""
        by_kind = {
            "one_shot": {"retrain_times": self.retrain_times},
            "iterative": {**{f"iterative_retrain_times[{tech!r}]": (t,) for tech, t in self.iterative_retrain_times.items()},
                          "iterative_retrain_grid": self.iterative_retrain_grid},
            "structured": {"structured_retrain_times" if self.structured_retrain_times is not None else "retrain_times":
                           tuple(self.structured_retrain_times or self.retrain_times)},
        }
        if kind is not None:
            return by_kind[kind]
        return {k: v for fields_of_kind in by_kind.values() for k, v in fields_of_kind.items()}

    def check_retrain_times(self, kind: str) -> None:
        """Every t the ``kind`` grid uses lies in (0, T]; the error names the field (a profile whose
        epochs were overridden may still hold another grid's longer t, which is checked only there)."""
        T = self.recipe.epochs
        for what, times in self.retrain_time_fields(kind).items():
            bad = [t for t in times if not 0 < t <= T]
            if bad:
                raise ValueError(f"{what} holds t = {', '.join(f'{t:g}' for t in bad)} epochs, beyond T = {T} "
                                 f"(recipe.epochs) for the {kind} grid; every retraining time must be in (0, T]: "
                                 f"override {what.split('[')[0]} too")

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> list[dict]:
        """The recipe and grid as (setting, value) rows, as the paper's §2 states a recipe."""
        r = self.recipe
        rows = {"network": self.network, "epochs T": r.epochs, "batch size": r.batch_size, "peak LR": r.lr}
        if r.lr_schedule == "step":
            rows.update({"warm-up": f"{r.warmup_epochs:g} epochs, linear",
                         f"LR drops (×{r.gamma:g})": ", ".join(f"epoch {m:g}" for m in r.milestones)})
        elif r.lr_schedule == "gnmt":
            o = {**{f.name: f.default for f in fields(GnmtSchedule) if f.name in GNMT_SCHEDULE_OPTIONS},
                 **r.schedule_options}
            rows["LR schedule"] = (f"GNMT: exponential warm-up from LR/100 over {o['warmup_steps']} steps, then "
                                   f"×{o['decay_factor']:g} in {o['decay_count']} steps from {o['decay_start_fraction']:.0%} of T")
        elif r.lr_schedule in ANNEALING_SCHEDULES:
            final = step_final_lr(r.lr, r.gamma, r.milestones)
            rows.update({"warm-up": f"{r.warmup_epochs:g} epochs, linear",
                         "LR schedule": f"{r.lr_schedule.replace('_', '-')} from {r.lr:g} to {final:g} "
                                        f"(step decay's final LR)"})
        else:
            rows["LR schedule"] = f"{r.lr_schedule} (a registered plug-in)"
        if r.optimizer == "adam":
            rows["optimizer"] = f"Adam (β {r.adam_betas[0]:g}/{r.adam_betas[1]:g}, ε {r.adam_eps:g})"
        else:
            rows["momentum"] = f"{r.momentum} ({'Nesterov' if r.nesterov else 'heavy ball'})"
        rows.update({
            "weight decay": f"{r.weight_decay:g} ({'incl.' if r.decay_batchnorm else 'excl.'} BatchNorm)",
            **({"label smoothing": r.label_smoothing} if r.label_smoothing else {}),
            **({"gradient clipping (norm)": r.grad_clip_norm} if r.grad_clip_norm else {}),
            "fine-tuning LR": "the schedule's final LR" if r.fine_tune_lr is None else r.fine_tune_lr,
            **({"pruning (beyond the paper)": self.pruning} if self.pruning != "global_magnitude" else {}),
            **({"signs imposed on each start": f"the {self.signs} network's"} if self.signs else {}),
            "retraining times t": ", ".join(map(str, self.retrain_times)),
            "densities (one-shot)": ", ".join(f"{d:.3f}" for d in self.densities)})
        return [{"setting": k, "value": v} for k, v in rows.items()]



def _flat_alias(section: str, name: str) -> property:
    return property(lambda self: getattr(getattr(self, section), name),
                    doc=f"``{section}.{name}`` (flat alias, read-only; override with ``{name}=`` or ``{section}.{name}=``)")


for _section, _cls in NESTED.items():
    for _f in fields(_cls):
        setattr(Profile, _f.name, _flat_alias(_section, _f.name))

# The CIFAR profiles on one GPU: each run's whole step (data step included) as one CUDA graph, and
# 4 runs at once, each replaying its graph on its own stream. Measured on an H200 (benchmarks/
# RESULTS.md, 2026-12-04): one graphed ResNet-56 run keeps the GPU 92% busy, so K runs on streams
# give 1.25× (K = 2), 1.26× (K = 4), 1.18× (K = 8) one run's epochs per GPU-hour (ResNet-20: 1.26×,
# 1.27×, 1.18×); the same K as one vmapped batch or as K processes gave less (≤ 1.04×, ≤ 0.94×).
_ONE_GPU = Hardware(device="auto", channels_last=True, cuda_graphs=True, packing=4)

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", network="mnist1d_resnet", model_options={"depth": 8, "width": 4},
        dataset="mnist1d", n_train=256, n_eval=100, recipe=Recipe(epochs=4, batch_size=64, milestones=(2, 3)),
        densities=(0.5, 0.1), retrain_times=(2, 4),
        iterative_levels=2, structured_configs=("generic_a", "generic_b"), structured_levels=(1, 3), seeds=(1,),
        hardware=Hardware(device="cpu", channels_last=True), reinit_every_t=False),
    "laptop": Profile(
        name="laptop", network="mnist1d_resnet", model_options={"depth": 8, "width": 8},
        dataset="mnist1d", recipe=Recipe(epochs=8, batch_size=128, lr=0.2, milestones=(5, 7)),
        densities=tuple(geometric_density(k) for k in (4, 8, 12, 16)), retrain_times=(2, 4, 6, 8),
        iterative_levels=8, structured_configs=("generic_a", "generic_b"), structured_levels=(1, 5), structured_retrain_times=(2, 8),
        structured_techniques=("fine_tuning", "weight_rewinding", "lr_rewinding", "reinitialization"),
        seeds=(1, 2, 3), hardware=Hardware(device="cpu", channels_last=True), reinit_every_t=False,
        evaluate_every_epoch=False),
    "paper": Profile(
        name="paper", network="resnet56", dataset="cifar10", iterative_retrain_grid=PAPER_RETRAIN_TIMES,
        hardware=_ONE_GPU),
    "cifar_short": Profile(
        name="cifar_short", network="resnet20", dataset="cifar10", recipe=Recipe(epochs=30, milestones=(15, 23)),
        densities=tuple(geometric_density(k) for k in (2, 4, 6, 8, 10)), retrain_times=(3, 9, 15, 23, 27, 30),
        iterative_levels=10, structured_configs=("generic_a", "generic_b"),
        hardware=_ONE_GPU),
}
# Beyond vision (paper §2's GNMT at laptop scale): English → French number names, word level, a
# 15k-parameter GNMT-style LSTM encoder–decoder (bidirectional encoder, normed-Bahdanau attention),
# Adam with GNMT's exponential warm-up and staircase halving (batch 64, peak 2e-2 where the paper has
# 2e-3: at this scale a peak of 1e-2 gave a mean dense test BLEU of 78.8, 2e-2 94.9, 3 seeds each),
# gradient clipping 5, label smoothing 0.1; every weight prunable, as the authors pruned GNMT (§3.1).
# Densities 0.8^k over the range where fine-tuning breaks (three of the paper's four GNMT panels);
# BLEU, evaluated at the end of each run only (greedy decoding of the validation and test sets costs
# about as much as an epoch of training).
_TRANSLATION_RECIPE = Recipe(epochs=32, batch_size=64, lr=2e-2, weight_decay=0.0, optimizer="adam", grad_clip_norm=5.0,
                             label_smoothing=0.1, lr_schedule="gnmt", schedule_options={"warmup_steps": 64})
PROFILES["translation"] = Profile(
    name="translation", network="gnmt_small", model_options={"embed": 16, "hidden": 32},
    dataset="translation", dataset_options={"source": "en", "target": "fr", "source_level": "word",
                                            "target_level": "word", "n_train": 512, "n_val": 250, "n_test": 250},
    recipe=_TRANSLATION_RECIPE, densities=tuple(geometric_density(k) for k in (4, 6, 8)), retrain_times=(8, 16, 32),
    techniques=("fine_tuning", "weight_rewinding", "lr_rewinding"), iterative_levels=8,
    structured_configs=(),
    seeds=(1, 2, 3), hardware=Hardware(device="cpu"), evaluate_every_epoch=False)
PROFILES["translation_smoke"] = replace(
    PROFILES["translation"], name="translation_smoke",
    dataset_options={**PROFILES["translation"].dataset_options, "n_train": 128, "n_val": 32, "n_test": 32},
    recipe=replace(_TRANSLATION_RECIPE, epochs=4, batch_size=32, lr=1e-2, schedule_options={"warmup_steps": 4}),
    densities=(0.5, 0.2), retrain_times=(2, 4), iterative_levels=2, iterative_retrain_times=None,
    seeds=(1,), workers=1)
# The translation profile that stands in for each vision profile in notebook 11 (make test: smoke)
TRANSLATION_COUNTERPARTS = {"smoke": "translation_smoke", "laptop": "translation"}


def vision_counterpart(translation_profile: str) -> str:
    """The vision profile a translation profile stands in for (:data:`TRANSLATION_COUNTERPARTS` read backwards)."""
    return {t: v for v, t in TRANSLATION_COUNTERPARTS.items()}[translation_profile]
# ImageNet (paper §2): torchvision ResNet-50 with the paper's ImageNet recipe, t = 9…90.
PROFILES["imagenet"] = Profile(
    name="imagenet", network="resnet50", dataset="imagenet", recipe=IMAGENET_RECIPE,
    retrain_times=tuple(range(9, 91, 9)), iterative_levels=10,
    structured_configs=("resnet34_a", "resnet34_b"), structured_levels=(1,),
    hardware=Hardware(device="auto", bf16=True, channels_last=True))
# ResNet-34 with the structured A/B configurations (paper §3.2)
PROFILES["imagenet_resnet34"] = replace(PROFILES["imagenet"], name="imagenet_resnet34", network="resnet34")
IMAGENET_PROFILES = ("imagenet", "imagenet_resnet34")  # the profiles that train on ImageNet (notebook 10)


def parse_value(text: str):
    """A ``--set`` value: a Python/JSON literal if it parses as one, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.strip().lower()
        if low in ("true", "false", "null", "none"):
            return {"true": True, "false": False}.get(low)
        return text


def _override_fields() -> list[str]:
    """Every name ``get_profile``/``--set`` accepts: profile fields, ``recipe.X``/``hardware.X``, and
    the flat aliases ``X`` of the nested fields."""
    top = [f.name for f in fields(Profile) if f.name != "name"]
    nested = [f"{section}.{f.name}" for section, cls in NESTED.items() for f in fields(cls)]
    flat = [f.name for cls in NESTED.values() for f in fields(cls)]
    return top + nested + flat


def get_profile(name: str | Profile, **overrides) -> Profile:
    """A named profile with fields overridden; unknown names raise errors listing the choices.

    Nested fields are overridden by dotted name (``**{"recipe.epochs": 8}``, ``--set recipe.epochs=8``)
    or by their flat alias (``epochs=8``); a whole ``recipe=Recipe(...)`` replaces the recipe.
    Naming another ``network`` resets ``model_options`` to ``{}``, and another ``dataset`` resets
    ``dataset_options``, ``n_train`` and ``n_eval`` (the base profile's belong to its own network
    and data), unless they are overridden too.
    """
    if isinstance(name, Profile):
        base = name
    elif name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    else:
        base = PROFILES[name]
    valid = _override_fields()
    top, nested = {}, {section: {} for section in NESTED}
    for key, value in overrides.items():
        if key not in valid:
            import difflib
            section, _, leaf = key.rpartition(".")  # compare names within the same section (recipe., hardware.)
            same = {v.rpartition(".")[2]: v for v in valid if v.rpartition(".")[0] == section}
            near = [same[n] for n in difflib.get_close_matches(leaf, list(same), n=3, cutoff=0.75)]
            hint = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
            raise ValueError(f"unknown profile field {key!r}; {hint}valid fields: {', '.join(valid)}")
        section, _, sub = key.rpartition(".")
        if not section:
            section = next((s for s, cls in NESTED.items() if key in {f.name for f in fields(cls)}), "")
        if section:
            nested[section][sub] = value
        else:
            top[key] = value
    for section, changes in nested.items():
        if changes:
            top[section] = replace(top.get(section, getattr(base, section)), **changes)
    # options belong to the network / dataset they were written for: another network starts from
    # its own defaults, another dataset from its own options and its whole splits
    if top.get("network", base.network) != base.network:
        top.setdefault("model_options", {})
    if top.get("dataset", base.dataset) != base.dataset:
        top.setdefault("dataset_options", {})
        top.setdefault("n_train", None)
        top.setdefault("n_eval", None)
    profile = replace(base, **top)
    # budgets the base derived from its T and t grid follow a new T or grid (unless given)
    derived = base.iterative_retrain_times == chain_budgets(base.recipe.epochs, base.retrain_times)
    if derived and "iterative_retrain_times" not in top and (
            (profile.recipe.epochs, profile.retrain_times) != (base.recipe.epochs, base.retrain_times)):
        profile = replace(profile, iterative_retrain_times=None)
    return profile


def parse_overrides(pairs) -> dict:
    """``["epochs=8", "seeds=(1,2)"]`` → ``{"epochs": 8, "seeds": (1, 2)}``."""
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--set expects key=value; got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = parse_value(value)
    return out
