"""The paper's figure families (paper §4–5), drawn from aggregated results.

Every function takes a table from :func:`rewindkit.paper.reference.aggregate` (the released runs, the
kit's own runs, or both concatenated) and returns ``(figure, data)``, where ``data`` is the exact
table drawn. ``overlay=`` adds a second source (e.g. your runs on the paper's curves) in the same
colours with dashed lines and open markers. :func:`save_figure` writes PDF, PNG and the CSV of the
numbers, byte-for-byte reproducibly.

Families: 1 :func:`accuracy_vs_time` (equal-budget panels with the rewinding safe zone);
2 :func:`accuracy_vs_compression` (best achievable, t chosen on validation); 3 :func:`iterative`
(the pruning algorithm vs the state of the art); 4 :func:`structured` (L1 filters A/B vs Liu et
al.); 5 ablations = families 1–2 with ``techniques=ALL``; 6 :func:`flop_speedup`. Around them:
:func:`compression_beside_paper` (the kit's family 2 next to or over the paper's) and
:func:`delta_heatmap` (every (density, t) cell of one technique).

The teaching figures (:mod:`rewindkit.notebook.teaching_plots`) follow the same ``(figure, data)``
convention; :mod:`rewindkit.plots` gathers both with the style (:mod:`rewindkit.paper.style`).
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import reference as R
from .style import (ALL, CORE, COLORS, MARKERS, check_techniques, delta_label, metric_word,  # noqa: F401
                         network_title, paper_style, save_figure)
from ..core.techniques import LABELS



def _subset(agg: pd.DataFrame, what: str, **filters) -> pd.DataFrame:
    sub = R.select(agg, **filters)
    if sub.empty:
        have = agg[["network", "pruning", "schedule"]].drop_duplicates().to_dict("records")
        raise ValueError(f"no {what} rows for {filters}; available: {have}")
    return sub


def _errorbar(ax, x, rows, technique, dashed=False, label=None):
    yerr = np.vstack([rows["delta_median"] - rows["delta_min"], rows["delta_max"] - rows["delta_median"]])
    ax.errorbar(x, rows["delta_median"], yerr=yerr, color=COLORS[technique], marker=MARKERS[technique],
                markersize=3.5, linewidth=1.1, capsize=1.5, elinewidth=0.7, linestyle="--" if dashed else "-",
                markerfacecolor="white" if dashed else COLORS[technique], label=label)


def _legend(fig, axes):
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=min(len(seen), 4), frameon=False,
               bbox_to_anchor=(0.5, -0.02))


def accuracy_vs_time(agg: pd.DataFrame, *, network: str, pruning: str = "unstructured",
                     schedule: str = "one_shot", densities=None, techniques=CORE, T: float | None = None,
                     overlay: pd.DataFrame | None = None, label: str = "paper", overlay_label: str = "this kit",
                     ncols: int = 4):
    """Family 1: Δ accuracy vs retraining epochs t, one panel per density, shaded safe zone
    t ∈ [0.25T, 0.9T] where rewinding matches or beats fine-tuning (§5.2)."""
    techniques = check_techniques(techniques)
    sub = _subset(agg, "accuracy-vs-time", network=network, pruning=pruning, schedule=schedule,
                  technique=list(techniques))
    T = R.training_epochs(network, T)
    all_d = sorted(sub["density"].unique(), reverse=True)
    densities = all_d if densities is None else [min(all_d, key=lambda d: abs(d - x)) for x in densities]
    sub = sub[sub["density"].isin(densities)]
    sources = [(sub, False, label)]
    if overlay is not None:
        sources.append((R.select(overlay, network=network, pruning=pruning, schedule=schedule,
                                 technique=list(techniques)), True, overlay_label))
    n = len(densities)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    with paper_style():
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.0 * nrows + 0.5), squeeze=False,
                                 sharex=True)
        axes = axes.ravel()
        for ax, d in zip(axes, densities):
            ax.axvspan(0.25 * T, 0.9 * T, color="0.9", zorder=0, label="rewinding safe zone")
            ax.axhline(0, color="0.3", linewidth=0.7)
            for frame, dashed, src in sources:
                for tech in techniques:
                    rows = frame[(frame["technique"] == tech) & (np.isclose(frame["density"], d))].sort_values("retrain_time")
                    if len(rows):
                        _errorbar(ax, rows["retrain_time"], rows, tech, dashed,
                                  f"{LABELS[tech]}" + (f" ({src})" if overlay is not None else ""))
            ax.set_title(f"{1 / d:.2f}× ({100 * d:.1f}% left)")
            ax.set_xlabel("retraining epochs t")
        for ax in axes[n:]:
            ax.set_visible(False)
        for ax in axes[::ncols]:
            ax.set_ylabel(delta_label(network))
        fig.suptitle(f"{network_title(network)} — {pruning.replace('_', ' ')} {schedule.replace('_', '-')}: "
                     f"{metric_word(network)} vs retraining time", fontsize=9)
        _legend(fig, axes)
        fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    data = pd.concat([f.assign(source=s) for f, _, s in sources], ignore_index=True)
    return fig, data


def _compression_axes(ax, network):
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (log)")
    ax.set_ylabel(delta_label(network))
    ax.axhline(0, color="0.3", linewidth=0.7)
    lo, hi = ax.get_xlim()
    fine = hi / lo < 2.5  # structured pruning spans 1.02-1.7x; unstructured spans 1.25-260x
    candidates = (1.05, 1.1, 1.2, 1.3, 1.4, 1.5, 1.75, 2) if fine else (1.25, 2, 3, 5, 10, 20, 50, 100, 200)
    ticks = [t for t in candidates if lo <= t <= hi]
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _compression_curves(ax, sources, techniques, max_compression, name=lambda tech, rows: LABELS[tech]):
    """Draw one median/min-max curve per technique and source against compression ratio."""
    overlaid = len(sources) > 1
    for frame, dashed, src in sources:
        if max_compression:
            frame = frame[frame["compression"] <= max_compression * 1.001]
        for tech in techniques:
            rows = frame[frame["technique"] == tech].sort_values("compression")
            if len(rows):
                _errorbar(ax, rows["compression"], rows, tech, dashed,
                          name(tech, rows) + (f" ({src})" if overlaid else ""))


def accuracy_vs_compression(agg: pd.DataFrame, *, network: str, pruning: str = "unstructured",
                            schedule: str = "one_shot", techniques=CORE, overlay: pd.DataFrame | None = None,
                            label: str = "paper", overlay_label: str = "this kit", ax=None, title=None,
                            max_compression: float | None = None):
    """Family 2: best achievable Δ accuracy vs compression ratio: per density the t with the best
    median validation accuracy, its median test Δ with min/max bars (§4)."""
    techniques = check_techniques(techniques)
    best = R.best_achievable(_subset(agg, "accuracy-vs-compression", network=network, pruning=pruning,
                                     schedule=schedule, technique=list(techniques)))
    sources = [(best, False, label)]
    if overlay is not None:
        sources.append((R.best_achievable(R.select(overlay, network=network, pruning=pruning, schedule=schedule,
                                                   technique=list(techniques))), True, overlay_label))
    with paper_style():
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(4.2, 3.0))
        _compression_curves(ax, sources, techniques, max_compression)
        _compression_axes(ax, network)
        ax.set_title(title or f"{network_title(network)} — {pruning.replace('_', ' ')} {schedule.replace('_', '-')}, "
                     "best t on validation")
        ax.legend(frameon=False)
        if fig is not None:
            fig.tight_layout()
        else:
            fig = ax.figure
    data = pd.concat([f.assign(source=s) for f, _, s in sources], ignore_index=True)
    return fig, data


def iterative(agg: pd.DataFrame, *, network: str, techniques=CORE, T: float | None = None,
              overlay: pd.DataFrame | None = None, label: str = "paper", overlay_label: str = "this kit",
              state_of_the_art: bool = True, max_compression: float | None = None):
    """Family 3: iterative pruning with each technique at its fixed per-iteration budget (FT and
    LRR at t = T, WR at the largest t ≤ 0.9T); LRR at t = T is the paper's pruning algorithm (§5.3),
    shown against the state-of-the-art points the paper plots."""
    techniques = check_techniques(techniques)
    sub = _subset(agg, "iterative", network=network, pruning="unstructured", schedule="iterative",
                  technique=list(techniques))
    sources = [(R.fixed_budget_curves(sub, T), False, label)]
    if overlay is not None:
        o = R.select(overlay, network=network, pruning="unstructured", schedule="iterative", technique=list(techniques))
        sources.append((R.fixed_budget_curves(o, float(o["retrain_time"].max()) if len(o) else None), True,
                        overlay_label))
    with paper_style():
        fig, ax = plt.subplots(figsize=(4.6, 3.2))
        def name(tech, rows):
            base = "LR rewinding, t=T: the paper's algorithm" if tech == "lr_rewinding" else LABELS[tech]
            return f"{base} (t={rows['retrain_time'].iloc[0]:g})"
        _compression_curves(ax, sources, techniques, max_compression, name)
        sota = R.STATE_OF_THE_ART.get(network) if state_of_the_art else None
        if sota:
            dens, deltas = zip(*sota["points"])
            ax.scatter(1 / np.array(dens), deltas, marker="*", s=60, color="black", zorder=5, label=sota["label"])
        _compression_axes(ax, network)
        ax.set_title(f"{network_title(network)} — iterative pruning (prune 20% per iteration)")
        ax.legend(frameon=False)
        fig.tight_layout()
    data = pd.concat([f.assign(source=s) for f, _, s in sources], ignore_index=True)
    if sota:
        data = pd.concat([data, pd.DataFrame({"technique": sota["label"], "density": dens,
                                              "compression": 1 / np.array(dens), "delta_median": deltas,
                                              "source": "published"})], ignore_index=True)
    return fig, data


def structured(agg: pd.DataFrame, *, network: str, techniques=ALL, overlay: pd.DataFrame | None = None,
               label: str = "paper", overlay_label: str = "this kit", liu: bool = True):
    """Family 4: L1 filter pruning, configurations A and B side by side (then any configuration of the
    user's, ``structured_NAME``), best achievable Δ vs compression (levels 1–5), with Liu et al.
    (2019)'s better of fine-tuned/Scratch-B at level 1 (§5.4)."""
    techniques = check_techniques(techniques)
    present = sorted({p for p in R.select(agg, network=network)["pruning"].unique()
                      if isinstance(p, str) and p.startswith("structured_")})
    prunings = [p for p in ("structured_a", "structured_b") if p in present] + \
               [p for p in present if p not in ("structured_a", "structured_b")]
    if not prunings:
        raise ValueError(f"no structured rows for network {network!r}")
    with paper_style():
        fig, axes = plt.subplots(1, len(prunings), figsize=(4.0 * len(prunings), 3.1), squeeze=False)
        frames = []
        for ax, p in zip(axes[0], prunings):
            _, d = accuracy_vs_compression(agg, network=network, pruning=p, techniques=techniques, overlay=overlay,
                                           label=label, overlay_label=overlay_label, ax=ax,
                                           title=f"{network_title(network)} — L1 filters, config "
                                                 f"{p.removeprefix('structured_').upper() if p in ('structured_a', 'structured_b') else p.removeprefix('structured_')}")
            frames.append(d)
            lv = R.liu_delta(network, p) if liu else None
            if lv is not None:
                level1 = R.select(agg, network=network, pruning=p)["compression"].min()
                ax.scatter([level1], [lv], marker="*", s=70, color="black", zorder=5, label="Liu et al. 2019")
                frames.append(pd.DataFrame({"technique": ["Liu et al. 2019"], "compression": [level1],
                                            "delta_median": [lv], "pruning": [p], "source": ["published"]}))
                ax.legend(frameon=False)
        fig.tight_layout()
    return fig, pd.concat(frames, ignore_index=True)


def flop_speedup(agg: pd.DataFrame, base: pd.DataFrame, *, network: str, schedule: str = "iterative",
                 techniques=CORE, overlay: pd.DataFrame | None = None, overlay_base: pd.DataFrame | None = None,
                 label: str = "paper", overlay_label: str = "this kit"):
    """Family 6: theoretical FLOP speed-up (dense FLOPs ÷ pruned FLOPs, unpruned weights only) of the
    best-validated network at each compression ratio (Appendix F, §5.5). As the authors' ``flop_plot``,
    t is chosen by the median validation accuracy of the trials that have FLOPs. Masks do not make
    dense kernels faster: this is a count of work, not a timing."""
    techniques = check_techniques(techniques)

    def speedups(frame, base_frame):
        return R.speedups(R.best_achievable(frame, by="val_median_with_flops"), base_frame)

    sub = _subset(agg, "FLOP", network=network, schedule=schedule, pruning="unstructured", technique=list(techniques))
    sources = [(speedups(sub, base), False, label)]
    if overlay is not None:
        sources.append((speedups(R.select(overlay, network=network, schedule=schedule, pruning="unstructured",
                                          technique=list(techniques)), overlay_base), True, overlay_label))
    with paper_style():
        fig, ax = plt.subplots(figsize=(4.2, 3.0))
        for frame, dashed, src in sources:
            for tech in techniques:
                rows = frame[frame["technique"] == tech].sort_values("compression")
                if len(rows):
                    ax.plot(rows["compression"], rows["speedup"], color=COLORS[tech], marker=MARKERS[tech],
                            markersize=3.5, linestyle="--" if dashed else "-",
                            markerfacecolor="white" if dashed else COLORS[tech],
                            label=LABELS[tech] + (f" ({src})" if overlay is not None else ""))
        top = max(float(f["compression"].max()) for f, _, _ in sources if len(f))
        ax.plot([1, top], [1, top], color="0.6", linewidth=0.8, linestyle=":", label="speed-up = compression")
        ax.set_xscale("log")
        ax.set_xlabel("compression ratio (log)")
        ax.set_ylabel("theoretical FLOP speed-up (×)")
        ax.set_title(f"{network_title(network)} — {schedule.replace('_', '-')}: FLOPs of the best network")
        ax.legend(frameon=False)
        fig.tight_layout()
    return fig, pd.concat([f.assign(source=s) for f, _, s in sources], ignore_index=True)


def compression_beside_paper(own: pd.DataFrame, paper: pd.DataFrame, *, network: str, techniques=CORE,
                             paper_network: str = "resnet56", max_compression: float | None = 10):
    """Family 2 for the kit's own runs: drawn over the paper's curves when ``network`` is one of the
    paper's networks, else beside the paper's ``paper_network`` panel (up to ``max_compression``)."""
    if network in R.PAPER_NETWORKS:
        return accuracy_vs_compression(paper, network=network, techniques=techniques, overlay=own)
    with paper_style():
        fig, axes = plt.subplots(1, 2, figsize=(9.2, 3.2))
        _, mine = accuracy_vs_compression(own, network=network, techniques=techniques, label="this kit", ax=axes[0],
                                          title=f"this kit: {network_title(network)}")
        _, theirs = accuracy_vs_compression(paper, network=paper_network, techniques=techniques, ax=axes[1],
                                            max_compression=max_compression, title=f"paper: {network_title(paper_network)}")
        fig.tight_layout()
    return fig, pd.concat([mine, theirs], ignore_index=True)


def delta_heatmap(agg: pd.DataFrame, *, network: str, technique: str, index: str | list[str] = "compression"):
    """Median Δ of every (``index``, t) cell of one technique as an annotated heat map (blue above the
    dense network, red below): all the cells the best-achievable curves choose t from (§4)."""
    check_techniques([technique])
    wide = R.pivot(_subset(agg, "heat-map", network=network, technique=technique), index=index,
                   columns="retrain_time")
    names = list(wide.index.names)

    def row_label(key) -> str:
        key = key if isinstance(key, tuple) else (key,)
        return " · ".join(f"{v:.2f}×" if n == "compression" else f"{v:.4g}" if n == "density"
                          else str(v).replace("_", " ") for n, v in zip(names, key))

    with paper_style():
        import seaborn as sns
        fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * wide.shape[1] + 2), 0.35 * len(wide) + 1))
        sns.heatmap(wide, annot=True, cmap="RdBu", center=0, ax=ax, yticklabels=[row_label(k) for k in wide.index],
                    xticklabels=[f"{t:g}" for t in wide.columns])
        ax.set_xlabel("retraining epochs t")
        ax.set_ylabel(" · ".join(names))
        ax.set_title(f"{network_title(network)}: {LABELS[technique]} (Δ test {metric_word(network)}, median of trials)")
        fig.tight_layout()
    return fig, wide.reset_index()
