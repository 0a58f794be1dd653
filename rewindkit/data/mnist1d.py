"""MNIST-1D, the offline default: generated locally with the ``mnist1d`` package's standard recipe
(never its download) and cached as ``.npz``; 4,000 train / 1,000 test → 200 validation and 800 test
(the paper's 20/80 split of the test set)."""

from __future__ import annotations

import io

import numpy as np
import torch

from ..platform.storage import atomic_write_bytes, data_dir
from .memory import Dataset, split_test


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
