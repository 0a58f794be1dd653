"""Bring your own network, dataset, metric and learning-rate schedule (the paper's claim is a
network-agnostic algorithm, §1): register them here and every profile, grid, table, plot and
notebook of the kit works with them, without editing the package.

>>> from rewindkit import plugins
>>> plugins.register_network("tiny_mlp", lambda data, hidden=32: TinyMLP(data.input_shape, hidden, data.num_classes))
>>> P = get_profile("smoke", network="tiny_mlp", model_options={"hidden": 64})

What each plug-in is:

* **network** — ``build(data, **model_options) -> nn.Module``; ``data`` is the training data (read its
  ``num_classes``, ``input_shape`` or vocabularies). ``prunable(model) -> [parameter names]`` says
  what global magnitude pruning may remove (default: every conv and linear weight, §3.1; the
  authors' GNMT pruned every weight, embeddings and LSTM biases included). ``metric`` names what
  the network is evaluated by and labelled with (``"accuracy"``, ``"bleu"`` or a registered one;
  default: the data's ``metric``, else accuracy).
* **dataset** — ``load(**dataset_options)`` returning an object with the training-data protocol
  :class:`rewindkit.batches.TrainingData`: training batches as a function of (seed, iteration),
  validation and test batches in order. Batches may be ``(x, y)`` or ``((x1, x2, …), y)`` (the
  network is called as ``model(x1, x2, …)``); an optional ``loss(output, y, label_smoothing)``
  replaces cross-entropy, an optional ``metric`` attribute names its metric.
* **metric** — ``evaluate(model, data, split) -> float``, higher is better, with a ``label`` for
  tables and plot axes and a ``scale`` from stored values to plotted points (100 for a fraction).
* **schedule** — ``lr_at(step, total_steps, recipe) -> float``: any step → LR rule, used with
  ``recipe.lr_schedule = NAME``; its value at the last step is the fine-tuning LR (§1).

The optimizer is the recipe's: ``Recipe(optimizer="adam")`` (β, ε, gradient clipping) or SGD with
momentum or Nesterov (:mod:`rewindkit.optimizers`).

A plug-in's identity — its name and a fingerprint of its code and of the functions and classes
of your own that it refers to (or the ``version`` you give) — is part of every run id that uses
it, so a changed plug-in does not silently reuse an old run. Code reached another way (a module
attribute looked up at run time, a file the builder reads) is not fingerprinted: give ``version=``. Runs of
plug-ins registered in this process (a notebook, a script) train in this process: worker
processes would not know them, so ``workers`` become threads (one per run, ``Hardware.packing``).
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field

KINDS = ("network", "dataset", "metric", "schedule")


@dataclass(frozen=True)
class Plugin:
    """One registered plug-in: what to call, and what identifies it in run ids."""

    kind: str
    name: str
    call: Callable
    version: str
    options: dict = field(default_factory=dict)  # network: prunable, metric; metric: label, scale


_REGISTRY: dict[str, dict[str, Plugin]] = {kind: {} for kind in KINDS}
BUILTIN: dict[str, tuple[str, ...]] = {kind: () for kind in KINDS}  # names the kit itself defines


def _is_users(obj) -> bool:
    """A function or class of the user's own (not torch's, the kit's, a library's or Python's)."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return False
    module_name = getattr(obj, "__module__", None) or ""
    if module_name.split(".")[0] in ("rewindkit", "builtins", "torch"):
        return False
    path = getattr(sys.modules.get(module_name), "__file__", None) or ""
    return not (path.startswith(_LIBRARY_PATHS) or "site-packages" in path or "dist-packages" in path)


_LIBRARY_PATHS = tuple({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})


def _code_text(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # defined in an exec'd string, a REPL: its bytecode and constants
        code = getattr(obj, "__code__", None)
        if code is not None:
            return repr((code.co_code, code.co_consts, code.co_names))
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


def _referenced(obj) -> list:
    """The user's functions and classes that ``obj`` refers to (globals, closures, methods, bases)."""
    if inspect.isclass(obj):
        return [v for v in (*vars(obj).values(), *obj.__bases__) if _is_users(v)]
    try:
        found = inspect.getclosurevars(obj)
    except TypeError:
        return []
    return [v for v in (*found.nonlocals.values(), *found.globals.values()) if _is_users(v)]


def fingerprint(*functions: Callable | None) -> str:
    """A short hash of the functions' code and of every function and class of the user's own that
    they refer to, recursively (source where there is some, else bytecode and constants)."""
    digest, seen = hashlib.sha256(), set()
    todo = [fn for fn in functions if fn is not None]
    while todo:
        obj = todo.pop(0)
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        digest.update(_code_text(obj).encode())
        todo.extend(_referenced(obj))
    return digest.hexdigest()[:12]


def _register(kind: str, name: str, call: Callable, version: str | None, *identified, **options) -> Plugin:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a {kind} plug-in needs a name that is a Python identifier; got {name!r}")
    if name in BUILTIN[kind]:
        raise ValueError(f"{name!r} is one of the kit's own {kind}s ({', '.join(BUILTIN[kind])}); choose another name")
    if not callable(call):
        raise TypeError(f"the {kind} plug-in {name!r} must be callable; got {call!r}")
    plugin = Plugin(kind, name, call, str(version) if version is not None else fingerprint(call, *identified), options)
    _REGISTRY[kind][name] = plugin
    return plugin


def register_network(name: str, build: Callable, *, prunable: Callable | None = None, metric: str | None = None,
                     version: str | None = None) -> Plugin:
    """Register ``build(data, **model_options) -> nn.Module`` as network ``name``. ``metric``: what
    it is evaluated by and labelled with (None: the data's own metric, accuracy by default)."""
    return _register("network", name, build, version, prunable, prunable=prunable, metric=metric)


def register_dataset(name: str, load: Callable, *, version: str | None = None) -> Plugin:
    """Register ``load(**dataset_options)`` (returning :class:`~rewindkit.batches.TrainingData`) as ``name``."""
    return _register("dataset", name, load, version)


def register_metric(name: str, evaluate: Callable, *, label: str | None = None, scale: float = 1.0,
                    version: str | None = None) -> Plugin:
    """Register ``evaluate(model, data, split) -> float`` (higher is better) as metric ``name``."""
    return _register("metric", name, evaluate, version, label=label or name, scale=float(scale))


def register_schedule(name: str, lr_at: Callable, *, version: str | None = None) -> Plugin:
    """Register ``lr_at(step, total_steps, recipe) -> float`` as learning-rate schedule ``name``."""
    return _register("schedule", name, lr_at, version)


def get(kind: str, name: str) -> Plugin | None:
    """The registered plug-in ``name`` of ``kind``, or None."""
    return _REGISTRY[kind].get(name)


def names(kind: str) -> tuple[str, ...]:
    return tuple(_REGISTRY[kind])


def unregister(kind: str, name: str) -> None:
    _REGISTRY[kind].pop(name, None)


def identity(network: str, dataset: str, schedule: str) -> dict[str, str]:
    """What identifies the plug-ins a run uses (``{"network:NAME": version, …}``; empty for the
    kit's own networks, datasets and schedules, so their run ids stay as they were)."""
    used = {}
    for kind, name in (("network", network), ("dataset", dataset), ("schedule", schedule)):
        plugin = get(kind, name)
        if plugin is not None:
            used[f"{kind}:{name}"] = plugin.version
            if kind == "network" and plugin.options["metric"] and get("metric", plugin.options["metric"]) is not None:
                metric = get("metric", plugin.options["metric"])
                used[f"metric:{metric.name}"] = metric.version
    return used
