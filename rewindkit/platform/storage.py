"""Atomic, pickle-free file writing and validated tensor-file reading.

Every file rewindkit writes goes through a temporary file in the same folder followed by
``os.replace`` (on rank 0 only, when running under torchrun): a crash leaves either the old file or the complete new one, never a half-written
file that looks complete. Tensor files are read with ``torch.load(weights_only=True)``, so run
folders never unpickle arbitrary objects.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def data_dir() -> Path:
    """Where datasets are cached: ``$REWINDKIT_DATA`` or ``~/.cache/rewindkit``."""
    return Path(os.environ.get("REWINDKIT_DATA", Path.home() / ".cache" / "rewindkit")).expanduser()


class CorruptFileError(RuntimeError):
    """A run or data file exists but cannot be read; the message names the file."""


class DiskFullError(RuntimeError):
    """No space was left to write a file. Everything written before is complete (writes are atomic),
    so rerunning the same command after freeing space finishes the work."""


@contextmanager
def exclusive(path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created, empty, if missing) until the block
    ends: ``fcntl.flock``, which the kernel releases when the holder exits, however it exits. Where
    ``fcntl`` does not exist (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write_bytes(data: bytes, path) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename. Under torchrun only rank 0
    writes; the other ranks return at once (the engine synchronises them with barriers)."""
    from .distributed import is_primary
    if not is_primary():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"no space left on the device while writing {path}; every file written before is "
                                f"complete (writes are atomic): free some space and rerun the same command to "
                                f"finish") from exc
        raise


def atomic_write_text(text: str, path) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)


def _json_safe(obj: Any) -> Any:
    """NaN and ±inf as null: JSON has no such numbers (``json.dumps`` would write invalid JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def atomic_write_json(obj: Any, path) -> None:
    """Write ``obj`` as strict JSON (NaN and infinities become null), atomically."""
    atomic_write_text(json.dumps(_json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n", path)


def atomic_torch_save(obj: Any, path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(buffer.getvalue(), path)


_REMEDY = ("; the run's folder is incomplete (a file removed by hand?): delete {folder} and rerun to have the "
          "run recomputed (bit for bit as before)")


def _in_run(path: Path) -> bool:
    """Whether ``path`` is a file of one run's folder (``<out>/runs/<id>/...``)."""
    return path.parent.parent.name == "runs"


def load_torch(path, *, what: str = "file") -> Any:
    """``torch.load`` with ``weights_only=True``; a damaged file raises :class:`CorruptFileError`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}{_REMEDY.format(folder=path.parent) if _in_run(path) else ''}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CorruptFileError(f"cannot read {what} {path}: {type(exc).__name__}: {exc}. "
                               f"Delete it to have it recomputed.") from exc


def load_tensor_dict(path, *, what: str = "file") -> dict[str, torch.Tensor]:
    obj = load_torch(path, what=what)
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise CorruptFileError(f"{what} {path} is not a {{name: tensor}} dictionary")
    return obj


def load_json(path, *, what: str = "file") -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        if _in_run(path):
            raise FileNotFoundError(f"{what} not found: {path}{_REMEDY.format(folder=path.parent)}") from None
        raise
    except Exception as exc:
        raise CorruptFileError(f"cannot read {what} {path}: {exc}. Delete it to have it recomputed.") from exc
