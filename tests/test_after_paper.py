"""Notebook 12's library (issue 23 §2): random masks keep magnitude pruning's counts exactly; the
sign-imposed start has the dense signs on every surviving weight and the start's magnitudes; random
masks and imposed signs are part of each run's id while every earlier id stays as it was; a replay
ends on the stored weights bit for bit; the tables."""
import json

import pytest
import torch

from helpers import one_thread
from rewindkit import experiments as E
from rewindkit import models
from rewindkit.core import pruning
from rewindkit.core.masks import Mask
from rewindkit.core.signs import impose_signs, sign_differences, with_signs
from rewindkit.engine.replay import ReplayMismatchError, replay, starting_point
from rewindkit.notebook import after_paper as ap
from rewindkit.profiles import get_profile
from rewindkit.techniques import CORE_TECHNIQUES

SMOKE = get_profile("smoke")


def net(seed=0):
    torch.manual_seed(seed)
    return models.vision_network("mnist1d_resnet", depth=8, width=8)


@pytest.mark.parametrize("density", [0.41, 0.168, 0.0687, 0.028])
def test_random_masks_keep_magnitudes_counts_exactly(density):
    model = net()
    magnitude = pruning.global_magnitude(model, density)
    layers = pruning.RandomPruning.for_trial(density, "magnitude", 1).apply(model)
    uniform = pruning.RandomPruning.for_trial(density, "uniform", 1).apply(model)
    assert {n: int(layers[n].sum()) for n in layers} == {n: int(magnitude[n].sum()) for n in magnitude}
    assert uniform.num_kept() == layers.num_kept() == magnitude.num_kept()
    assert not layers.equal(magnitude) and not uniform.equal(magnitude)
    # under a parent mask: a subset of it, still magnitude's counts (the parent's zeros count as zero)
    parent = pruning.global_magnitude(model, 0.5)
    child = pruning.RandomPruning.for_trial(density, "magnitude", 1).apply(model, parent)
    assert child.is_subset_of(parent)
    wanted = pruning.global_magnitude(model, density, parent)
    assert {n: int(child[n].sum()) for n in child} == {n: int(wanted[n].sum()) for n in wanted}


def test_random_pruning_description_seed_identity_and_errors():
    a = pruning.RandomPruning.for_trial(0.168, "magnitude", 1)
    assert a == pruning.RandomPruning.for_trial(0.168, "magnitude", 1)  # every technique of a trial: one mask
    assert a.seed != pruning.RandomPruning.for_trial(0.168, "magnitude", 2).seed
    assert a.seed != pruning.RandomPruning.for_trial(0.168, "uniform", 1).seed
    assert a.apply(net()).equal(a.apply(net()))
    assert pruning.pruning_from_dict(a.to_dict()) == a and a.to_dict()["method"] == "random"
    assert (a.label, pruning.RandomPruning(0.5, "uniform", 3).label) == ("random_magnitude", "random_uniform")
    assert pruning.unstructured_pruning("global_magnitude", 0.5, 1) == pruning.GlobalMagnitude(0.5)
    assert pruning.unstructured_pruning("random_uniform", 0.5, 7) == pruning.RandomPruning.for_trial(0.5, "uniform", 7)
    with pytest.raises(ValueError, match="unknown random-mask layers 'layerwise'; valid: magnitude, uniform"):
        pruning.RandomPruning(0.5, "layerwise", 1)
    with pytest.raises(ValueError, match="unknown unstructured pruning 'random'; valid: global_magnitude, "
                                         "random_magnitude, random_uniform"):
        pruning.unstructured_pruning("random", 0.5, 1)
    with pytest.raises(ValueError, match="unknown pruning 'snip'; valid: global_magnitude"):
        get_profile("smoke", pruning="snip")
    with pytest.raises(ValueError, match="unknown signs 'final'; valid: None .* or 'dense'"):
        get_profile("smoke", signs="final")


def test_imposed_signs_are_the_references_on_every_surviving_weight_with_the_starts_magnitudes():
    start, reference = net(0), net(1)
    mask = pruning.global_magnitude(reference, 0.2)
    before = {n: p.detach().clone() for n, p in start.named_parameters()}
    ref = reference.state_dict()
    impose_signs(start, ref, mask)
    after = dict(start.named_parameters())
    for n, p in after.items():
        if n not in mask:
            assert torch.equal(p, before[n]), n  # biases and normalisation untouched
            continue
        keep = mask[n]
        assert torch.equal(p[keep].abs(), before[n][keep].abs())
        assert torch.equal(torch.sign(p[keep]), torch.sign(ref[n][keep]))
        assert torch.equal(p[~keep], before[n][~keep])  # the mask zeroes these when training starts
    assert sign_differences(dict(after), ref, mask) == 0.0 < sign_differences(before, ref, mask)
    zero = torch.tensor([0.0, 2.0, -3.0])
    assert torch.equal(with_signs(torch.tensor([1.0, 1.0, 1.0]), zero, torch.ones(3, dtype=torch.bool)),
                       torch.tensor([1.0, 1.0, -1.0]))  # a zero reference has no sign to give


def test_notebook_12_reuses_notebook_03s_runs_and_new_runs_get_new_ids():
    laptop = get_profile("laptop")
    grids = ap.grid_profiles(laptop)
    ids03 = {s.id for s in E.grid_specs(laptop, "one_shot")}
    step = E.grid_specs(grids["step"], "one_shot")
    assert {s.id for s in step} <= ids03 and len({s.id for s in step if not s.is_dense}) == (
        len(ap.SCHEDULE_DENSITIES) * len(ap.CORE_TECHNIQUES) * len(laptop.retrain_times) * len(laptop.seeds))  # 3·3·4·3
    assert {s.id for s in E.grid_specs(grids["global_magnitude"], "one_shot")} <= ids03
    new = [s for label in ("cosine", "linear", "one_cycle", "random_magnitude", "random_uniform", ap.SIGNS_GRID)
           for s in E.grid_specs(grids[label], "one_shot") if not s.is_dense]
    assert not {s.id for s in new} & ids03 and len({s.id for s in new}) == len(new)
    signed = [s for s in new if s.signs]
    assert signed and all(s.config()["signs"] == "dense" and s.technique == "weight_rewinding" for s in signed)
    assert all("signs" not in s.config() for s in step)  # left out: the ids of every earlier run stay
    plain = {(s.seed, s.technique, s.retrain_time, s.pruning): s for s in step}
    for s in signed:
        twin = plain[(s.seed, s.technique, s.retrain_time, s.pruning)]
        assert s.id != twin.id and s.resolved_data_seed != twin.resolved_data_seed  # a stream of its own
        assert s.label() == twin.label() + " signs=dense"
        again = E.RunSpec.from_config(s.config())
        assert again.id == s.id and again.signs == "dense"
    with pytest.raises(ValueError, match="signs are imposed on a retraining run's start; the dense run has none"):
        E.RunSpec(step[0].setup, 1, signs="dense")


@pytest.fixture(scope="module")
def smoke_grids(tmp_path_factory):
    out = tmp_path_factory.mktemp("after_paper")
    with one_thread():
        return out, E.run_grids(ap.grid_profiles(SMOKE), "one_shot", out, progress=False)


def test_random_masks_in_runs_keep_magnitudes_counts_and_one_mask_per_trial(smoke_grids):
    out, grids = smoke_grids
    mags = grids["global_magnitude"].results
    for label in ("random_magnitude", "random_uniform"):
        res = grids[label].results
        assert set(res.pruning) == {label} and set(res.technique) == set(CORE_TECHNIQUES)
        for density, rows in res.groupby(res.density.round(6)):
            masks = [Mask.load(out / "runs" / i / "mask.pt") for i in rows.run_id]
            assert all(m.equal(masks[0]) for m in masks)  # FT, WR and LRR retrain the same random mask
            magnitude = Mask.load(out / "runs" / mags[mags.density.round(6) == density].run_id.iloc[0] / "mask.pt")
            assert masks[0].num_kept() == magnitude.num_kept()
            if label == "random_magnitude":
                assert {n: int(masks[0][n].sum()) for n in masks[0]} == {n: int(magnitude[n].sum()) for n in magnitude}


def test_the_sign_imposed_start_and_the_identity_on_a_start_that_has_the_signs(smoke_grids, tmp_path):
    out, grids = smoke_grids
    signed = grids[ap.SIGNS_GRID].results.iloc[0]
    config = json.loads((out / "runs" / signed.run_id / "config.json").read_text())
    assert config["signs"] == "dense" and config["technique"] == "weight_rewinding"
    start = starting_point(out, signed.run_id, SMOKE.hardware)
    dense = torch.load(out / "runs" / config["dense"] / "final.pt", weights_only=True)
    rewound = torch.load(out / "runs" / config["dense"] / "rewind" / f"step_{start.plan.rewind_step}.pt",
                         weights_only=True)["model"]
    weights = dict(start.model.named_parameters())
    for n in start.mask.weight_names:
        keep = start.mask[n] & (dense[n] != 0)
        assert torch.equal(torch.sign(weights[n][keep]), torch.sign(dense[n][keep]))
        assert torch.equal(weights[n].detach().abs(), rewound[n].abs())
    assert sign_differences(rewound, dense, start.mask) > 0  # the rewound weights did differ
    # fine-tuning starts from the dense final weights: with the same batches, signs="dense" is the plain run
    plain = E.RunSpec.from_config(json.loads((out / "runs" / grids["global_magnitude"].results.query(
        "technique == 'fine_tuning'").run_id.iloc[0] / "config.json").read_text()))
    imposed = E.RunSpec(**{**plain.__dict__, "signs": "dense", "data_seed": plain.resolved_data_seed})
    assert imposed.id != plain.id
    with one_thread():
        E.run_specs([imposed], out, SMOKE.hardware, progress=False)  # the profile's kernels (channels_last)
    a, b = (torch.load(out / "runs" / i / "final.pt", weights_only=True) for i in (plain.id, imposed.id))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_replay_ends_on_the_stored_weights_or_raises(smoke_grids, tmp_path):
    out, grids = smoke_grids
    run_id = grids[ap.SIGNS_GRID].results.run_id.iloc[0]
    epochs = []
    with one_thread():
        # no hardware given: the run's own recorded settings (smoke trains channels-last, Hardware() does not)
        model = replay(out, run_id, on_epoch=lambda record, *_: epochs.append(record.epoch))
    assert len(epochs) == SMOKE.epochs and model is not None
    from rewindkit.engine.replay import recorded_hardware
    assert recorded_hardware(out, run_id).channels_last is SMOKE.hardware.channels_last is True
    stored = out / "runs" / run_id / "final.pt"
    weights = torch.load(stored, weights_only=True)
    name = next(k for k, v in weights.items() if v.dtype.is_floating_point and v.numel() > 1)
    weights[name] = weights[name] + 1e-3
    tampered = tmp_path / "runs"
    import shutil
    shutil.copytree(out / "runs", tampered)
    (tmp_path / "rewindkit.json").write_text((out / "rewindkit.json").read_text())
    torch.save(weights, tampered / run_id / "final.pt")
    with one_thread(), pytest.raises(ReplayMismatchError, match=f"replaying run {run_id} .* did not reproduce"):
        replay(tmp_path, run_id, SMOKE.hardware)


def test_the_three_tables(smoke_grids):
    out, grids = smoke_grids
    aggs = ap.aggregates(grids)
    schedules = ap.schedule_table(grids, aggs)
    assert schedules.schedule.tolist() == list(ap.SCHEDULES) and schedules["LRR ≥ FT"].between(0, 1).all()
    assert (schedules.cells == len(SMOKE.densities) * len(SMOKE.retrain_times)).all()
    masks = ap.mask_table(aggs)
    assert len(masks) == len(SMOKE.densities) * 3
    assert (masks["gap random_magnitude"] == masks["global_magnitude"] - masks["random_magnitude"]).all()
    signs = ap.sign_summary(ap.sign_table(out, grids, SMOKE.hardware))
    own = signs[signs.signs == "own"]
    assert set(own.technique) == set(CORE_TECHNIQUES) and set(signs[signs.signs == "dense"].technique) == {
        "weight_rewinding"}
    assert (signs.loc[signs.technique != "weight_rewinding", "start_differs"] == 0).all()  # FT, LRR: the dense start
    assert (signs.loc[signs.signs == "dense", "start_differs"] == 0).all()
    with one_thread():
        history = ap.sign_history(out, grids["global_magnitude"], SMOKE.hardware)
    assert sorted(history.retrain_epoch.unique()) == list(range(SMOKE.epochs + 1))
    assert (history.query("retrain_epoch == 0 and technique != 'weight_rewinding'").differs == 0).all()
    closed = ap.gap_closed(signs)
    assert len(closed) == len(SMOKE.densities)
    closing = ap.closing_tables(schedules, masks, signs)
    assert list(closing) == ["win_rates", "random_masks", "sign_flips"]
