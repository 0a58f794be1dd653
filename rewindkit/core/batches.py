"""The training-data protocol (paper §2): what any dataset gives a run, and the one definition of
an epoch, of the order of its examples and of the validation/test split.

A dataset — the in-memory :class:`~rewindkit.data.Dataset` or the streamed
:class:`~rewindkit.data.imagenet.ImageFolderData` — satisfies :class:`TrainingData`. Its training
batch of iteration s is a pure function of (seed, s): epoch e = s // steps_per_epoch visits the
examples in the order :func:`epoch_order` (seed, e) draws, iteration s takes the next
``batch_size`` of them, and every augmentation draw is seeded from (seed, "augment", s, …). So a
resumed run sees exactly the batches an uninterrupted run would, on any device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

from .seeds import derive_seed

EVAL_SPLITS = ("val", "test")  # validation picks t (§4), test is reported


@runtime_checkable
class TrainingData(Protocol):
    """What a run needs of a dataset."""

    num_classes: int

    @property
    def n_train(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def device(self) -> torch.device: ...

    def batches(self, batch_size: int, seed: int, start: int, stop: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's slice of the training batches of iterations ``start`` … ``stop − 1``."""

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole ``split`` ("val" or "test"), in order, in batches of ``batch_size``."""

    def split_size(self, split: str) -> int: ...

    def to(self, device) -> TrainingData: ...

    def subset(self, n_train: int | None = None, n_eval: int | None = None) -> TrainingData: ...


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Iterations per epoch: the last partial batch of an epoch is dropped, ``n_train // batch_size``
    (a batch larger than the training set is an error naming both)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 0 < batch_size <= n_train:
        raise ValueError(f"batch_size must be in 1..{n_train} (the training examples); got {batch_size!r}")
    return n_train // batch_size


def epoch_order(seed: int, epoch: int, n_train: int) -> torch.Tensor:
    """The order in which epoch ``epoch`` of a run with data seed ``seed`` visits the training set."""
    return torch.randperm(n_train, generator=torch.Generator().manual_seed(derive_seed(seed, "order", epoch)))


class BatchOrder:
    """Which training examples iteration s uses: positions ``[i·B, (i+1)·B)`` of its epoch's
    :func:`epoch_order`, with (epoch, i) = divmod(s, steps_per_epoch). The permutation is drawn once
    per epoch and kept."""

    def __init__(self, n_train: int, batch_size: int, seed: int):
        self.n_train, self.batch_size, self.seed = n_train, batch_size, seed
        self.steps_per_epoch = steps_per_epoch(n_train, batch_size)
        self._epoch, self._order = None, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._order, self._epoch = epoch_order(self.seed, epoch, self.n_train), epoch
        return self._order[i * self.batch_size:(i + 1) * self.batch_size]


def split_validation(n: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Indices of a fixed validation / test split of ``n`` held-out examples (the paper's 20/80 split
    of a test set, §4), the same for every run: independent of all run seeds."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    n_val = int(round(val_fraction * n))
    return order[:n_val], order[n_val:]


class DataProtocolError(ValueError):
    """A dataset (or a network on its batches) that does not follow the training-data protocol."""


def _shape(x) -> str:
    if isinstance(x, tuple):
        return "(" + ", ".join(_shape(t) for t in x) + ")"
    return f"{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}" if torch.is_tensor(x) else type(x).__name__


def _check_training_output(model, inputs, network: str) -> None:
    """The network's output in training mode is one tensor too (a copy runs, so neither the network's
    BatchNorm statistics nor anything else of it changes)."""
    import copy
    try:
        trial = copy.deepcopy(getattr(model, "_orig_mod", model))  # torch.compile's wrapper: its network, uncompiled
    except Exception:  # a network that cannot be copied is checked in eval mode only
        return
    trial.train()
    with torch.no_grad():
        out = trial(*inputs)
    if not torch.is_tensor(out):
        raise DataProtocolError(f"network {network!r} gives {_shape(out)} in training mode (one tensor in eval "
                                f"mode); the kit's cross-entropy needs one tensor of class scores in both (an "
                                f"auxiliary head's output: return only the main one, or bring a loss with the data)")


def check_training_data(data, batch_size: int, dataset: str, model=None, network: str = "the network",
                        count_epoch: bool = True) -> None:
    """The protocol check at the first batch, naming the dataset (and network): a batch is ``(x, y)``
    or ``((x1, x2, …), y)`` of tensors with one example per row; ``y`` holds integer labels, in
    ``0 … num_classes − 1`` where they are class labels; an epoch has ``n_train // batch_size`` batches
    (counted with ``count_epoch``: the kit's own data, ImageNet's stream among them, is not counted);
    and, with ``model``, the network takes ``x`` and gives one output row per label (a loss the data
    brings itself, ``data.loss``, is trusted with the output's shape)."""
    where = f"dataset {dataset!r}"
    if not data.n_train:
        raise DataProtocolError(f"{where} has no training examples (n_train = {data.n_train})")
    spe = steps_per_epoch(data.n_train, batch_size)
    try:
        x, y = next(iter(data.batches(batch_size, 0, 0, 1)))
    except StopIteration:
        raise DataProtocolError(f"{where} gave no training batch for iteration 0 (batch_size {batch_size})") from None
    except (TypeError, ValueError) as err:
        raise DataProtocolError(f"{where}: its batches must be (x, y) pairs; unpacking the first gave: {err}") from None
    inputs = x if isinstance(x, tuple) else (x,)
    if not inputs or not all(torch.is_tensor(t) for t in inputs) or not torch.is_tensor(y):
        raise DataProtocolError(f"{where}: a batch must be (x, y) or ((x1, x2, …), y) of tensors; the first is "
                                f"x = {_shape(x)}, y = {_shape(y)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dtype.is_complex:
        raise DataProtocolError(f"{where}: labels y must be integer class indices; the first batch's are {_shape(y)}")
    rows = {len(t) for t in inputs} | {len(y)}
    if len(rows) != 1:
        raise DataProtocolError(f"{where}: x and y of a batch must have one row per example; the first batch is "
                                f"x = {_shape(x)}, y = {_shape(y)}")
    classes = getattr(data, "num_classes", None)
    own_loss = getattr(data, "loss", None) is not None
    if not own_loss and y.dtype not in (torch.int64, torch.uint8):  # what cross-entropy takes
        raise DataProtocolError(f"{where}: cross-entropy takes labels of dtype int64 (or uint8); the first batch's "
                                f"are {_shape(y)}: convert them with y.long()")

    def check_range(labels, what):
        if labels.dim() == 1 and isinstance(classes, int) and labels.numel() and not (
                0 <= int(labels.min()) and int(labels.max()) < classes):
            raise DataProtocolError(f"{where}: {what} must lie in 0 … {classes - 1} (num_classes = {classes}); found "
                                    f"{int(labels.min())} … {int(labels.max())}")
    check_range(y, "labels of the first training batch")
    if count_epoch:  # the user's own data: every label of an epoch and of the evaluation splits too
        for split in EVAL_SPLITS:
            try:
                batches = list(data.eval_batches(split, 1000))
            except (KeyError, AttributeError, IndexError) as err:
                raise DataProtocolError(f"{where} has no {split} split (eval_batches({split!r}, …) raised "
                                        f"{type(err).__name__}: {err}); the kit evaluates on {' and '.join(EVAL_SPLITS)} "
                                        f"(validation picks t, §4; test is reported)") from None
            if not sum(len(labels) for _, labels in batches):
                raise DataProtocolError(f"{where}: its {split} split holds no examples; the kit evaluates on "
                                        f"{' and '.join(EVAL_SPLITS)} (validation picks t, §4; test is reported)")
            for _, labels in batches:
                if not own_loss and labels.dim() != y.dim():
                    raise DataProtocolError(f"{where}: {split} labels have shape {tuple(labels.shape)} where the "
                                            f"training labels have {tuple(y.shape[1:]) or 'one per example'} "
                                            f"({_shape(y)}); give every split its labels the same way")
                check_range(labels, f"{split} labels")
        count = 0
        for _, labels in data.batches(batch_size, 0, 0, spe):
            count += 1
            if torch.is_tensor(labels):
                check_range(labels, f"training labels (batch {count - 1} of epoch 0)")
        if count < spe:
            raise DataProtocolError(f"{where} gave {count} training batches for epoch 0, where an epoch is {spe} "
                                    f"(n_train {data.n_train} // batch_size {batch_size}): batches(…, start, stop) must "
                                    f"yield one batch per iteration")
    if model is not None:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(*inputs)
        except Exception as err:  # a shape or dtype mismatch in the user's network: say whose batch it was
            raise DataProtocolError(f"network {network!r} cannot take {where}'s batches (x = {_shape(x)}): "
                                    f"{type(err).__name__}: {err}") from err
        finally:
            model.train(was_training)
        if not own_loss and (not torch.is_tensor(out) or tuple(out.shape[:y.dim()]) != tuple(y.shape)
                                                    or out.dim() != y.dim() + 1):
            raise DataProtocolError(f"network {network!r} gave outputs {_shape(out)} for {where}'s batch with labels "
                                    f"{_shape(y)}; cross-entropy needs one row of class scores per label")
        if not own_loss and y.dim() == 1 and isinstance(classes, int) and out.shape[-1] != classes:
            raise DataProtocolError(f"network {network!r} gives {out.shape[-1]} class scores per example, but "
                                    f"{where} has num_classes = {classes}")
        if not own_loss:  # and in training mode (a network may add outputs there: auxiliary heads), on a copy
            _check_training_output(model, inputs, network)

