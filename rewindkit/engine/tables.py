"""The results tables: one row per run in the columns of the authors' released data."""

from __future__ import annotations

import hashlib

import pandas as pd

from ..core import metrics
from .runs import RunStore, canonical_json
from ..platform.storage import atomic_write_text, load_json

RESULT_COLUMNS = ["network", "pruning", "schedule", "technique", "density", "retrain_time", "trial",
                  "test_acc", "val_acc", "flops"]
BASE_COLUMNS = ["network", "test_acc", "val_acc", "flops"]
EXTRA_COLUMNS = ["epochs", "level", "run_id"]
# the folder-wide files only (write_tables): a results folder may hold several experiments (another LR,
# schedule, data or network in the same --out); these tell their rows apart
FOLDER_COLUMNS = ["experiment", "signs"]


def experiment_of(config: dict) -> str:
    """A run's experiment: a short hash of its setup (network, data, recipe, plug-ins: everything but
    the seed, technique, density and t), shared by every run of one grid."""
    return hashlib.sha256(canonical_json(config["setup"]).encode()).hexdigest()[:8]


def tables(results: list[dict], extra_columns=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split run results into the pruned-runs table and the base-runs table (with ``extra_columns``
    of their rows at the end)."""
    for r in results:  # the metric each network was evaluated by (labels of plots in a fresh process)
        row = r["row"]
        if "metric" in row:
            metrics.remember(row["network"], row["metric"], row["metric_label"], row["metric_scale"])
    pruned = [r["row"] for r in results if r["kind"] == "retrain"]
    base = [r["row"] for r in results if r["kind"] == "dense"]
    extra = list(extra_columns)
    pruned_df = pd.DataFrame(pruned, columns=RESULT_COLUMNS + EXTRA_COLUMNS + extra)
    base_df = pd.DataFrame(base, columns=BASE_COLUMNS + ["trial", "epochs", "run_id"] + extra[:1])
    for df in (pruned_df, base_df):  # result.json stores a missing number as null: NaN here, as ever
        for column in ("test_acc", "val_acc", "flops"):
            df[column] = pd.to_numeric(df[column])
    sort = ["network", "pruning", "schedule", "technique", "density", "retrain_time", "trial"]
    pruned_df = pruned_df.sort_values(sort, ascending=[True, True, True, True, False, True, True]).reset_index(drop=True)
    return pruned_df, base_df.sort_values(["network", "trial"]).reset_index(drop=True)


def write_tables(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Re)write ``results.csv`` and ``base_results.csv`` from every finished run in ``out``, each row
    with its :data:`FOLDER_COLUMNS`: the runs of several experiments in one folder stay apart."""
    store = RunStore(out)
    results = []
    for result in store.finished_results():
        config = load_json(store.dir(result["row"]["run_id"]) / "config.json", what="run config")
        results.append({**result, "row": {**result["row"], "experiment": experiment_of(config),
                                          "signs": config.get("signs")}})
    pruned, base = tables(results, FOLDER_COLUMNS)
    atomic_write_text(pruned.to_csv(index=False), store.root / "results.csv")
    atomic_write_text(base.to_csv(index=False), store.root / "base_results.csv")
    return pruned, base
