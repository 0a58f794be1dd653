"""The paper's vision networks (§2), in plain PyTorch (torchvision is needed only for ImageNet's).

* ``resnet20`` / ``resnet56`` / ``resnet110``: CIFAR ResNet v1 exactly as the paper trained them
  (TF official models): post-activation basic blocks, widths 16/32/64, and a 1×1 conv + BN
  projection shortcut in the first block of *every* stage, stage 1 included. BatchNorm momentum
  0.997 (PyTorch ``momentum=0.003``) and ε = 1e-5. ``projection="transitions"`` gives open_lth's
  variant (projection only where the shape changes).
* ``vgg16``: VGG-16 with BatchNorm and one linear layer (the paper's ``vgg16_nofc`` base runs).
* ``mnist1d_resnet``: the same ResNet code with 1-D convolutions, for the offline MNIST-1D
  default profile; structured and unstructured pruning apply to it unchanged.
"""

from __future__ import annotations

import inspect

import math
from collections.abc import Callable

import torch
from torch import nn
import torch.nn.functional as F

from ..platform import registry

PROJECTIONS = ("every_stage", "transitions")


def _conv(dim: int, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    """A conv over 2-D images, or over 1-D signals stored as height-1 images (kernel 1×k).

    The 1-D case uses Conv2d on (N, C, 1, L) tensors because oneDNN's channels-last 2-D kernels are
    about 1.5× faster on CPU than its 1-D ones; the arithmetic is that of a 1-D convolution."""
    if dim == 1:
        return nn.Conv2d(in_ch, out_ch, (1, kernel), stride=(1, stride), padding=(0, padding), bias=False)
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)


class BasicBlock(nn.Module):
    """Post-activation (v1) basic block: relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, project: bool, dim: int, bn_momentum: float):
        super().__init__()
        self.conv1 = _conv(dim, in_ch, out_ch, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(out_ch, eps=1e-5, momentum=bn_momentum)
        self.conv2 = _conv(dim, out_ch, out_ch, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=1e-5, momentum=bn_momentum)
        if project:
            self.shortcut = nn.Sequential(_conv(dim, in_ch, out_ch, 1, stride),
                                          nn.BatchNorm2d(out_ch, eps=1e-5, momentum=bn_momentum))
        else:
            if in_ch != out_ch or stride != 1:
                raise ValueError("an identity shortcut needs equal shapes; use projection='every_stage'")
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet v1 of depth 6n+2 over 2-D images (``dim=2``) or 1-D signals (``dim=1``)."""

    def __init__(self, depth: int, *, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                 dim: int = 2, projection: str = "every_stage", bn_momentum: float = 0.003):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive whole number of channels (16 in the paper); got {width!r}")
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"ResNet depth must be 6n+2 with n ≥ 1 (8, 14, 20, 56, 110, …); got {depth}")
        if projection not in PROJECTIONS:
            raise ValueError(f"unknown projection {projection!r}; choose one of {PROJECTIONS}")
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2; got {dim}")
        self.depth, self.dim = depth, dim
        blocks_per_stage = (depth - 2) // 6
        self.conv = _conv(dim, in_channels, width, 3, 1, 1)
        self.bn = nn.BatchNorm2d(width, eps=1e-5, momentum=bn_momentum)
        stages, in_ch = [], width
        for s in range(3):
            out_ch = width * 2**s
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if (s > 0 and b == 0) else 1
                project = b == 0 and (projection == "every_stage" or in_ch != out_ch or stride != 1)
                blocks.append(BasicBlock(in_ch, out_ch, stride, project, dim, bn_momentum))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, num_classes)
        _init_tf_style(self)

    def blocks(self) -> list[BasicBlock]:
        """Residual blocks in order; block j (1-based) holds the paper's conv_{2j} and conv_{2j+1}."""
        return [b for stage in self.stages for b in stage]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dim == 1 and x.dim() == 3:  # (N, C, L) signals as (N, C, 1, L) images
            x = x.unsqueeze(2)
        x = F.relu(self.bn(self.conv(x)))
        x = self.stages(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    """VGG-16 with BatchNorm after every conv and a single linear classifier (CIFAR)."""

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, bn_momentum: float = 0.003):
        super().__init__()
        layers, ch = [], in_channels
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(ch, v, 3, padding=1, bias=False),
                           nn.BatchNorm2d(v, eps=1e-5, momentum=bn_momentum), nn.ReLU(inplace=True)]
                ch = v
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(ch, num_classes)
        _init_tf_style(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@torch.no_grad()
def _init_tf_style(model: nn.Module) -> None:
    """TF official ResNet initialisation: conv kernels from a truncated normal with variance
    1/fan_in (``variance_scaling_initializer``), BN γ=1 β=0, final FC N(0, 0.01) (paper §2)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # undo the truncation's variance loss
            nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def build(**options) -> nn.Module:
        return ResNet(depth, **options)
    build.__doc__ = f"CIFAR ResNet-{depth} (paper §2)."
    build.__signature__ = inspect.Signature(  # its options are ResNet's (what a bad option is checked against)
        [p for p in inspect.signature(ResNet).parameters.values() if p.name != "depth"])
    return build


def _mnist1d_resnet(depth: int = 8, width: int = 16, num_classes: int = 10, in_channels: int = 1,
                    projection: str = "every_stage", bn_momentum: float = 0.1) -> nn.Module:
    return ResNet(depth, width=width, num_classes=num_classes, in_channels=in_channels, dim=1,
                  projection=projection, bn_momentum=bn_momentum)


def torchvision_available() -> bool:
    """Whether torchvision imports here. A CUDA torchvision next to a CPU torch raises RuntimeError
    (not ImportError) on import, so every exception counts as "not available"."""
    try:
        import torchvision  # noqa: F401
        return True
    except Exception:
        return False


def _imagenet_resnet(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, in_channels: int = 3, **options) -> nn.Module:
        """torchvision's ImageNet ResNet with the paper's choice: the last BatchNorm γ of every
        residual block starts at zero (paper §2). Needs the ``vision`` extra."""
        try:
            import torchvision.models as tvm
        except Exception as exc:
            raise RuntimeError(f"model {name!r} needs torchvision (pip install 'rewindkit[vision]'), "
                               f"which failed to import here: {type(exc).__name__}: {exc}") from exc
        if in_channels != 3:
            raise ValueError(f"{name} takes 3-channel images; got in_channels={in_channels}")
        model = getattr(tvm, name)(weights=None, num_classes=num_classes, zero_init_residual=True, **options)
        model.depth = {"resnet34": 34, "resnet50": 50}[name]
        return model
    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": _resnet(20),
    "resnet56": _resnet(56),
    "resnet110": _resnet(110),
    "vgg16": VGG,
    "mnist1d_resnet": _mnist1d_resnet,
    "resnet34": _imagenet_resnet("resnet34"),
    "resnet50": _imagenet_resnet("resnet50"),
}


def vision_network(name: str, **options) -> nn.Module:
    """Build a network by name: one of ``resnet20``, ``resnet56``, ``resnet110``, ``vgg16``,
    ``mnist1d_resnet``, or (with torchvision) ``resnet34``, ``resnet50``. Options (``width``, ``projection``, ``bn_momentum``, ``depth`` for the
    1-D ResNet, ``num_classes``, ``in_channels``) are passed to the constructor."""
    if name not in MODELS:
        hint = (f" ({name!r} is a network built for its data: models.build({name!r}, data, **options))"
                if registry.get("network", name) is not None else "")
        raise ValueError(f"unknown vision network {name!r}; valid: {', '.join(MODELS)}{hint}")
    registry.check_options(f"network {name!r} (model_options)", MODELS[name], options,
                           unlisted=("num_classes", "in_channels"))  # the kit sets these from the data
    try:
        return MODELS[name](**options)
    except TypeError as exc:  # an option the builder passes on (**options) and its class does not take
        raise ValueError(f"bad model_options for network {name!r}: {exc}") from exc
