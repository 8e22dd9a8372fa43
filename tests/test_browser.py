"""JupyterLab in a real browser, against the live server: the course as an attendee meets it.

nbmake proves the solutions run in a kernel; it never renders anything. This test starts
JupyterLab and drives it in headless Chromium with Playwright, clicking Run > Run All Cells:
- the live KV-cache dashboard (ipywidgets), as notebook 04 uses it: notebook 04's setup and
  burst on its small pool, with the dashboard shown; it must render and its numbers must move
  while the burst runs (the pool fills, users wait), every cell then runs without an error, and
  the plot after it renders as an image;
- a prediction (labs.predictions): notebook 06's own prediction and score cells, after one cell
  that sets the numbers they read, run as given ("not predicted yet"), then the learner's number
  is typed into the prediction cell, run, and the verdict shows. Needs no vLLM server.
Screenshots land in LABS_SCREENSHOTS (default results/screenshots/).

The learner's whole notebooks (notebooks/, answers blanked) are not run here: at 1-2 minutes
each they would double what nbmake spends on the same code, and the answers they lack are
covered by tests/test_exercises.py (no cell after an exercise computes with a blanked answer).

The browser is Debian's `chromium` (`.ci/run` installs it when run as root; LABS_CHROMIUM
names another binary); Playwright's Python package drives it, no browser is downloaded.
Without either, the test is reported as skipped with the reason.
These tests run right after solutions/04 (conftest.py): the dashboard sends the burst 04 saved
to the server 04 leaves running (its small pool), and 05 starts on that server too; run
without 04 before it, the dashboard test is skipped and says so.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from code_notebooks import write_code_notebook

import labs
from labs.serving.server import free_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("LABS_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("LABS_SCREENSHOTS", ROOT / "results" / "screenshots"))
# The flags that keep Chromium off the network it cannot reach (and quiet at start-up).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
DASHBOARD = "dashboard.ipynb"
RUN_TIMEOUT_MS = int(os.environ.get("LABS_BROWSER_TIMEOUT_S", "600")) * 1000

# `server` marks the tests that need the live vLLM server (conftest.py starts it for them);
# the prediction test does not.
pytestmark = [pytest.mark.browser]


def _playwright() -> Any:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package "
                    "(.ci/run does when run as root) or set LABS_CHROMIUM")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the `playwright` Python package is not installed (pip install -e '.[test]')")
    return sync_playwright


@dataclass
class Lab:
    url: str
    token: str
    root: Path

    def tree(self, name: str) -> str:
        # reset: a fresh layout, not the saved workspace (which would reopen the notebooks of
        # earlier tests as tabs, one of which may then be the one the Run menu acts on)
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"


def _lab_env(root: Path) -> dict[str, str]:
    """The learner's environment: live widgets, checks that explain rather than raise."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LABS_STRICT_CHECKS", "LABS_HEADLESS")}
    settings = root / ".jupyter-settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))  # no "Jupyter news?" toast on top
    env.update(LABS_RESULTS=str(root / "results"), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".jupyter-workspaces"))
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on a free port, over copies of the exercise notebooks (it saves into them)."""
    _playwright()
    root = tmp_path_factory.mktemp("lab")
    (root / "results").mkdir()
    saved_04 = labs.Settings.from_env().results_dir / RESULTS_04
    if saved_04.is_file():  # what 04 measured, as the learner's lab has it after 04
        shutil.copy(saved_04, root / "results" / RESULTS_04)
    port, token = free_port(), secrets.token_hex(16)
    log = root / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", f"--ServerApp.token={token}",
           f"--ServerApp.root_dir={root}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=_lab_env(root), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/api/status", params={"token": token}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, f"JupyterLab exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"JupyterLab not up in 90 s: {log}"
            time.sleep(0.3)
        yield Lab(url, token, root)
    finally:  # the process group: JupyterLab and the kernels it started
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def browser(lab: Lab) -> Iterator[Any]:
    with _playwright()() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(browser: Any, lab: Lab, name: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(lab.tree(name))
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]',
                           timeout=120_000)
    page.keyboard.press("Control+b")  # fold the file browser away: room for the notebook
    return page


def _run_all(page: Any) -> None:
    """Run > Run All Cells, and make sure it started. Right after a page loads, the menu item
    can still be disabled (no notebook is current yet), or a dialog can sit over the menu
    bar, and a click then does nothing or waits: seen in CI, where the test then waited ten
    minutes for cells that never ran. So: short tries, a dialog accepted (and reported),
    and proof that a cell started."""
    item = page.locator('.lm-Menu-item[data-command="runmenu:run-all"]')
    dialogs: list[str] = []
    for attempt in range(5):
        try:
            dialog = page.locator(".jp-Dialog")
            if dialog.count() and dialog.first.is_visible():
                dialogs.append(dialog.first.inner_text()[:200])
                _shot(page, f"dialog-{attempt}.png")
                dialog.locator(".jp-Dialog-button.jp-mod-accept").first.click(timeout=5_000)
            # Make the notebook current; force: an output or toast over it must not block.
            page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first.click(
                force=True, timeout=5_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click(timeout=5_000)
            item.wait_for(timeout=5_000)
            if "lm-mod-disabled" in (item.get_attribute("class") or ""):
                raise RuntimeError("Run All Cells is disabled")
            item.click(timeout=5_000)
            page.wait_for_function(
                r"""() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                         .some(e => /\[(\*|\d+)\]/.test(e.textContent))""", timeout=20_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError and the above: close menus, try again
            page.keyboard.press("Escape")
            time.sleep(2)
    shot = _shot(page, "run-all-did-not-start.png")
    pytest.fail(f"Run > Run All Cells did not start any cell after 5 tries (dialogs seen: "
                f"{dialogs or 'none'}); screenshot {shot}")


def _wait_until_done(page: Any, name: str) -> None:
    """Until no cell shows [*] and the first has its number: Run All has finished (or stopped
    at an error, which the saved notebook then shows). On a timeout, a screenshot says where."""
    try:
        _wait_for_prompts(page)
    except Exception:  # noqa: BLE001 - a timeout or a closed page: either way, show where it stopped
        shot = _shot(page, f"{name}-timeout.png")
        prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
        pytest.fail(f"Run All did not finish in {RUN_TIMEOUT_MS / 1000:.0f} s; prompts "
                    f"{prompts}; screenshot {shot}")


def _wait_for_or_error(page: Any, locator: Any, name: str, timeout_s: float = 120) -> None:
    """Until `locator` shows, failing at once (not after the timeout) when a cell shows an
    error first: a cell that raised before it stops Run All, and it would never show."""
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    deadline = time.monotonic() + timeout_s
    while not (locator.count() and locator.first.is_visible()):
        if errors.count() and "Traceback" in errors.first.inner_text():
            shot = _shot(page, f"{name}-error.png")
            pytest.fail(f"a cell failed first: {errors.first.inner_text()[-1500:]} ({shot})")
        if time.monotonic() > deadline:
            shot = _shot(page, f"{name}-timeout.png")
            pytest.fail(f"nothing showed in {timeout_s:.0f} s; screenshot {shot}")
        time.sleep(0.5)


def _wait_for_prompts(page: Any) -> None:
    page.wait_for_function(
        """() => {
            const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            return p.length > 0 && /\\[\\d+\\]/.test(p[0].textContent)
                && !p.some(e => e.textContent.includes('*'));
        }""", timeout=RUN_TIMEOUT_MS, polling=1000)


def _saved(page: Any, path: Path) -> dict[str, Any]:
    """Save from the browser (Ctrl+S) and read what JupyterLab wrote."""
    before = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.stat().st_mtime_ns != before, "JupyterLab did not save the notebook"
    time.sleep(0.5)  # let the write finish
    return json.loads(path.read_text())


def _problems(notebook: dict[str, Any]) -> list[str]:
    """Cells that show an error, and code cells that never ran."""
    found = []
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("execution_count") is None:
            found.append(f"cell {i} did not run")
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                found.append(f"cell {i}: {out['ename']}: {out['evalue'][:300]}")
    return found


def _shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path))
    return path


# Notebook 04's burst on its small pool with the live dashboard, as 04's cell 19 sends it (the
# users and lengths 04 saved), on the server 04 leaves running: its small pool.
RESULTS_04 = "04_kv_cache_exhaustion.json"
DASHBOARD_CELLS = (
    """import json

import labs
from labs.course import plots
from labs.observe import widgets

saved = labs.Settings.from_env().results_dir / "04_kv_cache_exhaustion.json"
sent = json.loads(saved.read_text())["findings"]  # what 04 sent, on the pool it sent it to
conn = labs.connect()
pool = labs.metrics.scrape(conn.base_url).cache_config()
assert pool.num_gpu_blocks == sent["num_gpu_blocks"], f"not 04's small pool: {pool}" """,
    """workload = labs.Workload(prompt_tokens=sent["prompt_tokens"],
                          max_tokens=sent["output_tokens"])
with widgets.LiveDashboard(conn.base_url, interval_s=0.25) as dashboard:
    pressure = labs.loadgen.run_sync(labs.Burst(sent["users"]), workload, conn=conn,
                                     label="kv pressure")""",
    """engine = dashboard.sampler.to_frame(t0=pressure.metadata["perf_counter_t0"])
widgets.plot_engine_runs({"small pool": engine}, "04's burst", plots.where(pressure.metadata));""",
)


@pytest.mark.server
def test_the_kv_dashboard_renders_and_follows_the_engine(lab: Lab, browser: Any) -> None:
    if not (lab.root / "results" / RESULTS_04).is_file():
        pytest.skip("sends 04's burst on 04's server: run it after solutions/04 (make test does)")
    write_code_notebook(lab.root / DASHBOARD, DASHBOARD_CELLS)
    page = _open(browser, lab, DASHBOARD)
    _run_all(page)
    clock = page.get_by_text(re.compile(r"t = \d+\.\d s"))
    _wait_for_or_error(page, clock, "dashboard")
    clock.scroll_into_view_if_needed()
    kv = page.get_by_text(re.compile(r"^\d+%$")).first
    running = page.get_by_text(re.compile(r"^running \d+$")).first
    waiting = page.get_by_text(re.compile(r"waiting \d+$")).first

    def state() -> tuple[str, ...]:
        return (clock.inner_text(), kv.inner_text(), running.inner_text(), waiting.inner_text())

    def busy(s: tuple[str, ...]) -> bool:  # the pool in use, and users left waiting
        return s[1] != "0%" and not s[2].endswith(" 0") and not s[3].endswith(" 0")

    # Updating means the engine's numbers move, not just the clock: wait for the pool to fill.
    first = now = state()
    deadline = time.monotonic() + 120
    while not busy(now) and time.monotonic() < deadline:
        time.sleep(0.5)
        now = state()
    assert now[0] != first[0] and busy(now), (
        f"the dashboard did not follow the engine: first {first}, then {now}")
    width = page.locator(".widget-hprogress .progress-bar").first.get_attribute("style")
    assert "width: 0%" not in width, f"the KV bar did not move: {width}"
    _shot(page, "04_dashboard.png")
    _wait_until_done(page, "dashboard")
    notebook = _saved(page, lab.root / DASHBOARD)
    assert not _problems(notebook), _problems(notebook)
    plots = page.locator(".jp-OutputArea-output img")
    assert plots.count() >= 1, "no plot rendered in the page"
    plots.first.scroll_into_view_if_needed()
    assert _shot(page, "04_engine_plot.png").stat().st_size > 10_000
    page.close()


# The numbers notebook 06 has measured by the time it scores the prediction (a CPU run's).
PREDICTION_SETUP = """import labs
predicted_ratio = 6.9
on, off = {"TTFT p95 (s)": 4.1}, {"TTFT p95 (s)": 25.4}"""
MY_PREDICTION = "4"  # the learner's number: 25.4 / 4.1 = 6.2 measured, so 1.55x too low


def _prediction_notebook(path: Path) -> str:
    """Notebook 06's prediction cell and score cell, as the learner gets them, after a cell that
    sets what they read; returns the answer variable's name."""
    cells = json.loads((ROOT / "notebooks" / "06_prefix_caching.ipynb").read_text())["cells"]
    source = ["".join(c["source"]) for c in cells]
    ask = next(s for s, c in zip(source, cells)
               if "exercise" in c["metadata"].get("tags", []) and "# Your prediction" in s)
    scoring = next(s for s in source if "labs.predictions.score(" in s)
    name = re.search(r"^(\w+) = \.\.\.  # your answer$", ask, re.M)[1]
    assert f"mine={name}" in scoring, scoring
    write_code_notebook(path, (PREDICTION_SETUP, ask, scoring))
    return name


def test_a_prediction_typed_in_is_scored(lab: Lab, browser: Any) -> None:
    name = _prediction_notebook(lab.root / "prediction.ipynb")
    page = _open(browser, lab, "prediction.ipynb")
    _run_all(page)
    _wait_until_done(page, "prediction")
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    verdict = cells.nth(2).locator(".jp-OutputArea-output")
    assert "not predicted yet" in verdict.inner_text(), verdict.inner_text()

    # The learner replaces the `...` on the answer's line (the cell's last) with a number.
    cells.nth(1).locator(".cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.press("Shift+Home")
    page.keyboard.type(f"{name} = {MY_PREDICTION}")
    page.keyboard.press("Shift+Enter")  # run it; the score cell below becomes the active one
    page.keyboard.press("Control+Enter")  # run the score cell, adding no cell below
    page.wait_for_function(
        """() => { const out = document.querySelectorAll('.jp-Notebook .jp-CodeCell')[2]
                       .querySelector('.jp-OutputArea-output');
                   return out && out.textContent.includes('too low'); }""", timeout=60_000)
    text = verdict.inner_text()
    shot = _shot(page, "prediction_scored.png")
    lines = text.splitlines()
    assert lines[0] == "Prediction: p95 TTFT, cache off over cache on", text
    assert lines[1].split() == ["you", MY_PREDICTION], text
    assert lines[3].split() == ["measured", "6.20"], text
    words = " ".join(text.split())  # the verdict wraps
    assert "1.55x too low" in words and "You guessed low: without the cache" in words, (text, shot)
    notebook = _saved(page, lab.root / "prediction.ipynb")
    assert not _problems(notebook), _problems(notebook)
    assert f"{name} = {MY_PREDICTION}" in "".join(notebook["cells"][1]["source"])
    page.close()
