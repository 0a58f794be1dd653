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
    from rewindkit import techniques as T
    from rewindkit.training import Hardware, make_optimizer, snapshot, train_steps
    hardware = hardware or Hardware()
    sched = recipe.schedule(ds.n_train)
    state = snapshot(initial, make_optimizer(initial, recipe), 0)
    for a, b in segments:
        model = build().to(hardware.device)
        optimizer = make_optimizer(model, recipe, hardware)
        T.load_state(model, optimizer, state)
        train_steps(model, optimizer, ds, sched, a, b, seed=seed, batch_size=recipe.batch_size, mask=mask,
                    hardware=hardware, progress=False)
        state = snapshot(model, optimizer, b)
    return state


def assert_weights_close(got: dict, want: dict, rtol=1e-5, atol=1e-6):
    """Every floating tensor of two state dicts within ``rtol``/``atol``; every other tensor equal."""
    assert got.keys() == want.keys()
    for k, w in want.items():
        g = got[k]
        if w.dtype.is_floating_point:
            assert torch.allclose(g, w, rtol=rtol, atol=atol), (k, (g - w).abs().max())
        else:
            assert torch.equal(g, w), k
