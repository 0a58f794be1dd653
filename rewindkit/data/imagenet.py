"""ImageNet from a folder the user points to, streamed, decoded and augmented as the paper (§2).

Layout (torchvision ``ImageFolder``): ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*.JPEG``
with the same class folders. The root is ``path=...``, else ``$REWINDKIT_IMAGENET``, else
``<data_dir>/imagenet``. The 50,000 validation images are split once, independently of any run
seed, into **9,984 validation** images (used to choose t) and the rest as **test** images, as the
authors did (paper §2; smaller folders keep the same proportion).

* Training: Inception-style random-resized crop (area 8–100%, aspect 3/4–4/3) to 224×224 and a
  random horizontal flip, per image.
* Evaluation: resize the short side to 256, center crop 224×224.
* Normalisation with the ImageNet channel means and standard deviations, on the training device.

As everywhere in rewindkit, the batch of iteration s is a function of (seed, s) only — the order
from a per-epoch permutation, each image's crop and flip from a generator seeded with (seed, s,
position) — so a resumed run, a run with any number of loader workers, and a torchrun run (each
rank decodes only its slice of the global batch) all see the same images.

Decoding runs with PIL in ``workers`` loader processes (``decode="cpu"``, default; JPEGs are decoded
at a reduced DCT scale when the crop allows it) or with nvJPEG on the GPU (``decode="cuda"``: the
workers only read the files; JPEG only; needs torchvision, ``pip install "rewindkit[vision]"``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..platform import distributed
from ..core.batches import BatchOrder, split_validation
from ..core.seeds import derive_seed
from ..platform.storage import data_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VALIDATION_FRACTION = 9_984 / 50_000  # the authors' validation share of the ILSVRC validation set
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
DECODERS = ("cpu", "cuda")

TRAIN_IMAGES = 1_281_167  # ILSVRC-2012's training set: the images of one ImageNet epoch


def _torchvision():
    try:
        import torchvision.io as io
        import torchvision.transforms.v2.functional as TF
    except Exception as exc:  # the CUDA wheel raises RuntimeError next to a CPU-only torch
        raise RuntimeError("decoding ImageNet images needs torchvision that matches your torch: "
                          f"pip install 'rewindkit[vision]' ({type(exc).__name__}: {exc})") from exc
    return io, TF


def imagenet_root(path: str | os.PathLike | None = None) -> Path:
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get("REWINDKIT_IMAGENET"):
        return Path(os.environ["REWINDKIT_IMAGENET"]).expanduser()
    return data_dir() / "imagenet"


def _scan(split_dir: Path, classes: list[str] | None = None):
    if not split_dir.is_dir():
        raise FileNotFoundError(split_dir)
    found = sorted(d.name for d in os.scandir(split_dir) if d.is_dir())
    classes = classes or found
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        names = sorted(e.name for e in os.scandir(folder) if e.name.lower().endswith(IMAGE_EXTENSIONS))
        files += [str(folder / n) for n in names]
        labels += [label] * len(names)
    return classes, files, labels


def random_resized_crop_box(height: int, width: int, generator: torch.Generator, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style crop: area fraction uniform in ``scale``, log-aspect
    uniform in ``ratio``, ten tries, then the largest central crop within the ratio range."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(4, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _to_rgb(image: torch.Tensor) -> torch.Tensor:
    if image.shape[0] == 1:
        return image.expand(3, -1, -1)
    return image[:3]


def read_bytes(path: str) -> torch.Tensor:
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)


def _pil_to_tensor(image) -> torch.Tensor:
    import numpy as np
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def train_image_cpu(path: str, seed: int, size: int) -> torch.Tensor:
    """Decode, random-resized crop to ``size``×``size`` and flip one training image with PIL, drawing
    the crop and flip from ``seed`` exactly as :func:`augment_train_image` does.

    Speed without changing the augmentation's distribution: the crop box is drawn from the file's
    header size before decoding; a JPEG is then decoded at the largest DCT reduction (½, ¼, ⅛) that
    still leaves the crop at least ``size`` pixels on its short side, and PIL crops and resizes
    (antialiased bilinear) in one pass. Pixel values differ from decoding at full size by the
    smoothing of that antialiased downscale only.
    """
    from PIL import Image
    gen = torch.Generator().manual_seed(seed)
    with Image.open(path) as image:
        width, height = image.size
        top, left, h, w = random_resized_crop_box(height, width, gen)
        reduce = 1
        while reduce < 8 and min(h, w) >= 2 * reduce * size:
            reduce *= 2
        if reduce > 1 and image.format == "JPEG":
            image.draft("RGB", (-(-width // reduce), -(-height // reduce)))
        sx, sy = image.size[0] / width, image.size[1] / height
        image = image.convert("RGB").resize((size, size), Image.BILINEAR,
                                            box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy))
        flip = bool(torch.rand((), generator=gen) < 0.5)
    tensor = _pil_to_tensor(image)
    return tensor.flip(-1) if flip else tensor


def eval_image_cpu(path: str, resize: int, size: int) -> torch.Tensor:
    """Resize the short side to ``resize`` and center-crop ``size``×``size`` (paper §2), with PIL;
    JPEGs are decoded at the largest DCT reduction that keeps the short side ≥ ``resize``."""
    from PIL import Image
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (resize, resize))
        image = image.convert("RGB")
        width, height = image.size
        scale = resize / min(width, height)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        left, top = (new_w - size) // 2, (new_h - size) // 2
        image = image.resize((new_w, new_h), Image.BILINEAR).crop((left, top, left + size, top + size))
    return _pil_to_tensor(image)


class _Batches(torch.utils.data.Dataset):
    """Item s = this rank's part of the training batch of iteration s (decoded, or raw bytes)."""

    def __init__(self, data: ImageFolderData, batch_size: int, seed: int, decode_here: bool):
        self.data, self.batch_size, self.seed, self.decode_here = data, batch_size, seed, decode_here
        self.order = BatchOrder(data.n_train, batch_size, seed)  # one permutation per epoch, cached per worker
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if batch_size % self.world:
            raise ValueError(f"the global batch {batch_size} must divide evenly over {self.world} processes")

    def positions(self, step: int) -> list[tuple[int, int]]:
        """(image index, position in the global batch) for this rank's slice of iteration ``step``."""
        indices = self.order.indices(step)
        per_rank = self.batch_size // self.world
        first = self.rank * per_rank
        return [(int(indices[pos]), pos) for pos in range(first, first + per_rank)]

    def __getitem__(self, step: int):
        images, seeds, labels = [], [], []
        for index, pos in self.positions(step):
            path = self.data.train_files[index]
            seed = derive_seed(self.seed, "augment", step, pos)
            labels.append(self.data.train_labels[index])
            if self.decode_here:
                images.append(train_image_cpu(path, seed, self.data.image_size))
            else:
                images.append(read_bytes(path))
                seeds.append(seed)
        y = torch.tensor(labels, dtype=torch.long)
        if self.decode_here:
            return torch.stack(images), y
        return images, seeds, y


def augment_train_image(image: torch.Tensor, seed: int, size: int, TF=None) -> torch.Tensor:
    """Random-resized crop to ``size``×``size`` and a random horizontal flip, drawn from ``seed``
    (CPU or GPU image, same draws either way)."""
    if TF is None:
        _, TF = _torchvision()
    gen = torch.Generator().manual_seed(seed)
    top, left, h, w = random_resized_crop_box(image.shape[1], image.shape[2], gen)
    image = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    return image.flip(-1) if torch.rand((), generator=gen) < 0.5 else image


class _EvalImages(torch.utils.data.Dataset):
    def __init__(self, files, labels, image_size, resize):
        self.files, self.labels, self.image_size, self.resize = files, labels, image_size, resize

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return eval_image_cpu(self.files[i], self.resize, self.image_size), self.labels[i]


@dataclass(frozen=True)
class ImageFolderData:
    """An ImageFolder-layout dataset streamed from disk; duck-types :class:`rewindkit.data.Dataset`
    for the training loop (``batches``, ``eval_batches``, ``n_train``, ``input_shape``…)."""

    name: str
    root: Path
    classes: tuple[str, ...]
    train_files: tuple[str, ...]
    train_labels: tuple[int, ...]
    val_files: tuple[str, ...]
    val_labels: tuple[int, ...]
    test_files: tuple[str, ...]
    test_labels: tuple[int, ...]
    image_size: int = 224
    resize: int = 256
    workers: int = 8
    decode: str = "cpu"
    device_name: str = "cpu"

    def __post_init__(self):
        if self.decode not in DECODERS:
            raise ValueError(f"unknown decode {self.decode!r}; choose one of {', '.join(DECODERS)}")
        if self.workers < 0:
            raise ValueError(f"workers must be ≥ 0; got {self.workers}")

    @property
    def n_train(self) -> int:
        return len(self.train_files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    @property
    def device(self) -> torch.device:
        return torch.device(self.device_name)

    def to(self, device) -> ImageFolderData:
        return replace(self, device_name=str(torch.device(device)))

    def subset(self, n_train: int | None = None, n_eval: int | None = None) -> ImageFolderData:
        """A fixed random ``n_train`` training images and the first ``n_eval`` validation/test images."""
        if n_train is not None and not 0 < n_train <= self.n_train:
            raise ValueError(f"n_train must be in 1..{self.n_train}; got {n_train}")
        pick = sorted(torch.randperm(self.n_train, generator=torch.Generator().manual_seed(0))[:n_train].tolist()) \
            if n_train is not None else range(self.n_train)
        e = slice(None, n_eval)
        return replace(self, train_files=tuple(self.train_files[i] for i in pick),
                       train_labels=tuple(self.train_labels[i] for i in pick),
                       val_files=self.val_files[e], val_labels=self.val_labels[e],
                       test_files=self.test_files[e], test_labels=self.test_labels[e])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255
        return (x.float() - mean) / std

    def _loader(self, dataset, **options):
        workers = self.workers
        return torch.utils.data.DataLoader(dataset, num_workers=workers, pin_memory=self.device.type == "cuda",
                                           prefetch_factor=4 if workers else None,
                                           persistent_workers=False, **options)

    def batches(self, batch_size: int, seed: int, start: int, stop: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's slice of the training batches of iterations ``start`` … ``stop − 1``, on the device."""
        gpu_decode = self.decode == "cuda"
        if gpu_decode and self.device.type != "cuda":
            raise ValueError(f"decode='cuda' needs a CUDA training device; this dataset is on {self.device}")
        source = _Batches(self, batch_size, seed, decode_here=not gpu_decode)
        loader = self._loader(source, batch_size=None, sampler=range(start, stop))
        for item in loader:
            if gpu_decode:
                raw, seeds, y = item
                x = self._decode_on_gpu(raw, seeds)
            else:
                x, y = item
            yield self.normalize(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)

    def _decode_on_gpu(self, raw, seeds) -> torch.Tensor:
        """nvJPEG decoding of the whole batch at once, then the same per-image crop and flip on the GPU."""
        io, TF = _torchvision()
        decoded = io.decode_jpeg(raw, device=self.device, mode=io.ImageReadMode.RGB)
        return torch.stack([augment_train_image(_to_rgb(image), seed, self.image_size, TF)
                            for image, seed in zip(decoded, seeds)])

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        files, labels = getattr(self, f"{split}_files"), getattr(self, f"{split}_labels")
        loader = self._loader(_EvalImages(files, labels, self.image_size, self.resize), batch_size=batch_size)
        for x, y in loader:
            yield self.normalize(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)

    def split_size(self, split: str) -> int:
        return len(getattr(self, f"{split}_labels"))


def load_imagenet(path: str | os.PathLike | None = None, *, workers: int | None = None, decode: str | None = None,
                  image_size: int = 224, resize: int = 256) -> ImageFolderData:
    """The ImageNet folder at ``path`` (see the module docstring for defaults and layout).

    ``workers`` (default ``$REWINDKIT_LOADER_WORKERS`` or 8) and ``decode`` (default
    ``$REWINDKIT_DECODE`` or ``cpu``) change only speed, never a batch.
    """
    root = imagenet_root(path)
    try:
        classes, train_files, train_labels = _scan(root / "train")
        _, val_files, val_labels = _scan(root / "val", classes)
    except FileNotFoundError as missing:
        raise FileNotFoundError(
            f"ImageNet not found: {missing} is missing. Expected the ImageFolder layout "
            f"<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG with root {root}; pass path=..., "
            "or set REWINDKIT_IMAGENET (profile option: --set dataset_options=\"{'path': '...'}\")") from None
    if not train_files or not val_files:
        raise FileNotFoundError(f"ImageNet at {root} has {len(train_files)} training and {len(val_files)} "
                                f"validation images (extensions {', '.join(IMAGE_EXTENSIONS)}); both must be non-empty")
    v, t = split_validation(len(val_files), VALIDATION_FRACTION)
    workers = int(os.environ.get("REWINDKIT_LOADER_WORKERS", 8)) if workers is None else workers
    decode = os.environ.get("REWINDKIT_DECODE", "cpu") if decode is None else decode
    return ImageFolderData("imagenet", root, tuple(classes), tuple(train_files), tuple(train_labels),
                           tuple(val_files[i] for i in v), tuple(val_labels[i] for i in v),
                           tuple(val_files[i] for i in t), tuple(val_labels[i] for i in t),
                           image_size=image_size, resize=resize, workers=workers, decode=decode)
