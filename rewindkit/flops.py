"""Theoretical forward cost counting only unpruned weights (paper Appendix F, §5.5).

Each conv or linear layer costs (kept weights) × (output positions) multiply-accumulates per
example; removed filters and their next-layer channels count as removed because their weights are
masked. This is the quantity behind the paper's FLOP-speedup figure: dense ResNet-20/56/110 come out
at 41.1M / 126.0M / 253.4M against the paper's stored 41.9M / 128.2M / 257.7M. Unstructured
sparsity gives no wall-clock speed-up with dense kernels; this is a count, not a timing.
"""

from __future__ import annotations

import torch
from torch import nn

from .masks import Mask


@torch.no_grad()
def forward_flops(model: nn.Module, input_shape: tuple[int, ...], mask: Mask | None = None) -> int:
    """Multiply-accumulates of one forward pass for one example of shape ``input_shape``."""
    positions: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            def hook(mod, inp, out, name=name):
                positions[name] = int(out[0].numel() // out.shape[1]) if out.dim() > 2 else 1
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    total = 0
    for name, module in model.named_modules():
        if name in positions:
            key = f"{name}.weight" if name else "weight"
            kept = int(mask[key].sum()) if mask is not None and key in mask else module.weight.numel()
            total += kept * positions[name]
    return total
