"""Masked SGD training from iteration a to iteration b, with rewind checkpoints (paper §2, §8).

:func:`train_steps` is the one training loop: every technique, the dense run and resumed runs go
through it. Pruned weights are held at exactly zero by a :class:`~rewindkit.masks.MaskEnforcer`
(gradients masked before each optimizer step, weights after). The loop never syncs with the host
inside an epoch; the loss is accumulated on the device and read once per epoch.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .data import BatchStream, Dataset, derive_seed
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


@dataclass(frozen=True)
class Hardware:
    """Where and how to run. None of these options changes the recipe."""

    device: str = "cpu"
    bf16: bool = False  # bf16 autocast (CUDA, or CPUs with AVX512-BF16/AMX)
    channels_last: bool = False  # NHWC memory format for 2-D convolutions
    eval_batch_size: int = 1000
    compile: bool = False  # torch.compile the network's forward pass (GPU fast path)

    @staticmethod
    def auto() -> Hardware:
        return Hardware(device="cuda") if torch.cuda.is_available() else Hardware()


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
    x_all, y_all = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    if len(y_all) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=y_all.device)
    forward = model if distributed.is_distributed() else forward_fn(model, hardware)  # every rank evaluates all
    for i in range(0, len(y_all), hardware.eval_batch_size):
        x = data.prepare(x_all[i:i + hardware.eval_batch_size])
        if hardware.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(hardware):
            logits = forward(x)
        correct += (logits.argmax(1) == y_all[i:i + hardware.eval_batch_size]).sum()
    model.train(was_training)
    return correct.item() / len(y_all)


_COMPILED: "weakref.WeakKeyDictionary[nn.Module, Callable]" = weakref.WeakKeyDictionary()


def forward_fn(model: nn.Module, hardware: Hardware) -> Callable:
    """The callable that runs ``model``'s forward pass: the module itself, its DDP wrapper under
    torchrun, and/or its ``torch.compile``d version (cached per module; masks and weights are updated
    in place, so no recompiles)."""
    if not hardware.compile and not distributed.is_distributed():
        return model
    if model not in _COMPILED:
        fn = distributed.wrap(model, hardware.device)
        _COMPILED[model] = torch.compile(fn) if hardware.compile else fn
    return _COMPILED[model]


def _autocast(hardware: Hardware):
    if not hardware.bf16:
        return contextlib.nullcontext()
    device_type = "cuda" if str(hardware.device).startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=torch.bfloat16)


def prepare_model(model: nn.Module, hardware: Hardware) -> nn.Module:
    """Move to the device, apply the memory format, and (under torchrun) synchronise BatchNorm."""
    model = model.to(hardware.device)
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
    stream = BatchStream(data, batch_size, seed)
    spe = stream.steps_per_epoch
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
    bar = None
    if progress_enabled(progress) and stop > start:
        from tqdm.auto import tqdm
        bar = tqdm(total=stop - start, desc=description, leave=False)
    for step in range(start, stop):
        lr = lr_schedule.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = stream.batch(step)
        x, y = distributed.shard(x), distributed.shard(y)  # this rank's slice of the global batch
        if hardware.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
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
