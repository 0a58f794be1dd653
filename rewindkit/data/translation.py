"""A laptop-scale translation task for the paper's GNMT experiment (paper §2, WMT16 EN→DE).

The paper prunes GNMT on WMT16 English→German and reports BLEU: validation BLEU on newstest2015
picks the retraining time t, test BLEU on newstest2014 is reported. This module builds a stand-in
that needs no download: **number names**. A corpus of distinct integers is drawn from a seeded
generator and each is spelled out by ``num2words`` in a source and a target language, e.g.

    en  "three hundred and forty-five thousand, twenty-one"
    de  "dreihundertfünfundvierzigtausendeinundzwanzig"

which has real morphology (German compounds, French ``quatre-vingt-dix``) and real reordering
(German units before tens: "fünfundvierzig" = five-and-forty). The numbers are split once into
disjoint train / validation / test sets (validation BLEU picks t, test BLEU is reported, as in the
paper). Sequences are tokenised at the word level (spaces, with hyphens and commas as their own
tokens) or the character level; each side has its own vocabulary (GNMT's are not shared) with
``PAD = 0``, ``BOS = 1``, ``EOS = 2``, ``UNK = 3``, then the tokens of the training split in sorted
order.

:func:`load_translation` returns a :class:`TranslationData`, which satisfies the training-data
protocol :class:`rewindkit.core.batches.TrainingData`: the training batch of iteration s is a pure
function of (seed, s) through :class:`rewindkit.core.batches.BatchOrder`, so a resumed run sees exactly
the batches of an uninterrupted one. A batch is ``((src, tgt_in), tgt_out)``: ``src`` [B, S] the
source ids, ``tgt_in`` [B, L] = BOS + target ids, ``tgt_out`` [B, L] = target ids + EOS, all padded
with 0 (each batch is cut to its longest sequence unless ``trim=False``). :func:`bleu` scores the
greedy translations of a split with ``sacrebleu`` (corpus BLEU, 0–100).

Determinism: the same options give identical tensors on any machine for a given ``num2words``
version (the numbers are drawn by Python's ``random.Random(seed)``, whose seeded ``sample`` is
stable across platforms).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..platform import registry
from ..core.batches import BatchOrder

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
LEVELS = ("word", "char")
SPLITS = ("train", "val", "test")

_WORD_SPLIT = re.compile(r"\s+|([-,])")


# -- tokenisation -------------------------------------------------------------------------------

def tokenize(text: str, level: str) -> list[str]:
    """``"word"``: split on spaces, hyphens and commas being tokens of their own; ``"char"``: characters."""
    if level == "char":
        return list(text)
    if level == "word":
        return [t for t in _WORD_SPLIT.split(text) if t]
    raise ValueError(f"unknown level {level!r}; choose one of {LEVELS}")


def detokenize(tokens: Sequence[str], level: str) -> str:
    """Inverse of :func:`tokenize`: ``detokenize(tokenize(s, level), level) == s`` for num2words text."""
    if level == "char":
        return "".join(tokens)
    text = " ".join(tokens)
    return text.replace(" - ", "-").replace(" ,", ",")


def build_vocab(sentences: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """Specials, then every token of ``sentences`` in sorted order."""
    return SPECIALS + tuple(sorted({t for s in sentences for t in s} - set(SPECIALS)))


def encode(sentences: Sequence[Sequence[str]], vocab: Sequence[str], bos: bool = False, eos: bool = False) -> torch.Tensor:
    """Token lists → LongTensor [N, max length] padded with PAD (unknown tokens → UNK)."""
    index = {t: i for i, t in enumerate(vocab)}
    rows = [[BOS] * bos + [index.get(t, UNK) for t in s] + [EOS] * eos for s in sentences]
    out = torch.zeros((len(rows), max((len(r) for r in rows), default=0)), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


# -- corpus -------------------------------------------------------------------------------------

def number_corpus(n: int, max_number: int, source: str = "en", target: str = "de", seed: int = 0,
                  min_number: int = 1) -> tuple[list[int], list[str], list[str]]:
    """``n`` distinct integers in ``[min_number, max_number]`` drawn by ``random.Random(seed)`` and
    their names in the ``source`` and ``target`` languages (``num2words`` language codes)."""
    from num2words import num2words
    if not 0 < n <= max_number - min_number + 1:
        raise ValueError(f"cannot draw {n} distinct numbers from [{min_number}, {max_number}]")
    numbers = random.Random(seed).sample(range(min_number, max_number + 1), n)
    return numbers, [num2words(x, lang=source) for x in numbers], [num2words(x, lang=target) for x in numbers]


@dataclass(frozen=True)
class TranslationData:
    """Train / validation / test tensors of a translation corpus (protocol :class:`~rewindkit.core.batches.TrainingData`).

    Per split: ``{split}_src`` [N, S], ``{split}_tgt_in`` and ``{split}_tgt_out`` [N, L] (PAD-padded)
    and ``{split}_refs``, the detokenised reference strings. ``num_classes`` is the target
    vocabulary size (the logits' width).
    """

    train_src: torch.Tensor
    train_tgt_in: torch.Tensor
    train_tgt_out: torch.Tensor
    val_src: torch.Tensor
    val_tgt_in: torch.Tensor
    val_tgt_out: torch.Tensor
    test_src: torch.Tensor
    test_tgt_in: torch.Tensor
    test_tgt_out: torch.Tensor
    train_refs: tuple[str, ...]
    val_refs: tuple[str, ...]
    test_refs: tuple[str, ...]
    src_vocab: tuple[str, ...]
    tgt_vocab: tuple[str, ...]
    source_level: str = "word"
    target_level: str = "char"
    name: str = "numbers"
    trim: bool = True  # cut each batch to its longest sequence (False: fixed shapes, e.g. for vmap)
    metric = "bleu"  # what the engine evaluates (rewindkit.core.metrics): corpus BLEU of greedy translations

    # -- protocol ---------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, tgt_out: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """The training loss the engine uses for this data: :func:`sequence_loss` (PAD ignored)."""
        return sequence_loss(logits, tgt_out, label_smoothing)

    @property
    def num_classes(self) -> int:
        return len(self.tgt_vocab)

    @property
    def n_train(self) -> int:
        return int(self.train_src.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(longest source sequence,)."""
        return (int(self.train_src.shape[1]),)

    @property
    def device(self) -> torch.device:
        return self.train_src.device

    @property
    def max_target_length(self) -> int:
        """Decoding budget: the longest target of any split plus EOS."""
        return max(int(getattr(self, f"{s}_tgt_out").shape[1]) for s in SPLITS)

    def split_size(self, split: str) -> int:
        return int(self._get(split, "src").shape[0])

    def to(self, device) -> TranslationData:
        device = torch.device(device)
        if self.device == device:
            return self
        return replace(self, **{f"{s}_{k}": self._get(s, k).to(device) for s in SPLITS for k in ("src", "tgt_in", "tgt_out")})

    def subset(self, n_train: int | None = None, n_eval: int | None = None) -> TranslationData:
        """The first ``n_train`` training and ``n_eval`` validation/test pairs (for smoke runs)."""
        if n_train is not None and not 0 < n_train <= self.n_train:
            raise ValueError(f"n_train must be in 1..{self.n_train}; got {n_train}")
        if n_eval is not None and not 0 < n_eval:
            raise ValueError(f"n_eval must be at least 1 (validation and test pairs each), or None for all; got {n_eval}")
        fields = {}
        for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
            for k in ("src", "tgt_in", "tgt_out"):
                fields[f"{split}_{k}"] = self._get(split, k)[:n]
            fields[f"{split}_refs"] = self._get(split, "refs")[:n]
        return replace(self, **fields)

    def batches(self, batch_size: int, seed: int, start: int, stop: int) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        """Training batches of iterations ``start`` … ``stop − 1``: iteration s takes the pairs
        :class:`~rewindkit.core.batches.BatchOrder` (seed) gives it, so a batch is a function of (seed, s)
        alone; each cut to this process's slice under torchrun."""
        from ..platform.distributed import shard
        order = BatchOrder(self.n_train, batch_size, seed)
        for step in range(start, stop):
            idx = order.indices(step).to(self.device)
            (src, tgt_in), tgt_out = self._batch("train", idx)
            yield (shard(src), shard(tgt_in)), shard(tgt_out)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        """The whole ``split``, in order, in batches of ``batch_size``."""
        n = self.split_size(split)
        for i in range(0, n, batch_size):
            yield self._batch(split, slice(i, min(i + batch_size, n)))

    # -- text ---------------------------------------------------------------------------------
    def references(self, split: str) -> list[str]:
        """The reference translations of ``split``, detokenised, in order."""
        return list(self._get(split, "refs"))

    def decode(self, ids: torch.Tensor, side: str = "target") -> list[str]:
        """Target (or source) ids [B, L] → detokenised strings, each cut at its first EOS (PAD and
        BOS dropped)."""
        vocab, level = (self.tgt_vocab, self.target_level) if side == "target" else (self.src_vocab, self.source_level)
        out = []
        for row in ids.tolist():
            tokens = []
            for i in row:
                if i == EOS:
                    break
                if i not in (PAD, BOS):
                    tokens.append(vocab[i] if i < len(vocab) else SPECIALS[UNK])
            out.append(detokenize(tokens, level))
        return out

    def encode_source(self, sentences: Sequence[str]) -> torch.Tensor:
        """Source strings → ids [N, S] on this dataset's device (for trying the model by hand)."""
        return encode([tokenize(s, self.source_level) for s in sentences], self.src_vocab).to(self.device)

    # -- helpers ------------------------------------------------------------------------------
    def _get(self, split: str, key: str):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, f"{split}_{key}")

    def _batch(self, split: str, idx) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        src, tgt_in, tgt_out = (self._get(split, k)[idx] for k in ("src", "tgt_in", "tgt_out"))
        if self.trim and len(src):
            src = src[:, :int((src != PAD).sum(1).max())]
            width = int((tgt_out != PAD).sum(1).max())
            tgt_in, tgt_out = tgt_in[:, :width], tgt_out[:, :width]
        return (src, tgt_in), tgt_out


def load_translation(source: str = "en", target: str = "de", n_train: int = 4000, n_val: int = 500,
                     n_test: int = 500, max_number: int = 999_999, source_level: str = "word",
                     target_level: str = "char", seed: int = 0, trim: bool = True,
                     device: str | torch.device = "cpu") -> TranslationData:
    """A number-name translation corpus (see the module docstring).

    ``source``/``target``: ``num2words`` language codes (e.g. "en", "de", "fr"). ``n_train``,
    ``n_val``, ``n_test``: pairs per split, drawn as distinct integers in ``[1, max_number]``, so
    the splits never share a number. ``source_level``/``target_level``: "word" or "char"
    tokenisation (German number names are single compound words, so German targets want "char").
    ``seed``: the corpus draw (independent of every run seed). Same options → identical tensors.
    """
    for level in (source_level, target_level):
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; choose one of {LEVELS}")
    counts = (n_train, n_val, n_test)
    if any(n <= 0 for n in counts):
        raise ValueError(f"n_train, n_val and n_test must be positive; got {counts}")
    _, src_text, tgt_text = number_corpus(sum(counts), max_number, source, target, seed)
    src_tok = [tokenize(s, source_level) for s in src_text]
    tgt_tok = [tokenize(s, target_level) for s in tgt_text]
    src_vocab, tgt_vocab = build_vocab(src_tok[:n_train]), build_vocab(tgt_tok[:n_train])
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, sum(counts))}
    fields = {}
    for split, (a, b) in bounds.items():
        fields[f"{split}_src"] = encode(src_tok[a:b], src_vocab)
        fields[f"{split}_tgt_in"] = encode(tgt_tok[a:b], tgt_vocab, bos=True)
        fields[f"{split}_tgt_out"] = encode(tgt_tok[a:b], tgt_vocab, eos=True)
        fields[f"{split}_refs"] = tuple(detokenize(t, target_level) for t in tgt_tok[a:b])
    data = TranslationData(**fields, src_vocab=src_vocab, tgt_vocab=tgt_vocab, source_level=source_level,
                           target_level=target_level, name=f"numbers-{source}-{target}", trim=trim)
    return data.to(device)


def sequence_loss(logits: torch.Tensor, tgt_out: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """Token cross-entropy with label smoothing (GNMT: 0.1), the mean over non-PAD target positions."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=PAD,
                           label_smoothing=label_smoothing)


# -- BLEU ---------------------------------------------------------------------------------------

def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], level: str = "char") -> float:
    """sacrebleu corpus BLEU (0–100) of detokenised strings: character n-grams (``tokenize="char"``)
    for character-level targets, the standard ``13a`` tokenizer for word-level ones."""
    import sacrebleu
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    tokenizer = "char" if level == "char" else "13a"
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenizer).score)


@torch.no_grad()
def translate(model, data: TranslationData, split: str, batch_size: int = 500) -> list[str]:
    """Greedy translations of ``split`` as detokenised strings (model put in eval mode and restored)."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for (src, _), _ in data.eval_batches(split, batch_size):
            out.extend(data.decode(model.greedy_decode(src, data.max_target_length)))
    finally:
        model.train(was_training)
    return out


def bleu(model, data: TranslationData, split: str, batch_size: int = 500) -> float:
    """Corpus BLEU (0–100) of the greedy translations of ``split`` ("val" or "test") against its
    references (paper: validation BLEU picks t, test BLEU is reported)."""
    return corpus_bleu(translate(model, data, split, batch_size), data.references(split), data.target_level)


# The metric these data define, in the one registry of metrics (stored in points, 0–100)
registry.register_builtin("metric", "bleu", lambda model, data, split, hardware: bleu(model, data, split),
                         label="BLEU", scale=1.0, range=(0.0, 100.0))
