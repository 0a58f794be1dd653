import pytest
import torch

from rewindkit import models
from rewindkit.core.masks import prunable_weight_names


def prunable_count(model):
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in prunable_weight_names(model))


@pytest.mark.parametrize("name,trainable,prunable", [
    ("resnet20", 272_762, 271_152),
    ("resnet56", 856_058, 851_760),
    ("resnet110", 1_731_002, 1_722_672),
])
def test_paper_resnet_parameter_counts(name, trainable, prunable):
    model = models.vision_network(name)
    assert models.count_parameters(model) == trainable
    assert prunable_count(model) == prunable


def test_open_lth_projection_variant_counts():
    # open_lth pins ResNet-20 at 272,474 (projection only where the shape changes)
    assert models.count_parameters(models.vision_network("resnet20", projection="transitions")) == 272_474


def test_every_stage_has_a_projection_shortcut():
    model = models.vision_network("resnet20")
    firsts = [stage[0] for stage in model.stages]
    assert all(isinstance(b.shortcut, torch.nn.Sequential) for b in firsts)
    assert all(isinstance(b.shortcut, torch.nn.Identity) for stage in model.stages for b in list(stage)[1:])


def test_prunable_set_is_every_conv_and_the_fc():
    model = models.vision_network("resnet20")
    names = prunable_weight_names(model)
    assert names[0] == "conv.weight" and names[-1] == "fc.weight"
    assert sum(".shortcut.0.weight" in n for n in names) == 3
    assert len(names) == 1 + 18 + 3 + 1


def test_forward_shapes():
    x2 = torch.randn(2, 3, 32, 32)
    assert models.vision_network("resnet20")(x2).shape == (2, 10)
    assert models.vision_network("vgg16")(x2).shape == (2, 10)
    assert models.vision_network("mnist1d_resnet")(torch.randn(2, 1, 40)).shape == (2, 10)


def test_bn_momentum_matches_tf():
    bn = models.vision_network("resnet20").bn
    assert bn.momentum == pytest.approx(0.003) and bn.eps == 1e-5


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match=r"'resnet18'.*resnet20, resnet56, resnet110, vgg16, mnist1d_resnet"):
        models.vision_network("resnet18")


def test_bad_depth_and_projection():
    with pytest.raises(ValueError, match="6n\\+2"):
        models.vision_network("mnist1d_resnet", depth=9)
    with pytest.raises(ValueError, match="'sometimes'.*every_stage"):
        models.vision_network("resnet20", projection="sometimes")


@pytest.mark.parametrize("name,stored,macs", [("resnet20", 41_886_986, 41_075_328),
                                               ("resnet56", 128_197_898, 126_009_984),
                                               ("resnet110", 257_664_266, 253_411_968)])
def test_dense_flops_equal_the_authors_stored_counts(name, stored, macs):
    """The released base runs store these FLOPs for every dense network (reference CSV); the
    multiply-accumulate count stays available beside them."""
    from rewindkit import reference
    from rewindkit.core.flops import forward_flops, forward_macs
    base = reference.load_base()
    assert set(base[base.network == name].flops.dropna()) == {stored}
    model = models.vision_network(name)
    assert forward_flops(model, (3, 32, 32)) == stored
    assert forward_macs(model, (3, 32, 32)) == macs


def test_flops_count_only_unpruned_weights():
    from rewindkit import pruning
    from rewindkit.core.flops import forward_flops
    model = models.vision_network("resnet20")
    dense = forward_flops(model, (3, 32, 32))
    assert forward_flops(model, (3, 32, 32), pruning.global_magnitude(model, 1.0)) == dense
    half = forward_flops(model, (3, 32, 32), pruning.random_pruning(model, 0.5, seed=0))
    assert 0.45 < half / dense < 0.55
    structured = pruning.l1_filters(models.vision_network("resnet56"), "resnet56_b")
    assert forward_flops(models.vision_network("resnet56"), (3, 32, 32), structured) < 0.9 * forward_flops(models.vision_network("resnet56"), (3, 32, 32))
