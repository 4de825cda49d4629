"""``repo.to_dataframe()`` against the naive export a user would write, on SQLite.

Run: ``.venv/bin/python benchmarks/bench_dataframe.py [--n 100000] [--repeat 3]``.

Naive path: ``pd.DataFrame([t.model_dump() for t in repo.sync.find_all()])`` (a model object
per row, then a dict per row). ``to_dataframe()`` validates every stored document with the
model, as ``find_all`` does, and builds the columns from the validated values. Also
times a filtered export (``status == "pending"``, a quarter of the rows) both ways, and a
``save_dataframe`` of the full frame with 1% of the rows edited.

The 100k source ``Task`` objects stay alive while both paths run, as in a notebook that
made them. The two paths run alternately ``--repeat`` times so both see the same machine load. Printed:
the best wall times and their ratio, the ratio of the median wall times, and the ratio of the
median CPU times of this process (all threads; the least sensitive to other work on a shared
machine), with the load average before the runs.
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
from _common import make_tasks

from symphony_nb import SQLiteRepository, Task


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall time, CPU time of this process (all threads) and result of one call."""
    gc.collect()
    start, start_cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return time.perf_counter() - start, cpu_seconds() - start_cpu, result


def compare(
    naive: Callable[[], Any], ours: Callable[[], Any], repeat: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]], Any, Any]:
    """Run both ``repeat`` times, alternating, so both see the same machine load."""
    slow: list[tuple[float, float]] = []
    fast: list[tuple[float, float]] = []
    slow_result = fast_result = None
    for _ in range(repeat):
        *sample, slow_result = measure(naive)
        slow.append((sample[0], sample[1]))
        *sample, fast_result = measure(ours)
        fast.append((sample[0], sample[1]))
    return slow, fast, slow_result, fast_result


def summary(name: str, slow: list[tuple[float, float]], fast: list[tuple[float, float]]) -> str:
    best_slow, best_fast = min(w for w, _ in slow), min(w for w, _ in fast)
    med_slow = statistics.median(w for w, _ in slow)
    med_fast = statistics.median(w for w, _ in fast)
    cpu_ratio = statistics.median(c for _, c in slow) / statistics.median(c for _, c in fast)
    return (
        f"{name:<20}{best_slow:>9.3f}{best_fast:>9.3f}{best_slow / best_fast:>7.1f}x"
        f"{med_slow / med_fast:>9.1f}x{cpu_ratio:>9.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
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
    # The source objects stay alive, as they do in a notebook that made them: every
    # collector pass over young objects then also walks them.
    print(f"stored {repo.sync.count()} tasks in SQLite in {time.perf_counter() - start:.1f} s")
    repo.sync.to_dataframe(limit=10)  # warm the file cache and the connection
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())

    pending = {"status": "pending"}
    # Both paths build a frame and drop it, so each run pays for freeing its own frame.
    slow, fast, naive_shape, shape = compare(
        lambda: pd.DataFrame([t.model_dump() for t in repo.sync.find_all()]).shape,
        lambda: repo.sync.to_dataframe().shape,
        repeat,
    )
    # The naive frame has the id as a column; ours has it as the index.
    assert shape == (naive_shape[0], naive_shape[1] - 1), (shape, naive_shape)
    slow_f, fast_f, _, _ = compare(
        lambda: pd.DataFrame([t.model_dump() for t in repo.sync.find_all(pending)]).shape,
        lambda: repo.sync.to_dataframe(pending).shape,
        repeat,
    )
    print(f"load average before: {load}; {repeat} alternating run(s) of each")
    print(f"{'export':<20}{'naive s':>9}{'ours s':>9}{'best':>8}{'median':>10}{'cpu':>10}")
    print(summary("all rows", slow, fast))
    print(summary("status == pending", slow_f, fast_f))

    assert len(tasks) == n
    df = repo.sync.to_dataframe()
    edited = df.index[::100]
    df.loc[edited, "description"] = "edited"
    save_s, _, written = measure(lambda: repo.sync.save_dataframe(df))
    print(f"save_dataframe of {n} rows with {len(written)} edited: {save_s:.2f} s")


if __name__ == "__main__":
    main()
