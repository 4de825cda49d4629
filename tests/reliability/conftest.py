"""Figures recorded by the reliability tests, and the report that publishes them.

``figures.record(check, backend, runs=..., kills=..., ...)`` adds one row for the running test.
At the end of the session the rows are printed as a table, and written as Markdown to the
path given by ``--reliability-report`` (or ``$SYMPHONY_NB_RELIABILITY_REPORT``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

REPORT_ENV = "SYMPHONY_NB_RELIABILITY_REPORT"
ROOT = Path(__file__).resolve().parents[2]
_ROWS = pytest.StashKey[list["Row"]]()
_OUTCOMES = pytest.StashKey[dict[str, str]]()
_STARTED = pytest.StashKey[float]()


@dataclass
class Row:
    """The figures of one check on one backend, as recorded by one test."""

    nodeid: str
    check: str
    backend: str
    runs: int
    kills: int = 0
    faults: int = 0
    acknowledged: int = 0
    lost: int = 0
    detail: str = ""
    outcome: str = "?"


@dataclass
class Figures:
    """Recorder handed to a test; each ``record`` call becomes a row of the report."""

    nodeid: str
    rows: list[Row] = field(default_factory=list)

    def record(self, check: str, backend: str, runs: int, **counts: Any) -> None:
        """Add the figures of ``check`` on ``backend`` (kills, faults, acknowledged, lost, detail)."""
        self.rows.append(Row(self.nodeid, check, backend, runs, **counts))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        default=None,
        metavar="PATH",
        help="write the reliability figures recorded by tests/reliability as Markdown to PATH",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ROWS] = []
    config.stash[_OUTCOMES] = {}
    config.stash[_STARTED] = time.monotonic()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """Record this test's figures for the reliability report."""
    recorder = Figures(request.node.nodeid)
    yield recorder
    request.config.stash[_ROWS].extend(recorder.rows)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    outcomes = item.config.stash[_OUTCOMES]
    if report.failed:
        outcomes[item.nodeid] = "FAILED"
    elif hasattr(report, "wasxfail"):
        outcomes[item.nodeid] = f"**known bug** (xfail): {report.wasxfail}"
    elif report.when == "call" or (report.skipped and item.nodeid not in outcomes):
        outcomes[item.nodeid] = report.outcome


def _report_path(config: pytest.Config) -> str | None:
    try:
        path = config.getoption("--reliability-report")
    except ValueError:  # the option is registered only when this folder is on the command line
        path = None
    return path or os.environ.get(REPORT_ENV) or None


# Report order: what can lose data first, then what can leak or mislead.
_ORDER = [
    "test_crash", "test_io_faults", "test_durability_order", "test_concurrency", "test_cache_coherence", "test_workers", "test_secrets", "test_hostile_ids", "test_file_safety",
    "test_filter_fuzz", "test_corrupt", "test_no_code_from_data", "test_hygiene",
]  # fmt: skip


def _rank(row: Row) -> int:
    module = row.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
    return _ORDER.index(module) if module in _ORDER else len(_ORDER)


def _rows(config: pytest.Config) -> list[Row]:
    outcomes = config.stash.get(_OUTCOMES, {})
    rows = sorted(config.stash.get(_ROWS, []), key=_rank)
    for row in rows:
        row.outcome = outcomes.get(row.nodeid, "?")
    return rows


def _summary(rows: list[Row]) -> str:
    failed = sum(row.outcome == "FAILED" for row in rows)
    known = sum(row.outcome.startswith("**known bug**") for row in rows)
    return (
        f"**{sum(r.lost for r in rows)} of {sum(r.acknowledged for r in rows)} acknowledged "
        f"writes lost** across {sum(r.kills for r in rows)} SIGKILLs and "
        f"{sum(r.faults for r in rows)} injected faults or hostile inputs; "
        f"{len(rows)} checks, {failed} failed, {known} known bugs (strict xfail)."
    )


def _rerun(nodeid: str) -> str:
    return f"`.venv/bin/pytest '{nodeid}'`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[Row]) -> list[str]:
    """The rows as a Markdown table, with totals."""
    head = [
        "| Check | Backend | Runs | Kills | Faults injected | Writes acknowledged "
        "| Writes lost | Result | Detail | Rerun |",
        "|---|---|--:|--:|--:|--:|--:|---|---|---|",
    ]
    lines = [
        f"| {_cell(r.check)} | {r.backend} | {r.runs} | {r.kills} | {r.faults} "
        f"| {r.acknowledged} | {r.lost} | {_cell(r.outcome)} | {_cell(r.detail)} "
        f"| {_rerun(r.nodeid)} |"
        for r in rows
    ]
    total = (
        f"| **total** | | {sum(r.runs for r in rows)} | {sum(r.kills for r in rows)} "
        f"| {sum(r.faults for r in rows)} | {sum(r.acknowledged for r in rows)} "
        f"| {sum(r.lost for r in rows)} | | | |"
    )
    return [*head, *lines, total]


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def markdown(rows: list[Row], seconds: float) -> str:
    """The whole RELIABILITY.md text for ``rows``."""
    crash_runs = os.environ.get("SYMPHONY_NB_CRASH_RUNS", "30 (default)")
    lines = [
        "# Reliability",
        "",
        "Generated by `scripts/reliability-report` from the figures the tests in",
        "`tests/reliability/` recorded while they ran; do not edit by hand.",
        "",
        f"- Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {_commit()}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs; {seconds:.0f} s in total.",
        f"- Crash runs per backend (`SYMPHONY_NB_CRASH_RUNS`): {crash_runs}.",
        "- *Runs*: kill cycles, processes, tasks or generated inputs, depending on the check. "
        "*Faults injected*: SIGKILLs, injected syscall errors, or hostile inputs tried. "
        "*Writes acknowledged*: writes whose success was reported to the caller; "
        "*Writes lost*: those not found afterwards at their version or later (must be 0).",
        "",
        _summary(rows),
        "",
        *table(rows),
        "",
        "## Known bugs",
        "",
        *(
            sorted(
                {
                    f"- {r.check} on {r.backend}: {r.outcome.split(': ', 1)[1]}"
                    for r in rows
                    if r.outcome.startswith("**known bug**")
                }
            )
            or ["- none"]
        ),
        "",
        "## Rerun",
        "",
        "- Everything and regenerate this file: `scripts/reliability-report` "
        "(longer crash runs: `SYMPHONY_NB_CRASH_RUNS=300 scripts/reliability-report`).",
        "- One check: the command in its *Rerun* column.",
        "- PostgreSQL rows need the server (DSN in `SYMPHONY_NB_TEST_POSTGRES`); I/O fault rows "
        "need `strace`.",
        "",
    ]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = _rows(config)
    if not rows:
        return
    path = _report_path(config)
    terminalreporter.section("reliability figures")
    terminalreporter.write_line(_summary(rows))
    if path or config.get_verbosity() > 0:
        for line in table(rows):
            terminalreporter.write_line(line)
    if path:
        seconds = time.monotonic() - config.stash[_STARTED]
        Path(path).write_text(markdown(rows, seconds), encoding="utf-8")
        terminalreporter.write_line(f"reliability report written to {path}")
