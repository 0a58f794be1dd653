"""Where and how a run computes — never what it computes: device, bf16 autocast, memory format,
``torch.compile``, CUDA graphs and how many runs share the device (``packing``). None of these is
part of a run's identity.

The fast paths live here so that :mod:`rewindkit.training` reads like the paper's loop:
:func:`prepare_model` (device, memory format, synchronised BatchNorm under torchrun),
:func:`forward_fn` (the compiled / DDP-wrapped forward pass, cached per module), :func:`autocast`
and :class:`CapturedStep` (a whole training step replayed as one CUDA graph).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import distributed

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Hardware:
    """Where and how to run. None of these options changes the recipe.

    ``device="auto"`` is resolved when the object is made: ``"cuda"`` if a GPU is visible, else ``"cpu"``.
    """

    device: str = "cpu"
    bf16: bool = False  # bf16 autocast (CUDA, or CPUs with AVX512-BF16/AMX and REWINDKIT_PORTABLE_NUMERICS=0)
    channels_last: bool = False  # NHWC memory format for 2-D convolutions
    eval_batch_size: int = 1000
    compile: bool = False  # torch.compile the network's forward pass (GPU fast path)
    compile_mode: str = "default"  # torch.compile mode; "reduce-overhead" adds CUDA graphs to the forward pass
    cuda_graphs: bool = False  # capture the whole training step (forward, backward, SGD, masks) as one CUDA graph
    packing: int = 1  # runs trained at once on this one device, each on its own thread (and CUDA stream)

    def __post_init__(self):
        if self.device == "auto":
            object.__setattr__(self, "device", "cuda" if torch.cuda.is_available() else "cpu")
        if isinstance(self.packing, bool) or not isinstance(self.packing, int) or self.packing < 1:
            raise ValueError(f"packing must be a whole number ≥ 1 of runs at once on one device; got {self.packing!r}")
        if self.compile and self.packing > 1:
            raise ValueError(f"compile=True cannot run packed (packing={self.packing}): torch.compile is not "
                             f"thread-safe; use cuda_graphs=True for packed runs, or packing=1")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile_mode {self.compile_mode!r}; choose one of {', '.join(COMPILE_MODES)}")
        if self.cuda_graphs and self.compile and self.compile_mode in ("reduce-overhead", "max-autotune"):
            raise ValueError(f"cuda_graphs=True captures the whole step itself; use compile_mode 'default' or "
                             f"'max-autotune-no-cudagraphs', not {self.compile_mode!r}")

    @property
    def is_cuda(self) -> bool:
        return str(self.device).startswith("cuda")


def check_device(hardware: Hardware) -> None:
    """Refuse, before anything trains or is written, a device this torch cannot train on, naming it
    and what can: ``cuda`` on a CPU build or a machine without a visible GPU, a GPU index past the
    last one, a device name torch does not know."""
    try:
        device = torch.device(hardware.device)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"hardware.device={hardware.device!r}: the kit trains on 'cpu', 'cuda', 'cuda:N' or 'auto' "
                         f"(the GPU where there is one)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = "this torch is a CPU build" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"hardware.device={hardware.device!r}, but {why}; choose 'cpu' or 'auto' (the GPU where "
                             f"there is one)")
        if device.index is not None and device.index >= count:
            raise ValueError(f"hardware.device={hardware.device!r}, but this machine has {count} GPU(s): "
                             f"{', '.join(f'cuda:{i}' for i in range(count))}")


def prepare_model(model: nn.Module, hardware: Hardware) -> nn.Module:
    """Move to the device, apply the memory format, and (under torchrun) synchronise BatchNorm."""
    model = model.to(hardware.device)
    if hardware.is_cuda and not torch.backends.cudnn.deterministic:
        # static shapes: pick the fastest conv algorithms once (not when the user asked for
        # deterministic cuDNN: timing-based choices can differ between runs, e.g. packed ones)
        torch.backends.cudnn.benchmark = True
    if distributed.is_distributed():
        distributed.convert_batchnorm(model)
    if hardware.channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def to_memory_format(x: torch.Tensor, hardware: Hardware) -> torch.Tensor:
    """A batch of images in the network's memory format (NHWC under ``channels_last``)."""
    if hardware.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


_COMPILED: "weakref.WeakKeyDictionary[nn.Module, Callable]" = weakref.WeakKeyDictionary()


def forward_fn(model: nn.Module, hardware: Hardware) -> Callable:
    """The callable that runs ``model``'s forward pass: the module itself, its DDP wrapper under
    torchrun, and/or its ``torch.compile``d version (cached per module; masks and weights are updated
    in place, so no recompiles)."""
    if not hardware.compile and not distributed.is_distributed():
        return model
    if model not in _COMPILED:
        fn = distributed.wrap(model, hardware.device)
        _COMPILED[model] = torch.compile(fn, mode=hardware.compile_mode) if hardware.compile else fn
    return _COMPILED[model]


def autocast(hardware: Hardware):
    """bf16 autocast when ``hardware.bf16``, else a no-op context."""
    if not hardware.bf16:
        return contextlib.nullcontext()
    device_type = "cuda" if hardware.is_cuda else "cpu"
    # no cast cache: each weight is cast once per step anyway, and CUDA-graph capture needs it off
    return torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=not hardware.cuda_graphs)


# Intra-op CPU threads of every run, wherever it executes: in this process, in threads packed on one
# device, in a worker process or a Ray task. The thread count changes float rounding (how reductions
# are split), so a fixed count makes a run's result independent of the machine's core count and of how
# the grid was executed; and for the kit's small networks one thread is also the fastest (two threads
# trained the laptop network ~10× slower per run: benchmarks/RESULTS.md, the throughput table).
RUN_THREADS = 1


@contextlib.contextmanager
def run_threads(hardware: Hardware):
    """Train the runs inside this block with :data:`RUN_THREADS` intra-op threads on the CPU (the
    caller's count is restored afterwards); CUDA runs are left alone."""
    threads = torch.get_num_threads()
    if not hardware.is_cuda:
        torch.set_num_threads(RUN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def own_stream(hardware: Hardware):
    """Issue this thread's kernels on a CUDA stream of its own (a packed run), synchronised at the
    end; a no-op on the CPU."""
    if not hardware.is_cuda:
        yield
        return
    with torch.cuda.stream(torch.cuda.Stream(device=hardware.device)):
        yield
        torch.cuda.current_stream().synchronize()


_CAPTURE_LOCK = threading.Lock()


class CapturedStep:
    """A training step ``step(*inputs, loss_sum)`` (forward, loss, backward, gradient mask, optimizer
    step, weight mask — and, with the in-memory datasets, the data step that gathers, crops and
    standardises the batch) captured as one CUDA graph and replayed with new input and learning-rate
    values: one launch per step instead of hundreds, which is what small CIFAR ResNets need on a
    fast GPU. The recipe is untouched.

    ``inputs`` are the static device tensors the step reads (a batch ``x, y``, or the batch position
    the data step gathers from); each call copies new values into them. Capturing needs a few
    warm-up steps (allocations, cuDNN autotuning); they run on a side stream and the model,
    BatchNorm statistics and optimizer state are restored afterwards, so training continues exactly
    as if they had never happened. A missing momentum buffer (the very first step) is created as
    zeros, which gives the same update as torch's first SGD step.
    """

    WARMUP = 3

    def __init__(self, step: Callable[..., None], model: nn.Module, optimizer: torch.optim.Optimizer,
                 inputs: tuple[torch.Tensor, ...], device):
        self.model, self.optimizer, self._run = model, optimizer, step
        self.inputs = tuple(t.clone() for t in inputs)
        self.loss_sum = torch.zeros((), device=device)
        self.lr = torch.tensor(float(optimizer.param_groups[0]["lr"]), device=device)
        with torch.no_grad():
            for p in model.parameters():
                state = optimizer.state[p]
                if "momentum_buffer" in state and state["momentum_buffer"] is None:
                    del state["momentum_buffer"]
                state.setdefault("momentum_buffer", torch.zeros_like(p))
        saved = self._save()
        floats = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:  # captured kernels read the LR from a device tensor
            group["lr"] = self.lr
        side = torch.cuda.Stream()
        # One capture at a time per process (torch's rule): packed runs (Hardware.packing) capture
        # from several threads, each on its own capture stream (torch's default one is shared)
        # with thread-local capture errors, one after the other; they replay concurrently.
        with _CAPTURE_LOCK:
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    self._step()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=side, capture_error_mode="thread_local"):
                self._step()
        for group, lr in zip(optimizer.param_groups, floats):
            group["lr"] = lr  # the graph reads self.lr; state_dicts and snapshots keep plain floats
        self._restore(saved)
        self.loss_sum.zero_()

    def _save(self):
        opt = [(v, v.clone()) for st in self.optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
        return [(t, t.detach().clone()) for t in self.model.state_dict().values()] + opt

    @staticmethod
    @torch.no_grad()
    def _restore(saved):
        for live, copy in saved:
            live.copy_(copy)

    def _step(self):
        self._run(*self.inputs, self.loss_sum)

    def __call__(self, lr: float, *values) -> None:
        for static, value in zip(self.inputs, values):
            static.copy_(value) if torch.is_tensor(value) else static.fill_(value)
        self.lr.fill_(lr)
        self.graph.replay()
