"""The cost of history (``history=True``), on SQLite, PostgreSQL and files, in one process.

Run: ``.venv/bin/python benchmarks/bench_history.py [--n 100000] [--dsn postgresql://...]
[--only sqlite|postgres|files]``.

* ``save`` of one Task with history against the same save without (interleaved samples);
* ``save_many`` of N Tasks with history against without;
* ``history(id)`` of an entity with 100 revisions against a ``find_all`` returning 100 entities;
* ``find_all({"status": "pending"}, as_of=...)`` over N Tasks with 5 revisions each against the
  same ``find_all`` without ``as_of``;
* the storage one revision takes against the live document's.

Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import Row, make_tasks, print_table

from symphony_nb import (
    FileSystemRepository,
    PostgresRepository,
    Repository,
    SQLiteRepository,
    Task,
)

DEFAULT_DSN = os.environ.get(
    "SYMPHONY_NB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
Make = Callable[[str, bool], Repository[Task]]
Size = Callable[[Repository[Task]], Awaitable[tuple[float, float]]]


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    gc.collect()
    start = time.perf_counter()
    await action()
    return time.perf_counter() - start


async def single_saves(kept: Repository[Task], plain: Repository[Task], repeat: int) -> Row:
    tasks = {repo: make_tasks(200, seed=7) for repo in (kept, plain)}
    for repo, items in tasks.items():
        await repo.save_many(items)
    samples: dict[Repository[Task], list[float]] = {kept: [], plain: []}
    for _ in range(repeat):
        for repo in (kept, plain):
            items = tasks[repo]

            async def save_each(repo: Repository[Task] = repo, items: list[Task] = items) -> None:
                for task in items:
                    task.name = f"edit {random.random()}"
                    await repo.save(task)

            samples[repo].append(await timed(save_each) / len(items))
    with_h, without = (statistics.median(samples[r]) for r in (kept, plain))
    return Row("save, history on", with_h, without, "the same save, history off", 1.3)


async def bulk(make: Make, n: int, repeat: int) -> Row:
    samples: dict[bool, list[float]] = {True: [], False: []}
    for turn in range(repeat):
        for history in (True, False):
            repo = make(f"bulk{turn}{int(history)}", history)
            tasks = make_tasks(n, seed=turn)
            try:
                samples[history].append(await timed(lambda r=repo, t=tasks: r.save_many(t)))
            finally:
                await repo.close()
            del tasks
    with_h, without = statistics.median(samples[True]), statistics.median(samples[False])
    return Row(f"save_many of {n:,}, history on", with_h, without, "history off", 1.5)


async def long_history(kept: Repository[Task], repeat: int) -> Row:
    task = make_tasks(1, seed=3)[0]
    for i in range(100):
        task.name = f"revision {i}"
        await kept.save(task)
    others = make_tasks(100, seed=4)
    for other in others:
        other.workflow_id = "w-100"
    await kept.save_many(others)
    hist: list[float] = []
    found: list[float] = []
    for _ in range(repeat):
        hist.append(await timed(lambda: kept.history(task.id)))
        found.append(await timed(lambda: kept.find_all({"workflow_id": "w-100"})))
    assert len(await kept.history(task.id)) == 100
    return Row(
        "history(id), 100 revisions",
        statistics.median(hist),
        statistics.median(found),
        "find_all returning 100 entities",
        3.0,
    )


async def as_of(make: Make, n: int, repeat: int) -> tuple[Row, Repository[Task]]:
    repo = make("asof", True)
    tasks = make_tasks(n, seed=11)
    await repo.save_many(tasks)
    for round_ in range(4):
        for task in tasks:
            task.description = f"round {round_}: {task.description[:40]}"
        await repo.save_many(tasks)
    del tasks
    when = datetime.now(UTC)
    then: list[float] = []
    now: list[float] = []
    for _ in range(repeat):
        then.append(await timed(lambda: repo.find_all({"status": "pending"}, as_of=when)))
        now.append(await timed(lambda: repo.find_all({"status": "pending"})))
    hits = len(await repo.find_all({"status": "pending"}, as_of=when))
    row = Row(
        f"find_all(status, as_of=...), {n:,} x 5 revisions, {hits:,} hits",
        statistics.median(then),
        statistics.median(now),
        "the same find_all without as_of",
        3.0,
    )
    return row, repo


def sqlite_size(folder: Path) -> Size:
    async def size(repo: Repository[Task]) -> tuple[float, float]:
        import sqlite3

        conn = sqlite3.connect(repo.path)  # type: ignore[attr-defined]
        try:
            table = repo.table  # type: ignore[attr-defined]
            live = conn.execute(f'SELECT avg(length(doc)) FROM "{table}"').fetchone()[0]
            names = [
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if row[0] != table and row[0].startswith(table)
            ]
            revision = conn.execute(
                f'SELECT avg(length(doc)) FROM "{names[0]}" WHERE doc IS NOT NULL'
            ).fetchone()[0]
        finally:
            conn.close()
        return float(revision), float(live)

    return size


def postgres_size(dsn: str) -> Size:
    async def size(repo: Repository[Task]) -> tuple[float, float]:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            schema, table = repo.schema, repo.table  # type: ignore[attr-defined]
            names = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                schema,
            )
            history = next(r[0] for r in names if r[0] != table and r[0].startswith(table))
            live = await conn.fetchval(
                f'SELECT pg_total_relation_size(\'"{schema}"."{table}"\') / count(*)::float '
                f'FROM "{schema}"."{table}"'
            )
            revision = await conn.fetchval(
                f'SELECT pg_total_relation_size(\'"{schema}"."{history}"\') / count(*)::float '
                f'FROM "{schema}"."{history}"'
            )
        finally:
            await conn.close()
        return float(revision), float(live)

    return size


async def files_size(repo: Repository[Task]) -> tuple[float, float]:
    folder: Path = repo.path  # type: ignore[attr-defined]
    documents = [
        entry.stat().st_size
        for entry in os.scandir(folder)
        if entry.name.endswith(".json") and not entry.name.startswith(".")
    ]
    lines = count = 0
    for entry in os.scandir(folder / ".history"):
        data = Path(entry.path).read_bytes()
        lines, count = lines + len(data), count + data.count(b"\n")
    return lines / count, sum(documents) / len(documents)


async def bench(name: str, make: Make, size: Size, n: int, repeat: int) -> list[Row]:
    kept, plain = make("kept", True), make("plain", False)
    try:
        rows = [await single_saves(kept, plain, repeat), await long_history(kept, repeat)]
    finally:
        await kept.close()
        await plain.close()
    rows.append(await bulk(make, n, max(1, repeat // 2)))
    row, repo = await as_of(make, n, repeat)
    rows.append(row)
    try:
        revision, live = await size(repo)
    finally:
        await repo.close()
    print(
        f"{name}: {revision:,.0f} bytes per revision, {live:,.0f} per live document "
        f"({revision / live:.2f}x)"
    )
    return [
        Row(f"{name} {r.operation}", r.ours, r.baseline, r.baseline_name, r.target) for r in rows
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--only", choices=["sqlite", "postgres", "files"])
    args = parser.parse_args()
    rows: list[Row] = []
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as folder:
            base = Path(folder)

            def sqlite(kind: str, history: bool) -> Repository[Task]:
                return SQLiteRepository(Task, base / f"{kind}.db", history=history)

            rows += await bench("SQLite", sqlite, sqlite_size(base), args.n, args.repeat)
    if args.only in (None, "postgres"):
        prefix = f"bench_history_{uuid.uuid4().hex[:8]}"
        made: list[str] = []

        def postgres(kind: str, history: bool) -> Repository[Task]:
            made.append(f"{prefix}_{kind}")
            return PostgresRepository(Task, args.dsn, schema=made[-1], history=history)

        try:
            rows += await bench(
                "PostgreSQL", postgres, postgres_size(args.dsn), args.n, args.repeat
            )
        finally:
            import asyncpg

            conn = await asyncpg.connect(args.dsn)
            for schema in made:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
    if args.only in (None, "files"):
        with tempfile.TemporaryDirectory() as folder:
            where = Path(folder)

            def files(kind: str, history: bool) -> Repository[Task]:
                return FileSystemRepository(Task, where / kind, history=history)

            rows += await bench("files", files, files_size, args.n, args.repeat)
    print_table(rows, f"History, N = {args.n:,} Tasks, median of {args.repeat}")


if __name__ == "__main__":
    asyncio.run(main())
