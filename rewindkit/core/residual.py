"""The residual structure L1-filter pruning (paper §3.2) and compaction work on: a ResNet's blocks,
each ``relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))``.

Two families share it: the kit's CIFAR and 1-D ResNets (:mod:`rewindkit.models.vision`, blocks in
``model.stages``, shortcut ``block.shortcut``) and torchvision's ImageNet ResNets (``layer1`` …
``layer4``, shortcut ``block.downsample`` or the identity).
"""

from __future__ import annotations

from torch import nn


def residual_blocks(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """(stage index, block) for every residual block, in order, each one that filter pruning can prune
    (:func:`_check_block`) or a compacted copy's emptied block (``constant_branch``)."""
    if hasattr(model, "stages"):
        blocks = [(s, b) for s, stage in enumerate(model.stages) for b in stage]
    elif all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        blocks = [(s, b) for s, layer in enumerate(getattr(model, f"layer{i}") for i in range(1, 5)) for b in layer]
    else:
        blocks = None
    if blocks is not None:
        names = {id(m): n for n, m in model.named_modules()}
        for _, block in blocks:
            _check_block(block, names.get(id(block), type(block).__name__))
        return blocks
    raise ValueError(f"L1 filter pruning (§3.2) needs a residual network, its blocks in model.stages (the kit's "
                     f"ResNets) or model.layer1 … layer4 (torchvision's), each with conv1, bn1, conv2 and bn2; "
                     f"{type(model).__name__} has no such blocks")


def _check_block(block: nn.Module, where: str) -> None:
    """A block L1 filter pruning can prune: conv1 → bn1 → conv2, plain (ungrouped) convolutions, so
    conv1's filter i is bn1's channel i and conv2's input channel i."""
    if getattr(block, "constant_branch", False):
        return  # a compacted copy's block that lost every filter (compaction.ConstantBranch)
    missing = [n for n in ("conv1", "bn1", "conv2") if not hasattr(block, n)]
    if missing:
        raise ValueError(f"L1 filter pruning (§3.2) needs residual blocks with conv1, bn1, conv2 and bn2; block "
                         f"{where!r} ({type(block).__name__}) has no {', '.join(missing)}")
    for name in ("conv1", "conv2"):
        conv = getattr(block, name)
        if not isinstance(conv, nn.modules.conv._ConvNd):
            raise ValueError(f"L1 filter pruning (§3.2) prunes convolutions; {where}.{name} is a {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(f"L1 filter pruning (§3.2) removes whole filters of ungrouped convolutions; "
                             f"{where}.{name} has groups={conv.groups} (grouped or depthwise), whose filters "
                             f"and channels do not pair one to one")
    if not isinstance(block.bn1, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"L1 filter pruning (§3.2) removes each filter with its BatchNorm channel; "
                         f"{where}.bn1 is a {type(block.bn1).__name__}")


def shortcut(block: nn.Module) -> nn.Module:
    """The block's shortcut path: a projection (1×1 conv + BN) or the identity."""
    if hasattr(block, "shortcut"):
        return block.shortcut
    return block.downsample if getattr(block, "downsample", None) is not None else nn.Identity()
