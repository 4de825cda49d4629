"""Worker processes on one task queue: exactly-once runs, claim conflicts, SIGKILL and recovery.

Every worker here is a real ``python -m symphony_nb worker`` process whose agent appends a line
per run to a shared file (``tests/reliability/_counting.py``), so runs are counted by the
agent itself, independently of what the store says.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from symphony_nb import AgentConfig, Task, TaskManager, TaskStatus, open_repository
from tests.backends import store_url
from tests.reliability._counting import DELAY, RUNS_FILE, runs
from tests.reliability._procs import ROOT, environment
from tests.reliability.conftest import Figures

KILLS = int(os.environ.get("SYMPHONY_NB_CRASH_RUNS", "30"))
LLM = "tests.reliability._counting:model"
QUEUES = ["postgres", "sqlite"]


async def _seed(url: str, tasks: int) -> str:
    """Store an AgentConfig and ``tasks`` pending tasks at ``url``; return the config id."""
    config = AgentConfig(name="counting", instruction_template="count")
    async with open_repository(AgentConfig, url) as configs, open_repository(Task, url) as repo:
        await configs.save(config)
        await repo.save_many(
            Task(name=f"t{n}", input_data={"query": f"q{n:04d}"}) for n in range(tasks)
        )
    return config.id


def _worker(
    url: str, agent: str, runs_file: Path, *args: str, delay: float = 0.0
) -> subprocess.Popen[str]:
    env = {**environment(), RUNS_FILE: str(runs_file), DELAY: str(delay)}
    command = [sys.executable, "-m", "symphony_nb", "worker", "--url", url, "--agent", agent]
    return subprocess.Popen(
        [*command, "--llm", LLM, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _reports(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    reports = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            reports.append(json.loads(out.splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return reports


async def _tasks(url: str) -> list[Task]:
    async with open_repository(Task, url) as repo:
        return await repo.find_all()


# ---------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("backend", QUEUES)
async def test_worker_processes_run_each_task_exactly_once(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    processes, per_process = 4, 200
    total = processes * per_process
    runs_file = tmp_path / "runs"
    async with store_url(backend, tmp_path) as url:
        agent = await _seed(url, total)
        options = ("--concurrency", "4", "--stop-when-idle", "--json")
        reports = _reports([_worker(url, agent, runs_file, *options) for _ in range(processes)])
        tasks = await _tasks(url)
    counted = runs(runs_file)
    statuses = [task.status for task in tasks]
    twice = sum(1 for n in counted.values() if n > 1)
    figures.record(
        f"workers: {processes} processes x {per_process} tasks, agent counting its runs",
        backend,
        total,
        acknowledged=statuses.count(TaskStatus.COMPLETED),
        lost=total - statuses.count(TaskStatus.COMPLETED),
        detail=f"tasks run more than once: {twice}; never run: {total - len(counted)}; "
        f"left running: {statuses.count(TaskStatus.RUNNING)}; "
        f"claim conflicts: {sum(r['conflicts'] for r in reports)}",
    )
    assert statuses == [TaskStatus.COMPLETED] * total
    assert counted == {task.input_data["query"]: 1 for task in tasks}
    assert sum(r["started"] for r in reports) == sum(r["completed"] for r in reports) == total
    assert all(task.attempts == 1 for task in tasks)


@pytest.mark.parametrize("backend", ["files", *QUEUES])
async def test_eight_workers_rarely_lose_a_claim(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    processes, total = 8, 400
    runs_file = tmp_path / "runs"
    async with store_url(backend, tmp_path) as url:
        agent = await _seed(url, total)
        options = ("--concurrency", "2", "--stop-when-idle", "--json")
        procs = [_worker(url, agent, runs_file, *options, delay=0.005) for _ in range(processes)]
        reports = _reports(procs)
        tasks = await _tasks(url)
    executed = sum(r["started"] for r in reports)
    conflicts = sum(r["conflicts"] for r in reports)
    per_task = conflicts / executed
    busy = sum(1 for r in reports if r["started"])
    figures.record(
        f"workers: {processes} processes claiming {total} tasks",
        backend,
        total,
        acknowledged=executed,
        lost=total - sum(1 for t in tasks if t.status is TaskStatus.COMPLETED),
        detail=f"claim conflicts per executed task: {per_task:.3f} ({conflicts} in all); "
        f"workers that ran tasks: {busy}",
    )
    assert executed == total and max(runs(runs_file).values()) == 1
    assert per_task < 1


# ---------------------------------------------------------------------- crash


def _started_in(runs_file: Path, pid: int) -> bool:
    if not runs_file.exists():
        return False
    return any(line.endswith(f" {pid}") for line in runs_file.read_text().splitlines())


@pytest.mark.parametrize("backend", QUEUES)
async def test_sigkill_mid_task_reruns_it_after_its_lease(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    total, lease, max_attempts = 60, 1.0, 3
    runs_file = tmp_path / "runs"
    rng = random.Random(13)
    options = (
        "--concurrency", "2", "--lease", str(lease), "--renew-every", "0.25",
        "--max-attempts", str(max_attempts), "--poll", "0.2",
    )  # fmt: skip
    # (task id, its attempt, its lease expiry) for each run a kill interrupted
    killed: list[tuple[str, int, datetime]] = []
    kills_that_hit = 0
    async with store_url(backend, tmp_path) as url:
        agent = await _seed(url, total)
        for kill in range(KILLS):
            proc = _worker(url, agent, runs_file, *options, "--name", f"k{kill}", delay=0.3)
            try:
                deadline = time.monotonic() + 60
                while not _started_in(runs_file, proc.pid):
                    assert proc.poll() is None, proc.communicate()[1]
                    assert time.monotonic() < deadline, "the worker never started a task"
                    time.sleep(0.01)
                time.sleep(rng.uniform(0, 0.25))
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            assert proc.returncode == -signal.SIGKILL
            hit = [t for t in await _tasks(url) if t.status is TaskStatus.RUNNING]
            hit = [t for t in hit if t.worker == f"k{kill}"]
            kills_that_hit += bool(hit)
            for task in hit:
                assert task.lease_expires_at is not None
                killed.append((task.id, task.attempts, task.lease_expires_at))
        drain = _worker(url, agent, runs_file, *options, "--name", "drain", "--json", delay=0.3)
        try:
            async with open_repository(Task, url) as repo:
                manager = TaskManager(repo)
                deadline = time.monotonic() + 300
                while (status := await manager.queue_status()).pending + status.running:
                    assert drain.poll() is None, drain.communicate()[1]
                    assert time.monotonic() < deadline, f"queue never drained: {status}"
                    time.sleep(0.2)
            drain.send_signal(signal.SIGTERM)
            _reports([drain])
        finally:
            if drain.poll() is None:
                drain.kill()
                drain.communicate()
        tasks = {task.id: task for task in await _tasks(url)}
    counted = runs(runs_file)
    by_status = {s: [t for t in tasks.values() if t.status is s] for s in TaskStatus}
    failed = by_status[TaskStatus.FAILED]
    rerun = [(i, n) for i, n, _ in killed if tasks[i].attempts > n]
    ended = [(i, n) for i, n, _ in killed if tasks[i].attempts == n]
    figures.record(
        "workers: SIGKILL a worker mid-task, tasks recovered after their lease",
        backend,
        KILLS,
        kills=KILLS,
        acknowledged=total,
        lost=len(by_status[TaskStatus.PENDING]) + len(by_status[TaskStatus.RUNNING]),
        detail=f"{len(killed)} runs killed mid-task ({len({i for i, _, _ in killed})} tasks): "
        f"{len(rerun)} re-run after their lease ran out, {len(ended)} ended failed at "
        f"max_attempts={max_attempts}; agent runs {sum(counted.values())} for "
        f"{sum(t.attempts for t in tasks.values())} attempts; none left running",
    )
    assert kills_that_hit == KILLS  # every kill interrupted at least one run
    assert not by_status[TaskStatus.PENDING] and not by_status[TaskStatus.RUNNING]
    assert not by_status[TaskStatus.CANCELLED]
    for task in failed:
        assert task.attempts == max_attempts, task
        assert task.error and f"max_attempts={max_attempts} reached" in task.error
    for task_id, attempt in ended:
        assert tasks[task_id].status is TaskStatus.FAILED and attempt == max_attempts
    last_kill = {i: expiry for i, _, expiry in killed}
    for task_id, expiry in last_kill.items():
        task = tasks[task_id]
        if task.status is TaskStatus.COMPLETED:
            assert task.started_at is not None and task.started_at > expiry  # after the lease
    for task in tasks.values():
        ran = counted[task.input_data["query"]]
        assert ran <= task.attempts, (task, ran)  # a kill can land before the agent starts
        assert task.status is not TaskStatus.COMPLETED or ran >= 1


# ---------------------------------------------------------------------- bad input


BAD_OPTIONS: list[dict[str, Any]] = [
    {"concurrency": 0},
    {"concurrency": -3},
    {"concurrency": True},
    {"lease": 0},
    {"lease": -1},
    {"lease": 2, "renew_every": 2},
    {"lease": 2, "renew_every": 3},
    {"lease": float("inf")},
    {"max_attempts": 0},
    {"max_attempts": 1.5},
]


@pytest.mark.parametrize("backend", QUEUES)
async def test_bad_worker_options_are_refused_before_any_claim(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    from symphony_nb import Agent

    refused = 0
    async with store_url(backend, tmp_path) as url:
        await _seed(url, 3)
        async with open_repository(Task, url) as repo:
            manager = TaskManager(repo)
            agent = Agent(AgentConfig(name="a", instruction_template="x"))
            for options in BAD_OPTIONS:
                with pytest.raises(ValueError):
                    await manager.work(agent, stop_when_idle=True, progress=False, **options)
                refused += 1
            unknown = ["nope", "x" * 200]
            for task_id in unknown:
                with pytest.raises(LookupError if task_id == "nope" else ValueError):
                    await manager.cancel(task_id)
                refused += 1
            untouched = await repo.find_all()
    figures.record(
        "workers: bad options and unknown ids refused before any claim",
        backend,
        len(BAD_OPTIONS) + 2,
        faults=refused,
        detail="concurrency < 1, leases not longer than their renewal, max_attempts < 1, "
        "cancel of an unknown or invalid id",
    )
    assert [t.status for t in untouched] == [TaskStatus.PENDING] * 3
    assert all(t.version == 1 for t in untouched)


_RUN_PENDING = """
import asyncio, json, sys
from symphony_nb import AgentConfig, Task, TaskManager, open_repository
from symphony_nb.services.agent import Agent
from tests.reliability._counting import model

async def main(url):
    async with open_repository(Task, url) as repo:
        agent = Agent(AgentConfig(name="a", instruction_template="x"), model)
        print("ready", flush=True)
        sys.stdin.readline()
        done = await TaskManager(repo).run_pending(agent, concurrency=4, progress=False)
        print(json.dumps([t.status.value for t in done]))

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize("backend", QUEUES)
async def test_run_pending_from_two_processes_shares_the_batch(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    total = 60
    runs_file = tmp_path / "runs"
    async with store_url(backend, tmp_path) as url:
        await _seed(url, total)
        # Tasks long enough (60 x 50 ms over 4 slots: 0.75 s for one process alone) that
        # the second process is running before the first could take the whole batch.
        env = {**environment(), RUNS_FILE: str(runs_file), DELAY: "0.05"}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _RUN_PENDING, url],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outs = []
        try:
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            for proc in procs:
                out, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, err
                outs.append(json.loads(out.splitlines()[-1]))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        tasks = await _tasks(url)
    counted = runs(runs_file)
    figures.record(
        "workers: run_pending from 2 processes on one batch (the reported ConflictError)",
        backend,
        total,
        acknowledged=sum(len(out) for out in outs),
        lost=total - sum(1 for t in tasks if t.status is TaskStatus.COMPLETED),
        detail=f"tasks run by each process: {[len(out) for out in outs]}; "
        f"run more than once: {sum(1 for n in counted.values() if n > 1)}; errors: 0",
    )
    assert sum(len(out) for out in outs) == total and all(outs)
    assert {s for out in outs for s in out} == {"completed"}
    assert counted == {task.input_data["query"]: 1 for task in tasks}
