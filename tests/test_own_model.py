"""A researcher's own model through the plug-in API, as a first user meets it (issue 20): each
failure that issue reproduced has a test here that fails on the code before it."""
import json
import math
import random
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from rewindkit import data, experiments, models, plugins, pruning, techniques, training
from rewindkit.engine import runner
from rewindkit.core.batches import DataProtocolError
from rewindkit.core.metrics import MetricValueError, metric_of_network
from rewindkit.profiles import get_profile
from rewindkit.recipe import Recipe
from rewindkit.engine.runs import setup_from_profile
from rewindkit.core.schedules import ScheduleValueError


class SmallCNN(nn.Module):
    """A researcher's network: convolutions with BatchNorm, any input length."""

    def __init__(self, channels, classes, hidden=8):
        super().__init__()
        self.conv = nn.Conv1d(channels, hidden, 3, padding=1)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(-1))


def build_cnn(data, hidden=8):
    return SmallCNN(data.input_shape[0], data.num_classes, hidden)


def small_data(n=96):
    return data.make_synthetic(n_train=n, n_test=40, shape=(1, 12), num_classes=3, seed=4)


@pytest.fixture
def own():
    """The user's network and dataset, registered for one test and removed after it."""
    plugins.register_network("small_cnn", build_cnn)
    plugins.register_dataset("small_data", small_data)
    yield get_profile("smoke", network="small_cnn", dataset="small_data", recipe=Recipe(epochs=2, batch_size=32,
                      lr=0.05, milestones=(1,)), densities=(0.5,), retrain_times=(1, 2),
                      techniques=("fine_tuning", "weight_rewinding", "lr_rewinding"), iterative_levels=1,
                      iterative_retrain_times={"fine_tuning": 2, "weight_rewinding": 1, "lr_rewinding": 2})
    for kind, name in (("network", "small_cnn"), ("dataset", "small_data"), ("schedule", "neg"), ("metric", "odd"),
                       ("network", "odd_cnn")):
        plugins.unregister(kind, name)


def strict_json(path):
    """A file's JSON, refusing NaN and infinities (which JSON does not have)."""
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


# -- 1. the iterative grid and a technique subset -----------------------------------------------------

def test_the_iterative_grid_runs_only_the_techniques_asked_for(own, tmp_path):
    specs = experiments.grid_specs(own, "iterative", ["lr_rewinding"])
    assert {s.technique for s in specs} == {None, "lr_rewinding"}
    in_profile = get_profile(own, techniques=("lr_rewinding",))
    assert {s.technique for s in experiments.grid_specs(in_profile, "iterative")} == {None, "lr_rewinding"}
    result = experiments.run_grid(own, "iterative", tmp_path, techniques=["lr_rewinding"], progress=False)
    assert set(result.results["technique"]) == {"lr_rewinding"} and len(result.results) == 1
    with pytest.raises(ValueError, match="no iterative budget for 'reinitialization'.*iterative_retrain_times"):
        experiments.grid_specs(own, "iterative", ["reinitialization"])


# -- 2. one registry, the kit's own names in it --------------------------------------------------------

def test_the_kits_own_names_are_refused_whatever_was_imported():
    """In a fresh interpreter that imported only rewindkit.plugins (the built-ins' modules not yet)."""
    code = textwrap.dedent("""
        from rewindkit import plugins
        refused = []
        for kind, name in (("network", "resnet20"), ("network", "gnmt_small"), ("dataset", "mnist1d"),
                           ("schedule", "step"), ("schedule", "gnmt"), ("metric", "accuracy"), ("metric", "bleu")):
            try:
                getattr(plugins, "register_" + kind)(name, lambda *a, **k: None)
            except ValueError as err:
                refused.append((kind, name, "one of the kit's own" in str(err)))
        print(refused)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    refused = eval(out)
    assert len(refused) == 7 and all(ok for *_, ok in refused)
    assert plugins.get("network", "resnet20").builtin and "resnet20" not in plugins.user_names("network")
    with pytest.raises(ValueError, match="cannot be unregistered"):
        plugins.unregister("schedule", "step")


def test_one_lookup_serves_the_kits_own_and_the_users(own):
    assert plugins.names("network")[:2] == ("resnet20", "resnet56") and "small_cnn" in plugins.names("network")
    assert isinstance(models.build("small_cnn", small_data()), SmallCNN)
    assert models.build("resnet20", small_data(n=64).__class__("x", torch.zeros(4, 3, 8, 8), torch.zeros(4).long(),
                                                               *[torch.zeros(0)] * 4, num_classes=7)).fc.out_features == 7
    with pytest.raises(ValueError, match="unknown network 'nope'; valid networks: resnet20.*small_cnn"):
        models.build("nope", small_data())


# -- 3. a fingerprint that cannot miss -------------------------------------------------------------------

def user_module(name, source):
    """A module of the user's own (as a notebook or a script next to it defines one)."""
    module = types.ModuleType(name)
    exec(textwrap.dedent(source), module.__dict__)
    sys.modules[name] = module
    return module


def test_a_changed_global_closure_or_helper_constant_gives_new_run_ids(own):
    cfg = user_module("user_cfg", """
        import torch.nn as nn
        HIDDEN = 8
        def build(data):
            return nn.Sequential(nn.Flatten(), nn.Linear(12, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, data.num_classes))
    """)
    plugins.register_network("small_cnn", cfg.build)
    first = setup_from_profile(own)
    cfg.HIDDEN = 24  # the network grows; the run ids must change (the fingerprint is taken when planning)
    grown = setup_from_profile(own)
    assert first["plugins"]["network:small_cnn"] != grown["plugins"]["network:small_cnn"]
    assert experiments.dense_specs(own)[0].id != experiments.RunSpec(first, 1).id

    def make(momentum):
        def build(data):
            return SmallCNN(1, data.num_classes, hidden=int(momentum * 10) + 1)
        return build
    assert plugins.fingerprint(make(0.1)) != plugins.fingerprint(make(0.9))
    assert plugins.fingerprint(make(0.1)) == plugins.fingerprint(make(0.1))

    helpers = user_module("user_helpers", """
        WIDTH = 4
        def width():
            return WIDTH
    """)
    via_attribute = user_module("user_nets", """
        import user_helpers
        from user_helpers import width
        def build(data):
            return width() + user_helpers.width()
        def build_by_attribute(data):
            return user_helpers.WIDTH
    """)
    before = plugins.fingerprint(via_attribute.build), plugins.fingerprint(via_attribute.build_by_attribute)
    helpers.WIDTH = 5
    after = plugins.fingerprint(via_attribute.build), plugins.fingerprint(via_attribute.build_by_attribute)
    assert before[0] != after[0] and before[1] != after[1]


def test_bound_methods_callable_objects_and_package_paths_are_fingerprinted_by_what_they_read():
    """Found by a new user's session: a bound method's object state, and a value read through a
    package path (``pkg.cfg.sizes.WIDTH``), changed without changing the run ids."""
    class Builder:
        def __init__(self, width):
            self.width = width

        def build(self, data):
            return SmallCNN(1, data.num_classes, hidden=self.width)

        __call__ = build
    b = Builder(16)
    before = plugins.fingerprint(b.build), plugins.fingerprint(b)
    b.width = 64
    after = plugins.fingerprint(b.build), plugins.fingerprint(b)
    assert before[0] != after[0] and before[1] != after[1]
    assert plugins.fingerprint(Builder(64).build) == after[0]

    pkg = user_module("user_pkg", "")
    pkg.cfg = user_module("user_pkg.cfg", "")
    pkg.cfg.sizes = user_module("user_pkg.cfg.sizes", "WIDTH = 4")
    reader = user_module("user_reader", """
        import user_pkg
        def build(data):
            return user_pkg.cfg.sizes.WIDTH
    """)
    first = plugins.fingerprint(reader.build)
    pkg.cfg.sizes.WIDTH = 5
    assert plugins.fingerprint(reader.build) != first


def test_values_that_cannot_be_fingerprinted_are_refused_by_name():
    rng = random.Random(0)

    def build(data):
        return SmallCNN(1, 3, hidden=rng.randint(4, 8))
    with pytest.raises(plugins.FingerprintError, match=r"closure variable 'rng' of .*build.*random.Random.*"
                                                       r"model_options.*version="):
        plugins.register_network("odd_cnn", build)
    assert plugins.get("network", "odd_cnn") is None
    plugins.register_network("odd_cnn", build, version="rng-0")  # the user's own identity: accepted
    try:
        assert plugins.identity("odd_cnn", "mnist1d", "step") == {"network:odd_cnn": "rng-0"}
    finally:
        plugins.unregister("network", "odd_cnn")

    def over(value):  # arrays and tensors are fingerprinted by content
        return lambda data: value
    import numpy as np
    for make in (torch.arange, np.arange):
        assert plugins.fingerprint(over(make(4))) == plugins.fingerprint(over(make(4)))
        assert plugins.fingerprint(over(make(4))) != plugins.fingerprint(over(make(4) + 1))


def test_an_unchanged_rerun_reuses_every_run(own, tmp_path, monkeypatch):
    first = experiments.run_grid(own, "one_shot", tmp_path, progress=False)

    def boom(*a, **k):
        raise AssertionError("recomputed")
    monkeypatch.setattr(runner, "run_plan", boom)
    again = experiments.run_grid(own, "one_shot", tmp_path, progress=False)
    assert again.run_ids == first.run_ids
    pd.testing.assert_frame_equal(again.results, first.results)


# -- 4. values checked where they enter -------------------------------------------------------------------

def test_a_schedule_giving_a_negative_or_nan_lr_is_refused_before_anything_is_written(own, tmp_path):
    plugins.register_schedule("neg", lambda step, total, recipe: recipe.lr if step < 3 else -0.1)
    with pytest.raises(ScheduleValueError, match="schedule 'neg' gave the learning rate -0.1 at step 3 of 6"):
        Recipe(epochs=2, batch_size=32, lr_schedule="neg").schedule(96)
    profile = get_profile(own, recipe=Recipe(epochs=2, batch_size=32, lr_schedule="neg"))
    with pytest.raises(ScheduleValueError, match="'neg'.*step 3"):
        experiments.run_grid(profile, "one_shot", tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()
    plugins.register_schedule("neg", lambda step, total, recipe: float("nan"))
    with pytest.raises(ScheduleValueError, match="nan at step 0"):
        Recipe(epochs=2, batch_size=32, lr_schedule="neg").schedule(96)


@pytest.mark.parametrize("value,message", [(float("nan"), "returned nan on the val split; it must be a finite"),
                                           (150.0, r"returned 150 on the val split, outside its range \[0, 100\]")])
def test_a_metric_outside_its_range_stops_the_run_unfinished(own, tmp_path, value, message):
    plugins.register_metric("odd", lambda model, data, split: value, label="odd score", range=(0, 100))
    plugins.register_network("odd_cnn", build_cnn, metric="odd")
    profile = get_profile(own, network="odd_cnn")
    with pytest.raises(MetricValueError, match=message):  # checked on the untrained network, before training
        experiments.run_grid(profile, "one_shot", tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="range of metric 'bad' must have low < high"):
        plugins.register_metric("bad", lambda *a: 0.0, range=(1, 0))


class FewBatches:
    """A user's dataset following the protocol except where a test breaks it."""

    num_classes, name = 3, "few"

    def __init__(self, batches_per_epoch=3, labels=(0, 3), x_shape=(1, 12), float_labels=False):
        self.inner, self.limit, self.labels = small_data(), batches_per_epoch, labels
        self.x_shape, self.float_labels = x_shape, float_labels
        self.n_train, self.input_shape, self.device = 96, (1, 12), torch.device("cpu")  # declared; x_shape: given

    def batches(self, batch_size, seed, start, stop):
        g = torch.Generator().manual_seed(seed)
        for _ in range(start, min(stop, start + self.limit)):
            y = torch.randint(*self.labels, (batch_size,), generator=g)
            yield torch.randn(batch_size, *self.x_shape, generator=g), (y.float() if self.float_labels else y)

    def to(self, device):
        return self

    def __getattr__(self, name):  # evaluation and the rest: the in-memory data's
        return getattr(self.inner, name)


@pytest.mark.parametrize("dataset,message", [
    (FewBatches(batches_per_epoch=2), r"dataset 'small_data' gave 2 training batches for epoch 0, where an epoch is 3"),
    (FewBatches(labels=(0, 5)), r"dataset 'small_data': labels of the first training batch must lie in 0 … 2 "
                                r"\(num_classes = 3\); found 0 … 4"),
    (FewBatches(float_labels=True), "dataset 'small_data': labels y must be integer class indices"),
    (FewBatches(x_shape=(2, 12)), r"network 'small_cnn' cannot take dataset 'small_data''s batches \(x = \(32, 2, 12\)"),
])
def test_the_data_protocol_is_checked_at_the_first_batch_naming_the_dataset(own, tmp_path, dataset, message):
    plugins.register_dataset("small_data", lambda: dataset, version=message)  # a version of its own per case
    with pytest.raises(DataProtocolError, match=message):
        experiments.run_grid(own, "one_shot", tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()


class ShiftedEvalLabels(FewBatches):
    def eval_batches(self, split, batch_size):
        for x, y in self.inner.eval_batches(split, batch_size):
            yield x, y + 20


def test_evaluation_labels_output_width_metric_and_loader_are_checked_before_training(own, tmp_path):
    cases = [
        (lambda: ShiftedEvalLabels(), build_cnn, None, r"dataset 'small_data': val labels must lie in 0 … 2"),
        (lambda: FewBatches(), lambda data: SmallCNN(1, 2), None,
         "network 'small_cnn' gives 2 class scores per example, but dataset 'small_data' has num_classes = 3"),
        (lambda: FewBatches(), build_cnn, "nosuch",
         r"network 'small_cnn' on dataset 'small_data' is evaluated by unknown metric 'nosuch'; valid metrics: accuracy"),
        (lambda: {"x": 1}, build_cnn, None,
         r"dataset 'small_data' loaded a dict, which lacks batches, eval_batches.*rewindkit.core.batches.TrainingData"),
    ]
    for i, (load, build, metric, message) in enumerate(cases):
        plugins.register_dataset("small_data", load, version=f"case {i}")
        plugins.register_network("small_cnn", build, metric=metric, version=f"case {i}")
        with pytest.raises(ValueError, match=message):
            experiments.run_grid(own, "one_shot", tmp_path, progress=False)
        assert not (tmp_path / "runs").exists(), message


def test_strings_are_not_numbers():
    plugins.register_schedule("neg", lambda step, total, recipe: "0.1")
    with pytest.raises(ScheduleValueError, match="gave the learning rate '0.1' at step 0"):
        Recipe(epochs=2, batch_size=32, lr_schedule="neg").schedule(96)
    plugins.unregister("schedule", "neg")
    from rewindkit.core.metrics import get_metric
    plugins.register_metric("odd", lambda model, data, split: "0.5")
    try:
        metric = get_metric("odd")
        with pytest.raises(MetricValueError, match="returned '0.5' on the test split; it must return a number"):
            metric.check(metric.evaluate(None, None, "test", None), "test")
    finally:
        plugins.unregister("metric", "odd")


def test_vision_network_points_a_plugin_to_build(own):
    with pytest.raises(ValueError, match=r"unknown vision network 'small_cnn'.*models.build\('small_cnn', data"):
        models.vision_network("small_cnn")


def test_running_out_of_batches_mid_run_names_the_dataset():
    model = build_cnn(small_data())
    recipe = Recipe(epochs=2, batch_size=32, milestones=(1,))
    with pytest.raises(DataProtocolError, match=r"dataset 'few' gave no training batch for iteration 2"):
        training.train_steps(model, training.make_optimizer(model, recipe), FewBatches(batches_per_epoch=2),
                             recipe.schedule(96), 0, 6, seed=0, batch_size=32, progress=False)


def test_a_network_with_nothing_to_prune_is_refused_before_training(own, tmp_path, monkeypatch):
    plugins.register_network("small_cnn", lambda data: nn.Sequential(nn.Flatten(), nn.ReLU()))

    def boom(*a, **k):
        raise AssertionError("trained")
    monkeypatch.setattr(runner, "run_plan", boom)
    with pytest.raises(ValueError, match="network 'small_cnn' has no prunable tensor.*prunable="):
        experiments.run_grid(own, "one_shot", tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()


# -- 5. friction ----------------------------------------------------------------------------------------

def test_another_network_or_dataset_starts_from_its_own_options(own):
    assert get_profile("laptop", network="small_cnn").model_options == {}
    assert get_profile("laptop", network="small_cnn", model_options={"hidden": 4}).model_options == {"hidden": 4}
    other = get_profile("smoke", dataset="small_data")
    assert (other.dataset_options, other.n_train, other.n_eval) == ({}, None, None)
    assert get_profile("smoke", seeds=(2,)).n_train == 256  # untouched when the data stay
    assert len(experiments.grid_specs(get_profile("laptop", epochs=4, milestones=(2, 3), retrain_times=(2, 4)),
                                      "one_shot")) > 0  # the inherited iterative budgets (8) do not matter here


def test_plugin_results_are_strict_json_with_flops_and_the_metric_label_survives_a_fresh_process(own, tmp_path):
    plugins.register_metric("odd", lambda model, data, split: 42.0, label="odd score", range=(0, 100))
    plugins.register_network("odd_cnn", build_cnn, metric="odd")
    profile = get_profile(own, network="odd_cnn")
    result = experiments.run_grid(profile, "one_shot", tmp_path, progress=False)
    for path in (tmp_path / "runs").glob("*/result.json"):
        row = strict_json(path)["row"]
        assert row["metric"] == "odd" and row["metric_label"] == "odd score" and row["flops"] > 0
    assert (result.results["test_acc"] == 42.0).all()
    # a fresh process: neither plug-in registered; reading the results folder brings the label back
    plugins.unregister("network", "odd_cnn")
    plugins.unregister("metric", "odd")
    assert metric_of_network("odd_cnn").label in ("test accuracy", "odd score")
    from rewindkit.core import metrics
    metrics._FROM_RESULTS.clear()
    assert metric_of_network("odd_cnn").label == "test accuracy"
    experiments.write_tables(tmp_path)
    assert metric_of_network("odd_cnn").label == "odd score"
    assert metrics.delta_label("odd_cnn") == "Δ odd score vs dense"


def test_translation_results_are_strict_json(tmp_path):
    from rewindkit.platform.storage import atomic_write_json
    atomic_write_json({"flops": float("nan"), "nested": [float("inf"), 1.0]}, tmp_path / "r.json")
    assert strict_json(tmp_path / "r.json") == {"flops": None, "nested": [None, 1.0]}


# -- the engine, read for more of the same ----------------------------------------------------------------

def test_compile_is_never_run_in_threads():
    from rewindkit.engine.executors import concurrency
    from rewindkit.platform.hardware import Hardware
    assert concurrency(2, Hardware(), plugin_runs=True) == (1, 2)  # plug-ins: threads
    assert concurrency(2, Hardware(compile=True), plugin_runs=True) == (1, 1)  # but not with torch.compile
    assert concurrency(2, Hardware(compile=True), plugin_runs=False) == (2, 1)
    with pytest.raises(ValueError, match=r"workers=2.*packing=2.*not both"):
        concurrency(2, Hardware(packing=2), plugin_runs=False)


def test_bleu_networks_are_not_drawn_as_percentages():
    from rewindkit.notebook import teaching_plots
    curves = {"fine_tuning": pd.DataFrame({"test_acc": [60.0, 70.0], "epoch": [1, 2], "lr": [0.1, 0.1]})}
    fig, _ = teaching_plots.retraining_curves(curves, dense_acc=75.0, network="gnmt_small")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "BLEU" and list(ax.lines[0].get_ydata()) == [60.0, 70.0]
    fig, _ = teaching_plots.retraining_curves({"fine_tuning": curves["fine_tuning"].assign(test_acc=[0.5, 0.6])})
    assert fig.axes[0].get_ylabel() == "test accuracy (%)" and list(fig.axes[0].lines[0].get_ydata()) == [50.0, 60.0]
    fig, _ = teaching_plots.run_curve(curves["fine_tuning"], "fine_tuning", network="gnmt_small")
    assert fig.axes[0].get_ylabel() == "BLEU"


def test_rewind_replays_and_probes_evaluate_nothing(tmp_path, monkeypatch):
    from rewindkit.engine import costs
    profile = get_profile("smoke", epochs=4, milestones=(2, 3), batch_size=16, n_train=128, n_eval=40,
                          densities=(0.3,), retrain_times=(2,), seeds=(1,))
    dense = experiments.dense_specs(profile)[0]
    runner.execute(dense, tmp_path, profile.hardware)  # saves iteration 0 only
    calls = []
    monkeypatch.setattr(training, "evaluate", lambda *a, **k: calls.append(a[2]) or 0.5)
    state = runner.rewind_checkpoint(experiments.RunStore(tmp_path), dense.id, 16, profile.hardware)
    costs.probe(profile, steps=3)
    assert state.step == 16 and calls == []


def test_cli_says_where_the_figures_are(tmp_path, monkeypatch, capsys):
    from rewindkit import cli
    from rewindkit.notebook import workspace as nb
    monkeypatch.setenv("REWINDKIT_OUT", str(tmp_path))
    monkeypatch.setattr(nb, "run_notebooks", lambda *a, **k: [])
    assert cli.main(["notebooks", "01", "--profile", "smoke"]) == 0
    assert f"figures: {tmp_path / 'figures' / 'smoke'}" in capsys.readouterr().out


def test_ray_not_installed_is_a_clear_error(monkeypatch, tmp_path, capsys):
    from rewindkit import cli
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError, as where the extra is absent
    with pytest.raises(RuntimeError, match=r"executor 'ray' needs Ray.*pip install 'rewindkit\[ray\]'"):
        experiments.run_grid(get_profile("smoke"), "one_shot", tmp_path, executor="ray", progress=False)
    assert cli.main(["grid", "smoke", "--kind", "one_shot", "--executor", "ray", "--out", str(tmp_path)]) == 2
    assert "pip install 'rewindkit[ray]'" in capsys.readouterr().err


def test_plugin_runs_are_refused_by_ray_without_ray(own, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ValueError, match="plug-ins registered in this process"):
        experiments.run_grid(own, "one_shot", tmp_path, executor="ray", progress=False)


def test_library_training_uses_the_engines_one_thread(monkeypatch):
    ds = small_data()
    recipe = Recipe(epochs=2, batch_size=32, milestones=(1,))
    seen = []
    torch.set_num_threads(2)
    try:
        training.train_dense(lambda: build_cnn(ds), ds, recipe, seed=1, log=lambda _: seen.append(torch.get_num_threads()))
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(2)


# -- one path from a plan to a trained state -------------------------------------------------------------

def test_the_readme_library_example_is_the_grid_run_bit_for_bit(tmp_path):
    """The README's library example (train_dense, then retrain with a pruning description) trains
    exactly the runs a one-shot grid trains: dense, weight rewinding and LR rewinding."""
    profile = get_profile("smoke", densities=(0.5,), retrain_times=(2,), seeds=(1,),
                          techniques=("weight_rewinding", "lr_rewinding"))
    grid = experiments.run_grid(profile, "one_shot", tmp_path, progress=False)
    setup = setup_from_profile(profile)
    ds = runner.load_dataset(setup, "cpu")
    build = lambda: models.vision_network("mnist1d_resnet", **profile.model_options)  # noqa: E731  (as the README builds it)
    recipe = profile.recipe
    schedule = recipe.schedule(ds.n_train)
    dense = training.train_dense(build, ds, recipe, seed=1, rewind_steps=techniques.rewind_steps_needed([2], schedule),
                                 hardware=profile.hardware)
    stored = torch.load(tmp_path / "runs" / grid.base.run_id[0] / "final.pt", weights_only=True)
    assert all(torch.equal(dense.final.model[k], stored[k]) for k in stored)
    for technique in ("weight_rewinding", "lr_rewinding"):
        plan = techniques.plan_retraining(technique, 2, schedule)
        model, _ = techniques.retrain(build, ds, recipe, plan, pruning.GlobalMagnitude(0.5), final=dense.final,
                                      rewind=dense.checkpoints.get(plan.rewind_step), seed=1, hardware=profile.hardware)
        run_id = grid.results.set_index("technique").loc[technique, "run_id"]
        stored = torch.load(tmp_path / "runs" / run_id / "final.pt", weights_only=True)
        assert all(torch.equal(model.state_dict()[k], stored[k]) for k in stored), technique


def test_a_runs_schedule_is_computed_once_where_it_runs(tmp_path, monkeypatch):
    """Once per run (no data loaded in the parent to count examples; no second schedule for rewinding)."""
    calls = []
    real = Recipe.schedule
    monkeypatch.setattr(Recipe, "schedule", lambda self, n: calls.append(n) or real(self, n))
    profile = get_profile("smoke", densities=(0.5,), retrain_times=(2,), seeds=(1,),
                          techniques=("fine_tuning", "weight_rewinding"))
    result = experiments.run_grid(profile, "one_shot", tmp_path, progress=False, workers=1)
    assert len(calls) == len(result.run_ids) == 3
    assert math.isfinite(result.results["test_acc"].iloc[0])


# -- 6. a second first user (issue 24's round): the command line, structured grids, what errors name ----

PLUGIN_FILE = '''
from torch import nn
from rewindkit import plugins

def cli_mlp(data, hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(40, hidden), nn.ReLU(), nn.Linear(hidden, data.num_classes))

plugins.register_network("cli_mlp", cli_mlp)
'''


def test_the_command_line_imports_plugins_from_a_file_or_a_module(tmp_path, monkeypatch, capsys):
    from rewindkit import cli
    (tmp_path / "my_plugins.py").write_text(PLUGIN_FILE)
    monkeypatch.chdir(tmp_path)
    plan = ["grid", "smoke", "--kind", "one_shot", "--set", "network=cli_mlp", "--plan", "--workers", "2",
            "--out", str(tmp_path / "runs")]
    try:
        assert cli.main(plan) == 2  # not registered without --plugin
        assert "unknown network 'cli_mlp'" in capsys.readouterr().err
        assert cli.main(plan + ["--plugin", "my_plugins.py"]) == 0
        out = capsys.readouterr().out
        assert "cli_mlp" in out and "runs at once: 2 — threads in this process" in out  # as run_specs runs them
        assert cli.main(plan + ["--plugin", "my_plugins.py"]) == 0  # the same file again: the same module
        plugins.unregister("network", "cli_mlp")
        del sys.modules["my_plugins"]
        assert cli.main(plan + ["--plugin", "my_plugins"]) == 0  # by module name, from the current folder
        assert Path(sys.modules["my_plugins"].__file__).resolve() == (tmp_path / "my_plugins.py").resolve()
        assert cli.main(plan + ["--plugin", "no_such_plugins"]) == 2
        assert "cannot import plug-in module 'no_such_plugins'" in capsys.readouterr().err
        assert not (tmp_path / "runs").exists()
    finally:
        plugins.unregister("network", "cli_mlp")
        sys.modules.pop("my_plugins", None)


def test_a_structured_grid_it_cannot_prune_is_refused_before_anything_is_written(own, tmp_path):
    from rewindkit.engine.costs import plan_report
    profile = get_profile(own, structured_configs=("generic_a",), structured_levels=(1,))
    refusal = r"cannot prune network 'small_cnn' at generic_a L1: L1 filter pruning \(§3.2\) needs a residual network"
    with pytest.raises(ValueError, match=refusal + r".*SmallCNN has no such blocks"):
        plan_report(profile, "structured", tmp_path)
    with pytest.raises(ValueError, match=refusal):
        experiments.run_grid(profile, "structured", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_compacting_a_network_without_blocks_names_the_unstructured_mask_first():
    from rewindkit.core.compaction import UnstructuredMaskError
    model = build_cnn(small_data())
    with pytest.raises(UnstructuredMaskError, match=r"removes whole filters only.*one by one.*needs residual blocks"):
        pruning.compact(model, pruning.global_magnitude(model, 0.3))
    from rewindkit.core.masks import Mask
    with pytest.raises(ValueError, match="needs a residual network") as nothing_pruned:
        pruning.compact(model, Mask.ones(model))
    assert not isinstance(nothing_pruned.value, UnstructuredMaskError)


def test_a_dataset_whose_splits_disagree_is_refused_naming_the_split():
    from dataclasses import replace
    ds = small_data()
    with pytest.raises(ValueError, match=r"dataset '.*': train_x holds \(96, 1, 12\) and train_y \(90,\); each split "
                                         r"needs one label per example"):
        replace(ds, train_y=ds.train_y[:90])
    with pytest.raises(ValueError, match=r"one example of train_x is \(1, 12\), of val_x \(1, 10\), of test_x \(1, 12\)"):
        replace(ds, val_x=ds.val_x[..., :10])


def test_a_schedule_with_the_wrong_signature_is_named(own):
    plugins.register_schedule("neg", lambda step, total: 0.1)  # the recipe argument forgotten
    with pytest.raises(ScheduleValueError, match=r"schedule 'neg' failed at step 0 of 6: TypeError: .*lr_at\(step, "
                                                 r"total_steps, recipe\)"):
        Recipe(epochs=2, batch_size=32, lr_schedule="neg").schedule(96)


def test_an_open_file_a_plugin_reads_is_refused_by_its_global_name(tmp_path):
    (tmp_path / "file_plugins.py").write_text(
        "from rewindkit import plugins\nFH = open(__file__)\n\ndef load():\n    return FH.read()\n\n"
        "plugins.register_dataset('file_data', load)\n")
    with pytest.raises(plugins.FingerprintError, match=r"cannot fingerprint global 'FH' read by load: a _io.TextIOWrapper"):
        plugins.load_module(str(tmp_path / "file_plugins.py"))
    assert "file_plugins" not in sys.modules and plugins.get("dataset", "file_data") is None


def test_an_unknown_profile_field_suggests_the_nearest():
    with pytest.raises(ValueError, match=r"unknown profile field 'recipe.epoch'; did you mean 'recipe.epochs'"):
        get_profile("smoke", **{"recipe.epoch": 3})
