"""CIFAR-10 from the standard python archive (``cifar-10-python.tar.gz`` or the extracted
``cifar-10-batches-py`` folder): downloaded with checksum verification when online; offline, a clear
error says where to put the file. The 10,000 test images are split 2,000 validation / 8,000 test.
Training augmentation as the paper: 4-pixel zero pad, random 32×32 crop, random horizontal flip, per
image, then per-image standardisation."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..platform.storage import atomic_write_bytes, data_dir
from .memory import Dataset, split_test

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"


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
