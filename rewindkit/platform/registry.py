"""The one registry of named networks, datasets, metrics and learning-rate schedules: the kit's own
(registered by the modules that define them, when the package is imported) and the user's
(:mod:`rewindkit.plugins`), looked up by name everywhere, so a name means one thing. What identifies
a user's plug-in in run ids is :meth:`Plugin.identity` (:mod:`rewindkit.platform.fingerprint`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .fingerprint import FingerprintError, fingerprint

KINDS = ("network", "dataset", "metric", "schedule")


@dataclass(frozen=True)
class Plugin:
    """One registered plug-in: what to call, and what identifies it in run ids."""

    kind: str
    name: str
    call: Callable
    version: str | None  # given by the user; None: fingerprinted (:meth:`identity`)
    options: dict = field(default_factory=dict)  # network: prunable, metric; metric: label, scale, range
    builtin: bool = False  # one of the kit's own (identified by the kit's run ids, never by a fingerprint)
    identified: tuple = ()  # further functions whose code joins the fingerprint (a network's prunable rule)

    def identity(self) -> str:
        """The fingerprint of the code and values it uses now, joined by the ``version`` given at
        registration; the version alone only where the code reads a value that cannot be fingerprinted
        (then the version is all that tells two of its states apart). A version never hides a code
        change: a changed plug-in never reuses an old run."""
        if self.version is None:
            return fingerprint(self.call, *self.identified)
        try:
            return f"{self.version}:{fingerprint(self.call, *self.identified)}"
        except FingerprintError:
            return self.version


_REGISTRY: dict[str, dict[str, Plugin]] = {kind: {} for kind in KINDS}
# Names a plug-in cannot take although the kit builds nothing by them: the networks of the authors'
# released runs that the kit does not build, whose metric, T and plot titles are the paper's.
RESERVED = {"network": ("gnmt", "vgg16_nofc")}


def register_builtin(kind: str, name: str, call: Callable, **options) -> Plugin:
    """For the kit's own modules: put one of the kit's networks, datasets, metrics or schedules in the registry."""
    plugin = Plugin(kind, name, call, "", options, builtin=True)
    _REGISTRY[kind][name] = plugin
    return plugin


def register(kind: str, name: str, call: Callable, version: str | None, identified=(), **options) -> Plugin:
    """Put a plug-in of the user's in the registry (the checks of :mod:`rewindkit.plugins` done)."""
    if name in RESERVED.get(kind, ()):
        raise ValueError(f"{name!r} names one of the paper's {kind}s in the authors' released results "
                         f"({', '.join(RESERVED[kind])}: their metric, T and titles are the paper's); choose another name")
    existing = _REGISTRY[kind].get(name)
    if existing is not None and existing.builtin:
        own = ", ".join(n for n, p in _REGISTRY[kind].items() if p.builtin)
        raise ValueError(f"{name!r} is one of the kit's own {kind}s ({own}); choose another name")
    plugin = Plugin(kind, name, call, version, options, identified=tuple(f for f in identified if f is not None))
    plugin.identity()  # refuse now, with its name, a value that cannot be fingerprinted
    _REGISTRY[kind][name] = plugin
    return plugin


def get(kind: str, name: str) -> Plugin | None:
    """The plug-in ``name`` of ``kind`` (the kit's own or a registered one), or None."""
    return _REGISTRY[kind].get(name)


def lookup(kind: str, name: str) -> Plugin:
    """The plug-in ``name`` of ``kind``; an unknown name is an error listing the valid ones."""
    plugin = get(kind, name)
    if plugin is None:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(names(kind))}")
    return plugin


def names(kind: str) -> tuple[str, ...]:
    """Every name of ``kind``: the kit's own first, then the registered ones."""
    return tuple(_REGISTRY[kind])


def user_names(kind: str) -> tuple[str, ...]:
    """The names of ``kind`` registered by the user (not the kit's own)."""
    return tuple(n for n, p in _REGISTRY[kind].items() if not p.builtin)


def unregister(kind: str, name: str) -> None:
    """Remove a registered plug-in (the kit's own cannot be removed)."""
    plugin = _REGISTRY[kind].get(name)
    if plugin is not None and plugin.builtin:
        raise ValueError(f"{name!r} is one of the kit's own {kind}s and cannot be unregistered")
    _REGISTRY[kind].pop(name, None)


def identity(network: str, dataset: str, schedule: str) -> dict[str, str]:
    """What identifies the plug-ins of the user's a run uses (``{"network:NAME": version, …}``;
    empty for the kit's own networks, datasets and schedules, so their run ids stay as they were)."""
    used = {}
    for kind, name in (("network", network), ("dataset", dataset), ("schedule", schedule)):
        plugin = get(kind, name)
        if plugin is not None and not plugin.builtin:
            used[f"{kind}:{name}"] = plugin.identity()
            metric = get("metric", plugin.options["metric"]) if kind == "network" and plugin.options["metric"] else None
            if metric is not None and not metric.builtin:
                used[f"metric:{metric.name}"] = metric.identity()
    network_plugin = get("network", network)
    named_by_network = network_plugin is not None and network_plugin.options.get("metric")
    if f"dataset:{dataset}" in used and not named_by_network:
        # a dataset of the user's may name its metric by an attribute of the data it loads, which is
        # not known until it is loaded: every metric of the user's is then part of the identity
        for name, metric in sorted(_REGISTRY["metric"].items()):
            if not metric.builtin:
                used[f"metric:{name}"] = metric.identity()
    return used


def check_options(what: str, call: Callable, options: dict, positional: int = 0, unlisted=()) -> None:
    """Refuse keyword ``options`` that ``call`` does not take (its first ``positional`` parameters are
    given by the kit), naming the ones it does (less ``unlisted``: those the kit sets itself): a typo
    in ``model_options`` or ``dataset_options`` is a :class:`ValueError` before anything is built,
    not a ``TypeError`` from inside the builder."""
    import difflib
    import inspect
    try:
        params = list(inspect.signature(call).parameters.values())[positional:]
    except (TypeError, ValueError):  # a callable whose signature Python cannot read: it decides
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    takes = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in options if k not in takes]
    if unknown:
        near = difflib.get_close_matches(unknown[0], takes, n=1)
        listed = [t for t in takes if t not in unlisted]
        raise ValueError(f"{what} takes no option {unknown[0]!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                         + f"; its options are: {', '.join(listed) or 'none'}")
