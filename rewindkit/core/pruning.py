"""Pruning rules that turn trained weights into a :class:`~rewindkit.core.masks.Mask` (paper §3).

* :func:`global_magnitude` — the paper's unstructured rule: one magnitude threshold over every conv
  and linear weight, already-pruned weights counting as zero (§3.1).
* :func:`layerwise_magnitude`, :func:`random_pruning` — ablation baselines; :func:`random_like_magnitude`
  — random weights at magnitude pruning's per-layer counts (beyond the paper: Le & Hua 2021).
* :func:`l1_filters` — L1-norm filter pruning after Li et al. (2017) with the paper's ResNet-56/110
  configurations A and B (§3.2) or the user's (both in :mod:`.filter_configs`), compression levels
  1–5; :func:`compact` (from :mod:`.compaction`) turns such a mask into a physically smaller network.

``density`` is always the fraction of *all prunable weights* that the returned mask keeps.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from .compaction import compact  # noqa: F401  (pruning.compact: a structured mask made physical)
from .filter_configs import (FILTER_CONFIGS, LEVELS, ROUNDINGS, FilterConfig, filter_config,  # noqa: F401
                             filter_config_names, filter_count, register_filter_config, unregister_filter_config)
from .masks import Mask
from .seeds import derive_seed
from .residual import residual_blocks


KEEP_PER_LEVEL = 0.8  # each round of the paper's iterative pruning keeps 80% of the remaining weights (§5)
ONE_SHOT_DIGITS, ITERATIVE_DIGITS = 6, 10  # how the grids write 0.8^k: run ids hash the rounded value


def geometric_density(k: int, digits: int = ONE_SHOT_DIGITS) -> float:
    """0.8^k, the density after k rounds of pruning 20%, rounded as the grids write it: a one-shot
    density at :data:`ONE_SHOT_DIGITS` (the profiles' 0.8^k), an iterative level at
    :data:`ITERATIVE_DIGITS` (the grids have always written them so; one rounding for both would
    change every stored run id)."""
    return round(KEEP_PER_LEVEL**k, digits)


def _check_density(density: float) -> float:
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0.0 < density <= 1.0:
        raise ValueError(f"density must be a fraction of weights kept in (0, 1]; got {density!r}")
    return float(density)


def _base_mask(model: nn.Module, mask: Mask | None) -> Mask:
    if mask is None:
        mask = Mask.ones(model)
        if not mask.weight_names and getattr(model, "prunable", None) is not None:
            raise ValueError(f"{type(model).__name__} has nothing to prune: its prunable names (model.prunable) are empty")
        if not mask.weight_names:
            raise ValueError(f"{type(model).__name__} has nothing to prune: magnitude pruning (§3.1) prunes the weights "
                             f"of Conv1d/2d/3d and Linear layers by default, and it has none; name its prunable "
                             f"parameters with model.prunable = [names] (register_network(..., prunable=...))")
        return mask
    mask.check_model(model)
    return mask


def _keep_count(density: float, base: Mask) -> int:
    k = int(math.floor(density * base.num_total() + 0.5))
    if k > base.num_kept():
        raise ValueError(f"density {density} keeps {k} weights but the existing mask keeps only "
                         f"{base.num_kept()} (density {base.density():.6f}); pruned weights stay pruned")
    return max(k, 1)


def _mask_from_scores(base: Mask, scores: dict[str, torch.Tensor], k: int) -> Mask:
    names = base.weight_names
    flat = torch.cat([scores[n].flatten() for n in names])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, k, sorted=False).indices] = True
    out, offset = dict(base), 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep[offset:offset + size].view_as(scores[n]) & base[n].to(keep.device)
        offset += size
    return base.replace({n: t.cpu() for n, t in out.items()})


@torch.no_grad()
def global_magnitude(model: nn.Module, density: float, mask: Mask | None = None) -> Mask:
    """Keep the ``density`` fraction of prunable weights with the largest |w| (one global threshold).

    With an existing ``mask``, its pruned weights count as zero and stay pruned, so iteration k of
    the paper's iterative pruning (remove 20% of the remaining weights) is ``density=0.8**k`` and
    lands on it to within one weight (§3.1).
    """
    density = _check_density(density)
    base = _base_mask(model, mask)
    params = dict(model.named_parameters())
    scores = {n: params[n].detach().abs().float() * base[n].to(params[n].device) for n in base.weight_names}
    return _mask_from_scores(base, scores, _keep_count(density, base))


@torch.no_grad()
def layerwise_magnitude(model: nn.Module, density: float, mask: Mask | None = None) -> Mask:
    """Keep the ``density`` fraction of each layer's weights by magnitude (ablation; not the paper's rule)."""
    density = _check_density(density)
    base = _base_mask(model, mask)
    params = dict(model.named_parameters())
    out = dict(base)
    for n in base.weight_names:
        score = (params[n].detach().abs().float() * base[n].to(params[n].device)).flatten()
        k = max(1, int(math.floor(density * score.numel() + 0.5)))
        if k > int(base[n].sum()):
            raise ValueError(f"density {density} keeps {k} weights of {n!r}, which has only {int(base[n].sum())} left")
        keep = torch.zeros_like(score, dtype=torch.bool)
        keep[torch.topk(score, k, sorted=False).indices] = True
        out[n] = keep.view_as(params[n]).cpu() & base[n]
    return base.replace(out)


@torch.no_grad()
def random_pruning(model: nn.Module, density: float, mask: Mask | None = None, seed: int = 0) -> Mask:
    """Keep a uniformly random ``density`` fraction of all prunable weights (global, ablation)."""
    density = _check_density(density)
    base = _base_mask(model, mask)
    gen = torch.Generator().manual_seed(seed)
    scores = {n: (torch.rand(base[n].shape, generator=gen) + 1.0) * base[n].cpu() for n in base.weight_names}
    return _mask_from_scores(base, scores, _keep_count(density, base))


@torch.no_grad()
def random_like_magnitude(model: nn.Module, density: float, mask: Mask | None = None, seed: int = 0) -> Mask:
    """Keep, in every layer, as many uniformly random weights as :func:`global_magnitude` keeps there
    (its per-layer densities, hence its global count, exactly): the random masks of Le & Hua (ICLR
    2021) and Gadhikar & Burkholz (ICLR 2024), which keep a pruning method's layer-wise sparsity."""
    magnitude = global_magnitude(model, density, mask)
    base = _base_mask(model, mask)
    gen = torch.Generator().manual_seed(seed)
    out = dict(base)
    for n in base.weight_names:
        score = ((torch.rand(base[n].shape, generator=gen) + 1.0) * base[n].cpu()).flatten()
        keep = torch.zeros_like(score, dtype=torch.bool)
        keep[torch.topk(score, int(magnitude[n].sum()), sorted=False).indices] = True
        out[n] = keep.view_as(base[n]) & base[n].cpu()
    return base.replace(out)


# --------------------------------------------------------------------------------------------------
# Structured: L1-norm filter pruning (Li et al. 2017) with the paper's configurations (§3.2)
# --------------------------------------------------------------------------------------------------

def _check_filter_pruning(config: str | FilterConfig, level) -> tuple[FilterConfig, int]:
    if not isinstance(config, FilterConfig):
        config = filter_config(config)
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise ValueError(f"level must be a positive integer (the paper uses {LEVELS}); got {level!r}")
    return config, level


def l1_filters(model: nn.Module, config: str | FilterConfig, level: int = 1) -> Mask:
    """L1-norm filter pruning of the first conv of every residual block (paper §3.2).

    Level i removes the fraction 1 − (1 − p)^i of a layer's filters, those with the smallest L1
    norm; fractional counts are rounded as the config says (:func:`filter_count`: the authors'
    stochastic rounding for the paper's configurations). Each removed filter also loses its
    BatchNorm γ/β and the matching input channel of the block's second conv, so the channel is
    really gone and the density counts what the paper counts (removed filters plus next-layer
    channels, §3.2).
    """
    config, level = _check_filter_pruning(config, level)
    blocks = residual_blocks(model)
    if config.depth is not None and getattr(model, "depth", None) != config.depth:
        raise ValueError(f"config {config.name!r} is defined for ResNet-{config.depth}; "
                         f"this model is ResNet-{getattr(model, 'depth', '?')}")
    names = {id(m): n for n, m in model.named_modules()}
    entries = dict(Mask.ones(model))
    if len(config.fractions) != len({s for s, _ in blocks}):
        n_stages = len({s for s, _ in blocks})
        raise ValueError(f"config {config.name!r} gives {len(config.fractions)} stage fractions; this network has "
                         f"{n_stages} stages (the kit's configurations have 3, torchvision's ResNet-34's 4). "
                         f"Give this network one of its own: plugins.register_filter_config('mine', "
                         f"fractions=(p,) * {n_stages}), then structured_configs=('mine',)")
    draw = random.Random(0)  # the authors reseed at every pruning call
    for j, (stage, block) in enumerate(blocks, start=1):
        conv_index = 2 * j
        if conv_index in config.skip:
            continue  # left out of the authors' per-layer table: no draw
        fraction = config.fraction(conv_index, stage, level)
        n_filters = block.conv1.out_channels
        n_remove = filter_count(fraction, n_filters, config.rounding, draw)
        if n_remove <= 0:
            continue
        conv1, bn1, conv2 = names[id(block.conv1)], names[id(block.bn1)], names[id(block.conv2)]
        norms = block.conv1.weight.detach().abs().float().flatten(1).sum(1)
        removed = torch.topk(norms.cpu(), n_remove, largest=False).indices
        keep = torch.ones(n_filters, dtype=torch.bool)
        keep[removed] = False
        entries[f"{conv1}.weight"] = entries[f"{conv1}.weight"] & keep.view(-1, *[1] * (block.conv1.weight.dim() - 1))
        entries[f"{conv2}.weight"] = entries[f"{conv2}.weight"] & keep.view(1, -1, *[1] * (block.conv2.weight.dim() - 2))
        entries[f"{bn1}.weight"] = keep.clone()
        entries[f"{bn1}.bias"] = keep.clone()
    return Mask.ones(model).replace(entries)  # the model's counting rule; BatchNorm entries follow their filter


def released_density(model: nn.Module, mask: Mask, config: str) -> float:
    """The density the authors' released data report for an L1-filter ``mask`` made with one of the
    paper's CIFAR configurations (``resnet56_a/b``, ``resnet110_a/b``), for comparing with those data.

    Their stored structured densities count, besides each removed filter and the matching input
    channel of the block's second conv (what :meth:`Mask.density` counts), another 2·w weights per
    filter removed from the first conv of the *last* block of a stage of width w that another
    stage follows — the size of one input slice of the next stage's 1×1 projection, although the
    masks they release never touch that projection. This rule reproduces every released level 1–5
    density of ResNet-56-A/B and ResNet-110-A/B to the 6 stored digits (a test checks all 20); their
    accounting code is not public, so the rule was found from the numbers. Results tables report the
    weights really kept (``Mask.density``); this function never changes what is trained.
    """
    if config not in RELEASED_DENSITY_CONFIGS:
        raise ValueError(f"the released-density rule is known for {', '.join(RELEASED_DENSITY_CONFIGS)}; "
                         f"got {config!r}")
    blocks = residual_blocks(model)
    names = {id(m): n for n, m in model.named_modules()}
    extra = 0
    for (stage, block), nxt in zip(blocks, blocks[1:] + [(None, None)]):
        if nxt[0] is None or nxt[0] == stage:
            continue  # not the last block of a stage that another stage follows
        keep = mask[f"{names[id(block.conv1)]}.weight"].flatten(1).any(1)
        extra += int((~keep).sum()) * 2 * block.conv1.out_channels
    return (mask.num_kept() - extra) / mask.num_total()


RELEASED_DENSITY_CONFIGS = ("resnet56_a", "resnet56_b", "resnet110_a", "resnet110_b")


# --------------------------------------------------------------------------------------------------
# What a retraining run prunes: a small typed description, part of the run's identity
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GlobalMagnitude:
    """Global magnitude pruning to ``density`` (§3.1); with a parent mask, its zeros stay zero."""

    density: float
    method: ClassVar[str] = "global_magnitude"
    label: ClassVar[str] = "unstructured"  # the "pruning" column of the authors' tables

    def __post_init__(self):
        _check_density(self.density)

    def apply(self, model: nn.Module, mask: Mask | None = None) -> Mask:
        return global_magnitude(model, self.density, mask)

    def describe(self) -> str:
        return f"density={self.density:.4g}"

    def to_dict(self) -> dict:
        return {"method": self.method, "density": self.density}


@dataclass(frozen=True)
class FilterPruning:
    """L1-norm filter pruning with configuration ``config`` at compression ``level`` (§3.2). A
    configuration of the user's is resolved once, when the description is made: the run it
    describes prunes with, and is identified by, those values even if the name is registered again."""

    config: str
    level: int
    resolved: FilterConfig | None = field(default=None, repr=False)  # set for the user's configs
    method: ClassVar[str] = "l1_filters"

    def __post_init__(self):
        if not isinstance(self.config, str):
            filter_config(self.config)  # refused, naming the valid configurations and how to register one
        if self.resolved is not None:  # a stored run's own values (from_dict): no registration needed
            _check_filter_pruning(self.resolved, self.level)
            return
        config, _ = _check_filter_pruning(self.config, self.level)
        if self.config not in FILTER_CONFIGS:
            object.__setattr__(self, "resolved", config)

    @classmethod
    def from_dict(cls, d: dict) -> FilterPruning:
        """The inverse of :meth:`to_dict`: a user's configuration comes back with its stored values."""
        if "fractions" not in d:
            return cls(d["config"], d["level"])
        return cls(d["config"], d["level"], FilterConfig(d["config"], tuple(d["fractions"]), frozenset(d["skip"]),
                                                         rounding=d["rounding"]))

    @property
    def user_defined(self) -> bool:
        """Whether the configuration is one the user registered (then :attr:`resolved` holds its values)."""
        return self.config not in FILTER_CONFIGS

    @property
    def label(self) -> str:
        """The "pruning" column: the paper's ``structured_a``/``structured_b``, or ``structured_NAME``."""
        return f"structured_{self.config}" if self.user_defined else f"structured_{FILTER_CONFIGS[self.config].variant}"

    def apply(self, model: nn.Module, mask: Mask | None = None) -> Mask:
        return l1_filters(model, self.resolved or self.config, self.level)  # one-shot: filters of the dense network

    def describe(self) -> str:
        return f"{self.config} L{self.level}"

    def to_dict(self) -> dict:
        """Part of the run id: the kit's configurations by name (so every earlier id stands), the
        user's by what they prune too."""
        out = {"method": self.method, "config": self.config, "level": self.level}
        if self.resolved is not None:
            r = self.resolved
            out.update(fractions=list(r.fractions), skip=sorted(r.skip), rounding=r.rounding)
        return out


@dataclass(frozen=True)
class RandomPruning:
    """A random mask at ``density`` (beyond the paper: Le & Hua, ICLR 2021; Gadhikar & Burkholz, ICLR
    2024): ``layers="magnitude"`` keeps global magnitude pruning's count in every layer
    (:func:`random_like_magnitude`), ``layers="uniform"`` a uniformly random ``density`` of all prunable
    weights (:func:`random_pruning`). ``seed`` draws the mask; :meth:`for_trial` derives it from the
    run's trial seed, so every technique of a trial retrains the same mask, as with magnitude pruning."""

    density: float
    layers: str
    seed: int
    method: ClassVar[str] = "random"

    def __post_init__(self):
        _check_density(self.density)
        if self.layers not in RANDOM_LAYERS:
            raise ValueError(f"unknown random-mask layers {self.layers!r}; valid: {', '.join(RANDOM_LAYERS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a whole number ≥ 0; got {self.seed!r}")

    @classmethod
    def for_trial(cls, density: float, layers: str, trial: int) -> RandomPruning:
        """The random mask of trial ``trial``: its seed derived from the trial, the layers rule and the density."""
        return cls(density, layers, derive_seed(trial, "random_mask", layers, float(density)))

    @property
    def label(self) -> str:
        return f"random_{self.layers}"  # the "pruning" column of the results tables

    def apply(self, model: nn.Module, mask: Mask | None = None) -> Mask:
        rule = random_like_magnitude if self.layers == "magnitude" else random_pruning
        return rule(model, self.density, mask, seed=self.seed)

    def describe(self) -> str:
        return f"random ({self.layers} layers) density={self.density:.4g}"

    def to_dict(self) -> dict:
        return {"method": self.method, "density": self.density, "layers": self.layers, "seed": self.seed}


RANDOM_LAYERS = ("magnitude", "uniform")
PRUNING_METHODS = {cls.method: cls for cls in (GlobalMagnitude, FilterPruning, RandomPruning)}
Pruning = GlobalMagnitude | FilterPruning | RandomPruning
# The unstructured pruning of a grid (Profile.pruning): magnitude (§3.1) or a random mask (beyond the paper)
UNSTRUCTURED_PRUNINGS = ("global_magnitude", *(f"random_{layers}" for layers in RANDOM_LAYERS))


def unstructured_pruning(name: str, density: float, trial: int) -> Pruning:
    """The description of ``name`` (one of :data:`UNSTRUCTURED_PRUNINGS`) at ``density`` for trial ``trial``."""
    if name not in UNSTRUCTURED_PRUNINGS:
        raise ValueError(f"unknown unstructured pruning {name!r}; valid: {', '.join(UNSTRUCTURED_PRUNINGS)}")
    if name == "global_magnitude":
        return GlobalMagnitude(density)
    return RandomPruning.for_trial(density, name.removeprefix("random_"), trial)


def pruning_from_dict(d: dict) -> Pruning:
    """The description stored in a run's ``config.json`` back as its dataclass."""
    method = d.get("method")
    if method not in PRUNING_METHODS:
        raise ValueError(f"unknown pruning method {method!r}; valid methods: {', '.join(PRUNING_METHODS)}")
    cls = PRUNING_METHODS[method]
    if hasattr(cls, "from_dict"):
        return cls.from_dict(d)
    return cls(**{k: v for k, v in d.items() if k != "method"})
