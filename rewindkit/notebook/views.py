"""What the notebooks show of runs, plans and costs — used by nothing else in the kit: a profile's
LR schedule, a run's ``metrics.csv``, a finished run's network rebuilt from its own ``config.json``,
the techniques' plan table (§1), the GPU-hours of the paper's grids on every GPU of the throughput
table, and translations of a few test sentences."""

from __future__ import annotations

import json

import pandas as pd
import torch

from ..core.masks import Mask
from ..core.recipe import Recipe
from ..core.techniques import LABELS, RetrainPlan
from ..data.translation import TranslationData, translate
from ..engine.costs import grid_cost, load_throughput, workload
from ..engine.profiles import Profile, get_profile
from ..engine.runner import load_dataset, model_builder
from ..engine.runs import RunStore, setup_from_profile
from ..paper.reference import FIGURE_DENSITIES
from ..platform.storage import load_tensor_dict


def lr_schedule(profile: Profile):
    """The per-iteration learning-rate schedule of ``profile`` on its training set."""
    setup = setup_from_profile(profile)
    return Recipe(**setup["recipe"]).schedule(load_dataset(setup, "cpu").n_train)


def retrain_time(profile: Profile, fraction: float) -> int:
    """The retraining time t in whole epochs (at least 1) for a ``fraction`` 0 < f ≤ 1 of T (notebook 02)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"t_fraction must be a fraction of T in (0, 1], e.g. 0.5; got {fraction!r}")
    return max(1, round(fraction * profile.recipe.epochs))


def run_metrics(out, run_id: str) -> pd.DataFrame:
    """One run's per-epoch ``metrics.csv``. For a finished run its last row must hold the run's final
    metrics and last step (``result.json``): a file cut short or edited is refused, never drawn as the run."""
    store = RunStore(out, create=False)
    path = store.dir(run_id) / "metrics.csv"
    if not path.exists():
        raise FileNotFoundError(f"no metrics for run {run_id} in {out}")
    table = pd.read_csv(path)
    if store.is_done(run_id):
        result = store.result(run_id)
        final = result["row"]
        last = table.iloc[-1] if len(table) else None
        agree = last is not None and all(
            _same_number(last.get(key), final.get(key)) for key in ("test_acc", "val_acc"))
        if agree and "final_step" in result:  # runs finished since 2026-12-06 record their last step
            agree = _same_number(last.get("step"), result["final_step"])
        if not agree:
            raise ValueError(f"{path} does not end with run {run_id}'s final metrics (result.json: test "
                             f"{final.get('test_acc')!r}, validation {final.get('val_acc')!r}; the file's last row: "
                             f"{None if last is None else dict(last)}; its last step: {result.get('final_step', 'not recorded')}): it "
                             f"was cut short or edited. Delete the folder "
                             f"{store.dir(run_id)} and run the grid again to retrain it.")
    return table


def _same_number(a, b) -> bool:
    """Equal floats, or both missing (NaN/None: a run that evaluates at the end only has no curve)."""
    missing = [x is None or (isinstance(x, float) and x != x) for x in (a, b)]
    return all(missing) if any(missing) else float(a) == float(b)


def load_model(out, run_id: str, device="cpu") -> torch.nn.Module:
    """A finished run's network with its final weights, rebuilt from the run's own ``config.json``
    (network, options and data as that run had them, whatever the profile says now; a plain
    state_dict, no pickles). A run of a plug-in needs the plug-in registered in this process."""
    folder = RunStore(out, create=False).dir(run_id)
    setup = json.loads((folder / "config.json").read_text())["setup"]
    model = model_builder(setup, load_dataset(setup, device))()
    model.load_state_dict(load_tensor_dict(folder / "final.pt", what=f"final weights of run {run_id}"))
    return model.to(device)


def run_mask(out, run_id: str) -> Mask:
    """A finished retraining run's mask (``mask.pt``)."""
    return Mask.load(RunStore(out, create=False).dir(run_id) / "mask.pt")


def plan_rows(plans: dict[str, RetrainPlan]) -> list[dict]:
    """One row per plan for display: where it starts, which iterations, which learning rates (§1)."""
    return [{"technique": LABELS.get(name, name), "starts from": p.start_from.value, "rewind to iteration": p.rewind_step,
             "iterations": f"{p.start_step} → {p.stop_step}",
             "LR": "schedule replayed" if p.constant_lr is None else f"constant {p.constant_lr:g}"}
            for name, p in plans.items()]


# The grids whose cost a reader asks about first (issue 13): (what, profile, kind, profile overrides).
# The ResNet-56 accuracy-vs-time figure is the paper's core techniques at the four densities that
# notebook 03 draws: 3 techniques × 4 densities × 10 t × 3 seeds = 360 retraining runs.
NAMED_GRIDS = (
    ("ResNet-56 one-shot accuracy-vs-time figure", "paper", "one_shot",
     {"techniques": ("fine_tuning", "weight_rewinding", "lr_rewinding"),
      "densities": FIGURE_DENSITIES}),
    ("cifar_short one-shot grid", "cifar_short", "one_shot", {}),
    ("paper one-shot grid", "paper", "one_shot", {}),
)


def device_costs(device: str, table: pd.DataFrame | None = None, grids=NAMED_GRIDS) -> pd.DataFrame:
    """Runs, epochs and device-hours of each of ``grids`` on ``device`` (a name in the throughput
    table, e.g. ``"NVIDIA H100 80GB HBM3"``), one row per packing measured there. Evaluation time
    is not counted."""
    table = load_throughput() if table is None else table
    rows = []
    for what, name, kind, overrides in grids:
        profile = get_profile(name, **overrides)
        cost = grid_cost(profile, kind)
        measured = table[(table["workload"] == workload(profile)) & (table["device"] == device)]
        for _, row in measured.sort_values("packing").iterrows():
            hours = cost.epochs * float(row["seconds_per_epoch"]) / int(row["packing"]) / 3600
            rows.append({"grid": what, "profile": name, "runs": cost.runs, "training epochs": cost.epochs,
                         "runs at once": int(row["packing"]), "s per epoch per run": float(row["seconds_per_epoch"]),
                         "device-hours": round(hours, 1), "measured with": row["hardware"]})
    return pd.DataFrame(rows, columns=["grid", "profile", "runs", "training epochs", "runs at once",
                                       "s per epoch per run", "device-hours", "measured with"])


def measured_gpus(table: pd.DataFrame | None = None) -> list[str]:
    """The GPUs the throughput table has rows for (every device not named ``cpu: …``)."""
    table = load_throughput() if table is None else table
    return sorted(d for d in table["device"].unique() if not str(d).startswith("cpu:"))


def gpu_costs(table: pd.DataFrame | None = None, grids=NAMED_GRIDS) -> pd.DataFrame:
    """:func:`device_costs` on every GPU of the throughput table, a ``device`` column first (what
    notebook 10 and the README show; no GPU's name written into either)."""
    table = load_throughput() if table is None else table
    frames = [device_costs(gpu, table, grids).assign(device=gpu) for gpu in measured_gpus(table)]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[["device"] + [c for c in out.columns if c != "device"]]



def translation_examples(data: TranslationData, split: str = "test", n: int = 6, models: dict | None = None):
    """The first ``n`` pairs of ``split`` as a table (source, reference) with, per named model in
    ``models``, its greedy translation — what a pruned network still gets right."""
    table = pd.DataFrame({"source": data.decode(data._get(split, "src")[:n], side="source"),
                          "reference": data.references(split)[:n]})
    for name, model in (models or {}).items():
        table[name] = translate(model, data.subset(n_eval=n) if split != "train" else data, split)[:n]
    return table


