"""Workers on one task queue: throughput of 4 worker processes against 1, and claim overhead.

Run: ``.venv/bin/python benchmarks/bench_workers.py [--tasks 400] [--dsn postgresql://...]``.

* Throughput: ``python -m symphony_nb worker`` processes (``--concurrency 4`` each) run tasks
  whose agent awaits 50 ms of simulated I/O, on PostgreSQL; 4 processes against 1. The time
  is read from the store (first ``started_at`` to last ``completed_at``), so interpreter
  start-up is not counted.
* Claim overhead: ``work(stop_when_idle=True)`` over 1,000 tasks with an instant agent
  against ``execute_task`` called on the same tasks one by one, in one process, on SQLite and
  PostgreSQL (``work`` with ``concurrency=1``, so both run one task at a time); the median
  of ``--repeat`` runs of each, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
from _common import Row, print_table

from symphony_nb import Agent, AgentConfig, Task, TaskManager, open_repository

HERE = Path(__file__).resolve().parent
DEFAULT_DSN = os.environ.get(
    "SYMPHONY_NB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


async def instant(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
    """An agent's model that answers at once."""
    return "ok"


async def io_bound(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
    """An agent's model that awaits 50 ms of simulated I/O (``--llm bench_workers:io_bound``)."""
    await asyncio.sleep(0.05)
    return "ok"


async def seed(url: str, n: int) -> str:
    config = AgentConfig(name="bench", instruction_template="x")
    async with open_repository(AgentConfig, url) as configs, open_repository(Task, url) as tasks:
        await configs.save(config)
        await tasks.save_many(Task(name=f"t{i}", input_data={"query": str(i)}) for i in range(n))
    return config.id


async def span(url: str) -> float:
    """Seconds from the first task started to the last completed."""
    async with open_repository(Task, url) as tasks:
        done = await tasks.find_all({"status": "completed"})
    assert done and all(t.started_at and t.completed_at for t in done)
    return max(t.completed_at for t in done) - min(t.started_at for t in done)  # type: ignore[return-value,operator,type-var]


async def throughput(dsn: str, processes: int, n: int) -> float:
    schema = f"bench_workers_{uuid.uuid4().hex[:8]}"
    url = f"{dsn}?schema={schema}"
    try:
        agent = await seed(url, n)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
        command = [sys.executable, "-m", "symphony_nb", "worker", "--url", url, "--agent", agent]
        options = ["--llm", "bench_workers:io_bound", "--concurrency", "4", "--stop-when-idle"]
        procs = [
            subprocess.Popen([*command, *options], env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(processes)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
        return (await span(url)).total_seconds()  # type: ignore[attr-defined,no-any-return]
    finally:
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def overhead(url: str, n: int) -> tuple[float, float]:
    """Seconds for ``work`` over ``n`` tasks, and for ``execute_task`` on ``n`` tasks."""
    agent = Agent(AgentConfig(name="bench", instruction_template="x"), instant)
    loop = asyncio.get_running_loop()
    async with open_repository(Task, url) as tasks:
        manager = TaskManager(tasks)
        await tasks.save_many(Task(name=f"w{i}", input_data={"query": str(i)}) for i in range(n))
        began = loop.time()
        report = await manager.work(agent, concurrency=1, stop_when_idle=True, progress=False)
        worked = loop.time() - began
        assert report.completed == n, report
        ids = await tasks.save_many(
            Task(name=f"e{i}", input_data={"query": str(i)}) for i in range(n)
        )
        began = loop.time()
        for task_id in ids:
            await manager.execute_task(task_id, agent)
        executed = loop.time() - began
    return worked, executed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []
    one = await throughput(args.dsn, 1, args.tasks)
    four = await throughput(args.dsn, 4, args.tasks)
    rows.append(
        Row(
            f"PostgreSQL, {args.tasks} tasks of 50 ms I/O: 4 worker processes (x4 concurrency)",
            four,
            one,
            "1 worker process",
            target=3.0,
            higher_is_better=True,
        )
    )
    sqlite_runs, pg_runs = [], []
    for _ in range(args.repeat):  # interleaved, so load changes hit both backends alike
        with tempfile.TemporaryDirectory() as folder:
            sqlite_runs.append(await overhead(f"sqlite:///{folder}/bench.db", args.claims))
        schema = f"bench_workers_{uuid.uuid4().hex[:8]}"
        try:
            pg_runs.append(await overhead(f"{args.dsn}?schema={schema}", args.claims))
        finally:
            conn = await asyncpg.connect(args.dsn)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
    for name, runs in (("SQLite", sqlite_runs), ("PostgreSQL", pg_runs)):
        worked = statistics.median(run[0] for run in runs)
        executed = statistics.median(run[1] for run in runs)
        rows.append(
            Row(f"{name} `work` over {args.claims} instant tasks", worked, executed,
                "`execute_task` one by one", target=1.5)
        )  # fmt: skip
    print_table(rows, f"Workers (throughput: one run; overhead: median of {args.repeat})")


if __name__ == "__main__":
    asyncio.run(main())
