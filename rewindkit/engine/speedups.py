""""I pruned it — why is it not faster?": measured speed-ups beside the paper's FLOP counts.

The paper counts theoretical FLOPs (Appendix F; :mod:`rewindkit.core.flops`). This module times, side
by side in one process, what a student's machine really does with a pruned network:

* **structured** (L1-filter pruning, §3.2): the dense network, the masked one (dense kernels; zeros
  still multiplied) and the compacted one (:func:`rewindkit.core.compaction.compact`: the filters
  gone), for inference at batch 1 and 128 and one training step at batch 128, with 1 and 2 CPU
  threads (:func:`time_structured`);
* **unstructured** (global magnitude pruning, §3.1): dense kernels on the masked weights against
  sparse kernels — every convolution as an im2col GEMM with a CSR weight, every linear layer a
  CSR matmul (:func:`sparse_kernels`, :func:`time_unstructured`) — and, per layer shape, the
  density below which CSR beats the dense GEMM (:func:`sparse_crossover`);
* on a GPU, 2:4 semi-structured sparsity for linear layers (:func:`time_semi_structured`).

Times are medians over interleaved rounds of the per-round mean (:func:`interleaved_seconds`), and
speed-ups are ratios within the same rounds, so they hold on a noisy machine. The FLOP speed-up
printed beside them is the authors' convention (:func:`rewindkit.core.flops.forward_flops`).
``benchmarks/run.py --only speedup`` writes the full tables to :data:`MEASURED` (shipped with the
package; notebook 08 draws its static figure from it and times a small part live).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core import pruning
from ..core.flops import forward_flops
from ..core.masks import Mask, MaskEnforcer
from ..models import vision_network
from ..platform.hardware import Hardware, prepare_model, to_memory_format
from .sparse_kernels import sparse_kernels

MEASURED = Path(__file__).with_name("speedups.csv")  # written by benchmarks/run.py --only speedup
TASKS = ("inference batch 1", "inference batch 128", "training step batch 128")


@dataclass(frozen=True)
class Network:
    """A network to time: its registry name, options and one example's shape."""

    name: str
    label: str
    options: dict
    input_shape: tuple[int, ...]
    configs: tuple[str, ...]  # its structured configurations (A, B)

    def build(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return vision_network(self.name, **self.options)


def resnet56() -> Network:
    return network_for("resnet56", {})


def laptop_network(model_options: dict) -> Network:
    """The laptop profile's 1-D ResNet on MNIST-1D signals (40 samples, one channel)."""
    options = dict(num_classes=10, in_channels=1, **model_options)
    return Network("mnist1d_resnet", "laptop 1-D ResNet", options, (1, 40), ("generic_a", "generic_b"))


# -- timing ----------------------------------------------------------------------------------------

def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_seconds(calls: dict[str, Callable[[], object]], rounds: int = 5, repeats: int = 3,
                        device="cpu") -> dict[str, list[float]]:
    """Seconds per call of each callable: one warm-up call each, then ``rounds`` rounds that run every
    callable ``repeats`` times in turn; returns each callable's per-round means (ratios between
    callables are taken round by round, so a machine that slows down mid-way slows all of them)."""
    for call in calls.values():
        call()
    _sync(device)
    out = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(repeats):
                call()
            _sync(device)
            out[name].append((time.perf_counter() - start) / repeats)
    return out


def speedup(baseline: list[float], other: list[float]) -> float:
    """Median over rounds of baseline time / other time (> 1: ``other`` is faster)."""
    return statistics.median(b / o for b, o in zip(baseline, other))


class _Threads:
    """Run with ``n`` CPU threads, restoring the previous count afterwards."""

    def __init__(self, n: int):
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self):
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def _inference(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    model.eval()

    def run():
        with torch.no_grad():
            return model(x)
    return run


def _training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mask: Mask | None) -> Callable[[], object]:
    """One SGD step as the kit trains (momentum; for a masked network the mask applied to the
    gradients and weights, :class:`~rewindkit.core.masks.MaskEnforcer`)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    enforcer = MaskEnforcer(model, mask) if mask is not None else None

    def run():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        if enforcer is not None:
            enforcer.apply_to_grads()
        optimizer.step()
        if enforcer is not None:
            enforcer.apply_to_weights()
    return run


def _batch(network: Network, n: int, hardware: Hardware):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, *network.input_shape, generator=gen)
    if len(network.input_shape) == 3:
        x = to_memory_format(x.to(hardware.device), hardware)
    return x.to(hardware.device), torch.randint(0, 10, (n,), generator=gen).to(hardware.device)


def _masked_copy(model: nn.Module, mask: Mask) -> nn.Module:
    out = copy.deepcopy(model)
    out.load_state_dict(mask.apply_to_state_dict(out.state_dict()))
    return out


def _tasks_for(tasks) -> tuple[str, ...]:
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ValueError(f"unknown task {bad[0]!r}; valid tasks: {', '.join(TASKS)}")
    return tuple(tasks)


def _callable(task: str, model: nn.Module, network: Network, hardware: Hardware, mask: Mask | None):
    x, y = _batch(network, 1 if task == TASKS[0] else 128, hardware)
    return _inference(model, x) if task.startswith("inference") else _training_step(model, x, y, mask)


# -- structured: dense, masked, compacted -----------------------------------------------------------

def _row(network: Network, pruning_label: str, config: str, level, density: float, variant: str, task: str,
         hardware: Hardware, threads, times: dict, name: str, flop_speedup: float) -> dict:
    return {"network": network.label, "pruning": pruning_label, "config": config, "level": level,
            "density": round(density, 6), "compression": round(1 / density, 4), "variant": variant, "task": task,
            "device": hardware.device, "threads": threads,
            "dense_ms": round(1e3 * statistics.median(times["dense"]), 4),
            "measured_speedup": round(speedup(times["dense"], times[name]), 3),
            "flop_speedup": round(flop_speedup, 3)}


def _timed(calls: dict, tasks, threads, hardware: Hardware, rounds: int, repeats: int):
    """(task, thread count, {variant: per-round seconds}) for every task and thread count (on a GPU
    the thread count is None)."""
    for task in tasks:
        task_calls = {k: call(task) for k, call in calls.items()}
        for n_threads in (threads if hardware.device == "cpu" else (None,)):
            with _Threads(n_threads or torch.get_num_threads()):
                yield task, n_threads, interleaved_seconds(task_calls, rounds, repeats, hardware.device)


def time_structured(network: Network, levels=pruning.LEVELS, tasks=TASKS, threads=(1, 2), rounds: int = 5,
                    repeats: int = 2, hardware: Hardware | None = None) -> list[dict]:
    """Measured vs theoretical speed-up of L1-filter pruning (§3.2): the compacted network at every
    configuration and level, and the masked one (dense kernels, which do not care about zeros: timed
    once per configuration, at its deepest level), each against the dense network, for every task ×
    thread count; all of a task's variants timed interleaved in the same rounds."""
    hardware = hardware or Hardware()
    tasks = _tasks_for(tasks)
    dense = network.build()
    flops_dense = forward_flops(dense, network.input_shape)
    if not levels:
        raise ValueError(f"levels must name at least one of {pruning.LEVELS}; got {tuple(levels)}")
    models, facts = {"dense": (dense, None)}, {}
    for config in network.configs:
        for level in levels:
            mask = pruning.l1_filters(dense, config, level)
            facts[f"{config} L{level} compacted"] = (config, level, mask, "compacted")
            models[f"{config} L{level} compacted"] = (pruning.compact(dense, mask), None)
        deepest = max(levels)
        mask = pruning.l1_filters(dense, config, deepest)
        facts[f"{config} L{deepest} masked"] = (config, deepest, mask, "masked")
        models[f"{config} L{deepest} masked"] = (_masked_copy(dense, mask), mask)
    models = {k: (prepare_model(copy.deepcopy(m), hardware), mask) for k, (m, mask) in models.items()}
    calls = {k: (lambda task, m=m, mask=mask: _callable(task, m, network, hardware, mask))
             for k, (m, mask) in models.items()}
    rows = []
    for task, n_threads, times in _timed(calls, tasks, threads, hardware, rounds, repeats):
        for name, (config, level, mask, variant) in facts.items():
            flop_speedup = flops_dense / forward_flops(dense, network.input_shape, mask)
            rows.append(_row(network, f"structured_{config[-1]}", config, level, mask.density(), variant, task,
                             hardware, n_threads, times, name, flop_speedup))
    return rows


# -- unstructured: dense kernels vs sparse kernels --------------------------------------------------

UNSTRUCTURED_DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)


def time_unstructured(network: Network, densities=UNSTRUCTURED_DENSITIES, tasks=TASKS[:2], threads=(1, 2),
                      rounds: int = 5, repeats: int = 2) -> list[dict]:
    """Measured vs theoretical speed-up of global magnitude pruning (§3.1), inference only, CPU
    (``torch.sparse`` CSR): sparse kernels (:func:`sparse_kernels`) at every density, and dense
    kernels on the masked weights (timed once, at the lowest density), each against the dense
    network in the same rounds."""
    hardware = Hardware()
    bad = [t for t in _tasks_for(tasks) if not t.startswith("inference")]
    if bad:
        raise ValueError(f"sparse kernels are timed for inference only; got task {bad[0]!r}")
    dense = network.build().eval()
    flops_dense = forward_flops(dense, network.input_shape)
    if not densities:
        raise ValueError(f"densities must name at least one density in (0, 1]; got {tuple(densities)}")
    models, facts = {"dense": dense}, {}
    for density in densities:
        mask = pruning.global_magnitude(dense, density)
        facts[f"{density} sparse"] = (mask, "sparse kernels")
        models[f"{density} sparse"] = sparse_kernels(_masked_copy(dense, mask))
    lowest = min(densities)
    mask = pruning.global_magnitude(dense, lowest)
    facts[f"{lowest} masked"] = (mask, "masked")
    models[f"{lowest} masked"] = _masked_copy(dense, mask)
    calls = {k: (lambda task, m=m: _inference(m, _batch(network, 1 if task == TASKS[0] else 128, hardware)[0]))
             for k, m in models.items()}
    rows = []
    for task, n_threads, times in _timed(calls, tasks, threads, hardware, rounds, repeats):
        for name, (mask, variant) in facts.items():
            flop_speedup = flops_dense / forward_flops(dense, network.input_shape, mask)
            rows.append(_row(network, "unstructured", "global_magnitude", None, mask.density(), variant, task,
                             hardware, n_threads, times, name, flop_speedup))
    return rows


@dataclass(frozen=True)
class GemmShape:
    """One layer as a matrix product: an (out × in) weight times an (in × columns) input."""

    label: str
    out_features: int
    in_features: int
    columns: int


def layer_shapes(laptop_options: dict) -> list[GemmShape]:
    """The layers whose crossover density is measured: ResNet-56's widest convolution as an im2col GEMM
    (64 filters × 64·3·3 inputs, 8×8 positions per image), the laptop 1-D ResNet's widest (4·width
    filters × 4·width·3 inputs, 10 positions), the laptop translation model's decoder LSTM gates
    (4·32 × (16 + 32): input and hidden weights side by side) and the paper's GNMT LSTM gates
    (4·1024 × (1024 + 1024)), each at batch 1 and 128."""
    width = laptop_options.get("width", 16) * 4
    shapes = []
    for batch in (1, 128):
        shapes += [GemmShape(f"ResNet-56 stage-3 conv, batch {batch}", 64, 576, 64 * batch),
                   GemmShape(f"laptop 1-D ResNet stage-3 conv, batch {batch}", width, 3 * width, 10 * batch),
                   GemmShape(f"laptop translation decoder LSTM gates (hidden 32), batch {batch}", 128, 48, batch),
                   GemmShape(f"GNMT LSTM gates (hidden 1024), batch {batch}", 4096, 2048, batch)]
    return shapes


CROSSOVER_DENSITIES = (1.0, 0.7, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01)


def sparse_crossover(shapes: list[GemmShape], densities=CROSSOVER_DENSITIES, threads=(1, 2), rounds: int = 5,
                     repeats: int = 3) -> list[dict]:
    """Per layer shape, density and thread count: dense GEMM vs CSR × dense (random unstructured
    weights at that density), and the ``crossover`` — the highest density from which CSR is faster at
    every lower density measured (None: it never pays here)."""
    rows = []
    for shape in shapes:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(shape.in_features, shape.columns, generator=gen)
        for n_threads in threads:
            found = []
            for density in densities:
                w = torch.randn(shape.out_features, shape.in_features, generator=gen)
                w = w * (torch.rand(w.shape, generator=gen) < density)
                csr = _csr(w)
                with _Threads(n_threads):
                    times = interleaved_seconds({"dense": lambda: w @ x, "csr": lambda: torch.sparse.mm(csr, x)},
                                                rounds, repeats)
                found.append({"layer": shape.label, "density": density, "threads": n_threads,
                              "dense_us": round(1e6 * statistics.median(times["dense"]), 2),
                              "csr_speedup": round(speedup(times["dense"], times["csr"]), 3)})
            cross = crossover_density(found)
            rows += [dict(r, crossover=cross) for r in found]
    return rows


def crossover_density(rows: list[dict], key: str = "csr_speedup") -> float | None:
    """The highest density from which the sparse kernel is faster (``key`` > 1) at every lower density
    in ``rows``; None when it is not faster at the lowest density."""
    ordered = sorted(rows, key=lambda r: r["density"])
    cross = None
    for r in ordered:
        if r[key] > 1.0:
            cross = r["density"]
        else:
            break
    return cross


def time_semi_structured(device: str = "cuda", rounds: int = 7, repeats: int = 20) -> list[dict]:
    """2:4 semi-structured sparsity (``torch.sparse.to_sparse_semi_structured``) for linear layers on a
    GPU, fp16: dense vs 2:4 at the paper's GNMT widths. Reports from Hopper GPUs range from 0.1× to
    1.2×, so it is measured, never assumed."""
    from torch.sparse import to_sparse_semi_structured
    rows = []
    for out_f, in_f, batch in ((4096, 2048, 128), (4096, 2048, 4096), (1024, 1024, 128), (1024, 1024, 8192)):
        w = torch.randn(out_f, in_f, device=device, dtype=torch.float16)
        keep = torch.tensor([1, 1, 0, 0], device=device, dtype=torch.bool).repeat(out_f, in_f // 4)
        w = w * keep
        x = torch.randn(in_f, batch, device=device, dtype=torch.float16)
        sparse = to_sparse_semi_structured(w)
        times = interleaved_seconds({"dense": lambda: w @ x, "2:4": lambda: sparse @ x}, rounds, repeats, device)
        rows.append({"layer": f"linear {out_f}×{in_f}, {batch} columns, fp16", "density": 0.5, "threads": None,
                     "dense_us": round(1e6 * statistics.median(times["dense"]), 2),
                     "csr_speedup": round(speedup(times["dense"], times["2:4"]), 3), "crossover": None})
    return rows


# -- what notebook 08 reads ------------------------------------------------------------------------

CROSSOVER = MEASURED.with_name("sparse_crossover.csv")


def measured(path: Path = MEASURED):
    """The shipped measurements (``benchmarks/run.py --only speedup``) as a DataFrame; its
    ``measured_on`` column says the date, the CPU, its cores and the torch version."""
    import pandas as pd
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: run `python benchmarks/run.py --only speedup` to measure it")
    return pd.read_csv(path)


def crossovers(path: Path = CROSSOVER):
    """The shipped crossover densities: one row per layer shape and thread count."""
    table = measured(path)
    return table.drop_duplicates(["layer", "threads"])[["layer", "threads", "crossover", "measured_on"]]


CIFAR_RESNETS = ("resnet20", "resnet56", "resnet110")


def network_for(network: str, model_options: dict) -> Network:
    """The timing description of a profile's network: the laptop's 1-D ResNet (with the profile's
    options) or a CIFAR ResNet (the paper's configurations where it has them, else the generic A/B)."""
    if network == "mnist1d_resnet":
        return laptop_network(model_options)
    if network in CIFAR_RESNETS:
        configs = tuple(f"{network}_{v}" if f"{network}_{v}" in pruning.FILTER_CONFIGS else f"generic_{v}"
                        for v in "ab")
        label = f"ResNet-{network[len('resnet'):]}"
        return Network(network, label, dict(model_options), (3, 32, 32), configs)
    raise ValueError(f"speed-ups are timed for the kit's ResNets ({', '.join(('mnist1d_resnet',) + CIFAR_RESNETS)}); "
                     f"got {network!r}")


def by_level(table, network: str, config: str, task: str, threads: int | None):
    """The compacted network's measured speed-up beside the FLOP speed-up, one row per level."""
    rows = table[(table.network == network) & (table.config == config) & (table.task == task)
                 & (table.variant == "compacted")]
    if threads is not None:
        rows = rows[rows.threads == threads]
    if rows.empty:
        raise ValueError(f"no compacted measurement of {network} {config} for {task!r} with {threads} threads")
    return rows.set_index("level")[["density", "compression", "flop_speedup", "measured_speedup"]]


def time_on_this_machine(network: Network, quick: bool = False):
    """A short live measurement for the notebook: every structured level and four unstructured
    densities, inference at batch 128 with one thread (the grid's setting) — a fraction of what
    ``benchmarks/run.py --only speedup`` times. ``quick``: levels 1 and 5, one round."""
    import pandas as pd
    rounds, repeats, levels = (1, 1, (1, 5)) if quick else (3, 3, pruning.LEVELS)
    task = (TASKS[1],)
    rows = time_structured(network, levels=levels, tasks=task, threads=(1,), rounds=rounds, repeats=repeats)
    rows += time_unstructured(network, densities=(1.0, 0.2, 0.05, 0.01), tasks=task, threads=(1,), rounds=rounds,
                              repeats=repeats)
    return pd.DataFrame(rows)


def whole_network_crossover(table, network: str, task: str, threads: int | None) -> tuple[float | None, float | None]:
    """(density, FLOP speed-up there) from which the whole network on sparse kernels is faster than
    the dense one at every lower density measured (:func:`crossover_density`); (None, None) if never."""
    rows = table[(table.network == network) & (table.variant == "sparse kernels") & (table.task == task)]
    if threads is not None:
        rows = rows[rows.threads == threads]
    records = [{"density": r.density, "csr_speedup": r.measured_speedup, "flop_speedup": r.flop_speedup}
               for r in rows.itertuples()]
    cross = crossover_density(records)
    return cross, next((r["flop_speedup"] for r in records if r["density"] == cross), None)
