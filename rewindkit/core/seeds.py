"""Every random stream of the kit is derived from a seed and a label by one function (paper §2, §4).

A network's initial weights (``derive_seed(seed, "init")``), a reinitialization
(``derive_seed(seed, "reinitialization")``), each epoch's data order (``(data seed, "order", epoch)``),
each step's augmentation (``(data seed, "augment", step)``) and a retraining run's data seed
(:func:`rewindkit.techniques.retraining_data_seed`) come from :func:`derive_seed`, so they are the
same in every process, on every machine, and a resumed run draws exactly what an uninterrupted one
would.
"""

from __future__ import annotations

import hashlib
import json


def derive_seed(*parts) -> int:
    """A 63-bit seed derived from any mix of ints and strings (stable across runs and machines)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def canonical_json(obj) -> str:
    """The one text of a configuration that ids and seeds hash: keys sorted, no spaces, tuples as lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=list)
