"""End to end in a real browser: JupyterLab, the forms notebook, a config typed and saved.

JupyterLab is served on 127.0.0.1 (a free port, a token, scratch Jupyter folders) from a copy
of ``notebooks/03_forms.ipynb``; the notebook's storage is a SQLite file given through
``SYMPHONY_NB_URL``. Debian's chromium, driven by playwright, runs every cell, types a name
and an instruction template into the AgentConfig form and clicks Save; the test then reads
the SQLite file itself. A second test runs ``notebooks/01_quickstart.ipynb`` plus one cell
that displays a task whose name and output carry an ``<img onerror=...>`` payload, and looks
at the rich display: badges, the table from ``find_all``, a folded JSON field, and the payload
shown as text without running. Screenshots are saved under ``artifacts/``.

Without chromium or playwright the test skips (the reason says "browser");
``SYMPHONY_NB_REQUIRE_BROWSER=1`` turns that skip into a failure (see conftest).
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil  # type: ignore[import-untyped]
import pytest

from symphony_nb import AgentConfig, open_repository

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "03_forms.ipynb"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]
# Run All before the kernel is connected runs nothing, so wait for the connection first.
KERNEL_READY = """() => {
    const kernel = window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel;
    return kernel?.connectionStatus === "connected" && kernel?.status === "idle";
}"""
pytestmark = pytest.mark.browser


def chromium_path() -> str:
    """Debian's chromium, or skip: this test drives a real browser."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("browser test needs chromium (apt-get install -y chromium)")
    return found


def copy_without_outputs(source: Path, target: Path) -> None:
    """Copy a notebook with its stored outputs cleared, so every output seen is a fresh one."""
    import nbformat

    book = nbformat.read(source, as_version=4)  # type: ignore[no-untyped-call]
    for cell in book.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(book, target)  # type: ignore[no-untyped-call]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Lab:
    """A running JupyterLab server."""

    url: str
    token: str
    process: subprocess.Popen[bytes]

    def api(self, path: str, method: str = "GET") -> int:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)


@contextlib.contextmanager
def jupyter_lab(root: Path, scratch: Path, env: dict[str, str]) -> Iterator[Lab]:
    """Serve ``root`` with JupyterLab; shut it and its kernels down on exit."""
    port, token = free_port(), secrets.token_hex(16)
    lab_env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(scratch / "config"),
        "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"),
        "JUPYTER_DATA_DIR": str(scratch / "data"),
        "IPYTHONDIR": str(scratch / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        **env,
    }
    scratch.mkdir(parents=True, exist_ok=True)
    log = (scratch / "lab.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        env=lab_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    lab = Lab(f"http://127.0.0.1:{port}", token, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                if lab.api("/api/status") == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"JupyterLab did not start:\n{(scratch / 'lab.log').read_text()}"
                )
            time.sleep(0.2)
        yield lab
    finally:
        stop_lab(lab)
        log.close()


def stop_lab(lab: Lab) -> None:
    """Shut the server down through its API (it stops its kernels), then make sure."""
    children = psutil.Process(lab.process.pid).children(recursive=True)
    with contextlib.suppress(OSError, urllib.error.URLError):
        lab.api("/api/shutdown", method="POST")
    try:
        lab.process.wait(20)
    except subprocess.TimeoutExpired:
        lab.process.kill()
        lab.process.wait(10)
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()
    assert not alive, f"kernels left running after the server stopped: {alive}"


def run_all(page: Page, lab: Lab, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab and start Run All once its kernel is connected."""
    page.set_default_timeout(60_000)
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    page.wait_for_function(KERNEL_READY)
    # Not awaited: the command's promise only settles when every cell has run.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def test_config_typed_in_the_browser_is_stored(tmp_path: Path) -> None:
    executable = chromium_path()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("browser test needs playwright (pip install playwright)")
    root = tmp_path / "lab"
    root.mkdir()
    copy_without_outputs(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    url = f"sqlite:///{tmp_path / 'forms.db'}"
    ARTIFACTS.mkdir(exist_ok=True)

    with (
        jupyter_lab(root, tmp_path / "jupyter", {"SYMPHONY_NB_URL": url}) as lab,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            run_all(page, lab, NOTEBOOK)
            # The last cell prints the agent's answer: every cell before it has run.
            answer = page.locator(".jp-OutputArea-output").filter(has_text="You asked: What")
            expect(answer.first).to_be_visible()

            form_cell = page.locator(".jp-CodeCell").filter(
                has_text="config_form = AgentConfigForm(configs)"
            )
            form = form_cell.locator(".jp-OutputArea-output")
            expect(form.get_by_text("AgentConfig (new)")).to_be_visible()

            def field(name: str, kind: str) -> Locator:
                row = form.locator(f".widget-{kind}").filter(
                    has=page.locator("label", has_text=re.compile(f"^{name}$"))
                )
                return row.locator("input, textarea").first

            field("name", "text").fill("Browser Bot")
            field("instruction_template", "textarea").fill("You are {name}.")
            expect(form.get_by_text("You are Browser Bot.")).to_be_visible()  # live preview
            form.get_by_role("button", name="Save").click()

            repo = open_repository(AgentConfig, url)
            try:
                deadline = time.monotonic() + 30
                while not (found := repo.sync.find_all({"name": "Browser Bot"})):
                    assert time.monotonic() < deadline, "the config never reached the store"
                    time.sleep(0.1)
                (config,) = found
                assert config.instruction_template == "You are {name}."
                assert config.version == 1
                expect(form.get_by_text(config.id).first).to_be_visible()
            finally:
                repo.sync.close()
            page.screenshot(path=str(ARTIFACTS / "forms-notebook.png"), full_page=True)
        finally:
            browser.close()


HOSTILE = '<img src=x onerror="window.snbUnescaped = true">'
XSS_CELL = f"""from IPython.display import HTML, display

display(HTML({HOSTILE.replace("snbUnescaped", "snbControl")!r}))  # the payload, not escaped
Task(name={HOSTILE!r}, output_data={{"response": {HOSTILE!r}}})"""


def test_rich_display_in_the_browser(tmp_path: Path) -> None:
    executable = chromium_path()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("browser test needs playwright (pip install playwright)")
    import nbformat

    root = tmp_path / "lab"
    root.mkdir()
    name = "01_quickstart.ipynb"
    copy_without_outputs(ROOT / "notebooks" / name, root / name)
    book = nbformat.read(root / name, as_version=4)  # type: ignore[no-untyped-call]
    book.cells.append(nbformat.v4.new_code_cell(XSS_CELL))  # type: ignore[no-untyped-call]
    nbformat.write(book, root / name)  # type: ignore[no-untyped-call]
    ARTIFACTS.mkdir(exist_ok=True)

    with jupyter_lab(root, tmp_path / "jupyter", {}) as lab, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            run_all(page, lab, name)

            def output(source: str) -> Locator:
                cell = page.locator(".jp-CodeCell").filter(has_text=source)
                found = cell.locator(".jp-OutputArea-output")
                found.first.scroll_into_view_if_needed()
                return found

            # The control payload ran, so an unescaped one would run too.
            page.wait_for_function("() => window.snbControl === true")
            hostile = output("display(HTML(").locator(".snb-entity.snb-task")
            expect(hostile.locator(".snb-title")).to_have_text(HOSTILE)
            expect(hostile.locator("img")).to_have_count(0)
            page.wait_for_timeout(500)
            assert page.evaluate("() => window.snbUnescaped") is None

            card = output("task_repo.sync.get(task.id)").locator(".snb-entity.snb-task")
            expect(card.locator(".snb-badge.snb-status-completed")).to_have_text("completed")
            expect(card.locator(".snb-badge.snb-priority-medium")).to_be_visible()
            expect(card.locator("time.snb-time").first).to_have_attribute(
                "title", re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00$")
            )
            folded = card.locator("details.snb-more").filter(has_text="offline answer")
            expect(folded.locator("pre")).not_to_be_visible()
            folded.locator("summary").click()
            expect(folded.locator("pre")).to_be_visible()

            table = output('task_repo.sync.find_all(order_by=["-priority", "name"])')
            rows = table.locator(".snb-list table.snb-table tbody tr")
            expect(rows).to_have_count(3)
            expect(rows.first.locator(".snb-priority-critical")).to_be_visible()
            expect(rows.first).to_contain_text("Third Task")

            expect(page.locator(".snb-registry")).to_contain_text("agent_config")
            repo = page.locator(".snb-repository")
            expect(repo.locator(".snb-count")).to_have_text("3")
            expect(repo).to_contain_text("memory of this process")
            card.evaluate("node => node.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(ARTIFACTS / "quickstart-display.png"))
        finally:
            browser.close()


def test_history_in_the_browser(tmp_path: Path) -> None:
    """The history notebook: its diff renders as a table, the form's history panel lists the
    revisions, and a hostile value in a diff stays text."""
    executable = chromium_path()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("browser test needs playwright (pip install playwright)")
    import nbformat

    root = tmp_path / "lab"
    root.mkdir()
    name = "07_history.ipynb"
    copy_without_outputs(ROOT / "notebooks" / name, root / name)
    book = nbformat.read(root / name, as_version=4)  # type: ignore[no-untyped-call]
    hostile = (
        "from symphony_nb import Task, diff\n"
        "diff(Task(id='x', name='a'), Task(id='x', name="
        "'<img src=x onerror=\"window.snbDiffUnescaped=1\">'))"
    )
    book.cells.insert(-1, nbformat.v4.new_code_cell(hostile))  # type: ignore[no-untyped-call]
    nbformat.write(book, root / name)  # type: ignore[no-untyped-call]
    ARTIFACTS.mkdir(exist_ok=True)

    with jupyter_lab(root, tmp_path / "jupyter", {}) as lab, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            run_all(page, lab, name)

            def output(source: str) -> Locator:
                cell = page.locator(".jp-CodeCell").filter(has_text=source)
                found = cell.locator(".jp-OutputArea-output")
                found.first.scroll_into_view_if_needed()
                return found

            changes = output("symphony_nb.diff(history[1], history[2])").locator(
                "table.symphony-diff tr"
            )
            expect(changes).to_have_count(2)  # the header and llm_config.temperature
            expect(changes.nth(1)).to_contain_text("model_config.temperature")
            expect(changes.nth(1)).to_contain_text("1.4")
            panel = output("panel = form.toggle_history()")
            # v1-v3 the edits, v4 the revert, v5 the delete, v6 the undelete
            expect(panel.locator("select").first.locator("option")).to_have_count(6)
            expect(panel.locator("table.symphony-diff")).to_be_visible()
            expect(panel.get_by_role("button", name="Revert to this version")).to_be_visible()
            unsafe = output("diff(Task(id='x', name='a')")
            expect(unsafe.locator("table.symphony-diff")).to_contain_text("<img src=x")
            expect(unsafe.locator("img")).to_have_count(0)
            page.wait_for_timeout(500)
            assert page.evaluate("() => window.snbDiffUnescaped") is None
            page.screenshot(path=str(ARTIFACTS / "history-notebook.png"), full_page=True)
        finally:
            browser.close()
