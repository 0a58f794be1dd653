"""A user's own networks that the kit's do not resemble — dropout, tied weights, decorated builders,
attention, three-dimensional activations — through the plug-in API, as a new user's session met
them: each defect that session found has a test here that fails on the code before it."""
import functools
import threading

import pytest
import torch
from helpers import assert_close_across_kernels, kernel_path_tolerance, train_in_segments
from torch import nn

from rewindkit import data, experiments, plugins
from rewindkit.core.masks import Mask, prunable_weight_names
from rewindkit.core.seeds import GLOBAL_RNG_LOCK, ForwardRandomness
from rewindkit.profiles import get_profile
from rewindkit.recipe import Recipe
from rewindkit.training import make_optimizer, snapshot, train_steps

RECIPE = Recipe(epochs=3, batch_size=32, lr=0.05, milestones=(2,))


def small_data(n=96):
    return data.make_synthetic(n_train=n, n_test=40, shape=(1, 12), num_classes=3, seed=4)


class DropoutMLP(nn.Module):
    """A researcher's MLP with dropout: it draws from torch's global generator as it trains."""

    def __init__(self, features=12, classes=3, hidden=16, p=0.3):
        super().__init__()
        self.fc1, self.drop, self.fc2 = nn.Linear(features, hidden), nn.Dropout(p), nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x.flatten(1)))))


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- 1. dropout draws the same numbers for the same run ---------------------------------------------

def dropout_start(cls=None):
    """The data, an initial network (of ``cls``, DropoutMLP by default) and the recipe's last iteration."""
    ds = small_data()
    torch.manual_seed(0)
    return ds, (cls or DropoutMLP)(), RECIPE.schedule(ds.n_train).total_steps


def test_a_dropout_network_trains_to_the_same_weights_whatever_the_global_generator_held():
    ds, initial, stop = dropout_start()
    torch.manual_seed(1)
    a = train_in_segments(DropoutMLP, ds, RECIPE, initial, None, [(0, stop)])
    torch.manual_seed(2)  # another state of the global generator, as another run or a notebook cell leaves it
    b = train_in_segments(DropoutMLP, ds, RECIPE, initial, None, [(0, stop)])
    assert states_equal(a.model, b.model)
    c = train_in_segments(DropoutMLP, ds, RECIPE, initial, None, [(0, stop)], seed=4)  # another data seed
    assert not states_equal(a.model, c.model)
    # dropout did draw: without it the run ends elsewhere
    no_dropout = DropoutMLP(p=0.0)
    no_dropout.load_state_dict(initial.state_dict())
    d = train_in_segments(lambda: DropoutMLP(p=0.0), ds, RECIPE, no_dropout, None, [(0, stop)])
    assert not states_equal(a.model, d.model)


def test_a_resumed_dropout_run_equals_the_uninterrupted_one():
    ds, initial, stop = dropout_start()
    whole = train_in_segments(DropoutMLP, ds, RECIPE, initial, None, [(0, stop)])
    pieces = train_in_segments(DropoutMLP, ds, RECIPE, initial, None, [(0, 2), (2, 5), (5, stop)])
    assert states_equal(whole.model, pieces.model)


def test_training_leaves_the_global_generators_as_it_found_them():
    import random

    import numpy as np
    ds = small_data()
    for model in (DropoutMLP(), NumpyNoise()):
        torch.manual_seed(5)
        np.random.seed(5)
        random.seed(5)
        before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
        train_steps(model, make_optimizer(model, RECIPE), ds, RECIPE.schedule(ds.n_train), 0, 4, seed=3,
                    batch_size=32, progress=False, evaluate_every_epoch=False, evaluate_at_end=False)
        assert torch.equal(torch.get_rng_state(), before[0]) and (np.random.get_state()[1] == before[1]).all()
        assert random.getstate() == before[2]


def test_a_network_that_draws_nothing_is_seeded_only_at_its_first_step(monkeypatch):
    from rewindkit.core import seeds
    seeded = []
    real = seeds.derive_seed
    monkeypatch.setattr(seeds, "derive_seed", lambda *parts: seeded.append(parts) or real(*parts))
    for model, expected in ((DropoutMLP(p=0.0), 1), (DropoutMLP(), 4)):
        seeded.clear()
        randomness = ForwardRandomness(seed=3)
        x = torch.randn(2, 12)
        for step in range(4):
            with randomness.step(step):
                model(x)
        assert len(seeded) == expected and randomness.draws is (expected == 4)


def test_dropout_runs_packed_as_threads_draw_what_they_draw_alone():
    ds, initial, stop = dropout_start()
    alone = train_in_segments(DropoutMLP, ds, RECIPE, initial, None, [(0, stop)])
    results = [None] * 3

    def build():  # as the engine builds (runner.model_builder): its initialisers draw, under the lock
        with GLOBAL_RNG_LOCK:
            return DropoutMLP()

    def run(i):
        results[i] = train_in_segments(build, ds, RECIPE, initial, None, [(0, stop)])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(states_equal(alone.model, r.model) for r in results)


@pytest.fixture
def dropout_plugin():
    plugins.register_network("dropout_mlp", lambda data, hidden=16: DropoutMLP(12, data.num_classes, hidden))
    plugins.register_dataset("small_data", small_data)
    yield get_profile("smoke", network="dropout_mlp", dataset="small_data", recipe=RECIPE, densities=(0.5,),
                      retrain_times=(1,), techniques=("lr_rewinding",))
    plugins.unregister("network", "dropout_mlp")
    plugins.unregister("dataset", "small_data")


def test_the_same_dropout_grid_in_two_folders_gives_the_same_weights_and_tables(dropout_plugin, tmp_path):
    torch.manual_seed(1)
    a = experiments.run_grid(dropout_plugin, "one_shot", tmp_path / "a", progress=False)
    torch.manual_seed(2)
    b = experiments.run_grid(dropout_plugin, "one_shot", tmp_path / "b", progress=False)
    assert a.results["test_acc"].tolist() == b.results["test_acc"].tolist()
    runs_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("final.pt"))
    assert runs_a and runs_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("final.pt"))
    for rel in runs_a:
        assert states_equal(torch.load(tmp_path / "a" / rel), torch.load(tmp_path / "b" / rel))


# -- 2. a decorated builder is fingerprinted by its wrapper and by what it wraps --------------------

DECORATED = '''
import functools
from torch import nn

def scaled(fn):
    @functools.wraps(fn)
    def wrapper(data, **options):
        model = fn(data, **options)
        {WRAPPER}
        return model
    return wrapper

@scaled
def build(data, hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(12, {HIDDEN}), nn.ReLU(), nn.Linear({HIDDEN}, data.num_classes))
'''


def load_source(tmp_path, name, text):
    import importlib.util
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("from_file", [True, False])
def test_an_edit_inside_a_decorators_wrapper_changes_the_fingerprint(tmp_path, from_file):
    def build(i, wrapper="pass", hidden="hidden"):
        text = DECORATED.replace("{WRAPPER}", wrapper).replace("{HIDDEN}", hidden)
        if from_file:
            return load_source(tmp_path, f"user_plugins_{i}", text).build
        ns = {"__name__": "my_notebook"}
        exec(text, ns)  # a notebook cell: no source file, its bytecode and constants
        return ns["build"]
    same = plugins.fingerprint(build(0)), plugins.fingerprint(build(1))
    assert same[0] == same[1]
    edited_wrapper = plugins.fingerprint(build(2, wrapper="model[1].bias.data.mul_(2)"))
    edited_function = plugins.fingerprint(build(3, hidden="2 * hidden"))
    assert len({same[0], edited_wrapper, edited_function}) == 3


# -- 3. tied weights and the prunable set, checked before anything trains ---------------------------

class TiedMLP(nn.Module):
    """Two layers sharing one weight (``self.b.weight = self.a.weight``), and a bare matrix."""

    def __init__(self, classes=3, bare=False):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(12, 12), nn.Linear(12, 12), nn.Linear(12, classes)
        self.b.weight = self.a.weight
        self.mix = nn.Parameter(torch.eye(12)) if bare else None

    def forward(self, x):
        x = x.flatten(1)
        if self.mix is not None:
            x = x @ self.mix
        return self.out(torch.relu(self.b(torch.relu(self.a(x)))))


def test_a_shared_weight_is_one_prunable_tensor_named_as_named_parameters_names_it():
    model = TiedMLP()
    assert prunable_weight_names(model) == ["a.weight", "out.weight"]
    assert Mask.ones(model).num_total() == 12 * 12 + 3 * 12
    model.prunable = ("b.weight", "a.weight", "out.weight")  # a custom rule naming the shared tensor twice
    assert prunable_weight_names(model) == ["a.weight", "out.weight"]


@pytest.fixture
def tied_plugin():
    plugins.register_dataset("small_data", small_data)
    yield lambda **kw: get_profile("smoke", **{"dataset": "small_data", "recipe": RECIPE, "densities": (0.25,),
                                               "retrain_times": (1,), "techniques": ("lr_rewinding",), **kw})
    for name in ("tied_mlp", "misnamed_mlp"):
        plugins.unregister("network", name)
    plugins.unregister("dataset", "small_data")


def test_a_network_with_tied_weights_is_pruned_and_retrained_with_both_names_masked(tied_plugin, tmp_path):
    plugins.register_network("tied_mlp", lambda data: TiedMLP(data.num_classes))
    result = experiments.run_grid(tied_plugin(network="tied_mlp"), "one_shot", tmp_path, progress=False)
    assert len(result.results) == 1
    (mask_file,) = tmp_path.rglob("mask.pt")
    mask = Mask.load(mask_file)
    assert list(mask) == ["a.weight", "out.weight"] and mask.density() == pytest.approx(0.25, abs=1 / 180)
    final = torch.load(mask_file.parent / "final.pt")
    assert torch.equal(final["a.weight"], final["b.weight"])  # still one tensor, loaded back as one
    assert bool((final["a.weight"][~mask["a.weight"]] == 0).all())


def test_a_misspelled_prunable_name_is_refused_before_anything_is_written(tied_plugin, tmp_path):
    plugins.register_network("misnamed_mlp", lambda data: TiedMLP(data.num_classes),
                             prunable=lambda model: ["a.weight", "out.weigth"])
    with pytest.raises(ValueError, match=r"network 'misnamed_mlp': prunable names 'out.weigth', which is not a "
                                         r"parameter of the network \(did you mean 'out.weight'"):
        experiments.run_grid(tied_plugin(network="misnamed_mlp"), "one_shot", tmp_path, progress=False)
    assert not list(tmp_path.rglob("final.pt")) and not list(tmp_path.rglob("config.json"))


def test_matrices_left_out_of_the_default_prunable_set_are_named_in_a_warning(tied_plugin, tmp_path):
    plugins.register_network("tied_mlp", lambda data: TiedMLP(data.num_classes, bare=True))
    with pytest.warns(UserWarning, match=r"'tied_mlp': 1 parameter\(s\) .* will not be pruned: mix\. "):
        experiments.run_grid(tied_plugin(network="tied_mlp", densities=(0.5,)), "one_shot", tmp_path, progress=False)


def test_a_shared_weight_is_stepped_once_per_step():
    model = TiedMLP()
    optimizer = make_optimizer(model, Recipe(lr=0.1, momentum=0.0, weight_decay=0.0))
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    before = model.a.weight.detach().clone()
    model(torch.randn(4, 12)).sum().backward()
    grad = model.a.weight.grad.clone()
    optimizer.step()
    # one step moves it by lr·grad (to rounding of the |w| ≤ 1 entries: 2⁻²⁴ each); two would move it by 2·lr·grad
    torch.testing.assert_close(model.a.weight.detach(), before - 0.1 * grad, rtol=0, atol=4 * 2.0**-24)


def test_masking_a_state_dict_masks_every_name_of_a_shared_weight():
    model = TiedMLP()
    keep = torch.rand(12, 12) < 0.5
    masked = Mask({"a.weight": keep, "out.weight": torch.ones(3, 12, dtype=torch.bool)}).apply_to_state_dict(model.state_dict())
    model.load_state_dict(masked)  # loads a.weight, then b.weight into the same tensor
    assert bool((model.a.weight[~keep] == 0).all()) and torch.equal(masked["a.weight"], masked["b.weight"])


# -- 4. FLOPs of layers the kit's networks do not have ----------------------------------------------

class SequenceNet(nn.Module):
    """A Linear on (L, D) activations, a layer called twice, and self-attention."""

    def __init__(self, length=6, width=8, classes=3, attention=True):
        super().__init__()
        self.length, self.width = length, width
        self.embed, self.shared = nn.Linear(2, width), nn.Linear(width, width)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True) if attention else None
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = self.embed(x.reshape(x.shape[0], self.length, 2))  # (B, L, D)
        h = self.shared(torch.relu(self.shared(h)))  # one layer used twice
        if self.attn is not None:
            h = self.attn(h, h, h, need_weights=False)[0]
        return self.head(h.mean(1))


def test_flops_count_every_use_of_a_weight_at_every_position():
    from rewindkit.core.flops import forward_flops, forward_macs
    net, L, D = SequenceNet(attention=False), 6, 8
    macs = L * 2 * D + 2 * L * D * D + D * 3  # embed at L positions, shared twice at L, head once
    assert forward_macs(net, (12,)) == macs
    relus = L * D
    assert forward_flops(net, (12,)) == 2 * macs + (L * D + 2 * L * D + 3) + 2 * relus  # + biases per position
    keep = torch.zeros(D, D, dtype=torch.bool)
    keep[:, :3] = True  # 24 of the shared layer's 64 weights
    mask = Mask({n: keep if n == "shared.weight" else torch.ones_like(p, dtype=torch.bool)
                 for n, p in net.named_parameters() if p.dim() == 2})
    assert forward_macs(net, (12,), mask) == macs - 2 * L * (D * D - 24)


def test_attention_counts_its_projections_by_their_kept_weights_and_its_scores():
    from rewindkit.core.flops import forward_flops, forward_macs
    L, D = 6, 8
    with_attention, without = SequenceNet(), SequenceNet(attention=False)
    attention_macs = 3 * L * D * D + L * D * D + 2 * L * L * D  # q, k, v and out projections; scores; values
    assert forward_macs(with_attention, (12,)) - forward_macs(without, (12,)) == attention_macs
    biases = 4 * L * D
    assert forward_flops(with_attention, (12,)) - forward_flops(without, (12,)) == 2 * attention_macs + biases
    keep = torch.ones(3 * D, D, dtype=torch.bool)
    keep[:D] = False  # the query projection pruned away
    mask = Mask({"attn.in_proj_weight": keep})
    assert forward_macs(with_attention, (12,), mask) == forward_macs(with_attention, (12,)) - L * D * D


def test_sparse_kernels_take_sequences_and_leave_attention_dense():
    from rewindkit.engine.sparse_kernels import _SparseLinear, sparse_kernels
    net = SequenceNet().eval()
    sparse = sparse_kernels(net)
    assert isinstance(sparse.shared, _SparseLinear) and not isinstance(sparse.attn.out_proj, _SparseLinear)
    x = torch.randn(4, 12)
    with torch.no_grad():
        want, got = net(x), sparse(x)
    # four layers in sequence, each a sum over at most 8 features (attention: dense on both paths)
    assert_close_across_kernels({"out": got}, {"out": want}, kernel_path_tolerance(4, 8), "sparse vs dense")


# -- 5. what a new user types wrong gets one line naming it, and leaves nothing behind ---------------

USER_PLUGINS = '''
from torch import nn
from rewindkit import data, plugins

def mlp(data, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(data.input_shape[-1], hidden), nn.ReLU(),
                         nn.Linear(hidden, data.num_classes))

plugins.register_network({NAME!r}, mlp)
'''
TINY_DATA = '''
plugins.register_dataset("tiny_data", lambda: data.make_synthetic(n_train=64, n_test=32, shape=(1, 12),
                                                                   num_classes=3, seed=0))
'''


@pytest.fixture
def cli_user(tmp_path, monkeypatch):
    """A new user's folder with two plug-in files, each registering a network (the first, a dataset too)."""
    import sys
    from rewindkit import cli
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REWINDKIT_OUT", raising=False)
    (tmp_path / "first_plugins.py").write_text(USER_PLUGINS.replace("{NAME!r}", "'user_mlp'") + TINY_DATA)
    (tmp_path / "second_plugins.py").write_text(USER_PLUGINS.replace("{NAME!r}", "'other_mlp'"))
    (tmp_path / "broken_plugins.py").write_text("{}['oops']\n")
    base = ["grid", "smoke", "--kind", "one_shot", "--quiet", "--no-progress", "--workers", "1",
            "--plugin", "first_plugins.py", "--set", "network=user_mlp", "--set", "dataset=tiny_data",
            "--set", "densities=(0.5,)", "--set", "retrain_times=(1,)", "--set", "techniques=('lr_rewinding',)",
            "--set", "recipe.epochs=2", "--set", "recipe.milestones=(1,)", "--set", "recipe.batch_size=32"]
    yield cli, base
    for kind, name in (("network", "user_mlp"), ("network", "other_mlp"), ("dataset", "tiny_data")):
        plugins.unregister(kind, name)
    for module in ("first_plugins", "second_plugins", "broken_plugins", "beside_plugins", "helpers_beside"):
        sys.modules.pop(module, None)


@pytest.mark.parametrize("extra, message", [
    (["--set", "model_options={'hiden': 8}"],
     "network 'user_mlp' (model_options) takes no option 'hiden' (did you mean 'hidden'?); its options are: hidden"),
    (["--set", "model_options={'hidden': 0}"],
     "network 'user_mlp' with model_options {'hidden': 0}: its prunable tensor '1.weight' has shape (0, 12)"),
    (["--set", "model_options={'hidden': 2.5}"],
     "network 'user_mlp' could not be built with model_options {'hidden': 2.5}: TypeError: "),
    (["--set", "model_options={'hidden': -1}"],
     "network 'user_mlp' could not be built with model_options {'hidden': -1}: RuntimeError: "),
    (["--set", "hardware.device=cuda"], "hardware.device='cuda', but "),
    (["--set", "hardware.device=mps"], "hardware.device='mps': the kit trains on 'cpu', 'cuda', 'cuda:N' or 'auto'"),
    (["--plugin", "broken_plugins.py"], "plug-in file 'broken_plugins.py' failed as it was imported: KeyError: 'oops'"),
    (["--set", "recipe.lr_schedule='gnmt'", "--set", "recipe.optimizer='adam'"],
     "lr_schedule='gnmt' with recipe.schedule_options={} (2 epochs of 2 iterations): warmup_steps must be in 0..3"),
])
def test_a_bad_value_is_one_line_before_anything_is_written(cli_user, tmp_path, capsys, extra, message):
    if "cuda" in extra[-1] and torch.cuda.is_available():
        pytest.skip("a GPU is visible here: cuda is a valid device")
    cli, base = cli_user
    out = tmp_path / "out"
    assert cli.main(base + extra + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rewindkit: error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_an_empty_layer_is_refused_without_torch_warning_first(cli_user, tmp_path, capsys):
    import warnings
    cli, base = cli_user
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert cli.main(base + ["--set", "model_options={'hidden': 0}", "--out", str(tmp_path / "out")]) == 2
    assert "its prunable tensor '1.weight' has shape (0, 12)" in capsys.readouterr().err
    assert not [w for w in seen if "zero-element" in str(w.message)]


def test_a_name_two_plugin_files_register_is_refused_naming_both(cli_user, tmp_path, capsys):
    cli, base = cli_user
    (tmp_path / "second_plugins.py").write_text(USER_PLUGINS.replace("{NAME!r}", "'user_mlp'"))
    assert cli.main(base + ["--plugin", "second_plugins.py", "--plan"]) == 2
    err = capsys.readouterr().err
    assert ("--plugin second_plugins.py registers network 'user_mlp', which --plugin first_plugins.py registered "
            "already") in err


def test_two_plugin_files_with_their_own_names_both_load(cli_user, tmp_path, capsys):
    cli, base = cli_user
    assert cli.main(base + ["--plugin", "second_plugins.py", "--plan"]) == 0
    assert plugins.get("network", "other_mlp") is not None


def test_the_grid_command_writes_under_rewindkit_out_when_it_is_set(cli_user, tmp_path, monkeypatch, capsys):
    cli, base = cli_user
    monkeypatch.setenv("REWINDKIT_OUT", str(tmp_path / "elsewhere"))
    assert cli.main(base) == 0
    assert (tmp_path / "elsewhere" / "runs" / "smoke" / "results.csv").exists()
    assert not (tmp_path / "runs").exists()


# -- 6. draws in evaluation, from numpy, or only later in a run --------------------------------------

class EvalDropout(nn.Module):
    """Functional dropout with its default training=True: it draws in eval mode too (MC dropout)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(nn.functional.dropout(torch.relu(self.fc1(x.flatten(1))), 0.5))


def test_an_evaluation_that_draws_gives_the_same_score_whatever_the_generator_held():
    from rewindkit.core.metrics import evaluate
    from rewindkit.platform.hardware import Hardware
    ds, model = small_data(), EvalDropout()
    scores = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        scores.append((evaluate(model, ds, "val", Hardware()), evaluate(model, ds, "test", Hardware())))
    assert scores[0] == scores[1] == scores[2]


class NumpyNoise(nn.Module):
    """Noise drawn from numpy's global generator in forward."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 3)

    def forward(self, x):
        import numpy as np
        h = torch.relu(self.fc1(x.flatten(1)))
        if self.training:
            h = h * torch.from_numpy(np.random.rand(*h.shape) > 0.3).to(h.dtype)
        return self.fc2(h)


def test_numpy_draws_in_forward_are_seeded_per_step_too():
    import numpy as np
    ds, initial, stop = dropout_start(NumpyNoise)
    np.random.seed(1)
    a = train_in_segments(NumpyNoise, ds, RECIPE, initial, None, [(0, stop)])
    np.random.seed(2)
    b = train_in_segments(NumpyNoise, ds, RECIPE, initial, None, [(0, 4), (4, stop)])
    assert states_equal(a.model, b.model)


class Recurrent(nn.Module):
    def __init__(self, kind=nn.LSTM, layers=2, bidirectional=True):
        super().__init__()
        self.rnn = kind(2, 8, num_layers=layers, bidirectional=bidirectional, batch_first=True)
        self.head = nn.Linear(8 * (2 if bidirectional else 1), 3)

    def forward(self, x):
        return self.head(self.rnn(x.reshape(x.shape[0], 6, 2))[0][:, -1])


@pytest.mark.parametrize("kind, gates", [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_recurrent_layers_cost_their_matrices_once_per_time_step(kind, gates):
    from rewindkit.core.flops import forward_flops, forward_macs
    net, steps, hidden = Recurrent(kind), 6, 8
    per_step = gates * hidden * (2 + hidden) * 2 + gates * hidden * (2 * hidden + hidden) * 2  # layer 1, layer 2 (×2 directions)
    assert forward_macs(net, (12,)) == steps * per_step + 16 * 3
    biases = steps * 2 * 2 * 2 * gates * hidden  # two biases, two directions, two layers, every step
    assert forward_flops(net, (12,)) == 2 * forward_macs(net, (12,)) + biases + 3
    keep = torch.zeros(gates * hidden, hidden, dtype=torch.bool)
    keep[:, :2] = True
    pruned = forward_macs(net, (12,), Mask({"rnn.weight_hh_l0": keep}))
    assert pruned == forward_macs(net, (12,)) - steps * gates * hidden * (hidden - 2)


def test_a_parametrized_weight_is_pruned_and_counted_by_its_original():
    from torch.nn.utils.parametrizations import weight_norm
    from rewindkit.core.flops import forward_macs
    net = nn.Sequential(nn.Flatten(), weight_norm(nn.Linear(12, 8)), nn.ReLU(), nn.Linear(8, 3))
    names = prunable_weight_names(net)
    assert names == ["1.parametrizations.weight.original1", "3.weight"]
    keep = torch.zeros(8, 12, dtype=torch.bool)
    keep[:, :3] = True
    mask = Mask({names[0]: keep, "3.weight": torch.ones(3, 8, dtype=torch.bool)})
    assert forward_macs(net, (12,), mask) == 8 * 3 + 8 * 3
    ds = small_data()
    train_steps(net, make_optimizer(net, RECIPE), ds, RECIPE.schedule(ds.n_train), 0, 4, seed=3, batch_size=32,
                mask=mask, progress=False, evaluate_every_epoch=False, evaluate_at_end=False)
    weight = net[1].weight.detach()  # computed from the masked direction
    assert bool((weight[~keep] == 0).all()) and bool((weight[keep] != 0).all())


def test_a_parametrization_whose_zeros_do_not_carry_over_is_not_pruned_by_default():
    from torch.nn.utils import parametrize

    class Symmetric(nn.Module):
        def forward(self, x):
            return x.triu() + x.triu(1).t()

    layer = nn.Linear(8, 8)
    parametrize.register_parametrization(layer, "weight", Symmetric())
    net = nn.Sequential(layer, nn.ReLU(), nn.Linear(8, 3))
    assert prunable_weight_names(net) == ["2.weight"]


def test_a_plugin_file_imports_the_modules_beside_it(cli_user, tmp_path, capsys, monkeypatch):
    import sys
    cli, base = cli_user
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "helpers_beside.py").write_text("HIDDEN = 8\n")
    (folder / "beside_plugins.py").write_text("import helpers_beside\n" + USER_PLUGINS.replace("{NAME!r}", "'other_mlp'"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert cli.main(base + ["--plugin", str(folder / "beside_plugins.py"), "--plan"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("rule, message", [
    (lambda m: [m[1].weight], r"prunable must give a list of parameter names \(strings, e.g. 'fc.weight'\); got \[Parameter\]"),
    (lambda m: [], r"its prunable rule gave no parameter names, so there is nothing to prune; its parameters are 1.weight"),
])
def test_a_prunable_rule_giving_no_names_is_named(tied_plugin, tmp_path, rule, message):
    plugins.register_network("misnamed_mlp", lambda data: nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), prunable=rule)
    with pytest.raises(ValueError, match=message):
        experiments.run_grid(tied_plugin(network="misnamed_mlp"), "one_shot", tmp_path, progress=False)
    assert not list(tmp_path.rglob("config.json"))


def test_sparse_kernels_leave_a_transformer_layer_dense():
    from rewindkit.engine.sparse_kernels import _SparseLinear, sparse_kernels
    net = nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), nn.Flatten(), nn.Linear(48, 3)).eval()
    sparse = sparse_kernels(net)
    assert not isinstance(sparse[0].linear1, _SparseLinear) and isinstance(sparse[2], _SparseLinear)
    x = torch.randn(4, 6, 8)
    with torch.no_grad():
        want, got = net(x), sparse(x)
    # the transformer layer is the same dense code on both paths; the last layer sums over 48 features
    assert_close_across_kernels({"out": got}, {"out": want}, kernel_path_tolerance(1, 48), "sparse vs dense")


# -- a third new-user session: identities and data of the user's own ----------------------------------

def test_a_version_joins_the_fingerprint_so_a_code_edit_still_gives_new_run_ids():
    try:
        plugins.register_network("versioned_mlp", lambda data, hidden=8: mlp(data, hidden), version="v1")
        first = plugins.identity("versioned_mlp", "mnist1d", "step")["network:versioned_mlp"]
        plugins.register_network("versioned_mlp", lambda data, hidden=64: mlp(data, hidden), version="v1")
        second = plugins.identity("versioned_mlp", "mnist1d", "step")["network:versioned_mlp"]
        assert first.startswith("v1:") and second.startswith("v1:") and first != second
    finally:
        plugins.unregister("network", "versioned_mlp")


def test_every_metric_of_the_users_joins_the_identity_of_a_users_dataset():
    def load():
        ds = small_data()
        ds.metric = "constant_score"
        return ds
    try:
        plugins.register_dataset("scored_data", load)
        plugins.register_metric("constant_score", lambda model, data, split: 0.25, range=(0, 1))
        first = plugins.identity("mnist1d_resnet", "scored_data", "step")
        plugins.register_metric("constant_score", lambda model, data, split: 0.75, range=(0, 1))
        second = plugins.identity("mnist1d_resnet", "scored_data", "step")
        assert first["dataset:scored_data"] == second["dataset:scored_data"]
        assert first["metric:constant_score"] != second["metric:constant_score"]
        assert "metric:constant_score" not in plugins.identity("mnist1d_resnet", "mnist1d", "step")
    finally:
        plugins.unregister("dataset", "scored_data")
        plugins.unregister("metric", "constant_score")


def test_a_users_loader_that_draws_unseeded_gives_the_same_data_whatever_the_generator_held():
    import random

    import numpy as np

    from rewindkit.engine import runner

    def load():  # research code: draws from the global generators without a seed of its own
        x = torch.randn(64, 1, 12) + float(np.random.rand()) + random.random()
        return data.Dataset("drawn", x, torch.arange(64) % 3, x[:20], torch.arange(20) % 3, x[20:40],
                            torch.arange(20) % 3, num_classes=3)
    try:
        plugins.register_dataset("drawn_data", load)
        setup = {"dataset": "drawn_data", "dataset_options": {}, "n_train": None, "n_eval": None,
                 "plugins": plugins.identity("mnist1d_resnet", "drawn_data", "step")}
        loaded = []
        for seed in (0, 1):
            runner._DATA_CACHE.clear()
            torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)
            before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
            loaded.append(runner.load_dataset(setup, "cpu"))
            assert torch.equal(before[0], torch.get_rng_state()) and (before[1] == np.random.get_state()[1]).all()
            assert before[2] == random.getstate()  # and left as they were
        assert torch.equal(loaded[0].train_x, loaded[1].train_x)
    finally:
        runner._DATA_CACHE.clear()
        plugins.unregister("dataset", "drawn_data")


class _Block(nn.Module):
    def __init__(self, cin, cout, stride, g1=1, g2=1, norm=True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, groups=g1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, groups=cout if g2 == "dw" else g2, bias=False)
        if norm:
            self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride)


class _ResNet(nn.Module):
    """A researcher's 3-stage residual CNN whose block convolutions may be grouped, or lack BatchNorm."""

    def __init__(self, g1=1, g2=1, norm=True, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1)
        self.stages = nn.ModuleList(nn.Sequential(_Block(a, b, s, g1, g2, norm)) for a, b, s in
                                    ((width, width, 1), (width, 2 * width, 2), (2 * width, 4 * width, 2)))


@pytest.mark.parametrize("options, message", [
    ({"g2": "dw"}, "stages.0.0.conv2 has groups=8 (grouped or depthwise)"),
    ({"g2": 2}, "stages.0.0.conv2 has groups=2 (grouped or depthwise)"),
    ({"g1": 2}, "stages.0.0.conv1 has groups=2 (grouped or depthwise)"),
    ({"norm": False}, "block 'stages.0.0' (_Block) has no bn1"),
])
def test_filter_pruning_refuses_blocks_whose_filters_do_not_pair_with_channels(options, message):
    from rewindkit.core import pruning
    model = _ResNet(**options)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pruning.l1_filters(model, "generic_b", 1)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pruning.compact(model, Mask.ones(model))


def test_compaction_on_an_input_the_network_does_not_take_says_to_pass_one():
    pytest.importorskip("torch_pruning")
    from rewindkit.core import pruning

    class Flat(_ResNet):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(32 * 4 * 4, 5)  # 16×16 images only

        def forward(self, x):
            x = self.stem(x)
            for stage in self.stages:
                for b in stage:
                    x = torch.relu(b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x))))) + b.shortcut(x))
            return self.head(x.flatten(1))
    model = Flat().eval()
    mask = pruning.l1_filters(model, "generic_b", 2)
    with pytest.raises(ValueError, match=r"by default of shape \(2, 3, 32, 32\).*example_input="):
        pruning.compact(model, mask)
    small = pruning.compact(model, mask, example_input=torch.zeros(2, 3, 16, 16))
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def _user_data(**change):
    x = torch.randn(96, 1, 12, generator=torch.Generator().manual_seed(0))
    fields = dict(train_x=x, train_y=torch.arange(96) % 3, val_x=x[:30], val_y=torch.arange(30) % 3,
                  test_x=x[30:60], test_y=torch.arange(30) % 3)
    fields.update(change)
    return data.Dataset("users_data", num_classes=3, **fields)


class _AuxHead(nn.Module):
    """Inception-style: a second (auxiliary) output in training mode only."""

    def __init__(self):
        super().__init__()
        self.main, self.aux = nn.Linear(12, 3), nn.Linear(12, 3)

    def forward(self, x):
        x = x.flatten(1)
        return (self.main(x), self.aux(x)) if self.training else self.main(x)


@pytest.mark.parametrize("change, model, message", [
    ({"train_y": (torch.arange(96) % 3).int()}, None, r"dtype int64 \(or uint8\); the first batch's are \(32,\) int32"),
    ({"val_y": (torch.arange(30) % 3).view(-1, 1)}, None, r"val labels have shape \(30, 1\) where the training labels"),
    ({"train_y": torch.where(torch.arange(96) == 80, 3, torch.arange(96) % 3)}, None,
     r"training labels \(batch 2 of epoch 0\) must lie in 0 … 2 \(num_classes = 3\); found 0 … 3"),
    ({"test_x": torch.zeros(0, 1, 12), "test_y": torch.zeros(0, dtype=torch.long)}, None,
     "its test split holds no examples"),
    ({}, _AuxHead(), r"gives \(\(32, 3\) float32, \(32, 3\) float32\) in training mode"),
])
def test_the_users_data_are_checked_in_full_before_a_run_trains(change, model, message):
    from rewindkit.core.batches import DataProtocolError, check_training_data
    model = model or nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(DataProtocolError, match=message):
        check_training_data(_user_data(**change), 32, "users_data", model, "users_net")
    check_training_data(_user_data(), 32, "users_data", nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), "users_net")


def test_a_users_data_without_a_validation_split_is_named():
    from rewindkit.core.batches import DataProtocolError, check_training_data

    class TrainTest(data.Dataset):
        def eval_batches(self, split, batch_size):
            return super().eval_batches({"test": "test"}[split], batch_size)
    with pytest.raises(DataProtocolError, match=r"dataset 'users_data' has no val split .*KeyError: 'val'"):
        check_training_data(TrainTest(**vars(_user_data())), 32, "users_data")


@pytest.mark.parametrize("build, message", [
    (lambda data: (nn.Linear(12, 3), None), "network 'odd_net' must build a torch.nn.Module; its builder returned tuple"),
    (lambda data: nn.Sequential(nn.Flatten(), nn.LazyLinear(3)), "network 'odd_net': its parameter '1.weight' is not made"),
])
def test_a_builder_that_gives_no_usable_network_is_a_value_error_naming_it(build, message):
    from rewindkit.engine import runner
    from rewindkit.platform.hardware import Hardware
    try:
        plugins.register_network("odd_net", build)
        setup = {"network": "odd_net", "model_options": {}, "dataset": "users_data"}
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            runner.check_run_setup(setup, _user_data(), runner.model_builder(setup, _user_data()), Hardware(device="cpu"))
    finally:
        plugins.unregister("network", "odd_net")


def test_a_dataset_lacking_a_member_of_the_protocol_is_named():
    from rewindkit.core.batches import DataProtocolError
    from rewindkit.engine import runner

    class NoSubset:
        def __init__(self):
            self._d = _user_data()

        def __getattr__(self, name):
            if name == "subset":
                raise AttributeError(name)
            return getattr(self._d, name)
    try:
        plugins.register_dataset("no_subset", NoSubset)
        setup = {"dataset": "no_subset", "dataset_options": {}, "n_train": 50, "n_eval": None,
                 "plugins": plugins.identity("mnist1d_resnet", "no_subset", "step")}
        with pytest.raises(DataProtocolError, match="loaded a NoSubset, which lacks subset of the training-data"):
            runner.load_dataset(setup, "cpu")
    finally:
        runner._DATA_CACHE.clear()
        plugins.unregister("dataset", "no_subset")


def test_an_interrupted_command_says_in_one_line_that_it_resumes(monkeypatch, capsys):
    from rewindkit import cli

    def interrupted(args):
        raise KeyboardInterrupt
    import argparse

    class Parser:
        def parse_args(self, argv=None):
            return argparse.Namespace(func=interrupted)
    monkeypatch.setattr(cli, "build_parser", Parser)
    assert cli.main(["grid", "smoke"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the same command resumes" in err


def test_a_refused_notebook_parameter_creates_no_executed_folder(tmp_path):
    from pathlib import Path

    from rewindkit.notebook.workspace import run_notebooks
    notebook = next(Path(__file__).resolve().parent.parent.joinpath("notebooks").glob("03_*.ipynb"))
    with pytest.raises(ValueError, match="has no parameter 'network'"):
        run_notebooks([notebook], {"network": "mine"}, executed_dir=tmp_path / "executed")
    assert not (tmp_path / "executed").exists()


# -- a filter configuration of the user's for the structured grid (fourth session's #21) -------------

@pytest.fixture
def half_config():
    from rewindkit.core import pruning
    yield plugins.register_filter_config("half", fractions=(0.5, 0.5, 0.5))
    pruning.unregister_filter_config("half")


def test_a_registered_filter_configuration_prunes_in_the_structured_grid_with_its_values_in_the_run_ids(half_config):
    from rewindkit.core import pruning
    from rewindkit.engine.grids import grid_specs
    from rewindkit.engine.runs import uses_plugins
    before = {s.id for s in grid_specs(get_profile("smoke", structured_configs=("generic_a",)), "structured")}
    P = get_profile("smoke", structured_configs=("half", "generic_a"))
    specs = grid_specs(P, "structured")
    mine = [s for s in specs if s.pruning is not None and s.pruning.config == "half"]
    assert mine and {s.pruning.label for s in mine} == {"structured_half"}
    assert not any(uses_plugins(s) for s in specs)  # worker processes need no registration: the values travel
    import pickle
    travelled = pickle.loads(pickle.dumps(mine[0]))
    pruning.unregister_filter_config("half")
    assert travelled.id == mine[0].id and travelled.pruning.resolved.fractions == (0.5, 0.5, 0.5)
    plugins.register_filter_config("half", fractions=(0.5, 0.5, 0.5))
    assert before <= {s.id for s in specs}  # the kit's configurations keep their ids
    # level L removes 1 - 0.5^L of each block's first-conv filters, rounded to nearest
    from rewindkit import models
    model = models.vision_network("mnist1d_resnet", **P.model_options)
    for level in (1, 2):
        mask = pruning.l1_filters(model, "half", level)
        for _, block in pruning.residual_blocks(model):
            name = next(n for n, m in model.named_modules() if m is block.conv1)
            kept = int(mask[f"{name}.weight"].flatten(1).any(1).sum())
            n = block.conv1.out_channels
            assert kept == n - min(int(n * (1 - 0.5**level) + 0.5), n - 1)
    # other fractions under the same name are other runs
    plugins.register_filter_config("half", fractions=(0.5, 0.5, 0.25))
    changed = {s.id for s in grid_specs(P, "structured") if s.pruning is not None and s.pruning.config == "half"}
    assert changed.isdisjoint({s.id for s in mine})


@pytest.mark.parametrize("call, message", [
    (lambda: plugins.register_filter_config("generic_a", fractions=(0.1,) * 3), "'generic_a' is one of the kit's own"),
    (lambda: plugins.register_filter_config("mine", fractions=()), "fractions must give one fraction 0 ≤ p < 1"),
    (lambda: plugins.register_filter_config("mine", fractions=(0.5, 1.0)), "got (0.5, 1.0)"),
    (lambda: plugins.register_filter_config("mine", fractions="0.5"), "fractions must give one fraction"),
    (lambda: plugins.register_filter_config("mine", fractions=(0.5,), skip=(3,)), "(block j's first conv is conv_2j"),
    (lambda: plugins.register_filter_config("mine", fractions=(0.5,), rounding="up"),
     "unknown rounding 'up'; valid: nearest, stochastic"),
    (lambda: plugins.register_filter_config("my config", fractions=(0.5,)), "a Python identifier; got 'my config'"),
    (lambda: plugins.register_filter_config("b", fractions=(0.5,) * 3),
     "filter configuration 'b' would label its rows structured_b, as the paper's configuration B; names a, b are taken"),
])
def test_a_bad_filter_configuration_is_refused_naming_the_value(call, message):
    from rewindkit.core import pruning
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
    assert "mine" not in pruning.filter_config_names()


def test_a_filter_configuration_with_the_wrong_stage_count_says_how_to_register_one():
    from rewindkit import models
    from rewindkit.core import pruning
    model = models.vision_network("mnist1d_resnet", depth=8, width=8)
    with pytest.raises(ValueError, match=r"plugins.register_filter_config\('mine', fractions=\(p,\) \* 3\)"):
        pruning.l1_filters(model, pruning.FilterConfig("two", fractions=(0.5, 0.5)), 1)
    with pytest.raises(ValueError, match="unknown filter-pruning config 'nope'; valid configs: resnet56_a"):
        get_profile("smoke", structured_configs=("nope",))


def test_the_command_line_takes_a_filter_configuration_from_a_plugin_file(tmp_path, monkeypatch, capsys):
    from rewindkit import cli
    from rewindkit.core import pruning
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs.py").write_text("from rewindkit import plugins\n"
                                         "plugins.register_filter_config('thirds', fractions=(1/3, 1/3, 1/3))\n")
    try:
        assert cli.main(["grid", "smoke", "--kind", "structured", "--plugin", "configs.py",
                         "--set", "structured_configs=('thirds',)", "--plan"]) == 0
        out = capsys.readouterr().out
        assert "runs: 19 = 1 dense + 4 fine_tuning" in out  # one configuration, not smoke's two
        assert "worker processes" in out and "threads in this process" not in out  # its values travel with the runs
    finally:
        pruning.unregister_filter_config("thirds")
        import sys
        sys.modules.pop("configs", None)


def test_a_stored_run_of_a_users_filter_configuration_reads_back_without_registering_it(half_config):
    from rewindkit.core import pruning
    from rewindkit.engine.grids import grid_specs
    from rewindkit.engine.runs import RunSpec
    spec = next(s for s in grid_specs(get_profile("smoke", structured_configs=("half",)), "structured")
                if s.pruning is not None)
    pruning.unregister_filter_config("half")
    back = RunSpec.from_config(spec.config())
    assert back.id == spec.id and back.pruning.resolved == spec.pruning.resolved
    assert back.pruning.label == "structured_half"


def test_a_users_filter_configuration_trains_and_reports_the_density_it_pruned_to(half_config, tmp_path):
    from rewindkit import models
    from rewindkit.core import pruning
    P = get_profile("smoke", structured_configs=("half",), structured_levels=(2,),
                    structured_techniques=("fine_tuning",), structured_retrain_times=(1,))
    table = experiments.run_grid(P, "structured", out=tmp_path).results
    row = table[table.technique == "fine_tuning"].iloc[0]
    expected = pruning.l1_filters(models.vision_network("mnist1d_resnet", **P.model_options), "half", 2).density()
    assert row.pruning == "structured_half" and row.density == pytest.approx(expected, abs=5e-7)


def test_the_structured_figure_draws_a_users_configuration_beside_the_papers():
    import matplotlib.pyplot as plt
    import pandas as pd
    from rewindkit import plots
    rows = [{"network": "mnist1d_resnet", "pruning": p, "schedule": "one_shot", "technique": "fine_tuning",
             "density": d, "retrain_time": 2.0, "val_median": 0.9, "delta_median": -1.0, "delta_min": -1.5,
             "delta_max": -0.5, "compression": 1 / d} for p in ("structured_a", "structured_half") for d in (0.9, 0.7)]
    fig, data = plots.structured(pd.DataFrame(rows), network="mnist1d_resnet", techniques=("fine_tuning",))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 2 and titles[0].endswith("config A") and titles[1].endswith("config half")
    assert set(data["pruning"]) == {"structured_a", "structured_half"}
    plt.close(fig)


# -- a fourth new user's session: names, counts and values checked before anything trains -------------

@pytest.fixture
def user_net():
    """A one-layer network of 36 prunable weights on the small data, and a profile factory for it."""
    plugins.register_dataset("small_data", small_data)
    plugins.register_network("lin36", lambda data: nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))
    yield lambda **kw: get_profile("smoke", **{"dataset": "small_data", "network": "lin36", "recipe": RECIPE,
                                               "densities": (0.25,), "retrain_times": (1,),
                                               "techniques": ("lr_rewinding",), **kw})
    for kind, name in (("network", "lin36"), ("dataset", "small_data"), ("metric", "bad_on_test"),
                       ("network", "ruled")):
        plugins.unregister(kind, name)


@pytest.mark.parametrize("name", ["gnmt", "vgg16_nofc"])
def test_the_papers_own_network_names_cannot_be_taken(name):
    with pytest.raises(ValueError, match=f"'{name}' names one of the paper's networks in the authors' released results"):
        plugins.register_network(name, lambda data: nn.Linear(2, 2))
    assert plugins.get("network", name) is None


def test_a_network_the_paper_did_not_train_needs_its_T_for_the_safe_zone_and_the_budgets():
    import pandas as pd
    from rewindkit import plots
    from rewindkit.paper import reference
    agg = pd.DataFrame({"network": ["mine"] * 2, "pruning": "unstructured", "schedule": "iterative",
                        "technique": "lr_rewinding", "density": [0.8, 0.64], "retrain_time": [1.0, 1.0],
                        "delta_median": [0.0, 0.0], "delta_min": [0.0, 0.0], "delta_max": [0.0, 0.0]})
    with pytest.raises(ValueError, match=r"network 'mine' is not one of the paper's .*: pass T="):
        reference.fixed_budget_curves(agg)
    with pytest.raises(ValueError, match=r"pass T="):
        plots.accuracy_vs_time(agg.assign(schedule="one_shot"), network="mine")
    assert reference.training_epochs("mine", 2) == 2 and reference.training_epochs("resnet56") == 182
    assert len(reference.fixed_budget_curves(agg, T=1)) == 2  # LRR's budget at T = 1 is t = 1


def test_a_retraining_time_written_as_a_float_is_the_same_run(user_net):
    from rewindkit.engine.grids import grid_specs
    as_int, as_float = (grid_specs(user_net(retrain_times=t), "one_shot") for t in ((1,), (1.0,)))
    assert [s.id for s in as_int] == [s.id for s in as_float]
    assert user_net(retrain_times=(1, 1.0)).retrain_times == (1,)
    assert len(grid_specs(user_net(retrain_times=(1, 1.0)), "one_shot")) == 2  # the dense run and one retraining run


@pytest.mark.parametrize("kind, options, message", [
    ("iterative", {"iterative_levels": 13}, "iterative level 12 and iterative level 13 (density 0.0549756) both keep "
                                             "2 of the 36 prunable weights of network 'lin36': one pruning twice, which the tables would "
                                             "count as two trials; this network has room for iterative_levels=12"),
    ("one_shot", {"densities": (0.1, 0.11)}, "density 0.11 and density 0.1 both keep 4 of the 36 prunable weights of network 'lin36'"),
    ("one_shot", {"densities": (1e-6,)}, "density 1e-06 keeps none of the 36 prunable weights of network 'lin36'; "
                                         "the smallest density that keeps one is 0.5/36 = 0.0139 (one weight: 0.0278)"),
])
def test_densities_that_keep_the_same_count_or_none_are_refused_before_anything_is_written(user_net, tmp_path, kind,
                                                                                          options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        experiments.run_grid(user_net(**options), kind, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    from rewindkit.engine.grids import grid_specs
    from rewindkit.engine.runner import check_kept_counts
    check_kept_counts(grid_specs(user_net(iterative_levels=11), "iterative"))  # 11 levels keep 29, 23, …, 3: all apart


@pytest.mark.parametrize("options, message", [
    ({"momentum": 0.0, "nesterov": True}, "nesterov=True is SGD's Nesterov momentum: it needs optimizer='sgd' and momentum > 0"),
    ({"optimizer": "adam", "nesterov": True}, "got optimizer='adam', momentum=0.9"),
    ({"nesterov": 1}, "nesterov must be True or False; got 1"),
])
def test_nesterov_without_sgd_momentum_is_refused_by_the_recipe(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Recipe(**options)


@pytest.mark.parametrize("levels", [0, -2, 1.5, True])
def test_iterative_levels_must_be_a_whole_number_of_rounds(levels):
    with pytest.raises(ValueError, match=f"iterative_levels must be a whole number ≥ 1 .*; got {levels!r}"):
        get_profile("smoke", iterative_levels=levels)


def test_a_metric_bad_only_on_the_test_split_is_refused_before_the_dense_run_trains(user_net, tmp_path):
    plugins.register_metric("bad_on_test", lambda model, data, split: 0.5 if split == "val" else 1.5, range=(0, 1))
    plugins.register_network("lin36", lambda data: nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), metric="bad_on_test")
    with pytest.raises(ValueError, match="bad_on_test"):
        experiments.run_grid(user_net(), "one_shot", tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").rglob("config.json"))


@pytest.mark.parametrize("rule, message", [
    (["1.weight"], "prunable must be a function model -> [parameter names]; got ['1.weight'] (wrap a fixed list"),
    (lambda model: None, "its prunable rule must give a list of parameter names, e.g. ['fc.weight']; it gave None"),
    (lambda model: "1.weight", "its prunable rule must give a list of parameter names, e.g. ['fc.weight']; it gave '1.weight'"),
    (lambda model: model.nothing, "its prunable rule raised AttributeError: "),
])
def test_a_bad_prunable_rule_is_named_with_its_network(user_net, tmp_path, rule, message):
    def register():
        plugins.register_network("ruled", lambda data: nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), prunable=rule)
    if not callable(rule):
        with pytest.raises(ValueError, match=f"network 'ruled': {message}".replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[").replace("]", r"\]")):
            register()
        return
    register()
    with pytest.raises(ValueError, match=f"network 'ruled': {message}".replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        experiments.run_grid(user_net(network="ruled"), "one_shot", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_magnitude_pruning_of_a_network_with_nothing_to_prune_says_so():
    from rewindkit.core import pruning
    with pytest.raises(ValueError, match="Bilinear has nothing to prune: .* Conv1d/2d/3d and Linear layers"):
        pruning.global_magnitude(nn.Bilinear(3, 3, 2), 0.5)
    named_nothing = nn.Linear(3, 2)
    named_nothing.prunable = ()
    with pytest.raises(ValueError, match=r"Linear has nothing to prune: its prunable names \(model.prunable\) are empty"):
        pruning.global_magnitude(named_nothing, 0.5)


def test_the_generic_registration_cannot_take_a_papers_network_name_either():
    with pytest.raises(ValueError, match="'gnmt' names one of the paper's networks"):
        plugins.register("network", "gnmt", lambda data: nn.Linear(2, 2), None, prunable=None, metric=None)


def test_a_schedule_that_is_zero_at_every_step_is_refused():
    from rewindkit.core.schedules import FunctionSchedule, ScheduleValueError
    with pytest.raises(ScheduleValueError, match="gave the learning rate 0 at every one of its 6 steps"):
        FunctionSchedule(lambda step, total: 0.0, 3, 2, name="frozen")
    assert FunctionSchedule(lambda step, total: 0.0 if step else 0.1, 3, 2).values[0] == 0.1


def test_weight_norms_scale_is_not_named_as_a_left_out_matrix_and_its_direction_is_suggested():
    from torch.nn.utils.parametrizations import weight_norm
    from rewindkit.core.masks import PrunableNameError, unpruned_matrices
    model = nn.Sequential(nn.Flatten(), weight_norm(nn.Linear(12, 16)), nn.ReLU(), nn.Linear(16, 3))
    assert unpruned_matrices(model) == []  # g is (16, 1): a vector, not a matrix left unpruned
    model.prunable = ("1.weight",)
    with pytest.raises(PrunableNameError, match=r"did you mean '1.parametrizations.weight.original1'\?"):
        prunable_weight_names(model)
