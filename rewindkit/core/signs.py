"""Weight signs of a pruned network (beyond the paper: Gadhikar & Burkholz, "Masks, signs, and
learning rate rewinding", ICLR 2024).

Gadhikar & Burkholz find that LR rewinding's edge over weight rewinding comes from flipping the signs
of surviving weights early in retraining, and that weight rewinding does as well once the trained
network's signs are imposed on its rewound start. Here: the fraction of a mask's surviving weights
whose sign differs from a reference (the dense network's final weights), and a retraining start
with the reference's signs imposed (a run's ``signs="dense"``, part of its identity:
:class:`rewindkit.engine.runs.RunSpec`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .masks import Mask

# Where imposed signs come from: "dense" — the dense network's final weights (the run's ``dense`` run).
SIGN_SOURCES = ("dense",)


def check_signs(signs) -> str | None:
    """``None`` (the technique's own start) or one of :data:`SIGN_SOURCES`; anything else is refused."""
    if signs is not None and signs not in SIGN_SOURCES:
        raise ValueError(f"unknown signs {signs!r}; valid: None (the technique's own start) or "
                         f"{', '.join(map(repr, SIGN_SOURCES))}")
    return signs


def with_signs(start: torch.Tensor, reference: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``start``'s magnitudes with ``reference``'s signs where ``keep`` (and the reference is not exactly
    zero, which has no sign); ``start`` unchanged elsewhere."""
    reference = reference.to(start.device, start.dtype)
    return torch.where(keep.to(start.device) & (reference != 0), start.abs() * reference.sign(), start)


@torch.no_grad()
def impose_signs(model: nn.Module, reference: Mapping[str, torch.Tensor], mask: Mask) -> None:
    """Give every surviving prunable weight of ``model`` (in place) the sign of the same weight in
    ``reference`` (a state_dict), keeping its magnitude: Gadhikar & Burkholz's start with the trained
    network's signs. Biases, normalisation parameters and the optimizer state are left as they are."""
    params = dict(model.named_parameters())
    for name in mask.weight_names:
        params[name].copy_(with_signs(params[name], reference[name], mask[name]))


def sign_differences(weights: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor],
                     mask: Mask) -> float:
    """Fraction of ``mask``'s surviving weights whose sign in ``weights`` differs from ``reference``'s."""
    differ = sum(int((torch.sign(weights[n].detach().cpu().float()) !=
                      torch.sign(reference[n].detach().cpu().float()))[mask[n].cpu()].sum()) for n in mask.weight_names)
    return differ / max(mask.num_kept(), 1)
