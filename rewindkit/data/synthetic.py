"""Small Gaussian-template data for fast tests, any shape."""

from __future__ import annotations

import torch

from .memory import Dataset, split_test


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
