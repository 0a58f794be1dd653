"""Every notebook in JupyterLab, in headless Chromium, as a student uses it (issue #15).

For each ``notebooks/NN_*.ipynb`` (whatever notebooks there are): a copy with the smoke profile
injected as papermill would, opened in a fresh workspace, *Run → Run All Cells*, saved; then

* no cell has an error output, and every code cell ran (explorers included: Lab runs them);
* every figure the cell's source asks for is shown (see ``labdriver.expected_figures``), and every
  image output is rendered in the page (decoded, not blank, not shown twice);
* every explorer (a cell using ipywidgets, tagged skip-execution/nbval-skip) is rendered as widgets,
  and changing each of its controls — another option, a key press on a slider, a click on a toggle —
  redraws its output: a different image (or, for a text-only explorer, different text), no error.

Before those, the driver is tried on every kind of ipywidgets control in a notebook made here, and
notebook 01 runs in its default (laptop) profile with an empty run cache in a fresh kernel: the
suite measures the time to its first figure (recorded and printed, not asserted).
Screenshots of each first figure and of each explorer before/after each change go to
``executed/browser/``.
"""
from __future__ import annotations

import contextlib
import time

import papermill
import pytest

from labdriver import NotebookPage, expected_figures, is_blank, is_explorer, prepare_notebook
from rewindkit.notebook import workspace as nb

NOTEBOOKS = nb.list_notebooks()
RUN_TIMEOUT = 900  # seconds for one notebook's Run All; a hang fails instead of blocking make test


@contextlib.contextmanager
def opened_page(browser, lab, notebook: str, failure_png=None):
    """A notebook page of the lab; on failure a full-page screenshot (where ``failure_png`` is
    given); always closed, its kernels shut down."""
    page = NotebookPage(browser, lab, notebook)
    try:
        yield page
    except BaseException:
        if failure_png is not None:
            page.page.screenshot(path=failure_png, full_page=True)
        raise
    finally:
        page.close()
        lab.shutdown_kernels()


def _source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _error_outputs(saved: dict) -> list[str]:
    found = []
    for index, cell in enumerate(saved["cells"]):
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            if out["output_type"] == "error":
                found.append(f"cell {index}: {out['ename']}: {out['evalue']}")
    return found


def _image_outputs(cell: dict) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def _first_figure(page: NotebookPage):
    return page.page.locator(".jp-NotebookPanel .jp-OutputArea-output img").first


# ---------------------------------------------------------------------------- static expectations


@pytest.mark.parametrize("source, expected", [
    ("fig, d = plots.a(x)\nplots.save_figure(fig, 'a', F, d)\nfig, d = plots.b(x)\nplots.save_figure(fig, 'b', F, d)", 2),
    ("if grid:\n    plots.save_figure(fig, 'a', F)", 0),
    ("for n in nets:\n    fig, d = plots.a(n)\n    save(fig, n, d)\nfig", 1),
    ("for fig, _ in figs:\n    display(fig)\n    plt.close(fig)", 1),
    ("def save(fig):\n    plots.save_figure(fig, 'x', F)\nsummary", 0),
    ("x = 1\n%matplotlib inline\nplt.show()", 1),
    ("workspace.show('text')\ndisplay(table)", 0),
])
def test_expected_figures_are_read_from_the_source(source, expected):
    assert expected_figures(source) == expected


def test_paper_style_keeps_the_interactive_mode_the_backend_set():
    """Found by this suite: Jupyter's inline backend turns interactive mode on when pyplot loads it,
    at the first figure — inside ``paper_style()`` — and restoring it with the style hid every later
    figure of a notebook (it then leaked into the next ``plt.show()``, e.g. an explorer's output)."""
    import matplotlib
    from rewindkit.paper.style import paper_style

    was = matplotlib.is_interactive()
    try:
        matplotlib.interactive(False)
        with paper_style():
            matplotlib.interactive(True)  # what the inline backend does when it is loaded
        assert matplotlib.is_interactive()
        with paper_style():
            pass
        assert matplotlib.is_interactive()
        matplotlib.interactive(False)
        with pytest.raises(ValueError), paper_style():
            raise ValueError
        assert not matplotlib.is_interactive()
    finally:
        matplotlib.interactive(was)


def test_every_notebook_has_an_explorer_the_suite_recognises():
    import json
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        assert any(is_explorer(c) for c in cells), f"{path.name}: no explorer cell (ipywidgets, tagged skip-execution)"


# ------------------------------------------------------------------------------- in the browser


CONTROLS = """import ipywidgets as widgets
import matplotlib.pyplot as plt

@widgets.interact(text="hello", choice=["a", "b", "c"], n=(1, 5), x=widgets.FloatLogSlider(value=0.1, min=-2, max=0, step=0.1),
                  level=widgets.SelectionSlider(options=[0.5, 0.2, 0.1]), many=widgets.SelectMultiple(options=["p", "q"]),
                  flag=True, mode=widgets.ToggleButtons(options=["u", "v"]), on=widgets.ToggleButton(description="on"),
                  radio=widgets.RadioButtons(options=["r1", "r2"]))
def explore(text, choice, n, x, level, many, flag, mode, on, radio):
    fig, ax = plt.subplots(figsize=(4, 1.5))
    ax.plot([0, n], [0, x])
    ax.set_title(f"{text} {choice} {n} {x:.3f} {level} {many} {flag} {mode} {on} {radio}", fontsize=7)
    plt.show()
"""


def test_every_kind_of_control_is_worked(lab, browser, artifacts):
    """The driver itself, on every kind of control an explorer may use (dropdown, sliders, multiple
    selection, checkbox, toggle buttons, toggle, radio buttons, text), in a notebook made here."""
    import nbformat

    folder = lab.root / "selftest"
    folder.mkdir()
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CONTROLS, metadata={"tags": ["skip-execution"]})])
    book.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book, str(folder / "controls.ipynb"))
    with opened_page(browser, lab, "selftest/controls.ipynb") as page:
        page.open()
        page.run_all()
        assert page.wait_until_run(timeout=RUN_TIMEOUT)[0]["interact"]
        interact = page.explorer(0)
        before = page.wait_for_redraw(interact, {"imgs": None, "text": None}, timeout=60)
        controls = page.controls(interact)
        assert len(controls) == 10
        for control in controls:
            what = page.change(control)
            after = page.wait_for_redraw(interact, before)
            assert after["imgs"] and after["imgs"] != before["imgs"], what
            before = after
        assert page.settle(interact)["imgs"]
        interact.screenshot(path=artifacts / "controls_selftest.png")


def test_time_to_first_figure_notebook_01_laptop(lab, browser, artifacts, record):
    """A new student: notebook 01 as shipped (laptop profile), fresh kernel, empty run cache."""
    path = nb.resolve(["01"])[0]
    default = papermill.inspect_notebook(str(path))["profile"]["default"].strip("\"'")
    assert not (lab.out / "runs" / "laptop").exists(), "the run cache must be empty for this measurement"
    copy = prepare_notebook(path, lab.root / "student", {} if default == "laptop" else {"profile": "laptop"})
    with opened_page(browser, lab, f"student/{copy.name}", artifacts / "01_laptop_failure.png") as page:
        record["profile"] = "laptop"
        record["kernel_ready_s"] = page.open()
        page.run_all()
        started = time.monotonic()
        page.wait_for_first_figure(timeout=RUN_TIMEOUT)
        record["first_figure_s"] = time.monotonic() - started
        _first_figure(page).screenshot(path=artifacts / "01_laptop_first_figure.png")
        cells = page.wait_until_run(timeout=RUN_TIMEOUT)
        record["run_all_s"] = time.monotonic() - started
        saved = page.save()
        assert not _error_outputs(saved), _error_outputs(saved)
        assert all(c["execution_count"] for c in saved["cells"] if c["cell_type"] == "code")
        explorer = next(i for i, c in enumerate(saved["cells"]) if is_explorer(c))
        assert cells[explorer]["interact"], "the explorer did not render as widgets"
        interact = page.explorer(explorer)
        interact.scroll_into_view_if_needed()
        before = page.wait_for_redraw(interact, {"imgs": None, "text": None}, timeout=60)
        record["controls"] = [page.change(page.controls(interact)[0])]
        assert page.wait_for_redraw(interact, before)["imgs"] != before["imgs"]
        page.page.mouse.wheel(0, 250)  # the explorer and its figure in view, with the cell above it
        page.page.wait_for_timeout(500)
        page.page.screenshot(path=artifacts / "01_laptop_what_you_see.png")
        assert (lab.out / "runs" / "laptop").is_dir()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_in_jupyterlab(path, lab, browser, artifacts, record):
    folder = artifacts / path.stem
    folder.mkdir()
    copy = prepare_notebook(path, lab.root / "smoke", {"profile": "smoke"})
    with opened_page(browser, lab, f"smoke/{copy.name}", folder / "failure.png") as page:
        page.open()
        page.run_all()
        started = time.monotonic()
        cells = page.wait_until_run(timeout=RUN_TIMEOUT)
        record["run_all_s"] = time.monotonic() - started
        saved = page.save()

        # Run All went through, with no error output.
        assert not _error_outputs(saved), f"{path.name}: error outputs: {_error_outputs(saved)}"
        unrun = [i for i, c in enumerate(saved["cells"]) if c["cell_type"] == "code" and not c["execution_count"]]
        assert not unrun, f"{path.name}: Run All stopped before cells {unrun}"
        assert len(cells) == len(saved["cells"])

        # Every expected figure shown, every image output rendered.
        figures = 0
        for index, (cell, shown) in enumerate(zip(saved["cells"], cells)):
            if cell["cell_type"] != "code" or is_explorer(cell):
                continue
            want = expected_figures(_source(cell))
            assert len(shown["imgs"]) >= want, (
                f"{path.name} cell {index} shows {len(shown['imgs'])} figure(s), its source draws {want}:\n"
                f"{_source(cell)[:400]}")
            assert len(shown["imgs"]) == _image_outputs(cell), f"{path.name} cell {index}: image outputs not all rendered"
            assert all(img["w"] > 0 and img["h"] > 0 for img in shown["imgs"]), f"{path.name} cell {index}: empty image"
            srcs = [img["src"] for img in shown["imgs"]]
            assert len(set(srcs)) == len(srcs), f"{path.name} cell {index}: the same figure shown twice"
            assert not any(is_blank(src) for src in srcs), f"{path.name} cell {index}: a blank figure"
            figures += len(shown["imgs"])
        record["figures"] = figures
        if figures:
            _first_figure(page).screenshot(path=folder / "first_figure.png")

        # Every explorer rendered; every control of it redraws its output.
        explorers = [i for i, c in enumerate(saved["cells"]) if is_explorer(c)]
        record["explorers"], record["controls"] = len(explorers), []
        for number, index in enumerate(explorers):
            assert cells[index]["interact"], (
                f"{path.name} cell {index}: the explorer did not render as widgets; it shows: {cells[index]['text']!r}")
            interact = page.explorer(index)
            interact.scroll_into_view_if_needed()
            before = page.wait_for_redraw(interact, {"imgs": None, "text": None}, timeout=60)
            assert before["imgs"] or before["text"].strip(), f"{path.name} cell {index}: the explorer shows nothing"
            assert not any(map(is_blank, before["imgs"])), f"{path.name} cell {index}: the explorer shows a blank figure"
            assert not before["errors"], f"{path.name} cell {index}: the explorer shows an error: {before['text'][:500]}"
            interact.screenshot(path=folder / f"explorer{number}_0_before.png")
            controls = page.controls(interact)
            assert controls, f"{path.name} cell {index}: the explorer has no controls"
            for step, control in enumerate(controls, start=1):
                what = page.change(control)
                after = page.wait_for_redraw(interact, before)
                interact.screenshot(path=folder / f"explorer{number}_{step}_after.png")
                assert not after["errors"], f"{path.name} cell {index}, {what}: error output: {after['text'][:500]}"
                if before["imgs"]:
                    assert after["imgs"], f"{path.name} cell {index}, {what}: the figure is gone: {after['text'][:500]}"
                    assert after["imgs"] != before["imgs"], f"{path.name} cell {index}, {what}: the figure did not change"
                    assert not any(map(is_blank, after["imgs"])), f"{path.name} cell {index}, {what}: a blank figure"
                else:
                    assert after["text"] != before["text"], f"{path.name} cell {index}, {what}: the output did not change"
                record["controls"].append(what + (" → new figure" if after["imgs"] else " → new text"))
                before = after
        assert not page.console_errors, f"{path.name}: JavaScript errors in the page: {page.console_errors}"
