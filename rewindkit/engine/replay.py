"""A finished run replayed in memory, epoch by epoch: what happens *during* a run that its folder
does not store (the weights after every epoch), without storing it for every run. The replay starts
where the run started (:func:`runner.run_start`: its plan's start, its mask, its signs), trains its
own batches (its ``data_seed``) through the one training loop, and must end on the stored
``final.pt`` bit for bit, or it raises: what the hooks saw is what the run did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core.masks import Mask
from ..core.optimizers import ADAM_UPDATE
from ..core.recipe import Recipe
from ..core.techniques import RetrainPlan, run_plan
from ..platform.hardware import Hardware
from ..platform.storage import load_json, load_tensor_dict
from .runner import load_dataset, model_builder, run_start
from .runs import RunSpec, RunStore


class ReplayMismatchError(RuntimeError):
    """A replayed run did not end on its stored final weights."""


@dataclass
class StartingPoint:
    """Where a finished run started training, rebuilt from its own folder (config, mask, parents)."""

    spec: RunSpec
    data: object
    build: Callable[[], torch.nn.Module]
    recipe: Recipe
    plan: RetrainPlan
    mask: Mask | None
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer


def recorded_hardware(out, run_id: str) -> Hardware:
    """The settings finished run ``run_id`` computed with, from its ``result.json`` (device, bf16,
    channels-last): what a replay needs to give its bits again."""
    prov = RunStore(out, create=False).result(run_id).get("provenance", {})
    device = str(prov.get("device", "cpu")).split(" (")[0]
    return Hardware(device=device, bf16=bool(prov.get("bf16", False)), channels_last=bool(prov.get("channels_last", False)))


def starting_point(out, run_id: str, hardware: Hardware | None = None) -> StartingPoint:
    """The network and optimizer finished run ``run_id`` started training from (:func:`runner.run_start`:
    its plan's start with its signs; its mask not yet applied), with what a replay needs. ``hardware``:
    by default the run's own (:func:`recorded_hardware`)."""
    store = RunStore(out, create=False)
    if not store.is_done(run_id):
        raise ValueError(f"run {run_id} has not finished in {store.root}: only a finished run can be replayed")
    hardware = hardware if hardware is not None else recorded_hardware(out, run_id)
    folder = store.dir(run_id)
    spec = RunSpec.from_config(load_json(folder / "config.json", what="run config"))
    if spec.setup["recipe"].get("optimizer") == "adam" and "adam_update" not in spec.setup:
        raise ValueError(f"run {run_id} in {store.root} was trained with Adam's foreach update (rewindkit before "
                         f"2026-12-06); this rewindkit steps Adam with the {ADAM_UPDATE!r} update, so a replay cannot "
                         f"reproduce it bit for bit. Run its grid again (Adam runs now have other ids) and replay the "
                         f"new run; the old run folders can be deleted.")
    ds = load_dataset(spec.setup, hardware.device)
    build = model_builder(spec.setup, ds)
    recipe = Recipe(**spec.setup["recipe"])
    plan = spec.plan(recipe.schedule(ds.n_train), recipe.fine_tune_lr)
    mask = Mask.load(folder / "mask.pt") if (folder / "mask.pt").exists() else None
    model, optimizer, _ = run_start(store, spec, plan, build, recipe, mask, hardware)
    return StartingPoint(spec, ds, build, recipe, plan, mask, model, optimizer)


def replay(out, run_id: str, hardware: Hardware | None = None, *,
           on_start: Callable[[torch.nn.Module, Mask | None], None] | None = None,
           on_epoch: Callable | None = None) -> torch.nn.Module:
    """Retrain finished run ``run_id`` of results folder ``out`` in memory and return its network.

    ``on_start(model, mask)`` sees the start (before the mask zeroes anything); ``on_epoch(record,
    model, optimizer)`` is the training loop's hook at every epoch boundary. Nothing is evaluated
    and nothing is written. ``hardware`` (by default the settings the run recorded,
    :func:`recorded_hardware`) must compute as the run's did for the bitwise check to hold."""
    hardware = hardware if hardware is not None else recorded_hardware(out, run_id)
    start = starting_point(out, run_id, hardware)
    if on_start is not None:
        on_start(start.model, start.mask)
    spec = start.spec
    run_plan(start.build, start.data, start.recipe, start.plan, seed=spec.seed, data_seed=spec.resolved_data_seed,
             mask=start.mask, resume=(start.model, start.optimizer, start.plan.start_step), hardware=hardware,
             on_epoch=on_epoch, evaluate_every_epoch=False, evaluate_at_end=False, progress=False,
             description=f"replay {spec.label()}")
    model, folder = start.model, RunStore(out, create=False).dir(run_id)
    stored = load_tensor_dict(folder / "final.pt", what=f"final weights of run {run_id}")
    state = model.state_dict()
    differ = [k for k in stored if not torch.equal(state[k].detach().cpu(), stored[k])]
    if differ:
        raise ReplayMismatchError(f"replaying run {run_id} ({spec.label()}) did not reproduce its final weights "
                                  f"({len(differ)} tensors differ, e.g. {differ[0]!r}); was it computed with other "
                                  f"hardware settings than {hardware}?")
    return model
