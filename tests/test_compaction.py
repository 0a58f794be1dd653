"""Compaction (issue 22 §1): every structured configuration of the kit, made physically smaller, computes
what the masked network computes; unstructured masks are refused with the reason.

How close must the two outputs be? They run the same operations on the same numbers except that the
compacted convolutions skip the exact zeros of the removed channels, so their dot products are
summed in another order and blocking. A sum of n terms in any order is off by at most γ_n·Σ|terms|
(Higham 2002, §3.1; ``tests/helpers.py``), and one forward pass chains one such reduction per conv or
linear layer on its longest path: to first order (layer gains O(1), as in the kernel-path
comparisons of the training tests) the relative difference is at most
``layers × largest fan-in × u`` — :func:`helpers.kernel_path_tolerance` with ``steps`` = layers —
e.g. 57 × 576 × 2⁻²⁴ ≈ 2.0e-3 for ResNet-56. Removing a wrong channel moves the output by O(1).
"""
import copy

import pytest
import torch
from torch import nn

import rewindkit  # noqa: F401  (pins the portable CPU numerics)
from rewindkit import pruning
from rewindkit.core.compaction import CompactionError, ConstantBranch, UnstructuredMaskError, removed_filters
from rewindkit.core.flops import forward_macs
from rewindkit.core.residual import residual_blocks
from rewindkit.models import torchvision_available, vision_network
from rewindkit.profiles import PROFILES

from helpers import assert_close_across_kernels, kernel_path_tolerance, one_thread, trained_like

pytest.importorskip("torch_pruning")

LAPTOP = PROFILES["laptop"].model_options


def masked(model, mask):
    out = copy.deepcopy(model)
    out.load_state_dict(mask.apply_to_state_dict(out.state_dict()))
    return out


def layers_and_fan_in(model):
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    fan_in = max(m.weight[0].numel() for m in layers)
    return len(layers), fan_in


def expected_parameters(model, mask):
    """The mask's kept weights plus the unprunable parameters that survive: everything but bn1's γ/β
    of removed filters and, in a block that lost every filter, bn2's γ/β too."""
    unprunable = sum(p.numel() for n, p in model.named_parameters() if n not in mask.weight_names)
    names = {id(m): n for n, m in model.named_modules()}
    gone = 0
    for _, block in residual_blocks(model):
        kept = int(mask[f"{names[id(block.conv1)]}.weight"].flatten(1).any(1).sum())
        gone += 2 * (block.conv1.out_channels - kept)
        if kept == 0:
            gone += 2 * block.bn2.num_features
    return mask.num_kept() + unprunable - gone


CASES = ([("resnet56", {}, c, level, (3, 32, 32)) for c in ("resnet56_a", "resnet56_b") for level in pruning.LEVELS]
         + [("resnet110", {}, c, level, (3, 32, 32)) for c in ("resnet110_a", "resnet110_b") for level in pruning.LEVELS]
         + [("mnist1d_resnet", dict(num_classes=10, in_channels=1, **LAPTOP), c, level, (1, 1, 40))
            for c in ("generic_a", "generic_b") for level in pruning.LEVELS])


def check_compaction(name, options, config, level, shape):
    model = trained_like(name, **options)
    before = copy.deepcopy(model.state_dict())
    mask = pruning.l1_filters(model, config, level)
    reference = masked(model, mask)
    small = pruning.compact(model, mask)
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), one_thread():
        want, got = reference(x), small(x)
    layers, fan_in = layers_and_fan_in(model)
    assert_close_across_kernels({"out": got}, {"out": want}, kernel_path_tolerance(layers, fan_in),
                                f"{name} {config} L{level}")
    assert sum(p.numel() for p in small.parameters()) == expected_parameters(model, mask)
    assert forward_macs(small, shape) == forward_macs(model, shape, mask)  # what the FLOP count promised
    assert not small.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the surviving filters are the kept ones, bit for bit
    names = {id(m): n for n, m in model.named_modules()}
    small_blocks = dict(zip((names[id(b)] for _, b in residual_blocks(model)), (b for _, b in residual_blocks(small))))
    for block_name, block in small_blocks.items():
        keep = mask[f"{block_name}.conv1.weight"].flatten(1).any(1)
        if not keep.any():
            assert isinstance(block, ConstantBranch)
            continue
        assert block.conv1.out_channels == block.bn1.num_features == block.conv2.in_channels == int(keep.sum())
        full = reference.get_submodule(block_name)
        assert torch.equal(block.conv1.weight, full.conv1.weight[keep])
        assert torch.equal(block.conv2.weight, full.conv2.weight[:, keep])
        assert torch.equal(block.bn1.running_var, full.bn1.running_var[keep])
    return mask


@pytest.mark.parametrize("name,options,config,level,shape", CASES,
                         ids=[f"{c[2]}-L{c[3]}" for c in CASES])
def test_compacted_network_is_the_masked_network(name, options, config, level, shape):
    check_compaction(name, options, config, level, shape)


def test_a_block_without_filters_becomes_a_constant_branch():
    """ResNet-56-B level 4 removes every filter of some stage-1 blocks (stochastic rounding of 15.7 of
    16): those blocks add a constant to their shortcut — the case Torch-Pruning cannot express."""
    mask = check_compaction("resnet56", {}, "resnet56_b", 4, (3, 32, 32))
    model = vision_network("resnet56")
    names = {id(m): n for n, m in model.named_modules()}
    emptied = [b for _, b in residual_blocks(model) if not mask[f"{names[id(b.conv1)]}.weight"].any()]
    assert emptied, "the configuration no longer empties a block; pick another case for this test"
    # in training mode too (a timed training step runs it): bn2 of a batch of zeros is its β
    trained = trained_like("resnet56")
    reference, small = masked(trained, mask).train(), pruning.compact(trained, mask).train()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), one_thread():
        want, got = reference(x), small(x)
    layers, fan_in = layers_and_fan_in(trained)
    assert_close_across_kernels({"out": got}, {"out": want}, kernel_path_tolerance(layers, fan_in), "train mode")


@pytest.mark.skipif(not torchvision_available(), reason="torchvision does not import here (CPU torch with a CUDA "
                    "torchvision); ResNet-34 needs it")
@pytest.mark.parametrize("config", ["resnet34_a", "resnet34_b"])
@pytest.mark.parametrize("level", [1, 5])
def test_resnet34_compacts(config, level):
    check_compaction("resnet34", {}, config, level, (3, 64, 64))


def test_unstructured_mask_is_refused_with_the_reason():
    model = trained_like("resnet20")
    with pytest.raises(UnstructuredMaskError, match=r"whole filters only.*one by one.*global magnitude"):
        pruning.compact(model, pruning.global_magnitude(model, 0.5))
    # one stray weight inside a kept filter is enough
    mask = pruning.l1_filters(model, "generic_b", 2)
    name = mask.weight_names[0]
    entry = mask[name].clone()
    entry.view(-1)[0] = False
    with pytest.raises(UnstructuredMaskError, match=f"1 weights one by one.*{name}"):
        removed_filters(model, mask.replace({**mask, name: entry}))


def test_a_removed_filter_still_read_is_refused():
    """A hand-made mask that removes conv1 filters but leaves the second conv reading their channels:
    removing them would change the function (the group check), so compaction refuses."""
    model = trained_like("resnet20")
    block = model.stages[1][1]
    names = {id(m): n for n, m in model.named_modules()}
    conv1, conv2 = names[id(block.conv1)], names[id(block.conv2)]
    mask = pruning.Mask.ones(model)
    entry = mask[f"{conv1}.weight"].clone()
    entry[:3] = False
    with pytest.raises(CompactionError, match=f"keeps .* weights of '{conv2}' that read them"):
        pruning.compact(model, mask.replace({**mask, f"{conv1}.weight": entry}))
    emptied = torch.zeros_like(entry)  # every filter gone, the second conv still reading: refused as well
    with pytest.raises(CompactionError, match=f"keeps .* weights of '{conv2}' that read them"):
        pruning.compact(model, mask.replace({**mask, f"{conv1}.weight": emptied}))
    second = mask[f"{conv2}.weight"].clone()
    second[:, :3] = False
    small = pruning.compact(model, mask.replace({**mask, f"{conv1}.weight": entry, f"{conv2}.weight": second}))
    assert small.stages[1][1].conv1.out_channels == block.conv1.out_channels - 3
    assert issubclass(UnstructuredMaskError, CompactionError)
