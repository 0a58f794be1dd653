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
  tables and plot axes, a ``scale`` from stored values to plotted points (100 for a fraction) and
  the ``range`` its values must lie in (checked at every evaluation; default: any finite value).
* **schedule** — ``lr_at(step, total_steps, recipe) -> float``: any step → LR rule, used with
  ``recipe.lr_schedule = NAME``; its value at the last step is the fine-tuning LR (§1). Every value
  must be a finite number ≥ 0 (checked for every step when the schedule is made).

The optimizer is the recipe's: ``Recipe(optimizer="adam")`` (β, ε, gradient clipping) or SGD with
momentum or Nesterov (:mod:`rewindkit.optimizers`).

A plug-in's identity is part of every run id that uses it, so a changed plug-in never reuses an old
run: its name and a fingerprint (:func:`fingerprint`, taken when a grid is planned, not when the
plug-in is registered) of its code, of the functions and classes of your own it uses, and of the
values they read — module globals, closure cells, default arguments and attributes of your own
modules (numbers, strings, tuples, lists, dicts and sets of those, dataclasses, arrays and tensors
by content), recursively. A value that cannot be fingerprinted (an open file, a model object, a
random generator) is refused with its name: pass it through ``model_options`` /
``dataset_options``, or register with ``version="…"`` and change the version when it changes.
What the code reads from elsewhere (a file, an environment variable) is not seen: give ``version=``
for that too. The kit's own networks, datasets, metrics and schedules are in the same registry
(their names cannot be taken) and are identified by the kit's own run ids. Runs of
plug-ins registered in this process (a notebook, a script) train in this process: worker
processes would not know them, so ``workers`` become threads (one per run, ``Hardware.packing``).
"""

from __future__ import annotations

import dataclasses
import dis
import enum
import functools
import hashlib
import importlib
import inspect
import math
import sys
import sysconfig
import types
from collections.abc import Callable
from dataclasses import dataclass, field

KINDS = ("network", "dataset", "metric", "schedule")
# the modules that register the kit's own plug-ins (imported before any look-up or registration,
# so a built-in name is taken whatever the user imported first)
BUILTIN_MODULES = ("rewindkit.models", "rewindkit.data", "rewindkit.metrics", "rewindkit.recipe")


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
        """The ``version`` given at registration, else the fingerprint of the code and values it uses now."""
        return self.version if self.version is not None else fingerprint(self.call, *self.identified)


_REGISTRY: dict[str, dict[str, Plugin]] = {kind: {} for kind in KINDS}
_BUILTINS_LOADED = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _BUILTINS_LOADED = True


def register_builtin(kind: str, name: str, call: Callable, **options) -> Plugin:
    """For the kit's own modules: put one of the kit's networks, datasets, metrics or schedules in the registry."""
    plugin = Plugin(kind, name, call, "", options, builtin=True)
    _REGISTRY[kind][name] = plugin
    return plugin


# -- the fingerprint ------------------------------------------------------------------------------

class FingerprintError(ValueError):
    """A value a plug-in reads that cannot be fingerprinted (so a changed value could reuse old runs)."""


_LIBRARY_PATHS = tuple({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
_SIMPLE = (type(None), bool, int, float, complex, str, bytes)


def _is_users_module(module) -> bool:
    name = getattr(module, "__name__", "") or ""
    if name.split(".")[0] in ("rewindkit", "builtins", "torch"):
        return False
    path = getattr(module, "__file__", None) or ""
    return not (path.startswith(_LIBRARY_PATHS) or "site-packages" in path or "dist-packages" in path)


def _is_users(obj) -> bool:
    """A function or class of the user's own (not torch's, the kit's, a library's or Python's)."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return False
    module_name = getattr(obj, "__module__", None) or ""
    if module_name.split(".")[0] in ("rewindkit", "builtins", "torch"):
        return False
    module = sys.modules.get(module_name)
    return module is None or _is_users_module(module)


def _code_text(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # defined in an exec'd string, a REPL: its bytecode and constants
        code = getattr(obj, "__code__", None)
        if code is not None:
            return repr((code.co_code, code.co_consts, code.co_names))
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


def _global_reads(code: types.CodeType) -> tuple[set[str], set[tuple[str, ...]]]:
    """The global names ``code`` (and the code nested in it: lambdas, comprehensions) loads, and the
    attribute chains it reads from them (``config.HIDDEN``, ``pkg.cfg.sizes.WIDTH``)."""
    names, chains = set(), set()
    todo = [code]
    while todo:
        c = todo.pop()
        chain: list[str] = []
        for ins in dis.get_instructions(c):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                if len(chain) > 1:
                    chains.add(tuple(chain))
                names.add(ins.argval)
                chain = [ins.argval]
                continue
            if ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and chain:
                chain.append(ins.argval)
                continue
            if len(chain) > 1:
                chains.add(tuple(chain))
            chain = []
        if len(chain) > 1:
            chains.add(tuple(chain))
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return names, chains


class _Fingerprint:
    """Feeds code and values into one hash; refuses what it cannot hash (never guesses)."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.seen: set[int] = set()

    def feed(self, text: str) -> None:
        self.digest.update(text.encode())
        self.digest.update(b"\0")

    def code(self, obj, where: str) -> None:
        """A function or class of the user's own: its text and everything it reads."""
        if id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        self.feed(_code_text(obj))
        if inspect.isclass(obj):
            for base in obj.__bases__:
                if _is_users(base):
                    self.code(base, f"{where} (base class)")
            for key, value in vars(obj).items():
                if key in ("__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__annotations__",
                           "__firstlineno__", "__static_attributes__"):
                    continue
                self.value(value, f"{obj.__qualname__}.{key}")
            return
        qual = getattr(obj, "__qualname__", repr(obj))
        self.value(obj.__defaults__ or (), f"the default arguments of {qual}")
        self.value(obj.__kwdefaults__ or {}, f"the default arguments of {qual}")
        code = obj.__code__
        for name, cell in zip(code.co_freevars, obj.__closure__ or ()):
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later in the enclosing function)
                continue
            self.value(content, f"closure variable {name!r} of {qual}")
        names, chains = _global_reads(code)
        scope = obj.__globals__
        for name in sorted(names):
            if name in scope:
                self.feed(f"global {name}")
                self.value(scope[name], f"global {name!r} read by {qual}")
        for chain in sorted(chains):  # through the user's own modules to the first value that is not one
            current = scope.get(chain[0])
            for depth, attr in enumerate(chain[1:], start=2):
                if not (inspect.ismodule(current) and _is_users_module(current) and hasattr(current, attr)):
                    break
                current = getattr(current, attr)
                if not inspect.ismodule(current):
                    path = ".".join(chain[:depth])
                    self.feed(f"attribute {path}")
                    self.value(current, f"{path}, read by {qual}")
                    break

    def value(self, v, where: str, depth: int = 0) -> None:
        if depth > 50:
            raise FingerprintError(f"cannot fingerprint {where}: nested more than 50 levels deep")
        if isinstance(v, _SIMPLE):
            self.feed(f"{type(v).__name__}:{v!r}")
        elif isinstance(v, (enum.Enum,)):
            self.feed(f"enum:{type(v).__module__}.{type(v).__qualname__}.{v.name}")
        elif isinstance(v, (tuple, list)):
            self.feed(f"{type(v).__name__}[{len(v)}]")
            for i, item in enumerate(v):
                self.value(item, f"{where}[{i}]", depth + 1)
        elif isinstance(v, dict):
            self.feed(f"dict[{len(v)}]")
            for key in sorted(v, key=repr):
                self.value(key, f"{where} (a key)", depth + 1)
                self.value(v[key], f"{where}[{key!r}]", depth + 1)
        elif isinstance(v, (set, frozenset)):
            self.feed(f"set[{len(v)}]")
            for item in sorted(v, key=repr):
                self.value(item, f"{where} (an element)", depth + 1)
        elif _is_users(v):
            self.code(v, where)
        elif isinstance(v, types.MethodType):  # a bound method: its function and the object it is bound to
            self.feed("method")
            self.value(v.__func__, where, depth + 1)
            self.value(v.__self__, f"the object {where} is bound to", depth + 1)
        elif _is_users(type(v)) and not isinstance(v, type):  # an instance of a class of the user's own
            self.feed(f"instance:{type(v).__qualname__}")
            self.code(type(v), where)
            state = vars(v) if hasattr(v, "__dict__") else {
                k: getattr(v, k) for k in getattr(type(v), "__slots__", ()) if hasattr(v, k)}
            self.value(state, f"{where} (its attributes)", depth + 1)
        elif isinstance(v, (staticmethod, classmethod)):
            self.value(v.__func__, where, depth + 1)
        elif isinstance(v, property):
            for f in (v.fget, v.fset, v.fdel):
                if f is not None:
                    self.value(f, where, depth + 1)
        elif isinstance(v, functools.partial):
            self.feed("partial")
            self.value(v.func, where, depth + 1)
            self.value(v.args, f"{where} (partial arguments)", depth + 1)
            self.value(v.keywords, f"{where} (partial keywords)", depth + 1)
        elif inspect.ismodule(v):
            self.feed(f"module:{v.__name__}")  # what the code reads from it is fed where it reads it
        elif inspect.isfunction(v) or inspect.isclass(v) or inspect.isbuiltin(v) or inspect.ismethoddescriptor(v) \
                or isinstance(v, (types.MethodType, types.BuiltinMethodType)):
            # a library's or the kit's function or class: identified by its name (its version is the library's)
            self.feed(f"library:{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', repr(v))}")
        elif _is_array(v):
            self._array(v)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            self.feed(f"dataclass:{type(v).__module__}.{type(v).__qualname__}")
            if _is_users(type(v)):
                self.code(type(v), where)
            for f in dataclasses.fields(v):
                self.value(getattr(v, f.name), f"{where}.{f.name}", depth + 1)
        elif type(v).__module__ == "torch" and type(v).__name__ in ("dtype", "device", "Size", "memory_format"):
            self.feed(f"torch:{v!r}")
        elif type(v).__module__ == "numpy" and hasattr(v, "dtype") and not hasattr(v, "shape"):
            self.feed(f"numpy:{v!r}")
        elif isinstance(v, (range, slice)):
            self.feed(repr(v))
        else:
            raise FingerprintError(
                f"cannot fingerprint {where}: a {type(v).__module__}.{type(v).__qualname__} "
                f"({_short_repr(v)}), so a change to it could not be told from an unchanged plug-in and an old "
                f"run could be reused. Pass the value through model_options / dataset_options (part of every run "
                f"id), or register the plug-in with version='...' and change the version whenever the value changes.")

    def _array(self, v) -> None:
        import numpy as np
        if isinstance(v, np.ndarray):
            self.feed(f"ndarray:{v.dtype}:{v.shape}")
            self.digest.update(np.ascontiguousarray(v).tobytes())
            return
        t = v.detach().cpu().contiguous()  # a torch tensor
        self.feed(f"tensor:{t.dtype}:{tuple(t.shape)}")
        self.digest.update(t.reshape(-1).view(__import__("torch").uint8).numpy().tobytes())

    def hexdigest(self) -> str:
        return self.digest.hexdigest()[:12]


def _is_array(v) -> bool:
    module = type(v).__module__
    return (module == "numpy" and type(v).__name__ == "ndarray") or (
        module.startswith("torch") and type(v).__name__ in ("Tensor", "Parameter"))


def _short_repr(v) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def fingerprint(*functions: Callable | None) -> str:
    """A short hash of the functions' code, of every function and class of the user's own they use,
    and of the values all of these read (module globals, closure cells, default arguments,
    attributes of the user's own modules), recursively; raises :class:`FingerprintError` naming a
    value it cannot hash."""
    fp = _Fingerprint()
    for fn in functions:
        if fn is None:
            continue
        if _is_users(fn):
            fp.code(fn, getattr(fn, "__qualname__", repr(fn)))
        else:
            fp.value(fn, repr(fn))
    return fp.hexdigest()


# -- registration ---------------------------------------------------------------------------------

def _register(kind: str, name: str, call: Callable, version: str | None, identified=(), **options) -> Plugin:
    _load_builtins()
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a {kind} plug-in needs a name that is a Python identifier; got {name!r}")
    existing = _REGISTRY[kind].get(name)
    if existing is not None and existing.builtin:
        own = ", ".join(n for n, p in _REGISTRY[kind].items() if p.builtin)
        raise ValueError(f"{name!r} is one of the kit's own {kind}s ({own}); choose another name")
    if not callable(call):
        raise TypeError(f"the {kind} plug-in {name!r} must be callable; got {call!r}")
    if version is not None and (not isinstance(version, str) or not version):
        raise ValueError(f"version must be a non-empty string (it joins the run ids); got {version!r}")
    plugin = Plugin(kind, name, call, version, options, identified=tuple(f for f in identified if f is not None))
    plugin.identity()  # refuse now, with its name, a value that cannot be fingerprinted
    _REGISTRY[kind][name] = plugin
    return plugin


def register_network(name: str, build: Callable, *, prunable: Callable | None = None, metric: str | None = None,
                     version: str | None = None) -> Plugin:
    """Register ``build(data, **model_options) -> nn.Module`` as network ``name``. ``metric``: what
    it is evaluated by and labelled with (None: the data's own metric, accuracy by default)."""
    return _register("network", name, build, version, (prunable,), prunable=prunable, metric=metric)


def register_dataset(name: str, load: Callable, *, version: str | None = None) -> Plugin:
    """Register ``load(**dataset_options)`` (returning :class:`~rewindkit.batches.TrainingData`) as ``name``."""
    return _register("dataset", name, load, version)


def register_metric(name: str, evaluate: Callable, *, label: str | None = None, scale: float = 1.0,
                    range: tuple[float, float] | None = None, version: str | None = None) -> Plugin:
    """Register ``evaluate(model, data, split) -> float`` (higher is better) as metric ``name``.
    ``range=(low, high)``: the values it can take (e.g. (0, 1) for a fraction); every evaluation is
    checked against it, and always for being finite."""
    if range is not None:
        low, high = _check_range(range, name)
        range = (low, high)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise ValueError(f"scale of metric {name!r} must be a positive number (100 for a fraction); got {scale!r}")
    return _register("metric", name, evaluate, version, label=label or name, scale=float(scale), range=range)


def _check_range(value, name: str) -> tuple[float, float]:
    try:
        low, high = value
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        raise ValueError(f"range of metric {name!r} must be (low, high); got {value!r}") from None
    if not low < high or math.isnan(low) or math.isnan(high):
        raise ValueError(f"range of metric {name!r} must have low < high; got {value!r}")
    return low, high


def register_schedule(name: str, lr_at: Callable, *, version: str | None = None) -> Plugin:
    """Register ``lr_at(step, total_steps, recipe) -> float`` as learning-rate schedule ``name``."""
    return _register("schedule", name, lr_at, version)


def get(kind: str, name: str) -> Plugin | None:
    """The plug-in ``name`` of ``kind`` (the kit's own or a registered one), or None."""
    _load_builtins()
    return _REGISTRY[kind].get(name)


def lookup(kind: str, name: str) -> Plugin:
    """The plug-in ``name`` of ``kind``; an unknown name is an error listing the valid ones."""
    plugin = get(kind, name)
    if plugin is None:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(names(kind))}")
    return plugin


def names(kind: str) -> tuple[str, ...]:
    """Every name of ``kind``: the kit's own first, then the registered ones."""
    _load_builtins()
    return tuple(_REGISTRY[kind])


def user_names(kind: str) -> tuple[str, ...]:
    """The names of ``kind`` registered by the user (not the kit's own)."""
    _load_builtins()
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
    return used
