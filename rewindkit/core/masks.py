"""Pruning masks: which weights survive (paper §3).

A :class:`Mask` maps parameter names to boolean tensors of the parameter's shape (``True`` = kept).
Its *weight* entries cover the prunable tensors: every conv and linear ``weight`` (tensors with two
or more dimensions). Structured masks (§3.2) may also hold entries for one-dimensional tensors such
as the BatchNorm γ/β of a removed filter; those entries are enforced like any other but are not
counted in :meth:`Mask.density`, which is always *the fraction of prunable weights kept*.

Masks are stored as plain ``{name: bool tensor}`` files, separately from a plain dense
``state_dict`` (never a pickled model).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import nn

from ..platform.storage import atomic_torch_save, load_tensor_dict


_COUNTED_KEY = "__counted__"


def prunable_weight_names(model: nn.Module) -> list[str]:
    """Names of every conv and linear weight of ``model``: the paper's prunable set (§3.1) — or,
    where the model says otherwise in ``model.prunable`` (GNMT: every weight, embeddings and LSTM
    biases included; a plug-in's ``prunable`` rule), those names.

    Each name is the parameter's own (as ``model.named_parameters()`` lists it): a weight shared by two
    layers (tied: ``self.b.weight = self.a.weight``) is one tensor, named and pruned once, by its
    first name. A ``prunable`` name that is not a parameter of the model is refused, naming the
    valid ones (:class:`PrunableNameError`).

    Biases and normalisation parameters of the vision networks are never prunable by unstructured pruning.
    """
    params = dict(model.named_parameters())
    first_name = {id(p): n for n, p in params.items()}  # named_parameters lists a shared tensor once
    declared = getattr(model, "prunable", None)
    if declared is not None:
        if isinstance(declared, str) or not all(isinstance(n, str) for n in declared):
            what = ", ".join(type(n).__name__ for n in declared) if not isinstance(declared, str) else repr(declared)
            raise PrunableNameError(f"prunable must give a list of parameter names (strings, e.g. 'fc.weight'); got "
                                    f"[{what}]")
        unknown = [n for n in declared if _parameter(model, n) is None]
        if unknown:
            import difflib
            near = _computed_weight_source(model, unknown[0]) or difflib.get_close_matches(unknown[0], list(params), n=3)
            raise PrunableNameError(
                f"prunable names {unknown[0]!r}, which is not a parameter of the network"
                + (f" (did you mean {', '.join(map(repr, near))}?)" if near else "")
                + f"; its parameters are {_listing(params)}")
        tensors = [_parameter(model, n) for n in declared]
    else:
        tensors = [layer_weight(module) for module in model.modules()
                   if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    names = [first_name[id(t)] for t in tensors if t is not None and id(t) in first_name]
    return list(dict.fromkeys(names))  # each tensor once, in model order


def layer_weight(module: nn.Module, attr: str = "weight") -> nn.Parameter | None:
    """The parameter that holds a layer's ``attr`` entries: the weight itself, or, where the weight is
    computed by ``weight_norm`` (g · v / ‖v‖), its direction ``v`` (``original1``), whose zeros are
    the weight's zeros. None for other parametrizations, whose zeros need not carry over (a symmetric
    one mirrors them): declare what to prune with ``prunable=``."""
    weight = module._parameters.get(attr)
    if weight is not None or not hasattr(module, "parametrizations") or attr not in module.parametrizations:
        return weight
    chain = module.parametrizations[attr]
    if len(chain) == 1 and type(chain[0]).__name__ == "_WeightNorm":
        return chain.original1
    return None


class PrunableNameError(ValueError):
    """A network's ``prunable`` rule names something that is not one of its parameters."""


def _parameter(model: nn.Module, name: str):
    try:
        return model.get_parameter(name)
    except AttributeError:
        return None


def _computed_weight_source(model: nn.Module, name: str) -> list[str]:
    """For a weight that a parametrization computes (``fc.weight`` under ``weight_norm``), the
    parameter that holds its zeros (``fc.parametrizations.weight.original1``); else nothing."""
    owner, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(owner) if owner else model
    except AttributeError:
        return []
    source = layer_weight(module, attr) if hasattr(module, "parametrizations") else None
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(source)]] if source is not None and id(source) in names else []


def _listing(params: Mapping, limit: int = 12) -> str:
    names = list(params)
    return ", ".join(names[:limit]) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def unpruned_matrices(model: nn.Module) -> list[str]:
    """Parameters with two or more dimensions of size above 1 that the prunable set leaves out (an
    attention's input projection, a bare ``nn.Parameter`` matrix, an embedding): pruning will not
    touch them. A vector shaped as a matrix (``weight_norm``'s per-row scale g, (out, 1)) is not one."""
    chosen = set(prunable_weight_names(model))
    return [n for n, p in model.named_parameters() if sum(size > 1 for size in p.shape) >= 2 and n not in chosen]


class Mask(Mapping[str, torch.Tensor]):
    """Name → boolean keep-tensor. Immutable mapping; operations return new masks."""

    def __init__(self, entries: Mapping[str, torch.Tensor], counted: Iterable[str] | None = None):
        """``counted``: the entries that are prunable weights (:attr:`weight_names`); by default every
        entry with two or more dimensions (conv/linear kernels — a structured mask's BatchNorm
        entries follow their filter and are not counted). A network that prunes one-dimensional
        tensors too (GNMT's LSTM biases) lists them here."""
        self._entries: dict[str, torch.Tensor] = {}
        self._counted = None if counted is None else tuple(n for n in entries if n in set(counted))
        for name, tensor in entries.items():
            tensor = torch.as_tensor(tensor)
            if tensor.dtype != torch.bool:
                if not bool(((tensor == 0) | (tensor == 1)).all()):
                    raise ValueError(f"mask entry {name!r} must hold only 0/1 or booleans")
                tensor = tensor.to(torch.bool)
            self._entries[name] = tensor.detach()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def ones(cls, model: nn.Module) -> Mask:
        """The all-ones (dense) mask over ``model``'s prunable weights (on the CPU, wherever the model is)."""
        params = dict(model.named_parameters())
        names = prunable_weight_names(model)
        counted = names if any(params[n].dim() < 2 for n in names) else None
        return cls({n: torch.ones(params[n].shape, dtype=torch.bool) for n in names}, counted)

    @classmethod
    def load(cls, path) -> Mask:
        entries = load_tensor_dict(path, what="mask")
        counted = entries.pop(_COUNTED_KEY, None)
        return cls(entries, None if counted is None else bytes(counted.tolist()).decode().split("\n"))

    def save(self, path) -> None:
        """Write the mask atomically as a plain ``{name: bool tensor}`` file (CPU tensors); a mask
        whose counted entries differ from the default rule also stores their names (UTF-8 bytes
        under ``__counted__``)."""
        entries = {n: t.cpu() for n, t in self._entries.items()}
        if self._counted is not None:
            entries[_COUNTED_KEY] = torch.tensor(list("\n".join(self._counted).encode()), dtype=torch.uint8)
        atomic_torch_save(entries, path)

    @property
    def counted(self) -> tuple[str, ...] | None:
        """The explicitly counted entries, or None for the default rule (two or more dimensions)."""
        return self._counted

    def replace(self, entries: Mapping[str, torch.Tensor]) -> Mask:
        """A mask with new keep-tensors and this mask's counting rule."""
        return Mask(entries, self._counted)

    # -- mapping protocol ---------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, density={self.density():.4f})"

    # -- counting -----------------------------------------------------------------------------
    @property
    def weight_names(self) -> list[str]:
        """Entries that are prunable weights (conv/linear kernels, ≥ 2 dimensions)."""
        if self._counted is not None:
            return list(self._counted)
        return [n for n, t in self._entries.items() if t.dim() >= 2]

    def num_kept(self) -> int:
        return int(sum(int(self._entries[n].sum()) for n in self.weight_names))

    def num_total(self) -> int:
        return int(sum(self._entries[n].numel() for n in self.weight_names))

    def density(self) -> float:
        """Fraction of all prunable weights that the mask keeps (1.0 = dense)."""
        total = self.num_total()
        return self.num_kept() / total if total else 1.0

    def layer_densities(self) -> dict[str, float]:
        """Density of each weight entry, in model order."""
        return {n: float(self._entries[n].float().mean()) for n in self.weight_names}

    # -- comparison ---------------------------------------------------------------------------
    def is_subset_of(self, other: Mask) -> bool:
        """True when every weight this mask keeps is also kept by ``other`` (masks are monotone)."""
        return all(not bool((self[n] & ~other[n].to(self[n].device)).any()) for n in self if n in other)

    def to(self, device) -> Mask:
        return Mask({n: t.to(device) for n, t in self._entries.items()}, self._counted)

    def equal(self, other: Mask) -> bool:
        return set(self) == set(other) and all(torch.equal(self[n].cpu(), other[n].cpu()) for n in self)

    # -- enforcement --------------------------------------------------------------------------
    def check_model(self, model: nn.Module) -> None:
        """Raise if an entry does not name a parameter of ``model`` with the same shape."""
        params = dict(model.named_parameters())
        for n, t in self._entries.items():
            if n not in params:
                raise ValueError(f"mask entry {n!r} is not a parameter of the model; "
                               f"prunable weights are {prunable_weight_names(model)[:5]}…")
            if tuple(params[n].shape) != tuple(t.shape):
                raise ValueError(f"mask entry {n!r} has shape {tuple(t.shape)}, parameter has {tuple(params[n].shape)}")

    def apply_to_state_dict(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A copy of a plain ``state_dict`` with every masked entry set to exactly zero."""
        out = dict(state)
        for n, keep in self._entries.items():
            if n in out:
                tied = [k for k, v in state.items() if _same_tensor(v, state[n])]  # a shared weight's other names
                masked = out[n] * keep.to(device=out[n].device, dtype=out[n].dtype)
                for k in tied:
                    out[k] = masked
        return out


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
                      and a.device == b.device)


class MaskEnforcer:
    """Keeps a model's pruned weights at exactly zero during training (paper §3.1).

    The paper's TF code multiplies each kernel by a 0/1 mask in the forward pass. Here the dense
    tensors themselves hold exact zeros: gradients of pruned entries are zeroed before every
    optimizer step and the weights are re-multiplied by the mask after it, with one fused
    ``_foreach_mul_`` each. Momentum buffers of pruned entries are zeroed when the enforcer is
    attached, so they stay zero too; the forward pass pays nothing.
    """

    def __init__(self, model: nn.Module, mask: Mask):
        mask.check_model(model)
        params = dict(model.named_parameters())
        self.names = list(mask)
        self.params = [params[n] for n in self.names]
        # factors in each parameter's own layout (e.g. channels_last): foreach kernels take their
        # fast path only when every pair of tensors has the same strides
        self.factors = [torch.empty_like(params[n]).copy_(mask[n]) for n in self.names]
        self.mask = mask

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.factors)

    @torch.no_grad()
    def apply_to_grads(self) -> None:
        pairs = [(p.grad, f) for p, f in zip(self.params, self.factors) if p.grad is not None]
        if pairs:
            grads, factors = zip(*pairs)
            torch._foreach_mul_(list(grads), list(factors))

    @torch.no_grad()
    def apply_to_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero every per-parameter optimizer buffer (e.g. SGD momentum) at pruned positions."""
        for p, f in zip(self.params, self.factors):
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if key != "step" and torch.is_tensor(value) and value.shape == p.shape:  # not Adam's step count
                    value.mul_(f.to(value.dtype))
