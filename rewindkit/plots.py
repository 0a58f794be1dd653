"""The paper's figure families (paper §4–5), drawn from aggregated results.

Every function takes a table from :func:`rewindkit.reference.aggregate` (the released runs, the
kit's own runs, or both concatenated) and returns ``(figure, data)``, where ``data`` is the exact
table drawn. ``overlay=`` adds a second source (e.g. your runs on the paper's curves) in the same
colours with dashed lines and open markers. :func:`save_figure` writes PDF, PNG and the CSV of the
numbers, byte-for-byte reproducibly.

Families: 1 :func:`accuracy_vs_time` (equal-budget panels with the rewinding safe zone);
2 :func:`accuracy_vs_compression` (best achievable, t chosen on validation); 3 :func:`iterative`
(the pruning algorithm vs the state of the art); 4 :func:`structured` (L1 filters A/B vs Liu et
al.); 5 ablations = families 1–2 with ``techniques=ALL``; 6 :func:`flop_speedup`.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import reference as R
from .storage import atomic_write_bytes, atomic_write_text
from .techniques import CORE_TECHNIQUES, LABELS, TECHNIQUES

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
                  "mnist1d_resnet": "1-D ResNet (MNIST-1D)"}


@contextmanager
def paper_style():
    """seaborn's paper context and whitegrid style, with fonts embedded as TrueType."""
    import seaborn as sns
    with plt.rc_context():
        sns.set_theme(context="paper", style="whitegrid")
        plt.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "rewindkit",
                             "figure.dpi": 100, "savefig.dpi": 200, "axes.titlesize": 9,
                             "legend.fontsize": 7, "axes.labelsize": 8})
        yield


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


def _title(network: str) -> str:
    return NETWORK_TITLES.get(network, network)


def _ylabel(network: str) -> str:
    return "Δ BLEU vs dense" if network == "gnmt" else "Δ test accuracy vs dense (points)"


def _check_techniques(techniques):
    bad = [t for t in techniques if t not in TECHNIQUES]
    if bad:
        raise ValueError(f"unknown technique {bad[0]!r}; valid techniques: {', '.join(TECHNIQUES)}")
    return tuple(techniques)


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
    techniques = _check_techniques(techniques)
    sub = _subset(agg, "accuracy-vs-time", network=network, pruning=pruning, schedule=schedule,
                  technique=list(techniques))
    T = T or R.T_BY_NETWORK.get(network) or float(sub["retrain_time"].max())
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
            ax.set_ylabel(_ylabel(network))
        fig.suptitle(f"{_title(network)} — {pruning.replace('_', ' ')} {schedule.replace('_', '-')}: "
                     "accuracy vs retraining time", fontsize=9)
        _legend(fig, axes)
        fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    data = pd.concat([f.assign(source=s) for f, _, s in sources], ignore_index=True)
    return fig, data


def _compression_axes(ax, network):
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (log)")
    ax.set_ylabel(_ylabel(network))
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
    techniques = _check_techniques(techniques)
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
        ax.set_title(title or f"{_title(network)} — {pruning.replace('_', ' ')} {schedule.replace('_', '-')}, "
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
    techniques = _check_techniques(techniques)
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
        ax.set_title(f"{_title(network)} — iterative pruning (prune 20% per iteration)")
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
    """Family 4: L1 filter pruning, configurations A and B side by side, best achievable Δ vs
    compression (levels 1–5), with Liu et al. (2019)'s better of fine-tuned/Scratch-B at level 1 (§5.4)."""
    techniques = _check_techniques(techniques)
    prunings = [p for p in ("structured_a", "structured_b") if len(R.select(agg, network=network, pruning=p))]
    if not prunings:
        raise ValueError(f"no structured rows for network {network!r}")
    with paper_style():
        fig, axes = plt.subplots(1, len(prunings), figsize=(4.0 * len(prunings), 3.1), squeeze=False)
        frames = []
        for ax, p in zip(axes[0], prunings):
            _, d = accuracy_vs_compression(agg, network=network, pruning=p, techniques=techniques, overlay=overlay,
                                           label=label, overlay_label=overlay_label, ax=ax,
                                           title=f"{_title(network)} — L1 filters, config {p[-1].upper()}")
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
    techniques = _check_techniques(techniques)

    def speedups(frame, base_frame):
        best = R.best_achievable(frame, by="val_median_with_flops")
        dense = base_frame.groupby("network")["flops"].mean()
        return best.assign(speedup=best["network"].map(dense) / best["flops"])

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
        ax.set_title(f"{_title(network)} — {schedule.replace('_', '-')}: FLOPs of the best network")
        ax.legend(frameon=False)
        fig.tight_layout()
    return fig, pd.concat([f.assign(source=s) for f, _, s in sources], ignore_index=True)


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
