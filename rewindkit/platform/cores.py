"""How many runs a CPU grid trains at once: every core this process may use, as many as memory holds.

Each run trains with one CPU thread (:data:`rewindkit.platform.hardware.RUN_THREADS`), so its result
does not depend on how many run beside it: ``workers="auto"`` (the profiles' default) is one worker
process per core available to the process (``os.sched_getaffinity``: a container's or ``taskset``'s
limit, not the machine's core count), capped by the memory available now (``MemAvailable``) at
:data:`WORKER_MEMORY` per worker. On a GPU, or with runs packed on one device, it is one process.
"""

from __future__ import annotations

import os

# What one worker process holds: Python, torch and one laptop-scale run (its data, network and
# optimizer). Measured: 360–370 MB resident per laptop-profile worker (AMD EPYC, torch 2.13.0+cpu,
# `ps` during `make reproduce`, 2026-12-04); rounded up so that a tight machine keeps headroom.
WORKER_MEMORY = 512 * 2**20


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available to new processes now (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def auto_workers(cores: int | None = None, memory: int | None = None, per_worker: int = WORKER_MEMORY) -> int:
    """One worker per available core, at most as many as ``memory`` holds at ``per_worker`` each,
    at least one."""
    cores = available_cores() if cores is None else cores
    memory = available_memory() if memory is None else memory
    fit = cores if memory is None else memory // per_worker
    return max(1, min(cores, fit))


MAX_WORKERS = 1024  # far beyond any one machine's cores; what the process pool can hold


def check_workers(workers) -> int | str:
    """``workers`` as a profile holds it: a whole number in 1 … :data:`MAX_WORKERS`, or ``"auto"``."""
    if workers == "auto" or (isinstance(workers, int) and not isinstance(workers, bool) and 1 <= workers <= MAX_WORKERS):
        return workers
    raise ValueError(f"workers must be a whole number from 1 to {MAX_WORKERS} or 'auto' (every available core); "
                     f"got {workers!r}")


def resolve_workers(workers, device: str = "cpu", packing: int = 1) -> int:
    """The number of worker processes ``workers`` means here: itself, or for ``"auto"`` every
    available core capped by memory (:func:`auto_workers`) on a CPU, and one process on a GPU or
    when runs are packed on one device (the packing is the concurrency there)."""
    check_workers(workers)
    if workers != "auto":
        return workers
    return 1 if str(device).startswith("cuda") or packing > 1 else auto_workers()


def describe_workers(workers, device: str = "cpu", packing: int = 1) -> str:
    """How many runs go at once and why, in words (``--plan`` and the running grid say it)."""
    n = resolve_workers(workers, device, packing)
    if workers != "auto":
        return f"{n} worker process{'es' if n != 1 else ''} (workers={workers})"
    if str(device).startswith("cuda") or packing > 1:
        return "1 worker process (workers=auto on a GPU or with packed runs)"
    memory = available_memory()
    held = "" if memory is None else f"; memory holds {memory // WORKER_MEMORY}"
    return f"{n} worker process{'es' if n != 1 else ''} (workers=auto: {available_cores()} cores available{held})"


def notebooks_at_once(at_once="auto", cores: int | None = None, memory: int | None = None) -> int:
    """How many notebooks ``rewindkit notebooks`` runs at the same time: a whole number ≥ 1, or for
    ``"auto"`` two where there are two cores or more and memory for two notebooks, each a kernel
    and a worker per core (:data:`WORKER_MEMORY` each), else one. Two fill the cores while one
    notebook plots or starts its kernel; more would only share the same cores."""
    if at_once != "auto":
        if isinstance(at_once, int) and not isinstance(at_once, bool) and at_once >= 1:
            return at_once
        raise ValueError(f"notebooks at once must be a whole number ≥ 1 or 'auto' (two where two cores and "
                         f"the memory allow); got {at_once!r}")
    cores = available_cores() if cores is None else cores
    memory = available_memory() if memory is None else memory
    fits = memory is None or memory >= 2 * (cores + 1) * WORKER_MEMORY
    return 2 if cores >= 2 and fits else 1
