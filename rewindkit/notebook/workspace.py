"""Where notebooks put their runs and figures, and small display helpers.

Everything goes under one root: ``$REWINDKIT_OUT`` if set (the test suite points it at a temporary
folder), else the repository checkout, else the current folder (Colab). Runs are cached in
``<root>/runs/<profile>/``; figures go to ``<root>/figures/<profile>/`` (``figures/paper/`` for the
reference figures).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .execution import current_profile


def out_root() -> Path:
    if os.environ.get("REWINDKIT_OUT"):
        return Path(os.environ["REWINDKIT_OUT"]).resolve()
    from .execution import repo_root
    try:
        return repo_root()
    except FileNotFoundError:
        return Path.cwd()


def runs_dir(profile: str) -> Path:
    return out_root() / "runs" / profile


def figures_dir(profile: str) -> Path:
    path = out_root() / "figures" / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def show(markdown: str) -> None:
    """Display computed prose as Markdown in Jupyter (plain text elsewhere)."""
    try:
        from IPython.display import Markdown, display
        display(Markdown(markdown))
    except ImportError:
        print(markdown)


def save_table(table: pd.DataFrame, name: str, profile: str) -> Path:
    from ..platform.storage import atomic_write_text
    path = figures_dir(profile) / f"{name}.csv"
    atomic_write_text(table.to_csv(index=False, float_format="%.6g"), path)
    return path


def setup(profile: str, family: str | None = None):
    """Resolve the profile for a notebook (``$REWINDKIT_PROFILE`` wins) and return
    ``(profile name, Profile, runs folder, figures folder)``. ``family="translation"`` maps a vision
    profile to its translation counterpart (smoke → translation_smoke, laptop → translation)."""
    from ..engine.profiles import TRANSLATION_COUNTERPARTS, get_profile
    name = current_profile(profile)
    if family == "translation":
        name = TRANSLATION_COUNTERPARTS.get(name, name)
        if name not in TRANSLATION_COUNTERPARTS.values():
            valid = list(TRANSLATION_COUNTERPARTS) + list(TRANSLATION_COUNTERPARTS.values())
            raise ValueError(f"profile {name!r} has no translation counterpart; valid profiles here: {', '.join(valid)}")
    elif family is not None:
        raise ValueError(f"unknown profile family {family!r}; valid families: translation")
    return name, get_profile(name), runs_dir(name), figures_dir(name)
