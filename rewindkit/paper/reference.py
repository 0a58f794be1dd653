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

from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources

import pandas as pd

from ..core.metrics import metric_of_network
from ..core.pruning import geometric_density
from ..core.techniques import iterative_budgets

CELL = ["network", "pruning", "schedule", "technique", "density", "retrain_time"]
CURVE = ["network", "pruning", "schedule", "technique", "density"]
T_BY_NETWORK = {"resnet20": 182, "resnet56": 182, "resnet110": 182, "resnet34": 90, "resnet50": 90, "gnmt": 5}
PAPER_NETWORKS = ("resnet20", "resnet56", "resnet110", "resnet34", "resnet50", "gnmt")


@lru_cache(maxsize=None)
def _read(name: str) -> pd.DataFrame:
    with resources.files("rewindkit.paper.reference_data").joinpath(name).open("rb") as f:
        return pd.read_csv(f)


def load_base() -> pd.DataFrame:
    """The 1,180 dense runs: network, test_acc, val_acc, flops."""
    return _read("renda2020_base_runs.csv").copy()


def load_pruned() -> pd.DataFrame:
    """The 22,590 pruned-and-retrained runs, in the tidy schema shared with the kit's own results."""
    return _read("renda2020_pruned_runs.csv").copy()


def scale(network: str) -> float:
    """Multiplier from stored accuracy to plotted points: 100 for accuracy fractions, 1 for BLEU
    (the network's metric, :mod:`rewindkit.core.metrics`)."""
    return metric_of_network(network).scale


def base_accuracy(base: pd.DataFrame) -> pd.Series:
    """Mean dense test accuracy per network (the paper's reference line)."""
    return base.groupby("network")["test_acc"].mean()


def _check_base(pruned: pd.DataFrame, base: pd.DataFrame) -> None:
    if pruned.empty:
        raise ValueError("no pruned runs to aggregate")
    # a results folder's tables (results.csv, base_results.csv) may hold several experiments, and
    # runs with imposed signs beside the plain ones: their runs are not trials of one cell
    for frame, what in ((pruned, "pruned runs"), (base, "dense runs")):
        for column, how in (("experiment", "df[df.experiment == ...]"), ("signs", "df[df.signs.isna()] or == 'dense'")):
            if column in frame.columns and frame[column].nunique(dropna=False) > 1:
                values = ", ".join(sorted("none" if pd.isna(v) else str(v) for v in frame[column].unique()))
                raise ValueError(f"the {what} hold several values of {column!r} ({values}): runs that differ in it "
                                 f"are not trials of one cell; select one first ({how})")
    missing = set(pruned["network"]) - set(base["network"])
    if missing:
        raise ValueError(f"no dense runs for network(s) {sorted(missing)}; Δ accuracy needs them")


def _delta(accuracy: pd.Series, network: pd.Series, base: pd.DataFrame) -> pd.Series:
    """Δ in points of each accuracy against its network's mean dense accuracy (paper §4)."""
    return (accuracy - network.map(base_accuracy(base))) * network.map(scale)


def run_deltas(pruned: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """The runs themselves, one row each, with ``delta``: the run's test accuracy as Δ in points
    against the network's mean dense accuracy (the per-run value :func:`aggregate` takes medians of)."""
    _check_base(pruned, base)
    return pruned.assign(delta=_delta(pruned["test_acc"], pruned["network"], base))


def aggregate(pruned: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """One row per grid cell (network, pruning, schedule, technique, density, t): median/min/max of
    test and validation accuracy over trials, Δ in points against the network's mean dense accuracy,
    compression ratio and median FLOPs."""
    _check_base(pruned, base)
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
    for stat in ("median", "min", "max"):
        agg[f"delta_{stat}"] = _delta(agg[f"test_{stat}"], agg["network"], base)
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


# The four densities of the paper's ResNet-56 accuracy-vs-retraining-time figure (§4): 0.8^{3, 7, 8, 10}
FIGURE_DENSITIES = tuple(geometric_density(k) for k in (3, 7, 8, 10))


def force_all_times(available_times, T: float) -> dict[str, float]:
    """The fixed per-technique budgets of the paper's iterative comparison (§5.3) for the t the data
    have (:func:`rewindkit.core.techniques.iterative_budgets`)."""
    return {tech: float(t) for tech, t in iterative_budgets(T, available_times).items()}


def at_fixed_times(agg: pd.DataFrame, times: dict[str, float]) -> pd.DataFrame:
    """Rows of ``agg`` whose t equals the technique's fixed budget in ``times``."""
    want = agg["technique"].map(times)
    return agg[(agg["retrain_time"] - want).abs() < 1e-9].reset_index(drop=True)


def fixed_budget_curves(agg: pd.DataFrame, T: float | None = None) -> pd.DataFrame:
    """The iterative rows at each technique's fixed budget (:func:`force_all_times` of the t values
    present; T defaults to the paper's for its networks, :func:`training_epochs`)."""
    if agg.empty:
        return agg
    T = training_epochs(agg["network"].iloc[0], T)
    return at_fixed_times(agg, force_all_times(agg["retrain_time"].unique(), T))


def training_epochs(network: str, T: float | None = None) -> float:
    """T, the network's training epochs: as given, else the paper's (:data:`T_BY_NETWORK`). A network the
    paper did not train needs it given: the largest t of a grid is T only when the grid goes that far,
    and the safe zone and the fixed budgets follow T."""
    if T is not None:
        return T
    if network in T_BY_NETWORK:
        return T_BY_NETWORK[network]
    raise ValueError(f"network {network!r} is not one of the paper's ({', '.join(T_BY_NETWORK)}): pass T=, its "
                     f"training epochs (profile.recipe.epochs), which the safe zone [0.25T, 0.9T] and the fixed "
                     f"budgets follow")


def win_rate(agg: pd.DataFrame, a: str, b: str) -> float:
    """Fraction of (density, t) cells in which technique ``a``'s median test accuracy ≥ ``b``'s
    (NaN where no cell has both)."""
    wide = agg.pivot_table(index=["network", "pruning", "schedule", "density", "retrain_time"],
                           columns="technique", values="test_median")
    if a not in wide.columns or b not in wide.columns:
        return float("nan")
    cells = wide[[a, b]].dropna()
    return float((cells[a] >= cells[b]).mean()) if len(cells) else float("nan")


# The paper's equal-budget comparisons (§5.2): column name → (technique a, technique b) of a ≥ b.
WIN_RATES = {"LRR ≥ FT": ("lr_rewinding", "fine_tuning"), "WR ≥ FT": ("weight_rewinding", "fine_tuning"),
             "LRR ≥ WR": ("lr_rewinding", "weight_rewinding")}


def _win_rates(agg: pd.DataFrame) -> dict[str, float]:
    return {name: win_rate(agg, a, b) for name, (a, b) in WIN_RATES.items()}


def win_rates(agg: pd.DataFrame | Mapping[str, pd.DataFrame], by: Sequence[str] | None = None) -> pd.DataFrame:
    """The :data:`WIN_RATES` table (§5.2): per column, the fraction of equal-budget (density, t) cells
    where the first technique's median test accuracy ≥ the second's.

    One row for ``agg``; with ``by``, one row per group of those columns (which lead the table);
    given a mapping ``{label: agg}``, one row per label, indexed by ``source``."""
    if isinstance(agg, Mapping):
        return pd.DataFrame([_win_rates(a) for a in agg.values()],
                            index=pd.Index(list(agg), name="source"))
    if not by:
        return pd.DataFrame([_win_rates(agg)])
    by = list(by)
    return pd.DataFrame([{**dict(zip(by, key)), **_win_rates(group)}
                         for key, group in agg.groupby(by, sort=True)], columns=by + list(WIN_RATES))


def select(df: pd.DataFrame, **filters) -> pd.DataFrame:
    """Rows matching every ``column=value`` (a list/tuple value matches any of its items)."""
    mask = pd.Series(True, index=df.index)
    for col, value in filters.items():
        if col not in df.columns:
            raise ValueError(f"unknown column {col!r}; columns are {', '.join(df.columns)}")
        mask &= df[col].isin(value) if isinstance(value, (list, tuple, set)) else df[col] == value
    return df[mask]


def lookup(frame: pd.DataFrame, value: str = "delta_median", index: str = "technique", **filters) -> pd.Series:
    """``value`` of the rows matching ``filters`` (as :func:`select`), indexed by ``index``, e.g. the
    median Δ of each technique in one cell. Raises if ``index`` repeats among those rows."""
    rows = select(frame, **filters)
    if rows[index].duplicated().any():
        raise ValueError(f"{index!r} is not unique among the rows for {filters}; add filters to pick one row each")
    return rows.set_index(index)[value]


def run_ids(results: pd.DataFrame, *, key: str = "technique", **filters) -> dict:
    """The run id of each ``key`` value among the results rows matching ``filters`` (as
    :func:`select`; density matched at the 6 digits :func:`aggregate` keeps), e.g. the runs of one
    cell and seed, to load their networks."""
    return lookup(results.assign(density=results["density"].round(6)), value="run_id", index=key, **filters).to_dict()


def densities(frame: pd.DataFrame, **filters) -> list[float]:
    """The distinct densities of the rows matching ``filters``, largest (least pruned) first."""
    return sorted((float(d) for d in select(frame, **filters)["density"].unique()), reverse=True)


def pivot(frame: pd.DataFrame, index: str | list[str] = "compression", columns: str = "technique",
          values: str | list[str] = "delta_median", decimals: int | None = 2) -> pd.DataFrame:
    """A wide table: one row per ``index`` value, one column per ``columns`` value (by default the
    median Δ of each technique per compression ratio), rounded to ``decimals`` for display. Cells
    with several rows (e.g. trials) show their mean."""
    wide = frame.pivot_table(index=index, columns=columns, values=values)
    return wide if decimals is None else wide.round(decimals)


def largest_compression(best: pd.DataFrame, tolerance: float = 1.0) -> pd.Series:
    """Per technique, the largest compression ratio whose median Δ stays within ``tolerance`` points
    of the dense network (``best``: a :func:`best_achievable` table, §5.1); NaN if none does."""
    within = best[best["delta_median"] >= -tolerance]
    techniques = list(dict.fromkeys(best["technique"]))
    return within.groupby("technique")["compression"].max().reindex(techniques)


def level_one(agg: pd.DataFrame) -> pd.DataFrame:
    """Best achievable median Δ of each technique at every structured configuration's first level
    (its largest density, Li et al.'s configuration, the level Liu et al. report; §5.4): one row per
    (pruning, density)."""
    best = best_achievable(agg)
    first = best[best["density"] == best.groupby("pruning")["density"].transform("max")]
    return pivot(first, index=["pruning", "density"])


def speedups(frame: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``speedup``: the network's mean dense FLOPs ÷ the row's FLOPs (Appendix F)."""
    dense = base.groupby("network")["flops"].mean()
    return frame.assign(speedup=frame["network"].map(dense) / frame["flops"])


def coverage(agg: pd.DataFrame) -> pd.DataFrame:
    """Per (network, pruning, schedule): how many grid cells and how many runs ``agg`` holds."""
    return agg.groupby(["network", "pruning", "schedule"]).agg(cells=("trials", "size"), runs=("trials", "sum"))


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
