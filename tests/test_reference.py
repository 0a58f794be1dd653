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


def _cells(technique, medians, network="x", pruning="unstructured"):
    """Three (density, t) cells of one technique with the given median test accuracies."""
    return pd.DataFrame({"network": network, "pruning": pruning, "schedule": "one_shot", "technique": technique,
                         "density": [0.5, 0.5, 0.2], "retrain_time": [2, 4, 4], "test_median": medians})


def test_win_rates_one_row_per_group_or_source():
    one = pd.concat([_cells("lr_rewinding", [0.9, 0.7, 0.6]), _cells("fine_tuning", [0.8, 0.7, 0.65]),
                     _cells("weight_rewinding", [0.7, 0.6, 0.5])])
    rates = R.win_rates(one)
    assert list(rates.columns) == ["LRR ≥ FT", "WR ≥ FT", "LRR ≥ WR"] and len(rates) == 1
    assert rates.iloc[0].tolist() == pytest.approx([2 / 3, 0.0, 1.0])  # a tie counts as a win
    zero_ft = one.test_median.where(one.technique != "fine_tuning", 0)
    two = pd.concat([one, one.assign(network="y", test_median=zero_ft)])
    by = R.win_rates(two, by=["network"])
    assert by.network.tolist() == ["x", "y"] and by["LRR ≥ FT"].tolist() == pytest.approx([2 / 3, 1.0])
    sources = R.win_rates({"kit": one, "paper": R.select(two, network="y")})
    assert sources.index.tolist() == ["kit", "paper"] and sources.loc["paper", "WR ≥ FT"] == 1.0
    no_wr = R.win_rates(R.select(one, technique=["lr_rewinding", "fine_tuning"]))
    assert no_wr["LRR ≥ FT"].iloc[0] == pytest.approx(2 / 3) and no_wr["WR ≥ FT"].isna().all()


def test_win_rates_by_setting_match_paper(agg):
    wins = R.win_rates(agg, by=["network", "pruning", "schedule"])
    assert len(wins) == len(agg[["network", "pruning", "schedule"]].drop_duplicates())
    row = wins[(wins.network == "resnet56") & (wins.pruning == "unstructured") & (wins.schedule == "one_shot")]
    assert round(row["LRR ≥ FT"].iloc[0], 2) == 0.86 and round(row["WR ≥ FT"].iloc[0], 2) == 0.71


def test_run_deltas_are_test_accuracy_minus_dense_mean_in_points():
    runs = pd.DataFrame({"network": ["x", "x", "gnmt"], "technique": ["fine_tuning", "lr_rewinding", "fine_tuning"],
                         "test_acc": [0.80, 0.91, 25.0]})
    base = pd.DataFrame({"network": ["x", "x", "gnmt"], "test_acc": [0.88, 0.86, 26.0]})
    d = R.run_deltas(runs, base)
    assert d.delta.tolist() == pytest.approx([100 * (0.80 - 0.87), 100 * (0.91 - 0.87), -1.0])  # BLEU unscaled
    assert list(d.columns) == ["network", "technique", "test_acc", "delta"]
    with pytest.raises(ValueError, match="no dense runs for network"):
        R.run_deltas(runs, base[base.network == "x"])


def test_lookup_densities_and_pivot():
    cells = pd.concat([_cells("lr_rewinding", [0.9, 0.7, 0.6]), _cells("fine_tuning", [0.8, 0.7, 0.65])])
    cells["delta_median"] = cells.test_median * 10
    at = R.lookup(cells, density=0.2, retrain_time=4)
    assert at.to_dict() == pytest.approx({"lr_rewinding": 6.0, "fine_tuning": 6.5})
    assert R.lookup(cells, "test_median", index="retrain_time", technique="fine_tuning", density=0.5)[4] == 0.7
    with pytest.raises(ValueError, match="'technique' is not unique"):
        R.lookup(cells, density=0.5)
    assert R.densities(cells) == [0.5, 0.2] and R.densities(cells, retrain_time=2) == [0.5]
    wide = R.pivot(cells.assign(compression=1 / cells.density), index=["compression", "retrain_time"])
    assert list(wide.columns) == ["fine_tuning", "lr_rewinding"] and wide.loc[(2.0, 2), "lr_rewinding"] == 9.0
    assert R.pivot(cells.assign(delta_median=1 / 3), index="density", decimals=None).iloc[0, 0] == 1 / 3


def test_largest_compression_within_tolerance():
    best = pd.DataFrame({"technique": ["fine_tuning"] * 3 + ["lr_rewinding"] * 3 + ["weight_rewinding"],
                         "compression": [2, 5, 10] * 2 + [2], "delta_median": [0.1, -1.5, -3, 0.2, -0.9, -1.2, -2]})
    crs = R.largest_compression(best, tolerance=1.0)
    assert crs["fine_tuning"] == 2 and crs["lr_rewinding"] == 5 and pd.isna(crs["weight_rewinding"])
    assert R.largest_compression(best, tolerance=1.3)["lr_rewinding"] == 10


def test_level_one_matches_paper(agg):
    # paper.md §5.4: ResNet-56-B level 1 LRR +0.20, FT -0.24
    level1 = R.level_one(R.select(agg, network="resnet56", pruning=["structured_a", "structured_b"]))
    assert [p for p, _ in level1.index] == ["structured_a", "structured_b"]
    b = level1.xs("structured_b", level="pruning").iloc[0]
    assert b["lr_rewinding"] == 0.20 and b["fine_tuning"] == -0.24


def test_speedups_and_coverage():
    rows = pd.DataFrame({"network": ["x", "x", "y"], "pruning": "unstructured", "schedule": "one_shot",
                         "flops": [10.0, 40.0, 5.0], "trials": [3, 2, 1]})
    base = pd.DataFrame({"network": ["x", "x", "y"], "flops": [100.0, 60.0, 10.0]})
    assert R.speedups(rows, base).speedup.tolist() == [8.0, 2.0, 2.0]
    cov = R.coverage(rows)
    assert cov.loc[("x", "unstructured", "one_shot")].tolist() == [2, 5]


def test_compression_beside_paper_and_heatmap(agg):
    raw = R.select(R.load_pruned(), network="resnet56", pruning="unstructured", schedule="one_shot")
    own = R.aggregate(raw.assign(network="mnist1d_resnet"), R.load_base().assign(network="mnist1d_resnet"))
    fig, data = plots.compression_beside_paper(own, agg, network="mnist1d_resnet")
    assert len(fig.axes) == 2 and set(data.source) == {"this kit", "paper"}
    assert set(data[data.source == "this kit"].network) == {"mnist1d_resnet"}
    assert data[data.source == "paper"].compression.max() <= 10 * 1.001
    matplotlib.pyplot.close(fig)
    fig, data = plots.compression_beside_paper(R.aggregate(raw, R.load_base()), agg, network="resnet56")
    assert len(fig.axes) == 1 and set(data.source) == {"this kit", "paper"}
    matplotlib.pyplot.close(fig)
    fig, data = plots.delta_heatmap(own, network="mnist1d_resnet", technique="lr_rewinding")
    cells = R.select(own, technique="lr_rewinding")
    assert len(data) == cells.density.nunique() and list(data.columns[1:]) == sorted(cells.retrain_time.unique())
    assert data.columns[0] == "compression"
    matplotlib.pyplot.close(fig)


def test_teaching_figures_return_what_they_draw():
    runs = pd.DataFrame({"network": "x", "technique": ["lr_rewinding", "fine_tuning", "weight_rewinding"],
                         "density": 0.1, "retrain_time": 12, "delta": [-1.0, -5.0, -2.0]})
    fig, data = plots.technique_deltas(runs, T=12)
    assert data.technique.tolist() == ["fine_tuning", "weight_rewinding", "lr_rewinding"]
    assert data.delta.tolist() == [-5.0, -2.0, -1.0] and "t = T = 12" in fig.axes[0].get_title()
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="one run per technique"):
        plots.technique_deltas(pd.concat([runs, runs]))
    metrics = {t: pd.DataFrame({"epoch": range(5, 5 + n), "test_acc": 0.5, "lr": 0.1})
               for t, n in (("fine_tuning", 3), ("lr_rewinding", 2))}
    fig, data = plots.retraining_curves(metrics, dense_acc=0.9)
    assert len(data) == 5 and data.retrain_epoch.tolist() == [1, 2, 3, 1, 2]
    assert data.technique.tolist() == ["fine_tuning"] * 3 + ["lr_rewinding"] * 2
    matplotlib.pyplot.close(fig)
    fig, data = plots.run_curve(metrics["fine_tuning"].assign(train_loss=1.0), "fine_tuning")
    assert list(data.columns) == ["epoch", "test_acc", "lr", "technique"] and len(data) == 3 and len(fig.axes) == 2
    matplotlib.pyplot.close(fig)


def test_mask_heatmap_and_filter_norms():
    import torch

    from rewindkit import models, pruning
    torch.manual_seed(0)
    model = models.vision_network("resnet20")
    mask = pruning.global_magnitude(model, 0.2)
    fig, data = plots.mask_heatmap(mask)
    largest = max(mask.weight_names, key=lambda n: mask[n].numel())
    assert list(data.columns) == ["filter", "kept"] and len(data) == mask[largest].shape[0]
    assert data.kept.sum() == int(mask[largest].sum()) and largest in fig.axes[0].get_title()
    matplotlib.pyplot.close(fig)
    model = models.vision_network("resnet56")
    mask = pruning.l1_filters(model, "resnet56_b")
    fig, data = plots.filter_norms(model, mask, 1)
    assert list(data.columns) == ["filter", "l1_norm", "kept"] and len(data) == 16
    assert (~data.kept).sum() == 9 and data[~data.kept].l1_norm.max() <= data[data.kept].l1_norm.min()
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="block must be 1..27"):
        plots.filter_norms(model, mask, 28)
