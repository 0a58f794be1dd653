"""Fixtures of the browser suite: one JupyterLab server and one headless Chromium for the session.

The suite skips (and says why, in the summary at the end of the run) only when there is no browser
to drive: Playwright for Python missing, or no Chromium (Playwright's own, the system's, or
``$REWINDKIT_CHROMIUM``). Anything else that goes wrong is a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from labdriver import LabServer, find_chromium, launch_browser

REPO = Path(__file__).resolve().parents[2]
STATE: dict = {"notebooks": {}, "skipped": None}


def artifacts_dir() -> Path:
    """Screenshots and the timing report: ``executed/browser/`` (ignored by git) unless
    ``$REWINDKIT_BROWSER_ARTIFACTS`` names another folder."""
    return Path(os.environ.get("REWINDKIT_BROWSER_ARTIFACTS") or REPO / "executed" / "browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    executable, how = find_chromium()
    if executable is None:
        STATE["skipped"] = how
        pytest.skip(f"browser suite skipped: {how}")
    STATE["browser"] = how
    STATE["cpu"] = cpu_model()
    return executable


def cpu_model() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else 'unknown CPU'}, {os.cpu_count()} logical cores"


@pytest.fixture(scope="session")
def artifacts(chromium) -> Path:
    folder = artifacts_dir()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="session")
def lab(chromium, tmp_path_factory):
    # The smoke runs the notebooks train here are the test session's: nbval, which runs the notebooks
    # after this suite, finds them cached (../../conftest.py points REWINDKIT_OUT at a temporary
    # folder). The laptop cache stays the server's own, empty, for the time-to-first-figure measurement.
    shared = os.environ.get("REWINDKIT_OUT")
    server = LabServer(tmp_path_factory.mktemp("jupyterlab"), shared_runs=Path(shared) / "runs" if shared else None)
    started = time.monotonic()
    server.start()
    STATE["server_start_s"] = round(time.monotonic() - started, 1)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser(chromium):
    """A browser context (one HTTP cache for JupyterLab's scripts; each notebook gets a page and a
    JupyterLab workspace of its own)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = launch_browser(playwright, chromium)
        STATE["browser_version"] = instance.version
        context = instance.new_context(viewport={"width": 1280, "height": 860})
        yield context
        context.close()
        instance.close()


@pytest.fixture
def record(request):
    """What a test exercised, for the summary and ``executed/browser/report.json``."""
    entry: dict = {}
    STATE["notebooks"][request.node.name] = entry
    return entry


def pytest_runtest_logreport(report):
    """Wall time of this suite's tests (setup, call, teardown), for the summary."""
    STATE["suite_s"] = STATE.get("suite_s", 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if STATE["skipped"]:
        terminalreporter.section("browser suite (JupyterLab in Chromium)")
        terminalreporter.write_line(f"SKIPPED: {STATE['skipped']}")
        return
    if not STATE["notebooks"]:
        return
    terminalreporter.section("browser suite (JupyterLab in Chromium)")
    terminalreporter.write_line(f"browser: {STATE.get('browser')} {STATE.get('browser_version', '')}; "
                                f"JupyterLab server up in {STATE.get('server_start_s')} s; {STATE.get('cpu')}; "
                                f"the suite took {STATE.get('suite_s', 0) / 60:.1f} min")
    for name, entry in STATE["notebooks"].items():
        if "first_figure_s" in entry:
            terminalreporter.write_line(
                f"{name}: time to first figure {entry['first_figure_s']:.1f} s after Run All "
                f"(kernel ready {entry['kernel_ready_s']:.1f} s after opening; whole notebook "
                f"{entry.get('run_all_s', float('nan')):.1f} s; profile {entry['profile']}, empty run cache)")
        else:
            controls = "; ".join(entry.get("controls", [])) or "-"
            terminalreporter.write_line(
                f"{name}: ran in {entry.get('run_all_s', float('nan')):.1f} s, {entry.get('figures', 0)} figures, "
                f"{entry.get('explorers', 0)} explorer(s); changed: {controls}")
    report = artifacts_dir() / "report.json"
    if report.parent.is_dir():
        report.write_text(json.dumps({k: v for k, v in STATE.items()}, indent=1, default=str))
        terminalreporter.write_line(f"screenshots and report.json in {report.parent}")
