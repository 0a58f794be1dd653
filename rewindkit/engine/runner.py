"""Executing one run to completion (:func:`execute`): load its data and starting state, prune,
train, write its files. Every file is written atomically, so a run killed at any moment resumes from
its last checkpoint and a finished run (one with ``result.json``) is never recomputed.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from .. import data, models

from ..platform import distributed, registry
from ..core.batches import DataProtocolError, check_training_data
from ..core.flops import forward_flops
from ..platform.hardware import Hardware, prepare_model
from ..core.masks import Mask, PrunableNameError, prunable_weight_names, unpruned_matrices
from ..core.pruning import FilterPruning
from ..core.metrics import evaluate, metric_of_network
from ..core.recipe import Recipe
from .runs import RunSpec, RunStore, canonical_json, provenance
from ..core.schedules import StepSchedule
from ..platform.storage import (CorruptFileError, atomic_torch_save, atomic_write_json, atomic_write_text, exclusive,
                                load_json, load_tensor_dict, load_torch)
from ..core.seeds import derive_seed, seeded_global_generators
from ..core.signs import impose_signs
from ..core.techniques import RetrainPlan, StartFrom, dense_plan, load_state, rewind_steps_needed, run_plan, start_state
from ..core.training import GLOBAL_RNG_LOCK, EpochRecord, TrainState, make_optimizer, snapshot

_DATA_CACHE: dict[str, data.Dataset] = {}
_DATA_LOCK = threading.Lock()  # packed runs (threads) load each dataset once


def load_dataset(setup: dict, device) -> data.Dataset:
    """The setup's data on ``device``, loaded once per process: the cache key holds everything the
    data depend on, a dataset plug-in's fingerprint included (a changed plug-in is loaded anew)."""
    plugin = setup.get("plugins", {}).get(f"dataset:{setup['dataset']}")
    key = canonical_json([setup["dataset"], setup["dataset_options"], setup["n_train"], setup["n_eval"],
                          str(device), str(data.data_dir()), plugin])
    with _DATA_LOCK:
        if key not in _DATA_CACHE:
            if plugin is None:  # the kit's own data: generated from their own seeds
                ds = data.load(setup["dataset"], **setup["dataset_options"])
            else:  # a user's loader that draws without a seed of its own gets the same data in every process
                with seeded_global_generators(derive_seed("dataset", setup["dataset"], canonical_json(setup["dataset_options"]))):
                    ds = data.load(setup["dataset"], **setup["dataset_options"])
            missing = _protocol_problems(ds)
            if missing:
                raise DataProtocolError(f"dataset {setup['dataset']!r} loaded a {type(ds).__name__}, which lacks "
                                        f"{', '.join(missing)} of the training-data protocol "
                                        f"(rewindkit.core.batches.TrainingData)")
            if not ds.n_train:
                raise DataProtocolError(f"dataset {setup['dataset']!r} has no training examples (n_train = {ds.n_train})")
            if setup["n_train"] is not None or setup["n_eval"] is not None:
                ds = ds.subset(setup["n_train"], setup["n_eval"])
            _DATA_CACHE[key] = ds.to(device)
            if torch.device(device).type == "cuda":  # other packed threads read it from their own streams
                torch.cuda.current_stream(device).synchronize()
        return _DATA_CACHE[key]


def model_builder(setup: dict, ds: data.Dataset) -> Callable[[], torch.nn.Module]:
    def build():
        # packed runs (threads) share torch's global generator: a build draws under the lock, and leaves
        # it as it was (init_model seeds inside; a probe's draws are overwritten by the weights it loads)
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            return models.build(setup["network"], ds, **setup["model_options"])
    return build


def check_grid_pruning(specs) -> None:
    """Refuse, before anything trains or is written, what a grid's runs could not prune as asked:
    :func:`check_filter_pruning` and :func:`check_kept_counts`."""
    check_filter_pruning(specs)
    check_kept_counts(specs)


_NOT_BUILT = object()


def _untrained_network(setup: dict):
    """The network of ``setup``, untrained, to look at before a grid trains: the kit's vision
    networks without their data (their shapes do not depend on it), a plug-in network from its data,
    as its runs build it; None for a network of the kit's built for its data (GNMT), ``_NOT_BUILT``
    where torchvision does not import."""
    network, options = setup["network"], setup["model_options"]
    if network in registry.user_names("network"):
        return model_builder(setup, load_dataset(setup, "cpu"))()
    if network in models.MODELS:
        try:
            return models.vision_network(network, **options)
        except (ImportError, RuntimeError):  # torchvision's networks where torchvision does not import
            return _NOT_BUILT
    return None


def check_kept_counts(specs) -> None:
    """Refuse densities that keep no weight of the network, or the same number of weights as another
    density of the same grid (the rounded count ⌊d·N + ½⌋ of its N prunable weights, §3.1): their runs
    would be one pruning twice, and the tables would count them as two trials of one cell. Checked
    where the network or the data are the user's (a small prunable set, a long chain), with the
    network built from its data as its runs build it; the kit's own networks on the kit's own data
    have thousands of prunable weights or more, and building them for their data at ``--plan`` would
    load CIFAR-10 or ImageNet."""
    wanted: dict[str, tuple[dict, set]] = {}
    for spec in specs:
        density = getattr(spec.pruning, "density", None)
        if density is not None:
            wanted.setdefault(canonical_json(spec.setup), (spec.setup, set()))[1].add(
                (spec.pruning_schedule, spec.level, density))
    for setup, cells in wanted.values():
        users = (setup["network"] in registry.user_names("network") or setup["dataset"] in registry.user_names("dataset"))
        if not users:
            continue
        with warnings.catch_warnings():  # an empty layer is refused by name (check_run_setup), not by torch's warning
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            model = model_builder(setup, load_dataset(setup, "cpu"))()
        with _named_network(setup["network"]):
            n = sum(dict(model.named_parameters())[name].numel() for name in prunable_weight_names(model))
        if n == 0:
            continue  # nothing to prune: the dense run's check names it (check_run_setup)
        seen: dict[tuple, tuple] = {}
        for schedule, level, density in sorted(cells, key=lambda c: (str(c[0]), -c[2])):
            kept = math.floor(density * n + 0.5)
            what = f"iterative level {level} (density {density:.6g})" if schedule == "iterative" else f"density {density:g}"
            if kept < 1:
                raise ValueError(f"{what} keeps none of the {n:,} prunable weights of network {setup['network']!r}; "
                                 f"the smallest density that keeps one is 0.5/{n:,} = {0.5 / n:.3g} (one weight: {1 / n:.3g})")
            other = seen.get((schedule, kept))
            if other is not None and other[1] != density:
                fewer = (f"; this network has room for iterative_levels={other[0]}" if schedule == "iterative" else "")
                first = (f"iterative level {other[0]}" if schedule == "iterative" else f"density {other[1]:g}")
                raise ValueError(f"{first} and {what} both keep {kept:,} of the {n:,} prunable weights of network "
                                 f"{setup['network']!r}: one pruning twice, which the tables would count as two trials"
                                 f"{fewer}")
            seen[(schedule, kept)] = (level, density)


def check_filter_pruning(specs) -> None:
    """Refuse, before anything trains or is written, L1-filter pruning (§3.2) of a network it cannot
    prune: each network a structured run prunes is built once, untrained, and pruned at each of its
    configurations and levels."""
    tried = set()
    for spec in specs:
        if not isinstance(spec.pruning, FilterPruning):
            continue
        network = spec.setup["network"]
        key = (canonical_json(spec.setup), canonical_json(spec.pruning.to_dict()))
        if key in tried:
            continue
        tried.add(key)
        model = _untrained_network(spec.setup)
        if model is _NOT_BUILT:
            continue
        try:
            if model is None:
                raise ValueError(f"{network} is not a residual network")
            spec.pruning.apply(model)
        except ValueError as err:
            raise ValueError(f"the structured grid cannot prune network {network!r} at {spec.pruning.describe()}: "
                             f"{err}") from None


def _write_metrics(rows: list[dict], path: Path) -> None:
    atomic_write_text(pd.DataFrame(rows, columns=["epoch", "step", "lr", "train_loss", "val_acc", "test_acc"])
                      .to_csv(index=False), path)


def _mask(store: RunStore, spec: RunSpec, build) -> Mask:
    """Prune the final weights of ``spec``'s parent (under the parent's mask, if it has one)."""
    parent = store.dir(spec.parent)
    probe = build()
    probe.load_state_dict(load_tensor_dict(parent / "final.pt", what=f"final weights of run {spec.parent}"))
    parent_mask = Mask.load(parent / "mask.pt") if (parent / "mask.pt").exists() else None
    with _named_network(spec.setup["network"]):
        return spec.pruning.apply(probe, parent_mask)


@contextlib.contextmanager
def _named_network(network: str):
    """A network's bad ``prunable`` rule, refused with the network's name."""
    try:
        yield
    except PrunableNameError as err:
        raise PrunableNameError(f"network {network!r}: {err}") from None


def _final_state(store: RunStore, run_id: str, step: int) -> TrainState:
    folder = store.dir(run_id)
    return TrainState(load_tensor_dict(folder / "final.pt", what=f"final weights of run {run_id}"),
                      load_torch(folder / "final_optimizer.pt", what=f"optimizer state of run {run_id}"), step)


def rewind_checkpoint(store: RunStore, dense_id: str, step: int, hardware: Hardware) -> TrainState:
    """The dense run's state at iteration ``step``; regenerated deterministically by replaying from
    the nearest earlier saved checkpoint if the finished dense run did not save it (no evaluation)."""
    folder = store.dir(dense_id) / "rewind"
    path = folder / f"step_{step}.pt"
    if not path.exists():
        saved = sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.pt"))
        earlier = [s for s in saved if s <= step]
        if not earlier:
            raise CorruptFileError(f"dense run {dense_id} has no checkpoint at or before iteration {step} in {folder}")
        spec = RunSpec.from_config(load_json(store.dir(dense_id) / "config.json", what="run config"))
        ds = load_dataset(spec.setup, hardware.device)
        recipe = Recipe(**spec.setup["recipe"])
        start = TrainState.from_dict(load_torch(folder / f"step_{earlier[-1]}.pt", what="rewind checkpoint"))
        model = prepare_model(model_builder(spec.setup, ds)(), hardware)
        optimizer = make_optimizer(model, recipe, hardware)
        load_state(model, optimizer, start)
        replay = replace(dense_plan(recipe.schedule(ds.n_train)), stop_step=step)
        run_plan(model_builder(spec.setup, ds), ds, recipe, replay, seed=spec.seed, data_seed=spec.resolved_data_seed,
                 resume=(model, optimizer, start.step), hardware=hardware, save_at={step}, progress=False,
                 evaluate_every_epoch=False, evaluate_at_end=False,
                 on_save=lambda s: atomic_torch_save(s.to_dict(), path))
        distributed.barrier()  # rank 0 wrote the checkpoint; every rank reads it next
    return TrainState.from_dict(load_torch(path, what="rewind checkpoint"))


def run_start(store: RunStore, spec: RunSpec, plan: RetrainPlan, build, recipe: Recipe, mask: Mask | None,
          hardware: Hardware) -> tuple[torch.nn.Module, torch.optim.Optimizer, int]:
    """Model, optimizer and iteration where ``spec`` starts training (:func:`techniques.start_state`
    of its plan: a fresh initialisation, its parent's final state, or the dense run's checkpoint at
    T − t), with the dense run's final signs imposed on the surviving weights where the run asks for
    them (``signs="dense"``: Gadhikar & Burkholz, ICLR 2024; :func:`rewindkit.core.signs.impose_signs`)."""
    final = _final_state(store, spec.parent, plan.schedule.total_steps) if plan.start_from is StartFrom.FINAL else None
    rewind = rewind_checkpoint(store, spec.dense, plan.rewind_step, hardware) if plan.rewind_step is not None else None
    model, optimizer = start_state(build, recipe, plan, seed=spec.seed, final=final, rewind=rewind, hardware=hardware)
    if spec.signs == "dense":
        impose_signs(model, load_tensor_dict(store.dir(spec.dense) / "final.pt", what=f"final weights of run "
                                                                                    f"{spec.dense}"), mask)
    return model, optimizer, plan.start_step


def check_run_setup(setup: dict, ds, build, hardware: Hardware = Hardware()) -> None:
    """Before a run trains (paper §3.1 needs something to prune): the network has prunable tensors;
    the data follow the training-data protocol at the first batch, the network taking them
    (:func:`rewindkit.core.batches.check_training_data`); the network's metric exists, and a metric of
    the user's own gives a valid value on the untrained network. Each error names its source."""
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # a look at the network
        # draws nothing of the run's; an empty layer is refused below by name, so torch's own warning
        # about it would only come first (a run that goes on builds the network again, warnings and all)
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        model = build()
        lazy = [n for n, p in model.named_parameters() if isinstance(p, torch.nn.parameter.UninitializedParameter)]
        if lazy:
            raise ValueError(f"network {setup['network']!r}: its parameter {lazy[0]!r} is not made yet (a Lazy "
                             f"layer); the kit prunes and saves the weights a builder returns, so make them in the "
                             f"builder: nn.Linear(in, out) with the size from data.input_shape, or run "
                             f"model(torch.zeros(1, *data.input_shape)) before returning it")
        model = prepare_model(model, hardware)
    with _named_network(setup["network"]):
        prunable = prunable_weight_names(model)
    left_out = unpruned_matrices(model) if getattr(model, "prunable", None) is None else []
    if prunable and left_out:
        warnings.warn(f"network {setup['network']!r}: {len(left_out)} parameter(s) with two or more dimensions are "
                      f"not weights of Conv1d/2d/3d or Linear layers and will not be pruned: {', '.join(left_out[:6])}"
                      f"{', …' if len(left_out) > 6 else ''}. Global magnitude pruning (§3.1) prunes the weights of "
                      f"Conv1d/2d/3d and Linear layers by default (not ConvTranspose, attention, recurrent or embedding "
                      f"matrices); to prune these too, register_network(..., prunable=lambda model: "
                      f"[parameter names])", UserWarning, stacklevel=2)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    empty = [n for n in prunable if 0 in shapes[n]]
    if empty:
        raise ValueError(f"network {setup['network']!r} with model_options {setup['model_options']}: its prunable "
                         f"tensor {empty[0]!r} has shape {shapes[empty[0]]}, no weights to prune or train (a layer "
                         f"of width 0?)")
    if not prunable and getattr(model, "prunable", None) is not None:
        raise ValueError(f"network {setup['network']!r}: its prunable rule gave no parameter names, so there is "
                         f"nothing to prune; its parameters are {', '.join(shapes)}")
    if not prunable:
        raise ValueError(f"network {setup['network']!r} has no prunable tensor: global magnitude pruning (§3.1) prunes "
                         f"the weights of Conv and Linear layers, and this network has none. Declare what may be "
                         f"pruned with register_network(..., prunable=lambda model: [parameter names])")
    dataset = registry.get("dataset", setup["dataset"])
    check_training_data(ds, Recipe(**setup["recipe"]).batch_size, setup["dataset"], model, setup["network"],
                        count_epoch=dataset is None or not dataset.builtin)
    name = getattr(model, "metric", None) or getattr(ds, "metric", None) or "accuracy"
    try:
        metric = registry.lookup("metric", name)
    except ValueError as err:
        raise ValueError(f"network {setup['network']!r} on dataset {setup['dataset']!r} is evaluated by {err}") from None
    if not metric.builtin:
        for split in ("val", "test"):  # its value checked (finite, within its range) on both splits before any training
            evaluate(model, ds, split, hardware)


def _protocol_problems(ds) -> list[str]:
    """What a loaded dataset lacks of the training-data protocol (:class:`rewindkit.core.batches.TrainingData`)."""
    return [name for name in ("batches", "eval_batches", "n_train", "input_shape", "split_size", "to", "subset",
                              "num_classes") if not hasattr(ds, name)]


def execute(spec: RunSpec, root, hardware: Hardware = Hardware(), rewinds=(), log=None) -> dict:
    """Run ``spec`` to completion in ``root`` (resuming if it was interrupted); return its result.
    ``rewinds``: for a dense run, the (technique, t) of the retraining runs that will rewind to it;
    it saves the checkpoints T − t they need (computed here, from the run's own schedule)."""
    store = RunStore(root, create=False)  # the folder's marker is written once the run passed its checks
    run_id = spec.id
    folder = store.dir(run_id)
    if store.is_done(run_id):
        return store.result(run_id)
    # everything that can be refused is checked before the run's folder is made: the schedule (a
    # plug-in's every LR), the plan, and for a dense run the network and the data protocol
    ds = load_dataset(spec.setup, hardware.device)
    build = model_builder(spec.setup, ds)
    recipe = Recipe(**spec.setup["recipe"])
    schedule = recipe.schedule(ds.n_train)  # the run's schedule and plan, computed once
    plan = spec.plan(schedule, recipe.fine_tune_lr)  # the dense run is a plan too: 0 → T from initialisation
    if spec.is_dense:
        check_run_setup(spec.setup, ds, build, hardware)
    mask = _mask(store, spec, build) if spec.pruning is not None else None  # a pruning it cannot do: refused here
    store = RunStore(root)
    folder.mkdir(parents=True, exist_ok=True)
    if distributed.is_distributed():  # every rank trains this run together: no lock between them
        return _train(spec, store, folder, ds, build, recipe, schedule, plan, mask, hardware, rewinds, log)
    with exclusive(folder / ".training.lock"):  # one process trains a run; another asking for it waits
        if store.is_done(run_id):  # trained by another process (a second notebook, say) while this one waited
            return store.result(run_id)
        return _train(spec, store, folder, ds, build, recipe, schedule, plan, mask, hardware, rewinds, log)


def _train(spec: RunSpec, store: RunStore, folder: Path, ds, build, recipe: Recipe, schedule, plan,
           mask: Mask | None, hardware: Hardware, rewinds, log) -> dict:
    """:func:`execute` once the run's checks passed and this process holds the run: resume or start,
    train, write the result."""
    run_id = spec.id
    started = time.time()
    config = spec.config()
    if (folder / "config.json").exists():
        if load_json(folder / "config.json", what="run config") != json.loads(canonical_json(config)):
            raise CorruptFileError(f"{folder / 'config.json'} does not match run {run_id}; delete the folder")
    else:
        atomic_write_json(config, folder / "config.json")

    if mask is not None:
        mask.save(folder / "mask.pt")

    checkpoint_path = folder / "checkpoint.pt"
    rows = []
    if checkpoint_path.exists():
        ckpt = load_torch(checkpoint_path, what=f"checkpoint of run {run_id}")
        model = prepare_model(build(), hardware)
        optimizer = make_optimizer(model, recipe, hardware)
        load_state(model, optimizer, TrainState.from_dict(ckpt))  # the one path to a state (kernel flags, layouts)
        resume, rows = (model, optimizer, int(ckpt["step"])), list(ckpt["rows"])
    else:
        resume = run_start(store, spec, plan, build, recipe, mask, hardware)
    stop = plan.stop_step
    # a dense run also keeps iteration 0, from which any rewind point a later grid asks for is replayed
    save_at = ({0} | rewind_steps_needed_by(rewinds, schedule)) if spec.is_dense else set()

    def on_save(state: TrainState):
        atomic_torch_save(state.to_dict(), folder / "rewind" / f"step_{state.step}.pt")

    def on_epoch(record: EpochRecord, model, optimizer):
        rows.append({"epoch": record.epoch, "step": record.step, "lr": record.lr, "train_loss": record.train_loss,
                     "val_acc": record.val_acc, "test_acc": record.test_acc})
        _write_metrics(rows, folder / "metrics.csv")
        if record.step < stop:
            atomic_torch_save({**snapshot(model, optimizer, record.step).to_dict(), "rows": rows}, checkpoint_path)

    model, optimizer, _ = run_plan(build, ds, recipe, plan, seed=spec.seed, data_seed=spec.resolved_data_seed, mask=mask,
                                   resume=resume, hardware=hardware, save_at=save_at,
                                   on_save=on_save, on_epoch=on_epoch,
                                   evaluate_every_epoch=spec.setup.get("evaluate_every_epoch", True), log=log,
                                   progress=False, description=spec.label())

    final = snapshot(model, optimizer, stop)
    atomic_torch_save(final.model, folder / "final.pt")
    atomic_torch_save(final.optimizer, folder / "final_optimizer.pt")
    last = rows[-1] if rows else {"test_acc": float("nan"), "val_acc": float("nan")}
    spe = schedule.steps_per_epoch
    metric = metric_of_network(spec.setup["network"])
    row = {"network": spec.setup["network"], "test_acc": last["test_acc"], "val_acc": last["val_acc"],
           "flops": _flops(model, ds, mask), "epochs": plan.steps / spe,
           "level": spec.level, "run_id": run_id, "trial": spec.seed,
           "metric": metric.name, "metric_label": metric.label, "metric_scale": metric.scale}
    if spec.pruning is not None:
        row.update(pruning=spec.pruning.label, schedule=spec.pruning_schedule, technique=spec.technique,
                   density=mask.density(), retrain_time=spec.retrain_time)
    result = {"kind": config["kind"], "row": row, "final_step": stop, "seconds": time.time() - started,
              "provenance": provenance(hardware)}
    atomic_write_json(result, folder / "result.json")
    if distributed.is_primary():
        checkpoint_path.unlink(missing_ok=True)
    distributed.barrier()  # later runs read this run's files on every rank
    return result




def _flops(model, ds, mask) -> float | None:
    """Forward FLOPs of one example (:func:`rewindkit.core.flops.forward_flops`) for any network that takes
    one input tensor of the data's ``input_shape``; None where there is no such shape (translation)."""
    shape = getattr(ds, "input_shape", None)
    if not isinstance(shape, tuple) or not shape:
        return None
    try:
        return forward_flops(model, shape, mask)
    except Exception:  # a network that takes several inputs, or other shapes: no count rather than a guess
        return None


def rewind_steps_needed_by(rewinds, schedule: StepSchedule) -> set[int]:
    """The iterations T − t at which a dense run saves checkpoints for the (technique, t) that rewind to it."""
    steps = set()
    for technique, t in rewinds:
        steps |= rewind_steps_needed([t], schedule, [technique])
    return steps
