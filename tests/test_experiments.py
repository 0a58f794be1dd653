import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import one_thread
from rewindkit import cli
from rewindkit import experiments as E
from rewindkit import profiles as P
from rewindkit.engine import executors as executors_module, runner
from rewindkit.platform import cores as cores_module
from rewindkit.core.masks import Mask
from rewindkit.notebook import views
from rewindkit.platform.storage import CorruptFileError

SMOKE = P.get_profile("smoke")


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    return out, {kind: E.run_grid(SMOKE, kind, out, progress=False) for kind in P.GRID_KINDS}


def test_one_shot_grid_shape_and_columns(grids):
    out, g = grids
    r = g["one_shot"].results
    assert list(r.columns[:10]) == E.RESULT_COLUMNS
    # 2 densities x (4 techniques x 2 t + reinitialization once) x 1 seed
    assert len(r) == 2 * (4 * 2 + 1)
    assert set(r.technique) == set(SMOKE.techniques)
    assert (r.schedule == "one_shot").all() and (r.pruning == "unstructured").all()
    assert len(g["one_shot"].base) == 1
    for d in SMOKE.densities:
        got = r[(r.density - d).abs() < 0.01].density
        assert ((got - d).abs() < 1e-3).all()


def test_all_techniques_share_one_dense_run(grids):
    out, g = grids
    dense_ids = set(g["one_shot"].base.run_id)
    configs = [json.loads((out / "runs" / i / "config.json").read_text()) for i in g["one_shot"].results.run_id]
    assert {c["dense"] for c in configs} == dense_ids and {c["parent"] for c in configs} == dense_ids


def test_every_run_of_the_grids_draws_its_own_data_stream(grids):
    """No retraining run replays its dense run's batches, and no two runs share a stream (§4)."""
    out, g = grids
    configs = [json.loads(p.read_text()) for p in (out / "runs").glob("*/config.json")]
    dense_seeds = {c["seed"] for c in configs if c["kind"] == "dense"}
    streams = [c["data_seed"] for c in configs if c["kind"] == "retrain"]
    assert len(streams) == len(set(streams)) > 20
    assert not dense_seeds & set(streams)
    # and the stream is what the run trained on: rerunning with the dense seed gives other weights
    spec = E.RunSpec.from_config(next(c for c in configs if c["kind"] == "retrain"
                                      and c["technique"] == "lr_rewinding"))
    replay = E.RunSpec(**{**spec.__dict__, "data_seed": spec.seed})
    assert replay.id != spec.id
    with one_thread():
        E.run_specs([replay], out, progress=False)
    a, b = (torch.load(out / "runs" / i / "final.pt", weights_only=True) for i in (spec.id, replay.id))
    shutil.rmtree(out / "runs" / replay.id)  # the folder is shared with the other tests of this module
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].dtype.is_floating_point)


def test_paper_grids_run_reinitialization_at_every_t_and_iterative_chains_over_the_t_grid():
    """As the authors' grid: reinit (T + t epochs) at every t; an iterative chain per technique and
    t, each keeping its t at every level. The laptop runs reinit once per cell at its smallest t."""
    paper = P.get_profile("paper")
    one_shot = E.grid_specs(paper, "one_shot")
    reinit = [s for s in one_shot if s.technique == "reinitialization"]
    assert len(reinit) == len(paper.seeds) * len(paper.densities) * len(paper.retrain_times)
    assert sorted({s.epochs for s in reinit}) == [182 + t for t in paper.retrain_times]
    iterative = [s for s in E.grid_specs(paper, "iterative") if not s.is_dense]
    chains = {(s.seed, s.technique, s.retrain_time) for s in iterative}
    assert len(chains) == len(paper.seeds) * 3 * len(paper.retrain_times)  # 150 and 182 are on the grid
    assert len(iterative) == len(chains) * paper.iterative_levels
    by_id = {s.id: s for s in iterative}
    for s in iterative:
        if s.level > 1:
            assert by_id[s.parent].retrain_time == s.retrain_time and by_id[s.parent].level == s.level - 1
    laptop = P.get_profile("laptop")
    reinit = [s for s in E.grid_specs(laptop, "one_shot") if s.technique == "reinitialization"]
    assert {s.retrain_time for s in reinit} == {min(laptop.retrain_times)}
    assert len(reinit) == len(laptop.seeds) * len(laptop.densities)
    assert len([s for s in E.grid_specs(laptop, "iterative") if not s.is_dense]) == 3 * 3 * laptop.iterative_levels


def test_run_folder_contents(grids):
    out, g = grids
    row = g["one_shot"].results.iloc[0]
    folder = out / "runs" / row.run_id
    for name in ("config.json", "metrics.csv", "mask.pt", "final.pt", "final_optimizer.pt", "result.json"):
        assert (folder / name).exists(), name
    assert not (folder / "checkpoint.pt").exists()
    metrics = pd.read_csv(folder / "metrics.csv")
    assert list(metrics.columns) == ["epoch", "step", "lr", "train_loss", "val_acc", "test_acc"]
    assert len(metrics) == row.retrain_time
    mask = Mask.load(folder / "mask.pt")
    final = torch.load(folder / "final.pt", weights_only=True)
    assert all(torch.count_nonzero(final[n][~mask[n]]) == 0 for n in mask)
    prov = json.loads((folder / "result.json").read_text())["provenance"]
    assert prov["torch"] == torch.__version__ and prov["device"] == "cpu" and "git_commit" in prov
    assert prov["cpu_numerics"]["cpu"] and prov["cpu_numerics"]["threads"] >= 1


def test_iterative_chain(grids):
    out, g = grids
    r = g["iterative"].results
    assert sorted(r.level.unique()) == [1, 2]
    assert len(r) == 3 * 2  # FT, WR, LRR x 2 levels
    for tech, sub in r.groupby("technique"):
        sub = sub.sort_values("level")
        assert sub.density.tolist() == pytest.approx([0.8, 0.64], abs=1e-3)
        assert (sub.retrain_time == SMOKE.iterative_retrain_times[tech]).all()
        m1, m2 = (Mask.load(out / "runs" / i / "mask.pt") for i in sub.run_id)
        assert m2.is_subset_of(m1)
        c2 = json.loads((out / "runs" / sub.run_id.iloc[1] / "config.json").read_text())
        assert c2["parent"] == sub.run_id.iloc[0]  # level 2 starts from level 1


def test_structured_grid(grids):
    out, g = grids
    r = g["structured"].results
    assert set(r.pruning) == {"structured_a", "structured_b"}
    dens = r.groupby(["pruning", "level"]).density.first()
    assert dens["structured_a", 1] > dens["structured_a", 3] and dens["structured_b", 1] > dens["structured_b", 3]


def test_flops_count_unpruned_weights(grids):
    out, g = grids
    r = g["one_shot"].results
    dense_flops = g["one_shot"].base.flops.iloc[0]
    assert (r.flops < dense_flops).all()
    sparse = r[r.density < 0.2].flops
    assert (sparse < 0.35 * dense_flops).all()


def test_finished_runs_are_never_recomputed(grids, monkeypatch):
    out, g = grids
    def boom(*a, **k):
        raise AssertionError("recomputed")
    monkeypatch.setattr(runner, "run_plan", boom)
    again = E.run_grid(SMOKE, "one_shot", out, progress=False)
    pd.testing.assert_frame_equal(again.results, g["one_shot"].results)


def test_results_csv_holds_every_finished_run(grids):
    out, g = grids
    table = pd.read_csv(out / "results.csv")
    assert len(table) == sum(len(x.results) for x in g.values())
    assert len(pd.read_csv(out / "base_results.csv")) == 1


CRASH_PROFILE = dict(epochs=4, milestones=(2, 3), batch_size=16, n_train=128, n_eval=40, densities=(0.3,),
                     retrain_times=(2, 4), techniques=("fine_tuning", "weight_rewinding", "lr_rewinding"), seeds=(1,))


def test_kill_9_then_rerun_equals_uninterrupted(tmp_path):
    profile = P.get_profile("smoke", **CRASH_PROFILE)
    clean = E.run_grid(profile, "one_shot", tmp_path / "clean", progress=False)
    crashed = tmp_path / "crashed"
    code = ("from rewindkit import experiments as E, profiles as P\n"
            f"E.run_grid(P.get_profile('smoke', **{CRASH_PROFILE!r}), 'one_shot', {str(crashed)!r}, progress=False)\n")
    kills = 0
    for delay in (0.0, 0.05, 0.1, 0.15):  # several kills at different moments
        proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "REWINDKIT_PROGRESS": "0"})
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if list(crashed.glob("runs/*/checkpoint.pt")):
                time.sleep(delay)
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1
    resumed = E.run_grid(profile, "one_shot", crashed, progress=False)
    pd.testing.assert_frame_equal(resumed.results, clean.results)
    pd.testing.assert_frame_equal(resumed.base, clean.base)
    assert (crashed / "results.csv").read_text() == (tmp_path / "clean" / "results.csv").read_text()


def test_resume_mid_run_from_checkpoint(tmp_path):
    """Interrupt the dense run after its second epoch and resume: same final weights."""
    profile = P.get_profile("smoke", **CRASH_PROFILE)
    dense = E.dense_specs(profile)[0]
    E.execute(dense, tmp_path / "a")

    class Stop(Exception):
        pass

    real = runner.atomic_torch_save
    def stop_after_checkpoint(obj, path):
        real(obj, path)
        if Path(path).name == "checkpoint.pt" and obj["step"] >= 16:
            raise Stop
    runner.atomic_torch_save = stop_after_checkpoint
    try:
        with pytest.raises(Stop):
            E.execute(dense, tmp_path / "b")
    finally:
        runner.atomic_torch_save = real
    assert not (tmp_path / "b" / "runs" / dense.id / "result.json").exists()
    E.execute(dense, tmp_path / "b")
    a = torch.load(tmp_path / "a" / "runs" / dense.id / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "runs" / dense.id / "final.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_rewind_checkpoint_is_regenerated_exactly(tmp_path):
    profile = P.get_profile("smoke", **CRASH_PROFILE)
    dense = E.dense_specs(profile)[0]
    E.execute(dense, tmp_path, profile.hardware, rewinds={("weight_rewinding", 2)})  # T − t = iteration 16
    saved = torch.load(tmp_path / "runs" / dense.id / "rewind" / "step_16.pt", weights_only=True)
    (tmp_path / "runs" / dense.id / "rewind" / "step_16.pt").unlink()
    store = E.RunStore(tmp_path)
    again = E.rewind_checkpoint(store, dense.id, 16, profile.hardware)
    assert again.step == 16 and all(torch.equal(saved["model"][k], again.model[k]) for k in saved["model"])


def test_run_ids_are_stable_and_sensitive():
    a = E.dense_specs(SMOKE)[0]
    assert a.id == E.dense_specs(P.get_profile("smoke"))[0].id
    assert a.id != E.dense_specs(P.get_profile("smoke", lr=0.05))[0].id
    assert a.id == E.dense_specs(P.get_profile("smoke", workers=2, device="cpu"))[0].id  # hardware excluded


def test_incompatible_results_folder(tmp_path):
    (tmp_path / "rewindkit.json").write_text(json.dumps({"format": 0, "version": "0.0.1"}))
    with pytest.raises(ValueError, match=f"run format 0.*reads run format {E.RUNS_FORMAT}"):
        E.run_grid(SMOKE, "one_shot", tmp_path, progress=False)


def test_corrupt_run_file_gets_a_clear_error(tmp_path):
    profile = P.get_profile("smoke", **CRASH_PROFILE)
    E.run_grid(profile, "one_shot", tmp_path, progress=False)
    dense = E.dense_specs(profile)[0]
    (tmp_path / "runs" / dense.id / "final.pt").write_bytes(b"not a tensor file")
    victim = next(p for p in (tmp_path / "runs").iterdir() if p.name != dense.id)
    (victim / "result.json").unlink()
    with pytest.raises(CorruptFileError, match="final weights of run .*final.pt"):
        E.run_grid(profile, "one_shot", tmp_path, progress=False)
    (victim / "result.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="result.json"):
        E.run_grid(profile, "one_shot", tmp_path, progress=False)


@pytest.mark.parametrize("overrides,message", [
    ({"network": "resnet9"}, "unknown network 'resnet9'; valid networks: resnet20"),
    ({"techniques": ("fine_tuning", "magic")}, "unknown technique 'magic'; valid techniques"),
    ({"densities": (0.5, 1.5)}, r"density must be .*\(0, 1\]; got 1.5"),
    ({"retrain_times": (2, -1)}, r"retrain_times must hold retraining times t > 0 in epochs; got -1"),
    ({"structured_configs": ("resnet56_z",)}, "unknown filter-pruning config 'resnet56_z'"),
    ({"colour": "red"}, "unknown profile field 'colour'; valid fields: network"),
    ({"densities": 0.5}, r"densities must be a sequence, e.g. densities=\(0.5,\); got 0.5"),
    ({"batch_size": 0}, "batch_size must be a whole number ≥ 1; got 0"),
    ({"n_eval": 0}, "n_eval must be a whole number ≥ 1, or None for the whole split; got 0"),
    ({"lr": -1}, r"lr must be a positive number \(0.1 in the paper\); got -1"),
    ({"evaluate_every_epoch": "no"}, "evaluate_every_epoch must be True or False; got 'no'"),
])
def test_bad_profile_input(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        P.get_profile("smoke", **overrides)
    assert not (tmp_path / "runs").exists()


def test_retrain_times_beyond_T_are_refused_by_the_grid_that_uses_them(tmp_path):
    """epochs=2 on the smoke profile (issue 20 §5): its one-shot t grid (2, 4) exceeds T; the grid
    names its field, only when it runs, before any run. The iterative budgets the profile derives
    from T follow the new T; budgets written out are checked like the t grid."""
    profile = P.get_profile("smoke", epochs=2, milestones=(1,))  # accepted: the t fields are the grids' business
    with pytest.raises(ValueError, match=r"retrain_times holds t = 4 epochs, beyond T = 2 \(recipe.epochs\) for the "
                                         r"one_shot grid.*override retrain_times too"):
        E.run_grid(profile, "one_shot", tmp_path, progress=False)
    assert profile.iterative_retrain_times == {"fine_tuning": 2, "weight_rewinding": 2, "lr_rewinding": 2}
    written = P.get_profile(profile, iterative_retrain_times={"fine_tuning": 4, "lr_rewinding": 2})
    with pytest.raises(ValueError, match=r"iterative_retrain_times\['fine_tuning'\] holds t = 4 epochs, beyond T = 2"):
        E.run_grid(written, "iterative", tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()
    fixed = P.get_profile(profile, retrain_times=(1, 2))
    assert len(E.grid_specs(fixed, "one_shot")) > 0


def test_unknown_profile_and_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown profile 'tiny'; valid profiles: smoke, laptop, paper, cifar_short"):
        P.get_profile("tiny")
    with pytest.raises(ValueError, match="unknown grid kind 'random'; valid kinds: one_shot, iterative, structured"):
        E.run_grid(SMOKE, "random", tmp_path)
    assert not (tmp_path / "runs").exists()


def test_cli_grid_and_errors(tmp_path, capsys):
    rc = cli.main(["grid", "smoke", "--kind", "iterative", "--out", str(tmp_path), "--set", "seeds=(1,)",
                   "--no-progress", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "results.csv" in out and (tmp_path / "results.csv").exists()
    assert cli.main(["grid", "nope", "--kind", "one_shot"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
    assert cli.main(["grid", "smoke", "--kind", "one_shot", "--set", "densities=(2.0,)"]) == 2
    assert "got 2.0" in capsys.readouterr().err
    # a damaged result.json: --plan refuses it, naming it, as the grid does (not "N of N finished")
    damaged = next((tmp_path / "runs").glob("*/result.json"))
    damaged.write_text(damaged.read_text()[:40])
    args = ["grid", "smoke", "--kind", "iterative", "--out", str(tmp_path), "--set", "seeds=(1,)"]
    for extra in (["--plan"], ["--no-progress", "--quiet"]):
        assert cli.main(args + extra) == 2
        assert f"cannot read result of run {damaged.parent.name}" in capsys.readouterr().err


def test_parallel_workers_give_the_same_table(tmp_path, monkeypatch):
    """Every run trains with one CPU thread wherever it executes (hardware.run_threads): a grid run in
    this process (workers=1) trains with one thread whatever the caller's count (restored afterwards),
    and its table is bit-identical to one run with the automatic worker count (every available core;
    worker processes wherever the process may use two cores or more)."""
    from rewindkit.engine import executors
    profile = P.get_profile("smoke", **CRASH_PROFILE)
    seen = []

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return runner.execute(*args, **kwargs)

    monkeypatch.setattr(executors, "execute", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        serial = E.run_grid(profile, "iterative", tmp_path / "serial", progress=False, workers=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert len(seen) == len(serial.results) + len(serial.base) and set(seen) == {1}
    monkeypatch.undo()
    # two cores and memory for both, whatever this machine has: the worker-process path always runs
    monkeypatch.setattr(cores_module, "available_cores", lambda: 2)
    monkeypatch.setattr(cores_module, "available_memory", lambda: None)
    lines = []
    assert profile.workers == "auto"  # the CPU profiles' default
    parallel = E.run_grid(profile, "iterative", tmp_path / "parallel", progress=False, log=lines.append)
    pd.testing.assert_frame_equal(serial.results, parallel.results)
    assert any("2 worker processes" in line and "2 cores available" in line for line in lines), lines
    with pytest.raises(ValueError, match="whole number from 1 to 1024 or 'auto'.*got 0"):  # 0 is not "the default"
        E.run_grid(profile, "iterative", tmp_path / "zero", progress=False, workers=0)
    assert not (tmp_path / "zero").exists()


def test_automatic_worker_count_is_every_available_core_capped_by_memory(monkeypatch):
    from rewindkit.platform import cores
    gib = 2**30
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: set(range(8)))  # a taskset/container limit
    assert cores.available_cores() == 8
    assert cores.auto_workers(memory=64 * gib) == 8
    assert cores.auto_workers(memory=3 * cores.WORKER_MEMORY + 1) == 3  # memory holds three workers
    assert cores.auto_workers(memory=cores.WORKER_MEMORY - 1) == 1  # never fewer than one
    monkeypatch.setattr(cores, "available_memory", lambda: None)  # unknown memory: every core
    assert cores.resolve_workers("auto") == 8
    assert cores.resolve_workers("auto", device="cuda") == cores.resolve_workers("auto", packing=4) == 1
    assert cores.resolve_workers(3) == 3
    for bad in (0, -1, 1.5, True, "all", None):
        with pytest.raises(ValueError, match=f"whole number from 1 to 1024 or 'auto'.*got {bad!r}"):
            cores.check_workers(bad)
    assert executors_module.concurrency("auto", P.get_profile("smoke").hardware, plugin_runs=False) == (8, 1)


def test_cifar10_grid_end_to_end_on_fabricated_archive(tmp_path, monkeypatch):
    """The 2-D path: CIFAR-10 archive, crop+flip augmentation, per-image standardisation, ResNet-20."""
    from helpers import fabricate_cifar
    monkeypatch.setenv("REWINDKIT_DATA", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    fabricate_cifar(tmp_path / "data" / "cifar-10-python.tar.gz", per_batch=16)
    profile = P.get_profile("smoke", network="resnet20", model_options={"width": 4}, dataset="cifar10",
                            n_train=64, n_eval=16, batch_size=16, epochs=2, milestones=(1,), densities=(0.5,),
                            retrain_times=(1, 2), techniques=("fine_tuning", "weight_rewinding", "lr_rewinding"),
                            iterative_levels=1, iterative_retrain_times={"lr_rewinding": 2},
                            structured_configs=("generic_b",), structured_levels=(1,))
    one = E.run_grid(profile, "one_shot", tmp_path / "runs", progress=False)
    assert len(one.results) == 6 and (one.results.network == "resnet20").all()
    assert one.base.flops.iloc[0] == pytest.approx(41_075_328 * (4 / 16) ** 2, rel=0.2)
    it = E.run_grid(profile, "iterative", tmp_path / "runs", progress=False)
    st = E.run_grid(profile, "structured", tmp_path / "runs", progress=False)
    assert len(it.results) == 1 and len(st.results) == 3 * 2
    assert (st.results.pruning == "structured_b").all() and (st.results.density < 1).all()


def test_profile_nests_recipe_and_hardware_with_dotted_and_flat_overrides():
    from rewindkit.platform.hardware import Hardware
    from rewindkit.recipe import IMAGENET_RECIPE, Recipe
    assert P.get_profile("paper").recipe == Recipe()  # the paper profile's recipe is the paper's CIFAR recipe
    assert P.get_profile("imagenet").recipe is IMAGENET_RECIPE  # written once
    dotted = P.get_profile("smoke", **{"recipe.epochs": 8, "hardware.bf16": True})
    flat = P.get_profile("smoke", epochs=8, bf16=True)
    assert dotted == flat and dotted.recipe.epochs == 8 and dotted.epochs == 8 and dotted.hardware.bf16
    assert dotted.recipe.milestones == SMOKE.recipe.milestones  # the other recipe fields are kept
    assert dotted.hardware.channels_last == SMOKE.hardware.channels_last
    assert P.get_profile("smoke", recipe={"epochs": 6, "milestones": (3,)}).recipe == Recipe(epochs=6, milestones=(3,))
    assert P.get_profile("smoke", **P.parse_overrides(["recipe.lr=0.05"])).recipe.lr == 0.05
    with pytest.raises(ValueError, match="unknown profile field 'recipe.colour'; valid fields: .*recipe.epochs"):
        P.get_profile("smoke", **{"recipe.colour": 1})
    with pytest.raises(ValueError, match="unknown compile_mode 'fast'; choose one of default"):
        P.get_profile("smoke", compile_mode="fast")
    with pytest.raises(ValueError, match="hardware must be a Hardware or a dict of its fields; got 'gpu'"):
        P.get_profile("smoke", hardware="gpu")
    # hardware is not part of a run's identity; the recipe is
    assert E.dense_specs(P.get_profile("smoke", hardware=Hardware(device="cpu")))[0].id == E.dense_specs(SMOKE)[0].id
    assert E.dense_specs(dotted)[0].id != E.dense_specs(SMOKE)[0].id


def test_cli_reports_a_bad_model_option_before_training(tmp_path, capsys):
    rc = cli.main(["grid", "smoke", "--kind", "one_shot", "--out", str(tmp_path), "--quiet", "--no-progress",
                   "--set", "model_options={'width': 0}"])
    assert rc == 2
    assert "width must be a positive whole number of channels (16 in the paper); got 0" in capsys.readouterr().err
    assert not list(tmp_path.rglob("result.json"))


def test_a_diverging_run_stops_with_a_clear_error_and_is_not_finished(tmp_path, capsys):
    rc = cli.main(["grid", "smoke", "--kind", "one_shot", "--out", str(tmp_path), "--quiet", "--no-progress",
                   "--set", "lr=1e6", "--set", "densities=(0.5,)", "--set", "techniques=('fine_tuning',)"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "dense seed=1: the training loss is" in err and "the run diverged" in err and "LR" in err
    assert re.search(r"in epoch \d+ \(iterations up to \d+\)", err)  # which epoch, whatever the kernels
    assert not list(tmp_path.rglob("result.json"))  # nothing that looks finished


def test_a_full_disk_gets_a_clear_error_and_a_rerun_completes_the_same_table(tmp_path, monkeypatch, capsys):
    import errno

    from rewindkit.platform import storage
    profile = P.get_profile("smoke", densities=(0.5,), techniques=("fine_tuning", "lr_rewinding"),
                            workers=1)  # in this process, where the full disk is simulated
    with one_thread():
        want = E.run_grid(profile, "one_shot", tmp_path / "whole", progress=False).results
    real_replace, writes = os.replace, []

    def replace_until_full(src, dst):
        writes.append(dst)
        if len(writes) > 25:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", replace_until_full)
    with one_thread(), pytest.raises(storage.DiskFullError, match="no space left on the device while writing"):
        E.run_grid(profile, "one_shot", tmp_path / "full", progress=False)
    assert not list((tmp_path / "full").rglob("*.tmp"))  # no half-written file is left behind
    monkeypatch.setattr(storage.os, "replace", real_replace)
    with one_thread():
        got = E.run_grid(profile, "one_shot", tmp_path / "full", progress=False).results
    pd.testing.assert_frame_equal(got.drop(columns="run_id"), want.drop(columns="run_id"))
    assert list(got.run_id) == list(want.run_id)


def test_evaluating_only_at_the_end_trains_the_same_weights_and_reports_the_same_metrics(tmp_path):
    """``evaluate_every_epoch=False`` (the translation profile's setting) leaves validation and test
    out of every epoch's metrics row but the last; evaluation never touches training, so the final
    weights are bitwise those of a run evaluated every epoch, with the same final metrics. The
    setting is part of the run id (the metrics files differ), and absent from it at its default."""
    every = P.get_profile("smoke", densities=(0.5,), retrain_times=(4,), techniques=("lr_rewinding",))
    final = P.get_profile(every, evaluate_every_epoch=False)
    assert "evaluate_every_epoch" not in E.setup_from_profile(every)
    a = E.run_grid(every, "one_shot", tmp_path / "every", progress=False)
    b = E.run_grid(final, "one_shot", tmp_path / "final", progress=False)
    assert set(a.results.run_id).isdisjoint(b.results.run_id)
    cols = ["technique", "density", "retrain_time", "test_acc", "val_acc"]
    pd.testing.assert_frame_equal(a.results[cols], b.results[cols])
    for x, y in ((a.base, b.base), (a.results, b.results)):
        m_every = views.run_metrics(tmp_path / "every", x.run_id.iloc[0])
        m_final = views.run_metrics(tmp_path / "final", y.run_id.iloc[0])
        assert len(m_every) == len(m_final) > 1 and m_every.val_acc.notna().all()
        assert m_final.val_acc.iloc[:-1].isna().all() and m_final.test_acc.iloc[:-1].isna().all()
        pd.testing.assert_frame_equal(m_every.iloc[[-1]], m_final.iloc[[-1]])
        pd.testing.assert_series_equal(m_every.train_loss, m_final.train_loss)
        w_every = torch.load(tmp_path / "every" / "runs" / x.run_id.iloc[0] / "final.pt")
        w_final = torch.load(tmp_path / "final" / "runs" / y.run_id.iloc[0] / "final.pt")
        assert all(torch.equal(w_every[k], w_final[k]) for k in w_every)


def test_a_metrics_file_cut_short_is_refused_not_drawn(tmp_path):
    """A finished run's metrics.csv must end with its result.json's final metrics: a file cut short
    (or edited) is refused with the run folder to delete, instead of drawing a curve that stops early."""
    profile = P.get_profile("smoke", densities=(0.5,), retrain_times=(4,), techniques=("lr_rewinding",))
    grid = E.run_grid(profile, "one_shot", tmp_path, progress=False)
    run_id = grid.base.run_id.iloc[0]
    whole = views.run_metrics(tmp_path, run_id)
    assert len(whole) == profile.recipe.epochs
    path = tmp_path / "runs" / run_id / "metrics.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    with pytest.raises(ValueError, match=rf"metrics.csv does not end with run {run_id}'s final metrics.*cut short"):
        views.run_metrics(tmp_path, run_id)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # the last row half-written
    with pytest.raises(ValueError, match="cut short"):
        views.run_metrics(tmp_path, run_id)
    short = whole.iloc[:-1].copy()  # one epoch short, though its last accuracies equal the final ones
    short.loc[short.index[-1], ["val_acc", "test_acc"]] = whole.iloc[-1][["val_acc", "test_acc"]].to_numpy()
    path.write_text(short.to_csv(index=False))
    with pytest.raises(ValueError, match="cut short"):
        views.run_metrics(tmp_path, run_id)
    path.write_text("".join(lines))
    pd.testing.assert_frame_equal(views.run_metrics(tmp_path, run_id), whole)


def test_laptop_run_ids_are_pinned():
    """Run ids name the cached runs (and the committed figures' tables): a refactor must not move
    them. These are the ids of run format 2; a deliberate change of what a run computes bumps
    RUNS_FORMAT and updates them."""
    laptop = P.get_profile("laptop")
    one_shot, iterative = E.grid_specs(laptop, "one_shot"), E.grid_specs(laptop, "iterative")
    structured = E.grid_specs(laptop, "structured")
    got = {s.label(): s.id for s in (one_shot[0], one_shot[1], one_shot[-1], iterative[-1], structured[-1])}
    assert got == {
        "dense seed=1": "acada95d1d563733",
        "one_shot density=0.4096 fine_tuning t=2 seed=1": "d62835afd546c2dd",
        "one_shot density=0.02815 reinitialization t=2 seed=3": "b8d96192d51c1be0",
        "iterative density=0.1678 lr_rewinding t=8 seed=3": "e1f89ad0c2de6b5a",
        "one_shot generic_b L5 reinitialization t=2 seed=3": "db1fc08e71bf7c8b",
    }
    committed = pd.read_csv(Path(__file__).resolve().parents[1] / "figures" / "laptop" / "03_results.csv")
    assert set(committed.run_id) == {s.id for s in one_shot if not s.is_dense}


def test_runspec_checks_its_technique_and_reads_back_typed_pruning(tmp_path):
    from rewindkit.pruning import FilterPruning, GlobalMagnitude
    setup = E.setup_from_profile(SMOKE)
    with pytest.raises(ValueError, match="unknown technique 'magic'; valid techniques: fine_tuning"):
        E.RunSpec(setup, 1, "magic", 2, GlobalMagnitude(0.5), "one_shot")
    with pytest.raises(ValueError, match="a lr_rewinding run needs a pruning description"):
        E.RunSpec(setup, 1, "lr_rewinding", 2)
    for spec in E.grid_specs(SMOKE, "structured")[1:3] + E.grid_specs(SMOKE, "iterative")[1:3]:
        again = E.RunSpec.from_config(spec.config())
        assert again.id == spec.id and again.pruning == spec.pruning and again.label() == spec.label()
        assert isinstance(again.pruning, (FilterPruning, GlobalMagnitude))


def test_grid_cost_counts_what_the_profile_implies(tmp_path):
    from rewindkit.engine import costs
    paper = P.get_profile("paper")
    cost = costs.grid_cost(paper, "one_shot")
    per_seed = len(paper.densities) * len(paper.techniques) * len(paper.retrain_times)
    assert (cost.runs, cost.dense) == (len(paper.seeds) * (1 + per_seed), len(paper.seeds))
    assert cost.retraining == {t: len(paper.seeds) * len(paper.densities) * len(paper.retrain_times)
                               for t in paper.techniques}
    T, ts = paper.epochs, paper.retrain_times
    per_cell = 4 * sum(ts) + sum(T + t for t in ts)  # reinitialization trains T + t
    assert cost.epochs == len(paper.seeds) * (T + len(paper.densities) * per_cell)
    assert cost.hours(50_000, 50_000 / 3600) == cost.epochs  # one epoch an hour
    smoke = costs.grid_cost(SMOKE, "iterative", tmp_path)
    assert smoke.finished == 0 and smoke.remaining_epochs == smoke.epochs
    E.run_grid(SMOKE, "iterative", tmp_path, progress=False)
    done = costs.grid_cost(SMOKE, "iterative", tmp_path)
    assert done.finished == done.runs and done.remaining_epochs == 0


def test_plan_rows_and_profile_description_state_the_recipe():
    from rewindkit.techniques import plan_retraining
    sched = views.lr_schedule(SMOKE)
    rows = views.plan_rows({t: plan_retraining(t, 2, sched) for t in ("fine_tuning", "weight_rewinding")})
    spe, T = sched.steps_per_epoch, sched.total_steps
    assert rows[0]["iterations"] == f"{T} → {T + 2 * spe}" and rows[0]["LR"] == f"constant {sched.final_lr:g}"
    assert rows[1]["starts from"] == "rewind" and rows[1]["rewind to iteration"] == T - 2 * spe
    described = {r["setting"]: r["value"] for r in P.get_profile("imagenet").describe()}
    assert described["epochs T"] == 90 and described["fine-tuning LR"] == 0.0004
    assert described["weight decay"] == "0.0001 (excl. BatchNorm)" and "Nesterov" in described["momentum"]


def test_plan_prints_the_grid_cost_and_writes_nothing(tmp_path, capsys):
    from rewindkit.engine import costs
    out = tmp_path / "results"
    assert cli.main(["grid", "paper", "--kind", "one_shot", "--plan", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    paper = P.get_profile("paper")
    runs = len(paper.seeds) * (1 + len(paper.densities) * len(paper.techniques) * len(paper.retrain_times))
    assert f"runs: {runs} = {len(paper.seeds)} dense + " in text and f"0 of {runs} runs" in text
    assert not out.exists()  # a plan trains and writes nothing
    # the estimate comes from the table row of this workload on this device, scaled by the packing
    smoke = P.get_profile("smoke", workers=2)
    row = {"workload": costs.workload(smoke), "device": costs.device_name(smoke.hardware), "packing": 1,
           "seconds_per_epoch": 3.0, "hardware": "fp32", "measured_by": "a test"}
    found = costs.table_throughput(smoke, pd.DataFrame([row]))
    assert found == costs.Throughput(3.0, 1, "throughput table (fp32; a test)")
    assert costs.table_throughput(smoke, pd.DataFrame([{**row, "device": "another device"}])) is None
    assert costs.table_throughput(smoke, pd.DataFrame([{**row, "packing": 4}])) is None  # more packed than we run
    assert costs.eta_seconds(10.0, 2.0, 3.0) == 15.0 and costs.eta_seconds(5.0, 0.0, 3.0) is None
    assert [costs.duration(s) for s in (42, 720, 3.4 * 3600, 3 * 86400)] == ["42 s", "12 min", "3.4 h", "3.0 days"]
    assert "runs at once: 2 — 2 worker processes (workers=2)" in costs.plan_report(smoke, "one_shot")


def test_a_notebook_states_its_expected_wait_from_the_table(tmp_path, monkeypatch):
    """Notebook 01 says how long it will train before it does: remaining epochs × the table's seconds
    per epoch ÷ runs at once — this CPU's row, else another CPU's, named as such."""
    from rewindkit.engine import costs
    smoke = P.get_profile("smoke", workers=2)
    cost = costs.grid_cost(smoke, "one_shot", tmp_path)
    row = {"workload": costs.workload(smoke), "device": costs.device_name(smoke.hardware), "packing": 2,
           "seconds_per_epoch": 3.0, "hardware": "fp32", "measured_by": "a test"}
    monkeypatch.setattr(costs, "load_throughput", lambda path=None: pd.DataFrame([row]))
    text = costs.expected_wait(smoke, "one_shot", tmp_path)
    assert f"{cost.runs} runs, {cost.remaining_epochs:,.0f} training epochs at this machine's measured 3 s" in text
    assert f"2 at once → about {costs.duration(cost.remaining_epochs * 3.0 / 2)} of training" in text
    monkeypatch.setattr(costs, "load_throughput", lambda path=None: pd.DataFrame([{**row, "device": "cpu: Other CPU"}]))
    assert "at Other CPU's (not this CPU's) measured 3 s" in costs.expected_wait(smoke, "one_shot", tmp_path)
    monkeypatch.setattr(costs, "load_throughput", lambda path=None: pd.DataFrame(columns=costs.THROUGHPUT_COLUMNS))
    assert "--plan --probe` times it here" in costs.expected_wait(smoke, "one_shot", tmp_path)


def test_plan_probe_times_this_device_and_a_running_grid_shows_an_eta(tmp_path, capsys):
    from rewindkit.engine import costs
    threads = torch.get_num_threads()
    found = costs.probe(SMOKE, steps=5)
    assert found.packing == 1 and 0 < found.seconds_per_epoch < 60 and found.source.startswith("probe")
    packed = costs.probe(SMOKE, steps=3, packing=2)  # two runs at once, from two threads
    assert packed.packing == 2 and packed.seconds_per_epoch > 0 and packed.source.endswith("2 runs at once")
    assert torch.get_num_threads() == threads  # the probe's one thread per run is undone
    report = costs.plan_report(SMOKE, "one_shot", tmp_path / "none", probe_device=True)
    assert "s per epoch per run" in report and "probe: 20 steps timed here" in report
    lines = []
    E.run_grid(P.get_profile("smoke", densities=(0.5,), techniques=("lr_rewinding",)), "one_shot", tmp_path,
               progress=False, log=lines.append)
    assert lines[0].startswith("3 runs to train, ") and " at once: " in lines[0]  # how many go at once
    assert lines[1].startswith("[1/3] dense") and "ETA" in lines[1] and lines[-1].startswith("[3/3]")
    assert "0 epochs left" in lines[-1]


def test_packed_runs_are_bitwise_the_runs_alone(tmp_path):
    """K runs packed on one device (threads of one process, own CUDA stream each on a GPU) compute
    exactly what each computes alone: same final weights bit for bit, same table (issue 13 §1)."""
    # two seeds: a dense run initialises (seeded draws from torch's global generator) while the other
    # seed's retraining runs build their networks — the packed threads share that generator
    profile = P.get_profile("smoke", densities=(0.5,), techniques=("fine_tuning", "weight_rewinding", "lr_rewinding"),
                            workers=1, seeds=(1, 2))
    with one_thread():
        alone = E.run_grid(profile, "one_shot", tmp_path / "alone", progress=False)
    packed_profile = P.get_profile(profile, packing=3)
    assert packed_profile.hardware.packing == 3
    packed = E.run_grid(packed_profile, "one_shot", tmp_path / "packed", progress=False)
    pd.testing.assert_frame_equal(alone.results, packed.results)
    assert alone.run_ids == packed.run_ids and len(packed.run_ids) == 2 * (1 + 3 * 2)
    for run_id in packed.run_ids:
        a = torch.load(tmp_path / "alone" / "runs" / run_id / "final.pt")
        b = torch.load(tmp_path / "packed" / "runs" / run_id / "final.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), run_id
    # a run packed with others after an interruption resumes to the same files (it is skipped)
    again = E.run_grid(packed_profile, "one_shot", tmp_path / "packed", progress=False)
    pd.testing.assert_frame_equal(packed.results, again.results)


def test_packing_is_checked():
    with pytest.raises(ValueError, match="packing must be a whole number ≥ 1.*got 0"):
        P.get_profile("smoke", packing=0)
    with pytest.raises(ValueError, match=r"workers=2.*packing=2.*not both"):
        E.run_grid(P.get_profile("smoke", workers=2, packing=2), "one_shot", progress=False)


def test_device_costs_of_the_named_grids_come_from_the_table():
    """Notebook 10's and the README's GPU-hours: runs and epochs of each named grid, times the table's
    seconds per epoch, over the runs at once (issue 13 §3)."""
    from rewindkit.engine import costs
    table = pd.DataFrame([{"workload": costs.workload(P.get_profile("paper")), "device": "GPU X", "packing": k,
                           "seconds_per_epoch": s, "hardware": "fp32", "measured_by": "a test"}
                          for k, s in ((1, 2.0), (4, 4.0))])
    rows = views.device_costs("GPU X", table)
    paper = rows[rows.grid == "paper one-shot grid"]
    cost = costs.grid_cost(P.get_profile("paper"), "one_shot")
    assert paper["runs"].tolist() == [cost.runs] * 2 and paper["runs at once"].tolist() == [1, 4]
    assert paper["device-hours"].tolist() == [round(cost.epochs * 2.0 / 3600, 1), round(cost.epochs * 4.0 / 4 / 3600, 1)]
    figure = rows[rows.grid == "ResNet-56 one-shot accuracy-vs-time figure"]
    assert figure["runs"].iloc[0] == 3 + 3 * 4 * 10 * 3  # dense + 3 techniques × 4 densities × 10 t × 3 seeds
    assert views.device_costs("no such GPU", table).empty
    cpu = table.assign(device="cpu: a CPU")
    both = views.gpu_costs(pd.concat([table, cpu]))  # every GPU of the table, no CPU
    assert views.measured_gpus(pd.concat([table, cpu])) == ["GPU X"]
    assert both["device"].unique().tolist() == ["GPU X"] and len(both) == len(rows)


def test_a_run_asked_for_twice_at_once_trains_once(tmp_path, monkeypatch):
    """Two notebooks (or two grids) sharing a runs folder may ask for the same run at the same time:
    one trains it while the other waits on the run's lock, then reads the finished result, the same
    bytes, instead of training it again or reading a checkpoint the first is replacing."""
    import threading
    profile = P.get_profile("smoke", **CRASH_PROFILE)
    dense = next(s for s in E.grid_specs(profile, "one_shot") if s.is_dense)
    trained, real_train = [], runner._train

    def counting(spec, *args, **kwargs):
        trained.append(spec.id)
        time.sleep(0.5)  # hold the lock long enough for the other thread to arrive and wait
        return real_train(spec, *args, **kwargs)

    monkeypatch.setattr(runner, "_train", counting)
    results = [None, None]

    def ask(i):
        with one_thread():
            results[i] = runner.execute(dense, tmp_path)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert trained == [dense.id]
    assert results[0] == results[1] == json.loads((tmp_path / "runs" / dense.id / "result.json").read_text())


def test_notebooks_at_once_is_two_where_two_cores_and_the_memory_allow():
    from rewindkit.platform import cores
    two = 2 * (2 + 1) * cores.WORKER_MEMORY  # two notebooks, each a kernel and a worker per core
    assert cores.notebooks_at_once("auto", cores=2, memory=two) == 2
    assert cores.notebooks_at_once("auto", cores=2, memory=two - 1) == 1
    assert cores.notebooks_at_once("auto", cores=1, memory=None) == 1
    assert cores.notebooks_at_once("auto", cores=8, memory=None) == 2
    assert cores.notebooks_at_once(3) == 3
    for bad in (0, -1, 1.5, True, "all"):
        with pytest.raises(ValueError, match=f"whole number ≥ 1 or 'auto'.*got {bad!r}"):
            cores.notebooks_at_once(bad)
    with pytest.raises(SystemExit) as exit_:  # the command line refuses it before any notebook starts
        cli.main(["notebooks", "01", "--at-once", "0"])
    assert exit_.value.code == 2


def test_the_structured_grids_summary_keeps_its_configurations_apart(tmp_path, capsys):
    assert cli.main(["grid", "smoke", "--kind", "structured", "--out", str(tmp_path), "--quiet", "--no-progress",
                     "--set", "structured_levels=(1,)", "--set", "structured_techniques=('fine_tuning',)",
                     "--set", "structured_retrain_times=(1,)"]) == 0
    out = capsys.readouterr().out
    summary = out[out.index("best achievable"):].splitlines()
    assert any(line.startswith("structured_a") for line in summary) and any(line.startswith("structured_b") for line in summary)


def test_aggregate_refuses_tables_that_mix_experiments_or_signs():
    from rewindkit.paper import reference as R
    row = {"network": "n", "pruning": "unstructured", "schedule": "one_shot", "technique": "lr_rewinding",
           "density": 0.5, "retrain_time": 2.0, "test_acc": 0.9, "val_acc": 0.9, "flops": 1.0, "trial": 1}
    base = pd.DataFrame([{"network": "n", "test_acc": 0.95, "val_acc": 0.95, "trial": 1, "experiment": "e1"}])
    two_experiments = pd.DataFrame([{**row, "experiment": "e1"}, {**row, "experiment": "e2"}])
    with pytest.raises(ValueError, match=r"the pruned runs hold several values of 'experiment' \(e1, e2\)"):
        R.aggregate(two_experiments, base)
    signs = pd.DataFrame([{**row, "experiment": "e1", "signs": None}, {**row, "experiment": "e1", "signs": "dense"}])
    with pytest.raises(ValueError, match=r"several values of 'signs' \(dense, none\): runs that differ in it are not trials"):
        R.aggregate(signs, base)
    assert R.aggregate(signs[signs.signs.isna()], base).trials.tolist() == [1]
