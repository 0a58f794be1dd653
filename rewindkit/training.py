"""Masked SGD training from iteration a to iteration b, with rewind checkpoints (paper §2, §8).

:func:`train_steps` is the one training loop: every technique, the dense run and resumed runs go
through it. Pruned weights are held at exactly zero by a :class:`~rewindkit.masks.MaskEnforcer`
(gradients masked before each optimizer step, weights after). The loop never syncs with the host
inside an epoch; the loss is accumulated on the device and read once per epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .data import Dataset
from .seeds import derive_seed
from .masks import Mask, MaskEnforcer
from .schedules import ConstantSchedule, StepSchedule


@dataclass(frozen=True)
class Recipe:
    """A training recipe (paper §2). Defaults are the paper's CIFAR-10 ResNet recipe: 182 epochs,
    batch 128, LR 0.1 ×0.1 at epochs 91 and 136, SGD momentum 0.9, weight decay 2e-4 on all
    parameters (BatchNorm included)."""

    epochs: int = 182
    batch_size: int = 128
    lr: float = 0.1
    milestones: tuple[float, ...] = (91, 136)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    decay_batchnorm: bool = True
    fine_tune_lr: float | None = None  # None: the schedule's final LR

    def __post_init__(self):
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def schedule(self, n_train: int) -> StepSchedule:
        return StepSchedule(self.lr, self.epochs, n_train // self.batch_size, self.milestones,
                            self.gamma, self.warmup_epochs)

    def to_dict(self) -> dict:
        return asdict(self)


CIFAR10_RECIPE = Recipe()
IMAGENET_RECIPE = Recipe(epochs=90, batch_size=1024, lr=0.4, milestones=(30, 60, 80), warmup_epochs=5,
                         nesterov=True, weight_decay=1e-4, decay_batchnorm=False)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Hardware:
    """Where and how to run. None of these options changes the recipe."""

    device: str = "cpu"
    bf16: bool = False  # bf16 autocast (CUDA, or CPUs with AVX512-BF16/AMX and REWINDKIT_PORTABLE_NUMERICS=0)
    channels_last: bool = False  # NHWC memory format for 2-D convolutions
    eval_batch_size: int = 1000
    compile: bool = False  # torch.compile the network's forward pass (GPU fast path)
    compile_mode: str = "default"  # torch.compile mode; "reduce-overhead" adds CUDA graphs to the forward pass
    cuda_graphs: bool = False  # capture the whole training step (forward, backward, SGD, masks) as one CUDA graph

    def __post_init__(self):
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile_mode {self.compile_mode!r}; choose one of {', '.join(COMPILE_MODES)}")
        if self.cuda_graphs and self.compile and self.compile_mode in ("reduce-overhead", "max-autotune"):
            raise ValueError(f"cuda_graphs=True captures the whole step itself; use compile_mode 'default' or "
                             f"'max-autotune-no-cudagraphs', not {self.compile_mode!r}")

    @staticmethod
    def auto() -> Hardware:
        return Hardware(device="cuda") if torch.cuda.is_available() else Hardware()


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: the run stops and is not marked finished."""


@dataclass
class TrainState:
    """Weights, optimizer state and iteration counter: everything a rewind or a resume needs."""

    model: dict[str, torch.Tensor]
    optimizer: dict
    step: int

    def to_dict(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "step": self.step}

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(d["model"], d["optimizer"], int(d["step"]))


@dataclass
class EpochRecord:
    epoch: float  # epochs completed on the run's own step counter
    step: int
    lr: float
    train_loss: float
    val_acc: float
    test_acc: float


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> TrainState:
    """A detached CPU copy of the current training state."""
    def cpu(obj):
        if torch.is_tensor(obj):
            return obj.detach().to("cpu", copy=True)
        if isinstance(obj, dict):
            return {k: cpu(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [cpu(v) for v in obj]
        return obj
    return TrainState(cpu(model.state_dict()), cpu(optimizer.state_dict()), step)


def make_optimizer(model: nn.Module, recipe: Recipe, hardware: Hardware = Hardware()) -> torch.optim.SGD:
    """SGD with the recipe's momentum and weight decay (fused on CUDA, foreach elsewhere)."""
    decay, no_decay = [], []
    for module in model.modules():
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
        for p in module.parameters(recurse=False):
            (no_decay if is_bn and not recipe.decay_batchnorm else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    fast = {"fused": True} if str(hardware.device).startswith("cuda") else {"foreach": True}
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov, **fast)


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: str, hardware: Hardware = Hardware()) -> float:
    """Top-1 accuracy (fraction) on ``split`` ('val' or 'test')."""
    if split not in ("val", "test", "train"):
        raise ValueError(f"unknown split {split!r}; choose 'val', 'test' or 'train'")
    total = data.split_size(split)
    if total == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=data.device)
    forward = model if distributed.is_distributed() else forward_fn(model, hardware)  # every rank evaluates all
    for x, y in data.eval_batches(split, hardware.eval_batch_size):
        if hardware.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(hardware):
            logits = forward(x)
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    return correct.item() / total


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


def _autocast(hardware: Hardware):
    if not hardware.bf16:
        return contextlib.nullcontext()
    device_type = "cuda" if str(hardware.device).startswith("cuda") else "cpu"
    # no cast cache: each weight is cast once per step anyway, and CUDA-graph capture needs it off
    return torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=not hardware.cuda_graphs)


def sgd_step(forward: Callable, optimizer: torch.optim.Optimizer, enforcer: MaskEnforcer | None,
             hardware: Hardware, x: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor) -> None:
    """One masked SGD step (paper §3.1): loss, backward, gradients masked, optimizer step, weights
    masked; the loss is added to ``loss_sum`` on the device (no host sync). Eager and captured
    training both run exactly this."""
    with _autocast(hardware):
        loss = F.cross_entropy(forward(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if enforcer is not None:
        enforcer.apply_to_grads()
    optimizer.step()
    if enforcer is not None:
        enforcer.apply_to_weights()
    loss_sum += loss.detach().float()


class CapturedStep:
    """One training step (forward, loss, backward, gradient mask, SGD, weight mask) captured as a
    CUDA graph and replayed with new batch and learning-rate values: one launch per step instead of
    hundreds, which is what small CIFAR ResNets need on a fast GPU. The recipe is untouched.

    Capturing needs a few warm-up steps (allocations, cuDNN autotuning); they run on a side stream
    and the model, BatchNorm statistics and optimizer state are restored afterwards, so training
    continues exactly as if they had never happened. A missing momentum buffer (the very first
    step) is created as zeros, which gives the same update as torch's first SGD step.
    """

    WARMUP = 3

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, forward: Callable,
                 enforcer: MaskEnforcer | None, hardware: Hardware, x: torch.Tensor, y: torch.Tensor):
        self.model, self.optimizer, self.forward, self.enforcer, self.hardware = model, optimizer, forward, enforcer, hardware
        device = x.device
        self.x, self.y = x.clone(), y.clone()
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
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
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
        sgd_step(self.forward, self.optimizer, self.enforcer, self.hardware, self.x, self.y, self.loss_sum)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        self.x.copy_(x)
        self.y.copy_(y)
        self.lr.fill_(lr)
        self.graph.replay()


def prepare_model(model: nn.Module, hardware: Hardware) -> nn.Module:
    """Move to the device, apply the memory format, and (under torchrun) synchronise BatchNorm."""
    model = model.to(hardware.device)
    if str(hardware.device).startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # static shapes: pick the fastest conv algorithms once
    if distributed.is_distributed():
        distributed.convert_batchnorm(model)
    if hardware.channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def progress_enabled(flag: bool | None = None) -> bool:
    """Progress bars are on unless ``flag`` is False or ``REWINDKIT_PROGRESS=0``."""
    if flag is not None:
        return flag
    return os.environ.get("REWINDKIT_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, data: Dataset,
                lr_schedule: StepSchedule | ConstantSchedule, start: int, stop: int, *, seed: int,
                batch_size: int, mask: Mask | None = None, hardware: Hardware = Hardware(),
                save_at: Iterable[int] = (), on_save: Callable[[TrainState], None] | None = None,
                on_epoch: Callable[[EpochRecord, nn.Module, torch.optim.Optimizer], None] | None = None,
                epoch_offset: int = 0, evaluate_every_epoch: bool = True, log: Callable[[str], None] | None = None,
                progress: bool | None = None, description: str = "train") -> list[EpochRecord]:
    """Train ``model`` from iteration ``start`` to ``stop`` (exclusive) with per-step LR ``lr_schedule.lr(step)``.

    * ``save_at``: iterations at which :func:`snapshot` is passed to ``on_save`` (the rewind points
      T−t; iteration ``start`` itself may be included).
    * ``on_epoch`` is called at each epoch boundary (and at ``stop``) after evaluation: the hook
      for metrics files and resumable checkpoints.
    * The batch of iteration s depends only on (``seed``, s), so any run can be stopped and
      resumed from a checkpoint and produce the same result.
    """
    batches = data.batches(batch_size, seed, start, stop)  # this rank's slice of each global batch
    spe = data.n_train // batch_size
    save_at = set(save_at)
    enforcer = MaskEnforcer(model, mask) if mask is not None else None
    if enforcer is not None:
        enforcer.apply_to_weights()
        enforcer.apply_to_optimizer(optimizer)
    if start in save_at and on_save is not None:
        on_save(snapshot(model, optimizer, start))
    model.train()
    forward = forward_fn(model, hardware)
    records: list[EpochRecord] = []
    loss_sum = torch.zeros((), device=data.device)
    loss_count = 0
    use_graphs = (hardware.cuda_graphs and str(hardware.device).startswith("cuda")
                  and not distributed.is_distributed())
    captured = None
    bar = None
    if progress_enabled(progress) and stop > start:
        from tqdm.auto import tqdm
        bar = tqdm(total=stop - start, desc=description, leave=False)
    for step in range(start, stop):
        lr = lr_schedule.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = next(batches)
        if hardware.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if use_graphs:
            if captured is None:
                captured = CapturedStep(model, optimizer, forward, enforcer, hardware, x, y)
                loss_sum = captured.loss_sum
            captured(x, y, lr)
        else:
            sgd_step(forward, optimizer, enforcer, hardware, x, y, loss_sum)
        loss_count += 1
        done = step + 1
        if bar is not None:
            bar.update(1)
        if done in save_at and on_save is not None:
            on_save(snapshot(model, optimizer, done))
        if done % spe == 0 or done == stop:
            val = evaluate(model, data, "val", hardware) if evaluate_every_epoch or done == stop else float("nan")
            test = evaluate(model, data, "test", hardware) if evaluate_every_epoch or done == stop else float("nan")
            record = EpochRecord(epoch=epoch_offset + done / spe, step=done, lr=lr,
                                 train_loss=loss_sum.item() / max(loss_count, 1), val_acc=val, test_acc=test)
            if not math.isfinite(record.train_loss):
                raise DivergedError(f"{description}: the training loss is {record.train_loss} in epoch "
                                    f"{record.epoch:g} (iterations up to {done}): the run diverged. The likely "
                                    f"cause is a learning rate too high for this network and batch size (LR "
                                    f"{lr:g} at the end of that epoch); the run was stopped and is not marked "
                                    f"finished.")
            loss_sum.zero_()
            loss_count = 0
            records.append(record)
            if log is not None:
                log(f"[{description}] epoch {record.epoch:g} step {done} lr {lr:.4g} "
                    f"loss {record.train_loss:.4f} val {val:.4f} test {test:.4f}")
            if on_epoch is not None:
                on_epoch(record, model, optimizer)
    if bar is not None:
        bar.close()
    return records


def init_model(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model with its initial weights drawn from ``seed`` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init") % (2**63))
        return build()
