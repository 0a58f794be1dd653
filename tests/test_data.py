import io
import pickle
import tarfile

import pytest
import torch

from rewindkit import data
from rewindkit.data import cifar10

from helpers import fabricate_cifar


def test_reads_fabricated_cifar_archive(tmp_path):
    path = fabricate_cifar(tmp_path / "cifar-10-python.tar.gz")
    ds = data.load_cifar10(path)
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert len(ds.val_y) == 4 and len(ds.test_y) == 16  # 20 / 80 split of the test batch
    # same result when pointing at the folder that holds the archive
    assert torch.equal(data.load_cifar10(tmp_path).train_x, ds.train_x)
    # the first image's first row matches the raw bytes (channel-major layout)
    with tarfile.open(path) as tar:
        raw = pickle.loads(tar.extractfile("cifar-10-batches-py/data_batch_1").read(), encoding="bytes")
    assert ds.train_x[0, 1, 0].tolist() == list(raw[b"data"][0][1024:1056])


def test_reads_extracted_folder(tmp_path):
    path = fabricate_cifar(tmp_path / "a.tar.gz")
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path, filter="data")
    ds = data.load_cifar10(tmp_path / "cifar-10-batches-py")
    assert ds.n_train == 100


def test_corrupt_archive_is_rejected_clearly(tmp_path):
    path = fabricate_cifar(tmp_path / "cifar-10-python.tar.gz")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="corrupt CIFAR-10 archive"):
        data.load_cifar10(path)


def test_archive_with_foreign_objects_is_rejected(tmp_path):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            payload = pickle.dumps({b"data": cifar10.Path("/etc")}, protocol=2) if name == "data_batch_1" else b"x"
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(ValueError, match="corrupt CIFAR-10 batch data_batch_1"):
        data.load_cifar10(path)


def test_missing_cifar_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("REWINDKIT_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz.*" + str(tmp_path).replace("/", ".")):
        data.load_cifar10()


def test_cifar_augmentation_is_per_image_and_deterministic(tmp_path):
    ds = data.load_cifar10(fabricate_cifar(tmp_path / "c.tar.gz"))
    s1, s2 = data.BatchStream(ds, 16, seed=5), data.BatchStream(ds, 16, seed=5)
    x1, y1 = s1.batch(3)
    x2, y2 = s2.batch(3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (16, 3, 32, 32)
    # per-image standardisation
    assert torch.allclose(x1.flatten(1).mean(1), torch.zeros(16), atol=1e-5)
    # the crop shifts by at most 4 pixels and pads with zeros
    gen = torch.Generator().manual_seed(0)
    img = torch.arange(1, 1 + 3 * 32 * 32, dtype=torch.float32).view(1, 3, 32, 32).repeat(64, 1, 1, 1)
    out = data.augment_crop_flip(img, gen)
    assert out.shape == img.shape
    assert not all(torch.equal(out[i], out[0]) for i in range(64))  # varies per image
    for i in range(64):
        vals = out[i][out[i] > 0]
        assert vals.numel() >= 3 * 28 * 28


def test_batch_order_depends_only_on_seed_and_step():
    ds = data.make_synthetic(n_train=100, n_test=20)
    a = data.BatchStream(ds, 10, seed=1)
    b = data.BatchStream(ds, 10, seed=1)
    seq_a = [a.batch(s)[1] for s in range(25)]
    seq_b = [b.batch(s)[1] for s in [24, 3, 17] ]
    assert torch.equal(seq_a[24], seq_b[0]) and torch.equal(seq_a[3], seq_b[1]) and torch.equal(seq_a[17], seq_b[2])
    epoch0 = torch.cat([a.batch(s)[1] for s in range(10)])
    assert sorted(epoch0.tolist()) == sorted(ds.train_y.tolist())  # one epoch = one permutation


def test_mnist1d_generated_offline_and_cached():
    ds = data.load("mnist1d")
    assert ds.train_x.shape == (4000, 1, 40) and len(ds.val_y) == 200 and len(ds.test_y) == 800
    again = data.load("mnist1d")
    assert torch.equal(ds.test_x, again.test_x)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="'svhn'.*mnist1d, cifar10, imagenet, synthetic"):
        data.load("svhn")


def test_download_verifies_the_checksum(tmp_path, monkeypatch):
    blob = fabricate_cifar(tmp_path / "fake.tar.gz").read_bytes()
    monkeypatch.setattr(cifar10.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(blob))
    with pytest.raises(ValueError, match="wrong MD5.*not saved"):
        data.load_cifar10(tmp_path / "dl", download=True)
    assert not (tmp_path / "dl" / "cifar-10-python.tar.gz").exists()


def test_offline_download_fails_with_instructions(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise OSError("Network is unreachable")
    monkeypatch.setattr(cifar10.urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match="Put the standard python archive.*download failed: Network"):
        data.load_cifar10(tmp_path, download=True)


def test_epoch_drawn_batches_are_the_per_iteration_batches(tmp_path):
    """The graph-safe data step (issue 13 §2): an epoch's indices, crops and flips drawn at its
    start and gathered by a device-tensor position give exactly the batch that iteration s's own
    generator gives — so a captured data step sees the same batches as the eager one."""
    from rewindkit.core.batches import BatchOrder
    from rewindkit.core.seeds import derive_seed
    ds = data.load_cifar10(fabricate_cifar(tmp_path / "c.tar.gz"))
    stream = data.BatchStream(ds, 16, seed=7)
    order = BatchOrder(ds.n_train, 16, 7)
    spe = stream.steps_per_epoch
    for step in (0, 1, spe - 1, spe, 2 * spe + 3, 1):  # across epochs, and back
        idx = order.indices(step)
        gen = torch.Generator().manual_seed(derive_seed(7, "augment", step))
        want_x = ds.prepare(data.augment_crop_flip(ds.train_x[idx], gen))
        x, y = stream.batch(step)
        assert torch.equal(x, want_x) and torch.equal(y, ds.train_y[idx]), step
        position = torch.tensor(step % spe)  # what a captured graph reads
        gx, gy = stream.gather(position)
        assert torch.equal(gx, x) and torch.equal(gy, y)
    # a new epoch is drawn into the same tensors (a captured graph keeps reading them)
    storage = stream.indices.data_ptr(), stream.crops.data_ptr()
    stream.load_epoch(5)
    assert (stream.indices.data_ptr(), stream.crops.data_ptr()) == storage and stream.epoch == 5
