"""Datasets held as tensors on the training device, batched and augmented there (paper §2).

* ``mnist1d`` — the offline default: generated locally with the ``mnist1d`` package's standard
  recipe (never its download) and cached as ``.npz``. 4,000 train / 1,000 test → 200 validation
  and 800 test (the paper's 20/80 split of the test set).
* ``cifar10`` — the standard python archive (``cifar-10-python.tar.gz`` or the extracted
  ``cifar-10-batches-py`` folder). Downloaded with checksum verification when online; offline, a
  clear error says where to put the file. The 10,000 test images are split 2,000 validation /
  8,000 test. Training augmentation as the paper: 4-pixel zero pad, random 32×32 crop, random
  horizontal flip, per image, then per-image standardisation.
* ``synthetic`` — small Gaussian-template data for fast tests, any shape.

Each satisfies the training-data protocol of :mod:`rewindkit.batches`: the order of training
examples and every augmentation draw are functions of (seed, step) only, so a resumed run sees
exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..platform import registry as plugins
from ..core.batches import BatchOrder, split_validation
from ..core.seeds import derive_seed
from ..platform.storage import atomic_write_bytes, data_dir
from .translation import load_translation

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
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
    """Training batches as a pure function of (seed, step) (:mod:`rewindkit.batches`): iteration s
    takes the examples :class:`~rewindkit.batches.BatchOrder` gives it and augments them with draws
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


# -- MNIST-1D ---------------------------------------------------------------------------------------

def load_mnist1d(num_samples: int = 5000, seed: int = 42, cache: bool = True) -> Dataset:
    """MNIST-1D generated offline with the package's standard recipe (cached under :func:`data_dir`)."""
    path = data_dir() / f"mnist1d_n{num_samples}_seed{seed}.npz"
    if cache and path.exists():
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    else:
        from mnist1d.data import get_dataset_args, make_dataset
        args = get_dataset_args()
        args.num_samples, args.seed = num_samples, seed
        raw = make_dataset(args)
        arrays = {k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")}
        if cache:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            atomic_write_bytes(buffer.getvalue(), path)
    x = torch.tensor(arrays["x"], dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(arrays["y"], dtype=torch.long)
    vx, vy, tx, ty = split_test(torch.tensor(arrays["x_test"], dtype=torch.float32).unsqueeze(1),
                                torch.tensor(arrays["y_test"], dtype=torch.long))
    return Dataset("mnist1d", x, y, vx, vy, tx, ty, num_classes=10)


# -- CIFAR-10 ---------------------------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR-10 batches contain: dicts, lists, bytes and NumPy arrays."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR-10 batch")


def _read_batch(raw: bytes, label: str):
    try:
        d = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d[b"labels"], dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() > 9)):
            raise ValueError(f"data shape {x.shape} with {len(y)} labels")
    except Exception as exc:
        raise ValueError(f"corrupt CIFAR-10 batch {label}: {type(exc).__name__}: {exc}") from exc
    return x.reshape(-1, 3, 32, 32), y


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cifar_missing_message(where: Path) -> str:
    return (f"CIFAR-10 not found at {where}. Put the standard python archive '{CIFAR10_ARCHIVE}' "
            f"(from {CIFAR10_URL}, md5 {CIFAR10_MD5}) or its extracted folder '{CIFAR10_FOLDER}' in "
            f"{data_dir()} (or set REWINDKIT_DATA, or pass path=...), or call with download=True when online.")


def download_cifar10(dest: Path | None = None) -> Path:
    """Download the archive to ``dest`` (default :func:`data_dir`) and verify its MD5."""
    dest = Path(dest or data_dir()) / CIFAR10_ARCHIVE
    try:
        with urllib.request.urlopen(CIFAR10_URL, timeout=60) as response:
            payload = response.read()
    except Exception as exc:
        raise FileNotFoundError(_cifar_missing_message(dest) + f" (download failed: {exc})") from exc
    if hashlib.md5(payload).hexdigest() != CIFAR10_MD5:
        raise ValueError(f"downloaded CIFAR-10 archive has the wrong MD5 (expected {CIFAR10_MD5}); not saved")
    atomic_write_bytes(payload, dest)
    return dest


def load_cifar10(path: str | os.PathLike | None = None, download: bool = False, verify_md5: bool = False) -> Dataset:
    """CIFAR-10 from the standard python archive or folder.

    ``path`` may name the ``.tar.gz`` archive, the extracted ``cifar-10-batches-py`` folder, or a
    folder containing either (default :func:`data_dir`).
    """
    where = Path(path) if path is not None else data_dir()
    candidates = [where] if where.is_file() or where.name == CIFAR10_FOLDER else [where / CIFAR10_FOLDER, where / CIFAR10_ARCHIVE]
    source = next((c for c in candidates if c.exists()), None)
    if source is None:
        if not download:
            raise FileNotFoundError(_cifar_missing_message(where))
        source = download_cifar10(where if where.suffix == "" else where.parent)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    raw: dict[str, bytes] = {}
    if source.is_dir():
        for n in names:
            if not (source / n).exists():
                raise ValueError(f"corrupt CIFAR-10 folder {source}: missing {n}")
            raw[n] = (source / n).read_bytes()
    else:
        if verify_md5 and _md5(source) != CIFAR10_MD5:
            raise ValueError(f"{source} does not have the MD5 of the official CIFAR-10 archive ({CIFAR10_MD5})")
        try:
            with tarfile.open(source, "r:gz") as tar:
                for member in tar.getmembers():
                    base = member.name.rsplit("/", 1)[-1]
                    if base in names and member.isfile():
                        raw[base] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ValueError(f"corrupt CIFAR-10 archive {source}: {type(exc).__name__}: {exc}") from exc
        missing = [n for n in names if n not in raw]
        if missing:
            raise ValueError(f"corrupt CIFAR-10 archive {source}: missing {', '.join(missing)}")
    train = [_read_batch(raw[n], n) for n in names[:5]]
    x = torch.from_numpy(np.concatenate([b[0] for b in train]))
    y = torch.from_numpy(np.concatenate([b[1] for b in train]))
    test_x, test_y = (torch.from_numpy(a) for a in _read_batch(raw["test_batch"], "test_batch"))
    vx, vy, tx, ty = split_test(test_x, test_y)
    return Dataset("cifar10", x, y, vx, vy, tx, ty, num_classes=10, augmentation="cifar",
                   per_image_standardization=True)


# -- synthetic --------------------------------------------------------------------------------------

def make_synthetic(n_train: int = 512, n_test: int = 256, shape: tuple[int, ...] = (1, 40),
                   num_classes: int = 10, noise: float = 0.5, seed: int = 0) -> Dataset:
    """Noisy copies of one random template per class: learnable in a few steps, for tests."""
    gen = torch.Generator().manual_seed(seed)
    templates = torch.randn((num_classes, *shape), generator=gen)

    def draw(n):
        y = torch.randint(0, num_classes, (n,), generator=gen)
        return templates[y] + noise * torch.randn((n, *shape), generator=gen), y

    x, y = draw(n_train)
    vx, vy, tx, ty = split_test(*draw(n_test))
    return Dataset("synthetic", x, y, vx, vy, tx, ty, num_classes=num_classes)


def _load_imagenet(**options):
    from .imagenet import load_imagenet
    return load_imagenet(**options)


# The kit's own datasets, in the one registry of datasets (rewindkit.plugins)
for _name, _loader in (("mnist1d", load_mnist1d), ("cifar10", load_cifar10), ("imagenet", _load_imagenet),
                       ("synthetic", make_synthetic), ("translation", load_translation)):
    plugins.register_builtin("dataset", _name, _loader)


def load(name: str, **options) -> Dataset:
    """A dataset by name: ``mnist1d``, ``cifar10``, ``imagenet`` (streamed from a folder:
    :mod:`rewindkit.imagenet`), ``synthetic``, ``translation`` (number names, :mod:`rewindkit.translation`)
    or a registered plug-in (:func:`rewindkit.plugins.register_dataset`)."""
    loader = plugins.lookup("dataset", name).call
    try:
        return loader(**options)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        raise TypeError(f"bad option for dataset {name!r} (dataset_options {options}): {exc}") from exc


def dataset_names() -> tuple[str, ...]:
    """Every dataset a profile may name: the kit's own and the registered plug-ins."""
    return plugins.names("dataset")
