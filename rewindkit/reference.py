"""The authors' released results and the paper's aggregation rule (paper §4–5).

The package ships every run behind the paper's plots (1,180 dense, 22,590 pruned) as CSV; see
``reference_data/PROVENANCE.md``. The same functions aggregate the kit's own results, which use the
same columns (``rewindkit.experiments.RESULT_COLUMNS``):

* median over trials with min/max bars (the paper's ``MEDIAN_MAX``);
* accuracy as a difference Δ from the mean of all dense runs of that network, in percentage points
  (BLEU points for GNMT);
* "best achievable" curves: per density, the t with the highest *median validation* accuracy,
  reported with its *test* accuracy.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

CELL = ["network", "pruning", "schedule", "technique", "density", "retrain_time"]
CURVE = ["network", "pruning", "schedule", "technique", "density"]
T_BY_NETWORK = {"resnet20": 182, "resnet56": 182, "resnet110": 182, "resnet34": 90, "resnet50": 90, "gnmt": 5}
PAPER_NETWORKS = ("resnet20", "resnet56", "resnet110", "resnet34", "resnet50", "gnmt")


@lru_cache(maxsize=None)
def _read(name: str) -> pd.DataFrame:
    with resources.files("rewindkit.reference_data").joinpath(name).open("rb") as f:
        return pd.read_csv(f)


def load_base() -> pd.DataFrame:
    """The 1,180 dense runs: network, test_acc, val_acc, flops."""
    return _read("renda2020_base_runs.csv").copy()


def load_pruned() -> pd.DataFrame:
    """The 22,590 pruned-and-retrained runs, in the tidy schema shared with the kit's own results."""
    return _read("renda2020_pruned_runs.csv").copy()


def scale(network: str) -> float:
    """Multiplier from stored accuracy to plotted points: 100 for accuracy fractions, 1 for BLEU."""
    return 1.0 if network == "gnmt" else 100.0


def base_accuracy(base: pd.DataFrame) -> pd.Series:
    """Mean dense test accuracy per network (the paper's reference line)."""
    return base.groupby("network")["test_acc"].mean()


def aggregate(pruned: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """One row per grid cell (network, pruning, schedule, technique, density, t): median/min/max of
    test and validation accuracy over trials, Δ in points against the network's mean dense accuracy,
    compression ratio and median FLOPs."""
    if pruned.empty:
        raise ValueError("no pruned runs to aggregate")
    missing = set(pruned["network"]) - set(base["network"])
    if missing:
        raise ValueError(f"no dense runs for network(s) {sorted(missing)}; Δ accuracy needs them")
    ref = base_accuracy(base)
    df = pruned.copy()
    df["density"] = df["density"].round(6)
    grouped = df.groupby(CELL, sort=True)
    agg = grouped.agg(test_median=("test_acc", "median"), test_min=("test_acc", "min"),
                      test_max=("test_acc", "max"), val_median=("val_acc", "median"),
                      trials=("test_acc", "size"), flops=("flops", "median")).reset_index()
    # The FLOP figure selects t among the trials that have FLOPs only (the authors' flop_plot drops
    # runs without FLOPs before taking the median validation accuracy).
    with_flops = df[df["flops"].notna()].groupby(CELL, sort=True).agg(
        val_median_with_flops=("val_acc", "median")).reset_index()
    agg = agg.merge(with_flops, on=CELL, how="left")
    factor = agg["network"].map(scale)
    base_of = agg["network"].map(ref)
    for stat in ("median", "min", "max"):
        agg[f"delta_{stat}"] = (agg[f"test_{stat}"] - base_of) * factor
    agg["compression"] = 1.0 / agg["density"]
    return agg


def best_achievable(agg: pd.DataFrame, by: str = "val_median") -> pd.DataFrame:
    """Per curve point, the row whose t has the highest median validation accuracy (ties: smaller t,
    as the authors' ``idxmax``). Adds ``t_star``. ``by="val_median_with_flops"`` is the FLOP
    figure's rule: the median over the trials that have FLOPs, among cells that have any."""
    if by != "val_median":
        agg = agg[agg[by].notna()]
    ordered = agg.sort_values(CURVE + [by, "retrain_time"], ascending=[True] * 5 + [False, True])
    best = ordered.groupby(CURVE, sort=True).head(1).copy()
    best["t_star"] = best["retrain_time"]
    return best.sort_values(CURVE).reset_index(drop=True)


def force_all_times(available_times, T: float) -> dict[str, float]:
    """The fixed per-technique budgets of the paper's iterative comparison (§5.3): FT and LRR at T,
    weight rewinding at the largest grid t ≤ 0.9T, low-LR WR like WR."""
    times = sorted(set(float(t) for t in available_times))
    wr = max((t for t in times if t <= 0.9 * T + 1e-9), default=times[0])
    return {"fine_tuning": T, "lr_rewinding": T, "weight_rewinding": wr, "low_lr_weight_rewinding": wr,
            "reinitialization": T}


def at_fixed_times(agg: pd.DataFrame, times: dict[str, float]) -> pd.DataFrame:
    """Rows of ``agg`` whose t equals the technique's fixed budget in ``times``."""
    want = agg["technique"].map(times)
    return agg[(agg["retrain_time"] - want).abs() < 1e-9].reset_index(drop=True)


def fixed_budget_curves(agg: pd.DataFrame, T: float | None = None) -> pd.DataFrame:
    """The iterative rows at each technique's fixed budget (:func:`force_all_times` of the t values
    present; T defaults to the network's, else the largest t)."""
    if agg.empty:
        return agg
    T = T or T_BY_NETWORK.get(agg["network"].iloc[0]) or float(agg["retrain_time"].max())
    return at_fixed_times(agg, force_all_times(agg["retrain_time"].unique(), T))


def win_rate(agg: pd.DataFrame, a: str, b: str) -> float:
    """Fraction of (density, t) cells in which technique ``a``'s median test accuracy ≥ ``b``'s."""
    wide = agg.pivot_table(index=["network", "pruning", "schedule", "density", "retrain_time"],
                           columns="technique", values="test_median")
    cells = wide[[a, b]].dropna()
    return float((cells[a] >= cells[b]).mean()) if len(cells) else float("nan")


def select(df: pd.DataFrame, **filters) -> pd.DataFrame:
    """Rows matching every ``column=value`` (a list/tuple value matches any of its items)."""
    mask = pd.Series(True, index=df.index)
    for col, value in filters.items():
        if col not in df.columns:
            raise ValueError(f"unknown column {col!r}; columns are {', '.join(df.columns)}")
        mask &= df[col].isin(value) if isinstance(value, (list, tuple, set)) else df[col] == value
    return df[mask]


@lru_cache(maxsize=None)
def reference_aggregate() -> pd.DataFrame:
    """:func:`aggregate` of the released runs (cached)."""
    return aggregate(load_pruned(), load_base())


# External baselines plotted by the paper (paper.md §5.3–5.4), as Δ against their own bases.
STATE_OF_THE_ART = {
    "resnet56": {"label": "Carreira-Perpiñán & Idelbayev 2018",
                 "points": [(0.1497, -0.06), (0.10, 0.16), (0.05, -0.65), (0.03, -1.35)]},
    "resnet50": {"label": "He et al. 2018 (AMC)", "points": [(0.195, -0.02)]},
    "gnmt": {"label": "Zhu & Gupta 2017", "points": [(0.20, 0.09), (0.15, -0.25), (0.10, -0.58)]},
}
# Liu et al. 2019 ("Rethinking"): (base, fine-tuned, Scratch-B) accuracies; Δ of the better one vs base.
LIU_2019 = {
    ("resnet56", "structured_a"): (93.14, 92.96, 93.09), ("resnet56", "structured_b"): (93.14, 92.54, 93.05),
    ("resnet110", "structured_a"): (93.14, 93.25, 93.22), ("resnet110", "structured_b"): (93.14, 92.89, 93.60),
    ("resnet34", "structured_a"): (73.31, 72.77, 73.03), ("resnet34", "structured_b"): (73.31, 72.55, 72.91),
}


def liu_delta(network: str, pruning: str) -> float | None:
    vals = LIU_2019.get((network, pruning))
    return None if vals is None else max(vals[1], vals[2]) - vals[0]
