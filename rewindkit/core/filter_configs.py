"""The configurations of L1-norm filter pruning (Li et al. 2017; paper §3.2): which first convolutions of
the residual blocks lose which fraction of their filters, the paper's own (:data:`FILTER_CONFIGS`:
ResNet-56/110 A and B, ResNet-34 A and B, and their fractions for any depth) and the user's
(:func:`register_filter_config`), and how a fractional filter count is rounded (:func:`filter_count`).
:func:`rewindkit.core.pruning.l1_filters` prunes with them."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class FilterConfig:
    """Which first-convs of the residual blocks lose which fraction of their filters.

    Conv layers are numbered as in the paper: ``conv_1`` is the stem and residual block j holds
    ``conv_{2j}`` and ``conv_{2j+1}``; only the even (first) conv of a block is pruned. ``fractions``
    gives p per stage; ``skip`` lists the sensitive layers Li et al. leave dense.
    """

    name: str
    fractions: tuple[float, ...]  # one per stage
    skip: frozenset[int] = frozenset()
    depth: int | None = None  # None: any ResNet depth
    paper_density: float | None = None  # level-1 density in the authors' data
    rounding: str = "nearest"  # "stochastic": the authors' rounding of fractional filter counts
    variant: str = ""  # "a" or "b": the paper's configuration the fractions follow (its tables' "structured_a/b")

    def fraction(self, conv_index: int, stage: int, level: int) -> float:
        p = 0.0 if conv_index in self.skip else self.fractions[stage]
        return 1.0 - (1.0 - p) ** level


ROUNDINGS = ("nearest", "stochastic")
_S = "stochastic"
FILTER_CONFIGS: dict[str, FilterConfig] = {
    "resnet56_a": FilterConfig("resnet56_a", (0.1, 0.1, 0.1), frozenset({16, 20, 38, 54}), 56, 0.9209, _S, "a"),
    "resnet56_b": FilterConfig("resnet56_b", (0.6, 0.3, 0.1), frozenset({16, 18, 20, 34, 38, 54}), 56, 0.8712, _S, "b"),
    "resnet110_a": FilterConfig("resnet110_a", (0.5, 0.0, 0.0), frozenset({36}), 110, 0.9773, _S, "a"),
    "resnet110_b": FilterConfig("resnet110_b", (0.5, 0.4, 0.3), frozenset({36, 38, 74}), 110, 0.6876, _S, "b"),
    # ImageNet ResNet-34 (torchvision; stages of 3, 4, 6, 3 blocks), stage 4 and the listed layers skipped
    "resnet34_a": FilterConfig("resnet34_a", (0.3, 0.3, 0.3, 0.0), frozenset({2, 8, 14, 16, 26}), 34, 0.9246, _S, "a"),
    "resnet34_b": FilterConfig("resnet34_b", (0.5, 0.6, 0.4, 0.0), frozenset({2, 8, 14, 16, 26}), 34, 0.8937, _S, "b"),
    # The A and B fractions without Li et al.'s ResNet-56 sensitivity list, for any depth
    # (the laptop profile's 1-D ResNet).
    "generic_a": FilterConfig("generic_a", (0.1, 0.1, 0.1), variant="a"),
    "generic_b": FilterConfig("generic_b", (0.6, 0.3, 0.1), variant="b"),
}
LEVELS = (1, 2, 3, 4, 5)
_USERS_FILTER_CONFIGS: dict[str, FilterConfig] = {}  # registered by the user (rewindkit.plugins.register_filter_config)


def register_filter_config(config: FilterConfig) -> FilterConfig:
    """Make a configuration of the user's a name the structured grid takes (``structured_configs``).
    Its fractions, skipped layers and rounding join the id of every run that prunes with it
    (:meth:`FilterPruning.to_dict`), so changing them never reuses an old run."""
    if not isinstance(config, FilterConfig):
        raise ValueError(f"a filter configuration is a pruning.FilterConfig; got {config!r}")
    if not isinstance(config.name, str) or not config.name.isidentifier():
        raise ValueError(f"a filter configuration needs a name that is a Python identifier; got {config.name!r}")
    if config.name in FILTER_CONFIGS:
        raise ValueError(f"{config.name!r} is one of the kit's own filter configurations "
                         f"({', '.join(FILTER_CONFIGS)}); choose another name")
    variants = sorted({c.variant for c in FILTER_CONFIGS.values()})
    if config.name in variants:  # its rows would be labelled structured_a/b, the paper's configurations
        raise ValueError(f"filter configuration {config.name!r} would label its rows structured_{config.name}, as the "
                         f"paper's configuration {config.name.upper()}; names {', '.join(variants)} are taken")
    fractions = config.fractions
    if (isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__iter__") or not tuple(fractions)
            or any(isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1 for p in fractions)):
        raise ValueError(f"filter configuration {config.name!r}: fractions must give one fraction 0 ≤ p < 1 of "
                         f"filters to remove per stage of the network, e.g. (0.5, 0.3, 0.1); got {fractions!r}")
    bad_skip = [c for c in config.skip if isinstance(c, bool) or not isinstance(c, int) or c < 2 or c % 2]
    if bad_skip:
        raise ValueError(f"filter configuration {config.name!r}: skip lists first convs of residual blocks by the "
                         f"paper's numbering (block j's first conv is conv_2j: 2, 4, 6, …); got {bad_skip[0]!r}")
    if config.rounding not in ROUNDINGS:
        raise ValueError(f"filter configuration {config.name!r}: unknown rounding {config.rounding!r}; "
                         f"valid: {', '.join(ROUNDINGS)}")
    if config.depth is not None or config.paper_density is not None or config.variant:
        raise ValueError(f"filter configuration {config.name!r}: depth, paper_density and variant describe the "
                         f"paper's own configurations; leave them out of yours")
    config = FilterConfig(config.name, tuple(float(p) for p in fractions), frozenset(config.skip),
                          rounding=config.rounding)
    _USERS_FILTER_CONFIGS[config.name] = config
    return config


def unregister_filter_config(name: str) -> None:
    """Remove a configuration of the user's (the kit's own cannot be removed)."""
    if name in FILTER_CONFIGS:
        raise ValueError(f"{name!r} is one of the kit's own filter configurations and cannot be unregistered")
    _USERS_FILTER_CONFIGS.pop(name, None)


def filter_config_names() -> tuple[str, ...]:
    """Every configuration the structured grid takes by name: the kit's, then the user's."""
    return tuple(FILTER_CONFIGS) + tuple(_USERS_FILTER_CONFIGS)


def filter_config(name: str) -> FilterConfig:
    """The configuration ``name`` (the kit's own or a registered one); an unknown name lists the valid ones."""
    config = FILTER_CONFIGS.get(name) if isinstance(name, str) else None
    config = config or (_USERS_FILTER_CONFIGS.get(name) if isinstance(name, str) else None)
    if config is None:
        hint = (" (register a FilterConfig of your own with rewindkit.plugins.register_filter_config and name it)"
                if isinstance(name, FilterConfig) else "")
        raise ValueError(f"unknown filter-pruning config {name!r}{hint}; valid configs: {', '.join(filter_config_names())}")
    return config


def filter_count(fraction: float, n_filters: int, rounding: str, draw: random.Random) -> int:
    """How many of ``n_filters`` filters a layer loses at ``fraction``.

    ``"stochastic"`` is the authors' rule (``prune_functions.py``): the whole part of
    ``fraction × n_filters`` plus one more with probability equal to the fractional part, one
    ``random.random()`` per pruned layer, in layer order, after ``random.seed(0)`` at every pruning
    call. ``"nearest"`` rounds half up and keeps at least one filter (for other networks)."""
    exact = fraction * n_filters
    if rounding == "stochastic":
        return int(exact) + (draw.random() < exact - int(exact))
    if rounding == "nearest":
        return min(int(math.floor(exact + 0.5)), n_filters - 1)
    raise ValueError(f"unknown rounding {rounding!r}; valid: {', '.join(ROUNDINGS)}")
