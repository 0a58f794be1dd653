import warnings

import matplotlib
import pandas as pd
import pytest

from rewindkit import plots
from rewindkit import reference as R


@pytest.fixture(scope="module")
def agg():
    return R.reference_aggregate()


def test_released_runs_are_shipped_complete():
    assert len(R.load_base()) == 1180 and len(R.load_pruned()) == 22590
    assert list(R.load_pruned().columns) == ["network", "pruning", "schedule", "technique", "density",
                                             "retrain_time", "trial", "test_acc", "val_acc", "flops"]


def test_base_accuracies_match_paper():
    ref = R.base_accuracy(R.load_base())
    assert ref["resnet56"] * 100 == pytest.approx(93.46, abs=0.005)
    assert ref["resnet50"] * 100 == pytest.approx(76.17, abs=0.005)
    assert ref["gnmt"] == pytest.approx(26.87, abs=0.005)


def test_resnet56_iterative_lrr_at_9x(agg):
    # paper.md §5.3: Δ +0.10 [+0.06, +0.20] at 9.31x, abs 93.56
    row = R.select(agg, network="resnet56", schedule="iterative", technique="lr_rewinding", retrain_time=182)
    row = row[(row["density"] - 0.107374).abs() < 1e-4].iloc[0]
    assert (round(row.delta_median, 2), round(row.delta_min, 2), round(row.delta_max, 2)) == (0.10, 0.06, 0.20)
    assert round(row.test_median * 100, 2) == 93.56


def test_resnet56_one_shot_best_achievable(agg):
    # paper.md §5.1: at 1.25x LRR +0.24 (t*=150), WR +0.10 (150), FT +0.15 (170); at 9.31x LRR -0.98 (150)
    best = R.best_achievable(R.select(agg, network="resnet56", schedule="one_shot", pruning="unstructured"))
    def cell(density, tech):
        r = best[(best.technique == tech) & ((best.density - density).abs() < 1e-4)].iloc[0]
        return round(r.delta_median, 2), r.t_star
    assert cell(0.8, "lr_rewinding") == (0.24, 150)
    assert cell(0.8, "weight_rewinding") == (0.10, 150)
    assert cell(0.8, "fine_tuning") == (0.15, 170)
    assert cell(0.1074, "lr_rewinding") == (-0.98, 150)
    assert cell(0.1074, "reinitialization")[0] == -3.24


def test_resnet50_iterative_and_force_times(agg):
    sub = R.select(agg, network="resnet50", schedule="iterative")
    times = R.force_all_times(sub.retrain_time.unique(), 90)
    assert times["weight_rewinding"] == 81 and times["lr_rewinding"] == 90
    fixed = R.at_fixed_times(sub, times)
    r = fixed[(fixed.technique == "lr_rewinding") & ((fixed.density - 0.2097).abs() < 1e-3)].iloc[0]
    assert round(r.delta_median, 2) == 0.04 and round(r.delta_min, 2) == -0.06 and round(r.delta_max, 2) == 0.31


def test_win_rates_match_paper(agg):
    sub = R.select(agg, network="resnet56", schedule="one_shot", pruning="unstructured")
    assert round(R.win_rate(sub, "lr_rewinding", "fine_tuning"), 2) == 0.86
    assert round(R.win_rate(sub, "weight_rewinding", "fine_tuning"), 2) == 0.71


def test_structured_level1_deltas(agg):
    # paper.md §5.4: ResNet-56-B level 1 LRR +0.20, FT -0.24
    best = R.best_achievable(R.select(agg, network="resnet56", pruning="structured_b"))
    level1 = best[best.density == best.density.max()].set_index("technique")
    assert round(level1.loc["lr_rewinding", "delta_median"], 2) == 0.20
    assert round(level1.loc["fine_tuning", "delta_median"], 2) == -0.24
    assert R.liu_delta("resnet56", "structured_b") == pytest.approx(-0.09)


def test_aggregate_accepts_own_results_and_rejects_missing_base():
    own = pd.DataFrame({"network": ["x"] * 3, "pruning": "unstructured", "schedule": "one_shot",
                        "technique": "lr_rewinding", "density": 0.5, "retrain_time": 4, "trial": [1, 2, 3],
                        "test_acc": [0.9, 0.8, 0.85], "val_acc": [0.9, 0.8, 0.85], "flops": 10})
    base = pd.DataFrame({"network": ["x", "x"], "test_acc": [0.88, 0.86], "val_acc": [0.8, 0.8], "flops": 20})
    a = R.aggregate(own, base)
    assert a.delta_median.iloc[0] == pytest.approx(-2.0) and a.delta_min.iloc[0] == pytest.approx(-7.0)
    with pytest.raises(ValueError, match="no dense runs for network"):
        R.aggregate(own, base.assign(network="y"))


FAMILIES = {
    "time": lambda a: plots.accuracy_vs_time(a, network="resnet56", densities=[0.512, 0.168, 0.107]),
    "compression": lambda a: plots.accuracy_vs_compression(a, network="resnet50"),
    "iterative": lambda a: plots.iterative(a, network="gnmt", max_compression=36),
    "structured": lambda a: plots.structured(a, network="resnet34"),
    "ablation": lambda a: plots.accuracy_vs_compression(a, network="resnet110", techniques=plots.ALL),
    "flops": lambda a: plots.flop_speedup(a, R.load_base(), network="resnet20"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_renders_without_warnings(agg, family, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig, data = FAMILIES[family](agg)
        files = plots.save_figure(fig, family, tmp_path, data)
    matplotlib.pyplot.close(fig)
    assert [f.suffix for f in files] == [".pdf", ".png", ".csv"]
    assert len(pd.read_csv(tmp_path / f"{family}.csv")) == len(data) > 0


def test_save_figure_is_byte_reproducible(agg, tmp_path):
    for out in ("a", "b"):
        fig, data = plots.accuracy_vs_compression(agg, network="resnet56")
        plots.save_figure(fig, "fig", tmp_path / out, data)
        matplotlib.pyplot.close(fig)
    for ext in ("pdf", "png", "csv"):
        assert (tmp_path / "a" / f"fig.{ext}").read_bytes() == (tmp_path / "b" / f"fig.{ext}").read_bytes()


def test_plot_bad_inputs(agg):
    with pytest.raises(ValueError, match="unknown technique 'pruning'"):
        plots.accuracy_vs_compression(agg, network="resnet56", techniques=["pruning"])
    with pytest.raises(ValueError, match="no accuracy-vs-compression rows"):
        plots.accuracy_vs_compression(agg, network="resnet1000")


def test_overlay_of_own_runs_on_the_paper(agg):
    """The paper profile's notebooks draw the kit's ResNet-56 runs over the released curves."""
    raw = R.select(R.load_pruned(), network="resnet56", pruning="unstructured")
    own = R.aggregate(raw.assign(test_acc=raw.test_acc - 0.001), R.load_base())
    fig, data = plots.accuracy_vs_time(agg, network="resnet56", overlay=own, densities=[0.512, 0.1074])
    assert set(data.source) == {"paper", "this kit"}
    labels = fig.legends[0].get_texts()
    assert any("(this kit)" in t.get_text() for t in labels)
    for fn in (lambda: plots.accuracy_vs_compression(agg, network="resnet56", overlay=own),
               lambda: plots.iterative(agg, network="resnet56", overlay=own),
               lambda: plots.flop_speedup(agg, R.load_base(), network="resnet56", overlay=own,
                                          overlay_base=R.load_base())):
        fig, data = fn()
        assert {"paper", "this kit"} <= set(data.source)
        matplotlib.pyplot.close(fig)


@pytest.mark.parametrize("technique,density,t_star,speedup", [
    ("fine_tuning", 0.1342, 110, 4.36),   # drawn at 5.08× (t* = 10) when t was chosen over all trials
    ("lr_rewinding", 0.2097, 130, 3.77),  # drawn at 4.07×
])
def test_flop_speedup_picks_t_among_trials_with_flops(technique, density, t_star, speedup):
    """The authors' flop_plot drops runs without FLOPs, then picks t by median validation accuracy."""
    _, data = plots.flop_speedup(R.reference_aggregate(), R.load_base(), network="resnet110")
    row = data[(data.technique == technique) & ((data.density - density).abs() < 1e-3)].iloc[0]
    assert row.t_star == t_star and row.speedup == pytest.approx(speedup, abs=0.005)
