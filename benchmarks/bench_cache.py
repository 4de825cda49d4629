"""The read cache: the same repository with ``cache=True`` against without, in one process.

Run: ``.venv/bin/python benchmarks/bench_cache.py [--n 20000] [--n-files 2000] [--dsn ...]``.
Per backend (PostgreSQL, files, SQLite) two repositories open the same stored data, one with
the cache and one without; samples alternate between them so load changes hit both alike.
Rows: hot ``find_by_id`` (100 ids read over and over), the same ``find_all(filter)`` repeated
(a selective filter on a field no index covers, and a large indexed one, where validating
every row into a fresh object is the floor), ``count(filter)`` repeated, and ``save``. Every
cached read still returns a new, validated object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import make_tasks

from symphony_nb import (
    FileSystemRepository,
    PostgresRepository,
    Repository,
    SQLiteRepository,
    Task,
    TaskStatus,
)

DEFAULT_DSN = os.environ.get(
    "SYMPHONY_NB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
HOT = 100
SELECTIVE = {"agent_id": "agent-7", "input_data.source": "api"}
LARGE = {"status": TaskStatus.PENDING}


async def compare(sides: list[Callable[[], Awaitable[Any]]], repeat: int) -> list[float]:
    """Median time of each side, samples interleaved, each from a collected heap."""
    samples: list[list[float]] = [[] for _ in sides]
    for _ in range(repeat):
        for side, out in zip(sides, samples, strict=True):
            gc.collect()
            start = time.perf_counter()
            await side()
            out.append(time.perf_counter() - start)
    return [statistics.median(out) for out in samples]


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


async def listening(repo: Repository[Task]) -> None:
    """Wait until the cache can answer (PostgreSQL: its listener is up)."""
    for _ in range(500):
        await repo.find_by_id("no-such-id")
        await repo.find_by_id("no-such-id")
        stats = repo.cache_stats()
        assert stats is not None
        before = stats.bypassed
        await repo.find_by_id("no-such-id")
        stats = repo.cache_stats()
        assert stats is not None
        if stats.bypassed == before:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError("the cache never started answering")


async def measure(
    name: str, plain: Repository[Task], cached: Repository[Task], ids: list[str], repeat: int
) -> list[str]:
    """The table rows of one backend."""
    await listening(cached)
    hot = ids[:HOT]
    lines: list[str] = []

    def row(operation: str, off: float, on: float, speedup: bool = True) -> None:
        ratio = f"{off / on:.1f}x faster" if speedup else f"{on / off:.2f}x"
        lines.append(f"| {name} {operation} | {fmt(off)} | {fmt(on)} | {ratio} |")

    async def reads(repo: Repository[Task], calls: int = 2000) -> None:
        for i in range(calls):
            await repo.find_by_id(hot[i % HOT])

    for entity_id in hot:
        await cached.find_by_id(entity_id)
    before = cached.cache_stats()
    off, on = await compare([lambda: reads(plain), lambda: reads(cached)], repeat)
    after = cached.cache_stats()
    assert before is not None and after is not None and after.misses == before.misses
    row("hot `find_by_id` (per call)", off / 2000, on / 2000)

    for label, criteria, calls in (
        ("selective", SELECTIVE, 20),
        ("large", LARGE, 3),
    ):
        hits = len(await plain.find_all(criteria))

        async def lists(
            repo: Repository[Task], criteria: Any = criteria, calls: int = calls
        ) -> None:
            for _ in range(calls):
                await repo.find_all(criteria)

        off, on = await compare([lambda: lists(plain), lambda: lists(cached)], repeat)
        row(f"repeated `find_all` {label} ({hits:,} rows)", off / calls, on / calls)

    async def counts(repo: Repository[Task]) -> None:
        for _ in range(50):
            await repo.count(SELECTIVE)

    off, on = await compare([lambda: counts(plain), lambda: counts(cached)], repeat)
    row("repeated `count` selective", off / 50, on / 50)

    # Saves alternate one by one between the sides (disjoint entities, so neither
    # conflicts): an fsync's time varies far more than what the cache adds.
    off_tasks = [await plain.get(entity_id) for entity_id in ids[HOT : HOT + 50]]
    on_tasks = [await cached.get(entity_id) for entity_id in ids[HOT + 50 : HOT + 100]]
    off_times: list[float] = []
    on_times: list[float] = []
    for round_ in range(repeat * 40):
        for repo, items, out in ((plain, off_tasks, off_times), (cached, on_tasks, on_times)):
            task = items[round_ % len(items)]
            task.description = uuid.uuid4().hex
            start = time.perf_counter()
            await repo.save(task)
            out.append(time.perf_counter() - start)
    off, on = statistics.median(off_times), statistics.median(on_times)
    row("`save` (cache on / off, median of alternating saves)", off, on, speedup=False)
    return lines


async def postgres(n: int, dsn: str, repeat: int) -> list[str]:
    import asyncpg

    schema = f"symphony_bench_{uuid.uuid4().hex[:8]}"
    plain = PostgresRepository(Task, dsn, schema=schema)
    cached = PostgresRepository(Task, dsn, schema=schema, cache=True)
    admin = await asyncpg.connect(dsn)
    try:
        tasks = make_tasks(n)
        await plain.save_many(tasks)
        await admin.execute(f'ANALYZE "{schema}".task')
        lines = await measure("PostgreSQL", plain, cached, [t.id for t in tasks], repeat)

        # What the notifying triggers cost every save, cached or not: the same saves into a
        # table of another schema whose triggers are dropped.
        bare = PostgresRepository(Task, dsn, schema=f"{schema}_bare")
        try:
            subjects = make_tasks(50, seed=1)
            await bare.save_many(subjects)
            for event in ("insert", "update", "delete", "truncate"):
                await admin.execute(
                    f'DROP TRIGGER symphony_nb_notify_{event} ON "{schema}_bare".task'
                )
            triggered = [await plain.get(t.id) for t in tasks[300:350]]

            async def saves(repo: Repository[Task], items: list[Task]) -> None:
                for task in items:
                    task.description = uuid.uuid4().hex
                    await repo.save(task)

            on, off = await compare(
                [lambda: saves(plain, triggered), lambda: saves(bare, subjects)], repeat
            )
        finally:
            await bare.close()
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}_bare" CASCADE')
        lines.append(
            f"| PostgreSQL `save`, notifying triggers on / off (no cache) | {fmt(off / 50)} "
            f"| {fmt(on / 50)} | {on / off:.2f}x |"
        )
        return lines
    finally:
        await cached.close()
        await plain.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def files(n: int, repeat: int) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        plain = FileSystemRepository(Task, Path(folder))
        cached = FileSystemRepository(Task, Path(folder), cache=True)
        tasks = make_tasks(n)
        await plain.save_many(tasks)
        try:
            return await measure("files", plain, cached, [t.id for t in tasks], repeat)
        finally:
            await cached.close()
            await plain.close()


async def sqlite(n: int, repeat: int) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        plain = SQLiteRepository(Task, path)
        cached = SQLiteRepository(Task, path, cache=True)
        tasks = make_tasks(n)
        await plain.save_many(tasks)
        try:
            return await measure("SQLite", plain, cached, [t.id for t in tasks], repeat)
        finally:
            await cached.close()
            await plain.close()


async def run(args: argparse.Namespace) -> list[str]:
    lines = await postgres(args.n, args.dsn, args.repeat)
    lines += await files(args.n_files, args.repeat)
    lines += await sqlite(args.n, args.repeat)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="Tasks on PostgreSQL and SQLite")
    parser.add_argument("--n-files", type=int, default=2_000, help="Tasks on files")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    lines = asyncio.run(run(args))
    print(f"N = {args.n:,} Tasks ({args.n_files:,} on files), median of {args.repeat} runs\n")
    print("| operation | cache off | cache on | ratio |")
    print("|---|--:|--:|--:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
