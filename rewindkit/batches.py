"""The training-data protocol (paper §2): what any dataset gives a run, and the one definition of
an epoch, of the order of its examples and of the validation/test split.

A dataset — the in-memory :class:`~rewindkit.data.Dataset` or the streamed
:class:`~rewindkit.imagenet.ImageFolderData` — satisfies :class:`TrainingData`. Its training
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
