"""A small GNMT-style encoder–decoder with attention (paper §2: GNMT on WMT16 EN→DE).

The paper's GNMT (MLPerf ``gnmt_v2``) has a 4-layer encoder (1 bidirectional + 3 unidirectional,
residual connections from the third layer), a 4-layer decoder whose *bottom* layer's output
queries normed-Bahdanau attention and whose upper layers take ``[output below; context]``, 1024-unit
LSTMs, uniform init ±0.1, label smoothing 0.1. :class:`Seq2Seq` is the same design at laptop scale:

* source and target embeddings (not shared);
* one bidirectional LSTM encoder layer (``hidden // 2`` units per direction, so its output has
  ``hidden`` features), plus ``encoder_layers − 1`` unidirectional layers, residual from the third;
* a decoder LSTM whose output at step i queries the attention over the encoder outputs (PAD
  positions masked), plus ``decoder_layers − 1`` layers taking ``[output below; context]``,
  residual from the third. The bottom decoder layer starts from the encoder's final forward and
  backward states (concatenated); upper layers start from zero;
* attention ``"bahdanau"`` (normed Bahdanau as GNMT: ``g · v/‖v‖ · tanh(W_k k + W_q q + b)``) or
  ``"dot"`` (Luong's multiplicative ``q W kᵀ``, cheaper);
* an output projection of ``[top decoder output; context]`` to target logits.

Because the attention query comes from the bottom decoder layer (no input feeding), teacher-forced
training runs every LSTM over the whole sequence at once. Every parameter is a plain tensor of the
module (no hooks), so ``state_dict`` round trips and ``torch.func.functional_call`` work, and all of
them are prunable (:func:`prunable_parameter_names`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data.translation import BOS, EOS, PAD, sequence_loss  # noqa: F401  (sequence_loss: importable from here)

ATTENTIONS = ("bahdanau", "dot")


class Attention(nn.Module):
    """Attention of decoder queries [B, L, H] over encoder keys [B, S, H] with a source mask [B, S]."""

    def __init__(self, hidden: int, kind: str = "bahdanau"):
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"unknown attention {kind!r}; choose one of {ATTENTIONS}")
        self.kind = kind
        if kind == "bahdanau":
            self.key = nn.Linear(hidden, hidden, bias=False)
            self.query = nn.Linear(hidden, hidden, bias=True)  # its bias is the b of tanh(W_k k + W_q q + b)
            self.v = nn.Parameter(torch.empty(hidden))
            self.g = nn.Parameter(torch.empty(()))  # the norm's scale
        else:
            self.query = nn.Linear(hidden, hidden, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """Precomputed per-source-position part of the score (reused at every decoding step)."""
        return self.key(memory) if self.kind == "bahdanau" else memory

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "bahdanau":
            # a fully pruned v has norm 0: then every score is 0 (uniform attention), not 0/0
            v = self.g * self.v / self.v.norm().clamp_min(1e-12)
            hidden = torch.tanh(self.query(query).unsqueeze(2) + keys.unsqueeze(1))  # [B, L, S, H]
            scores = hidden @ v
        else:
            scores = self.query(query) @ keys.transpose(1, 2)  # [B, L, S]
        scores = scores.masked_fill(~src_mask.unsqueeze(1), float("-inf"))
        return torch.softmax(scores, dim=-1) @ memory  # context [B, L, H]


class Seq2Seq(nn.Module):
    """GNMT-style LSTM encoder–decoder with attention (see the module docstring).

    ``forward(src, tgt_in)`` → logits [B, L, tgt_vocab] with teacher forcing (``forward((src,
    tgt_in))`` works too, for engines that pass a batch's input as one object);
    :meth:`greedy_decode` translates.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, embed: int = 64, hidden: int = 128,
                 encoder_layers: int = 1, decoder_layers: int = 1, attention: str = "bahdanau",
                 init_scale: float = 0.1):
        super().__init__()
        for name, value in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab), ("embed", embed), ("hidden", hidden),
                            ("encoder_layers", encoder_layers), ("decoder_layers", decoder_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number ≥ 1; got {value!r}")
        if hidden % 2:
            raise ValueError(f"hidden must be even (the bidirectional layer has hidden // 2 units per direction); got {hidden}")
        self.config = dict(src_vocab=src_vocab, tgt_vocab=tgt_vocab, embed=embed, hidden=hidden,
                           encoder_layers=encoder_layers, decoder_layers=decoder_layers, attention=attention,
                           init_scale=init_scale)
        self.src_embed = nn.Embedding(src_vocab, embed)
        self.tgt_embed = nn.Embedding(tgt_vocab, embed)
        self.encoder = nn.LSTM(embed, hidden // 2, batch_first=True, bidirectional=True)
        self.encoder_upper = nn.ModuleList(nn.LSTM(hidden, hidden, batch_first=True) for _ in range(encoder_layers - 1))
        self.decoder = nn.LSTM(embed, hidden, batch_first=True)
        self.decoder_upper = nn.ModuleList(nn.LSTM(2 * hidden, hidden, batch_first=True) for _ in range(decoder_layers - 1))
        self.attention = Attention(hidden, attention)
        self.output = nn.Linear(2 * hidden, tgt_vocab)
        with torch.no_grad():
            for p in self.parameters():  # GNMT: every variable uniform in ±0.1
                nn.init.uniform_(p, -init_scale, init_scale)
            if attention == "bahdanau":  # TF's normed Bahdanau starts g at sqrt(1 / units)
                self.attention.g.fill_((1.0 / hidden) ** 0.5)

    # -- encoder ------------------------------------------------------------------------------
    def encode(self, src: torch.Tensor):
        """Encoder outputs [B, S, H], source mask [B, S], and the bottom decoder's initial (h, c)."""
        mask = src != PAD
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(self.src_embed(src), lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        for i, lstm in enumerate(self.encoder_upper):  # right padding: valid positions are unaffected
            y, _ = lstm(out)
            out = y + out if i >= 1 else y  # residual from the third layer, as GNMT
        # final forward and backward states, concatenated: [2, B, H/2] → [1, B, H]
        state = tuple(s.transpose(0, 1).reshape(1, s.shape[1], -1) for s in (h, c))
        return out, mask, state

    # -- decoder ------------------------------------------------------------------------------
    def _decode(self, tgt_in, memory, keys, mask, states):
        x, states0 = self.decoder(self.tgt_embed(tgt_in), states[0])
        context = self.attention(x, keys, memory, mask)
        new_states = [states0]
        for i, lstm in enumerate(self.decoder_upper):
            y, s = lstm(torch.cat([x, context], -1), states[i + 1])
            x = y + x if i >= 1 else y
            new_states.append(s)
        return self.output(torch.cat([x, context], -1)), new_states

    def _initial_states(self, state, batch: int, device):
        hidden = self.config["hidden"]
        zero = torch.zeros(1, batch, hidden, device=device)
        return [state] + [(zero, zero) for _ in self.decoder_upper]

    def forward(self, src, tgt_in: torch.Tensor | None = None) -> torch.Tensor:
        if tgt_in is None:
            src, tgt_in = src
        memory, mask, state = self.encode(src)
        logits, _ = self._decode(tgt_in, memory, self.attention.keys(memory), mask,
                                 self._initial_states(state, src.shape[0], src.device))
        return logits

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, max_len: int) -> torch.Tensor:
        """Greedy translations [B, ≤ max_len]: each row is its tokens, then EOS, then PAD; decoding
        stops once every row has emitted EOS (rows that never do are cut at ``max_len``)."""
        memory, mask, state = self.encode(src)
        keys = self.attention.keys(memory)
        states = self._initial_states(state, src.shape[0], src.device)
        token = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        out = []
        for _ in range(max_len):
            logits, states = self._decode(token, memory, keys, mask, states)
            token = logits[:, -1].argmax(-1, keepdim=True)
            token = token.masked_fill(done.unsqueeze(1), PAD)
            out.append(token)
            done |= token.squeeze(1) == EOS
            if bool(done.all()):
                break
        return torch.cat(out, 1) if out else torch.zeros((src.shape[0], 0), dtype=torch.long, device=src.device)


def prunable_parameter_names(model: nn.Module) -> list[str]:
    """The parameters global magnitude pruning may remove: as the GNMT runs (paper §3.1), every
    weight — embeddings, LSTM kernels *and* biases (PyTorch's ``bias_ih`` and ``bias_hh``; TF has
    one bias per LSTM), the attention's kernels, bias and v vector, the output projection's kernel
    and bias. The one exclusion is the normed-Bahdanau scalar gain ``attention.g``: a single number
    that scales every attention score (a normalisation parameter, like the BatchNorm γ the vision
    runs never prune); pruning it would switch attention off entirely."""
    return [name for name, _ in model.named_parameters() if not name.endswith("attention.g")]
