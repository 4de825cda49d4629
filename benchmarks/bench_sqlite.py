"""SQLiteRepository against raw sqlite3 and TinyDB doing the same work, in one process.

Run: ``.venv/bin/python benchmarks/bench_sqlite.py [--n 100000] [--repeat 3] [--no-tinydb]``
and, for memory, ``--iterate-million`` (fills a 1,000,000-task file in a child process,
then iterates over it with ``iter_all`` in a fresh one and reports its peak RSS).

Raw sqlite3 runs on a table made by the same schema (generated columns, indexes, CHECK),
with the same pragmas (WAL, synchronous=FULL), and validates every row with pydantic like
a careful user would; it is given the gc pause the library uses as a second baseline.
TinyDB uses its caching middleware; its results are validated into Tasks too. It is loaded
after our side is measured, so each side runs with only its own data in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, make_tasks, median, print_table

from symphony_nb import SQLiteRepository, Task


def raw_connection(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection on a file whose schema the library made."""
    repo = SQLiteRepository(Task, path)
    repo.sync.count()
    repo.sync.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def amedian(make: Callable[[], Awaitable[object]], repeat: int) -> float:
    """Median time of ``await make()`` on one event loop, after one warm-up run."""

    async def run() -> float:
        await make()
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            await make()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    return asyncio.run(run())


def raw_validate(rows: list[tuple[str]], pause_gc: bool) -> list[Task]:
    if pause_gc:
        gc.disable()
    try:
        return [Task.model_validate_json(doc) for (doc,) in rows]
    finally:
        gc.enable()


def bench_sqlite(
    tasks: list[Task], folder: Path, repeat: int
) -> tuple[list[Row], dict[str, float]]:
    rows: list[Row] = []
    counter = iter(range(10**6))

    def fresh(name: str) -> Path:
        return folder / f"{name}-{next(counter)}.db"

    # ---- save_many: library vs raw executemany + model_dump_json in one transaction
    times: dict[str, list[float]] = {"ours": [], "raw": [], "bare": []}

    def ours_save() -> None:
        repo = SQLiteRepository(Task, fresh("ours"))
        repo.sync.count()  # schema made outside the timing, as for the baseline
        start = time.perf_counter()
        repo.sync.save_many(tasks)
        times["ours"].append(time.perf_counter() - start)
        repo.sync.close()

    def raw_save(bare: bool) -> None:
        path = fresh("raw")
        if bare:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("CREATE TABLE task (id TEXT PRIMARY KEY, version INTEGER, doc TEXT)")
        else:
            conn = raw_connection(path)
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO task (id, version, doc) VALUES (?, ?, ?)",
            ((t.id, t.version, t.model_dump_json()) for t in tasks),
        )
        conn.execute("COMMIT")
        times["bare" if bare else "raw"].append(time.perf_counter() - start)
        conn.close()

    for _ in range(repeat):  # interleaved, so drifting machine load hits both sides
        ours_save()
        raw_save(bare=False)
        raw_save(bare=True)
    ours, raw, bare = (statistics.median(times[k]) for k in ("ours", "raw", "bare"))
    rows.append(Row(f"save_many({len(tasks)})", ours, raw, "raw executemany", 1.5))
    rows.append(Row(f"save_many({len(tasks)})", ours, bare, "raw, table without indexes"))

    # ---- reads on one filled file
    path = fresh("read")
    repo = SQLiteRepository(Task, path)
    repo.sync.save_many(tasks)
    conn = sqlite3.connect(path, isolation_level=None)
    status = "pending"
    query = "SELECT doc FROM task WHERE status = ? ORDER BY id"
    hits = len(conn.execute(query, (status,)).fetchall())

    find = amedian(lambda: repo.find_all({"status": status}), repeat)
    raw_validate(conn.execute(query, (status,)).fetchall(), False)  # warm-up
    plain = median(lambda: raw_validate(conn.execute(query, (status,)).fetchall(), False), repeat)
    paused = median(lambda: raw_validate(conn.execute(query, (status,)).fetchall(), True), repeat)
    rows.append(Row(f"find_all(status) {hits} hits", find, plain, "raw + validate", 1.3))
    rows.append(Row(f"find_all(status) {hits} hits", find, paused, "raw, gc paused"))

    # ---- find_by_id through the async API, one event loop, random ids
    ids = random.Random(1).sample([t.id for t in tasks], min(5000, len(tasks)))

    async def ours_get() -> None:
        for entity_id in ids:
            await repo.find_by_id(entity_id)

    def raw_get() -> None:
        for entity_id in ids:
            (doc,) = conn.execute("SELECT doc FROM task WHERE id = ?", (entity_id,)).fetchone()
            Task.model_validate_json(doc)

    def sync_get() -> None:
        for entity_id in ids[:1000]:
            repo.sync.find_by_id(entity_id)

    per = len(ids)
    ours = amedian(ours_get, repeat) / per
    raw_get()  # warm-up
    raw = median(raw_get, repeat) / per
    rows.append(Row("find_by_id (await)", ours, raw, "raw get + validate", 2.0))
    rows.append(Row("find_by_id (repo.sync)", median(sync_get, repeat) / 1000, raw, "raw"))

    # ---- a few more, for the record
    rows.append(
        Row(
            "count(status)",
            median(lambda: repo.sync.count({"status": status}), repeat),
            median(
                lambda: conn.execute(
                    "SELECT count(*) FROM task WHERE status = ?", (status,)
                ).fetchone(),
                repeat,
            ),
            "raw count",
        )
    )
    ours_saves: list[float] = []
    raw_saves: list[float] = []

    async def saves() -> None:
        for i in range(50):
            task = tasks[i].model_copy(update={"id": f"single-{i}", "version": 0})
            start = time.perf_counter()
            await repo.save(task)
            ours_saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO task (id, version, doc) VALUES (?, ?, ?)",
                (f"raw-{i}", 0, task.model_dump_json()),
            )
            conn.execute("COMMIT")
            raw_saves.append(time.perf_counter() - start)

    asyncio.run(saves())
    conn.close()
    repo.sync.close()
    insert = statistics.median(ours_saves)
    rows.append(Row("save(1) (await)", insert, statistics.median(raw_saves), "raw insert"))
    return rows, {"find": find, "insert": insert}


def bench_tinydb(
    docs: list[dict[str, object]], folder: Path, repeat: int, ours: dict[str, float]
) -> list[Row]:
    """TinyDB doing the same work; ``ours`` holds our times, measured before TinyDB loaded.

    Each side is measured with only its own data in memory: TinyDB keeps its whole table as
    Python objects, and the collector passes over them would otherwise slow our side too.
    """
    from tinydb import Query, TinyDB
    from tinydb.middlewares import CachingMiddleware
    from tinydb.storages import JSONStorage

    db = TinyDB(folder / "tiny.json", storage=CachingMiddleware(JSONStorage))
    db.insert_multiple(docs)
    db.storage.flush()
    size = len(docs)
    docs.clear()  # the store holds its own copies; keep only what a TinyDB user would have
    gc.collect()

    def tiny_find() -> list[Task]:
        return [Task.model_validate(doc) for doc in db.search(Query().status == "pending")]

    find = median(tiny_find, repeat)
    inserts = []
    for task in make_tasks(50, seed=99):
        doc = task.model_dump(mode="json")
        start = time.perf_counter()
        db.insert(doc)
        inserts.append(time.perf_counter() - start)
    db.close()
    return [
        Row("find_all(status) as models", ours["find"], find, "TinyDB cached", 2.0, True),
        Row(
            f"insert 1 into {size} (await)",
            ours["insert"],
            statistics.median(inserts),
            "TinyDB cached",
            100.0,
            True,
        ),
    ]


# ---------------------------------------------------------------------- memory: 1M tasks


def fill(path: str, n: int) -> None:
    repo = SQLiteRepository(Task, path)
    for start in range(0, n, 20000):
        repo.sync.save_many(make_tasks(min(20000, n - start), seed=7, start=start))
    repo.sync.close()


def iterate(path: str) -> None:
    async def run() -> int:
        count = 0
        async with SQLiteRepository(Task, path) as repo:
            async for _ in repo.iter_all():
                count += 1
        return count

    start = time.perf_counter()
    count = asyncio.run(run())
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"iter_all over {count} tasks: {seconds:.1f} s, peak RSS {peak_mb:.0f} MB")


def iterate_million(n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "million.db")
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--fill", path, "--n", str(n)], check=True)
        print(f"filled {n} tasks in {time.perf_counter() - start:.0f} s")
        subprocess.run([sys.executable, __file__, "--iterate", path], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-tinydb", action="store_true")
    parser.add_argument("--iterate-million", action="store_true")
    parser.add_argument("--fill", help=argparse.SUPPRESS)
    parser.add_argument("--iterate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        return fill(args.fill, args.n)
    if args.iterate:
        return iterate(args.iterate)
    if args.iterate_million:
        return iterate_million(1_000_000 if args.n == 100_000 else args.n)
    tasks = make_tasks(args.n)
    with tempfile.TemporaryDirectory() as folder:
        rows, ours = bench_sqlite(tasks, Path(folder), args.repeat)
        if not args.no_tinydb:
            docs = [t.model_dump(mode="json") for t in tasks]
            del tasks
            rows += bench_tinydb(docs, Path(folder), max(args.repeat, 5), ours)
    print_table(rows, f"SQLite backend, N = {args.n} Tasks, median of {args.repeat}")


if __name__ == "__main__":
    main()
