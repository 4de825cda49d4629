"""``python -m symphony_nb worker`` in real processes: runs the queue, stops cleanly, refuses bad input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from symphony_nb import AgentConfig, Task, TaskStatus, open_repository
from tests.backends import store_url_sync
from tests.reliability._counting import DELAY, RUNS_FILE, runs
from tests.reliability._procs import ROOT, environment

LLM = "tests.reliability._counting:model"


def worker_command(url: str, agent: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "symphony_nb", "worker", "--url", url, "--agent", agent, *args]


def start_worker(
    url: str, agent: str, *args: str, runs_file: Path, delay: float = 0.0
) -> subprocess.Popen[str]:
    env = {**environment(), RUNS_FILE: str(runs_file), DELAY: str(delay)}
    return subprocess.Popen(
        worker_command(url, agent, "--llm", LLM, *args),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A SQLite store holding an AgentConfig and six pending tasks: (url, config id)."""
    with store_url_sync("sqlite", tmp_path) as url:
        with opened(AgentConfig, url) as configs, opened(Task, url) as tasks:
            config = AgentConfig(name="cli", instruction_template="x")
            configs.sync.save(config)
            tasks.sync.save_many(
                Task(name=f"t{n}", input_data={"query": f"q{n}"}) for n in range(6)
            )
        yield url, config.id


@contextlib.contextmanager
def opened(model: type[Any], url: str) -> Iterator[Any]:
    repo = open_repository(model, url)
    try:
        yield repo
    finally:
        repo.sync.close()


def stored(url: str) -> list[Task]:
    with opened(Task, url) as tasks:
        return tasks.sync.find_all()


def wait_until(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_worker_process_runs_the_queue_and_reports(
    queue: tuple[str, str], tmp_path: Path
) -> None:
    url, agent = queue
    proc = start_worker(url, agent, "--stop-when-idle", "--json", runs_file=tmp_path / "runs")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    report = json.loads(out.splitlines()[-1])
    assert report["completed"] == report["started"] == 6 and report["conflicts"] == 0
    assert "6 started, 6 completed" in err
    assert runs(tmp_path / "runs") == {f"q{n}": 1 for n in range(6)}
    assert {t.status for t in stored(url)} == {TaskStatus.COMPLETED}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_hands_back_what_the_worker_had_not_finished(
    queue: tuple[str, str], tmp_path: Path, stop: signal.Signals
) -> None:
    url, agent = queue
    runs_file = tmp_path / "runs"
    proc = start_worker(
        url, agent, "--concurrency", "2", "--grace", "0", runs_file=runs_file, delay=60
    )
    try:
        wait_until(lambda: sum(runs(runs_file).values()) == 2)
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "2 started, 0 completed, 0 failed, 0 cancelled, 2 handed back" in err
    tasks = stored(url)
    assert [t.status for t in tasks] == [TaskStatus.PENDING] * 6
    assert sorted(t.attempts for t in tasks) == [0, 0, 0, 0, 1, 1]


def test_the_grace_period_lets_running_tasks_finish(queue: tuple[str, str], tmp_path: Path) -> None:
    url, agent = queue
    runs_file = tmp_path / "runs"
    proc = start_worker(
        url, agent, "--concurrency", "2", "--grace", "30", runs_file=runs_file, delay=1.0
    )
    try:
        wait_until(lambda: sum(runs(runs_file).values()) >= 1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    statuses = [t.status for t in stored(url)]
    assert TaskStatus.RUNNING not in statuses
    assert statuses.count(TaskStatus.COMPLETED) == sum(runs(runs_file).values()) >= 1
    assert statuses.count(TaskStatus.PENDING) >= 3  # no new claims once it was asked to stop


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--concurrency", "0"], 2, "concurrency must be an int >= 1, got 0"),
        (["--lease", "1", "--renew-every", "2"], 2, "must be longer than its renewal interval"),
        (["--max-attempts", "0"], 2, "max_attempts must be an int >= 1"),
        (["--filter", "[1]"], 2, "--filter must be a JSON object"),
        (["--llm", "nonsense"], 2, "--llm must be module:function"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    queue: tuple[str, str], tmp_path: Path, args: list[str], status: int, message: str
) -> None:
    url, agent = queue
    proc = subprocess.run(
        worker_command(url, agent, *args),
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout) == (status, "")
    assert message in proc.stderr
    assert {t.status for t in stored(url)} == {TaskStatus.PENDING}


def test_an_unknown_agent_exits_1(queue: tuple[str, str]) -> None:
    url, _ = queue
    proc = subprocess.run(
        worker_command(url, "nobody", "--stop-when-idle"),
        cwd=ROOT,
        env={**os.environ, **environment()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "no AgentConfig with id 'nobody'" in proc.stderr


def test_a_worker_process_loads_no_notebook_library() -> None:
    code = (
        "import sys, symphony_nb.__main__, symphony_nb.services._worker\n"
        "from tqdm.auto import tqdm\n"
        "print([m for m in ('pandas', 'numpy', 'ipywidgets', 'IPython') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment(), capture_output=True, text=True
    )
    assert out.stdout.strip() == "[]", out.stderr
