"""PostgresRepository against raw asyncpg doing the same work, in one process.

Run: ``.venv/bin/python benchmarks/bench_postgres.py [--n 100000] [--dsn postgresql://...]``.
Both sides use a table of the same layout and indexes in a scratch schema (dropped at the end),
the same pooled connections, and validate every row into a ``Task`` with pydantic. Prints the
median of several runs for each side and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from _common import make_tasks

from symphony_nb import PostgresRepository, Task, TaskStatus

DEFAULT_DSN = os.environ.get(
    "SYMPHONY_NB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def compare(
    sides: list[Callable[[], Awaitable[Any]]],
    repeat: int,
    before: Callable[[], Awaitable[Any]] | None = None,
) -> list[float]:
    """Median time of each side; samples are interleaved so load changes hit all sides alike.

    Each sample starts from a collected heap, so no side pays for garbage left by another.
    """
    samples: list[list[float]] = [[] for _ in sides]
    for _ in range(repeat):
        for side, out in zip(sides, samples, strict=True):
            if before is not None:
                await before()
            gc.collect()
            out.append(await timed(side))
    return [statistics.median(out) for out in samples]


class Raw:
    """What a careful user would write with asyncpg alone, on a table like the repository's."""

    def __init__(self, pool: Any, table: str) -> None:
        self.pool = pool
        self.table = table

    async def save_many(self, tasks: list[Task]) -> None:
        rows = [(t.id, t.version + 1, t.model_dump_json()) for t in tasks]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table(
                self.table.split(".")[1].strip('"'),
                schema_name=self.table.split(".")[0].strip('"'),
                records=rows,
                columns=["id", "version", "doc"],
            )

    async def find_status(self, status: str) -> list[Task]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT id, doc FROM {self.table} "
                "WHERE (doc->>'status') COLLATE \"C\" = $1 ORDER BY id",
                status,
            )
        return [Task.model_validate_json(row[1]) for row in rows]

    async def find_by_id(self, entity_id: str) -> Task | None:
        async with self.pool.acquire() as conn:
            doc = await conn.fetchval(f"SELECT doc FROM {self.table} WHERE id = $1", entity_id)
        return None if doc is None else Task.model_validate_json(doc)


def row(name: str, ours: float, base: float, unit: str = "s") -> str:
    scale = 1e6 if unit == "us" else 1.0
    return (
        f"| {name} | {ours * scale:.3f} {unit} | {base * scale:.3f} {unit} | {ours / base:.2f}x |"
    )


async def run(n: int, dsn: str, repeat: int) -> list[str]:
    schema = f"symphony_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    repo = PostgresRepository(Task, dsn, schema=schema)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
    try:
        await repo.count()  # creates the schema, the table and its indexes
        table = f'"{schema}".raw_task'
        await admin.execute(f'CREATE TABLE {table} (LIKE "{schema}".task INCLUDING ALL)')
        raw = Raw(pool, table)
        tasks = make_tasks(n)
        gc.collect()
        gc.freeze()  # the harness's own 100k objects are not part of any measured operation
        lines = []

        async def truncate() -> None:
            await admin.execute(f'TRUNCATE "{schema}".task, {table}')

        ours, base = await compare(
            [lambda: repo.save_many(tasks), lambda: raw.save_many(tasks)], repeat, truncate
        )
        lines.append(row(f"save_many of {n:,} (raw: COPY)", ours, base))
        await truncate()
        await repo.save_many(tasks)
        await raw.save_many(tasks)
        await admin.execute(f'ANALYZE "{schema}".task')
        await admin.execute(f"ANALYZE {table}")

        status = TaskStatus.RUNNING
        hits = len(await repo.find_all({"status": status}))

        async def raw_gc_paused() -> None:
            gc.disable()
            try:
                await raw.find_status(status.value)
            finally:
                gc.enable()

        ours, base, base_gc = await compare(
            [
                lambda: repo.find_all({"status": status}),
                lambda: raw.find_status(status.value),
                raw_gc_paused,
            ],
            repeat,
        )
        lines.append(row(f"find_all status ({hits:,} rows)", ours, base))
        lines.append(row(f"find_all status ({hits:,} rows), raw with gc paused", ours, base_gc))

        ids = random.Random(1).sample([t.id for t in tasks], 2000)

        async def ours_by_id() -> None:
            for entity_id in ids:
                await repo.find_by_id(entity_id)

        async def raw_by_id() -> None:
            for entity_id in ids:
                await raw.find_by_id(entity_id)

        ours, base = await compare([ours_by_id, raw_by_id], repeat)
        lines.append(row("find_by_id (per call)", ours / len(ids), base / len(ids), "us"))
        return lines
    finally:
        await repo.close()
        await pool.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    lines = asyncio.run(run(args.n, args.dsn, args.repeat))
    print(f"PostgreSQL, N = {args.n:,} Tasks, median of {args.repeat} runs\n")
    print("| operation | symphony_nb | raw asyncpg + pydantic | ratio |")
    print("|---|--:|--:|--:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
