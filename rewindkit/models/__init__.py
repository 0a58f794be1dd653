"""The networks, by name (:func:`build`): the kit's own vision networks (:mod:`.vision`: CIFAR ResNets,
VGG-16, the 1-D ResNet of MNIST-1D, torchvision's ImageNet ResNets), the laptop-scale GNMT
(:mod:`.seq2seq`) and the user's plug-ins, all in the one registry of networks."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..platform import registry
from .vision import MODELS, PROJECTIONS, VGG, BasicBlock, ResNet, torchvision_available, vision_network  # noqa: F401


def _gnmt_small(data, **options) -> nn.Module:
    """The laptop-scale GNMT (:class:`rewindkit.models.seq2seq.Seq2Seq`) over the data's vocabularies."""
    from .seq2seq import Seq2Seq, prunable_parameter_names
    model = Seq2Seq(len(data.src_vocab), len(data.tgt_vocab), **options)
    model.prunable = tuple(prunable_parameter_names(model))
    return model


def _image_network(name: str) -> Callable[..., nn.Module]:
    """An image network built for the data it will see: its classes and input channels."""
    def build(data, **options) -> nn.Module:
        return vision_network(name, num_classes=data.num_classes, in_channels=data.input_shape[0], **options)
    build.__qualname__ = f"image_network[{name}]"
    return build


# The kit's own networks, in the one registry of networks (rewindkit.plugins): the image networks
# (built for the data's classes and channels) and GNMT (built from the data's vocabularies).
for _name in MODELS:
    registry.register_builtin("network", _name, _image_network(_name), prunable=None, metric=None)
registry.register_builtin("network", "gnmt_small", _gnmt_small, prunable=None, metric="bleu")
IMAGE_MODELS = tuple(MODELS)  # the kit's image networks (flops.forward_flops counts any single-input network)


def network_names() -> tuple[str, ...]:
    """Every network a profile may name: the kit's own and the registered plug-ins."""
    return registry.names("network")


def build(name: str, data, **options) -> nn.Module:
    """Build network ``name`` for ``data`` (the registry's builder: the image networks take its
    classes and input channels, GNMT and plug-ins the data itself). A plug-in's ``prunable`` rule and
    ``metric`` are attached to the model as ``model.prunable`` (the names
    :func:`rewindkit.core.masks.prunable_weight_names` reads) and ``model.metric`` (what
    :func:`rewindkit.core.metrics.evaluate` reports)."""
    plugin = registry.lookup("network", name)
    registry.check_options(f"network {name!r} (model_options)", plugin.call, options, positional=1)
    try:
        model = plugin.call(data, **options)
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. a width of 2.5 or −1: named with its options
        if isinstance(exc, ValueError) and plugin.builtin:  # the kit's own networks name their bad values
            raise
        raise ValueError(f"network {name!r} could not be built with model_options {options}: "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ValueError(f"network {name!r} must build a torch.nn.Module; its builder returned {type(model).__name__}")
    if plugin.options["prunable"] is not None:
        model.prunable = _prunable_names(name, plugin.options["prunable"], model)
    if plugin.options["metric"] and not plugin.builtin:
        model.metric = plugin.options["metric"]  # what rewindkit.core.metrics.evaluate reports for it
    return model


def _prunable_names(network: str, rule, model: nn.Module) -> tuple[str, ...]:
    """What a plug-in's ``prunable`` rule gives for ``model``: a list of parameter names (each checked
    against the network by :func:`rewindkit.core.masks.prunable_weight_names`)."""
    try:
        names = rule(model)
    except Exception as exc:
        raise ValueError(f"network {network!r}: its prunable rule raised {type(exc).__name__}: {exc}") from exc
    if isinstance(names, (str, bytes)) or names is None or not hasattr(names, "__iter__"):
        raise ValueError(f"network {network!r}: its prunable rule must give a list of parameter names, e.g. "
                         f"['fc.weight']; it gave {names!r}")
    return tuple(names)  # each a parameter's name: checked where they are read (prunable_weight_names)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
