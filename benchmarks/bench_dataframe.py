"""``repo.to_dataframe()`` against the naive export a user would write, on SQLite.

Run: ``.venv/bin/python benchmarks/bench_dataframe.py [--n 100000] [--repeat 1]``.

Naive path: ``pd.DataFrame([t.model_dump() for t in repo.sync.find_all()])`` (a model object
per row, then a dict per row). ``to_dataframe()`` builds the frame from the stored JSON. Also
times a filtered export (``status == "pending"``, a quarter of the rows) both ways, and a
``save_dataframe`` of the full frame with 1% of the rows edited. Prints the median of
``--repeat`` runs, the wall-time ratio and the CPU-time ratio (this process, all threads; less
sensitive to other work on a shared machine), and the load average before the runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from symphony_nb import SQLiteRepository, Task, TaskPriority, TaskStatus


def make_tasks(n: int) -> list[Task]:
    statuses = list(TaskStatus)[:4]
    priorities = list(TaskPriority)
    return [
        Task(
            name=f"task {i}",
            description=f"benchmark task number {i}",
            status=statuses[i % len(statuses)],
            priority=priorities[i % len(priorities)],
            input_data={"query": f"question {i}", "n": i},
            tags=["bench", f"g{i % 10}"],
            metadata={"batch": i // 1000},
        )
        for i in range(n)
    ]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Median wall time, median CPU time of this process (all threads), last result."""
    walls, cpus = [], []
    result = None
    for _ in range(repeat):
        gc.collect()
        start, start_cpu = time.perf_counter(), cpu_seconds()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_seconds() - start_cpu)
    return statistics.median(walls), statistics.median(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        repo = SQLiteRepository(Task, Path(folder) / "bench.db")
        try:
            run(repo, args.n, args.repeat)
        finally:
            repo.sync.close()


def run(repo: SQLiteRepository[Task], n: int, repeat: int) -> None:
    start = time.perf_counter()
    tasks = make_tasks(n)
    for chunk in range(0, n, 10_000):
        repo.sync.save_many(tasks[chunk : chunk + 10_000])
    del tasks
    print(f"stored {repo.sync.count()} tasks in SQLite in {time.perf_counter() - start:.1f} s")
    repo.sync.to_dataframe(limit=10)  # warm the file cache and the connection
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())

    pending = {"status": "pending"}
    rows: list[tuple[str, tuple[float, float], tuple[float, float]]] = []
    *naive, naive_shape = timed(
        lambda: pd.DataFrame([t.model_dump() for t in repo.sync.find_all()]).shape, repeat
    )
    *ours, df = timed(lambda: repo.sync.to_dataframe(), repeat)
    # The naive frame has the id as a column; ours has it as the index.
    assert df.shape == (naive_shape[0], naive_shape[1] - 1), (df.shape, naive_shape)
    rows.append(("all rows", (naive[0], naive[1]), (ours[0], ours[1])))
    *naive_f, _ = timed(
        lambda: pd.DataFrame([t.model_dump() for t in repo.sync.find_all(pending)]).shape, repeat
    )
    *ours_f, _ = timed(lambda: repo.sync.to_dataframe(pending).shape, repeat)
    rows.append(("status == pending", (naive_f[0], naive_f[1]), (ours_f[0], ours_f[1])))

    print(f"load average before: {load}; median of {repeat} run(s)")
    print(f"{'export':<20}{'naive s':>9}{'ours s':>9}{'ratio':>8}{'cpu ratio':>11}")
    for name, slow, fast in rows:
        print(
            f"{name:<20}{slow[0]:>9.3f}{fast[0]:>9.3f}{slow[0] / fast[0]:>7.1f}x"
            f"{slow[1] / fast[1]:>10.1f}x"
        )

    edited = df.index[::100]
    df.loc[edited, "description"] = "edited"
    save_s, _, written = timed(lambda: repo.sync.save_dataframe(df), 1)
    print(f"save_dataframe of {n} rows with {len(written)} edited: {save_s:.2f} s")


if __name__ == "__main__":
    main()
