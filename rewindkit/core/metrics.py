"""What a network is judged by (paper §2, §4): top-1 accuracy for the image classifiers, BLEU for
translation (GNMT), or a registered metric (:func:`rewindkit.plugins.register_metric`). Higher is
better for all of them; results tables keep the value in ``test_acc`` / ``val_acc``, as the
authors' released GNMT rows do, and plots name it on their axes (:func:`delta_label`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..platform import distributed, registry
from ..platform.hardware import autocast, forward_fn, to_memory_format
from .seeds import ForwardRandomness


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # on plot axes and in tables: "test accuracy", "BLEU"
    scale: float  # stored value → plotted points: 100 for a fraction, 1 for BLEU
    evaluate: Callable  # (model, data, split, hardware) -> float
    range: tuple[float, float] | None = None  # the values it can take (None: any finite value)

    def check(self, value, split: str) -> float:
        """``value`` as a float, if it is finite and within :attr:`range`; else a clear error (a run
        whose metric is broken is not stored as finished)."""
        try:
            if isinstance(value, (bool, str, bytes)):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise MetricValueError(f"metric {self.name!r} returned {value!r} on the {split} split; it must "
                                   f"return a number") from None
        if not math.isfinite(number):
            raise MetricValueError(f"metric {self.name!r} returned {number} on the {split} split; it must be a "
                                   f"finite number")
        if self.range is not None and not self.range[0] <= number <= self.range[1]:
            raise MetricValueError(f"metric {self.name!r} returned {number:g} on the {split} split, outside its "
                                   f"range [{self.range[0]:g}, {self.range[1]:g}]")
        return number


class MetricValueError(ValueError):
    """A metric returned a value that is not finite or not within its declared range."""


def forward_inputs(model: Callable, x) -> torch.Tensor:
    """Call ``model`` on a batch's input: ``model(x)``, or ``model(*x)`` for a tuple (e.g. a
    translation batch's source and shifted target)."""
    return model(*x) if isinstance(x, tuple) else model(x)


@torch.no_grad()
def top1_accuracy(model: nn.Module, data, split: str, hardware) -> float:
    """Top-1 accuracy (fraction) on ``split``."""
    correct = torch.zeros((), dtype=torch.long, device=data.device)
    forward = model if distributed.is_distributed() else forward_fn(model, hardware)  # every rank evaluates all
    for x, y in data.eval_batches(split, hardware.eval_batch_size):
        with autocast(hardware):
            logits = forward_inputs(forward, x if isinstance(x, tuple) else to_memory_format(x, hardware))
        correct += (logits.argmax(-1) == y).sum()
    return correct.item() / data.split_size(split)


# The kit's own metrics, in the one registry of metrics: accuracy, stored as a fraction (BLEU, in
# points, is registered by the translation data that define it)
registry.register_builtin("metric", "accuracy", top1_accuracy, label="test accuracy", scale=100.0, range=(0.0, 1.0))
NETWORK_METRICS = {"gnmt": "bleu"}  # the paper's non-accuracy network in the released runs (a reserved name: registry.RESERVED)


def get_metric(name: str) -> Metric:
    plugin = registry.lookup("metric", name)
    o = plugin.options
    evaluate = plugin.call if plugin.builtin else (lambda model, data, split, hardware: plugin.call(model, data, split))
    return Metric(name, o["label"], o["scale"], evaluate, o.get("range"))


# What finished runs said about their network's metric (name, label, scale), from their result rows:
# a registered metric's label survives into a process where the plug-in is not registered (plots of a
# results folder in a fresh kernel).
_FROM_RESULTS: dict[str, Metric] = {}


def remember(network: str, name: str, label: str, scale: float) -> None:
    """Record the metric a finished run of ``network`` was evaluated by (:func:`rewindkit.engine.tables.tables` does)."""
    _FROM_RESULTS[network] = Metric(name, label, float(scale), _not_here(name))


def _not_here(name: str) -> Callable:
    def evaluate(*_):
        raise ValueError(f"metric {name!r} is known here only from stored results; register it to evaluate with it")
    return evaluate


def metric_of_network(network: str) -> Metric:
    """The metric a network's results are in and its plots are labelled with: a plug-in network's
    ``metric``; else what its stored results say (:func:`remember`); BLEU for the GNMTs; else accuracy."""
    plugin = registry.get("network", network)
    declared = plugin.options["metric"] if plugin is not None else None
    if declared and registry.get("metric", declared) is not None:
        return get_metric(declared)
    if network in _FROM_RESULTS:
        return _FROM_RESULTS[network]
    return get_metric(declared or NETWORK_METRICS.get(network, "accuracy"))


def evaluate(model: nn.Module, data, split: str, hardware) -> float:
    """``model``'s metric on ``split``, in eval mode: the network's own (``model.metric``, set from a
    plug-in's ``metric``), else the data's (``data.metric``), else accuracy."""
    name = getattr(model, "metric", None) or getattr(data, "metric", "accuracy")
    was_training = model.training
    model.eval()
    try:
        metric = get_metric(name)
        with _evaluation_draws(model, data).step("evaluate", split):  # a network drawing in eval mode: seeded
            return metric.check(metric.evaluate(model, data, split, hardware), split)
    finally:
        model.train(was_training)


_EVALUATION_DRAWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _evaluation_draws(model: nn.Module, data) -> ForwardRandomness:
    """The draws of ``model``'s evaluations on a device (``F.dropout`` left on in eval mode, MC
    dropout): seeded by the split, so the same weights always score the same
    (:class:`~rewindkit.core.seeds.ForwardRandomness`). An evaluation whose data loader draws (a
    ``DataLoader`` made per evaluation) is seeded too, holding the lock: its scores are unchanged."""
    device = str(getattr(data, "device", "cpu"))
    by_device = _EVALUATION_DRAWS.setdefault(model, {})
    if device not in by_device:
        by_device[device] = ForwardRandomness(0, device)
    return by_device[device]


def delta_label(network: str) -> str:
    """The y-axis of a Δ-vs-dense plot: ``Δ test accuracy vs dense (points)``, ``Δ BLEU vs dense``."""
    metric = metric_of_network(network)
    return f"Δ {metric.label} vs dense" + (" (points)" if metric.scale != 1 else "")
