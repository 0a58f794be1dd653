"""Notebook 12 · After the paper: what later work found about learning-rate rewinding, tested with
the same engine, seeds and aggregation as the paper's own experiments.

* **Schedules.** Asked on the authors' repository (issue #2) whether the findings hold beyond step
  decay, Renda answered that only step decay was tested and that he suspects they do; Le & Hua
  (ICLR 2021, "Network pruning that matters") find the large learning rate is the cause and a
  one-cycle schedule does as well. Here: the one-shot comparison under cosine, linear and one-cycle
  annealing (:mod:`rewindkit.core.schedules`) beside step decay.
* **Random masks.** Le & Hua: randomly pruned networks retrained with the right schedule can beat
  magnitude-pruned ones that are only fine-tuned; Gadhikar & Burkholz (ICLR 2024, "Masks, signs, and
  learning rate rewinding"): LR rewinding optimises even random masks well. Here: random masks with
  magnitude pruning's per-layer counts and uniform random masks (:class:`~rewindkit.core.pruning.RandomPruning`)
  retrained by each technique, beside magnitude masks.
* **Signs.** Gadhikar & Burkholz: LR rewinding's edge comes from flipping weight signs early; weight
  rewinding does as well once the trained signs are imposed on its start. Here: the fraction of
  surviving weights whose sign differs from the dense network's, and when the flips happen
  (:func:`rewindkit.engine.replay.replay`), and weight rewinding with the dense signs imposed
  (``signs="dense"``, :mod:`rewindkit.core.signs`).

Each part is one-shot grids of the notebook's profile, varied by a profile field
(``recipe.lr_schedule``, ``pruning``, ``signs``; :func:`grid_profiles`), which
:func:`rewindkit.experiments.run_grids` runs in one pool. Step decay's runs are notebook 03's (same
ids), as are the magnitude masks' at t = T. This module turns their results into the three tables.
"""

from __future__ import annotations

import pandas as pd

from ..core.masks import Mask
from ..core.pruning import geometric_density
from ..core.signs import sign_differences
from ..core.techniques import CORE_TECHNIQUES
from ..engine.profiles import Profile, get_profile
from ..engine.replay import replay, starting_point
from ..engine.runs import RunStore
from ..paper import reference as R
from ..platform.hardware import Hardware
from ..platform.storage import load_tensor_dict

SCHEDULES = ("step", "cosine", "linear", "one_cycle")
SCHEDULE_LABELS = {"step": "step decay (the paper)", "cosine": "cosine", "linear": "linear", "one_cycle": "one-cycle"}
MASKS = ("global_magnitude", "random_magnitude", "random_uniform")
MASK_LABELS = {"global_magnitude": "magnitude", "random_magnitude": "random, magnitude's layer counts",
               "random_uniform": "uniform random"}
SIGNS_GRID = "dense_signs"  # the grid of weight rewinding with the dense network's signs imposed
# 2.44×, 5.96× and 14.6×: where fine-tuning breaks on the laptop (notebook 03: −1.0, −4.1 and −31.3 points
# at t = T), leaving out 35.6×, where every technique has lost most of its accuracy
SCHEDULE_DENSITIES = tuple(geometric_density(k) for k in (4, 8, 12))
MASK_DENSITIES = tuple(geometric_density(k) for k in (8, 12))  # random masks and signs: the two where FT breaks
# "FT < WR ≈ LRR holds" under a schedule: each rewinding technique ≥ fine-tuning in at least this fraction
# of the (density, t) cells (the paper's ResNet-56: LRR ≥ FT in 86%), and the median |LRR − WR| gap
# smaller than the median LRR − FT gain
ORDERING_WINS = 0.75


def _densities(profile: Profile, wanted) -> tuple:
    """The profile's densities among ``wanted`` (all of the profile's if it has none of them: smoke)."""
    return tuple(d for d in profile.densities if d in wanted) or tuple(profile.densities)


def grid_profiles(profile: Profile, retrain_times=None) -> dict[str, Profile]:
    """Every grid of notebook 12, by label: the one-shot comparison (FT, WR, LRR; t in ``retrain_times``,
    default the profile's t grid, as notebook 03) at :data:`SCHEDULE_DENSITIES` under each of :data:`SCHEDULES` ("step":
    runs of notebook 03's grid); each of :data:`MASKS` at :data:`MASK_DENSITIES` with every technique at t = T (weight rewinding to
    initialisation, as IMP in Gadhikar & Burkholz; a whole schedule, as Le & Hua retrain); and weight
    rewinding at t = T with the dense network's final signs imposed (:data:`SIGNS_GRID`)."""
    T = profile.recipe.epochs
    if retrain_times is not None and (isinstance(retrain_times, (str, bytes)) or not hasattr(retrain_times, "__iter__")):
        raise ValueError(f"retrain_times must be a list of retraining times t in epochs, e.g. [2, {T}], or [] for "
                         f"the profile's t grid; got {retrain_times!r}")
    times = tuple(retrain_times or profile.retrain_times)
    if T not in times:  # the tables and the prose compare the schedules at t = T too
        raise ValueError(f"retrain_times must include T = {T} (the schedules are also compared at t = T); got "
                         f"{list(times)}")
    grids = {s: get_profile(profile, densities=_densities(profile, SCHEDULE_DENSITIES), techniques=CORE_TECHNIQUES,
                            retrain_times=times, **{"recipe.lr_schedule": s}) for s in SCHEDULES}
    at_T = dict(densities=_densities(profile, MASK_DENSITIES), retrain_times=(T,))
    grids.update({m: get_profile(profile, pruning=m, techniques=CORE_TECHNIQUES, **at_T) for m in MASKS})
    grids[SIGNS_GRID] = get_profile(profile, signs="dense", techniques=("weight_rewinding",), **at_T)
    return grids


def aggregates(grids: dict) -> dict[str, pd.DataFrame]:
    """Each grid's :func:`~rewindkit.paper.reference.aggregate` (Δ against its own dense runs' mean:
    each schedule against the dense network trained with it)."""
    return {label: R.aggregate(g.results, g.base) for label, g in grids.items()}


def cell(agg: pd.DataFrame, technique: str, density: float, t: float) -> str:
    """One cell's median Δ with its seed range, as prose quotes it: ``-8.58 [-10.71, -6.33]``."""
    row = agg[(agg.technique == technique) & ((agg.density - density).abs() < 1e-6) & (agg.retrain_time == t)].iloc[0]
    return f"{row.delta_median:+.2f} [{row.delta_min:+.2f}, {row.delta_max:+.2f}]"


# -- 1 · schedules ------------------------------------------------------------------------------------

def schedule_table(grids: dict, aggs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per schedule: its dense test accuracy (mean over seeds, %), the win rates of the equal-budget
    comparison (§5.2) over its (density, t) cells, the median over cells of LRR − FT and of
    |LRR − WR| (points), the median seed range (max − min over seeds) of a cell, and whether
    FT < WR ≈ LRR holds (:data:`ORDERING_WINS`)."""
    wins = R.win_rates({s: aggs[s] for s in SCHEDULES})
    rows = []
    for s in SCHEDULES:
        wide = aggs[s].pivot_table(index=["density", "retrain_time"], columns="technique", values="delta_median")
        gain = float((wide["lr_rewinding"] - wide["fine_tuning"]).median())
        gap = float((wide["lr_rewinding"] - wide["weight_rewinding"]).abs().median())
        spread = float((aggs[s]["delta_max"] - aggs[s]["delta_min"]).median())
        rows.append({"schedule": s, "dense test acc (%)": 100 * grids[s].base.test_acc.mean(), "cells": len(wide),
                     **wins.loc[s].to_dict(), "median LRR − FT": gain, "median |LRR − WR|": gap,
                     "median seed range": spread,
                     "FT < WR ≈ LRR": bool(wins.loc[s, "LRR ≥ FT"] >= ORDERING_WINS
                                           and wins.loc[s, "WR ≥ FT"] >= ORDERING_WINS and gap < gain)})
    return pd.DataFrame(rows)


def lr_traces(schedules: dict) -> pd.DataFrame:
    """Every schedule's LR at every iteration of the dense run (``schedules``: name → schedule) and
    the fine-tuning LR each ends at, in epochs."""
    return pd.concat([pd.DataFrame({"schedule": name, "epoch": [s / sch.steps_per_epoch for s in range(sch.total_steps)],
                                    "lr": sch.trace(0, sch.total_steps), "final_lr": sch.final_lr})
                      for name, sch in schedules.items()], ignore_index=True)


# -- 2 · random masks ---------------------------------------------------------------------------------

def mask_table(aggs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (density, technique) at t = T: the median Δ [min, max over seeds] of each of
    :data:`MASKS`, and the gap magnitude − random (points) for both random masks."""
    rows = []
    for density in sorted(aggs[MASKS[0]]["density"].unique(), reverse=True):
        for tech in CORE_TECHNIQUES:
            row = {"density": density, "compression": 1 / density, "technique": tech}
            for m in MASKS:
                cell = R.select(aggs[m], technique=tech, density=density).iloc[0]
                row.update({m: cell["delta_median"], f"{m} min": cell["delta_min"], f"{m} max": cell["delta_max"]})
            for m in MASKS[1:]:
                row[f"gap {m}"] = row[MASKS[0]] - row[m]
            rows.append(row)
    return pd.DataFrame(rows)


# -- 3 · signs ----------------------------------------------------------------------------------------

def _dense_final(out, grid, trial: int) -> dict:
    dense_id = grid.base.loc[grid.base.trial == trial, "run_id"].iloc[0]
    return load_tensor_dict(RunStore(out, create=False).dir(dense_id) / "final.pt", what=f"dense run {dense_id}")


def sign_table(out, grids: dict, hardware: Hardware) -> pd.DataFrame:
    """One row per run at t = T of the magnitude masks (FT, WR, LRR) and of weight rewinding with the
    dense signs imposed: the fraction of surviving weights whose sign differs from the dense
    network's final weights at the start of retraining and after it, and its Δ test accuracy."""
    rows = []
    for label in (MASKS[0], SIGNS_GRID):
        grid = grids[label]
        runs = R.run_deltas(grid.results, grid.base)
        for run in runs.itertuples():
            dense = _dense_final(out, grid, run.trial)
            start = starting_point(out, run.run_id, hardware)
            final = load_tensor_dict(RunStore(out, create=False).dir(run.run_id) / "final.pt", what="final weights")
            rows.append({"technique": run.technique, "signs": "dense" if label == SIGNS_GRID else "own",
                         "density": round(run.density, 6), "trial": run.trial, "delta": run.delta,
                         "start differs": sign_differences(start.model.state_dict(), dense, start.mask),
                         "final differs": sign_differences(final, dense, start.mask)})
    return pd.DataFrame(rows)


def sign_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (density, technique, signs): median [min, max] over seeds of the final sign differences (%)
    and of Δ, and the median start difference (%)."""
    g = table.groupby(["density", "technique", "signs"], sort=False)
    out = g.agg(start_differs=("start differs", "median"), final_differs=("final differs", "median"),
                final_min=("final differs", "min"), final_max=("final differs", "max"),
                delta=("delta", "median"), delta_min=("delta", "min"), delta_max=("delta", "max")).reset_index()
    for col in ("start_differs", "final_differs", "final_min", "final_max"):
        out[col] = 100 * out[col]
    return out.sort_values(["density", "technique", "signs"], ascending=[False, True, False]).reset_index(drop=True)


def gap_closed(summary: pd.DataFrame) -> pd.Series:
    """Per density, the share of weight rewinding's gap to LR rewinding (median Δ) that imposing the
    dense signs closes: 1 where it reaches LR rewinding, 0 where it changes nothing."""
    shares = {}
    for density, rows in summary.groupby("density", sort=False):
        r = rows.set_index(["technique", "signs"])["delta"]
        wr = r[("weight_rewinding", "own")]
        shares[density] = (r[("weight_rewinding", "dense")] - wr) / (r[("lr_rewinding", "own")] - wr)
    return pd.Series(shares, name="gap closed")


def sign_history(out, grid, hardware: Hardware, density: float | None = None) -> pd.DataFrame:
    """Each run of ``grid`` at ``density`` (default: its largest) replayed (:func:`~rewindkit.engine.replay.replay`, checked
    bit for bit against its stored final weights), recording after every retraining epoch the
    fraction of surviving weights whose sign differs from the dense network's final weights
    (``differs``; epoch 0 is the start) and the fraction whose sign changed during that epoch (``flipped``)."""
    rows = []
    nearest = (grid.results.density - (grid.results.density.max() if density is None else density)).abs()
    runs = grid.results[nearest == nearest.min()]  # a mask's density is the nominal one to within a weight
    for run in runs.sort_values(["technique", "trial"]).itertuples():
        dense = _dense_final(out, grid, run.trial)
        mask = Mask.load(RunStore(out, create=False).dir(run.run_id) / "mask.pt")
        seen: list[dict] = []  # the surviving weights after each epoch so far (the start first)

        def record(model, run=run, dense=dense, mask=mask, seen=seen):
            weights = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if n in mask}
            rows.append({"technique": run.technique, "density": round(run.density, 6), "trial": run.trial,
                         "retrain_epoch": len(seen),
                         "differs": sign_differences(weights, dense, mask),
                         "flipped": sign_differences(weights, seen[-1], mask) if seen else 0.0})
            seen.append(weights)

        replay(out, run.run_id, hardware, on_start=lambda model, _mask, record=record: record(model),
               on_epoch=lambda _record, model, _optimizer, record=record: record(model))
    return pd.DataFrame(rows)


def flip_share(history: pd.DataFrame, technique: str, epochs: int) -> float:
    """The share of ``technique``'s sign flips (summed over seeds and epochs) that happen in its first
    ``epochs`` retraining epochs."""
    rows = history[history.technique == technique]
    total = rows["flipped"].sum()
    return float(rows.loc[rows.retrain_epoch <= epochs, "flipped"].sum() / total) if total else float("nan")


def closing_tables(schedules: pd.DataFrame, masks: pd.DataFrame, signs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The closing note's three tables: win rates per schedule; random vs magnitude masks per
    technique (median Δ at t = T); sign-flip fractions per technique (%), with Δ."""
    wins = schedules[["schedule", "cells", "LRR ≥ FT", "WR ≥ FT", "LRR ≥ WR", "median LRR − FT",
                      "median |LRR − WR|", "median seed range", "FT < WR ≈ LRR"]]
    masks = masks[["compression", "technique", *MASKS, *(f"gap {m}" for m in MASKS[1:])]]
    signs = signs.assign(compression=1 / signs["density"])[["compression", "technique", "signs", "start_differs",
                                                            "final_differs", "final_min", "final_max", "delta"]]
    return {"win_rates": wins, "random_masks": masks, "sign_flips": signs}
