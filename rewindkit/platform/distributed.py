"""Data-parallel training across processes (``torchrun --nproc_per_node=N``) with DistributedDataParallel.

Each of the N ranks takes an equal, contiguous 1/N slice of every global batch, so the global batch
and the learning-rate schedule are those of the recipe whatever N is. Gradients are averaged by
DDP; BatchNorm statistics are synchronised across ranks (:class:`SyncBatchNorm2d`, which also works
on the CPU with gloo, where ``torch.nn.SyncBatchNorm`` refuses CPU tensors), so a run on N processes
computes the same function as one process with the same global batch, up to float rounding.
Masks are applied on every rank after every step and stay identical; only rank 0 writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_primary() -> bool:
    """True on the process that writes files (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group that ``torchrun`` describes in the environment (no-op for one process).

    Uses NCCL on CUDA and gloo on the CPU; returns True when running distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    if str(device).startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def shard(x: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (the batch size must divide evenly)."""
    n = world_size()
    if n == 1:
        return x
    if x.shape[0] % n:
        raise ValueError(f"global batch size {x.shape[0]} is not divisible by {n} processes")
    size = x.shape[0] // n
    return x[rank() * size:(rank() + 1) * size]


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (the public autograd-aware collective; its deprecation warning
    points to a private module, so it is silenced here)."""
    import warnings
    from torch.distributed.nn.functional import all_reduce as _all_reduce
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return _all_reduce(tensor)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are the global batch's: per-channel sums are all-reduced
    (differentiably) across ranks. Running statistics follow PyTorch's rule (unbiased variance)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, 2, 3]
        c = x.shape[1]
        count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dims), count]))  # differentiable: gradients flow across ranks
        total = sums[-1]
        mean = sums[:c] / total
        centered = x - mean.view(1, c, 1, 1)
        var = all_reduce((centered * centered).sum(dims)) / total  # two passes: no cancellation
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * total / (total - 1), alpha=m)
        shape = (1, c, 1, 1)
        # rsqrt, not sqrt: on the CPU torch.sqrt is MKL's vector square root, which rounds differently by
        # CPU vendor (docs/reproducibility.md); ATen's rsqrt is the processor's IEEE square root, then 1/x
        y = centered * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def convert_batchnorm(model: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d for :class:`SyncBatchNorm2d` in place (same parameters and buffers)."""
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats).to(child.weight.device)
            sync.load_state_dict(child.state_dict())
            setattr(model, name, sync)
        else:
            convert_batchnorm(child)
    return model


def wrap(model: nn.Module, device: str = "cpu") -> nn.Module:
    """Synchronised BatchNorm + DistributedDataParallel when running distributed; else ``model``."""
    if not is_distributed():
        return model
    convert_batchnorm(model)
    ids = [torch.cuda.current_device()] if str(device).startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

