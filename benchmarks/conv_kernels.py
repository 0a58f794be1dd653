"""Faster convolution kernels for the laptop network that keep one result on every CPU? (issue 24, "the
kernels"). A benchmark's alternatives, not part of the package; ``benchmarks/RESULTS.md`` has the verdict.

The laptop network's convolutions are 1×k Conv2d on (N, C, 1, L) signals. Under the portable numerics
(:mod:`rewindkit.platform.numerics`) ATen runs them as im2col with one small MKL GEMM per sample, in
MKL's ``COMPATIBLE`` branch, the one Intel documents as giving the same bits on Intel and AMD. Each
variant below replaces the convolution of every conv layer and is timed on a whole training step
(forward, backward, SGD) of the laptop network, one thread, in a fresh process:

* ``aten``: PyTorch's own convolution (the kit's path, the baseline);
* ``batch-gemm``: im2col of the whole batch and one MKL GEMM per convolution (N·L × C·k by C·k × O);
* ``shift-gemm``: one MKL GEMM of the unpadded signal by all k taps at once, then k shifted adds;
* ``openblas``: the ``batch-gemm`` layout with its three GEMMs (forward, both gradients) in numpy's
  OpenBLAS, its kernels pinned to one instruction set (``OPENBLAS_CORETYPE=Haswell``) so that every
  AVX2 CPU would run the same code.

``python benchmarks/conv_kernels.py VARIANT STEPS`` prints seconds per step and the largest
difference of the network's weight gradients from ``aten``'s on one batch.
"""

from __future__ import annotations

import os
import sys

VARIANTS = ("aten", "batch-gemm", "shift-gemm", "openblas")

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "openblas":
    # numpy (which torch imports) reads these when it loads OpenBLAS, before anything else runs
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import rewindkit  # noqa: E402,F401  (the portable numerics, before any torch op)
from rewindkit import models  # noqa: E402


def _signal(x):
    """(N, C, 1, L) channels-last → (N, L, C), a view."""
    N, C, _, L = x.shape
    return x.permute(0, 2, 3, 1).reshape(N, L, C)


def _as_image(y):
    """(N, L, O) → (N, O, 1, L) in channels-last memory, a view."""
    return y.unsqueeze(1).permute(0, 3, 1, 2)


def batch_gemm(conv, x):
    O, C, _, k = conv.weight.shape
    s, p = conv.stride[1], conv.padding[1]
    xl = F.pad(_signal(x), (0, 0, p, p))
    N, Lp, _ = xl.shape
    cols = xl.unfold(1, k, s).reshape(-1, C * k)  # (N·Lout, C·k), C-major as the weight
    out = cols @ conv.weight.reshape(O, C * k).t()
    return _as_image(out.reshape(N, -1, O))


def shift_gemm(conv, x):
    O, C, _, k = conv.weight.shape
    s, p = conv.stride[1], conv.padding[1]
    xl = F.pad(_signal(x), (0, 0, p, p))
    N, Lp, _ = xl.shape
    lout = (Lp - k) // s + 1
    taps = conv.weight.reshape(O, C, k).permute(1, 2, 0).reshape(C, k * O)
    y = (xl.reshape(N * Lp, C) @ taps).reshape(N, Lp, k, O)
    out = y[:, 0:(lout - 1) * s + 1:s, 0]
    for j in range(1, k):
        out = out + y[:, j:j + (lout - 1) * s + 1:s, j]
    return _as_image(out)


def _blas(a, b):
    """a @ b in numpy's BLAS (transposed operands are passed as flags, not copied)."""
    return torch.from_numpy(a.numpy() @ b.numpy())


class _OpenBlasConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        O, C, _, k = weight.shape
        xl = F.pad(_signal(x), (0, 0, padding, padding))
        N, Lp, _ = xl.shape
        cols = xl.unfold(1, k, stride).reshape(-1, C * k)
        w = weight.detach().reshape(O, C * k)
        ctx.save_for_backward(cols, w)
        ctx.geometry = (N, Lp, C, k, stride, padding)
        return _as_image(_blas(cols, w.t()).reshape(N, -1, O))

    @staticmethod
    def backward(ctx, grad):
        cols, w = ctx.saved_tensors
        N, Lp, C, k, s, p = ctx.geometry
        g = _signal(grad).reshape(-1, w.shape[0])
        g = g if g.is_contiguous() else g.contiguous()
        grad_w = _blas(g.t(), cols).reshape(w.shape[0], C, 1, k)
        gcols = _blas(g, w).reshape(N, -1, C, k)
        lout = gcols.shape[1]
        gx = torch.zeros(N, Lp, C)
        for j in range(k):  # col2im: k shifted adds, in a fixed order
            gx[:, j:j + (lout - 1) * s + 1:s] += gcols[..., j]
        return _as_image(gx[:, p:Lp - p]), grad_w, None, None


def openblas(conv, x):
    return _OpenBlasConv.apply(x, conv.weight, conv.stride[1], conv.padding[1])


FORWARDS = {"batch-gemm": batch_gemm, "shift-gemm": shift_gemm, "openblas": openblas}


def network(variant: str, seed: int = 0) -> nn.Module:
    """The laptop network (channels-last), its convolutions computed by ``variant``."""
    from rewindkit.engine.profiles import PROFILES
    torch.manual_seed(seed)
    model = models.vision_network("mnist1d_resnet", **PROFILES["laptop"].model_options)
    model = model.to(memory_format=torch.channels_last)
    if variant != "aten":
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.forward = (lambda x, m=m: FORWARDS[variant](m, x))
    return model


def step_seconds(variant: str, steps: int, batch: int = 128) -> tuple[float, float]:
    """Seconds per training step of the laptop network with ``variant``'s convolutions (one thread,
    after 5 warm-up steps), and the largest |difference| of its weight gradients from ``aten``'s on one batch."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 1, 1, 40, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=g)
    grads = []
    for v in (variant, "aten"):
        net = network(v)
        F.cross_entropy(net(x), y).backward()
        grads.append([p.grad for p in net.parameters()])
    diff = max((a - b).abs().max().item() for a, b in zip(*grads))
    model = network(variant)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps, diff


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in VARIANTS:
        sys.exit(f"usage: python benchmarks/conv_kernels.py VARIANT STEPS; VARIANT one of {', '.join(VARIANTS)}")
    seconds, diff = step_seconds(sys.argv[1], int(sys.argv[2]))
    print(seconds, diff)
