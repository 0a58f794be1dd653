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


class ForwardRandomness:
    """The random draws of a network's training steps (dropout; paper §2's runs are then repeatable):
    step ``s`` runs with torch's global generator seeded by ``derive_seed(seed, "forward", s, rank)``
    and left as it was after the step, holding :data:`GLOBAL_RNG_LOCK`.

    Whether a network draws at all is seen at its first step (the generator's state after it): a
    network that does not (the kit's own) trains every later step without the seeding or the lock,
    so runs packed as threads never wait for each other; one that does takes the lock for each step.
    A network that draws only from a later step on is not seen: it draws from the unseeded generator
    there (dropout switched on mid-run; give it the seeding by drawing from the first step)."""

    def __init__(self, seed: int, device: torch.device | str = "cpu", rank: int = 0):
        self.seed, self.rank = seed, rank
        self.device = torch.device(device)
        self.draws: bool | None = None  # None until the first step is seen

    def _states(self) -> list[torch.Tensor]:
        states = [torch.get_rng_state()]
        if self.device.type == "cuda":
            states.append(torch.cuda.get_rng_state(self.device))
        return states

    @contextlib.contextmanager
    def step(self, step: int):
        """The context one training step runs in."""
        if self.draws is False:
            yield
            return
        cuda = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
            if self.device.type == "cuda" else []
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=cuda):
            torch.manual_seed(derive_seed(self.seed, "forward", step, self.rank))
            before = self._states() if self.draws is None else None
            yield
            if before is not None:
                self.draws = not all(torch.equal(a, b) for a, b in zip(before, self._states()))
