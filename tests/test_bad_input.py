"""Bad input a probe found in issue 24's round, each refused where it enters with the bad value named
(before this round each trained, crashed later with a raw error, or gave a table that mixed
experiments)."""
import re

import pandas as pd
import pytest

from rewindkit import experiments as E
from rewindkit import models, pruning
from rewindkit.core.masks import Mask
from rewindkit.engine.profiles import get_profile
from rewindkit.notebook import workspace
from rewindkit.recipe import Recipe


@pytest.mark.parametrize("field,value,message", [
    ("gamma", -1, r"gamma, the factor of each LR drop, must be a number in \(0, 1\].*got -1"),
    ("gamma", 2.0, r"gamma.*\(0, 1\].*got 2.0"),
    ("gamma", float("inf"), r"gamma.*got inf"),
    ("milestones", (2, 2), r"milestones must be increasing numbers of epochs inside \(0, 4\); got \(2, 2\)"),
    ("milestones", (2, "x"), r"milestones must be increasing.*got \(2, 'x'\)"),
    ("milestones", (3, 2), r"milestones must be increasing"),
    ("warmup_epochs", -1, r"warmup_epochs must be a number in \[0, 4\); got -1"),
    ("fine_tune_lr", -1, r"fine_tune_lr must be a positive number, or None"),
    ("fine_tune_lr", 0, r"fine_tune_lr must be a positive number"),
    ("weight_decay", -1e-4, r"weight_decay must be a number in \[0, inf\)"),
    ("momentum", 1.0, r"momentum must be a number in \[0, 1\)"),
])
def test_a_recipe_that_would_train_backwards_or_never_decay_is_refused_when_made(field, value, message):
    base = dict(epochs=4, milestones=(2, 3))
    with pytest.raises(ValueError, match=message):
        Recipe(**{**base, field: value})
    for schedule in ("cosine", "one_cycle"):  # the annealing schedules end where step decay ends
        if field in ("gamma", "milestones", "warmup_epochs"):
            with pytest.raises(ValueError, match=message):
                Recipe(**{**base, field: value, "lr_schedule": schedule})
    Recipe(**base)  # the same recipe with good values is made


def test_gnmt_recipes_keep_ignoring_the_step_milestones_and_fractional_epochs_stay_valid():
    assert Recipe(epochs=4, lr_schedule="gnmt", optimizer="adam").milestones == (91, 136)  # unused by gnmt
    recipe = get_profile("smoke", **{"recipe.warmup_epochs": 0.5, "recipe.milestones": (2.5, 3)}).recipe
    schedule = recipe.schedule(256)  # 4 iterations per epoch: half epochs are whole iterations
    assert (schedule.warmup_steps, schedule.milestone_steps) == (2, (10, 12))


def test_a_structured_grid_of_a_network_without_blocks_is_refused_before_training_the_kits_too(tmp_path):
    from rewindkit.engine.costs import plan_report
    vgg = get_profile("smoke", network="vgg16", model_options={})
    with pytest.raises(ValueError, match=r"cannot prune network 'vgg16' at generic_a L1: L1 filter pruning \(§3.2\) "
                                         r"needs a residual network.*VGG has no such blocks"):
        plan_report(vgg, "structured", tmp_path)
    with pytest.raises(ValueError, match=r"cannot prune network 'vgg16'"):
        E.run_grid(vgg, "structured", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_t_grid_is_fine_with_explicit_chain_budgets_but_not_for_a_one_shot_grid():
    chains = get_profile("smoke", retrain_times=(), iterative_retrain_times={"lr_rewinding": 4})
    assert E.grid_specs(chains, "iterative")
    with pytest.raises(ValueError, match=r"the one-shot grid needs at least one of retrain_times"):
        E.grid_specs(chains, "one_shot")
    with pytest.raises(ValueError, match=r"the structured grid needs at least one retraining time"):
        E.grid_specs(chains, "structured")


@pytest.mark.parametrize("override,message", [
    ({"retrain_times": ()}, r"retrain_times must hold at least one retraining time"),
    ({"seeds": ("a",)}, r"seeds must be whole numbers ≥ 0.*got 'a'"),
    ({"seeds": (1.5,)}, r"seeds must be whole numbers ≥ 0.*got 1.5"),
    ({"seeds": (-1,)}, r"seeds must be whole numbers ≥ 0.*got -1"),
    ({"workers": 3_000_000_000}, r"workers must be a whole number from 1 to 1024 or 'auto'.*got 3000000000"),
    ({"recipe.milestones": (2, 9)}, r"milestones must be increasing numbers of epochs inside \(0, 4\)"),
])
def test_profiles_refuse_bad_grids_when_made(override, message):
    with pytest.raises(ValueError, match=message):
        get_profile("smoke", **override)


def test_grids_refuse_what_they_would_silently_drop():
    with pytest.raises(ValueError, match=r"the one-shot grid needs at least one of densities; got densities=\(\)"):
        E.grid_specs(get_profile("smoke", densities=()), "one_shot")
    with pytest.raises(ValueError, match=r"at least one of techniques"):
        E.grid_specs(get_profile("smoke", techniques=()), "one_shot")
    with pytest.raises(ValueError, match=r"pruning='random_uniform'.*structured grid prunes filters"):
        E.grid_specs(get_profile("smoke", pruning="random_uniform"), "structured")
    assert E.grid_specs(get_profile("smoke", pruning="random_uniform"), "one_shot")  # where it applies


def test_one_folder_two_experiments_the_folder_tables_tell_them_apart(tmp_path):
    small = dict(densities=(0.5,), retrain_times=(2,), techniques=("lr_rewinding",), workers=1)
    a = E.run_grid(get_profile("smoke", **small), "one_shot", tmp_path, progress=False)
    b = E.run_grid(get_profile("smoke", **small, **{"recipe.lr": 0.05}), "one_shot", tmp_path, progress=False)
    folder, base = pd.read_csv(tmp_path / "results.csv"), pd.read_csv(tmp_path / "base_results.csv")
    assert len(folder) == 2 and folder["experiment"].nunique() == 2 and base["experiment"].nunique() == 2
    for grid in (a, b):  # each grid's own table: its runs only, in the authors' columns
        assert len(grid.results) == 1 and "experiment" not in grid.results
        mine = folder[folder.run_id == grid.results.run_id[0]]
        assert (folder.experiment == mine.experiment.iloc[0]).sum() == 1
    assert folder["signs"].isna().all()
    signed = E.run_grid(get_profile("smoke", **small, signs="dense"), "one_shot", tmp_path, progress=False)
    folder = pd.read_csv(tmp_path / "results.csv")
    assert folder.set_index("run_id").loc[signed.results.run_id[0], "signs"] == "dense"


def test_compact_names_what_it_needs():
    model = models.vision_network("mnist1d_resnet", depth=8, width=4)
    mask = pruning.l1_filters(model, "generic_a", 1)
    with pytest.raises(ValueError, match=r"compact\(\) needs a Mask of this network.*got NoneType"):
        pruning.compact(model, None)
    with pytest.raises(ValueError, match=r"compact\(\) needs a Mask.*got OrderedDict"):
        pruning.compact(model, model.state_dict())
    with pytest.raises(ValueError, match=r"compact\(\) needs the network.*got NoneType"):
        pruning.compact(None, mask)
    deeper = models.vision_network("mnist1d_resnet", depth=14, width=4)
    ones = Mask.ones(deeper)
    shallow = Mask({name: ones[name] for name in ones if name in mask.weight_names})  # the shallower net's entries
    with pytest.raises(ValueError, match=r"the mask has no entry for 'stages.0.1.conv1.weight'.*another network"):
        pruning.compact(deeper, shallow)


@pytest.mark.parametrize("at_once", [0, -1, 1.5, True, "two"])
def test_run_notebooks_checks_at_once_as_the_command_line_does(at_once, tmp_path):
    with pytest.raises(ValueError, match=r"notebooks at once must be a whole number ≥ 1 or 'auto'"):
        workspace.run_notebooks([], executed_dir=tmp_path, at_once=at_once)


def test_run_notebooks_takes_auto_and_refuses_a_timeout_below_a_second(tmp_path):
    assert workspace.run_notebooks([], executed_dir=tmp_path, at_once="auto") == []
    for timeout in (0, -5, 1.5):
        with pytest.raises(ValueError, match=r"timeout must be a whole number of seconds ≥ 1"):
            workspace.run_notebooks([], executed_dir=tmp_path, timeout=timeout)


def test_a_run_folder_missing_a_file_is_named_with_the_remedy(tmp_path):
    from rewindkit.platform.storage import load_json, load_tensor_dict
    run = tmp_path / "runs" / "abc123"
    run.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"run config not found: .*config.json; the run's folder is incomplete"
                                                r" .*delete .*abc123 and rerun"):
        load_json(run / "config.json", what="run config")
    with pytest.raises(FileNotFoundError, match=r"final weights not found: .*final.pt; the run's folder is incomplete"):
        load_tensor_dict(run / "final.pt", what="final weights")
    with pytest.raises(FileNotFoundError) as elsewhere:  # not a run's file: the plain error
        load_json(tmp_path / "other.json")
    assert "incomplete" not in str(elsewhere.value)


@pytest.mark.parametrize("field, values, shown", [("seeds", (1, 2, 1), "1"), ("densities", (0.5, 0.2, 0.5), "0.5"),
                                                  ("techniques", ("lr_rewinding", "lr_rewinding"), "'lr_rewinding'")])
def test_a_value_listed_twice_in_a_grid_axis_is_refused(field, values, shown):
    """A repeated seed, density or technique names the same runs: the grid would silently have fewer
    trials or cells than written, so it is refused, naming the value. (A t written twice, as 4 and
    4.0, is one t: tests/test_plugin_networks.py.)"""
    from rewindkit.engine.profiles import get_profile
    with pytest.raises(ValueError, match=rf"{field} lists {re.escape(shown)} more than once"):
        get_profile("smoke", **{field: values})
