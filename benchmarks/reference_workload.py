"""The fixed reference workload that `make reproduce`'s budget is counted in (issue 24): seconds per
epoch of a small 1-D ResNet on random MNIST-1D-shaped data, one CPU thread, written here in plain
PyTorch so that it never changes with the kit.

Until 2026-12-06 the reference was the kit's own dense laptop epoch (``train_dense``): a change that
made the kit's epochs faster made the reference faster too, so the ratio could not see it. This
workload has the laptop network's shape and operations (a depth-8, width-8 ResNet v1 over 40-sample
signals as height-1 images, channels-last, batch 128, 4,000 examples, SGD with momentum and weight
decay, cross-entropy) and the kit's portable kernel settings (``rewindkit/platform/numerics.py``),
set here by value. Run as a script it prints the seconds per epoch of ``EPOCHS`` epochs after a
warm-up epoch; ``benchmarks/run.py`` runs it in a fresh process.

Do not edit: a changed workload changes what every recorded ratio means.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")  # the kit's portable kernels, set by value
os.environ.setdefault("MKL_CBWR", "COMPATIBLE,STRICT")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

EPOCHS = 4
N_TRAIN, LENGTH, CLASSES, BATCH, WIDTH = 4000, 40, 10, 128, 8


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, (1, 3), (1, stride), (0, 1))
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, (1, 3), 1, (0, 1))
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, (1, stride)), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


def network() -> nn.Module:
    w = WIDTH
    return nn.Sequential(nn.Conv2d(1, w, (1, 3), 1, (0, 1)), nn.BatchNorm2d(w), nn.ReLU(),
                         Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, CLASSES))


def epoch_seconds(epochs: int = EPOCHS) -> float:
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN, 1, 1, LENGTH, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (N_TRAIN,), generator=g)
    torch.manual_seed(0)
    model = network().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def one_epoch():
        order = torch.randperm(N_TRAIN, generator=g)
        for i in range(0, N_TRAIN, BATCH):
            idx = order[i:i + BATCH]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    one_epoch()  # warm-up: first-call costs are not the workload
    start = time.perf_counter()
    for _ in range(epochs):
        one_epoch()
    return (time.perf_counter() - start) / epochs


if __name__ == "__main__":
    print(epoch_seconds(int(sys.argv[1]) if len(sys.argv) > 1 else EPOCHS))
