"""Sparse kernels for an unstructured mask (paper §3.1, global magnitude pruning): a copy of a masked
network whose convolutions run as im2col + a CSR weight product and whose linear layers run as CSR
products (``torch.sparse``), for inference. :mod:`rewindkit.engine.speedups` times them against the
dense kernels."""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn


def _csr(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in CSR format (PyTorch warns that CSR support is in beta: known, and measured here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return weight.to_sparse_csr()


class _SparseConv(nn.Module):
    """A convolution as im2col + a CSR weight GEMM (inference only)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.out_channels = conv.out_channels
        self.weight = _csr(conv.weight.detach().flatten(1))
        self.bias = None if conv.bias is None else conv.bias.detach().view(1, -1, 1, 1)

    def forward(self, x):
        n, _, h, w = x.shape
        cols = F.unfold(x.contiguous(), self.kernel_size, padding=self.padding, stride=self.stride)  # (n, c·k·k, L)
        ho = (h + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        flat = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # (c·k·k, n·L)
        out = torch.sparse.mm(self.weight, flat).view(self.out_channels, n, ho, wo).transpose(0, 1)  # (out, n·L)
        return out if self.bias is None else out + self.bias


class _SparseLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = _csr(linear.weight.detach())
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x):  # x: (…, in_features), as nn.Linear takes it
        out = torch.sparse.mm(self.weight, x.reshape(-1, x.shape[-1]).t()).t().reshape(*x.shape[:-1], -1)
        return out if self.bias is None else out + self.bias


def sparse_kernels(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (already masked) whose convolutions and linear layers run on CSR weights."""
    out = copy.deepcopy(model).eval()
    for parent in list(out.modules()):
        if isinstance(parent, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            continue  # their fast paths read their layers' dense weights: left dense
        for name, child in list(parent.named_children()):
            if (isinstance(child, nn.Conv2d) and child.groups == 1 and child.dilation == (1, 1)
                    and child.padding_mode == "zeros" and not isinstance(child.padding, str)):  # else: left dense
                setattr(parent, name, _SparseConv(child))
            elif isinstance(child, nn.Linear):
                setattr(parent, name, _SparseLinear(child))
    return out
