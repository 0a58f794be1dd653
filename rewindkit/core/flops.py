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

Each use of a weight counts: a layer called twice costs twice, a Linear layer on a sequence costs
once per position, and ``nn.MultiheadAttention`` costs its projections (as Linear layers) and its
scores and weighted values; ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` cost their input and hidden
matrices once per time step (their gates' elementwise work counts 0, as pooling does). A weight
computed by a parametrization (``weight_norm``) is counted by the kept entries of its original. Other
operations on a parameter of a user's own (a bare ``nn.Parameter`` in a matmul) are not seen and
count 0.

Both are counts of work, not timings: unstructured sparsity gives no wall-clock speed-up with dense
kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .masks import Mask, layer_weight

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


@dataclass(frozen=True)
class _WeightUse:
    """One use of a weight in the forward pass: ``rows`` of parameter ``weight`` (None: all of it;
    ``size`` entries) applied at ``positions`` output positions; a Linear-like use also adds ``bias``
    per position."""

    weight: str
    size: int
    positions: int
    linear: bool
    bias: int = 0
    rows: slice | None = None


@torch.no_grad()
def _trace(model: nn.Module, input_shape: tuple[int, ...]):
    """Every use of a conv, linear or attention weight in one forward pass of one example (a layer
    called twice is used twice; a Linear on (L, D) inputs is applied at L positions), the
    multiply-accumulates of attention's scores and weighted values (no weights: never pruned),
    BatchNorm output elements and ReLU output elements."""
    names = {id(p): n for n, p in model.named_parameters()}  # a shared weight by its one name
    uses: list[_WeightUse] = []

    def use(module, attr, positions, linear, bias=0, rows=None):
        weight = getattr(module, attr)
        size = (weight if rows is None else weight[rows]).numel()
        holder = layer_weight(module, attr)  # the weight, or the parameter a parametrization computes it from
        uses.append(_WeightUse(names.get(id(holder), ""), size, positions, linear, bias, rows))

    attention_macs = [0]
    bn_elements = [0]
    hooks = []

    def layer_hook(mod, inp, out):
        channels = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
        use(mod, "weight", int(out.numel() // channels), isinstance(mod, nn.Linear), channels if mod.bias is not None else 0)

    def attention_hook(mod, args, kwargs, out):
        query, key = (list(args) + [kwargs.get("query"), kwargs.get("key")][len(args):])[:2]
        e = mod.embed_dim
        lq, lk = query.numel() // query.shape[-1], key.numel() // key.shape[-1]  # tokens of the one example
        bias = e if mod.in_proj_bias is not None else 0
        if mod.in_proj_weight is not None:  # q, k, v projections in one (3E, E) matrix
            use(mod, "in_proj_weight", lq, True, bias, slice(0, e))
            use(mod, "in_proj_weight", lk, True, 2 * bias, slice(e, 3 * e))
        else:
            use(mod, "q_proj_weight", lq, True, bias)
            use(mod, "k_proj_weight", lk, True, bias)
            use(mod, "v_proj_weight", lk, True, bias)
        use(mod.out_proj, "weight", lq, True, mod.out_proj.out_features if mod.out_proj.bias is not None else 0)
        attention_macs[0] += 2 * lq * lk * e  # scores q·k and the weighted sum of values, over all heads

    def recurrent_hook(mod, inp, out):
        x = inp[0]
        x = x.data if isinstance(x, nn.utils.rnn.PackedSequence) else x
        steps = x.numel() // x.shape[-1]  # the one example's time steps
        gates = {"LSTM": 4, "GRU": 3}.get(mod.mode, 1)  # RNN_TANH, RNN_RELU: one
        for layer in range(mod.num_layers):
            for suffix in ("", "_reverse")[:2 if mod.bidirectional else 1]:
                bias = gates * mod.hidden_size if mod.bias else 0
                use(mod, f"weight_ih_l{layer}{suffix}", steps, True, 2 * bias)  # both biases, once a step
                use(mod, f"weight_hh_l{layer}{suffix}", steps, True)
                if getattr(mod, "proj_size", 0):
                    use(mod, f"weight_hr_l{layer}{suffix}", steps, True)

    attention = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    inside_attention = {id(m.out_proj) for m in attention}  # called functionally: counted by its attention
    for module in model.modules():
        if isinstance(module, _LAYERS) and id(module) not in inside_attention:
            hooks.append(module.register_forward_hook(layer_hook))
        elif isinstance(module, nn.MultiheadAttention):
            hooks.append(module.register_forward_hook(attention_hook, with_kwargs=True))
        elif isinstance(module, nn.RNNBase):
            hooks.append(module.register_forward_hook(recurrent_hook))
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
    return uses, attention_macs[0], bn_elements[0], relus.elements


def _kept(use: _WeightUse, mask: Mask | None) -> int:
    if mask is not None and use.weight in mask:
        keep = mask[use.weight]
        return int((keep if use.rows is None else keep[use.rows]).sum())
    return use.size


def forward_macs(model: nn.Module, input_shape: tuple[int, ...], mask: Mask | None = None) -> int:
    """Multiply-accumulates of the conv, linear and attention layers, unpruned weights only."""
    uses, attention_macs, _, _ = _trace(model, input_shape)
    return sum(_kept(u, mask) * u.positions for u in uses) + attention_macs


def forward_flops(model: nn.Module, input_shape: tuple[int, ...], mask: Mask | None = None) -> int:
    """FLOPs in the authors' stored convention (module docstring), unpruned weights only; an
    attention layer's projections count as Linear layers do, its scores and weighted values 2 per MAC."""
    uses, attention_macs, bn_elements, relu_elements = _trace(model, input_shape)
    total = 2 * bn_elements + 2 * relu_elements + 2 * attention_macs
    for use in uses:
        macs = _kept(use, mask) * use.positions
        total += 2 * macs + use.bias * use.positions if use.linear else macs
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
