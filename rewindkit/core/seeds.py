"""Every random stream of the kit is derived from a seed and a label by one function (paper §2, §4).

A network's initial weights (``derive_seed(seed, "init")``), a reinitialization
(``derive_seed(seed, "reinitialization")``), each epoch's data order (``(data seed, "order", epoch)``),
each step's augmentation (``(data seed, "augment", step)``) and a retraining run's data seed
(:func:`rewindkit.techniques.retraining_data_seed`) come from :func:`derive_seed`, so they are the
same in every process, on every machine, and a resumed run draws exactly what an uninterrupted one
would.

A network that draws randomness while it trains (dropout, stochastic depth: torch's global
generator) draws it from :class:`ForwardRandomness`: each step's draws are seeded by (the run's
data seed, "forward", step, rank), so the same run id gives the same weights and a resumed run the
draws of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading

import torch

# Building a network, and every training step of a network that draws randomness, draw from torch's
# global generator, which the runs packed on one device (threads) share: each holds this lock from
# its seeding to its last draw, so no run draws between another's seeding and its draws (re-entrant:
# init_model seeds, then calls a build that takes it too).
GLOBAL_RNG_LOCK = threading.RLock()


def derive_seed(*parts) -> int:
    """A 63-bit seed derived from any mix of ints and strings (stable across runs and machines)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def canonical_json(obj) -> str:
    """The one text of a configuration that ids and seeds hash: keys sorted, no spaces, tuples as lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=list)


@contextlib.contextmanager
def seeded_global_generators(seed: int, cuda_devices=()):
    """Run the block with torch's CPU generator (and those of ``cuda_devices``), numpy's and Python's
    global generators seeded by ``seed``, holding :data:`GLOBAL_RNG_LOCK`, and leave them as they were."""
    import random

    import numpy as np
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=list(cuda_devices)):
        saved = np.random.get_state(), random.getstate()
        try:
            torch.random.default_generator.manual_seed(seed)  # the CPU's; other GPUs' left alone
            for device in cuda_devices:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            yield
        finally:
            np.random.set_state(saved[0])
            random.setstate(saved[1])


class ForwardRandomness:
    """The random draws of a network's training steps and evaluations (dropout; paper §2's runs are
    then repeatable): each runs with torch's generator (the CPU's, and the run's GPU's), numpy's and
    Python's global generators seeded by ``derive_seed(seed, "forward", *label, rank)`` and left as
    they were after it, holding :data:`GLOBAL_RNG_LOCK`.

    Whether a network draws at all is seen at its first step (the generators' states after it): a
    network that does not (the kit's own) runs every later step without the seeding or the lock, so
    its runs packed as threads do not wait for each other; one that does takes the lock for each
    step. Not seen: a network that draws only from a later step on (dropout switched on mid-run
    draws unseeded from then), and a generator the network holds itself (``torch.Generator()`` as an
    attribute: its own, not seeded here and not saved in checkpoints)."""

    def __init__(self, seed: int, device: torch.device | str = "cpu", rank: int = 0):
        self.seed, self.rank = seed, rank
        self.device = torch.device(device)
        self.draws: bool | None = None  # None until the first step is seen

    def _states(self) -> list:
        import random

        import numpy as np
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        states = [torch.get_rng_state(), (keys.tobytes(), pos, has_gauss, gauss), random.getstate()]
        if self.device.type == "cuda":
            states.append(torch.cuda.get_rng_state(self.device))
        return states

    @staticmethod
    def _same(a: list, b: list) -> bool:
        return all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(a, b))

    @contextlib.contextmanager
    def step(self, *label):
        """The context one draw-seeded piece of work runs in: a training step (``label``: its
        iteration) or an evaluation (``"evaluate", split``)."""
        if self.draws is False:
            yield
            return
        cuda = [self.device] if self.device.type == "cuda" else []
        with seeded_global_generators(derive_seed(self.seed, "forward", *label, self.rank), cuda):
            before = self._states() if self.draws is None else None
            yield
            if before is not None:
                self.draws = not self._same(before, self._states())
