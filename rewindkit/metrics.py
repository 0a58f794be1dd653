"""What a network is judged by (paper §2, §4): top-1 accuracy for the image classifiers, BLEU for
translation (GNMT), or a registered metric (:func:`rewindkit.plugins.register_metric`). Higher is
better for all of them; results tables keep the value in ``test_acc`` / ``val_acc``, as the
authors' released GNMT rows do, and plots name it on their axes (:func:`delta_label`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import distributed, plugins
from .hardware import autocast, forward_fn, to_memory_format
from .translation import bleu


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # on plot axes and in tables: "test accuracy", "BLEU"
    scale: float  # stored value → plotted points: 100 for a fraction, 1 for BLEU
    evaluate: Callable  # (model, data, split, hardware) -> float


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


def _bleu(model: nn.Module, data, split: str, hardware) -> float:
    return bleu(model, data, split)


BUILTIN = {
    "accuracy": Metric("accuracy", "test accuracy", 100.0, top1_accuracy),
    "bleu": Metric("bleu", "BLEU", 1.0, _bleu),
}
plugins.BUILTIN["metric"] = tuple(BUILTIN)
NETWORK_METRICS = {"gnmt": "bleu", "gnmt_small": "bleu"}  # the kit's own and the paper's non-accuracy networks


def get_metric(name: str) -> Metric:
    if name in BUILTIN:
        return BUILTIN[name]
    plugin = plugins.get("metric", name)
    if plugin is None:
        raise ValueError(f"unknown metric {name!r}; valid metrics: {', '.join(tuple(BUILTIN) + plugins.names('metric'))}")
    return Metric(name, plugin.options["label"], plugin.options["scale"],
                  lambda model, data, split, hardware: plugin.call(model, data, split))


def metric_of_network(network: str) -> Metric:
    """The metric a network's results are in and its plots are labelled with: a plug-in network's
    ``metric``, BLEU for the GNMTs, else accuracy."""
    plugin = plugins.get("network", network)
    declared = plugin.options["metric"] if plugin is not None else None
    return get_metric(declared or NETWORK_METRICS.get(network, "accuracy"))


def evaluate(model: nn.Module, data, split: str, hardware) -> float:
    """``model``'s metric on ``split``, in eval mode: the network's own (``model.metric``, set from a
    plug-in's ``metric``), else the data's (``data.metric``), else accuracy."""
    name = getattr(model, "metric", None) or getattr(data, "metric", "accuracy")
    was_training = model.training
    model.eval()
    try:
        return float(get_metric(name).evaluate(model, data, split, hardware))
    finally:
        model.train(was_training)


def delta_label(network: str) -> str:
    """The y-axis of a Δ-vs-dense plot: ``Δ test accuracy vs dense (points)``, ``Δ BLEU vs dense``."""
    metric = metric_of_network(network)
    return f"Δ {metric.label} vs dense" + (" (points)" if metric.scale != 1 else "")
