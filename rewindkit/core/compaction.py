"""Compaction: a structured mask made physical, so that the pruned network is really smaller.

An L1-filter mask (paper §3.2, :func:`rewindkit.core.pruning.l1_filters`) zeroes whole filters of
the first conv of a residual block, their BatchNorm γ/β and the matching input channels of the
block's second conv. With dense kernels the zeros still cost their multiplications; :func:`compact`
returns a copy of the network with those filters, BatchNorm entries and input channels *gone*
(a thinner conv1, bn1 and conv2), the residual additions intact, computing the same function as
the masked network in eval mode. A block that lost every filter computes a constant (its bn2 of a
zero input) on top of its shortcut, and becomes :class:`ConstantBranch`.

The dependency analysis — which layers read a removed filter's channel — is Torch-Pruning's
``DependencyGraph`` (Fang et al., CVPR 2023; the optional extra ``rewindkit[compact]``): it traces
the network and returns the group of coupled layers, here bn1 and conv2. The kit does not trust the
group blindly: every layer in it that reads or writes the channel must be masked there, or
:func:`compact` refuses (:class:`CompactionError`), because removing it would change the function.

An unstructured mask (global magnitude pruning, §3.1) removes single weights: every filter keeps
some weights, so no layer can be made thinner and :func:`compact` says so
(:class:`UnstructuredMaskError`). Such a network runs faster only on sparse kernels
(:mod:`rewindkit.engine.speedups` measures where they start to pay).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .masks import Mask
from .residual import residual_blocks, shortcut


class CompactionError(ValueError):
    """A mask whose removed filters are still read somewhere: removing them would change the function."""


class UnstructuredMaskError(CompactionError):
    """A mask that prunes single weights, not whole filters: nothing can be removed."""


class ConstantBranch(nn.Module):
    """A residual block with no filters left: its conv2 only ever outputs zeros, so the block is
    ``relu(shortcut(x) + c)`` with c what bn2 makes of a zero input, per channel: in eval mode bn2's
    running statistics applied to zero (``constant``), in training mode bn2's β (a batch of zeros has
    mean and variance 0). Both are buffers: the compacted copy is for running the pruned network
    (inference, and timing a training step), so bn2's β is not trained and its running statistics
    stay as they were at compaction."""

    constant_branch = True  # what residual.residual_blocks knows it by

    def __init__(self, block_shortcut: nn.Module, bn2: nn.modules.batchnorm._BatchNorm, shape: tuple[int, ...]):
        super().__init__()
        self.shortcut = block_shortcut
        with torch.no_grad():
            zero = torch.zeros(shape, device=bn2.weight.device)
            self.register_buffer("constant", bn2.eval()(zero))
            self.register_buffer("beta", bn2.bias.detach().reshape(shape).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.shortcut(x) + (self.beta if self.training else self.constant))


def _kept_filters(mask: Mask, conv1_name: str) -> torch.Tensor:
    return mask[f"{conv1_name}.weight"].flatten(1).any(1)


def removed_filters(model: nn.Module, mask: Mask) -> dict[str, list[int]]:
    """{first conv of a block: indices of its removed filters} for every block that lost filters.

    Raises :class:`UnstructuredMaskError` when the mask prunes weights anywhere else than whole
    filters of the blocks' first convs and the matching input channels of their second convs — the
    only weights compaction can remove."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"compact() needs the network (a torch.nn.Module); got {type(model).__name__}")
    if not isinstance(mask, Mask):
        raise ValueError(f"compact() needs a Mask of this network, e.g. pruning.l1_filters(model, config, level) "
                         f"(§3.2); got {type(mask).__name__}")
    mask.check_model(model)
    try:
        blocks = residual_blocks(model)
    except ValueError as no_blocks:  # nothing is removable: an unstructured mask gets its own reason
        pruned = {name: int((~mask[name]).sum()) for name in mask.weight_names}
        if any(pruned.values()):
            _refuse_unstructured({name: n for name, n in pruned.items() if n},
                                 f"; and compact() needs residual blocks: {no_blocks}")
        raise
    names = {id(m): n for n, m in model.named_modules()}
    convs = [f"{names[id(conv)]}.weight" for _, block in blocks for conv in (block.conv1, block.conv2)]
    missing = [name for name in convs if name not in mask.weight_names]
    if missing:
        raise ValueError(f"the mask has no entry for {missing[0]!r} ({len(missing)} of the network's block "
                         f"convolutions missing): it was made for another network; prune this one, e.g. "
                         f"pruning.l1_filters(model, config, level)")
    removable = {name: torch.ones_like(mask[name]) for name in mask.weight_names}
    removed = {}
    for _, block in blocks:
        conv1, conv2 = names[id(block.conv1)], names[id(block.conv2)]
        keep = _kept_filters(mask, conv1)
        if bool(keep.all()):
            continue
        read = mask[f"{conv2}.weight"][:, ~keep]
        if bool(read.any()):
            raise CompactionError(f"{int((~keep).sum())} filters of {conv1!r} are removed, but the mask keeps "
                                  f"{int(read.sum())} weights of {conv2!r} that read them: removing them would "
                                  f"change the function (L1-filter masks, pruning.l1_filters, prune both)")
        if not bool(keep.any()) and hasattr(block, "conv3"):
            raise CompactionError(f"every filter of {conv1!r} is removed, in a bottleneck block (conv1, conv2, "
                                  f"conv3): compact() replaces emptied blocks of two convolutions only")
        removed[conv1] = (~keep).nonzero().flatten().tolist()
        removable[f"{conv1}.weight"][~keep] = False
        removable[f"{conv2}.weight"][:, ~keep] = False
    stray = {name: int((~mask[name] & removable[name]).sum()) for name in mask.weight_names}
    stray = {name: count for name, count in stray.items() if count}
    if stray:
        _refuse_unstructured(stray)
    return removed


def _refuse_unstructured(stray: dict[str, int], more: str = "") -> None:
    """Raise :class:`UnstructuredMaskError` for ``stray`` pruned weights ({weight: count}) outside any
    removable filter."""
    name, count = max(stray.items(), key=lambda item: item[1])
    raise UnstructuredMaskError(
        f"compact() removes whole filters only, but this mask prunes {sum(stray.values())} weights one by one "
        f"(e.g. {count} in {name!r}, outside any removed filter): an unstructured mask such as global magnitude "
        f"pruning's (§3.1) leaves every layer its shape, so nothing can be removed and dense kernels run it at "
        f"the dense network's speed. Compaction applies to L1-filter masks (pruning.l1_filters, §3.2); for "
        f"unstructured masks see rewindkit.engine.speedups (sparse kernels){more}.")


def _example_input(model: nn.Module) -> torch.Tensor:
    """A small input the network accepts: its stem's channels, a 1-D signal or a 32×32 image."""
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    device = stem.weight.device
    if getattr(model, "dim", 2) == 1:
        return torch.zeros(2, stem.in_channels, 1, 32, device=device)
    return torch.zeros(2, stem.in_channels, 32, 32, device=device)


def _torch_pruning():
    try:
        import torch_pruning
    except ImportError as exc:
        raise ImportError("compact() uses Torch-Pruning's DependencyGraph for the dependency analysis: "
                          "pip install 'rewindkit[compact]' (or torch-pruning)") from exc
    return torch_pruning


def _plain(idxs) -> list[int]:
    return [int(getattr(i, "idx", i)) for i in idxs]


def _check_group(group, tp, names: dict, mask: Mask) -> None:
    """Every layer of the Torch-Pruning group that writes or reads the removed channels must be
    masked there, or removing them would change what the network computes."""
    readers = {tp.prune_conv_in_channels: 1, tp.prune_linear_in_channels: 1}
    writers = {tp.prune_conv_out_channels: 0, tp.prune_linear_out_channels: 0}
    for dep, idxs in group:
        axis = readers.get(dep.handler, writers.get(dep.handler))
        if axis is None:
            continue  # BatchNorm entries, additions, activations: no weights of their own to check
        name = f"{names[id(dep.target.module)]}.weight"
        if name not in mask:
            raise CompactionError(f"removing these filters would also remove channels of {name!r}, which the "
                                  f"mask does not prune")
        entries = mask[name].index_select(axis, torch.tensor(_plain(idxs), device=mask[name].device))
        if bool(entries.any()):
            raise CompactionError(f"removing these filters would also remove {int(entries.sum())} weights of "
                                  f"{name!r} that the mask keeps (a channel coupled through the network); "
                                  f"compaction would change the function")


def compact(model: nn.Module, mask: Mask, example_input: torch.Tensor | None = None) -> nn.Module:
    """A physically smaller copy of ``model`` under the structured ``mask`` (module docstring).

    The copy starts from the masked weights; each block's removed filters leave conv1 (output
    channels), bn1 and conv2 (input channels), found by Torch-Pruning's dependency analysis and
    checked against the mask. It computes what the masked network computes (to float rounding: the
    sums skip exact zeros), in eval mode and, for one step, in training mode (:class:`ConstantBranch`). Its parameters are the mask's kept weights plus the
    unprunable parameters that survive: BatchNorm entries of kept filters, biases, and not the
    BatchNorms of a block that lost every filter (:class:`ConstantBranch`). ``example_input``:
    any input the network accepts (default: from its stem, :func:`_example_input`). The original
    network is left as it was."""
    removed = removed_filters(model, mask)
    out = copy.deepcopy(model)
    out.load_state_dict(mask.apply_to_state_dict(out.state_dict()))  # load_state_dict copies without autograd
    was_training = out.training
    out.eval()
    names = {id(m): n for n, m in out.named_modules()}
    parents = {names[id(m)]: (parent, child) for parent in out.modules() for child, m in parent.named_children()}
    partial = []
    for _, block in residual_blocks(out):
        conv1 = names[id(block.conv1)]
        if conv1 not in removed:
            continue
        if len(removed[conv1]) < block.conv1.out_channels:
            partial.append((block.conv1, removed[conv1]))
            continue
        conv2 = block.conv2
        parent, child = parents[names[id(block)]]
        setattr(parent, child, ConstantBranch(shortcut(block), block.bn2,
                                              (1, conv2.out_channels, *[1] * (conv2.weight.dim() - 2))))
    if partial:
        tp = _torch_pruning()
        x = _example_input(out) if example_input is None else example_input
        with torch.enable_grad():  # Torch-Pruning traces the network through autograd
            try:
                graph = tp.DependencyGraph().build_dependency(out, example_inputs=x)
            except (RuntimeError, ValueError, TypeError) as err:
                if example_input is not None:
                    raise
                raise ValueError(f"compact() traces the network on an example input, by default of shape "
                                 f"{tuple(x.shape)} (from its stem), which this network does not take "
                                 f"({type(err).__name__}: {err}); pass one it takes: compact(model, mask, "
                                 f"example_input=torch.zeros(2, *data.input_shape))") from err
        names = {id(m): n for n, m in out.named_modules()}
        for conv1, idxs in partial:
            group = graph.get_pruning_group(conv1, tp.prune_conv_out_channels, idxs=idxs)
            _check_group(group, tp, names, mask)
            with torch.no_grad():
                group.prune()
    out.train(was_training)
    return out
