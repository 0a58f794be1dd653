"""Teaching figures, from single runs, masks, plans and models rather than aggregated tables (the
notebooks' first steps), in the convention of :mod:`rewindkit.plots`: each returns ``(figure, data)``
with ``data`` the exact table drawn. :mod:`rewindkit.plots` re-exports them."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core.metrics import get_metric, metric_of_network
from ..paper.style import COLORS, MARKERS, check_techniques, delta_label, paper_style
from ..core.techniques import LABELS, TECHNIQUES


def lr_schedules(plans: dict, total_steps: int, steps_per_epoch: int):
    """The LR each technique uses, drawn on one axis of original-schedule epochs (teaching figure).

    ``plans`` maps technique → :class:`~rewindkit.techniques.RetrainPlan`; the original schedule's
    dense run is drawn in grey, each retraining run over the iterations it covers."""
    with paper_style():
        fig, ax = plt.subplots(figsize=(5.0, 2.8))
        sched = next(iter(plans.values())).schedule
        steps = np.arange(total_steps)
        ax.plot(steps / steps_per_epoch, [sched.lr(s) for s in steps], color="0.6", linewidth=3, alpha=0.6,
                label="original training (0 → T)")
        rows = []
        for i, (tech, plan) in enumerate(plans.items()):
            xs = np.arange(plan.start_step, plan.stop_step)
            ys = plan.lr_trace()
            ax.plot(xs / steps_per_epoch, np.array(ys) * (1 + 0.04 * i), color=COLORS[tech], linewidth=1.4,
                    label=f"{LABELS[tech]}: iterations {plan.start_step}→{plan.stop_step}")
            rows += [{"technique": tech, "step": int(s), "lr": lr} for s, lr in zip(xs, ys)]
        ax.axvline(total_steps / steps_per_epoch, color="0.3", linestyle=":", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("epoch of the original schedule (T = dotted line)")
        ax.set_ylabel("learning rate (log)")
        ax.legend(frameon=False, fontsize=6)
        fig.tight_layout()
    return fig, pd.DataFrame(rows)


def layer_densities(masks: dict, *, title: str = "Density per layer"):
    """Bar chart of per-layer density for one or more masks (``{label: Mask}``)."""
    frames = [pd.DataFrame({"layer": list(m.layer_densities()), "density": list(m.layer_densities().values()),
                            "mask": label}) for label, m in masks.items()]
    data = pd.concat(frames, ignore_index=True)
    with paper_style():
        import seaborn as sns
        layers = list(dict.fromkeys(data["layer"]))
        fig, ax = plt.subplots(figsize=(max(4.5, 0.28 * len(layers)), 3.0))
        sns.barplot(data=data, x="layer", y="density", hue="mask", ax=ax, order=layers)
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels([n.removesuffix(".weight") for n in layers], rotation=90, fontsize=6)
        ax.set_ylabel("fraction of weights kept")
        ax.set_title(title)
        fig.tight_layout()
    return fig, data


def technique_deltas(runs: pd.DataFrame, T: float | None = None):
    """Δ test accuracy vs the dense network of one retraining run per technique, as bars (teaching
    figure). ``runs``: a :func:`rewindkit.reference.run_deltas` table of one density and budget t;
    ``T`` marks a full budget t = T in the title."""
    if runs.empty or runs["technique"].duplicated().any():
        raise ValueError("expected one run per technique: select one density, t and trial first")
    order = [t for t in TECHNIQUES if t in set(runs["technique"])]
    data = runs.set_index("technique").loc[order].reset_index()
    density, t = float(data["density"].iloc[0]), float(data["retrain_time"].iloc[0])
    with paper_style():
        fig, ax = plt.subplots(figsize=(5, 2.6))
        ax.barh([LABELS[k] for k in data["technique"]], data["delta"], color=[COLORS[k] for k in data["technique"]])
        ax.axvline(0, color="0.3", linewidth=0.8)
        ax.set_xlabel(delta_label(data["network"].iloc[0]))
        budget = f"t = T = {t:g}" if T == t else f"t = {t:g}"
        ax.set_title(f"{1 / density:.1f}× compression ({density:.1%} of weights left), {budget}")
        fig.tight_layout()
    return fig, data


def _metric_axis(network: str | None) -> tuple[float, str]:
    """Stored value → plotted points, and the axis label, for ``network``'s metric (accuracy when None)."""
    metric = metric_of_network(network) if network is not None else get_metric("accuracy")
    return metric.scale, f"{metric.label} (%)" if metric.scale == 100 else metric.label


def retraining_curves(metrics: Mapping[str, pd.DataFrame], dense_acc: float | None = None, network: str | None = None):
    """The metric after every retraining epoch, one line per technique (``metrics``: technique →
    that run's ``metrics.csv`` table), with the dense network's value dotted (teaching figure).
    ``network`` names the metric (test accuracy in %, BLEU, a plug-in's; default accuracy)."""
    check_techniques(metrics)
    data = pd.concat([m.assign(technique=tech, retrain_epoch=range(1, len(m) + 1)) for tech, m in metrics.items()],
                     ignore_index=True)
    with paper_style():
        fig, ax = plt.subplots(figsize=(5, 3))
        scale, label = _metric_axis(network)
        for tech in metrics:
            rows = data[data["technique"] == tech]
            ax.plot(rows["retrain_epoch"], scale * rows["test_acc"], color=COLORS[tech], marker=MARKERS[tech],
                    markersize=3, label=LABELS[tech])
        if dense_acc is not None:
            ax.axhline(scale * dense_acc, color="0.3", linestyle=":", label="dense network")
        ax.set_xlabel("retraining epoch")
        ax.set_ylabel(label)
        ax.legend(frameon=False)
        fig.tight_layout()
    return fig, data


def run_curve(metrics: pd.DataFrame, technique: str, network: str | None = None):
    """One retraining run's metric (left axis; ``network`` names it, default accuracy) and learning
    rate (right axis, log) at every epoch of the original schedule it covers (``metrics``: the run's
    ``metrics.csv`` table)."""
    check_techniques([technique])
    data = metrics[["epoch", "test_acc", "lr"]].assign(technique=technique)
    scale, label = _metric_axis(network)
    with paper_style():
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(data["epoch"], scale * data["test_acc"], color=COLORS[technique], marker=MARKERS[technique],
                markersize=3)
        ax.set_xlabel("epoch of the schedule")
        ax.set_ylabel(label, color=COLORS[technique])
        lr_ax = ax.twinx()
        lr_ax.step(data["epoch"], data["lr"], color="0.5", where="post")
        lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate (log, grey)")
        lr_ax.grid(False)
        ax.set_title(LABELS[technique])
        fig.tight_layout()
    return fig, data


def mask_heatmap(mask, layer: str | None = None):
    """Which weights of one layer a :class:`~rewindkit.core.masks.Mask` keeps (black), one row per filter;
    by default the layer with the most weights. ``data``: weights kept per filter."""
    layer = layer or max(mask.weight_names, key=lambda n: mask[n].numel())
    kept = mask[layer].reshape(mask[layer].shape[0], -1).numpy()
    with paper_style():
        fig, ax = plt.subplots(figsize=(6, 2.8))
        ax.imshow(kept, aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
        ax.grid(False)
        ax.set_xlabel("input channel × kernel position")
        ax.set_ylabel("filter")
        ax.set_title(f"mask of {layer} at {mask.density():.1%} overall density (black = kept)")
        fig.tight_layout()
    return fig, pd.DataFrame({"filter": np.arange(kept.shape[0]), "kept": kept.sum(1)})


KEPT_COLOR, REMOVED_COLOR = "#0072B2", "#D55E00"  # Okabe–Ito blue and vermilion


def filter_norms(model, mask, block: int):
    """L1 norm of each filter of residual block ``block``'s first conv (1-based): blue if ``mask`` keeps
    it, orange if L1 filter pruning removes it, the smallest norms first (§3.2, Li et al. 2017)."""
    blocks = model.blocks()
    if not 1 <= block <= len(blocks):
        raise ValueError(f"block must be 1..{len(blocks)}, got {block}")
    conv = blocks[block - 1].conv1
    name = next(n for n, m in model.named_modules() if m is conv) + ".weight"
    data = pd.DataFrame({"filter": np.arange(conv.weight.shape[0]),
                         "l1_norm": conv.weight.detach().abs().flatten(1).sum(1).numpy(),
                         "kept": mask[name].flatten(1).any(1).numpy()})
    with paper_style():
        fig, ax = plt.subplots(figsize=(5, 2.8))
        ax.bar(data["filter"], data["l1_norm"], color=np.where(data["kept"], KEPT_COLOR, REMOVED_COLOR))
        ax.set_xlabel("filter")
        ax.set_ylabel("L1 norm")
        ax.set_title(f"block {block}: {int((~data['kept']).sum())} of {len(data)} filters removed (orange)")
        fig.tight_layout()
    return fig, data
