"""rewindkit: rewinding vs fine-tuning in neural network pruning (Renda, Frankle & Carbin, ICLR 2020).

The package in layers, each importing only those below it (``tests/test_layers.py`` walks every
import, lazy ones included; ``docs/architecture.md`` draws it):

* ``platform`` — where and how it computes: devices and fast paths, portable CPU numerics, atomic
  storage, data parallelism, the registry of named components and their fingerprints;
* ``core`` — the paper: masks, pruning, schedules, the recipe, the plan table of the techniques,
  the one training loop, optimizers, metrics, FLOPs, seeds, the training-data protocol;
* ``data`` and ``models`` — MNIST-1D, CIFAR-10, synthetic, ImageNet and translation data; the
  vision networks and the laptop-scale GNMT;
* ``engine`` — profiles, a run's identity and folder, executing one run, the grids, executors,
  costs, the results tables;
* ``paper`` — the authors' released runs, the paper's aggregation, the figure functions and style;
* ``notebook`` — papermill execution and the workspace, teaching figures, what notebooks show;
* at the top: :mod:`plugins`, :mod:`experiments`, :mod:`plots`, :mod:`cli`.

The package's face — ``from rewindkit import experiments, plots, reference, workspace, pruning,
models, techniques, training, data, plugins, recipe, profiles`` (and ``import rewindkit.recipe`` and
the like) — names the modules where they live now.
"""

import importlib
import sys

from .platform.numerics import pin_portable_cpu_numerics as _pin
from .platform.version import __version__  # noqa: F401

_pin()  # before any torch op picks its CPU kernels (rewindkit.platform.numerics)

# The kit's own networks, datasets, metrics and schedules register themselves in the one registry
# when their modules are imported: import them with the package, so every name is taken before a
# user registers anything.
from .core import metrics, recipe  # noqa: E402,F401  (accuracy; step, gnmt, cosine, linear, one_cycle)
from . import data, models  # noqa: E402,F401  (the datasets and BLEU; the networks)

FACE = {"pruning": "core.pruning", "techniques": "core.techniques", "training": "core.training",
        "recipe": "core.recipe", "profiles": "engine.profiles", "reference": "paper.reference",
        "workspace": "notebook.workspace"}
for _name, _where in FACE.items():  # rewindkit.<name> is the module where it lives
    _module = importlib.import_module(f"{__name__}.{_where}")
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
del _name, _where, _module
