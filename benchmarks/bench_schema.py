"""Schema evolution on SQLite: reads over documents one version old, and ``migrate``.

Run: ``.venv/bin/python benchmarks/bench_schema.py [--n 100000] [--repeat 3]``.

``Job`` is ``Task`` at schema version 2, with an upgrader from version 1 that moves
``input_data.query`` to ``input_data.prompt``. The store is filled with ``n`` version-1
documents (as the model stored them before it declared a version), then:

* ``find_all()`` and ``to_dataframe()`` over them (every document upgraded on the way),
  against the same reads after ``migrate`` made every document current (target: at most 2x);
* a filter on the moved field over the old documents against the same over current ones;
* ``migrate`` of all ``n`` against ``save_many`` of the same entities into an empty store
  (target: migrate takes at most twice as long, i.e. at least half the throughput).

The other side of the first target, the all-current reads against the code before schema
versions existed, is ``side_by_side.py`` with ``bench_dataframe.py`` and ``bench_sqlite.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import Row, make_tasks, print_table

from symphony_nb import SQLiteRepository, Task, upgrader
from symphony_nb.stores import Record, StoreLayer


class Job(Task):
    """A Task whose ``input_data.query`` became ``input_data.prompt`` in schema version 2."""

    __schema_version__ = 2


@upgrader(Job, from_version=1)
def query_to_prompt(doc: dict[str, Any]) -> dict[str, Any]:
    data = doc.get("input_data")
    if isinstance(data, dict) and "query" in data:
        data["prompt"] = data.pop("query")
    return doc


def backend(repo: SQLiteRepository[Any]) -> Any:
    store: Any = repo.store
    while isinstance(store, StoreLayer):
        store = store.inner
    return store


async def timed(make: Callable[[], Awaitable[object]], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await make()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


async def run(n: int, repeat: int, folder: Path) -> list[Row]:
    tasks = make_tasks(n)
    old = [
        Record(t.id, t.model_dump_json(by_alias=True), t.version, None) for t in tasks
    ]  # what the model wrote before it had a version: no "$" key
    jobs = [Job.model_validate(t.model_dump()) for t in tasks]
    for job in jobs:
        job.input_data["prompt"] = job.input_data.pop("query")

    async with SQLiteRepository(Job, folder / "old.db") as repo:
        for start in range(0, n, 10_000):
            await backend(repo).write(old[start : start + 10_000], create=True)
        moved = {"input_data.prompt": {"$contains": "report"}}
        old_find = await timed(lambda: repo.find_all(), repeat)
        old_frame = await timed(lambda: repo.to_dataframe(), repeat)
        old_filter = await timed(lambda: repo.find_all(moved), repeat)
        assert await repo.schema_versions() == {1: n}
        start = time.perf_counter()
        report = await repo.migrate(progress=False)
        migrate = time.perf_counter() - start
        assert report.upgraded == n and not report.failed, report
        new_find = await timed(lambda: repo.find_all(), repeat)
        new_frame = await timed(lambda: repo.to_dataframe(), repeat)
        new_filter = await timed(lambda: repo.find_all(moved), repeat)
    async with SQLiteRepository(Job, folder / "fresh.db") as fresh:
        start = time.perf_counter()
        await fresh.save_many(jobs)
        save_many = time.perf_counter() - start
    return [
        Row(f"find_all() of {n}, all one version old", old_find, new_find, "all current", 2.0),
        Row(f"to_dataframe() of {n}, one version old", old_frame, new_frame, "all current", 2.0),
        Row("find_all(moved field) one version old", old_filter, new_filter, "all current"),
        Row(f"migrate() of {n}", migrate, save_many, f"save_many of {n}", 2.0),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = asyncio.run(run(args.n, args.repeat, Path(folder)))
    print_table(rows, f"schema evolution on SQLite, N={args.n}")


if __name__ == "__main__":
    main()
