"""The paper's experiments as grids of cached, resumable runs (paper §4).

A run is described by a :class:`RunSpec`; its id hashes the resolved configuration (and, for a
retraining run, the ids of the runs it starts from), and it lives in ``<out>/runs/<id>/``:

``config.json``      the resolved configuration
``metrics.csv``      one row per epoch: epoch, step, lr, train_loss, val_acc, test_acc
``mask.pt``          name → bool tensor (retraining runs)
``final.pt``         plain ``state_dict`` of the final weights (pruned entries exactly zero)
``final_optimizer.pt`` optimizer state at the end (the next iterative level keeps its momentum)
``rewind/step_N.pt`` weights + optimizer state at iteration N (dense runs: the rewind points T−t)
``checkpoint.pt``    the latest epoch boundary, while the run is unfinished
``result.json``      written last: the run's row of the results table plus provenance

Every file is written atomically, so a run killed at any moment resumes from its last checkpoint
and a finished run (one with ``result.json``) is never recomputed.

Grids:

* **one-shot** — per seed one dense run of T epochs saving every rewind point needed; then for each
  density × technique × t, prune the dense final weights once and retrain (§4);
* **iterative** — prune 20% of the remaining weights, retrain with a technique at its chain's t (its
  fixed budget, and every t of ``iterative_retrain_grid``), repeat; weight rewinding rewinds every
  level to the same iteration T−t of the dense run (§3.1);
* **structured** — L1 filter configurations at levels 1–5, one-shot (§3.2).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from . import __version__, data, distributed, models, numerics, pruning
from .flops import forward_flops
from .masks import Mask
from .profiles import GRID_KINDS, Profile
from .storage import (CorruptFileError, atomic_torch_save, atomic_write_json, atomic_write_text, load_json,
                      load_tensor_dict, load_torch)
from .techniques import Technique, load_state, plan_retraining, retraining_data_seed, start_retraining
from .training import (EpochRecord, Hardware, Recipe, TrainState, init_model, make_optimizer, prepare_model,
                       progress_enabled, snapshot, train_steps)

RUNS_FORMAT = 2  # 2: every retraining run draws its own data stream (config key data_seed)
RESULT_COLUMNS = ["network", "pruning", "schedule", "technique", "density", "retrain_time", "trial",
                  "test_acc", "val_acc", "flops"]
BASE_COLUMNS = ["network", "test_acc", "val_acc", "flops"]
EXTRA_COLUMNS = ["epochs", "level", "run_id"]


# --------------------------------------------------------------------------------------------------
# Run descriptions
# --------------------------------------------------------------------------------------------------

def setup_from_profile(profile: Profile) -> dict:
    """The part of a profile that determines a run's result (hardware excluded)."""
    return {"network": profile.network, "model_options": dict(profile.model_options),
            "dataset": profile.dataset, "dataset_options": dict(profile.dataset_options),
            "n_train": profile.n_train, "n_eval": profile.n_eval, "recipe": profile.recipe.to_dict()}


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=list)


@dataclass(frozen=True)
class RunSpec:
    setup: dict
    seed: int
    technique: str | None = None  # None: the dense run
    retrain_time: float | None = None
    pruning: dict | None = None  # {"method": "global_magnitude", "density": d} or {"method": "l1_filters", ...}
    schedule: str | None = None  # "one_shot" or "iterative"
    parent: str | None = None  # run whose final weights (and mask, optimizer state) this one starts from
    dense: str | None = None  # the dense run holding the rewind checkpoints
    level: int = 0
    data_seed: int | None = None  # seed of the training batches; None: the dense run's seed, or a fresh
    #                               stream derived from a retraining run's identity (resolved_data_seed)

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
        return retraining_data_seed(self.seed, self.technique, self.retrain_time, _canonical(self.pruning),
                                    self.schedule, self.level)

    def config(self) -> dict:
        cfg = {"format": RUNS_FORMAT, "kind": "dense" if self.is_dense else "retrain",
               "setup": json.loads(_canonical(self.setup)), "seed": self.seed}
        if not self.is_dense:
            cfg.update(technique=self.technique, retrain_time=self.retrain_time, pruning=self.pruning,
                       schedule=self.schedule, parent=self.parent, dense=self.dense, level=self.level,
                       data_seed=self.resolved_data_seed)
        elif self.data_seed not in (None, self.seed):
            cfg.update(data_seed=self.data_seed)
        return cfg

    @property
    def id(self) -> str:
        return hashlib.sha256(_canonical(self.config()).encode()).hexdigest()[:16]

    @property
    def epochs(self) -> float:
        """Epochs this run trains: T for a dense run, T + t for reinitialization, t otherwise."""
        T = float(self.setup["recipe"]["epochs"])
        if self.is_dense:
            return T
        return T + float(self.retrain_time) if self.technique == "reinitialization" else float(self.retrain_time)

    @property
    def dependencies(self) -> tuple[str, ...]:
        return tuple(d for d in dict.fromkeys((self.parent, self.dense)) if d is not None)

    def label(self) -> str:
        if self.is_dense:
            return f"dense seed={self.seed}"
        p = self.pruning
        what = f"density={p['density']:.4g}" if p["method"] == "global_magnitude" else f"{p['config']} L{p['level']}"
        return f"{self.schedule} {what} {self.technique} t={self.retrain_time:g} seed={self.seed}"

    @classmethod
    def from_config(cls, cfg: dict) -> RunSpec:
        if cfg.get("kind") == "dense":
            return cls(cfg["setup"], cfg["seed"], data_seed=cfg.get("data_seed"))
        return cls(cfg["setup"], cfg["seed"], cfg["technique"], cfg["retrain_time"], cfg["pruning"],
                   cfg["schedule"], cfg["parent"], cfg["dense"], cfg["level"], cfg.get("data_seed"))


def pruning_label(p: dict | None) -> str:
    if p is None or p["method"] == "global_magnitude":
        return "unstructured"
    return f"structured_{p['config'].rsplit('_', 1)[-1]}"


# --------------------------------------------------------------------------------------------------
# The run store
# --------------------------------------------------------------------------------------------------

class RunStore:
    """A results folder: ``<root>/rewindkit.json`` (format marker) and ``<root>/runs/<id>/``."""

    def __init__(self, root):
        self.root = Path(root)
        marker = self.root / "rewindkit.json"
        if marker.exists():
            info = load_json(marker, what="results-folder marker")
            if info.get("format") != RUNS_FORMAT:
                raise ValueError(f"results folder {self.root} was written by rewindkit {info.get('version')} "
                                 f"(run format {info.get('format')}); this rewindkit ({__version__}) reads run "
                                 f"format {RUNS_FORMAT}. Use a new --out folder or delete the old one.")
        else:
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


# --------------------------------------------------------------------------------------------------
# Executing one run
# --------------------------------------------------------------------------------------------------

_DATA_CACHE: dict[str, data.Dataset] = {}


def load_dataset(setup: dict, device) -> data.Dataset:
    key = _canonical([setup["dataset"], setup["dataset_options"], setup["n_train"], setup["n_eval"], str(device),
                      str(data.data_dir())])
    if key not in _DATA_CACHE:
        ds = data.load(setup["dataset"], **setup["dataset_options"])
        if setup["n_train"] is not None or setup["n_eval"] is not None:
            ds = ds.subset(setup["n_train"], setup["n_eval"])
        _DATA_CACHE[key] = ds.to(device)
    return _DATA_CACHE[key]


def model_builder(setup: dict, ds: data.Dataset) -> Callable[[], torch.nn.Module]:
    def build():
        return models.create(setup["network"], num_classes=ds.num_classes, in_channels=ds.input_shape[0],
                             **setup["model_options"])
    return build


def _write_metrics(rows: list[dict], path: Path) -> None:
    atomic_write_text(pd.DataFrame(rows, columns=["epoch", "step", "lr", "train_loss", "val_acc", "test_acc"])
                      .to_csv(index=False), path)


def _prune(model, spec: RunSpec, parent_mask: Mask | None) -> Mask:
    p = spec.pruning
    if p["method"] == "global_magnitude":
        return pruning.global_magnitude(model, p["density"], parent_mask)
    if p["method"] == "l1_filters":
        return pruning.l1_filters(model, p["config"], p["level"])
    raise ValueError(f"unknown pruning method {p['method']!r}; valid: global_magnitude, l1_filters")


def rewind_checkpoint(store: RunStore, dense_id: str, step: int, hardware: Hardware) -> TrainState:
    """The dense run's state at iteration ``step``; regenerated deterministically by replaying from
    the nearest earlier saved checkpoint if the finished dense run did not save it."""
    folder = store.dir(dense_id) / "rewind"
    path = folder / f"step_{step}.pt"
    if not path.exists():
        saved = sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.pt"))
        earlier = [s for s in saved if s <= step]
        if not earlier:
            raise CorruptFileError(f"dense run {dense_id} has no checkpoint at or before iteration {step} in {folder}")
        spec = RunSpec.from_config(load_json(store.dir(dense_id) / "config.json", what="run config"))
        ds = load_dataset(spec.setup, hardware.device)
        recipe = Recipe(**spec.setup["recipe"])
        start = TrainState.from_dict(load_torch(folder / f"step_{earlier[-1]}.pt", what="rewind checkpoint"))
        model = prepare_model(model_builder(spec.setup, ds)(), hardware)
        optimizer = make_optimizer(model, recipe, hardware)
        load_state(model, optimizer, start)
        train_steps(model, optimizer, ds, recipe.schedule(ds.n_train), start.step, step, seed=spec.resolved_data_seed,
                    batch_size=recipe.batch_size, hardware=hardware, save_at={step}, progress=False,
                    evaluate_every_epoch=False,
                    on_save=lambda s: atomic_torch_save(s.to_dict(), path))
        distributed.barrier()  # rank 0 wrote the checkpoint; every rank reads it next
    return TrainState.from_dict(load_torch(path, what="rewind checkpoint"))


def execute(spec: RunSpec, root, hardware: Hardware = Hardware(), rewind_steps=(), log=None) -> dict:
    """Run ``spec`` to completion in ``root`` (resuming if it was interrupted); return its result."""
    store = RunStore(root)
    run_id = spec.id
    folder = store.dir(run_id)
    if store.is_done(run_id):
        return store.result(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    config = spec.config()
    if (folder / "config.json").exists():
        if load_json(folder / "config.json", what="run config") != json.loads(_canonical(config)):
            raise CorruptFileError(f"{folder / 'config.json'} does not match run {run_id}; delete the folder")
    else:
        atomic_write_json(config, folder / "config.json")

    ds = load_dataset(spec.setup, hardware.device)
    build = model_builder(spec.setup, ds)
    recipe = Recipe(**spec.setup["recipe"])
    schedule = recipe.schedule(ds.n_train)
    started = time.time()

    mask = None
    if spec.is_dense:
        start, stop, lr_schedule = 0, schedule.total_steps, schedule
        save_at = set(rewind_steps) | {0}
    else:
        parent = store.dir(spec.parent)
        parent_final = load_tensor_dict(parent / "final.pt", what=f"final weights of run {spec.parent}")
        parent_mask = Mask.load(parent / "mask.pt") if (parent / "mask.pt").exists() else None
        probe = build()
        probe.load_state_dict(parent_final)
        mask = _prune(probe, spec, parent_mask)
        mask.save(folder / "mask.pt")
        plan = plan_retraining(spec.technique, spec.retrain_time, schedule, recipe.fine_tune_lr)
        start, stop, lr_schedule = plan.start_step, plan.stop_step, plan.lr_schedule
        save_at = set()

    checkpoint_path = folder / "checkpoint.pt"
    rows: list[dict] = []
    if checkpoint_path.exists():
        ckpt = load_torch(checkpoint_path, what=f"checkpoint of run {run_id}")
        model = prepare_model(build(), hardware)
        optimizer = make_optimizer(model, recipe, hardware)
        load_state(model, optimizer, TrainState.from_dict(ckpt))  # the one path to a state (kernel flags, layouts)
        start, rows = int(ckpt["step"]), list(ckpt["rows"])
    elif spec.is_dense:
        model = prepare_model(init_model(build, spec.seed), hardware)
        optimizer = make_optimizer(model, recipe, hardware)
    else:
        final = TrainState(parent_final, load_torch(parent / "final_optimizer.pt", what="optimizer state"),
                           schedule.total_steps)
        rewind = (rewind_checkpoint(store, spec.dense, plan.rewind_step, hardware)
                  if plan.rewind_step is not None else None)
        model, optimizer = start_retraining(build, recipe, plan, final=final, rewind=rewind, seed=spec.seed,
                                            hardware=hardware)

    def on_save(state: TrainState):
        atomic_torch_save(state.to_dict(), folder / "rewind" / f"step_{state.step}.pt")

    def on_epoch(record: EpochRecord, model, optimizer):
        rows.append({"epoch": record.epoch, "step": record.step, "lr": record.lr, "train_loss": record.train_loss,
                     "val_acc": record.val_acc, "test_acc": record.test_acc})
        _write_metrics(rows, folder / "metrics.csv")
        if record.step < stop:
            atomic_torch_save({**snapshot(model, optimizer, record.step).to_dict(), "rows": rows}, checkpoint_path)

    train_steps(model, optimizer, ds, lr_schedule, start, stop, seed=spec.resolved_data_seed,
                batch_size=recipe.batch_size,
                mask=mask, hardware=hardware, save_at=save_at, on_save=on_save, on_epoch=on_epoch,
                log=log, progress=False, description=spec.label())

    final = snapshot(model, optimizer, stop)
    atomic_torch_save(final.model, folder / "final.pt")
    atomic_torch_save(final.optimizer, folder / "final_optimizer.pt")
    last = rows[-1] if rows else {"test_acc": float("nan"), "val_acc": float("nan")}
    spe = schedule.steps_per_epoch
    row = {"network": spec.setup["network"], "test_acc": last["test_acc"], "val_acc": last["val_acc"],
           "flops": forward_flops(model, ds.input_shape, mask), "epochs": (stop - (0 if spec.is_dense else
                                                                                   plan.start_step)) / spe,
           "level": spec.level, "run_id": run_id, "trial": spec.seed}
    if not spec.is_dense:
        row.update(pruning=pruning_label(spec.pruning), schedule=spec.schedule, technique=spec.technique,
                   density=mask.density(), retrain_time=spec.retrain_time)
    result = {"kind": config["kind"], "row": row, "seconds": time.time() - started,
              "provenance": provenance(hardware)}
    atomic_write_json(result, folder / "result.json")
    if distributed.is_primary():
        checkpoint_path.unlink(missing_ok=True)
    distributed.barrier()  # later runs read this run's files on every rank
    return result


# --------------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------------

def dense_specs(profile: Profile) -> list[RunSpec]:
    setup = setup_from_profile(profile)
    return [RunSpec(setup, seed) for seed in profile.seeds]


def _retrain_times(profile: Profile, technique: str, times) -> tuple:
    """The t grid of ``technique``: every t, except that a profile may run reinitialization (which
    trains T + t epochs) once per cell, at the smallest t — the laptop's documented economy."""
    if technique == "reinitialization" and not profile.reinit_every_t:
        return (min(times),)
    return tuple(times)


def one_shot_specs(profile: Profile, techniques=None) -> list[RunSpec]:
    techniques = tuple(techniques or profile.techniques)
    specs = []
    for dense in dense_specs(profile):
        specs.append(dense)
        for density in profile.densities:
            for tech in techniques:
                for t in _retrain_times(profile, tech, profile.retrain_times):
                    specs.append(RunSpec(dense.setup, dense.seed, tech, t,
                                         {"method": "global_magnitude", "density": density},
                                         "one_shot", dense.id, dense.id, 1))
    return specs


def iterative_chain_times(profile: Profile) -> dict[str, tuple]:
    """The t of every iterative chain per technique: its fixed budget (the paper's force_all curves,
    §5.3) plus, where the profile sets ``iterative_retrain_grid``, every t of that grid (the
    authors' best-validated iterative curves pick among them, as for one-shot)."""
    return {tech: tuple(sorted({float(t), *map(float, profile.iterative_retrain_grid)}))
            for tech, t in profile.iterative_retrain_times.items()}


def iterative_specs(profile: Profile) -> list[RunSpec]:
    """One chain of ``iterative_levels`` levels per seed, technique and t; a chain keeps its t at
    every level, as the authors' ``iterative.py`` does."""
    specs = []
    for dense in dense_specs(profile):
        specs.append(dense)
        for tech, times in iterative_chain_times(profile).items():
            for t in times:
                parent = dense.id
                for level in range(1, profile.iterative_levels + 1):
                    spec = RunSpec(dense.setup, dense.seed, tech, _plain(t),
                                   {"method": "global_magnitude", "density": round(0.8**level, 10)},
                                   "iterative", parent, dense.id, level)
                    specs.append(spec)
                    parent = spec.id
    return specs


def _plain(t: float):
    """t as the profile writes it (4, not 4.0), so run ids do not depend on how t was computed."""
    return int(t) if float(t).is_integer() else t


def structured_specs(profile: Profile, techniques=None) -> list[RunSpec]:
    techniques = tuple(techniques or profile.structured_techniques or profile.techniques)
    times = profile.structured_retrain_times or profile.retrain_times
    specs = []
    for dense in dense_specs(profile):
        specs.append(dense)
        for config in profile.structured_configs:
            for level in profile.structured_levels:
                for tech in techniques:
                    for t in _retrain_times(profile, tech, times):
                        specs.append(RunSpec(dense.setup, dense.seed, tech, t,
                                             {"method": "l1_filters", "config": config, "level": level},
                                             "one_shot", dense.id, dense.id, level))
    return specs


def grid_specs(profile: Profile, kind: str, techniques=None) -> list[RunSpec]:
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown grid kind {kind!r}; valid kinds: {', '.join(GRID_KINDS)}")
    if kind == "iterative":
        return iterative_specs(profile)
    return (one_shot_specs if kind == "one_shot" else structured_specs)(profile, techniques)


def needed_rewind_steps(specs: list[RunSpec]) -> dict[str, set[int]]:
    """For each dense run, the iterations T−t its retraining runs will rewind to."""
    need: dict[str, set[int]] = {}
    cache = {}
    for spec in specs:
        if spec.is_dense or spec.technique not in ("weight_rewinding", "low_lr_weight_rewinding"):
            continue
        key = _canonical(spec.setup)
        if key not in cache:
            n_train = load_dataset(spec.setup, "cpu").n_train
            cache[key] = Recipe(**spec.setup["recipe"]).schedule(n_train)
        plan = plan_retraining(spec.technique, spec.retrain_time, cache[key])
        need.setdefault(spec.dense, set()).add(plan.rewind_step)
    return need


def _print_line(line: str) -> None:
    print(line, flush=True)


def _worker_init(threads: int | None):
    if threads:
        torch.set_num_threads(threads)
    os.environ["REWINDKIT_PROGRESS"] = "0"


def run_specs(specs: list[RunSpec], out, hardware: Hardware = Hardware(), workers: int = 1,
              progress: bool | None = None, log: Callable[[str], None] | None = None,
              log_epochs: bool = False) -> dict[str, dict]:
    """Execute ``specs`` (deduplicated, dependencies first) and return ``{run id: result}``.

    With ``workers > 1`` independent runs go to that many processes (one CPU thread each on CPU,
    which on 2 cores gives about 1.5× the throughput of one 2-thread process). Under torchrun every
    rank executes every run together, data-parallel, so ``workers`` is ignored.
    """
    if distributed.is_distributed():
        workers = 1
    store = RunStore(out)
    unique = {s.id: s for s in specs}
    need = needed_rewind_steps(list(unique.values()))
    results = {i: store.result(i) for i in unique if store.is_done(i)}
    pending = [s for i, s in unique.items() if i not in results]
    missing = {d for s in pending for d in s.dependencies if d not in unique and not store.is_done(d)}
    if missing:
        raise ValueError(f"runs depend on unknown unfinished runs: {sorted(missing)}")
    bar = None
    if progress_enabled(progress) and pending:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(unique), initial=len(results), desc="runs")
    done_count = len(results)

    def finished(spec, result):
        nonlocal done_count
        results[spec.id] = result
        done_count += 1
        if bar is not None:
            bar.update(1)
        if log is not None:
            r = result["row"]
            log(f"[{done_count}/{len(unique)}] {spec.label()}: test {r['test_acc']:.4f} "
                f"val {r['val_acc']:.4f} ({result['seconds']:.1f} s)")

    epoch_log = log if log_epochs else None
    if workers <= 1:
        for spec in pending:
            finished(spec, execute(spec, out, hardware, need.get(spec.id, ()), epoch_log))
    else:
        import multiprocessing
        threads = 1 if str(hardware.device) == "cpu" else None
        waiting = list(pending)
        running = {}
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init, initargs=(threads,)) as pool:
            while waiting or running:
                for spec in [s for s in waiting if all(d in results for d in s.dependencies)]:
                    if len(running) >= workers * 2:
                        break
                    waiting.remove(spec)
                    running[pool.submit(execute, spec, out, hardware, need.get(spec.id, ()),
                                        _print_line if log_epochs else None)] = spec
                if not running:
                    raise RuntimeError("dependency cycle among runs")  # cannot happen for grid specs
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    spec = running.pop(fut)
                    finished(spec, fut.result())
    if bar is not None:
        bar.close()
    return results


def metrics(out, run_id: str) -> pd.DataFrame:
    """The per-epoch metrics of a run (``metrics.csv``)."""
    path = Path(out) / "runs" / run_id / "metrics.csv"
    if not path.exists():
        raise FileNotFoundError(f"no metrics for run {run_id} in {out}")
    return pd.read_csv(path)


def dense_run(profile: Profile, seed: int, out) -> tuple[RunSpec, dict]:
    """Train (or load) the dense run of ``profile`` for ``seed``; return its spec and result."""
    spec = RunSpec(setup_from_profile(profile), seed)
    result = run_specs([spec], out, profile.hardware, progress=False)[spec.id]
    return spec, result


def load_model(profile: Profile, out, run_id: str, device="cpu") -> torch.nn.Module:
    """Rebuild a finished run's network with its final weights (a plain state_dict, no pickles)."""
    setup = setup_from_profile(profile)
    model = model_builder(setup, load_dataset(setup, device))()
    model.load_state_dict(load_tensor_dict(Path(out) / "runs" / run_id / "final.pt", what="final weights"))
    return model.to(device)


def _ray_task(spec: RunSpec, out, hardware: Hardware, rewind_steps, *dependencies) -> dict:
    """One run as a Ray task; ``dependencies`` are the results of the runs it starts from (Ray
    schedules it after them)."""
    if str(hardware.device) == "cpu":
        torch.set_num_threads(1)
    os.environ["REWINDKIT_PROGRESS"] = "0"
    return execute(spec, out, hardware, rewind_steps)


def run_specs_ray(specs: list[RunSpec], out, hardware: Hardware = Hardware(), *, address: str | None = None,
                  workers: int | None = None, log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Execute ``specs`` as Ray tasks: one GPU each where there are GPUs, one CPU slot otherwise.

    A retraining run waits for its dense run and level k for level k−1 (their results are passed
    as task arguments). Without ``address`` a local Ray instance with ``workers`` CPU slots is
    started; with one (e.g. ``"auto"`` or ``"ray://host:10001"``) the existing cluster is used and
    ``out`` must be on a file system every node sees. A worker lost mid-run costs only that run:
    Ray retries the task, which resumes from the run's last checkpoint, and rerunning the grid fills
    any remaining gaps.
    """
    import ray

    store = RunStore(out)
    unique = {s.id: s for s in specs}
    need = needed_rewind_steps(list(unique.values()))
    results = {i: store.result(i) for i in unique if store.is_done(i)}
    pending = [s for i, s in unique.items() if i not in results]
    if not pending:
        return results
    started_here = not ray.is_initialized()
    if started_here:
        options = {"address": address, "include_dashboard": False, "log_to_driver": False,
                   "configure_logging": False}
        if address is None:
            options["num_cpus"] = workers or os.cpu_count()
        ray.init(**{k: v for k, v in options.items() if v is not None or k == "address"})
    try:
        gpus = 1 if str(hardware.device).startswith("cuda") else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=3)(_ray_task)
        refs = {}
        for spec in pending:  # grid specs list dependencies first
            deps = [refs[d] for d in spec.dependencies if d in refs]
            refs[spec.id] = task.remote(spec, str(Path(out).resolve()), hardware, sorted(need.get(spec.id, ())), *deps)
        ids = {ref: run_id for run_id, ref in refs.items()}
        remaining = list(refs.values())
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            run_id = ids[done[0]]
            results[run_id] = ray.get(done[0])
            if log is not None:
                r = results[run_id]["row"]
                log(f"[{len(results)}/{len(unique)}] {unique[run_id].label()}: test {r['test_acc']:.4f}")
    finally:
        if started_here:
            ray.shutdown()
    return results


@dataclass
class GridResult:
    """What a grid produced: its pruned runs and dense runs as tidy tables, and where they live."""

    profile: Profile
    kind: str
    out: Path
    results: pd.DataFrame
    base: pd.DataFrame
    run_ids: list[str] = field(default_factory=list)


def tables(results: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split run results into the pruned-runs table and the base-runs table."""
    pruned = [r["row"] for r in results if r["kind"] == "retrain"]
    base = [r["row"] for r in results if r["kind"] == "dense"]
    pruned_df = pd.DataFrame(pruned, columns=RESULT_COLUMNS + EXTRA_COLUMNS)
    base_df = pd.DataFrame(base, columns=BASE_COLUMNS + ["trial", "epochs", "run_id"])
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


EXECUTORS = ("local", "ray")


def run_grid(profile: Profile, kind: str, out=None, *, techniques=None, workers: int | None = None,
             progress: bool | None = None, log: Callable[[str], None] | None = None,
             log_epochs: bool = False, executor: str = "local", ray_address: str | None = None) -> GridResult:
    """Run (or load from the cache) one of the paper's grids and return its tidy tables.

    ``out`` defaults to ``runs/<profile name>``. ``results.csv`` there always holds every finished
    pruned run of the folder; the returned tables hold this grid's runs only. ``executor="ray"``
    submits the runs as Ray tasks (:func:`run_specs_ray`); the default runs them here, in
    ``workers`` processes.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown grid kind {kind!r}; valid kinds: {', '.join(GRID_KINDS)}")
    for tech in techniques or ():
        Technique.parse(tech)
    out = Path(out if out is not None else Path("runs") / profile.name)
    specs = grid_specs(profile, kind, techniques)
    if executor == "ray":
        results = run_specs_ray(specs, out, profile.hardware, address=ray_address,
                                workers=workers or profile.workers, log=log)
    else:
        results = run_specs(specs, out, profile.hardware, workers or profile.workers, progress, log, log_epochs)
    write_tables(out)
    ids = list(dict.fromkeys(s.id for s in specs))
    pruned, base = tables([results[i] for i in ids])
    return GridResult(profile, kind, out, pruned, base, ids)
