"""Helpers shared by the benchmarks: realistic Tasks, a median timer, a ratio table.

``make_tasks(n)`` draws Tasks with the field distributions a real task store has (most tasks
completed, about 20% pending, a long tail of critical ones, a year of timestamps, nested
input and output data), reproducibly from ``seed``. ``median`` times a callable;
``Row`` + ``print_table`` print "ours vs baseline" ratios against a target.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from symphony_nb import Task, TaskPriority, TaskStatus

STATUS_WEIGHTS = {"pending": 20, "running": 5, "completed": 55, "failed": 15, "cancelled": 5}
PRIORITY_WEIGHTS = {"low": 30, "medium": 45, "high": 20, "critical": 5}
_WORDS = [
    "summarise",
    "the",
    "quarterly",
    "report",
    "compare",
    "vendors",
    "draft",
    "an",
    "email",
    "translate",
    "notes",
    "into",
    "german",
    "classify",
    "support",
    "tickets",
    "extract",
    "entities",
    "from",
    "invoices",
    "plan",
    "a",
    "trip",
    "review",
    "code",
]
_TAGS = [f"tag{i}" for i in range(20)]
_START = datetime(2025, 1, 1, tzinfo=UTC)


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randint(low, high)))


def make_task(rng: random.Random, index: int) -> Task:
    """One realistic Task; ``index`` makes its name unique."""
    status = TaskStatus(rng.choices(list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values()))[0])
    priority = TaskPriority(rng.choices(list(PRIORITY_WEIGHTS), list(PRIORITY_WEIGHTS.values()))[0])
    created = _START + timedelta(seconds=rng.randrange(365 * 86400), microseconds=index % 10**6)
    started = created + timedelta(seconds=rng.randrange(3600)) if status != "pending" else None
    done = status in ("completed", "failed", "cancelled")
    finished = started + timedelta(seconds=rng.randrange(1, 600)) if done and started else None
    return Task(
        name=f"task {index}: {_sentence(rng, 2, 5)}",
        description=_sentence(rng, 8, 30),
        status=status,
        priority=priority,
        input_data={
            "query": _sentence(rng, 5, 15),
            "source": rng.choice(["notebook", "api", "scheduler"]),
            "max_tokens": rng.choice([256, 512, 1024, 2048]),
            "temperature": round(rng.random(), 2),
            "options": {"stream": rng.random() < 0.3, "retries": rng.randint(0, 3)},
        },
        output_data=(
            {"answer": _sentence(rng, 10, 40), "tokens": rng.randint(50, 2000)}
            if status == "completed"
            else None
        ),
        error="timeout while calling the model" if status == "failed" else None,
        tags=rng.sample(_TAGS, rng.randint(0, 4)),
        agent_id=None if rng.random() < 0.1 else f"agent-{rng.randrange(50)}",
        workflow_id=f"wf-{rng.randrange(500)}" if rng.random() < 0.5 else None,
        metadata={"batch": index // 1000, "owner": rng.choice(["ana", "bo", "chen", "dee"])},
        created_at=created,
        updated_at=created,
        started_at=started,
        completed_at=finished,
    )


def make_tasks(n: int, seed: int = 0, start: int = 0) -> list[Task]:
    """``n`` realistic Tasks, the same ones for the same ``seed`` and ``start``."""
    rng = random.Random(f"{seed}:{start}")
    return [make_task(rng, start + i) for i in range(n)]


def median(fn: Callable[[], Any], repeat: int = 3, setup: Callable[[], Any] | None = None) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeat`` runs (``setup()`` untimed)."""
    samples = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


@dataclass
class Row:
    """One comparison: ``ours`` and ``baseline`` in seconds; ``target`` bounds their ratio.

    ``higher_is_better=True`` reads the target as "the baseline is at least ``target``
    times slower" (a speed-up); otherwise as "ours is at most ``target`` times the baseline".
    """

    operation: str
    ours: float
    baseline: float
    baseline_name: str
    target: float | None = None
    higher_is_better: bool = False

    @property
    def ratio(self) -> float:
        """ours / baseline, or baseline / ours for a speed-up."""
        return self.baseline / self.ours if self.higher_is_better else self.ours / self.baseline

    @property
    def verdict(self) -> str:
        """``ok`` or ``MISSED`` against the target; empty without one."""
        if self.target is None:
            return ""
        met = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return "ok" if met else "MISSED"


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def print_table(rows: Sequence[Row], title: str = "") -> None:
    """Print the rows as an aligned table (markdown-compatible)."""
    if title:
        print(f"\n{title}")
    header = ("operation", "symphony_nb", "baseline", "ratio", "target", "")
    lines = [header]
    for row in rows:
        target = "" if row.target is None else (">=" if row.higher_is_better else "<=")
        target += "" if row.target is None else f"{row.target:g}x"
        kind = "x faster" if row.higher_is_better else "x"
        lines.append(
            (
                row.operation,
                _fmt(row.ours),
                f"{_fmt(row.baseline)} ({row.baseline_name})",
                f"{row.ratio:.2f}{kind}",
                target,
                row.verdict,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for number, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if number == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
