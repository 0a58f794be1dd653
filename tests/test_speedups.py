"""Measured speed-ups (issue 22 §2, §3): what is timed is what the tables say was timed. The timings
themselves are the benchmark's (``benchmarks/run.py --only speedup``); these tests check the
arithmetic around them: the sparse-kernel network computes the masked network's function, each
row's FLOP speed-up and density are the pruned network's, every configuration and level is there,
and the crossover rule reads the rows as documented."""
import copy

import pandas as pd
import pytest
import torch

import rewindkit  # noqa: F401
from rewindkit import plots, pruning
from rewindkit.core.flops import forward_flops
from rewindkit.engine import speedups
from rewindkit.profiles import PROFILES

from helpers import assert_close_across_kernels, kernel_path_tolerance, one_thread, trained_like

pytest.importorskip("torch_pruning")
SMOKE = speedups.laptop_network(PROFILES["smoke"].model_options)


@pytest.mark.parametrize("name,options,shape", [("resnet20", {}, (3, 32, 32)),
                                                 ("mnist1d_resnet", dict(num_classes=10, in_channels=1), (1, 40))])
@pytest.mark.parametrize("density", [1.0, 0.1])
def test_sparse_kernels_compute_the_masked_network(name, options, shape, density):
    """CSR products sum each output's terms in another order than the dense convolution: the bound is
    that of tests/test_compaction.py (layers × largest fan-in × u, to first order)."""
    model = trained_like(name, **options)
    mask = pruning.global_magnitude(model, density)
    masked = copy.deepcopy(model)
    masked.load_state_dict(mask.apply_to_state_dict(masked.state_dict()))
    sparse = speedups.sparse_kernels(masked)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), one_thread():
        want, got = masked(x), sparse(x)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    tol = kernel_path_tolerance(len(layers), max(m.weight[0].numel() for m in layers))
    assert_close_across_kernels({"out": got}, {"out": want}, tol, f"{name} d={density}")
    csr = [m for m in sparse.modules() if type(m).__name__ in ("_SparseConv", "_SparseLinear")]
    assert len(csr) == len(layers) and all(m.weight.layout == torch.sparse_csr for m in csr)
    assert not any(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in sparse.modules())


def test_structured_rows_are_the_pruned_networks():
    rows = pd.DataFrame(speedups.time_structured(SMOKE, levels=(1, 3), tasks=speedups.TASKS, threads=(1,),
                                                 rounds=1, repeats=1))
    # per task × thread: every config at every level compacted, and each config masked once (deepest level)
    assert len(rows) == len(speedups.TASKS) * len(SMOKE.configs) * (2 + 1)
    dense = SMOKE.build()
    for r in rows.itertuples():
        mask = pruning.l1_filters(dense, r.config, int(r.level))
        assert r.density == round(mask.density(), 6)
        flops = forward_flops(dense, SMOKE.input_shape) / forward_flops(dense, SMOKE.input_shape, mask)
        assert r.flop_speedup == round(flops, 3)
        assert r.measured_speedup > 0 and r.dense_ms > 0
    assert set(rows[rows.variant == "masked"].level) == {3}
    assert set(rows.task) == set(speedups.TASKS) and set(rows.threads) == {1}


def test_unstructured_rows_and_bad_tasks():
    rows = pd.DataFrame(speedups.time_unstructured(SMOKE, densities=(1.0, 0.1), threads=(1,), rounds=1, repeats=1))
    assert len(rows) == 2 * (2 + 1)  # two tasks × (two densities on sparse kernels + masked once)
    assert set(rows.variant) == {"sparse kernels", "masked"}
    with pytest.raises(ValueError, match="inference only"):
        speedups.time_unstructured(SMOKE, tasks=(speedups.TASKS[2],))
    with pytest.raises(ValueError, match="unknown task 'inference batch 7'; valid tasks: inference batch 1"):
        speedups.time_structured(SMOKE, tasks=("inference batch 7",))
    with pytest.raises(ValueError, match="got 'vgg16'"):
        speedups.network_for("vgg16", {})


def test_crossover_is_the_highest_density_from_which_sparse_always_wins():
    rows = [{"density": d, "csr_speedup": s} for d, s in [(1.0, 0.4), (0.5, 1.2), (0.3, 0.9), (0.1, 1.5), (0.01, 9)]]
    assert speedups.crossover_density(rows) == 0.1  # 0.5 wins, but 0.3 does not: not from 0.5 down
    assert speedups.crossover_density([{"density": 0.1, "csr_speedup": 0.99}]) is None
    assert speedups.crossover_density([{"density": d, "csr_speedup": 2.0} for d in (1.0, 0.2)]) == 1.0


def test_the_shipped_table_covers_every_level_task_and_thread_count():
    """Notebook 08 and RESULTS.md read it: ResNet-56 A/B levels 1–5 and the laptop network's A/B, each
    task at 1 and 2 threads, and the unstructured densities; a measurement run that stopped half-way
    would fail here."""
    table = speedups.measured()
    networks = {"ResNet-56": speedups.resnet56(), "laptop 1-D ResNet": speedups.laptop_network(PROFILES["laptop"].model_options)}
    for network, configs in (("ResNet-56", ("resnet56_a", "resnet56_b")), ("laptop 1-D ResNet", ("generic_a", "generic_b"))):
        for config in configs:
            for task in speedups.TASKS:
                for threads in (1, 2):
                    levels = speedups.by_level(table, network, config, task, threads).index
                    assert sorted(levels) == list(pruning.LEVELS), (network, config, task, threads)
        sparse = table[(table.network == network) & (table.variant == "sparse kernels")]
        # A row's density is the mask's own: round(d·N) of the N prunable weights kept, so within half a
        # weight of the nominal d, plus the table's 6-decimal rounding.
        total = pruning.global_magnitude(networks[network].build(), 1.0).num_total()
        measured = sorted(set(sparse.density))
        assert len(measured) == len(speedups.UNSTRUCTURED_DENSITIES), (network, measured)
        for got, nominal in zip(measured, sorted(speedups.UNSTRUCTURED_DENSITIES)):
            assert abs(got - nominal) <= 0.5 / total + 5e-7, (network, got, nominal)
    assert table.measured_on.nunique() == 1
    cross = speedups.crossovers()
    assert {s.label for s in speedups.layer_shapes(PROFILES["laptop"].model_options)} == set(cross.layer)


def test_figures_draw_the_table():
    table = speedups.measured()
    fig, data = plots.measured_vs_flops(table, threads=2)
    assert len(data) == len(table[table.threads == 2])
    fig, bars = plots.speedup_bars(table, "ResNet-56", "resnet56_b", level=5, threads=2)
    rows = table[(table.config == "resnet56_b") & (table.level == 5) & (table.threads == 2)]
    assert sorted(bars[bars.what == "compacted"].speedup) == sorted(rows[rows.variant == "compacted"].measured_speedup)
    with pytest.raises(ValueError, match="no measurement"):
        plots.speedup_bars(table, "ResNet-56", "resnet56_b", level=9)


def test_one_network_is_picked_by_level_or_nominal_density_and_a_miss_names_what_was_measured():
    table = speedups.measured()
    laptop = "laptop 1-D ResNet"
    _, bars = plots.speedup_bars(table, laptop, "global_magnitude", density=0.1, threads=1)  # stored: 0.099972
    rows = table[(table.network == laptop) & (table.config == "global_magnitude") & (table.threads == 1)
                 & ((table.density - 0.1).abs() < 0.001)]
    assert sorted(bars[bars.what != "FLOPs (theory)"].speedup) == sorted(rows.measured_speedup)
    with pytest.raises(ValueError, match="level or an unstructured density, not both or neither"):
        plots.speedup_bars(table, laptop, "generic_b")
    with pytest.raises(ValueError, match=r"measured there: densities \[0\.01"):
        plots.speedup_bars(table, laptop, "global_magnitude", density=0.3, threads=1)
    with pytest.raises(ValueError, match="no measurement of 'laptop 1-D ResNet' 'resnet56_b'; measured: "):
        plots.speedup_bars(table, laptop, "resnet56_b", level=1)


def test_sparse_kernels_keep_a_users_conv_bias_and_leave_other_padding_modes_dense():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=True),
                                torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular")).eval()
    sparse = speedups.sparse_kernels(model)
    assert isinstance(sparse[1], torch.nn.Conv2d)  # circular padding: not an im2col with zeros, left dense
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), one_thread():
        want, got = model(x), sparse(x)
    assert_close_across_kernels({"out": got}, {"out": want}, kernel_path_tolerance(2, 4 * 9), "biased conv")
