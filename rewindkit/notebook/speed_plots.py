"""Notebook 08's second half: measured speed-ups beside the FLOP speed-ups (tables from
:mod:`rewindkit.engine.speedups`), in the convention of :mod:`rewindkit.plots`: each function returns
``(figure, data)`` with ``data`` the exact table drawn."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from ..engine.speedups import TASKS
from ..paper.style import paper_style

TASK_STYLES = {TASKS[0]: ("tab:blue", "o"), TASKS[1]: ("tab:orange", "s"), TASKS[2]: ("tab:green", "^")}
PANELS = {"structured": "structured: compacted network", "unstructured": "unstructured: sparse kernels"}


def _panel_rows(table: pd.DataFrame, network: str, kind: str, threads) -> pd.DataFrame:
    rows = table[(table.network == network) & (table.pruning.str.startswith(kind))]
    if threads is not None and rows.threads.notna().any():
        rows = rows[rows.threads == threads]
    return rows


def measured_vs_flops(table: pd.DataFrame, threads: int | None = 2, title: str = ""):
    """Speed-up over the dense network against compression: one row of panels per network, structured
    (compacted, configurations A and B) and unstructured (sparse kernels); the FLOP speed-up of the
    authors' convention dashed, each task measured solid, dense kernels on the masked weights grey."""
    networks = list(dict.fromkeys(table.network))
    drawn = []
    with paper_style():
        fig, axes = plt.subplots(len(networks), 2, figsize=(7.2, 2.6 * len(networks)), squeeze=False)
        for row, network in enumerate(networks):
            for col, kind in enumerate(PANELS):
                ax = axes[row][col]
                rows = _panel_rows(table, network, kind, threads)
                for config, part in rows.groupby("config", sort=True):
                    theory = part.drop_duplicates("level" if kind == "structured" else "density")
                    theory = theory[theory.variant != "masked"].sort_values("compression")
                    suffix = f" ({config[-1].upper()})" if kind == "structured" else ""
                    ax.plot(theory.compression, theory.flop_speedup, color="black", linestyle="--", linewidth=1,
                            marker="x" if config.endswith("b") else "+", label=f"FLOPs{suffix}")
                    for task, (color, marker) in TASK_STYLES.items():
                        measured = part[(part.task == task) & (part.variant != "masked")].sort_values("compression")
                        if measured.empty:
                            continue
                        ax.plot(measured.compression, measured.measured_speedup, color=color, marker=marker,
                                markersize=3, linewidth=1.2, linestyle="-" if not config.endswith("a") else ":",
                                label=f"{task}{suffix}")
                    masked = part[part.variant == "masked"]
                    ax.scatter(masked.compression, masked.measured_speedup, color="0.55", s=12, zorder=3,
                               label="masked, dense kernels" if config == rows.config.min() else None)
                    drawn.append(part.assign(panel=kind))
                ax.axhline(1.0, color="0.4", linewidth=0.6)
                if kind == "unstructured":
                    ax.set_xscale("log")
                ax.set_xlabel("compression (dense / kept weights)")
                ax.set_ylabel("speed-up over dense")
                ax.set_title(f"{network} — {PANELS[kind]}", fontsize=8)
                ax.legend(frameon=False, fontsize=5, ncol=2)
        if title:
            fig.suptitle(title, fontsize=8)
        fig.tight_layout()
    return fig, pd.concat(drawn, ignore_index=True) if drawn else pd.DataFrame()


def speedup_bars(table: pd.DataFrame, network: str, config: str, level: int | None = None,
                 density: float | None = None, threads: int | None = 2):
    """One pruned network's FLOP speed-up beside its measured speed-ups, per task: an L1-filter
    ``config`` at ``level`` (compacted and masked) or global magnitude pruning at ``density``
    (sparse kernels and masked). A density matches the measured one within 2% (a row holds its mask's
    own density: round(d·N) of N weights kept; the measured densities are at least 2× apart)."""
    if (level is None) == (density is None):
        raise ValueError(f"give a structured level or an unstructured density, not both or neither; got "
                         f"level={level}, density={density}")
    rows = table[(table.network == network) & (table.config == config)]
    if rows.empty:
        pairs = sorted(set(zip(table.network, table.config)))
        raise ValueError(f"no measurement of {network!r} {config!r}; measured: "
                         + ", ".join(f"{n} · {c}" for n, c in pairs))
    if threads is not None and rows.threads.notna().any():
        rows = rows[rows.threads == threads]
    chosen = rows[rows.level == level] if level is not None else rows[(rows.density - density).abs() <= 0.02 * density]
    if chosen.empty:
        what = (f"levels {sorted(int(v) for v in set(rows.level.dropna()))}" if level is not None
                else f"densities {sorted(set(rows.density.round(6)))}")
        raise ValueError(f"no measurement of {network} {config} at level={level} density={density} "
                         f"threads={threads}; measured there: {what}")
    rows = chosen
    bars = [{"task": task, "what": "FLOPs (theory)", "speedup": part.flop_speedup.iloc[0]}
            for task, part in rows.groupby("task", sort=False)]
    bars += [{"task": r.task, "what": r.variant, "speedup": r.measured_speedup} for r in rows.itertuples()]
    data = pd.DataFrame(bars)
    with paper_style():
        import seaborn as sns
        fig, ax = plt.subplots(figsize=(5.0, 2.6))
        sns.barplot(data=data, x="task", y="speedup", hue="what", ax=ax,
                    palette={"FLOPs (theory)": "0.2", "compacted": "tab:green", "sparse kernels": "tab:purple",
                             "masked": "0.7"})
        ax.axhline(1.0, color="0.4", linewidth=0.6)
        what = f"{config} level {level}" if level is not None else f"global magnitude, density {density:g}"
        ax.set_title(f"{network}, {what}" + (f", {threads} threads" if threads else ""), fontsize=8)
        ax.set_xlabel("")
        ax.set_ylabel("speed-up over dense")
        ax.legend(frameon=False, fontsize=6)
        fig.tight_layout()
    return fig, data
