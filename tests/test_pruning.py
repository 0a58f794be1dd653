import math

import pytest
import torch
import torch.nn.utils.prune as tprune

from rewindkit import models, pruning
from rewindkit.core.masks import Mask, prunable_weight_names


@pytest.fixture
def resnet20():
    torch.manual_seed(0)
    return models.vision_network("resnet20")


@pytest.mark.parametrize("density", [0.8, 0.5, 0.107, 0.02, 1.0])
def test_global_density_is_exact(resnet20, density):
    mask = pruning.global_magnitude(resnet20, density)
    total = mask.num_total()
    assert total == 271_152
    assert mask.num_kept() == math.floor(density * total + 0.5)
    assert set(mask.weight_names) == set(prunable_weight_names(resnet20))


def test_global_threshold_is_shared_across_layers(resnet20):
    mask = pruning.global_magnitude(resnet20, 0.3)
    params = dict(resnet20.named_parameters())
    kept_min = min(params[n][mask[n]].abs().min().item() for n in mask if mask[n].any())
    pruned_max = max(params[n][~mask[n]].abs().max().item() for n in mask if (~mask[n]).any())
    assert pruned_max <= kept_min
    # global, not layerwise: layer densities differ
    assert len({round(d, 3) for d in mask.layer_densities().values()}) > 3


def test_matches_torch_global_unstructured_l1(resnet20):
    density = 0.25
    mask = pruning.global_magnitude(resnet20, density)
    modules = dict(resnet20.named_modules())
    targets = [(modules[n.rsplit(".", 1)[0]], "weight") for n in mask]
    n_prune = mask.num_total() - mask.num_kept()
    tprune.global_unstructured(targets, pruning_method=tprune.L1Unstructured, amount=n_prune)
    for name, (module, _) in zip(mask, targets):
        assert torch.equal(module.weight_mask.bool(), mask[name]), name


def test_iterative_densities_and_monotone_masks(resnet20):
    mask = None
    params = dict(resnet20.named_parameters())
    total = 271_152
    for k in range(1, 11):
        new = pruning.global_magnitude(resnet20, 0.8**k, mask)
        assert abs(new.num_kept() - 0.8**k * total) <= 1, k
        if mask is not None:
            assert new.is_subset_of(mask)
        mask = new
        with torch.no_grad():  # emulate retraining moving the surviving weights
            for n in mask:
                params[n].mul_(mask[n]).add_(0.01 * torch.randn_like(params[n]) * mask[n])


def test_pruned_weights_stay_pruned_even_if_large(resnet20):
    first = pruning.global_magnitude(resnet20, 0.5)
    params = dict(resnet20.named_parameters())
    with torch.no_grad():  # make pruned entries huge: they must still count as zero
        for n in first:
            params[n][~first[n]] = 100.0
    second = pruning.global_magnitude(resnet20, 0.4, first)
    assert second.is_subset_of(first)


def test_density_above_existing_mask_is_rejected(resnet20):
    first = pruning.global_magnitude(resnet20, 0.5)
    with pytest.raises(ValueError, match="existing mask keeps only"):
        pruning.global_magnitude(resnet20, 0.6, first)


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "0.5", True])
def test_bad_density_names_value_and_range(resnet20, bad):
    with pytest.raises(ValueError, match=r"density must be .*\(0, 1\]; got " + repr(bad).replace("(", r"\(").replace(".", r"\.")):
        pruning.global_magnitude(resnet20, bad)


def test_layerwise_and_random(resnet20):
    lw = pruning.layerwise_magnitude(resnet20, 0.2)
    assert all(abs(d - 0.2) < 0.01 for d in lw.layer_densities().values())
    rnd = pruning.random_pruning(resnet20, 0.2, seed=3)
    assert abs(rnd.num_kept() - 0.2 * rnd.num_total()) <= 1
    assert rnd.equal(pruning.random_pruning(resnet20, 0.2, seed=3))
    assert not rnd.equal(pruning.random_pruning(resnet20, 0.2, seed=4))


@pytest.mark.parametrize("config,net,paper", [
    ("resnet56_a", "resnet56", 0.9209), ("resnet56_b", "resnet56", 0.8712),
    ("resnet110_a", "resnet110", 0.9773), ("resnet110_b", "resnet110", 0.6876),
])
def test_structured_level1_density_matches_paper(config, net, paper):
    mask = pruning.l1_filters(models.vision_network(net), config, level=1)
    assert abs(mask.density() - paper) < 0.003


def test_structured_levels_decrease_density():
    model = models.vision_network("resnet56")
    ds = [pruning.l1_filters(model, "resnet56_a", level).density() for level in (1, 2, 3, 4, 5)]
    assert all(a > b for a, b in zip(ds, ds[1:]))
    # paper: ResNet-56-A level 5 is CR 1.51x
    assert abs(1 / ds[-1] - 1.51) < 0.02


def test_structured_mask_removes_whole_filters_bn_and_next_channels():
    torch.manual_seed(0)
    model = models.vision_network("resnet56")
    mask = pruning.l1_filters(model, "resnet56_b")
    # conv_2, stage 1: 0.6 × 16 = 9.6 filters, rounded stochastically as the authors did: the first
    # draw after random.seed(0) is 0.844 ≥ 0.6, so 9 are removed
    block = model.blocks()[0]
    keep = mask["stages.0.0.conv1.weight"].flatten(1).all(1)
    gone = mask["stages.0.0.conv1.weight"].flatten(1).any(1)
    assert torch.equal(keep, gone)  # whole filters only
    assert int((~keep).sum()) == 9
    assert torch.equal(mask["stages.0.0.bn1.weight"], keep) and torch.equal(mask["stages.0.0.bn1.bias"], keep)
    assert torch.equal(mask["stages.0.0.conv2.weight"].any(0).flatten(1).all(1), keep)
    # removed filters are those with the smallest L1 norms
    norms = block.conv1.weight.detach().abs().flatten(1).sum(1)
    assert norms[~keep].max() <= norms[keep].min()
    # skipped layer conv_16 = block 8 stays dense
    assert mask["stages.0.7.conv1.weight"].all()
    # BN entries are enforced but not counted in the density
    assert "stages.0.0.bn1.weight" not in mask.weight_names


def test_structured_bad_inputs():
    model = models.vision_network("resnet56")
    with pytest.raises(ValueError, match="'resnet56_c'.*resnet56_a, resnet56_b, resnet110_a, resnet110_b"):
        pruning.l1_filters(model, "resnet56_c")
    with pytest.raises(ValueError, match="ResNet-110"):
        pruning.l1_filters(model, "resnet110_a")
    with pytest.raises(ValueError, match="level must be"):
        pruning.l1_filters(model, "resnet56_a", level=0)
    with pytest.raises(ValueError, match="needs a residual network.*VGG has no such blocks"):
        pruning.l1_filters(models.vision_network("vgg16"), "generic_a")


def test_mask_round_trip(tmp_path, resnet20):
    mask = pruning.l1_filters(models.vision_network("resnet56"), "resnet56_a")
    mask.save(tmp_path / "mask.pt")
    loaded = Mask.load(tmp_path / "mask.pt")
    assert loaded.equal(mask) and loaded.density() == mask.density()
    raw = torch.load(tmp_path / "mask.pt", weights_only=True)
    assert all(t.dtype == torch.bool for t in raw.values())


@pytest.mark.parametrize("network", ["resnet56", "resnet110"])
@pytest.mark.parametrize("config", ["a", "b"])
def test_l1_filter_levels_land_on_the_released_densities(network, config):
    """The authors' stochastic rounding of fractional filter counts: every level 1–5 of the paper's
    configurations gives the released density to the 6 stored digits under their accounting
    (pruning.released_density), and the mask's own density within 0.2 points of it."""
    from rewindkit import reference
    pruned = reference.load_pruned()
    released = sorted(pruned[(pruned.network == network) & (pruned.pruning == f"structured_{config}")]
                      .density.unique(), reverse=True)
    assert len(released) == 5
    torch.manual_seed(0)
    model = models.vision_network(network)
    for level, want in zip(range(1, 6), released):
        mask = pruning.l1_filters(model, f"{network}_{config}", level)
        assert pruning.released_density(model, mask, f"{network}_{config}") == pytest.approx(want, abs=1e-6), level
        assert abs(mask.density() - want) < 0.002, level


def test_nearest_rounding_stays_available_for_other_networks():
    model = models.vision_network("mnist1d_resnet", depth=8, width=16)
    assert pruning.FILTER_CONFIGS["generic_b"].rounding == "nearest"
    mask = pruning.l1_filters(model, "generic_b", 1)  # 16 filters × 0.6 = 9.6 → 10 removed
    first = mask["stages.0.0.conv1.weight"].flatten(1).any(1)
    assert int((~first).sum()) == 10
    with pytest.raises(ValueError, match="unknown rounding 'up'; valid: nearest, stochastic"):
        pruning.filter_count(0.5, 16, "up", None)
    with pytest.raises(ValueError, match="known for resnet56_a.*got 'generic_b'"):
        pruning.released_density(model, mask, "generic_b")


def test_pruning_descriptions_round_trip_and_label_without_string_splitting():
    g = pruning.GlobalMagnitude(0.25)
    f = pruning.FilterPruning("resnet56_b", 3)
    assert g.to_dict() == {"method": "global_magnitude", "density": 0.25}  # the run-id format, unchanged
    assert f.to_dict() == {"method": "l1_filters", "config": "resnet56_b", "level": 3}
    assert pruning.pruning_from_dict(g.to_dict()) == g and pruning.pruning_from_dict(f.to_dict()) == f
    assert (g.label, f.label, pruning.FilterPruning("generic_a", 1).label) == ("unstructured", "structured_b",
                                                                             "structured_a")
    assert all(c.variant in ("a", "b") for c in pruning.FILTER_CONFIGS.values())
    with pytest.raises(ValueError, match="unknown pruning method 'snip'; valid methods: global_magnitude, l1_filters"):
        pruning.pruning_from_dict({"method": "snip", "density": 0.5})
    with pytest.raises(ValueError, match=r"density must be .*got 0"):
        pruning.GlobalMagnitude(0)
    with pytest.raises(ValueError, match="unknown filter-pruning config 'resnet56_c'; valid configs: resnet56_a"):
        pruning.FilterPruning("resnet56_c", 1)
    with pytest.raises(ValueError, match="level must be a positive integer .*got 0"):
        pruning.FilterPruning("generic_a", 0)
