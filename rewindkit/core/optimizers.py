"""The optimizer of a recipe (paper §2): SGD with momentum 0.9 (heavy-ball on CIFAR, Nesterov on
ImageNet) or, for GNMT, Adam (β 0.9 / 0.999, ε 1e-8), with the recipe's weight decay on every
parameter or on all but BatchNorm, and optional gradient clipping by global norm (GNMT: 5).

Every retraining technique treats the optimizer's state as a whole (§1): weight rewinding
restores all of it from T − t (SGD's momentum; Adam's moments and step count), learning-rate
rewinding and fine-tuning keep the final one. Pruned entries of every per-parameter buffer are
zeroed when a mask is attached (:meth:`rewindkit.core.masks.MaskEnforcer.apply_to_optimizer`); with
their gradients masked they stay exactly zero (Adam's moments too: m ← β₁m + (1−β₁)·0).
"""

from __future__ import annotations

import torch
from torch import nn

from ..platform.hardware import Hardware
from .recipe import Recipe


def decays(module: nn.Module, recipe: Recipe) -> bool:
    """Whether the recipe's weight decay applies to a module's own parameters: everywhere, except
    BatchNorm's γ/β when the recipe leaves them undecayed (ImageNet, §2)."""
    return recipe.decay_batchnorm or not isinstance(module, nn.modules.batchnorm._BatchNorm)


def parameter_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    """The recipe's weight decay on every parameter, or on all but BatchNorm's γ/β (:func:`decays`).
    A parameter shared by two modules (tied weights) is in one group once, as the first module has
    it: listed twice, the optimizer would step it twice."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                (decay if decays(module, recipe) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


# How the kit's Adam steps (the torch.optim.Adam flag it sets), part of every Adam run's identity
# (engine.runs.setup_from_profile): "fused", torch's single-kernel update, on every device. Until
# 2026-12-06 the CPU took the foreach update, whose square root is MKL's vector math (vsSqrt): not
# correctly rounded, and other bits on an Intel and an AMD CPU even in MKL's COMPATIBLE branch
# (benchmarks/cross_cpu_probe.py). The fused kernel's square root is the processor's own, correctly
# rounded (IEEE 754) on every x86-64 CPU, so Adam runs should agree across CPUs as SGD runs do (to be
# confirmed on an Intel machine: docs/reproducibility.md).
ADAM_UPDATE = "fused"


def make_optimizer(model: nn.Module, recipe: Recipe, hardware: Hardware = Hardware()) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``model``: Adam with torch's fused update on every device
    (:data:`ADAM_UPDATE`); SGD fused on CUDA, foreach on the CPU (its arithmetic has no square root,
    and the foreach update is what the kit's SGD runs have always used)."""
    groups = parameter_groups(model, recipe)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, betas=recipe.adam_betas, eps=recipe.adam_eps,
                                **{ADAM_UPDATE: True})
    fast = {"fused": True} if hardware.is_cuda else {"foreach": True}
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov, **fast)


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float | None) -> None:
    """Scale the gradients of the optimizer's parameters so their global norm is at most
    ``max_norm`` (no-op for None)."""
    if max_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
