"""Test helpers: data in real formats fabricated locally, and single-threaded execution."""
import contextlib
import io
import pickle
import tarfile

import numpy as np
import torch


def fabricate_cifar(path, per_batch=20, seed=0):
    """A small archive in the real CIFAR-10 python format (pickled dicts of bytes keys)."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            payload = pickle.dumps({b"batch_label": name.encode(),
                                    b"labels": rng.integers(0, 10, per_batch).tolist(),
                                    b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                                    b"filenames": [b"x.png"] * per_batch}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def trained_like(name, seed=0, **options):
    """A kit network whose BatchNorms hold non-trivial statistics and affine parameters (a fresh one
    has γ = 1, β = 0, mean 0, var 1, which would hide a wrongly removed BatchNorm entry), in eval mode."""
    from rewindkit.models import vision_network
    torch.manual_seed(seed)
    model = vision_network(name, **options)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
            module.bias.data.normal_()
    return model.eval()


@contextlib.contextmanager
def one_thread():
    """Run with one CPU thread, as worker processes, Ray tasks and torchrun ranks do here, so results
    can be compared bit for bit (the thread count changes float rounding)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fabricate_imagefolder(root, classes=3, train_per_class=8, val_per_class=10, size=(40, 52), seed=0):
    """A tiny ImageNet in the ImageFolder layout: JPEG files under train/<wnid>/ and val/<wnid>/, with
    odd sizes (so crops and resizes do real work) and one greyscale image (decoded to RGB)."""
    from pathlib import Path

    from PIL import Image
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = size[0] + 3 * i, size[1] - 2 * i
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                pixels[..., c % 3] = 230  # a learnable colour cue per class
                image = Image.fromarray(pixels)
                if split == "train" and c == 0 and i == 0:
                    image = image.convert("L")
                image.save(folder / f"img_{i:04d}.JPEG", quality=90)
    return root


def train_in_segments(build, ds, recipe, initial, mask, segments, hardware=None, seed=3):
    """Train from ``initial`` through ``segments`` [(a, b), …], with fresh model and optimizer
    objects for each segment as after a crash; return the final TrainState."""
    from rewindkit import techniques
    from rewindkit.platform.hardware import Hardware
    from rewindkit.training import make_optimizer, snapshot, train_steps
    hardware = hardware or Hardware()
    sched = recipe.schedule(ds.n_train)
    state = snapshot(initial, make_optimizer(initial, recipe), 0)
    for a, b in segments:
        model = build().to(hardware.device)
        optimizer = make_optimizer(model, recipe, hardware)
        techniques.load_state(model, optimizer, state)
        train_steps(model, optimizer, ds, sched, a, b, seed=seed, batch_size=recipe.batch_size, mask=mask,
                    hardware=hardware, progress=False)
        state = snapshot(model, optimizer, b)
    return state


# -- comparing two kernel paths ------------------------------------------------------------------
# Two kernel paths (batched vs sequential, DDP vs one process, CUDA graph vs eager, GPU vs CPU)
# compute the same training run with the same operations but different summation orders. How far
# apart may they end up?
#
# * A sum of n terms evaluated in any order has forward error at most γ_n·Σ|terms|, with
#   γ_n = n·u/(1 − n·u) ≈ n·u and u the unit roundoff (2^-24 for float32); Higham, "Accuracy and
#   Stability of Numerical Algorithms" (2002), §3.1, eq. (3.5). Σ|terms| is the scale, not |sum|.
# * The longest reduction of one SGD step is a weight gradient: a sum over batch × positions
#   (the BatchNorm statistics sum over the same n); convolutions over in_channels × kernel sum less.
# * Over `steps` steps the per-step discrepancies add (to first order; training also *amplifies*
#   them, which is why every comparison below runs few steps at a modest LR).
#
# So tol = steps · n · u is a relative bound. The scale it multiplies is the tensor's own norm plus
# the RMS entry of all tensors of that state × sqrt(numel): the entries of a momentum buffer late in
# training cancel, so its norm can be far below the gradients that filled it, and the rounding of
# those gradients is what it carries (a buffer of norm 1.1e-3 differing by 2.5e-7 failed a
# relative 1e-4 on AMD EPYC while the whole state agreed to 1e-6).

UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def kernel_path_tolerance(steps: int, reduction: int, dtype=torch.float32) -> float:
    """Relative tolerance steps · n · u between two kernel paths (derivation above)."""
    return steps * reduction * UNIT_ROUNDOFF[dtype]


def assert_close_across_kernels(got: dict, want: dict, tol: float, what: str = "") -> float:
    """Every floating tensor within ``tol`` · (‖want‖ + rms · sqrt(numel)), rms over all floating
    entries of ``want``; other tensors equal. Returns the largest ratio error / allowed."""
    assert got.keys() == want.keys(), what
    floats = [w.detach().double().flatten() for w in want.values() if w.dtype.is_floating_point]
    rms = torch.cat(floats).pow(2).mean().sqrt().item() if floats else 0.0
    worst = 0.0
    for k, w in want.items():
        g = got[k]
        if not w.dtype.is_floating_point:
            assert torch.equal(g, w), (what, k)
            continue
        err = (g.double() - w.double()).norm().item()
        allowed = tol * (w.double().norm().item() + rms * w.numel() ** 0.5)
        assert err <= allowed, f"{what} {k}: |difference| {err:.3g} > allowed {allowed:.3g} (tol {tol:.3g})"
        worst = max(worst, err / allowed if allowed else 0.0)
    return worst


def momentum_buffers(optimizer_state: dict) -> dict:
    """{parameter index: momentum buffer} of an SGD state_dict."""
    return {i: st["momentum_buffer"] for i, st in optimizer_state["state"].items()}
