"""Theoretical forward cost counting only unpruned weights (paper Appendix F, §5.5).

Two counts of one forward pass for one example:

* :func:`forward_macs` — multiply-accumulates of the conv and linear layers, each layer costing
  (kept weights) × (output positions). Removed filters and their next-layer channels count as
  removed because their weights are masked. Dense ResNet-20/56/110: 41.08M / 126.01M / 253.41M.
* :func:`forward_flops` — the convention of the FLOPs the authors stored with their runs, which the
  paper's FLOP-speedup figure divides: conv MACs + 2 × FC MACs + FC biases + 2 per BatchNorm output
  element + 2 per ReLU output element (residual additions, pooling and masks count 0). It
  reproduces the stored dense ResNet-20/56/110 counts exactly (41,886,986 / 128,197,898 /
  257,664,266; a test pins them). The authors' counting code is not in their repository; this is
  the simplest per-operation rule that gives all three numbers, found from the numbers themselves
  (BN and per-conv-output costs cannot be told apart, since both land on the same elements). The
  BatchNorm and ReLU terms do not shrink with pruning, which is why FLOP speed-ups stay below the
  compression ratio.

Both are counts of work, not timings: unstructured sparsity gives no wall-clock speed-up with dense
kernels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .masks import Mask

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_RELUS = {torch.relu, torch.relu_, nn.functional.relu, nn.functional.relu_}


class _CountReLU(TorchFunctionMode):
    """Counts the output elements of every ReLU, module or functional, in one forward pass."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _RELUS or (func is torch.Tensor.relu) or (func is torch.Tensor.relu_):
            self.elements += out.numel()
        return out


@torch.no_grad()
def _trace(model: nn.Module, input_shape: tuple[int, ...]):
    """Output positions of each conv/linear layer, BatchNorm output elements, ReLU output elements."""
    positions: dict[str, int] = {}
    bn_elements = [0]
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):
            def hook(mod, inp, out, name=name):
                positions[name] = int(out[0].numel() // out.shape[1]) if out.dim() > 2 else 1
            hooks.append(module.register_forward_hook(hook))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            hooks.append(module.register_forward_hook(lambda mod, inp, out: bn_elements.__setitem__(
                0, bn_elements[0] + out[0].numel())))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    relus = _CountReLU()
    try:
        with relus:
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return positions, bn_elements[0], relus.elements


def _kept(module: nn.Module, name: str, mask: Mask | None) -> int:
    key = f"{name}.weight" if name else "weight"
    return int(mask[key].sum()) if mask is not None and key in mask else module.weight.numel()


def forward_macs(model: nn.Module, input_shape: tuple[int, ...], mask: Mask | None = None) -> int:
    """Multiply-accumulates of the conv and linear layers, unpruned weights only."""
    positions, _, _ = _trace(model, input_shape)
    modules = dict(model.named_modules())
    return sum(_kept(modules[n], n, mask) * p for n, p in positions.items())


def forward_flops(model: nn.Module, input_shape: tuple[int, ...], mask: Mask | None = None) -> int:
    """FLOPs in the authors' stored convention (module docstring), unpruned weights only."""
    positions, bn_elements, relu_elements = _trace(model, input_shape)
    total = 2 * bn_elements + 2 * relu_elements
    for name, module in model.named_modules():
        if name in positions:
            macs = _kept(module, name, mask) * positions[name]
            if isinstance(module, nn.Linear):
                total += 2 * macs + (module.out_features if module.bias is not None else 0)
            else:
                total += macs
    return total


@torch.no_grad()
def forward_seconds(model: nn.Module, x: torch.Tensor, repeats: int = 20) -> float:
    """Measured wall time of one forward pass of ``x`` (after one warm-up pass), averaged over
    ``repeats``: what zeroed weights save in practice on dense kernels (Appendix F: nothing)."""
    import time
    model(x)
    start = time.perf_counter()
    for _ in range(repeats):
        model(x)
    return (time.perf_counter() - start) / repeats
