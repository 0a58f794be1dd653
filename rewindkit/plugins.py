"""Bring your own network, dataset, metric and learning-rate schedule (the paper's claim is a
network-agnostic algorithm, §1): register them here and every profile, grid, table and plot of the
kit works with them, without editing the package — in your own notebook or script, or on the command
line from the file that registers them (``rewindkit grid … --plugin my_plugins.py``,
:func:`load_module`). The kit's notebooks take a ``profile`` by name and run the kit's own networks.

>>> from rewindkit import plugins
>>> plugins.register_network("tiny_mlp", lambda data, hidden=32: TinyMLP(data.input_shape, hidden, data.num_classes))
>>> P = get_profile("smoke", network="tiny_mlp", model_options={"hidden": 64})

What each plug-in is:

* **network** — ``build(data, **model_options) -> nn.Module``; ``data`` is the training data (read its
  ``num_classes``, ``input_shape`` or vocabularies). The structured grid (L1-filter pruning, §3.2)
  needs residual blocks, as the kit's ResNets have them (:mod:`rewindkit.core.residual`); a network
  without them is refused before anything trains. ``prunable(model) -> [parameter names]`` says
  what global magnitude pruning may remove (default: the weight of every Conv1d/2d/3d and Linear layer, §3.1, not ConvTranspose; the
  authors' GNMT pruned every weight, embeddings and LSTM biases included). ``metric`` names what
  the network is evaluated by and labelled with (``"accuracy"``, ``"bleu"`` or a registered one;
  default: the data's ``metric``, else accuracy).
* **dataset** — ``load(**dataset_options)`` returning an object with the training-data protocol
  :class:`rewindkit.core.batches.TrainingData`: training batches as a function of (seed, iteration),
  validation and test batches in order. Batches may be ``(x, y)`` or ``((x1, x2, …), y)`` (the
  network is called as ``model(x1, x2, …)``); an optional ``loss(output, y, label_smoothing)``
  replaces cross-entropy, an optional ``metric`` attribute names its metric.
* **metric** — ``evaluate(model, data, split) -> float``, higher is better, with a ``label`` for
  tables and plot axes, a ``scale`` from stored values to plotted points (100 for a fraction) and
  the ``range`` its values must lie in (checked at every evaluation; default: any finite value).
* **schedule** — ``lr_at(step, total_steps, recipe) -> float``: any step → LR rule, used with
  ``recipe.lr_schedule = NAME``; its value at the last step is the fine-tuning LR (§1). Every value
  must be a finite number ≥ 0 (checked for every step when the schedule is made).

* **filter configuration** — :func:`register_filter_config` ``(name, fractions, skip=, rounding=)``:
  L1-filter pruning fractions per stage for the structured grid (``structured_configs=(name,)``),
  for networks whose stage count or sensitivity the paper's configurations do not fit; its values
  are part of the run ids.

The optimizer is the recipe's: ``Recipe(optimizer="adam")`` (β, ε, gradient clipping) or SGD with
momentum or Nesterov (:mod:`rewindkit.core.optimizers`).

A plug-in's identity is part of every run id that uses it, so a changed plug-in never reuses an old
run: its name and a fingerprint (:func:`fingerprint`, taken when a grid is planned, not when the
plug-in is registered) of its code, of the functions and classes of your own it uses, and of the
values they read — module globals, closure cells, default arguments and attributes of your own
modules (numbers, strings, tuples, lists, dicts and sets of those, dataclasses, arrays and tensors
by content), recursively. A value that cannot be fingerprinted (an open file, a model object, a
random generator) is refused with its name: pass it through ``model_options`` /
``dataset_options``, or register with ``version="…"`` and change the version when it changes.
What the code reads from elsewhere (a file, an environment variable) is not seen: give ``version=``
for that too. A version joins the fingerprint, it does not replace it (a code change still gives new
run ids); only a plug-in whose code reads a value that cannot be fingerprinted is identified by its
version alone. A metric your dataset names by its ``metric`` attribute is known only once the data
are loaded, so with a dataset of your own (and a network that names no metric) every metric you
registered is part of the run ids. A dataset of your own is loaded with torch's, numpy's and Python's
global generators seeded by its name and options (and left as they were), so a loader that draws
without a seed of its own gives the same data in every process. The kit's own networks, datasets, metrics and schedules are in the same registry
(their names cannot be taken) and are identified by the kit's own run ids. Runs of
plug-ins registered in this process (a notebook, a script) train in this process: worker
processes would not know them, so ``workers`` become threads (one per run, ``Hardware.packing``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .platform.fingerprint import FingerprintError, fingerprint  # noqa: F401  (the plug-in API, importable from here)
from .platform.registry import (KINDS, Plugin, get, identity, lookup, names, register, unregister,  # noqa: F401
                                user_names)


def _register(kind: str, name: str, call: Callable, version: str | None, identified=(), **options) -> Plugin:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a {kind} plug-in needs a name that is a Python identifier; got {name!r}")
    if not callable(call):
        raise TypeError(f"the {kind} plug-in {name!r} must be callable; got {call!r}")
    if version is not None and (not isinstance(version, str) or not version):
        raise ValueError(f"version must be a non-empty string (it joins the run ids); got {version!r}")
    return register(kind, name, call, version, identified, **options)


def register_network(name: str, build: Callable, *, prunable: Callable | None = None, metric: str | None = None,
                     version: str | None = None) -> Plugin:
    """Register ``build(data, **model_options) -> nn.Module`` as network ``name``. ``metric``: what
    it is evaluated by and labelled with (None: the data's own metric, accuracy by default).
    ``prunable``: a function ``model -> [parameter names]`` (None: the weight of every Conv1d/2d/3d and Linear layer)."""
    if prunable is not None and not callable(prunable):
        raise ValueError(f"network {name!r}: prunable must be a function model -> [parameter names]; got "
                         f"{prunable!r}" + (" (wrap a fixed list: prunable=lambda model: [...])"
                                            if isinstance(prunable, (list, tuple, set, str)) else ""))
    return _register("network", name, build, version, (prunable,), prunable=prunable, metric=metric)


def register_dataset(name: str, load: Callable, *, version: str | None = None) -> Plugin:
    """Register ``load(**dataset_options)`` (returning :class:`~rewindkit.core.batches.TrainingData`) as ``name``."""
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




def register_filter_config(name: str, fractions, *, skip=(), rounding: str = "nearest"):
    """Register an L1-filter pruning configuration (§3.2) for the structured grid
    (``structured_configs=(name,)``): ``fractions`` gives, per stage of the network's residual blocks,
    the fraction p of each block's first-conv filters that level 1 removes (level i removes
    1 − (1 − p)^i); ``skip`` lists first convs left dense, numbered as in the paper (block j's first
    conv is ``conv_2j``); ``rounding`` of fractional filter counts is ``"nearest"`` (keeping at least
    one filter) or the authors' ``"stochastic"``. Its values join the run ids; the kit's own
    configurations (``resnet56_a``, …, ``generic_b``) cannot be replaced. Returns the
    :class:`~rewindkit.core.pruning.FilterConfig`."""
    from .core import pruning
    if isinstance(skip, (str, bytes)) or not hasattr(skip, "__iter__"):
        raise ValueError(f"filter configuration {name!r}: skip must be a sequence of conv numbers; got {skip!r}")
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__iter__"):
        raise ValueError(f"filter configuration {name!r}: fractions must give one fraction 0 ≤ p < 1 per stage, "
                         f"e.g. (0.5, 0.3, 0.1); got {fractions!r}")
    return pruning.register_filter_config(pruning.FilterConfig(name, tuple(fractions), tuple(skip), rounding=rounding))


def unregister_filter_config(name: str) -> None:
    """Remove a filter configuration registered with :func:`register_filter_config`."""
    from .core import pruning
    pruning.unregister_filter_config(name)


class PluginImportError(ValueError):
    """A plug-in module raised as it was imported (its own error is the cause)."""


def load_module(name: str):
    """Import the module that registers your plug-ins, for the command line (``rewindkit grid …
    --plugin NAME``): a path to a ``.py`` file, or a module name importable from the current folder.
    Its registrations run as it is imported (a file's folder joins ``sys.path``, so the modules beside
    it import, as under ``python FILE``); an error it raises is a :class:`PluginImportError` naming
    it, caused by the error. The module is returned."""
    import importlib
    import importlib.util
    import os
    import sys
    from pathlib import Path

    if not isinstance(name, str) or not name:
        raise ValueError(f"a plug-in module is a path to a .py file or a module name; got {name!r}")
    if name.endswith(".py"):
        path = Path(name).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"plug-in file {name!r} not found (from {os.getcwd()})")
        loaded = sys.modules.get(path.stem)
        if loaded is not None:
            if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
                return loaded
            raise ValueError(f"plug-in file {name!r} would be imported as module {path.stem!r}, which already names "
                             f"{getattr(loaded, '__file__', None) or 'a built-in module'}; rename the file")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        if str(path.parent) not in sys.path:  # as `python FILE` would: the modules beside it import
            sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[path.stem]
            if _raised_by_the_kit(err):  # a registration the kit refused: its message names the plug-in
                raise
            raise PluginImportError(f"plug-in file {name!r} failed as it was imported: {type(err).__name__}: {err}") from err
        except BaseException:
            del sys.modules[path.stem]
            raise
        return module
    if os.getcwd() not in sys.path:  # as `python -c "import NAME"` run from here would find it
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name.split(".")[0] and err.name != name:  # the module was found; something it imports is not
            raise PluginImportError(f"plug-in module {name!r} failed as it was imported: {err}") from err
        raise ValueError(f"cannot import plug-in module {name!r} from {os.getcwd()}: {err}; give a module name "
                         f"importable from the current folder or a path to a .py file") from None
    except Exception as err:
        if _raised_by_the_kit(err):
            raise
        raise PluginImportError(f"plug-in module {name!r} failed as it was imported: {type(err).__name__}: {err}") from err


def _raised_by_the_kit(err: BaseException) -> bool:
    """Whether ``err`` is one of the kit's refusals (raised in rewindkit's own code, a ValueError)."""
    import os
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    here = os.path.dirname(os.path.abspath(__file__))
    return isinstance(err, ValueError) and tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(here)
