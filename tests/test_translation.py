"""The laptop-scale GNMT pieces: number-name corpus, Seq2Seq model, loss, BLEU, GnmtSchedule."""

import pytest
import torch

from rewindkit.core.batches import TrainingData
from rewindkit.core.schedules import GnmtSchedule
from rewindkit.models.seq2seq import Seq2Seq, prunable_parameter_names, sequence_loss
from rewindkit.data.translation import BOS, EOS, PAD, bleu, corpus_bleu, detokenize, load_translation, tokenize

SMALL = dict(n_train=96, n_val=24, n_test=24, max_number=999_999)


@pytest.fixture(scope="module")
def data():
    return load_translation(target="fr", source_level="word", target_level="word", **SMALL)


@pytest.fixture(scope="module")
def char_data():
    return load_translation(target="de", target_level="char", **SMALL)


def model_for(data, seed=0, **options):
    torch.manual_seed(seed)
    return Seq2Seq(len(data.src_vocab), data.num_classes, **{"embed": 16, "hidden": 32, **options})


# -- corpus -------------------------------------------------------------------------------------

def test_protocol_and_determinism(data):
    assert isinstance(data, TrainingData)
    again = load_translation(target="fr", source_level="word", target_level="word", **SMALL)
    for split in ("train", "val", "test"):
        for key in ("src", "tgt_in", "tgt_out"):
            assert torch.equal(getattr(data, f"{split}_{key}"), getattr(again, f"{split}_{key}"))
        assert data.references(split) == again.references(split)
    assert data.src_vocab == again.src_vocab and data.tgt_vocab == again.tgt_vocab
    other = load_translation(target="fr", source_level="word", target_level="word", seed=1, **SMALL)
    assert data.references("train") != other.references("train")


def test_splits_are_disjoint(data):
    refs = {s: set(data.references(s)) for s in ("train", "val", "test")}
    assert (data.n_train, data.split_size("val"), data.split_size("test")) == (96, 24, 24)
    assert len(refs["train"]) == 96  # distinct numbers, distinct names
    assert not refs["train"] & refs["val"] and not refs["train"] & refs["test"] and not refs["val"] & refs["test"]


def test_tokenisation_round_trips():
    for text in ("quatre-vingt-dix-neuf mille, trois cent un", "dreihundertfünfundvierzig"):
        for level in ("word", "char"):
            assert detokenize(tokenize(text, level), level) == text
    assert tokenize("twenty-one thousand, two", "word") == ["twenty", "-", "one", "thousand", ",", "two"]


def test_shapes_and_padding(data, char_data):
    for d in (data, char_data):
        (src, tgt_in), tgt_out = next(d.batches(8, seed=0, start=0, stop=1))
        assert src.dtype == tgt_in.dtype == tgt_out.dtype == torch.long
        assert src.shape[0] == tgt_in.shape[0] == tgt_out.shape[0] == 8 and tgt_in.shape == tgt_out.shape
        assert (tgt_in[:, 0] == BOS).all()
        lengths = (tgt_out != PAD).sum(1)
        assert (tgt_out.gather(1, (lengths - 1)[:, None]) == EOS).all()  # target tokens, then EOS, then PAD
        assert torch.equal(tgt_in[:, 1:] != PAD, (tgt_out[:, :-1] != PAD) & (tgt_out[:, :-1] != EOS))
        assert (tgt_in[:, 1:][tgt_in[:, 1:] != PAD] == tgt_out[:, :-1][(tgt_out[:, :-1] != PAD) & (tgt_out[:, :-1] != EOS)]).all()
        assert ((src != PAD).sum(1) > 0).all() and (src != PAD).any(0)[-1]  # trimmed to the longest
        assert d.input_shape == (d.train_src.shape[1],) and d.num_classes == len(d.tgt_vocab)
        assert d.decode(tgt_out) == [d.train_refs[i] for i in _indices(d, 8, 0, 0)]


def _indices(d, batch_size, seed, step):
    from rewindkit.core.batches import BatchOrder
    return BatchOrder(d.n_train, batch_size, seed).indices(step).tolist()


def test_batches_are_a_function_of_seed_and_step(data):
    whole = list(data.batches(16, seed=3, start=0, stop=14))  # crosses two epoch boundaries
    resumed = list(data.batches(16, seed=3, start=0, stop=5)) + list(data.batches(16, seed=3, start=5, stop=14))
    assert len(whole) == len(resumed) == 14
    for ((s1, i1), o1), ((s2, i2), o2) in zip(whole, resumed):
        assert torch.equal(s1, s2) and torch.equal(i1, i2) and torch.equal(o1, o2)
    assert _indices(data, 16, 3, 0) != _indices(data, 16, 4, 0)  # the seed matters


def test_eval_batches_subset_and_to(data):
    got = [o for _, o in data.eval_batches("val", 10)]
    assert [len(o) for o in got] == [10, 10, 4]
    small = data.subset(n_train=32, n_eval=5)
    assert small.n_train == 32 and small.split_size("test") == 5 and len(small.references("val")) == 5
    assert isinstance(small, TrainingData) and data.to("cpu") is data
    with pytest.raises(ValueError):
        data.split_size("dev")


# -- model and loss -----------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, message", [
    ("hidden", 0, "hidden must be a whole number ≥ 1; got 0"),
    ("hidden", -2, "hidden must be a whole number ≥ 1; got -2"),
    ("hidden", 2.5, "hidden must be a whole number ≥ 1; got 2.5"),
    ("hidden", 7, "hidden must be even"),
    ("embed", 0, "embed must be a whole number ≥ 1; got 0"),
    ("decoder_layers", 0, "decoder_layers must be a whole number ≥ 1; got 0"),
    ("encoder_layers", True, "encoder_layers must be a whole number ≥ 1; got True"),
])
def test_a_bad_size_is_refused_by_name_before_any_layer_is_built(option, value, message):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's own "zero-element tensors" warning would come first
        with pytest.raises(ValueError, match=message):
            Seq2Seq(10, 12, **{"embed": 4, "hidden": 8, option: value})


@pytest.mark.parametrize("attention", ["bahdanau", "dot"])
def test_forward_shapes_and_state_dict_round_trip(data, attention):
    model = model_for(data, attention=attention, encoder_layers=2, decoder_layers=3)
    (src, tgt_in), tgt_out = next(data.batches(8, 0, 0, 1))
    logits = model(src, tgt_in)
    assert logits.shape == (*tgt_in.shape, data.num_classes)
    assert torch.equal(model((src, tgt_in)), logits)
    assert all(float(p.detach().abs().max()) <= 0.1 for n, p in model.named_parameters() if n != "attention.g")
    clone = model_for(data, seed=1, attention=attention, encoder_layers=2, decoder_layers=3)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone(src, tgt_in), logits)
    params = {n: p.detach() for n, p in model.named_parameters()}
    assert torch.allclose(torch.func.functional_call(clone, params, (src, tgt_in)), logits)


def test_padding_does_not_change_the_encoding(data):
    model = model_for(data).eval()
    src = data.val_src[:4]
    padded = torch.cat([src, torch.zeros(4, 3, dtype=torch.long)], 1)
    tgt_in = data.val_tgt_in[:4]
    assert torch.allclose(model(src, tgt_in), model(padded, tgt_in), atol=1e-6)


def test_loss_ignores_pad():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    tgt = torch.tensor([[4, 5, EOS, PAD, PAD], [6, EOS, PAD, PAD, PAD]])
    changed = logits.clone()
    changed[tgt == PAD] = torch.randn(int((tgt == PAD).sum()), 7) * 10
    assert torch.allclose(sequence_loss(logits, tgt), sequence_loss(changed, tgt))
    keep = tgt != PAD
    manual = torch.nn.functional.cross_entropy(logits[keep], tgt[keep], label_smoothing=0.1)
    assert torch.allclose(sequence_loss(logits, tgt), manual)
    assert torch.allclose(sequence_loss(logits, tgt, 0.0), torch.nn.functional.cross_entropy(logits[keep], tgt[keep]))


def test_greedy_decode_stops_at_eos(data):
    model = model_for(data).eval()
    with torch.no_grad():  # make EOS the only likely output after the first token
        model.output.bias.zero_()
        model.output.bias[EOS] = 50.0
    out = model.greedy_decode(data.val_src[:5], max_len=20)
    assert out.shape == (5, 1) and (out == EOS).all()
    with torch.no_grad():
        model.output.bias[EOS] = -50.0
        model.output.bias[5] = 50.0
    out = model.greedy_decode(data.val_src[:5], max_len=7)
    assert out.shape == (5, 7) and (out == 5).all()
    assert data.decode(torch.tensor([[5, 6, EOS, 7, PAD]])) == [detokenize([data.tgt_vocab[5], data.tgt_vocab[6]], "word")]


def test_prunable_names_cover_embeddings_and_lstm_biases(data):
    model = model_for(data)
    names = prunable_parameter_names(model)
    for needed in ("src_embed.weight", "tgt_embed.weight", "encoder.bias_ih_l0", "encoder.bias_hh_l0_reverse",
                   "decoder.bias_ih_l0", "decoder.weight_hh_l0", "attention.v", "attention.query.bias", "output.weight"):
        assert needed in names
    assert set(dict(model.named_parameters())) - set(names) == {"attention.g"}
    assert set(prunable_parameter_names(model_for(data, attention="dot"))) == set(dict(model_for(data, attention="dot").named_parameters()))


def test_adam_steps_reduce_the_loss(data):
    torch.set_num_threads(1)
    model = model_for(data)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    (src, tgt_in), tgt_out = next(data.batches(32, 0, 0, 1))
    first = sequence_loss(model(src, tgt_in), tgt_out).item()
    for _ in range(30):
        loss = sequence_loss(model(src, tgt_in), tgt_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sequence_loss(model(src, tgt_in), tgt_out).item() < 0.6 * first


# -- BLEU ---------------------------------------------------------------------------------------

def test_bleu_of_references_and_garbage(data, char_data):
    for d in (data, char_data):
        refs = d.references("test")
        assert corpus_bleu(refs, refs, d.target_level) == pytest.approx(100.0)
        assert corpus_bleu(["zzz"] * len(refs), refs, d.target_level) < 1.0
    refs = data.references("test")
    assert corpus_bleu(refs[1:] + refs[:1], refs, "word") < 60.0


class _Oracle(torch.nn.Module):
    """Greedy-decodes the references of a split (looked up by source row)."""

    def __init__(self, data, split):
        super().__init__()
        self.table = {tuple(s[s != PAD].tolist()): o for s, o in zip(getattr(data, f"{split}_src"), getattr(data, f"{split}_tgt_out"))}

    def greedy_decode(self, src, max_len):
        rows = [self.table[tuple(s[s != PAD].tolist())] for s in src]
        return torch.stack([torch.nn.functional.pad(r, (0, max_len - len(r))) for r in rows])[:, :max_len]


def test_bleu_of_a_model_restores_training_mode(data):
    oracle = _Oracle(data, "train").train()  # (train: its every token is in the vocabulary, no UNK)
    assert bleu(oracle, data, "train", batch_size=7) == pytest.approx(100.0)
    assert oracle.training
    model = model_for(data).train()
    assert 0.0 <= bleu(model, data, "test") < 20.0 and model.training


# -- schedule -----------------------------------------------------------------------------------

def test_gnmt_schedule_matches_the_paper():
    s = GnmtSchedule(2e-3, epochs=5, steps_per_epoch=1726)  # T = 8,630 as the paper
    assert s.total_steps == 8630 and s.decay_start == 5753 and s.decay_steps == 719
    assert s.lr(0) == pytest.approx(2e-5) and s.lr(100) == pytest.approx(2e-4)  # t2t warm-up from LR/100
    assert s.lr(199) < 2e-3 and s.lr(200) == 2e-3
    expected = {5752: 2e-3, 5753: 2e-3, 6471: 2e-3, 6472: 1e-3, 7190: 1e-3, 7191: 5e-4, 7909: 5e-4, 7910: 2.5e-4,
                8629: 2.5e-4}
    for step, lr in expected.items():
        assert s.lr(step) == pytest.approx(lr), step
    assert s.final_lr == pytest.approx(2.5e-4) == s.lr(s.total_steps - 1)
    assert s.trace(8630, 9000) == [s.final_lr] * 370 and s.lr(10**6) == s.final_lr
    assert s.epoch_to_step(2.5) == 4315 and s.base_lr == 2e-3
    small = GnmtSchedule(1e-2, epochs=16, steps_per_epoch=8, warmup_steps=16)
    trace = small.trace(0, small.total_steps)
    assert all(a <= b for a, b in zip(trace[:16], trace[1:17])) and trace[-1] == small.final_lr == 1e-2 / 8
    with pytest.raises(ValueError):
        GnmtSchedule(1e-3, epochs=1, steps_per_epoch=10, warmup_steps=10)


def test_translation_smoke_grid_writes_bleu_results_with_every_weight_masked(tmp_path, capsys):
    """`rewindkit grid translation_smoke --kind one_shot` (cut to one density and t): results.csv in
    the released columns with BLEU in test_acc / val_acc, and masks over every weight — embeddings
    and LSTM biases included — counted in the density (issue 14)."""
    import pandas as pd

    from rewindkit import cli
    from rewindkit.core.masks import Mask
    from rewindkit.engine.tables import RESULT_COLUMNS
    out = tmp_path / "grid"
    assert cli.main(["grid", "translation_smoke", "--kind", "one_shot", "--out", str(out), "--quiet", "--no-progress",
                     "--set", "densities=(0.3,)", "--set", "retrain_times=(4,)"]) == 0
    assert "best achievable Δ BLEU vs dense" in capsys.readouterr().out
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS and len(results) == 3
    assert (results.network == "gnmt_small").all() and results.test_acc.between(0, 100).all()
    assert set(results.technique) == {"fine_tuning", "weight_rewinding", "lr_rewinding"}
    mask = Mask.load(out / "runs" / results.run_id[0] / "mask.pt")
    names = set(mask.weight_names)
    assert {"src_embed.weight", "tgt_embed.weight", "encoder.bias_ih_l0", "decoder.bias_hh_l0"} <= names
    assert abs(mask.density() - 0.3) < 1e-3 and abs(results.density[0] - mask.density()) < 1e-9
    base = pd.read_csv(out / "base_results.csv")
    assert len(base) == 1 and 0 <= base.test_acc[0] <= 100
    # a run made before Adam took the fused update (no "adam_update" in its setup) cannot be replayed
    # bit for bit by this kit: refused, saying why, instead of a mismatch blamed on the hardware
    import json

    from rewindkit.engine import replay
    config_path = out / "runs" / base.run_id[0] / "config.json"
    config = json.loads(config_path.read_text())
    assert config["setup"].pop("adam_update") == "fused"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"trained with Adam's foreach update .* replay cannot reproduce it"):
        replay.starting_point(out, base.run_id[0])


def test_a_fully_pruned_attention_vector_gives_finite_losses_and_gradients(data):
    """Global magnitude pruning can remove all of normed-Bahdanau's v; its norm is then 0 and the
    attention must fall back to uniform weights rather than 0/0 (a NaN that stops the run)."""
    model = model_for(data)
    with torch.no_grad():
        model.attention.v.zero_()
    (src, tgt_in), tgt_out = next(data.batches(16, 0, 0, 1))
    loss = sequence_loss(model(src, tgt_in), tgt_out)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_an_adam_runs_id_names_its_update(monkeypatch):
    """The kit's Adam takes the fused update on the CPU too (its square root is IEEE, the same on every
    CPU: tests/test_numerics.py); Adam runs name the update in their setup, so a run made with another
    update is never reused, and SGD runs (the laptop's pinned ids) are left as they were."""
    from rewindkit.core.optimizers import ADAM_UPDATE, make_optimizer
    from rewindkit.engine import runs
    from rewindkit.engine.grids import grid_specs
    from rewindkit.engine.profiles import get_profile
    translation, laptop = get_profile("translation_smoke"), get_profile("smoke")
    assert translation.recipe.optimizer == "adam" and laptop.recipe.optimizer == "sgd"
    assert runs.setup_from_profile(translation)["adam_update"] == ADAM_UPDATE == "fused"
    assert "adam_update" not in runs.setup_from_profile(laptop)
    optimizer = make_optimizer(torch.nn.Linear(2, 2), translation.recipe)
    assert optimizer.param_groups[0]["fused"] is True
    ids = [s.id for s in grid_specs(translation, "one_shot")]
    monkeypatch.setattr(runs, "ADAM_UPDATE", "foreach")
    assert set(ids).isdisjoint(s.id for s in grid_specs(translation, "one_shot"))
