"""Running a list of runs, dependencies first: here in worker processes (:func:`run_specs`) or as
Ray tasks (:func:`run_specs_ray`). Both skip finished runs and run :func:`runner.execute`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path

import torch

from ..platform import distributed
from .costs import duration, eta_seconds
from .grids import needed_rewinds
from ..platform.cores import describe_workers, resolve_workers
from ..platform.hardware import RUN_THREADS, Hardware, check_device, own_stream, run_threads
from .runner import check_grid_pruning, execute
from .runs import RunSpec, RunStore, uses_plugins
from ..core.training import progress_enabled


def _print_line(line: str) -> None:
    print(line, flush=True)


def _worker_init(hardware: Hardware) -> None:
    """Set up a worker process (a local pool process or a Ray task): :data:`~rewindkit.platform.hardware.RUN_THREADS`
    CPU threads per run on CPU, as everywhere (:func:`~rewindkit.platform.hardware.run_threads`), no progress bars."""
    if str(hardware.device) == "cpu":
        torch.set_num_threads(RUN_THREADS)
    os.environ["REWINDKIT_PROGRESS"] = "0"


def _pending(specs: list[RunSpec], out) -> tuple[dict[str, RunSpec], dict[str, set[int]], dict[str, dict], list[RunSpec]]:
    """The shared prologue of both executors: the unique runs, the checkpoints each dense run saves,
    the results already finished in ``out``, and the runs still to execute (dependencies first)."""
    store = RunStore(out, create=False)  # read only: a run writes the folder's marker once it passed its checks
    unique = {s.id: s for s in specs}
    need = needed_rewinds(list(unique.values()))
    results = {i: store.result(i) for i in unique if store.is_done(i)}
    pending = [s for i, s in unique.items() if i not in results]
    missing = {d for s in pending for d in s.dependencies if d not in unique and not store.is_done(d)}
    if missing:
        raise ValueError(f"runs depend on unknown unfinished runs: {sorted(missing)}")
    return unique, need, results, pending


def execute_packed(spec: RunSpec, out, hardware: Hardware, rewinds=(), log=None) -> dict:
    """:func:`runner.execute` for one of ``hardware.packing`` runs sharing a device from threads of one
    process: on CUDA each run issues its kernels (and replays its own CUDA graph) on a stream of its
    own, so packed runs overlap on the GPU; nothing a run computes depends on what it is packed with
    (same kernels, same data, same order: bitwise the result it has alone)."""
    with own_stream(hardware):
        return execute(spec, out, hardware, rewinds, log)


def concurrency(workers: int | str, hardware: Hardware, plugin_runs: bool) -> tuple[int, int]:
    """(worker processes, runs packed as threads) for a grid (``workers="auto"``: every available core,
    capped by memory, :func:`~rewindkit.platform.cores.resolve_workers`): under torchrun every rank runs every
    run, data-parallel (1, 1); worker processes or packing, not both; runs of plug-ins registered in
    this process cannot go to worker processes (they would not know the plug-ins), so their workers
    become threads — unless ``torch.compile`` is on, which is not thread-safe (why :class:`Hardware`
    refuses it with packing): then one run at a time."""
    packing = hardware.packing
    workers = resolve_workers(workers, hardware.device, packing)
    if distributed.is_distributed():
        return 1, 1
    if workers > 1 and packing > 1:
        raise ValueError(f"choose worker processes (workers={workers}) or runs packed on one device "
                         f"(packing={packing}), not both; set one of them to 1")
    if workers > 1 and plugin_runs:
        return 1, (1 if hardware.compile else workers)
    return workers, packing


def run_specs(specs: list[RunSpec], out, hardware: Hardware = Hardware(), workers: int | str = 1,
              progress: bool | None = None, log: Callable[[str], None] | None = None,
              log_epochs: bool = False) -> dict[str, dict]:
    """Execute ``specs`` (deduplicated, dependencies first) and return ``{run id: result}``.

    Every run trains with one CPU thread (:func:`~rewindkit.platform.hardware.run_threads`), so its result does
    not depend on how the grid is executed. With ``workers > 1`` independent runs go to that many
    processes. With
    ``hardware.packing = K > 1`` K runs train at once in this process, each on its own thread and
    (on CUDA) its own stream: many small runs on one GPU (:func:`execute_packed`). Under torchrun
    every rank executes every run together, data-parallel, so ``workers`` and packing are ignored.
    """
    plugin_runs = any(uses_plugins(s) for s in specs)
    requested = workers
    workers, packing = concurrency(workers, hardware, plugin_runs)  # checked before anything is written
    check_grid_pruning(specs)
    unique, need, results, pending = _pending(specs, out)
    if pending:  # finished runs are read on any machine; training needs the device
        check_device(hardware)
    if log is not None and pending:
        at_once = f"{packing} runs packed on {hardware.device}" if packing > 1 else describe_workers(requested, hardware.device)
        log(f"{len(pending)} runs to train, {min(len(pending), max(workers, packing))} at once: {at_once}")
    if log is not None and pending and hardware.compile and plugin_runs:
        log("plug-in runs with compile=True train one at a time here (worker processes do not know the "
            "plug-ins, and torch.compile is not thread-safe)")
    bar = None
    if progress_enabled(progress) and pending:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(unique), initial=len(results), desc="runs")
    done_count = len(results)
    started, epochs_done, epochs_left = time.perf_counter(), 0.0, sum(s.epochs for s in pending)

    def finished(spec, result):
        nonlocal done_count, epochs_done, epochs_left
        results[spec.id] = result
        done_count += 1
        epochs_done, epochs_left = epochs_done + spec.epochs, epochs_left - spec.epochs
        if bar is not None:
            bar.update(1)
        if log is not None:
            r = result["row"]
            eta = eta_seconds(time.perf_counter() - started, epochs_done, epochs_left)
            log(f"[{done_count}/{len(unique)}] {spec.label()}: test {r['test_acc']:.4f} "
                f"val {r['val_acc']:.4f} ({result['seconds']:.1f} s)"
                + ("" if eta is None else f"; ETA {duration(eta)} for {epochs_left:g} epochs left"))

    epoch_log = log if log_epochs else None
    if workers <= 1 and packing <= 1:
        with run_threads(hardware):
            for spec in pending:
                finished(spec, execute(spec, out, hardware, need.get(spec.id, ()), epoch_log))
    elif packing > 1:
        with run_threads(hardware), ThreadPoolExecutor(packing, thread_name_prefix="rewindkit-run") as pool:
            _schedule(pool, packing, pending, results, finished,
                      lambda spec: pool.submit(execute_packed, spec, out, hardware, need.get(spec.id, ()), epoch_log))
    else:
        import multiprocessing
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init, initargs=(hardware,)) as pool:
            _schedule(pool, workers * 2, pending, results, finished,
                      lambda spec: pool.submit(execute, spec, out, hardware, need.get(spec.id, ()),
                                               _print_line if log_epochs else None))
    if bar is not None:
        bar.close()
    return results


def _schedule(pool, in_flight: int, pending: list[RunSpec], results: dict, finished, submit) -> None:
    """Submit each pending run once the runs it starts from have finished, at most ``in_flight`` at
    a time, and hand each result to ``finished`` as it arrives."""
    waiting, running = list(pending), {}
    while waiting or running:
        for spec in [s for s in waiting if all(d in results for d in s.dependencies)]:
            if len(running) >= in_flight:
                break
            waiting.remove(spec)
            running[submit(spec)] = spec
        if not running:
            raise RuntimeError("dependency cycle among runs")  # cannot happen for grid specs
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in done:
            finished(running.pop(fut), fut.result())


def _ray_task(spec: RunSpec, out, hardware: Hardware, rewinds, *dependencies) -> dict:
    """One run as a Ray task; ``dependencies`` are the results of the runs it starts from (Ray
    schedules it after them)."""
    _worker_init(hardware)
    return execute_packed(spec, out, hardware, rewinds)


def run_specs_ray(specs: list[RunSpec], out, hardware: Hardware = Hardware(), *, address: str | None = None,
                  workers: int | str | None = None, log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Execute ``specs`` as Ray tasks: one GPU each where there are GPUs (``hardware.packing`` is
    not used: it packs runs as threads of one process), one CPU slot otherwise.

    A retraining run waits for its dense run and level k for level k−1 (their results are passed
    as task arguments). Without ``address`` a local Ray instance with ``workers`` CPU slots is
    started; with one (e.g. ``"auto"`` or ``"ray://host:10001"``) the existing cluster is used and
    ``out`` must be on a file system every node sees. A worker lost mid-run costs only that run:
    Ray retries the task, which resumes from the run's last checkpoint, and rerunning the grid fills
    any remaining gaps.
    """
    unique, need, results, pending = _pending(specs, out)
    if not pending:
        return results
    if any(uses_plugins(s) for s in pending):
        raise ValueError("these runs use plug-ins registered in this process (rewindkit.plugins), which Ray's "
                         "workers do not have; run them with the local executor (executor='local')")
    try:
        import ray
    except ImportError:
        raise RuntimeError("executor 'ray' needs Ray, which is not installed: pip install 'rewindkit[ray]' "
                           "(or choose executor 'local')") from None
    started_here = not ray.is_initialized()
    if started_here:
        options = {"address": address, "include_dashboard": False, "log_to_driver": False,
                   "configure_logging": False}
        if address is None:
            # CPU slots: every available core by default
            options["num_cpus"] = resolve_workers("auto" if workers is None else workers)
        ray.init(**{k: v for k, v in options.items() if v is not None or k == "address"})
    try:
        # one GPU per task, whatever the packing: K processes on one GPU time-slice it, which gave
        # 0.91–0.94× one process's epochs per GPU-hour on an H200 (benchmarks/RESULTS.md); packing
        # pays only inside one process (threads and streams, the local executor)
        gpus = 1 if hardware.is_cuda else 0
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


EXECUTORS = ("local", "ray")
