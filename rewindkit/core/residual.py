"""The residual structure L1-filter pruning (paper §3.2) and compaction work on: a ResNet's blocks,
each ``relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))``.

Two families share it: the kit's CIFAR and 1-D ResNets (:mod:`rewindkit.models.vision`, blocks in
``model.stages``, shortcut ``block.shortcut``) and torchvision's ImageNet ResNets (``layer1`` …
``layer4``, shortcut ``block.downsample`` or the identity).
"""

from __future__ import annotations

from torch import nn


def residual_blocks(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """(stage index, block) for every residual block, in order."""
    if hasattr(model, "stages"):
        return [(s, b) for s, stage in enumerate(model.stages) for b in stage]
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        return [(s, b) for s, layer in enumerate(getattr(model, f"layer{i}") for i in range(1, 5)) for b in layer]
    raise ValueError(f"L1 filter pruning (§3.2) needs a residual network, its blocks in model.stages (the kit's "
                     f"ResNets) or model.layer1 … layer4 (torchvision's), each with conv1, bn1, conv2 and bn2; "
                     f"{type(model).__name__} has no such blocks")


def shortcut(block: nn.Module) -> nn.Module:
    """The block's shortcut path: a projection (1×1 conv + BN) or the identity."""
    if hasattr(block, "shortcut"):
        return block.shortcut
    return block.downsample if getattr(block, "downsample", None) is not None else nn.Identity()
