"""Many independent runs of one architecture, trained as one batched computation (a benchmark's
alternative, not part of the package: on an H200 it trained fewer epochs per GPU-hour than runs
packed on CUDA streams at every K measured, and its kernels round differently from a run alone;
``benchmarks/RESULTS.md``; equal to sequential runs within the derived float32 bound, ``tests/test_batched.py``).

A one-shot grid is hundreds of retraining runs of the same network. On a GPU one small network
leaves most of the device idle; :func:`train_batched` stacks the parameters, buffers, masks and
optimizer state of N runs and trains them together with ``torch.func.vmap`` + ``functional_call``
(one batched kernel per layer instead of N). Each run keeps its own mask, seed (data order and
augmentation), starting state and learning-rate schedule; the update is SGD with momentum and
weight decay written out exactly as ``torch.optim.SGD`` computes it, so the result equals training
the runs one by one up to float rounding of the batched kernels.

Runs in one batch must have the same number of iterations (e.g. the same t) and the same recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from rewindkit.core.masks import Mask
from rewindkit.core.optimizers import decays
from rewindkit.core.recipe import Recipe
from rewindkit.core.schedules import ConstantSchedule, StepSchedule
from rewindkit.core.training import TrainState, make_optimizer, snapshot
from rewindkit.data import BatchStream, Dataset
from rewindkit.platform.hardware import Hardware


@dataclass
class RunSlot:
    """One run in a batch: where it starts, under which mask, with which seed and LRs."""

    state: TrainState  # starting weights, optimizer state and iteration
    stop: int  # iteration to stop at (exclusive of further steps)
    seed: int
    lr_schedule: StepSchedule | ConstantSchedule
    mask: Mask | None = None


def _decay_flags(model: nn.Module, recipe: Recipe) -> dict[str, float]:
    """Each parameter's weight decay, by the recipe's rule (:func:`rewindkit.core.optimizers.decays`)."""
    return {f"{mod_name}.{p_name}" if mod_name else p_name: recipe.weight_decay if decays(module, recipe) else 0.0
            for mod_name, module in model.named_modules() for p_name, _ in module.named_parameters(recurse=False)}


def _momentum_buffers(model: nn.Module, recipe: Recipe, state: TrainState) -> dict[str, torch.Tensor | None]:
    """Map parameter name → saved momentum buffer (None when the optimizer has not stepped yet)."""
    opt = make_optimizer(model, recipe)
    opt.load_state_dict(state.optimizer)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: opt.state.get(p, {}).get("momentum_buffer") for n, p in model.named_parameters()}


def train_batched(build: Callable[[], nn.Module], data: Dataset, recipe: Recipe, slots: Sequence[RunSlot],
                  hardware: Hardware = Hardware()) -> list[TrainState]:
    """Train every slot from its ``state.step`` to its ``stop``; return each run's final state."""
    if not slots:
        return []
    if recipe.optimizer != "sgd" or recipe.label_smoothing or recipe.grad_clip_norm is not None:
        raise ValueError(f"train_batched writes out SGD with momentum and plain cross-entropy; this recipe has "
                         f"optimizer={recipe.optimizer!r}, label_smoothing={recipe.label_smoothing}, "
                         f"grad_clip_norm={recipe.grad_clip_norm}: train these runs one by one (train_steps)")
    steps = {s.stop - s.state.step for s in slots}
    if len(steps) != 1:
        raise ValueError(f"runs in one batch need the same number of iterations; got {sorted(steps)}")
    n_steps = steps.pop()
    device = torch.device(hardware.device)
    template = build().to(device)
    param_names = [n for n, _ in template.named_parameters()]
    buffer_names = [n for n, _ in template.named_buffers()]
    n = len(slots)

    def stack(name):
        return torch.stack([s.state.model[name] for s in slots]).to(device)

    params = {k: stack(k).requires_grad_(True) for k in param_names}
    buffers = {k: stack(k) for k in buffer_names}
    momentum = {k: [] for k in param_names}
    for s in slots:
        model = build()
        model.load_state_dict(s.state.model)
        for k, buf in _momentum_buffers(model, recipe, s.state).items():
            momentum[k].append(torch.zeros_like(s.state.model[k]) if buf is None else buf.detach().cpu())
    momentum = {k: torch.stack(v).to(device) for k, v in momentum.items()}  # zero buffer ≡ first SGD step
    masks = {}
    for k in param_names:
        if any(s.mask is not None and k in s.mask for s in slots):
            masks[k] = torch.stack([(s.mask[k] if s.mask is not None and k in s.mask
                                     else torch.ones_like(s.state.model[k], dtype=torch.bool)).to(torch.float32)
                                    for s in slots]).to(device)
    with torch.no_grad():
        for k, m in masks.items():
            params[k].mul_(m)
            momentum[k].mul_(m)
    decay = _decay_flags(template, recipe)
    names = list(params)
    masked = [i for i, k in enumerate(names) if k in masks]
    decayed = [i for i, k in enumerate(names) if decay[k]]
    streams = [BatchStream(data, recipe.batch_size, s.seed) for s in slots]

    def forward(p, b, x):
        return functional_call(template, (p, b), (x,))

    batched_forward = vmap(forward, in_dims=(0, 0, 0))
    template.train()
    for i in range(n_steps):
        batches = [stream.batch(s.state.step + i) for stream, s in zip(streams, slots)]
        xs = torch.stack([b[0] for b in batches])
        ys = torch.stack([b[1] for b in batches])
        lrs = torch.tensor([s.lr_schedule.lr(s.state.step + i) for s in slots], device=device)
        logits = batched_forward(params, buffers, xs)
        loss = F.cross_entropy(logits.flatten(0, 1), ys.flatten(), reduction="none").view(n, -1).mean(1).sum()
        for p in params.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():  # SGD exactly as torch.optim.SGD computes it, one fused op per step of it
            grads = [params[k].grad for k in names]
            if masked:
                torch._foreach_mul_([grads[i] for i in masked], [masks[names[i]] for i in masked])
            if decayed:
                torch._foreach_add_([grads[i] for i in decayed], [params[names[i]] for i in decayed],
                                    alpha=recipe.weight_decay)
            bufs = [momentum[k] for k in names]
            torch._foreach_mul_(bufs, recipe.momentum)
            torch._foreach_add_(bufs, grads)
            steps = torch._foreach_add(grads, bufs, alpha=recipe.momentum) if recipe.nesterov else bufs
            lr_views = [lrs.view(-1, *[1] * (params[k].dim() - 1)) for k in names]
            torch._foreach_sub_([params[k] for k in names], torch._foreach_mul(steps, lr_views))
            if masked:
                torch._foreach_mul_([params[names[i]] for i in masked], [masks[names[i]] for i in masked])
    finals = []
    for j, s in enumerate(slots):
        model = build()
        state = {k: v[j].detach().cpu() for k, v in {**params, **buffers}.items()}
        model.load_state_dict(state)
        opt = make_optimizer(model, recipe)
        for k, p in model.named_parameters():
            opt.state[p] = {"momentum_buffer": momentum[k][j].detach().cpu().clone()}
        finals.append(snapshot(model, opt, s.stop))
    return finals
