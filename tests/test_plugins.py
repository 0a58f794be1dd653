"""The public plug-in API (issue 14 §1): a network, dataset, metric and schedule registered from
this test file, trained with Adam, go through the techniques, grids and tables unchanged."""
import json

import pandas as pd
import pytest
import torch
from torch import nn

from rewindkit import data, experiments, plugins, pruning, techniques
from rewindkit.core.masks import Mask
from rewindkit.core.metrics import delta_label, metric_of_network
from rewindkit.profiles import get_profile
from rewindkit.recipe import Recipe
from rewindkit.engine.runs import setup_from_profile
from rewindkit.training import make_optimizer, snapshot, train_dense

ADAM = Recipe(epochs=4, batch_size=32, lr=0.01, milestones=(2, 3), gamma=0.5, weight_decay=0.0, optimizer="adam",
              grad_clip_norm=5.0, label_smoothing=0.1)


class TinyMLP(nn.Module):
    def __init__(self, n_in, hidden, n_out):
        super().__init__()
        self.embed_scale = nn.Parameter(torch.ones(n_in))  # a 1-D tensor the plug-in declares prunable
        self.fc1, self.fc2 = nn.Linear(n_in, hidden), nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1) * self.embed_scale)))


def build_tiny(data, hidden=16):
    return TinyMLP(data.input_shape[-1], hidden, data.num_classes)


def every_weight(model):
    return [n for n, _ in model.named_parameters()]


def negative_loss(model, data, split):  # a metric: higher is better
    return -1.0


@pytest.fixture
def registered():
    plugins.register_network("tiny_mlp", build_tiny, prunable=every_weight)
    plugins.register_dataset("tiny_data", lambda n=96: data.make_synthetic(n_train=n, n_test=40, shape=(1, 12),
                                                                           num_classes=3, seed=4))
    plugins.register_schedule("halving", lambda step, total, recipe: recipe.lr * 0.5 ** (4 * step // total))
    yield
    for kind, name in (("network", "tiny_mlp"), ("dataset", "tiny_data"), ("schedule", "halving")):
        plugins.unregister(kind, name)


@pytest.fixture
def ds():
    return data.make_synthetic(n_train=96, n_test=40, shape=(1, 12), num_classes=3, seed=4)


def adam_dense(ds, recipe=ADAM):
    build = lambda: build_tiny(ds)  # noqa: E731
    sched = recipe.schedule(ds.n_train)
    steps = techniques.rewind_steps_needed([1, 2], sched)
    return build, train_dense(build, ds, recipe, seed=3, rewind_steps=steps, progress=False)


def test_weight_rewinding_restores_the_whole_adam_state(ds):
    """WR restores weights, both moments and the step count from T − t; LRR and FT keep the final ones."""
    build, dense = adam_dense(ds)
    sched = dense.schedule
    for tech, t in (("weight_rewinding", 2), ("lr_rewinding", 2), ("fine_tuning", 1)):
        plan = techniques.plan_retraining(tech, t, sched)
        model, opt = techniques.start_state(build, ADAM, plan, seed=3, final=dense.final,
                                            rewind=dense.checkpoints.get(plan.rewind_step))
        assert isinstance(opt, torch.optim.Adam)
        want = dense.checkpoints[plan.rewind_step] if tech == "weight_rewinding" else dense.final
        got = snapshot(model, opt, 0)
        assert all(torch.equal(got.model[k], want.model[k]) for k in want.model)
        for i, st in want.optimizer["state"].items():
            mine = got.optimizer["state"][i]
            assert set(st) == {"step", "exp_avg", "exp_avg_sq"}
            assert all(torch.equal(mine[k], st[k]) for k in st), (tech, i)
        expected_step = plan.rewind_step if tech == "weight_rewinding" else sched.total_steps
        assert float(got.optimizer["state"][0]["step"]) == expected_step


def test_pruned_entries_and_their_adam_moments_stay_exactly_zero(ds):
    build, dense = adam_dense(ds)
    probe = build()
    probe.load_state_dict(dense.final.model)
    probe.prunable = every_weight(probe)
    mask = pruning.global_magnitude(probe, 0.3)
    assert "embed_scale" in mask.weight_names and "fc1.bias" in mask.weight_names  # 1-D tensors count
    assert abs(mask.density() - 0.3) < 1 / mask.num_total() + 1e-9
    for tech in ("fine_tuning", "weight_rewinding", "lr_rewinding"):
        plan = techniques.plan_retraining(tech, 2, dense.schedule)
        model, history = techniques.retrain(build, ds, ADAM, plan, mask, final=dense.final,
                                            rewind=dense.checkpoints.get(plan.rewind_step), seed=3)
        params = dict(model.named_parameters())
        for n in mask:
            assert torch.count_nonzero(params[n].detach()[~mask[n]]) == 0, (tech, n)
        assert all(torch.isfinite(torch.tensor(r.train_loss)) for r in history)
    # the moments: one more Adam step under the enforcer leaves pruned moments at exactly zero
    from rewindkit.core.masks import MaskEnforcer
    model = build()
    model.load_state_dict(dense.final.model)
    opt = make_optimizer(model, ADAM)
    opt.load_state_dict(dense.final.optimizer)
    enforcer = MaskEnforcer(model, mask)
    enforcer.apply_to_weights()
    enforcer.apply_to_optimizer(opt)
    x, y = next(ds.batches(32, 0, 0, 1))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    enforcer.apply_to_grads()
    opt.step()
    enforcer.apply_to_weights()
    for name, p in model.named_parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.count_nonzero(opt.state[p][key][~mask[name]]) == 0, (name, key)


def test_lr_traces_under_a_registered_schedule(registered):
    recipe = Recipe(epochs=4, batch_size=32, lr=0.01, optimizer="adam", lr_schedule="halving")
    sched = recipe.schedule(96)  # 3 steps per epoch, T = 12
    assert sched.trace(0, 12) == [0.01] * 3 + [0.005] * 3 + [0.0025] * 3 + [0.00125] * 3
    assert sched.final_lr == 0.00125
    ft = techniques.plan_retraining("fine_tuning", 2, sched)
    lrr = techniques.plan_retraining("lr_rewinding", 2, sched)
    assert ft.lr_trace() == [0.00125] * 6
    assert lrr.lr_trace() == sched.trace(6, 12) and (lrr.start_step, lrr.stop_step) == (6, 12)


def test_a_registered_network_runs_a_grid_with_adam(registered, tmp_path):
    profile = get_profile("smoke", network="tiny_mlp", model_options={"hidden": 8}, dataset="tiny_data",
                          dataset_options={}, n_train=None, n_eval=None, workers=2,
                          recipe=Recipe(epochs=4, batch_size=32, lr=0.01, optimizer="adam", lr_schedule="halving"),
                          densities=(0.5,), techniques=("fine_tuning", "weight_rewinding", "lr_rewinding"),
                          retrain_times=(2,))
    result = experiments.run_grid(profile, "one_shot", tmp_path, progress=False)
    r = result.results
    assert len(r) == 3 and set(r.technique) == {"fine_tuning", "weight_rewinding", "lr_rewinding"}
    assert (r.network == "tiny_mlp").all() and r.test_acc.between(0, 1).all()
    # a plug-in network's FLOPs are counted too (issue 20 §5), fewer than the dense network's
    from rewindkit.core.flops import forward_flops
    dense_flops = forward_flops(build_tiny(data.make_synthetic(n_train=96, n_test=40, shape=(1, 12), num_classes=3,
                                                               seed=4), 8), (1, 12))
    assert ((r.flops > 0) & (r.flops < dense_flops)).all()
    result = json.loads((tmp_path / "runs" / r.run_id[0] / "result.json").read_text())  # strict JSON
    assert result["row"]["metric"] == "accuracy" and result["row"]["metric_label"] == "test accuracy"
    assert ((r.density - 0.5).abs() < 0.01).all()
    saved = Mask.load(tmp_path / "runs" / r.run_id[0] / "mask.pt")
    assert "embed_scale" in saved.weight_names and abs(saved.density() - r.density[0]) < 1e-12
    config = json.loads((tmp_path / "runs" / r.run_id[0] / "config.json").read_text())
    assert set(config["setup"]["plugins"]) == {"network:tiny_mlp", "dataset:tiny_data", "schedule:halving"}
    assert pd.read_csv(tmp_path / "results.csv").shape[0] == 3

    # a changed plug-in gets new run ids: nothing old is reused
    before = setup_from_profile(profile)["plugins"]["network:tiny_mlp"]
    plugins.register_network("tiny_mlp", lambda data, hidden=16: build_tiny(data, hidden + 1), prunable=every_weight)
    assert setup_from_profile(profile)["plugins"]["network:tiny_mlp"] != before
    plugins.register_network("tiny_mlp", build_tiny, prunable=every_weight, version="2")
    assert setup_from_profile(profile)["plugins"]["network:tiny_mlp"].startswith("2:")  # the version joins the fingerprint


def test_metrics_name_tables_and_axes_and_are_what_is_evaluated(registered, ds):
    plugins.register_metric("neg", negative_loss, label="negative loss")
    plugins.register_network("tiny_neg", build_tiny, metric="neg")
    try:
        from rewindkit import models
        from rewindkit.training import evaluate
        assert evaluate(models.build("tiny_neg", ds), ds, "test") == -1.0  # the network's declared metric
        assert 0 <= evaluate(models.build("tiny_mlp", ds), ds, "test") <= 1  # else the data's: accuracy
        assert metric_of_network("tiny_neg").label == "negative loss"
        assert delta_label("tiny_neg") == "Δ negative loss vs dense"
        assert delta_label("gnmt") == "Δ BLEU vs dense"
        assert delta_label("resnet56") == "Δ test accuracy vs dense (points)"
    finally:
        plugins.unregister("network", "tiny_neg")
        plugins.unregister("metric", "neg")


def test_the_fingerprint_follows_the_code_a_builder_uses():
    """Editing a class the builder instantiates changes the run ids, not only editing the builder."""
    def builder(width):
        ns = {"nn": nn, "__name__": "my_notebook"}  # code of the user's own, as a notebook cell defines it
        exec(f"class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
             f"        self.fc = nn.Linear(4, {width})\n\ndef build(data):\n    return Net()\n", ns)
        return ns["build"]
    assert plugins.fingerprint(builder(3)) == plugins.fingerprint(builder(3))
    assert plugins.fingerprint(builder(3)) != plugins.fingerprint(builder(5))
    assert plugins.fingerprint(build_tiny) != plugins.fingerprint(lambda data: None)


def test_bad_plugins_get_clear_errors(registered):
    with pytest.raises(ValueError, match="'resnet20' is one of the kit's own networks"):
        plugins.register_network("resnet20", build_tiny)
    with pytest.raises(ValueError, match="identifier"):
        plugins.register_network("tiny mlp", build_tiny)
    with pytest.raises(ValueError, match="unknown network 'nope'.*tiny_mlp"):
        get_profile("smoke", network="nope")
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; valid optimizers: sgd, adam"):
        Recipe(optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown lr_schedule 'exponential'; valid schedules: step, gnmt, cosine, "
                                         "linear, one_cycle, halving"):
        Recipe(lr_schedule="exponential")
    profile = get_profile("smoke", network="tiny_mlp", dataset="tiny_data", n_train=None, n_eval=None)
    with pytest.raises(ValueError, match="plug-ins registered in this process"):
        experiments.run_grid(profile, "one_shot", executor="ray", progress=False)


def test_builtin_run_ids_do_not_change_with_the_new_recipe_fields():
    recipe = Recipe().to_dict()
    assert "optimizer" not in recipe and "label_smoothing" not in recipe and "plugins" not in setup_from_profile(
        get_profile("laptop"))
    assert Recipe(optimizer="adam").to_dict()["optimizer"] == "adam"
