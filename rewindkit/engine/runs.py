"""A run's identity and its folder (paper §4): :class:`RunSpec` hashes the resolved configuration
(and, for a retraining run, the ids of the runs it starts from) into the run id; :class:`RunStore`
is a results folder holding ``<root>/runs/<id>/``; :func:`provenance` says where a run was computed.

A run folder holds:

``config.json``      the resolved configuration
``metrics.csv``      one row per epoch: epoch, step, lr, train_loss, val_acc, test_acc (validation and
                     test only in the last row where the profile has ``evaluate_every_epoch=False``)
``mask.pt``          name → bool tensor (retraining runs; plus ``__counted__`` where 1-D tensors are prunable)
``final.pt``         plain ``state_dict`` of the final weights (pruned entries exactly zero)
``final_optimizer.pt`` optimizer state at the end (the next iterative level keeps its momentum)
``rewind/step_N.pt`` weights + optimizer state at iteration N (dense runs: the rewind points T−t)
``checkpoint.pt``    the latest epoch boundary, while the run is unfinished
``result.json``      written last: the run's row of the results table plus provenance
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..platform.version import __version__

from ..platform import distributed, numerics, registry
from ..platform.hardware import Hardware
from .profiles import Profile
from ..core.optimizers import ADAM_UPDATE
from ..core.pruning import Pruning, pruning_from_dict
from ..core.schedules import StepSchedule
from ..platform.storage import atomic_write_json, load_json
from ..core.seeds import canonical_json, derive_seed  # canonical_json: importable from here, as before
from ..core.signs import check_signs
from ..core.techniques import RetrainPlan, Technique, dense_plan, epochs_trained, plan_retraining, pruned_run_data_seed

RUNS_FORMAT = 2  # 2: every retraining run draws its own data stream (config key data_seed)


def setup_from_profile(profile: Profile) -> dict:
    """The part of a profile that determines a run's result (hardware excluded); where it uses
    registered plug-ins, their names and code fingerprints too (:func:`registry.identity`), so a
    changed plug-in never reuses an old run."""
    setup = {"network": profile.network, "model_options": dict(profile.model_options),
             "dataset": profile.dataset, "dataset_options": dict(profile.dataset_options),
             "n_train": profile.n_train, "n_eval": profile.n_eval, "recipe": profile.recipe.to_dict()}
    if profile.recipe.optimizer == "adam":  # Adam runs made with another update are not reused
        setup["adam_update"] = ADAM_UPDATE
    if not profile.evaluate_every_epoch:  # metrics.csv then holds the final metrics only (left out at
        setup["evaluate_every_epoch"] = False  # the default, so the ids of earlier runs stay as they were)
    used = registry.identity(profile.network, profile.dataset, profile.recipe.lr_schedule)
    if used:
        setup["plugins"] = used
    return setup


def uses_plugins(spec: RunSpec) -> bool:
    """Whether a run needs plug-ins registered in this process (worker processes do not have them):
    a network, dataset, metric or schedule of the user's. (A filter configuration of the user's
    travels with the run: :class:`~rewindkit.core.pruning.FilterPruning` holds its values.)"""
    return bool(spec.setup.get("plugins"))


@dataclass(frozen=True)
class RunSpec:
    """One run: the dense run (``technique=None``) or a retraining run of a technique.

    Its id hashes :meth:`config`; the keys of that dict are frozen (``"schedule"`` holds
    ``pruning_schedule``, the authors' column name) so that the ids of existing runs never change."""

    setup: dict
    seed: int
    technique: str | None = None  # None: the dense run
    retrain_time: float | None = None
    pruning: Pruning | None = None  # what this run prunes (pruning.GlobalMagnitude or pruning.FilterPruning)
    pruning_schedule: str | None = None  # "one_shot" or "iterative" (§3.1)
    parent: str | None = None  # run whose final weights (and mask, optimizer state) this one starts from
    dense: str | None = None  # the dense run holding the rewind checkpoints
    level: int = 0
    data_seed: int | None = None  # seed of the training batches; None: the dense run's seed, or a fresh
    #                               stream derived from a retraining run's identity (resolved_data_seed)
    signs: str | None = None  # "dense": the dense run's final signs imposed on the retraining start (core.signs)

    def __post_init__(self):
        if self.technique is not None:
            Technique.parse(self.technique)  # the one check of technique names, listing the valid ones
            if self.pruning is None:
                raise ValueError(f"a {self.technique} run needs a pruning description")
        if check_signs(self.signs) is not None and self.technique is None:
            raise ValueError("signs are imposed on a retraining run's start; the dense run has none")

    @property
    def is_dense(self) -> bool:
        return self.technique is None

    @property
    def resolved_data_seed(self) -> int:
        """The seed of this run's batches: ``data_seed`` if given; else the trial seed for a dense run
        and, for a retraining run, a stream of its own (:func:`techniques.retraining_data_seed`)."""
        if self.data_seed is not None:
            return self.data_seed
        if self.is_dense:
            return self.seed
        seed = pruned_run_data_seed(self.seed, self.technique, self.retrain_time, self.pruning, self.pruning_schedule,
                                    self.level)
        return seed if self.signs is None else derive_seed(seed, "signs", self.signs)  # signs: a stream of its own

    def config(self) -> dict:
        cfg = {"format": RUNS_FORMAT, "kind": "dense" if self.is_dense else "retrain",
               "setup": json.loads(canonical_json(self.setup)), "seed": self.seed}
        if not self.is_dense:
            cfg.update(technique=self.technique, retrain_time=self.retrain_time, pruning=self.pruning.to_dict(),
                       schedule=self.pruning_schedule, parent=self.parent, dense=self.dense, level=self.level,
                       data_seed=self.resolved_data_seed)
            if self.signs is not None:  # left out otherwise: the ids of every earlier run stay as they were
                cfg.update(signs=self.signs)
        elif self.data_seed not in (None, self.seed):
            cfg.update(data_seed=self.data_seed)
        return cfg

    @property
    def id(self) -> str:
        return hashlib.sha256(canonical_json(self.config()).encode()).hexdigest()[:16]

    def plan(self, schedule: StepSchedule, fine_tune_lr: float | None = None) -> RetrainPlan:
        """What this run trains (:mod:`rewindkit.techniques`): the dense plan or its technique's."""
        if self.is_dense:
            return dense_plan(schedule)
        return plan_retraining(self.technique, self.retrain_time, schedule, fine_tune_lr)

    @property
    def epochs(self) -> float:
        """Epochs this run trains: T for a dense run, t or T + t by its technique (:func:`epochs_trained`)."""
        T = float(self.setup["recipe"]["epochs"])
        return T if self.is_dense else epochs_trained(self.technique, self.retrain_time, T)

    @property
    def dependencies(self) -> tuple[str, ...]:
        return tuple(d for d in dict.fromkeys((self.parent, self.dense)) if d is not None)

    def label(self) -> str:
        if self.is_dense:
            return f"dense seed={self.seed}"
        return (f"{self.pruning_schedule} {self.pruning.describe()} {self.technique} t={self.retrain_time:g} "
                f"seed={self.seed}" + (f" signs={self.signs}" if self.signs else ""))

    @classmethod
    def from_config(cls, cfg: dict) -> RunSpec:
        if cfg.get("kind") == "dense":
            return cls(cfg["setup"], cfg["seed"], data_seed=cfg.get("data_seed"))
        return cls(cfg["setup"], cfg["seed"], cfg["technique"], cfg["retrain_time"], pruning_from_dict(cfg["pruning"]),
                   cfg["schedule"], cfg["parent"], cfg["dense"], cfg["level"], cfg.get("data_seed"), cfg.get("signs"))


def results_dir(profile_name: str, root=None) -> Path:
    """Where a profile's grids keep their runs unless told otherwise: ``<root>/runs/<profile>`` (root:
    the current folder; the notebooks' is :func:`rewindkit.notebook.workspace.out_root`)."""
    return Path(root if root is not None else ".") / "runs" / profile_name


class RunStore:
    """A results folder: ``<root>/rewindkit.json`` (format marker) and ``<root>/runs/<id>/``."""

    def __init__(self, root, *, create: bool = True):
        """``create=False`` only reads: no marker is written (a folder may not exist yet)."""
        self.root = Path(root)
        marker = self.root / "rewindkit.json"
        if marker.exists():
            info = load_json(marker, what="results-folder marker")
            if info.get("format") != RUNS_FORMAT:
                raise ValueError(f"results folder {self.root} was written by rewindkit {info.get('version')} "
                                 f"(run format {info.get('format')}); this rewindkit ({__version__}) reads run "
                                 f"format {RUNS_FORMAT}. Use a new --out folder or delete the old one.")
        elif create:
            atomic_write_json({"format": RUNS_FORMAT, "version": __version__}, marker)
        distributed.barrier()

    def dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def is_done(self, run_id: str) -> bool:
        return (self.dir(run_id) / "result.json").exists()

    def result(self, run_id: str) -> dict:
        return load_json(self.dir(run_id) / "result.json", what=f"result of run {run_id}")

    def finished_results(self) -> list[dict]:
        runs = self.root / "runs"
        return [load_json(p, what="run result") for p in sorted(runs.glob("*/result.json"))] if runs.exists() else []


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:
        return None


def provenance(hardware: Hardware) -> dict:
    device = str(hardware.device)
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name()})"
    return {"rewindkit": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": device, "bf16": hardware.bf16, "channels_last": hardware.channels_last,
            "git_commit": _git_commit(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({"cpu_numerics": numerics.cpu_numerics()} if device == "cpu" else {})}


