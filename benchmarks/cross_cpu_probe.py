"""Which CPU kernel gives other bits on another CPU? A fingerprint of every kernel family the kit's
networks train with, on fixed inputs, under the kit's portable numerics
(:mod:`rewindkit.platform.numerics`), and of short training runs of the laptop and translation
networks after a few steps.

On 2026-12-05 ``make reproduce`` on an Intel Xeon regenerated every figure of the laptop notebooks
byte for byte, and notebook 11's translation figures with other numbers (docs/reproducibility.md).
Running this probe on each kind of CPU and comparing the outputs names the kernels that differ:

    python benchmarks/cross_cpu_probe.py > mine.txt
    python benchmarks/cross_cpu_probe.py --compare benchmarks/cross_cpu/amd-epyc-2026-12-06.txt

(The Intel file, ``intel-xeon-2026-12-05.txt``, was made while the kit's Adam took the foreach update:
its ``train_translation_step_*`` lines differ from today's kit on every CPU.)

Kernels that differed (2026-12-06, an AMD EPYC against the Intel file): ``torch.sqrt``, which is MKL's
vector square root, not correctly rounded and rounded differently on the two CPUs, and with it Adam's
foreach update and the translation network's training steps. The kit's Adam now takes the fused update
(``adam_fused_3_steps``), whose square root is the processor's own.

Each line is ``name hash``: the first 16 hex digits of the SHA-256 of the output's bytes. Lines that
start with ``#`` describe the machine and are not compared.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import rewindkit  # noqa: F401  (first: it pins the portable kernels before torch runs an op)
import torch
import torch.nn.functional as F
from torch import nn

from rewindkit.platform.numerics import cpu_numerics


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if isinstance(t, dict):
            for k in sorted(t):
                h.update(k.encode())
                h.update(digest(t[k]).encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def kernels() -> dict[str, str]:
    """Each kernel family on fixed inputs (odd shapes, as training meets them)."""
    out = {}
    g = gen(0)
    for m, k, n in ((64, 96, 80), (33, 129, 17), (256, 512, 128), (1, 1024, 512)):
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        out[f"mm_{m}x{k}x{n}"] = digest(a @ b)
        out[f"mm_t_{m}x{k}x{n}"] = digest(b.t() @ a.t())
    a, v = torch.randn(96, 333, generator=g), torch.randn(333, generator=g)
    out["mv"] = digest(a @ v)
    for bsz, m, k, n in ((8, 33, 40, 29), (32, 1, 128, 17), (32, 17, 128, 1), (64, 24, 128, 24)):
        A, B = torch.randn(bsz, m, k, generator=g), torch.randn(bsz, k, n, generator=g)
        out[f"bmm_{bsz}x{m}x{k}x{n}"] = digest(torch.bmm(A, B))
    x = torch.randn(1 << 16, generator=g) * 3
    # the kit's networks use the first ten; the rest (added 2026-12-06) are what a plug-in network may call
    for name in ("exp", "log", "tanh", "sqrt", "erf", "sigmoid", "rsqrt", "log1p", "expm1", "reciprocal",
                 "sin", "cos", "tan", "atan", "sinh", "cosh", "log2", "log10", "erfc", "lgamma", "asin", "acos",
                 "erfinv"):
        arg = x.abs() + 1e-3 if name in ("log", "sqrt", "rsqrt", "reciprocal", "log2", "log10", "lgamma") else x
        arg = torch.tanh(x) * 0.99 if name in ("asin", "acos", "erfinv") else arg
        out[f"unary_{name}"] = digest(getattr(torch, name)(arg))
        out[f"unary_{name}_strided"] = digest(getattr(torch, name)(arg[::3]))
    # layers a plug-in network may use (added 2026-12-06; these draw from their own generator, so the
    # inputs of every line below stay those of the earlier outputs)
    h = torch.Generator().manual_seed(7)
    z = torch.randn(64, 10, 48, generator=h)
    out["layer_norm"] = digest(F.layer_norm(z, (48,)))
    out["group_norm"] = digest(F.group_norm(z.transpose(1, 2), 4))
    out["normalize"] = digest(F.normalize(z, dim=-1))
    for name in ("gelu", "silu", "softplus", "mish", "elu"):
        out[f"act_{name}"] = digest(getattr(F, name)(z))
    q, k, v = (torch.randn(8, 4, 10, 12, generator=h) for _ in range(3))
    out["scaled_dot_product_attention"] = digest(F.scaled_dot_product_attention(q, k, v))
    logits = torch.randn(512, 97, generator=g)
    out["log_softmax"] = digest(F.log_softmax(logits, -1))
    out["softmax"] = digest(F.softmax(logits, -1))
    out["sum_mean_var"] = digest(x.sum(), x.mean(), x.var(), logits.sum(0), logits.norm())
    target = torch.randint(0, 97, (512,), generator=g)
    lg = logits.clone().requires_grad_()
    loss = F.cross_entropy(lg, target, label_smoothing=0.1)
    loss.backward()
    out["cross_entropy_smoothed"] = digest(loss, lg.grad)
    # conv (im2col + GEMM) and BatchNorm, forward and backward
    torch.manual_seed(1)
    conv, bn = nn.Conv1d(8, 16, 3, padding=1), nn.BatchNorm1d(16)
    xc = torch.randn(32, 8, 40, generator=g).requires_grad_()
    y = bn(conv(xc)).relu().sum()
    y.backward()
    out["conv1d_bn"] = digest(y, xc.grad, conv.weight.grad, bn.weight.grad)
    conv2 = nn.Conv2d(3, 16, 3, padding=1)
    x2 = torch.randn(8, 3, 16, 16, generator=g)
    out["conv2d"] = digest(conv2(x2))
    # LSTM forward and backward, the translation network's sizes
    torch.manual_seed(2)
    lstm = nn.LSTM(64, 128, num_layers=2, batch_first=True)
    xs = torch.randn(16, 11, 64, generator=g).requires_grad_()
    ys, _ = lstm(xs)
    ys.square().sum().backward()
    out["lstm"] = digest(ys, xs.grad, *[p.grad for p in lstm.parameters()])
    cell = nn.LSTMCell(64, 128)
    h = cell(xs[:, 0])
    out["lstm_cell"] = digest(*h)
    # embedding with repeated indices (its backward accumulates)
    emb = nn.Embedding(50, 64, padding_idx=0)
    idx = torch.randint(0, 50, (16, 23), generator=g)
    e = emb(idx)
    e.square().sum().backward()
    out["embedding"] = digest(e, emb.weight.grad)
    # selection among ties (masks): topk and sort indices
    ties = torch.randint(0, 50, (10_000,), generator=g).float()
    out["topk_ties"] = digest(torch.topk(ties, 3_000, sorted=False).indices.sort().values)
    out["sort_ties"] = digest(torch.sort(ties).indices)
    # optimizer steps and gradient clipping (foreach)
    params = [torch.randn(s, generator=g).requires_grad_() for s in ((128, 64), (128,), (97, 128))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    nn.utils.clip_grad_norm_(params, 0.5, foreach=True)
    out["clip_grad_norm"] = digest(*[p.grad for p in params])
    adam = torch.optim.Adam(params, lr=1e-3, foreach=True)
    sgd_params = [p.detach().clone().requires_grad_() for p in params]
    for p, q in zip(sgd_params, params):
        p.grad = q.grad.clone()
    for _ in range(3):
        adam.step()
    out["adam_3_steps"] = digest(*params, *[adam.state[p]["exp_avg_sq"] for p in params])
    fused_params = [p.detach().clone().requires_grad_() for p in params]
    for p, q in zip(fused_params, params):
        p.grad = q.grad.clone()
    fused = torch.optim.Adam(fused_params, lr=1e-3, fused=True)  # the kit's Adam (core/optimizers.py)
    for _ in range(3):
        fused.step()
    out["adam_fused_3_steps"] = digest(*fused_params, *[fused.state[p]["exp_avg_sq"] for p in fused_params])
    sgd = torch.optim.SGD(sgd_params, lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True)
    for _ in range(3):
        sgd.step()
    out["sgd_3_steps"] = digest(*sgd_params)
    return out


def training(profile_name: str, steps: tuple[int, ...]) -> dict[str, str]:
    """A profile's network trained from its seed-1 initialisation: the weights after each of ``steps``."""
    from rewindkit.core.training import fresh_start, train_steps
    from rewindkit.engine.profiles import get_profile
    from rewindkit.engine.runner import load_dataset, model_builder
    from rewindkit.engine.runs import setup_from_profile
    from rewindkit.platform.hardware import Hardware
    from rewindkit.recipe import Recipe

    setup = setup_from_profile(get_profile(profile_name))
    ds = load_dataset(setup, "cpu")
    recipe = Recipe(**setup["recipe"])
    schedule = recipe.schedule(ds.n_train)
    model, optimizer = fresh_start(model_builder(setup, ds), recipe, 1, Hardware())
    out, done = {}, 0
    for stop in steps:
        train_steps(model, optimizer, ds, schedule, done, stop, seed=1, batch_size=recipe.batch_size, recipe=recipe,
                    progress=False, evaluate_every_epoch=False, evaluate_at_end=False)
        out[f"train_{profile_name}_step_{stop}"] = digest(model.state_dict())
        done = stop
    return out


def probe() -> dict[str, str]:
    torch.set_num_threads(1)  # as every run trains (hardware.RUN_THREADS)
    out = kernels()
    out.update(training("laptop", (1, 10, 50)))
    out.update(training("translation", (1, 10, 50)))
    return out


def read(path: Path) -> dict[str, str]:
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {name: value for name, value in pairs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, help="an earlier output: print the lines that differ")
    args = parser.parse_args(argv)
    result = probe()
    if args.compare is None:
        for key, value in cpu_numerics().items():
            print(f"# {key}: {value}")
        print(f"# torch: {torch.__version__}")
        from rewindkit.core.optimizers import ADAM_UPDATE
        print(f"# kit's Adam update: {ADAM_UPDATE}")
        for name, value in result.items():
            print(f"{name} {value}")
        return 0
    theirs = read(args.compare)
    both = [n for n in result if n in theirs]
    if not both:
        print(f"{args.compare} has none of this probe's lines: nothing compared")
        return 2
    differ = [n for n in both if theirs[n] != result[n]]
    print(f"{len(differ)} of the {len(both)} lines in both differ from {args.compare}: {', '.join(differ) or 'none'}")
    only_here = [n for n in result if n not in theirs]
    if only_here:  # lines added to the probe after that file was made
        print(f"not in {args.compare}, so not compared: {', '.join(only_here)}")
    only_there = [n for n in theirs if n not in result]
    if only_there:
        print(f"only in {args.compare}: {', '.join(only_there)}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
