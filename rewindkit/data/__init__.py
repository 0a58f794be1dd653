"""The datasets, by name (:func:`load`), all in the one registry of datasets:

* ``mnist1d`` — the offline default: generated locally with the ``mnist1d`` package's standard
  recipe (never its download) and cached as ``.npz``. 4,000 train / 1,000 test → 200 validation
  and 800 test (the paper's 20/80 split of the test set).
* ``cifar10`` — the standard python archive (``cifar-10-python.tar.gz`` or the extracted
  ``cifar-10-batches-py`` folder). Downloaded with checksum verification when online; offline, a
  clear error says where to put the file. The 10,000 test images are split 2,000 validation /
  8,000 test. Training augmentation as the paper: 4-pixel zero pad, random 32×32 crop, random
  horizontal flip, per image, then per-image standardisation.
* ``synthetic`` — small Gaussian-template data for fast tests, any shape.
* ``imagenet`` — streamed from an ImageFolder (:mod:`.imagenet`); ``translation`` — English → French
  number names for the laptop-scale GNMT (:mod:`.translation`).

Each satisfies the training-data protocol of :mod:`rewindkit.core.batches`; the in-memory ones are a
:class:`~.memory.Dataset`.
"""

from __future__ import annotations

from ..platform import registry
from ..platform.storage import data_dir  # noqa: F401  (importable from here)
from .cifar10 import CIFAR10_ARCHIVE, CIFAR10_FOLDER, download_cifar10, load_cifar10  # noqa: F401
from .memory import (AUGMENTATIONS, BatchStream, Dataset, augment_crop_flip, crop_flip, draw_crop_flip,  # noqa: F401
                     split_test)
from .mnist1d import load_mnist1d
from .synthetic import make_synthetic
from .translation import load_translation


def _load_imagenet(**options):
    from .imagenet import load_imagenet
    return load_imagenet(**options)


# The kit's own datasets, in the one registry of datasets (rewindkit.plugins)
for _name, _loader in (("mnist1d", load_mnist1d), ("cifar10", load_cifar10), ("imagenet", _load_imagenet),
                       ("synthetic", make_synthetic), ("translation", load_translation)):
    registry.register_builtin("dataset", _name, _loader)


def load(name: str, **options) -> Dataset:
    """A dataset by name: ``mnist1d``, ``cifar10``, ``imagenet`` (streamed from a folder:
    :mod:`rewindkit.data.imagenet`), ``synthetic``, ``translation`` (number names, :mod:`rewindkit.data.translation`)
    or a registered plug-in (:func:`rewindkit.plugins.register_dataset`)."""
    loader = registry.lookup("dataset", name).call
    registry.check_options(f"dataset {name!r} (dataset_options)", loader, options)
    try:
        return loader(**options)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        raise ValueError(f"bad option for dataset {name!r} (dataset_options {options}): {exc}") from exc


def dataset_names() -> tuple[str, ...]:
    """Every dataset a profile may name: the kit's own and the registered plug-ins."""
    return registry.names("dataset")
