"""Memory and file-system backends against plain Python doing the same work, in one process.

Run: ``.venv/bin/python benchmarks/bench_core.py [--n-files 2000] [--n-memory 20000]``.
Prints, per operation, the median time of symphony_nb and of the baseline and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import make_tasks

from symphony_nb import FileSystemRepository, InMemoryRepository, Task, TaskStatus


def timed(fn: Callable[[], Any], repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def per_call(fn: Callable[[], Any], calls: int, repeat: int = 5) -> float:
    return timed(lambda: [fn() for _ in range(calls)], repeat) / calls


class PlainFiles:
    """What a careful user would write by hand: atomic, durable JSON files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def save(self, task: Task) -> None:
        data = json.dumps(task.model_dump(mode="json", by_alias=True), indent=2).encode()
        temp = self.folder / f".tmp-{uuid.uuid4().hex}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, self.folder / f"{task.id}.json")
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def find_all(self, status: str) -> list[Task]:
        out = []
        for name in os.listdir(self.folder):
            if name.endswith(".json"):
                with open(self.folder / name, "rb") as file:
                    doc = json.load(file)
                if doc["status"] == status:
                    out.append(Task.model_validate(doc))
        return out

    def find_by_id(self, task_id: str) -> Task:
        with open(self.folder / f"{task_id}.json", "rb") as file:
            return Task.model_validate(json.load(file))


def row(name: str, ours: float, base: float, baseline: str) -> tuple[str, str, str, str, str]:
    return (name, f"{ours * 1e6:,.1f} us", f"{base * 1e6:,.1f} us", f"{ours / base:.2f}x", baseline)


def bench_files(n: int, where: Path) -> list[tuple[str, str, str, str, str]]:
    tasks = make_tasks(n)
    plain = PlainFiles(where / "plain" / "task")
    repo = FileSystemRepository(Task, where / "ours")
    loop = asyncio.new_event_loop()
    try:
        run = loop.run_until_complete
        # Interleaved, so both sides see the same disk and machine load.
        plain_save = our_save = 0.0
        for task in tasks:
            start = time.perf_counter()
            plain.save(task)
            middle = time.perf_counter()
            run(repo.save(task))
            plain_save += middle - start
            our_save += time.perf_counter() - middle
        plain_save /= n
        our_save /= n
        status = TaskStatus.PENDING.value
        plain_all = timed(lambda: plain.find_all(status), 3)
        our_all = timed(lambda: run(repo.find_all({"status": status})), 3)
        assert len(plain.find_all(status)) == len(run(repo.find_all({"status": status})))
        some = tasks[n // 2].id
        plain_get = per_call(lambda: plain.find_by_id(some), 200)
        our_get = per_call(lambda: run(repo.find_by_id(some)), 200)
    finally:
        loop.close()
    return [
        row(
            "files: save (atomic + durable)",
            our_save,
            plain_save,
            "temp+fsync+rename+dir fsync, json",
        ),
        row(
            f"files: find_all status (of {n})", our_all, plain_all, "listdir + json.load + validate"
        ),
        row("files: find_by_id", our_get, plain_get, "open + json.load + validate"),
    ]


def bench_memory(n: int) -> list[tuple[str, str, str, str, str]]:
    tasks = make_tasks(n)
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    store: dict[str, Task] = {}
    loop = asyncio.new_event_loop()
    try:
        run = loop.run_until_complete

        def plain_save() -> None:
            for task in tasks:
                store[task.id] = task.model_copy(deep=True)

        def our_save() -> None:
            fresh: InMemoryRepository[Task] = InMemoryRepository(Task)
            run(fresh.save_many(tasks))
            for task in tasks:  # the next repeat starts from unsaved tasks again
                task.version = 0

        plain_s = timed(plain_save, 3) / n
        ours_s = timed(our_save, 3) / n
        run(repo.save_many(tasks))
        some = tasks[n // 3].id
        plain_get = per_call(lambda: store[some].model_copy(deep=True), 2000)
        our_get = per_call(lambda: run(repo.find_by_id(some)), 2000)
        status = TaskStatus.RUNNING
        plain_all = timed(
            lambda: [t.model_copy(deep=True) for t in store.values() if t.status is status], 3
        )
        our_all = timed(lambda: run(repo.find_all({"status": status})), 3)
        raw_get = per_call(lambda: store[some], 2000)
    finally:
        loop.close()
    return [
        row("memory: save (per entity, save_many)", ours_s, plain_s, "dict[id] = deep copy"),
        row("memory: find_by_id (a copy)", our_get, plain_get, "dict get + deep copy"),
        row(f"memory: find_all status (of {n})", our_all, plain_all, "list comp + deep copy"),
        row(
            "memory: find_by_id vs no copy at all", our_get, raw_get, "dict get (shares the object)"
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-files", type=int, default=2000)
    parser.add_argument("--n-memory", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as where:
        rows = bench_files(args.n_files, Path(where)) + bench_memory(args.n_memory)
    header = ("operation", "symphony_nb", "baseline", "ratio", "baseline is")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for line in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
