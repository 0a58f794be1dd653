"""Data held as tensors on the training device, batched and augmented there (paper §2): :class:`Dataset`
and its graph-safe :class:`BatchStream` (the order of training examples and every augmentation draw
are functions of (seed, step) only, so a resumed run sees exactly the batches an uninterrupted run
would), the CIFAR crop-and-flip, and the fixed validation/test split of a test set."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..core.batches import BatchOrder, split_validation
from ..core.seeds import derive_seed

AUGMENTATIONS = ("none", "cifar")


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test tensors plus how to augment and normalise training batches."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    augmentation: str = "none"  # "none" or "cifar"
    per_image_standardization: bool = False

    def __post_init__(self):
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augmentation!r}; choose one of {AUGMENTATIONS}")
        where = f"dataset {self.name!r}"
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if not (torch.is_tensor(x) and torch.is_tensor(y)):
                raise ValueError(f"{where}: {split}_x and {split}_y must be tensors; got {type(x).__name__} and "
                                 f"{type(y).__name__}")
            if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
                raise ValueError(f"{where}: {split}_x holds {tuple(x.shape)} and {split}_y {tuple(y.shape)}; each "
                                 f"split needs one label per example (the first dimension)")
        shapes = {split: tuple(getattr(self, f"{split}_x").shape[1:]) for split in ("train", "val", "test")}
        if len({shape for split, shape in shapes.items() if len(getattr(self, f"{split}_x"))}) > 1:  # empty ones aside
            raise ValueError(f"{where}: every split must hold examples of one shape; one example of train_x is "
                             f"{shapes['train']}, of val_x {shapes['val']}, of test_x {shapes['test']}")

    @property
    def n_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device) -> Dataset:
        device = torch.device(device)
        if self.device == device:
            return self
        fields = {k: getattr(self, k).to(device) for k in
                  ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return replace(self, **fields)

    def subset(self, n_train: int | None = None, n_eval: int | None = None) -> Dataset:
        """The first ``n_train`` training and ``n_eval`` validation/test examples (for smoke runs)."""
        if n_train is not None and not 0 < n_train <= self.n_train:
            raise ValueError(f"n_train must be in 1..{self.n_train}; got {n_train}")
        if n_eval is not None and not 0 < n_eval:
            raise ValueError(f"n_eval must be at least 1 (validation and test examples each), or None for all; "
                             f"got {n_eval}")
        t = slice(None, n_train)
        e = slice(None, n_eval)
        return replace(self, train_x=self.train_x[t], train_y=self.train_y[t], val_x=self.val_x[e],
                       val_y=self.val_y[e], test_x=self.test_x[e], test_y=self.test_y[e])

    def split_size(self, split: str) -> int:
        return int(getattr(self, f"{split}_y").shape[0])

    def batch_stream(self, batch_size: int, seed: int) -> BatchStream:
        """The graph-safe batch stream of a run (:class:`BatchStream`): what a CUDA-graphed training
        step reads its batches from (the optional part of the training-data protocol)."""
        return BatchStream(self, batch_size, seed)

    def batches(self, batch_size: int, seed: int, start: int, stop: int):
        """Training batches of iterations ``start`` … ``stop − 1`` (:class:`BatchStream`), each cut to
        this process's slice under torchrun."""
        from ..platform.distributed import shard
        stream = self.batch_stream(batch_size, seed)
        for step in range(start, stop):
            x, y = stream.batch(step)
            yield shard(x), shard(y)

    def eval_batches(self, split: str, batch_size: int):
        x_all, y_all = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
        for i in range(0, len(y_all), batch_size):
            yield self.prepare(x_all[i:i + batch_size]), y_all[i:i + batch_size]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Convert stored examples (uint8 images or floats) to the network's float input."""
        x = x.float()
        if self.per_image_standardization:
            flat = x.flatten(1)
            mean = flat.mean(1, keepdim=True)
            std = flat.std(1, unbiased=False, keepdim=True).clamp_min(1.0 / flat.shape[1] ** 0.5)
            x = ((flat - mean) / std).view_as(x)
        return x


class BatchStream:
    """Training batches as a pure function of (seed, step) (:mod:`rewindkit.core.batches`): iteration s
    takes the examples :class:`~rewindkit.core.batches.BatchOrder` gives it and augments them with draws
    from a generator seeded ``derive_seed(seed, "augment", s)`` on the data's device.

    Everything random about an epoch is drawn when the epoch starts (:meth:`load_epoch`: the
    example indices of every iteration and, for CIFAR, every crop offset and flip), into device
    tensors that keep their storage from epoch to epoch; :meth:`gather` then builds iteration i's
    batch with indexing arithmetic alone — no generator, no host sync — so a CUDA graph can capture
    the data step together with the training step, reading i from a device tensor. The draws are
    those of the per-iteration generators, so the batches are the same on every path."""

    def __init__(self, data: Dataset, batch_size: int, seed: int):
        self.data, self.seed, self.batch_size = data, seed, batch_size
        self.order = BatchOrder(data.n_train, batch_size, seed)
        self.steps_per_epoch = self.order.steps_per_epoch
        self.epoch: int | None = None
        self.indices: torch.Tensor | None = None  # [steps_per_epoch, batch_size] example indices
        self.crops: torch.Tensor | None = None  # [steps_per_epoch, 3, batch_size]: row, column offsets, flip

    def load_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s example order and augmentation (into the existing tensors, if any)."""
        if epoch == self.epoch:
            return
        device, spe, b = self.data.device, self.steps_per_epoch, self.batch_size
        first = epoch * spe
        indices = torch.stack([self.order.indices(first + i) for i in range(spe)]).to(device)
        crops = None
        if self.data.augmentation == "cifar":
            crops = torch.stack([torch.stack(draw_crop_flip(
                b, torch.Generator(device=device).manual_seed(derive_seed(self.seed, "augment", first + i)), device))
                for i in range(spe)])
        if self.indices is None:
            self.indices, self.crops = indices, crops
        else:  # same storage: a captured graph keeps reading these tensors
            self.indices.copy_(indices)
            if crops is not None:
                self.crops.copy_(crops)
        self.epoch = epoch

    def gather(self, i) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``i`` of the loaded epoch (``i``: an int, or a 0-d long tensor on the data's device
        as a CUDA graph reads it). An int indexes directly: turning it into a device tensor would
        copy it from the host and wait for the device at every step (found on an H200)."""
        if isinstance(i, torch.Tensor):
            i = i.view(1)
            idx = self.indices.index_select(0, i)[0]
            crops = None if self.crops is None else self.crops.index_select(0, i)[0]
        else:
            idx = self.indices[i]
            crops = None if self.crops is None else self.crops[i]
        x, y = self.data.train_x.index_select(0, idx), self.data.train_y.index_select(0, idx)
        if crops is not None:
            x = crop_flip(x, *crops)
        return self.data.prepare(x), y

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.steps_per_epoch)
        self.load_epoch(epoch)
        return self.gather(i)


def draw_crop_flip(n: int, generator: torch.Generator, device, pad: int = 4) -> tuple[torch.Tensor, ...]:
    """Per image: row offset, column offset (0 … 2·pad) and flip (0/1), drawn in that order."""
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    flip = (torch.rand(n, generator=generator, device=device) < 0.5).long()
    return oy, ox, flip


def crop_flip(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels, crop back to size at (oy, ox), flip where ``flip`` — per image,
    by indexing alone (graph-safe)."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (oy[:, None] + torch.arange(h, device=x.device)[None]).view(n, 1, h, 1)
    cols = ox[:, None] + torch.arange(w, device=x.device)[None]
    cols = torch.where(flip[:, None].bool(), cols.flip(1), cols).view(n, 1, 1, w)
    return padded[torch.arange(n, device=x.device).view(n, 1, 1, 1), torch.arange(c, device=x.device).view(1, c, 1, 1), rows, cols]


def augment_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels, random crop back to size, random horizontal flip — per image,
    for a whole batch at once on its device."""
    return crop_flip(x, *draw_crop_flip(x.shape[0], generator, x.device, pad), pad)


def split_test(x: torch.Tensor, y: torch.Tensor, val_fraction: float = 0.2):
    """A test set as (validation x, y, test x, y) by the fixed split :func:`batches.split_validation`."""
    v, t = split_validation(len(y), val_fraction)
    return x[v], y[v], x[t], y[t]
