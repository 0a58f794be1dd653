"""The results tables: one row per run in the columns of the authors' released data."""

from __future__ import annotations

import pandas as pd

from ..core import metrics
from .runs import RunStore
from ..platform.storage import atomic_write_text

RESULT_COLUMNS = ["network", "pruning", "schedule", "technique", "density", "retrain_time", "trial",
                  "test_acc", "val_acc", "flops"]
BASE_COLUMNS = ["network", "test_acc", "val_acc", "flops"]
EXTRA_COLUMNS = ["epochs", "level", "run_id"]


def tables(results: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split run results into the pruned-runs table and the base-runs table."""
    for r in results:  # the metric each network was evaluated by (labels of plots in a fresh process)
        row = r["row"]
        if "metric" in row:
            metrics.remember(row["network"], row["metric"], row["metric_label"], row["metric_scale"])
    pruned = [r["row"] for r in results if r["kind"] == "retrain"]
    base = [r["row"] for r in results if r["kind"] == "dense"]
    pruned_df = pd.DataFrame(pruned, columns=RESULT_COLUMNS + EXTRA_COLUMNS)
    base_df = pd.DataFrame(base, columns=BASE_COLUMNS + ["trial", "epochs", "run_id"])
    for df in (pruned_df, base_df):  # result.json stores a missing number as null: NaN here, as ever
        for column in ("test_acc", "val_acc", "flops"):
            df[column] = pd.to_numeric(df[column])
    sort = ["network", "pruning", "schedule", "technique", "density", "retrain_time", "trial"]
    pruned_df = pruned_df.sort_values(sort, ascending=[True, True, True, True, False, True, True]).reset_index(drop=True)
    return pruned_df, base_df.sort_values(["network", "trial"]).reset_index(drop=True)


def write_tables(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Re)write ``results.csv`` and ``base_results.csv`` from every finished run in ``out``."""
    store = RunStore(out)
    pruned, base = tables(store.finished_results())
    atomic_write_text(pruned.to_csv(index=False), store.root / "results.csv")
    atomic_write_text(base.to_csv(index=False), store.root / "base_results.csv")
    return pruned, base
