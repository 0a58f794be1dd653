import os
import sys
from pathlib import Path

import pytest

# the vmap-batched trainer lives with the benchmark that weighs it (benchmarks/vmap_batched.py)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

os.environ.setdefault("REWINDKIT_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")  # unit tests only; notebooks are run without it


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory, monkeypatch):
    # Keep test caches away from the user's cache, but share one folder across a session.
    monkeypatch.setenv("REWINDKIT_DATA", str(tmp_path_factory.getbasetemp() / "data"))

