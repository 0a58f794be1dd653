"""The kit's figure style, in one place: the colour and marker of each technique (Okabe–Ito,
colour-blind safe), network titles and axis labels, seaborn's paper style, and :func:`save_figure`
(PDF, PNG and the CSV of the numbers drawn, byte-for-byte reproducibly)."""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..core import metrics
from ..platform.storage import atomic_write_bytes, atomic_write_text
from ..core.techniques import CORE_TECHNIQUES, TECHNIQUES, Technique

ALL = TECHNIQUES
CORE = CORE_TECHNIQUES
# Okabe–Ito colour-blind-safe palette, one fixed colour per technique.
COLORS = {"fine_tuning": "#E69F00", "weight_rewinding": "#0072B2", "lr_rewinding": "#D55E00",
          "low_lr_weight_rewinding": "#CC79A7", "reinitialization": "#7F7F7F"}
MARKERS = {"fine_tuning": "s", "weight_rewinding": "^", "lr_rewinding": "o",
           "low_lr_weight_rewinding": "v", "reinitialization": "D"}
NETWORK_TITLES = {"resnet20": "ResNet-20 (CIFAR-10)", "resnet56": "ResNet-56 (CIFAR-10)",
                  "resnet110": "ResNet-110 (CIFAR-10)", "resnet34": "ResNet-34 (ImageNet)",
                  "resnet50": "ResNet-50 (ImageNet)", "gnmt": "GNMT (WMT16 EN-DE)",
                  "mnist1d_resnet": "1-D ResNet (MNIST-1D)", "gnmt_small": "GNMT-small (number names EN-FR)"}


@contextmanager
def paper_style():
    """seaborn's paper context and whitegrid style, with fonts embedded as TrueType.

    Only the style is restored afterwards, not interactive mode: Jupyter's inline backend is loaded
    at the first figure (often inside this context) and switches interactive mode on; undoing that
    kept every later figure of a notebook from being shown (found by the browser suite)."""
    import matplotlib
    import seaborn as sns
    interactive = matplotlib.is_interactive()
    try:
        with plt.rc_context():
            sns.set_theme(context="paper", style="whitegrid")
            plt.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "rewindkit",
                                 "figure.dpi": 100, "savefig.dpi": 200, "axes.titlesize": 9,
                                 "legend.fontsize": 7, "axes.labelsize": 8})
            try:
                yield
            finally:
                interactive = matplotlib.is_interactive()
    finally:
        matplotlib.interactive(interactive)


def save_figure(fig, name: str, directory, data: pd.DataFrame | None = None) -> list[Path]:
    """Write ``name.pdf``, ``name.png`` (and ``name.csv`` of ``data``) into ``directory``, atomically
    and without timestamps, so the same figure gives the same bytes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, meta in (("pdf", {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}),
                      ("png", {"Software": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, metadata=meta, bbox_inches="tight")
        atomic_write_bytes(buffer.getvalue(), directory / f"{name}.{fmt}")
        written.append(directory / f"{name}.{fmt}")
    if data is not None:
        atomic_write_text(data.to_csv(index=False, float_format="%.6g"), directory / f"{name}.csv")
        written.append(directory / f"{name}.csv")
    return written


def network_title(network: str) -> str:
    return NETWORK_TITLES.get(network, network)


def metric_word(network: str) -> str:
    """What a network's titles call its metric: "accuracy", or the metric's label (e.g. "BLEU")."""
    metric = metrics.metric_of_network(network)
    return "accuracy" if metric.name == "accuracy" else metric.label


def delta_label(network: str) -> str:
    """The Δ axis of a network's plots, named by its metric (:func:`rewindkit.core.metrics.delta_label`)."""
    return metrics.delta_label(network)


def check_techniques(techniques) -> tuple[str, ...]:
    """Technique names checked by the one validator (:meth:`Technique.parse`), as plain strings."""
    return tuple(Technique.parse(t).value for t in techniques)
