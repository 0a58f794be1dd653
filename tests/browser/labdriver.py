"""Driving JupyterLab 4 in headless Chromium as a student would (used by ``test_jupyterlab.py``).

* :func:`find_chromium` — which browser the suite can use, or why there is none;
* :class:`LabServer` — JupyterLab on a free local port with a token, its own root folder, workspaces,
  settings, runtime folder and ``REWINDKIT_OUT``/``REWINDKIT_DATA`` in a temporary folder (so
  nothing touches the repository's run cache or the user's data cache);
* :func:`prepare_notebook` — a copy of a notebook in that root, with papermill's parameter injection
  (an ``injected-parameters`` cell after the ``parameters`` cell, as ``papermill -p profile smoke``
  would), never the source notebook itself;
* :func:`expected_figures` / :func:`is_explorer` — what each cell should show, read from its source;
* :class:`NotebookPage` — open a notebook, *Run → Run All Cells*, wait, save, inspect the DOM, and
  work every control of an explorer (select another option, press a key on a slider, click a
  toggle, type into a text box), waiting for its figure to be redrawn.
"""
from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


# --------------------------------------------------------------------------------------- browser


def find_chromium() -> tuple[str | None, str]:
    """``(executable, how it was found)``; ``executable`` is ``None`` (and the text says why) when the
    suite cannot run. ``""`` as executable means Playwright's own downloaded Chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None, ("Playwright for Python is not installed (pip install -e '.[browser]'; "
                      "`make test` installs it)")
    explicit = os.environ.get("REWINDKIT_CHROMIUM")
    if explicit:
        if Path(explicit).is_file() and os.access(explicit, os.X_OK):
            return explicit, f"$REWINDKIT_CHROMIUM={explicit}"
        return None, f"$REWINDKIT_CHROMIUM={explicit} is not an executable file"
    try:
        with sync_playwright() as p:
            bundled = p.chromium.executable_path
        if bundled and Path(bundled).is_file():
            return "", f"Playwright's own Chromium ({bundled})"
    except Exception:  # noqa: BLE001 - no driver or no browser download: fall back to the system's
        pass
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found, f"the system's {name} ({found})"
    return None, ("no Chromium found: neither Playwright's own browser (`playwright install chromium`) nor "
                  f"any of {', '.join(CHROMIUM_NAMES)} on PATH (Debian/Ubuntu: `apt-get install chromium`; "
                  "or set $REWINDKIT_CHROMIUM to a Chromium/Chrome executable)")


def launch_browser(playwright, executable: str):
    options = {"args": ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]}
    if executable:
        options["executable_path"] = executable
    return playwright.chromium.launch(**options)


# ------------------------------------------------------------------------------------ the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A JupyterLab server with everything it writes under ``base`` (a temporary folder)."""

    base: Path
    shared_runs: Path | None = None  # share runs/<profile>/ with this folder, for every profile but...
    private_profiles: tuple = ("laptop",)  # ...these, whose cache stays the server's own (empty at start)
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen | None = None

    @property
    def root(self) -> Path:  # the folder the file browser shows: copies of the notebooks
        return self.base / "lab"

    @property
    def out(self) -> Path:  # $REWINDKIT_OUT: runs/<profile>/ and figures/<profile>/
        return self.base / "out"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict:
        # The kernels inherit this: no profile forced from outside (the notebook's parameter decides), no
        # Agg backend (it would keep figures out of the notebook), nothing of the test session's.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTEST"))
               and k not in ("REWINDKIT_PROFILE", "MPLBACKEND", "IPYTHONDIR")}
        env.update(REWINDKIT_OUT=str(self.out), REWINDKIT_DATA=str(self.base / "data"), REWINDKIT_PROGRESS="0",
                   JUPYTER_RUNTIME_DIR=str(self.base / "runtime"), JUPYTER_CONFIG_DIR=str(self.base / "config"),
                   IPYTHONDIR=str(self.base / "ipython"), PYTHONUNBUFFERED="1")
        return env

    def start(self, timeout: float = 180) -> None:
        for folder in (self.root, self.out / "runs", self.base / "settings", self.base / "workspaces"):
            folder.mkdir(parents=True, exist_ok=True)
        if self.shared_runs:
            from rewindkit.profiles import PROFILES
            for profile in set(PROFILES) - set(self.private_profiles):
                (self.shared_runs / profile).mkdir(parents=True, exist_ok=True)
                (self.out / "runs" / profile).symlink_to(self.shared_runs / profile, target_is_directory=True)
        # No "Would you like to get notified about official Jupyter news?" toast over the explorers.
        notification = self.base / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
                   f"--port={self.port}", "--port-retries=0", f"--IdentityProvider.token={self.token}",
                   f"--ServerApp.root_dir={self.root}", f"--LabApp.user_settings_dir={self.base / 'settings'}",
                   f"--LabApp.workspaces_dir={self.base / 'workspaces'}", "--ServerApp.open_browser=False"]
        self.log = (self.base / "jupyterlab.log").open("w")
        self.process = subprocess.Popen(command, cwd=self.root, env=self.environment(), stdout=self.log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        self.log.flush()
        return "\n".join((self.base / "jupyterlab.log").read_text(errors="replace").splitlines()[-n:])

    def api(self, method: str, path: str, body: dict | None = None):
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def notebook_url(self, relpath: str, workspace: str) -> str:
        # A workspace of its own, reset: only this notebook open, as on a first visit.
        return f"{self.url}/lab/workspaces/{workspace}/tree/{relpath}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                self.shutdown_kernels()
            except Exception:  # noqa: BLE001 - best effort before terminating
                pass
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None):
            self.log.close()


# --------------------------------------------------------------------------------- the notebooks


def prepare_notebook(source: Path, folder: Path, parameters: dict) -> Path:
    """Copy ``source`` into ``folder``; inject those of ``parameters`` its ``parameters`` cell
    declares, as papermill does (the source notebook is never touched)."""
    import nbformat
    import papermill
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    declared = papermill.inspect_notebook(str(source)) if parameters else {}
    chosen = {k: v for k, v in parameters.items() if k in declared}
    node = load_notebook_node(str(source))
    if chosen:
        node = parameterize_notebook(node, chosen)
    nbformat.write(node, str(target))
    return target


def cell_tags(cell: dict) -> set:
    return set(cell.get("metadata", {}).get("tags", []))


def is_explorer(cell: dict) -> bool:
    """An interactive explorer: a code cell that uses ipywidgets and is kept out of batch runs."""
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    return (cell["cell_type"] == "code" and "widgets" in source
            and bool(cell_tags(cell) & {"skip-execution", "nbval-skip"}))


def _figure_call(node: ast.AST) -> bool:
    """``plots.save_figure(fig, ...)`` (the kit saves every figure it shows), ``plt.show()``,
    ``display(fig)``."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name == "save_figure":
        return True
    if name == "show":
        return isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "plt"
    if name == "display":
        return any(isinstance(a, ast.Name) and "fig" in a.id for a in node.args)
    return False


def expected_figures(source: str) -> int:
    """How many figures a code cell shows at least, read from its source.

    Counts statements run unconditionally at cell level: each ``save_figure(...)``, ``plt.show()``
    or ``display(fig)``; a ``for`` loop containing one counts once (it may run once); a last
    statement that is a bare figure name (``fig``) counts one. Code under ``if``/``try``/``while``
    or inside a function definition is not counted (it may not run)."""
    try:
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    except SyntaxError:
        return 0

    def calls_in(statement: ast.stmt) -> int:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.Try,
                                  ast.While)):
            return 0
        if isinstance(statement, (ast.For, ast.With)):
            inner = sum(calls_in(s) for s in statement.body)
            return min(inner, 1) if isinstance(statement, ast.For) else inner
        return sum(_figure_call(node) for node in ast.walk(statement))

    count = sum(calls_in(s) for s in tree.body)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and isinstance(last.value, ast.Name) and last.value.id.startswith("fig"):
        count += 1
    return count


def is_blank(src: str) -> bool:
    """Whether an ``<img>`` data URL shows nothing: one colour only, or fully transparent."""
    import base64
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGBA")
    alpha = image.getchannel("A").getextrema()
    return alpha[1] == 0 or all(low == high for low, high in image.getextrema())


# ------------------------------------------------------------------------------------ the page

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
INDICATOR = f"{NOTEBOOK} .jp-Notebook-ExecutionIndicator"

# Per cell of the open notebook (in notebook order): its prompt, the images outside any widget (decoded
# size and data), whether an interact explorer rendered, and the text of its outputs.
CELLS_JS = """(sel) => Array.from(document.querySelectorAll(sel + ' .jp-Notebook .jp-Cell')).map(cell => {
  const prompt = cell.querySelector('.jp-InputPrompt');
  const imgs = Array.from(cell.querySelectorAll('.jp-OutputArea-output img'))
      .filter(img => !img.closest('.jupyter-widgets'))
      .map(img => ({w: img.naturalWidth, h: img.naturalHeight, src: img.src}));
  const interact = cell.querySelector('.widget-interact');
  return {
    code: cell.classList.contains('jp-CodeCell'),
    prompt: prompt ? prompt.textContent.trim() : '',
    imgs: imgs,
    interact: !!interact,
    text: Array.from(cell.querySelectorAll('.jp-OutputArea-output'))
        .filter(o => !o.closest('.jupyter-widgets')).map(o => o.innerText).join('\\n').slice(0, 2000),
  };
})"""

PROMPTS_JS = """(sel) => Array.from(document.querySelectorAll(sel + ' .jp-Notebook .jp-CodeCell .jp-InputPrompt'))
    .map(p => p.textContent.trim())"""

# The signature of an explorer's output: its images (as data) and its text.
OUTPUT_JS = """(out) => ({
  imgs: Array.from(out.querySelectorAll('img')).map(i => i.src),
  sizes: Array.from(out.querySelectorAll('img')).map(i => [i.naturalWidth, i.naturalHeight]),
  text: out.innerText,
  errors: out.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]').length,
})"""


class NotebookPage:
    """One notebook open in a page of its own, in a JupyterLab workspace of its own."""

    def __init__(self, context, server: LabServer, relpath: str):
        self.server, self.relpath = server, relpath
        self.page = context.new_page()
        self.console_errors: list[str] = []
        self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))

    def close(self) -> None:
        self.page.close()

    # -- opening and running

    def open(self, timeout: float = 120) -> float:
        """Open the notebook; return the seconds until its (new) kernel is idle."""
        started = time.monotonic()
        workspace = re.sub(r"[^A-Za-z0-9]+", "-", self.relpath)
        self.page.goto(self.server.notebook_url(self.relpath, workspace))
        deadline = time.monotonic() + timeout
        # Ready when the server has a kernel for this notebook, idle, and the page is connected to it
        # (running before that makes JupyterLab ask which kernel to start).
        while time.monotonic() < deadline:
            self.check_no_dialog()
            kernels = [s["kernel"] for s in self.server.api("GET", "/api/sessions") if s["path"] == self.relpath]
            if (kernels and kernels[0].get("execution_state") == "idle" and self.status() == "idle"
                    and any("| Idle" in text for text in self.page.locator(".jp-StatusBar-Widget").all_inner_texts())):
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"{self.relpath}: no idle kernel within {timeout:.0f} s")

    def check_no_dialog(self) -> None:
        """A modal dialog (kernel died, cannot open, …) means the student is stuck: fail with its text."""
        dialog = self.page.locator(".jp-Dialog")
        if dialog.count():
            raise AssertionError(f"{self.relpath}: JupyterLab shows a dialog: {dialog.first.inner_text()!r}")

    def status(self) -> str:
        return self.page.get_attribute(INDICATOR, "data-status") or ""

    def run_all(self) -> None:
        """*Run → Run All Cells* from the menu bar, as a student would."""
        self.page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        self.page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")

    def cells(self) -> list[dict]:
        return self.page.evaluate(CELLS_JS, NOTEBOOK)

    def wait_for_first_figure(self, timeout: float) -> None:
        self.page.wait_for_function(
            """(sel) => Array.from(document.querySelectorAll(sel + ' .jp-OutputArea-output img'))
                 .some(img => img.complete && img.naturalWidth > 0)""",
            arg=NOTEBOOK, timeout=timeout * 1000, polling=100)

    def wait_until_run(self, timeout: float) -> list[dict]:
        """Wait until Run All has finished: every code cell numbered, or the run stopped (an error
        leaves the later cells unnumbered); the kernel idle in both cases."""
        deadline = time.monotonic() + timeout
        started = quiet = False
        while time.monotonic() < deadline:
            self.check_no_dialog()
            prompts = self.page.evaluate(PROMPTS_JS, NOTEBOOK)
            busy = any("*" in p for p in prompts) or self.status() != "idle"
            started = started or busy or any(re.search(r"\d", p) for p in prompts)
            if started and not busy:
                if all(re.search(r"\[\d+\]", p) for p in prompts):
                    return self.cells()
                if quiet:  # idle twice in a row with unnumbered cells: the run stopped
                    return self.cells()
                quiet = True
            else:
                quiet = False
            time.sleep(0.5)
        raise TimeoutError(f"{self.relpath}: Run All did not finish within {timeout:.0f} s "
                           f"(prompts: {self.page.evaluate(PROMPTS_JS, NOTEBOOK)})")

    def save(self, timeout: float = 60) -> dict:
        """Save as a student would (the toolbar's save button); return the notebook as saved, read
        from disk once the tab is clean and the file holds the execution counts the page shows.
        (Not through the contents API: a read during the save makes jupyter_server restore the
        previous file as if the save had failed.)"""
        shown = [int(m.group(1)) if (m := re.search(r"\[(\d+)\]", p)) else None
                 for p in self.page.evaluate(PROMPTS_JS, NOTEBOOK)]
        self.page.click(f"{NOTEBOOK} [data-command='docmanager:save']")
        deadline = time.monotonic() + timeout
        while True:
            self.check_no_dialog()
            if not self.page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty").count():
                try:
                    saved = json.loads((self.server.root / self.relpath).read_text())
                except (OSError, ValueError):  # being written
                    saved = None
                if saved and [c.get("execution_count") for c in saved["cells"] if c["cell_type"] == "code"] == shown:
                    return saved
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.relpath}: saving did not store the outputs within {timeout:.0f} s")
            time.sleep(0.3)

    # -- explorers

    def explorer(self, cell_index: int):
        cell = self.page.locator(f"{NOTEBOOK} .jp-Notebook .jp-Cell").nth(cell_index)
        return cell.locator(".widget-interact").first

    def output_signature(self, interact) -> dict:
        return interact.locator(":scope > .widget-output").evaluate(OUTPUT_JS)

    def controls(self, interact) -> list:
        """The explorer's controls: every child of the interact box but its output."""
        children = interact.locator(":scope > *")
        return [children.nth(i) for i in range(children.count())
                if "widget-output" not in (children.nth(i).get_attribute("class") or "")]

    def change(self, control) -> str:
        """Change one control to another value the way a student would; return what was done."""
        classes = control.get_attribute("class") or ""
        labels = [t.strip(" \u200b") for t in control.locator(".widget-label, .widget-label-basic").all_inner_texts()]
        name = next((t for t in labels if t), "") or control.inner_text().strip()[:20]
        if "widget-dropdown" in classes or ("widget-select" in classes and "widget-select-multiple" not in classes):
            select = control.locator("select")
            values = select.locator("option").evaluate_all("os => os.map(o => o.value)")
            current = select.input_value()
            new = values[(values.index(current) + 1) % len(values)] if current in values else values[0]
            select.select_option(new)
            return f"{name}: select {new!r} (was {current!r})"
        if "widget-select-multiple" in classes:
            select = control.locator("select")
            options = select.locator("option")
            values = options.evaluate_all("os => os.map(o => o.value)")
            chosen = options.evaluate_all("os => os.filter(o => o.selected).map(o => o.value)")
            # Add the first option not chosen yet (or drop one if all are chosen).
            new = chosen + [v for v in values if v not in chosen][:1] if len(chosen) < len(values) else chosen[1:]
            select.select_option(new)
            texts = options.evaluate_all("os => os.map(o => [o.value, o.textContent])")
            labels = dict(texts)
            return f"{name}: select {[labels[v] for v in new]} (was {[labels[v] for v in chosen]})"
        if "widget-slider" in classes or "widget-hslider" in classes:
            handle = control.locator(".noUi-handle").first
            now, top = float(handle.get_attribute("aria-valuenow")), float(handle.get_attribute("aria-valuemax"))
            key = "ArrowRight" if now < top else "ArrowLeft"
            before = control.locator(".widget-readout").inner_text()
            handle.focus()
            handle.press(key)
            return f"{name}: slider {key} ({before} → {control.locator('.widget-readout').inner_text()})"
        if "widget-checkbox" in classes:
            box = control.locator("input[type=checkbox]")
            was = box.is_checked()
            box.click()
            return f"{name}: checkbox {'off' if was else 'on'}"
        if "widget-toggle-buttons" in classes or "widget-radio" in classes:
            items = control.locator("button, input[type=radio]")
            states = items.evaluate_all(
                "els => els.map(e => e.classList.contains('mod-active') || e.checked === true)")
            target = (states.index(True) + 1) % len(states) if True in states else 0
            items.nth(target).click()
            return f"{name}: choose {items.nth(target).get_attribute('data-value')!r}"
        if "widget-toggle-button" in classes:
            control.click()
            return f"{name}: toggle"
        if "widget-text" in classes or "widget-textarea" in classes or control.locator("input[type=text], input[type=number]").count():
            box = control.locator("input, textarea").first
            value = box.input_value() + "1"
            # fill() sets the value and fires the input event in one step: typed keys were sometimes
            # lost when the click's focus had not landed yet (1 failure in 3 runs, 2026-12-06)
            box.fill(value)
            box.press("Enter")
            if box.evaluate("e => e.tagName") == "INPUT" and box.get_attribute("type") in (None, "text"):
                assert box.input_value() == value, f"{name}: the text box holds {box.input_value()!r}, not {value!r}"
            return f"{name}: type {value!r}"
        raise AssertionError(f"no way to work this control yet (classes {classes!r})")

    def settle(self, interact, timeout: float = 30) -> dict:
        """The explorer's output once the kernel is idle and it has not changed for a second."""
        deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
        while time.monotonic() < deadline:
            now = self.output_signature(interact)
            if now != last or self.status() != "idle" or not all(w > 0 for w, _ in now["sizes"]):
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= 1.0:
                return now
            time.sleep(0.2)
        return self.output_signature(interact)

    def wait_for_redraw(self, interact, before: dict, timeout: float = 120) -> dict:
        """Wait until the explorer's output differs from ``before`` and has settled (kernel idle,
        the same output twice in a row, every image decoded)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            now = self.output_signature(interact)
            settled = (now == last and self.status() == "idle" and all(w > 0 for w, _ in now["sizes"])
                       and (now["imgs"] or now["text"].strip()))
            if settled and (now["imgs"], now["text"]) != (before["imgs"], before["text"]):
                return now
            last = now
            time.sleep(0.4)
        return self.output_signature(interact)
