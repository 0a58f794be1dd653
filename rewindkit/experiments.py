"""The paper's experiments as grids of cached, resumable runs (paper §4): :func:`run_grid`.

A front over the engine (:mod:`rewindkit.engine`, one concept a module): ``profiles``, ``runs`` (a
run's identity and folder), ``runner`` (executing one run), ``grids`` (the paper's grids: what a
researcher edits), ``executors`` (local worker processes or Ray), ``costs`` and ``tables`` (the
results tables). This module owns :func:`run_grid`, :func:`run_grids`, :func:`dense_run` and
:class:`GridResult`; the
other public names are the engine modules', importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .engine.executors import EXECUTORS, run_specs, run_specs_ray  # noqa: F401  (public names, importable from here)
from .engine.grids import (dense_specs, grid_specs, iterative_chain_times, iterative_specs, needed_rewinds,  # noqa: F401
                    one_shot_specs, structured_specs)
from .engine.profiles import GRID_KINDS, Profile
from .engine.runner import execute, load_dataset, model_builder, rewind_checkpoint  # noqa: F401
from .engine.runs import RUNS_FORMAT, RunSpec, RunStore, provenance, results_dir, setup_from_profile  # noqa: F401
from .engine.tables import BASE_COLUMNS, EXTRA_COLUMNS, RESULT_COLUMNS, tables, write_tables  # noqa: F401
from .core.techniques import Technique


def dense_run(profile: Profile, seed: int, out) -> tuple[RunSpec, dict]:
    """Train (or load) the dense run of ``profile`` for ``seed``; return its spec and result."""
    spec = RunSpec(setup_from_profile(profile), seed)
    result = run_specs([spec], out, profile.hardware, progress=False)[spec.id]
    return spec, result


@dataclass
class GridResult:
    """What a grid produced: its pruned runs and dense runs as tidy tables, and where they live."""

    profile: Profile
    kind: str
    out: Path
    results: pd.DataFrame
    base: pd.DataFrame
    run_ids: list[str] = field(default_factory=list)


def run_grid(profile: Profile, kind: str, out=None, *, techniques=None, workers: int | None = None,
             progress: bool | None = None, log: Callable[[str], None] | None = None,
             log_epochs: bool = False, executor: str = "local", ray_address: str | None = None) -> GridResult:
    """Run (or load from the cache) one of the paper's grids and return its tidy tables.

    ``out`` defaults to ``runs/<profile name>`` (:func:`results_dir`). ``results.csv`` there always holds every finished
    pruned run of the folder, told apart by experiment (:func:`~rewindkit.engine.tables.write_tables`); the
    returned tables hold this grid's runs only. ``executor="ray"``
    submits the runs as Ray tasks (:func:`run_specs_ray`); the default runs them here, in
    ``workers`` processes.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown grid kind {kind!r}; valid kinds: {', '.join(GRID_KINDS)}")
    for tech in techniques or ():
        Technique.parse(tech)
    out = Path(out) if out is not None else results_dir(profile.name)
    specs = grid_specs(profile, kind, techniques)
    if executor == "ray":
        results = run_specs_ray(specs, out, profile.hardware, address=ray_address,
                                workers=profile.workers if workers is None else workers, log=log)
    else:
        workers = profile.workers if workers is None else workers
        results = run_specs(specs, out, profile.hardware, workers, progress, log, log_epochs)
    write_tables(out)
    return _grid_result(profile, kind, out, specs, results)


def _grid_result(profile: Profile, kind: str, out: Path, specs: list[RunSpec], results: dict) -> GridResult:
    """The tables of ``specs``' runs (this grid's only, whatever else the folder holds)."""
    ids = list(dict.fromkeys(s.id for s in specs))
    pruned, base = tables([results[i] for i in ids])
    return GridResult(profile, kind, out, pruned, base, ids)


def run_grids(profiles: Mapping[str, Profile], kind: str, out=None, *, techniques=None, workers: int | None = None,
              progress: bool | None = None, log: Callable[[str], None] | None = None,
              log_epochs: bool = False) -> dict[str, GridResult]:
    """Several grids as one: every run of each profile's ``kind`` grid in one pool of workers (the
    first profile's hardware and ``workers``), then each grid's :class:`GridResult` by its label —
    the runs, ids and tables :func:`run_grid` gives each, without one pool start and one idle tail
    per grid (notebook 12: a grid per LR schedule, random mask and sign rule). ``out`` defaults to
    the first profile's ``runs/<name>``."""
    if not profiles:
        raise ValueError("run_grids needs at least one profile")
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown grid kind {kind!r}; valid kinds: {', '.join(GRID_KINDS)}")
    for tech in techniques or ():
        Technique.parse(tech)
    first = next(iter(profiles.values()))
    out = Path(out) if out is not None else results_dir(first.name)
    specs = {label: grid_specs(profile, kind, techniques) for label, profile in profiles.items()}
    workers = first.workers if workers is None else workers
    results = run_specs([s for grid in specs.values() for s in grid], out, first.hardware, workers,
                        progress, log, log_epochs)
    write_tables(out)
    return {label: _grid_result(profiles[label], kind, out, grid, results) for label, grid in specs.items()}
