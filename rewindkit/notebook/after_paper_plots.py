"""Notebook 12's figures (:mod:`rewindkit.notebook.after_paper`), in the convention of
:mod:`rewindkit.plots`: each returns ``(figure, data)`` with ``data`` the exact table drawn, and
:mod:`rewindkit.plots` re-exports them."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core.techniques import CORE_TECHNIQUES, LABELS
from ..paper.style import COLORS, MARKERS, delta_label, paper_style
from .after_paper import MASK_LABELS, MASKS, SCHEDULE_LABELS

SCHEDULE_COLORS = {"step": "#000000", "cosine": "#009E73", "linear": "#56B4E9", "one_cycle": "#CC79A7"}


def _bars(ax, x, median, low, high, technique, label=None, dashed=False, joined=True):
    ax.errorbar(x, median, yerr=np.vstack([np.asarray(median) - low, np.asarray(high) - median]),
                color=COLORS[technique], marker=MARKERS[technique], markersize=3.5, linewidth=1.1, capsize=1.5,
                elinewidth=0.7, linestyle=("--" if dashed else "-") if joined else "none", label=label,
                markerfacecolor="white" if dashed else COLORS[technique])


def schedule_lrs(traces: pd.DataFrame):
    """Each schedule's LR over the dense run (``traces``: :func:`after_paper.lr_traces`), with the
    fine-tuning LR every schedule ends at."""
    with paper_style():
        fig, ax = plt.subplots(figsize=(5.0, 2.6))
        for name, rows in traces.groupby("schedule", sort=False):
            ax.plot(rows["epoch"], rows["lr"], color=SCHEDULE_COLORS.get(name, "0.5"), linewidth=1.3,
                    label=SCHEDULE_LABELS.get(name, name))
        ax.axhline(traces["final_lr"].iloc[0], color="0.4", linestyle=":", linewidth=0.9,
                   label=f"fine-tuning LR ({traces['final_lr'].iloc[0]:g})")
        ax.set_yscale("log")
        ax.set_xlabel("epoch of the dense run")
        ax.set_ylabel("learning rate (log)")
        ax.legend(frameon=False, fontsize=6, ncol=2)
        fig.tight_layout()
    return fig, traces


def schedules_vs_time(aggs: dict[str, pd.DataFrame], *, network: str):
    """Δ vs retraining time t (median over seeds, min–max bars), one column per LR schedule and one
    row per density (``aggs``: schedule → aggregate of its one-shot grid)."""
    data = pd.concat([a.assign(lr_schedule=s) for s, a in aggs.items()], ignore_index=True)
    densities = sorted(data["density"].unique(), reverse=True)
    with paper_style():
        fig, axes = plt.subplots(len(densities), len(aggs), figsize=(2.1 * len(aggs), 1.7 * len(densities) + 0.6),
                                 squeeze=False, sharex=True, sharey="row")
        for i, d in enumerate(densities):
            for j, s in enumerate(aggs):
                ax = axes[i, j]
                ax.axhline(0, color="0.3", linewidth=0.7)
                for tech in CORE_TECHNIQUES:
                    rows = data[(data.lr_schedule == s) & (data.technique == tech)
                                & np.isclose(data.density, d)].sort_values("retrain_time")
                    _bars(ax, rows["retrain_time"], rows["delta_median"], rows["delta_min"], rows["delta_max"], tech,
                          LABELS[tech])
                if i == 0:
                    ax.set_title(SCHEDULE_LABELS.get(s, s))
                if j == 0:
                    ax.set_ylabel(f"{1 / d:.3g}× ({100 * d:.1f}% left)\nΔ (points)", fontsize=7)
                if i == len(densities) - 1:
                    ax.set_xlabel("retraining epochs t")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.01))
        fig.suptitle(f"{delta_label(network)} per LR schedule (median over seeds, min–max bars)", fontsize=9)
        fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return fig, data


def random_masks(table: pd.DataFrame, *, network: str):
    """Δ at t = T of each technique on each mask (median over seeds, min–max bars), one panel per
    density (``table``: :func:`after_paper.mask_table`)."""
    long = pd.concat([table[["density", "technique"]].assign(mask=m, delta_median=table[m], delta_min=table[f"{m} min"],
                                                             delta_max=table[f"{m} max"]) for m in MASKS],
                     ignore_index=True)
    densities = sorted(long["density"].unique(), reverse=True)
    with paper_style():
        fig, axes = plt.subplots(1, len(densities), figsize=(3.1 * len(densities), 2.8), squeeze=False, sharey=True)
        for ax, d in zip(axes[0], densities):
            ax.axhline(0, color="0.3", linewidth=0.7)
            for k, tech in enumerate(CORE_TECHNIQUES):
                rows = long[(long.technique == tech) & np.isclose(long.density, d)].set_index("mask").loc[list(MASKS)]
                x = np.arange(len(MASKS)) + 0.18 * (k - 1)
                _bars(ax, x, rows["delta_median"], rows["delta_min"], rows["delta_max"], tech, LABELS[tech], joined=False)
            ax.set_xticks(range(len(MASKS)))
            ax.set_xticklabels([MASK_LABELS[m].replace(", ", ",\n") for m in MASKS], fontsize=6)
            ax.set_title(f"{1 / d:.3g}× ({100 * d:.1f}% left), t = T")
        axes[0, 0].set_ylabel(delta_label(network))
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.02))
        fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig, long


def sign_flips(history: pd.DataFrame, summary: pd.DataFrame, *, network: str):
    """Left: the fraction of surviving weights whose sign differs from the dense network's, after each
    retraining epoch (epoch 0: the start); middle: the fraction flipping sign in each epoch (median
    over seeds, min–max band; ``history``: :func:`after_paper.sign_history`); right: Δ at t = T of
    each technique, weight rewinding also with the dense signs imposed (``summary``:
    :func:`after_paper.sign_summary`)."""
    with paper_style():
        fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.0))
        at = f"{1 / history['density'].iloc[0]:.3g}×, t = T"
        for ax, column, title in ((axes[0], "differs", f"surviving weights, sign ≠ dense network's (%)\n{at}"),
                                  (axes[1], "flipped", f"surviving weights flipping sign in the epoch (%)\n{at}")):
            for tech in CORE_TECHNIQUES:
                rows = history[history.technique == tech].groupby("retrain_epoch")[column]
                stats = 100 * rows.agg(["median", "min", "max"])
                ax.plot(stats.index, stats["median"], color=COLORS[tech], marker=MARKERS[tech], markersize=3,
                        linewidth=1.1, label=LABELS[tech])
                ax.fill_between(stats.index, stats["min"], stats["max"], color=COLORS[tech], alpha=0.15, linewidth=0)
            ax.set_xlabel("retraining epoch")
            ax.set_title(title)
        axes[0].legend(frameon=False, fontsize=6)
        variants = [("fine_tuning", "own"), ("weight_rewinding", "own"), ("weight_rewinding", "dense"),
                    ("lr_rewinding", "own")]
        ax = axes[2]
        ax.axhline(0, color="0.3", linewidth=0.7)
        densities = sorted(summary["density"].unique(), reverse=True)
        for k, d in enumerate(densities):
            for x, (tech, signs) in enumerate(variants):
                row = summary[(summary.technique == tech) & (summary.signs == signs) & np.isclose(summary.density, d)]
                if len(row):
                    _bars(ax, [x + 0.2 * (k - (len(densities) - 1) / 2)], row["delta"].to_numpy(),
                          row["delta_min"].to_numpy(), row["delta_max"].to_numpy(), tech, dashed=signs == "dense",
                          joined=False)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(["FT", "WR", "WR,\ndense signs", "LRR"], fontsize=7)
        ax.set_ylabel(delta_label(network))
        ax.set_title("Δ at t = T\n" + ", ".join(f"{1 / d:.3g}×" for d in densities) + " (left to right)")
        fig.tight_layout()
    data = pd.concat([history.assign(figure="history"), summary.assign(figure="accuracy")], ignore_index=True)
    return fig, data
