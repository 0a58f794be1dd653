"""Every notebook through papermill in the smoke profile, checking the tables it writes."""
import json

import pandas as pd
import pytest

from rewindkit import cli
from rewindkit.notebook import workspace as nb
from rewindkit.experiments import RESULT_COLUMNS

NOTEBOOKS = [p.stem for p in nb.list_notebooks()]
GRID_NOTEBOOKS = {"01_quickstart": "one_shot", "03_accuracy_vs_retraining_time": "one_shot",
                  "04_accuracy_vs_compression": "one_shot", "05_structured_pruning": "structured",
                  "06_pruning_algorithm": "iterative", "07_ablations": "one_shot", "08_flops": "iterative"}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("nbout")


def test_notebook_conventions():
    assert len(NOTEBOOKS) == 12
    for path in nb.list_notebooks():
        book = json.loads(path.read_text())
        assert book["metadata"]["kernelspec"]["name"] == "python3"
        cells = book["cells"]
        tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
        assert len(tagged) == 1, path.name
        assert "profile" in nb.notebook_parameters(path)
        assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{path.name} has outputs"
        widgets = [c for c in cells if "ipywidgets" in "".join(c["source"])]
        assert widgets, f"{path.name} has no interactive explorer"
        for c in widgets:
            assert {"skip-execution", "nbval-skip"} <= set(c["metadata"].get("tags", [])), path.name


def unused_imports(code: str) -> list[str]:
    """Names a notebook's code imports and never reads (``%`` magics left out)."""
    import ast
    code = "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
                     for line in code.split("\n"))
    tree = ast.parse(code)
    imported = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names}
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return sorted(imported - read)


def test_notebooks_import_only_what_they_use():
    assert unused_imports("import pandas as pd\nfrom x import a, b\nprint(a)\n") == ["b", "pd"]  # the check works
    for path in nb.list_notebooks():
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert not unused_imports(code), f"{path.name} imports but never uses {unused_imports(code)}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_profile(name, out, monkeypatch):
    monkeypatch.setenv("REWINDKIT_OUT", str(out))
    monkeypatch.delenv("REWINDKIT_PROFILE", raising=False)  # the parameter itself must select smoke
    profile = "paper" if name == "09_paper_figures" else "smoke"
    executed = nb.run_notebooks(nb.resolve([name]), {"profile": profile}, executed_dir=out / "executed",
                          timeout=600, log=lambda *_: None)
    assert executed[0].exists()
    figures = out / "figures" / profile
    if name in GRID_NOTEBOOKS:
        table = pd.read_csv(figures / f"{name[:2]}_results.csv")
        assert list(table.columns[:10]) == RESULT_COLUMNS
        assert table.network.eq("mnist1d_resnet").all() and table.test_acc.between(0, 1).all()
        expected = {"one_shot": {"unstructured"}, "iterative": {"unstructured"},
                    "structured": {"structured_a", "structured_b"}}[GRID_NOTEBOOKS[name]]
        assert set(table.pruning) == expected
        pngs = list(figures.glob(f"{name[:2]}_*.png"))
        assert pngs and all((p.with_suffix(".csv")).exists() for p in pngs)
        if name == "01_quickstart":  # the bars are the library's per-run Δ table, one run per technique
            bars = pd.read_csv(figures / "01_quickstart.csv")
            assert bars.technique.tolist() == ["fine_tuning", "weight_rewinding", "lr_rewinding"] and "delta" in bars
        if name == "08_flops":  # the second half: the shipped speed-up table drawn, and a live measurement
            drawn = pd.read_csv(figures / "08_measured_speedup.csv")
            assert {"ResNet-56", "laptop 1-D ResNet"} <= set(drawn.network)
            assert {"compacted", "masked", "sparse kernels"} == set(drawn.variant)
            assert "Here, now: the compacted laptop 1-D ResNet at level 5" in executed[0].read_text()
    elif name == "02_three_techniques":
        table = pd.read_csv(figures / "02_results.csv")
        assert set(table.columns) == {"layer", "density", "mask"} and table.density.between(0, 1).all()
        lr = pd.read_csv(figures / "02_lr_schedules.csv")
        assert set(lr.technique) == {"fine_tuning", "weight_rewinding", "lr_rewinding", "low_lr_weight_rewinding"}
        assert list(pd.read_csv(figures / "02_mask_heatmap.csv").columns) == ["filter", "kept"]
    elif name == "11_beyond_vision":  # the smoke profile maps to translation_smoke
        figures = out / "figures" / "translation_smoke"
        table = pd.read_csv(figures / "11_results.csv")
        assert list(table.columns[:10]) == RESULT_COLUMNS and table.network.eq("gnmt_small").all()
        assert table.test_acc.between(0, 100).all() and set(table.pruning) == {"unstructured"}  # BLEU
        assert set(table.technique) == {"fine_tuning", "weight_rewinding", "lr_rewinding"}
        pngs = list(figures.glob("11_*.png"))
        assert len(pngs) == 3 and all((p.with_suffix(".csv")).exists() for p in pngs)
        import re
        text = executed[0].read_text()
        assert re.search(r"dense test BLEU \d+\.\d", text)  # printed by the grid cell: the metric is BLEU
    elif name == "12_after_the_paper":  # the closing note's three tables and four figures, each with its CSV
        wins = pd.read_csv(figures / "12_win_rates.csv")
        assert wins.schedule.tolist() == ["step", "cosine", "linear", "one_cycle"]
        assert wins[["LRR ≥ FT", "WR ≥ FT", "LRR ≥ WR"]].stack().between(0, 1).all()
        masks = pd.read_csv(figures / "12_random_masks.csv")
        assert {"global_magnitude", "random_magnitude", "random_uniform"} <= set(masks.columns)
        assert set(masks.technique) == {"fine_tuning", "weight_rewinding", "lr_rewinding"}
        signs = pd.read_csv(figures / "12_sign_flips.csv")
        assert set(zip(signs.technique, signs.signs)) == {("fine_tuning", "own"), ("weight_rewinding", "own"),
                                                          ("lr_rewinding", "own"), ("weight_rewinding", "dense")}
        assert signs.final_differs.between(0, 100).all()
        pngs = list(figures.glob("12_*.png"))
        assert len(pngs) == 4 and all((p.with_suffix(".csv")).exists() for p in pngs)
    elif name == "10_imagenet":  # no ImageNet folder or GPU here: it must say so and still draw the paper's part
        text = executed[0].read_text()
        assert "The ImageNet grid is not run here:" in text and "ImageNet not found" in text
        assert text.count("<Figure size") >= 4  # the four reference figures were drawn
    else:
        assert len(list(figures.glob("*.png"))) >= 30
        wins = pd.read_csv(figures / "win_rates.csv")
        row = wins[(wins.network == "resnet56") & (wins.schedule == "one_shot") & (wins.pruning == "unstructured")]
        assert round(float(row["LRR ≥ FT"].iloc[0]), 2) == 0.86


def test_unknown_notebook_and_parameter_are_rejected(capsys):
    with pytest.raises(ValueError, match="unknown notebook 'nope'; valid notebooks: 01_quickstart"):
        nb.resolve(["nope"])
    with pytest.raises(ValueError, match="has no parameter 'densty'; its parameters: profile, density, seed"):
        nb.check_parameters(nb.resolve(["01"])[0], {"densty": "0.1"})
    assert nb.check_parameters(nb.resolve(["01"])[0], {"density": "0.1", "seed": "2"}) == {"density": 0.1, "seed": 2}
    assert cli.main(["notebooks", "01", "--profile", "huge"]) == 2
    assert "unknown profile 'huge'" in capsys.readouterr().err


@pytest.mark.parametrize("name, value, message", [
    ("t_fraction", "abc", "notebook 02_three_techniques's parameter 't_fraction' is a float (default 0.5); got 'abc'"),
    ("seed", "2.5", "parameter 'seed' is an int (default 1); got 2.5"),
    ("seed", "True", "parameter 'seed' is an int (default 1); got True"),
])
def test_a_parameter_of_the_wrong_type_is_refused_naming_it(name, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        nb.check_parameters(nb.resolve(["02"])[0], {name: value})
    assert nb.check_parameters(nb.resolve(["02"])[0], {"t_fraction": "1"}) == {"t_fraction": 1}  # an int is a float


def test_a_text_parameter_outside_the_choices_its_comment_lists_is_refused():
    with pytest.raises(ValueError, match="parameter 'grid' must be one of one_shot, iterative, structured; got 'bogus'"):
        nb.check_parameters(nb.resolve(["10"])[0], {"grid": "bogus"})
    with pytest.raises(ValueError, match="parameter 'retrain_times' is a list"):
        nb.check_parameters(nb.resolve(["12"])[0], {"retrain_times": "5"})


def test_the_notebooks_command_says_in_one_line_when_its_folder_is_a_file_or_a_cell_runs_too_long(tmp_path, capsys,
                                                                                                    monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert cli.main(["notebooks", "01", "--profile", "smoke", "--executed-dir", str(afile)]) == 2
    assert "is a file; name a folder for the executed notebooks" in capsys.readouterr().err
    monkeypatch.setenv("REWINDKIT_OUT", str(tmp_path / "out"))
    # importing torch and the kit alone takes a fresh kernel over a second
    assert cli.main(["notebooks", "01", "--profile", "smoke", "--timeout", "1",
                     "--executed-dir", str(tmp_path / "executed")]) == 2
    err = capsys.readouterr().err
    assert "01_quickstart.ipynb: a cell ran longer than the timeout of 1 s per cell (--timeout)" in err
    assert err.startswith("rewindkit: error: ")


def test_the_notebooks_command_refuses_two_profiles(capsys, monkeypatch):
    monkeypatch.setenv("REWINDKIT_PROFILE", "smoke")
    assert cli.main(["notebooks", "01", "--profile", "laptop"]) == 2
    assert "REWINDKIT_PROFILE=smoke is set, and it makes every notebook run profile 'smoke', not 'laptop'" in \
        capsys.readouterr().err
    monkeypatch.delenv("REWINDKIT_PROFILE")
    assert cli.main(["notebooks", "01", "--profile", "laptop", "-p", "profile", "smoke"]) == 2
    assert "--profile laptop and -p profile smoke name two profiles; give one" in capsys.readouterr().err


def test_a_retraining_fraction_outside_0_1_is_refused():
    from rewindkit.notebook import views
    from rewindkit.profiles import get_profile
    with pytest.raises(ValueError, match=r"t_fraction must be a fraction of T in \(0, 1\], e.g. 0.5; got -1"):
        views.retrain_time(get_profile("smoke"), -1)
    assert views.retrain_time(get_profile("smoke"), 0.5) == 2


def test_notebook_12_refuses_a_t_grid_without_T_before_it_draws():
    from rewindkit.notebook import after_paper
    from rewindkit.profiles import get_profile
    with pytest.raises(ValueError, match=r"retrain_times must include T = 4 .*; got \[2\]"):
        after_paper.grid_profiles(get_profile("smoke"), [2])


def test_two_notebooks_at_once_draw_what_each_draws_alone(tmp_path, monkeypatch):
    """Notebooks 01 and 02 both ask for the smoke profile's dense run: run at the same time, one trains
    it and the other waits for it (the run's lock), and every figure is the bytes each draws alone."""
    monkeypatch.delenv("REWINDKIT_PROFILE", raising=False)
    drawn = {}
    for at_once in (1, 2):
        out = tmp_path / f"at_once_{at_once}"
        monkeypatch.setenv("REWINDKIT_OUT", str(out))
        lines = []
        nb.run_notebooks(nb.resolve(["01", "02"]), {"profile": "smoke"}, executed_dir=out / "executed", timeout=600,
                         log=lines.append, at_once=at_once)
        assert ("2 notebooks, 2 at once" in lines) == (at_once == 2)
        assert sum(line.startswith("✔ ") for line in lines) == 2
        drawn[at_once] = {p.name: p.read_bytes() for p in (out / "figures" / "smoke").glob("0[12]_*")}
    assert len(drawn[1]) >= 10 and drawn[1] == drawn[2]
