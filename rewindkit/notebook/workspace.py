"""Where the notebooks run and put their runs and figures: the notebooks themselves, executed with
papermill (what ``rewindkit notebooks`` and ``make reproduce`` do), and the folders they write.

Execution: parameter names are validated against each notebook's ``parameters`` cell (papermill
only warns about unknown ones), values given as text are parsed as Python literals (papermill's API
does not coerce types), the kernel is ``python3``, the working directory is the notebook's folder,
every cell has an execution timeout, and a failing cell is reported with its index and error.

Folders: everything goes under one root, ``$REWINDKIT_OUT`` if set (the test suite points it at a
temporary folder), else the repository checkout, else the current folder (Colab). Runs are cached in
``<root>/runs/<profile>/``; figures go to ``<root>/figures/<profile>/`` (``figures/paper/`` for the
reference figures).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from ..engine.profiles import PROFILES, TRANSLATION_COUNTERPARTS, get_profile, parse_value
from ..engine.runs import results_dir
from ..platform.storage import atomic_write_text

DEFAULT_TIMEOUT = 1800


def repo_root() -> Path:
    """The checkout holding ``notebooks/`` (the package's parent folder in an editable install)."""
    here = Path(__file__).resolve().parents[2]
    if (here / "notebooks").is_dir():
        return here
    cwd = Path.cwd()
    for folder in (cwd, *cwd.parents):
        if (folder / "notebooks").is_dir() and (folder / "rewindkit").is_dir():
            return folder
    raise FileNotFoundError("cannot find the rewindkit notebooks/ folder; run from a clone of the repository")


def notebook_dir() -> Path:
    return repo_root() / "notebooks"


def list_notebooks() -> list[Path]:
    return sorted(notebook_dir().glob("[0-9][0-9]_*.ipynb"))


def resolve(names) -> list[Path]:
    """Notebooks by file name, stem or number prefix (``03``, ``03_accuracy_vs_retraining_time``); all if empty."""
    available = list_notebooks()
    if not names:
        return available
    chosen = []
    for name in names:
        matches = [p for p in available if name in (p.name, p.stem, p.stem.split("_", 1)[0])]
        if len(matches) != 1:
            raise ValueError(f"unknown notebook {name!r}; valid notebooks: {', '.join(p.stem for p in available)}")
        chosen.append(matches[0])
    return chosen


def notebook_parameters(path: Path) -> dict:
    import papermill
    return papermill.inspect_notebook(str(path))


def check_parameters(path: Path, parameters: dict) -> dict:
    """Parse text values and reject names the notebook's ``parameters`` cell does not define."""
    known = notebook_parameters(path)
    out = {}
    for name, value in parameters.items():
        if name not in known:
            raise ValueError(f"notebook {path.stem} has no parameter {name!r}; its parameters: {', '.join(known)}")
        out[name] = parse_value(value) if isinstance(value, str) else value
        if name != "profile":
            _check_declared(path, known[name], out[name])
    if "profile" in out and out["profile"] not in PROFILES:
        raise ValueError(f"unknown profile {out['profile']!r}; valid profiles: {', '.join(PROFILES)}")
    return out


_DECLARED_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "list": (list, tuple), "bool": (bool,)}


def _check_declared(path: Path, declared: dict, value) -> None:
    """A parameter's value against its line in the notebook's ``parameters`` cell: the type it is
    annotated with, and for text the choices its comment lists (``one_shot | iterative | structured``)."""
    import re
    kind = declared.get("inferred_type_name")
    types = _DECLARED_TYPES.get(kind)
    if types is not None and (not isinstance(value, types) or (kind != "bool" and isinstance(value, bool))):
        raise ValueError(f"notebook {path.stem}'s parameter {declared['name']!r} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} "
                         f"(default {declared.get('default')}); got {value!r}")
    listed = re.match(r"\s*(\w+(?:\s*\|\s*\w+)+)", declared.get("help") or "") if kind == "str" else None
    choices = [c.strip() for c in listed.group(1).split("|")] if listed else []
    if choices and value not in choices:
        raise ValueError(f"notebook {path.stem}'s parameter {declared['name']!r} must be one of "
                         f"{', '.join(choices)}; got {value!r}")


def run_notebooks(paths, parameters: dict | None = None, *, executed_dir=None, timeout: int = DEFAULT_TIMEOUT,
                  log=print, at_once: int | str = 1) -> list[Path]:
    """Run each notebook through papermill; return the executed copies. Raises on the first failure.

    ``at_once`` > 1 runs that many notebooks at the same time, each in a process of its own, started in
    order: one notebook's plots and kernel start-up then overlap another's training. Notebooks that
    ask for the same run share it: one trains it, the other waits on the run's lock and reads it
    (:func:`rewindkit.engine.runner.execute`), so nothing is trained twice and every result is the
    one a notebook run alone gets. ``at_once="auto"``: :func:`~rewindkit.platform.cores.notebooks_at_once`."""
    from ..platform.cores import notebooks_at_once
    at_once = notebooks_at_once(at_once)  # a whole number ≥ 1 or "auto", checked before anything runs
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise ValueError(f"timeout must be a whole number of seconds ≥ 1 per cell; got {timeout!r}")
    parameters = dict(parameters or {})
    executed_dir = Path(executed_dir or repo_root() / "executed").resolve()
    if executed_dir.exists() and not executed_dir.is_dir():
        raise ValueError(f"--executed-dir {executed_dir} is a file; name a folder for the executed notebooks")
    checked = {p: check_parameters(p, parameters) for p in paths}  # all names checked before any run
    executed_dir.mkdir(parents=True, exist_ok=True)  # and before anything is written
    jobs = [(path, executed_dir / path.name, checked[path], timeout) for path in paths]
    if at_once <= 1 or len(jobs) <= 1:
        for job in jobs:
            log(f"▶ {job[0].name}  {job[2] or ''}")
            log(_done_line(job, execute_notebook(*job)))
        return [target for _, target, _, _ in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(min(at_once, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        log(f"{len(jobs)} notebooks, {min(at_once, len(jobs))} at once")
        futures = [(job, pool.submit(execute_notebook, *job)) for job in jobs]
        try:
            for job, future in futures:
                log(_done_line(job, future.result()))
        except BaseException:
            for _, future in futures:
                future.cancel()
            raise
    return [target for _, target, _, _ in jobs]


def _done_line(job, seconds: float) -> str:
    return f"✔ {job[0].name} in {seconds:.0f} s → {job[1]}"


def execute_notebook(path: Path, target: Path, parameters: dict, timeout: int = DEFAULT_TIMEOUT) -> float:
    """One notebook through papermill (kernel ``python3``, its folder as working directory, ``timeout``
    seconds per cell) into ``target``; returns its seconds. A failing cell raises RuntimeError naming
    the cell and the executed copy that shows the error."""
    import papermill
    from papermill.exceptions import PapermillExecutionError
    started = time.time()
    try:
        papermill.execute_notebook(str(path), str(target), parameters=parameters, kernel_name="python3",
                                   cwd=str(path.parent), progress_bar=False, execution_timeout=timeout,
                                   log_output=False)
    except PapermillExecutionError as exc:
        raise RuntimeError(f"{path.name} failed in cell {exc.exec_count} ({exc.ename}: {exc.evalue}); "
                           f"executed copy with the error: {target}") from None
    except TimeoutError as exc:  # nbclient's CellTimeoutError: a cell ran past the timeout
        raise RuntimeError(f"{path.name}: a cell ran longer than the timeout of {timeout} s per cell (--timeout); "
                           f"executed copy so far: {target}") from exc
    return time.time() - started


def current_profile(profile: str) -> str:
    """The profile a notebook should use: ``$REWINDKIT_PROFILE`` (set by the test suite to force the
    smoke profile under nbval) wins over the notebook's parameter."""
    chosen = os.environ.get("REWINDKIT_PROFILE") or profile
    if chosen not in PROFILES:
        raise ValueError(f"unknown profile {chosen!r}; valid profiles: {', '.join(PROFILES)}")
    return chosen


# -- the folders notebooks write --------------------------------------------------------------------

def out_root() -> Path:
    if os.environ.get("REWINDKIT_OUT"):
        return Path(os.environ["REWINDKIT_OUT"]).resolve()
    try:
        return repo_root()
    except FileNotFoundError:
        return Path.cwd()


def runs_dir(profile: str) -> Path:
    return results_dir(profile, out_root())


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
    path = figures_dir(profile) / f"{name}.csv"
    atomic_write_text(table.to_csv(index=False, float_format="%.6g"), path)
    return path


def setup(profile: str, family: str | None = None):
    """Resolve the profile for a notebook (``$REWINDKIT_PROFILE`` wins) and return
    ``(profile name, Profile, runs folder, figures folder)``. ``family="translation"`` maps a vision
    profile to its translation counterpart (smoke → translation_smoke, laptop → translation)."""
    name = current_profile(profile)
    if family == "translation":
        name = TRANSLATION_COUNTERPARTS.get(name, name)
        if name not in TRANSLATION_COUNTERPARTS.values():
            valid = list(TRANSLATION_COUNTERPARTS) + list(TRANSLATION_COUNTERPARTS.values())
            raise ValueError(f"profile {name!r} has no translation counterpart; valid profiles here: {', '.join(valid)}")
    elif family is not None:
        raise ValueError(f"unknown profile family {family!r}; valid families: translation")
    return name, get_profile(name), runs_dir(name), figures_dir(name)
