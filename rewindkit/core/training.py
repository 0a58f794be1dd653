"""Masked SGD training from iteration a to iteration b, with rewind checkpoints (paper §2, §8).

:func:`train_steps` is the one training loop: every technique, the dense run and resumed runs go
through it. Pruned weights are held at exactly zero by a :class:`~rewindkit.core.masks.MaskEnforcer`
(gradients masked before each optimizer step, weights after). The loop never syncs with the host
inside an epoch; the loss is accumulated on the device and read once per epoch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..platform import distributed

from . import metrics
from .batches import EVAL_SPLITS, DataProtocolError, TrainingData, steps_per_epoch
from ..platform.hardware import CapturedStep, Hardware, autocast, forward_fn, prepare_model, run_threads, to_memory_format
from .masks import Mask, MaskEnforcer
from .optimizers import clip_gradients, make_optimizer  # noqa: F401  (make_optimizer: importable from here)
from .recipe import Recipe
from .schedules import ConstantSchedule, StepSchedule
from .seeds import GLOBAL_RNG_LOCK, ForwardRandomness, derive_seed  # GLOBAL_RNG_LOCK: importable from here


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


def evaluate(model: nn.Module, data: TrainingData, split: str, hardware: Hardware = Hardware()) -> float:
    """The data's metric on ``split`` ('val' or 'test'): top-1 accuracy (a fraction) for the image
    datasets, BLEU for translation (:mod:`rewindkit.core.metrics`)."""
    if split not in (*EVAL_SPLITS, "train"):
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join((*EVAL_SPLITS, 'train'))}")
    if data.split_size(split) == 0:
        return float("nan")
    return metrics.evaluate(model, data, split, hardware)


def cross_entropy(output: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(output, y, label_smoothing=label_smoothing)


@dataclass(frozen=True)
class StepRule:
    """What one training step computes besides the optimizer's update: the loss (cross-entropy,
    or the data's own ``loss``, e.g. a sequence loss that ignores padding), its label smoothing,
    and the gradient clipping norm — from the recipe (paper §2; GNMT: 0.1 and 5)."""

    loss: Callable = cross_entropy
    label_smoothing: float = 0.0
    clip_norm: float | None = None

    @classmethod
    def of(cls, data, recipe: Recipe | None = None) -> StepRule:
        loss = getattr(data, "loss", None) or cross_entropy
        if recipe is None:
            return cls(loss)
        return cls(loss, recipe.label_smoothing, recipe.grad_clip_norm)


def optimizer_step(forward: Callable, optimizer: torch.optim.Optimizer, enforcer: MaskEnforcer | None,
             hardware: Hardware, x, y: torch.Tensor, loss_sum: torch.Tensor, rule: StepRule = StepRule()) -> None:
    """One masked optimizer step (paper §3.1): loss, backward, gradients masked (and clipped),
    optimizer step (SGD or Adam), weights masked; the loss is added to ``loss_sum`` on the device
    (no host sync). Eager and captured training both run exactly this."""
    with autocast(hardware):
        loss = rule.loss(metrics.forward_inputs(forward, x), y, rule.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if enforcer is not None:
        enforcer.apply_to_grads()
    clip_gradients(optimizer, rule.clip_norm)
    optimizer.step()
    if enforcer is not None:
        enforcer.apply_to_weights()
    loss_sum += loss.detach().float()


def _gathered(stream, position: torch.Tensor, hardware: Hardware):
    x, y = stream.gather(position)
    return _in_format(x, hardware), y


def _in_format(x, hardware: Hardware):
    """A batch's input in the network's memory format (a tuple of inputs, e.g. a translation batch's
    source and shifted target, as it is)."""
    return x if isinstance(x, tuple) else to_memory_format(x, hardware)


def _next_batch(batches, data, step: int):
    """The next training batch; a dataset that runs out says so, naming itself and the iteration."""
    try:
        return next(batches)
    except StopIteration:
        name = getattr(data, "name", type(data).__name__)
        raise DataProtocolError(f"dataset {name!r} gave no training batch for iteration {step}: batches(batch_size, "
                                f"seed, start, stop) must yield one batch per iteration start … stop − 1") from None


def progress_enabled(flag: bool | None = None) -> bool:
    """Progress bars are on unless ``flag`` is False or ``REWINDKIT_PROGRESS=0``."""
    if flag is not None:
        return flag
    return os.environ.get("REWINDKIT_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, data: TrainingData,
                lr_schedule: StepSchedule | ConstantSchedule, start: int, stop: int, *, seed: int,
                batch_size: int, mask: Mask | None = None, hardware: Hardware = Hardware(),
                save_at: Iterable[int] = (), on_save: Callable[[TrainState], None] | None = None,
                on_epoch: Callable[[EpochRecord, nn.Module, torch.optim.Optimizer], None] | None = None,
                evaluate_every_epoch: bool = True, evaluate_at_end: bool = True,
                log: Callable[[str], None] | None = None, progress: bool | None = None, description: str = "train",
                recipe: Recipe | None = None) -> list[EpochRecord]:
    """Train ``model`` from iteration ``start`` to ``stop`` (exclusive) with per-step LR ``lr_schedule.lr(step)``.

    * ``save_at``: iterations at which :func:`snapshot` is passed to ``on_save`` (the rewind points
      T−t; iteration ``start`` itself may be included).
    * ``on_epoch`` is called at each epoch boundary (and at ``stop``) after evaluation: the hook
      for metrics files and resumable checkpoints.
    * The batch of iteration s depends only on (``seed``, s), and so do the draws of a network that
      draws randomness while it trains (dropout: :class:`~rewindkit.core.seeds.ForwardRandomness`),
      so any run can be stopped and resumed from a checkpoint and produce the same result.
    * ``recipe`` supplies the loss's label smoothing and the gradient clipping (:class:`StepRule`).
    * Validation and test are evaluated at every epoch boundary (``evaluate_every_epoch``) and at
      ``stop`` (unless ``evaluate_at_end=False``: a rewind checkpoint replayed, a timing probe).
    * On the CPU it trains with one intra-op thread (:func:`~rewindkit.platform.hardware.run_threads`):
      every run does, wherever it executes, so its result never depends on the core count.
    """
    with run_threads(hardware):  # one CPU thread per run, wherever it trains (hardware.RUN_THREADS)
        return _train_steps(model, optimizer, data, lr_schedule, start, stop, seed=seed, batch_size=batch_size, mask=mask,
                            hardware=hardware, save_at=save_at, on_save=on_save, on_epoch=on_epoch,
                            evaluate_every_epoch=evaluate_every_epoch, evaluate_at_end=evaluate_at_end, log=log,
                            progress=progress, description=description, recipe=recipe)


def _train_steps(model, optimizer, data, lr_schedule, start, stop, *, seed, batch_size, mask, hardware, save_at,
                 on_save, on_epoch, evaluate_every_epoch, evaluate_at_end, log, progress, description,
                 recipe) -> list[EpochRecord]:
    rule = StepRule.of(data, recipe)
    spe = steps_per_epoch(data.n_train, batch_size)
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
    use_graphs = (hardware.cuda_graphs and hardware.is_cuda and not distributed.is_distributed()
                  and isinstance(optimizer, torch.optim.SGD)  # the captured step reads SGD's LR from a tensor
                  and not has_dropout(model))  # a captured step could not seed its draws per step
    randomness = ForwardRandomness(seed, data.device, distributed.rank())  # dropout: seeded per step
    # the in-memory datasets' data step (gather, crop, flip, standardise) joins the captured graph:
    # it reads the batch position from a device tensor (``gather`` of the data's ``batch_stream``), the same batches
    if use_graphs and hasattr(data, "batch_stream"):
        stream, position = data.batch_stream(batch_size, seed), torch.zeros((), dtype=torch.long, device=data.device)
        batches = None
    else:
        batches = data.batches(batch_size, seed, start, stop)  # this rank's slice of each global batch
    captured = None
    bar = None
    if progress_enabled(progress) and stop > start:
        from tqdm.auto import tqdm
        bar = tqdm(total=stop - start, desc=description, leave=False)
    for step in range(start, stop):
        lr = lr_schedule.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if batches is None:  # data step and training step in one graph
            epoch, i = divmod(step, spe)
            stream.load_epoch(epoch)
            if captured is None:
                captured = CapturedStep(
                    lambda position, loss_sum: optimizer_step(forward, optimizer, enforcer, hardware,
                                                        *_gathered(stream, position, hardware), loss_sum, rule),
                    model, optimizer, (position,), data.device)
                loss_sum = captured.loss_sum
            captured(lr, i)
        elif use_graphs:
            x, y = _next_batch(batches, data, step)
            if isinstance(x, tuple):
                raise ValueError("cuda_graphs=True replays fixed-shape tensor batches; this data gives tuples of "
                                 "inputs (e.g. translation, whose batches change length): use cuda_graphs=False")
            if captured is None:
                captured = CapturedStep(
                    lambda x, y, loss_sum: optimizer_step(forward, optimizer, enforcer, hardware, x, y, loss_sum, rule),
                    model, optimizer, (to_memory_format(x, hardware), y), data.device)
                loss_sum = captured.loss_sum
            captured(lr, to_memory_format(x, hardware), y)
        else:
            x, y = _next_batch(batches, data, step)
            x = _in_format(x, hardware)
            with randomness.step(step):
                optimizer_step(forward, optimizer, enforcer, hardware, x, y, loss_sum, rule)
        loss_count += 1
        done = step + 1
        if bar is not None:
            bar.update(1)
        if done in save_at and on_save is not None:
            on_save(snapshot(model, optimizer, done))
        if done % spe == 0 or done == stop:
            now = evaluate_every_epoch or (done == stop and evaluate_at_end)
            val = evaluate(model, data, "val", hardware) if now else float("nan")
            test = evaluate(model, data, "test", hardware) if now else float("nan")
            record = EpochRecord(epoch=done / spe, step=done, lr=lr,
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


def has_dropout(model: nn.Module) -> bool:
    """Whether ``model`` holds a dropout layer that draws (p > 0) while it trains."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def init_model(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model with its initial weights drawn from ``seed`` (global RNG left untouched; one
    thread at a time, so runs packed on one device draw exactly what they would alone)."""
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(derive_seed(seed, "init") % (2**63))  # builds draw on the CPU
        return build()


@dataclass
class DenseRun:
    """A dense training run kept in memory: final state plus the checkpoints needed for rewinding."""

    model: nn.Module
    final: TrainState
    checkpoints: dict[int, TrainState]
    history: list[EpochRecord]
    schedule: StepSchedule


def fresh_start(build: Callable[[], nn.Module], recipe: Recipe, seed: int,
                hardware: Hardware = Hardware()) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A network initialised from ``seed`` on its device, with a fresh optimizer: where the dense run
    (and reinitialization) start (:func:`rewindkit.core.techniques.start_state`)."""
    model = prepare_model(init_model(build, seed), hardware)
    return model, make_optimizer(model, recipe, hardware)


def train_dense(build: Callable[[], nn.Module], data: TrainingData, recipe: Recipe, *, seed: int,
                rewind_steps=(), hardware: Hardware = Hardware(), log=None, progress=None) -> DenseRun:
    """Train the dense network for T epochs from initialisation (paper §2), in memory, keeping
    checkpoints (weights + momentum) at ``rewind_steps``: the engine's dense run of trial ``seed`` bit
    for bit — the same start (:func:`fresh_start`) and loop (:func:`train_steps`) that
    :func:`rewindkit.core.techniques.run_plan` runs for the dense plan."""
    schedule = recipe.schedule(data.n_train)
    model, optimizer = fresh_start(build, recipe, seed, hardware)
    checkpoints: dict[int, TrainState] = {}
    history = train_steps(model, optimizer, data, schedule, 0, schedule.total_steps, seed=seed,
                          batch_size=recipe.batch_size, hardware=hardware, save_at=rewind_steps,
                          on_save=lambda s: checkpoints.__setitem__(s.step, s), log=log, progress=progress,
                          description="dense", recipe=recipe)
    return DenseRun(model, snapshot(model, optimizer, schedule.total_steps), checkpoints, history, schedule)
