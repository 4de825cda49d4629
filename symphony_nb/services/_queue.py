""":class:`QueueStatus`: what a task queue holds right now, as every worker left it."""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .._models import Task, TaskStatus, utc_now
from .._repository import Repository

WINDOW = timedelta(minutes=1)
"""Throughput is measured over the tasks completed within this window."""


@dataclass(frozen=True)
class QueueStatus:
    """How many tasks are in each state, who runs them, and how fast they complete.

    ``running_by_worker`` maps each worker name to how many tasks it holds; ``expired``
    counts running tasks whose lease ran out (their worker is gone; a worker will put them
    back). ``completed_last_minute`` counts tasks completed in the minute before ``at``.
    """

    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    running_by_worker: dict[str, int] = field(default_factory=dict)
    expired: int = 0
    completed_last_minute: int = 0
    at: datetime = field(default_factory=utc_now)

    @property
    def total(self) -> int:
        """Every task, whatever its state."""
        return self.pending + self.running + self.completed + self.failed + self.cancelled

    @property
    def throughput(self) -> float:
        """Tasks completed per second, over the last minute."""
        return self.completed_last_minute / WINDOW.total_seconds()

    def __str__(self) -> str:
        workers = ", ".join(f"{name}: {n}" for name, n in sorted(self.running_by_worker.items()))
        return (
            f"{self.pending} pending, {self.running} running"
            f"{f' ({workers})' if workers else ''}, {self.completed} completed, "
            f"{self.failed} failed, {self.cancelled} cancelled; "
            f"{self.throughput:.2f} tasks/s over the last minute"
        )

    def _repr_html_(self) -> str:
        """A small table for notebooks (worker names escaped)."""
        cells = "".join(
            f"<td>{value}</td>"
            for value in (self.pending, self.running, self.completed, self.failed, self.cancelled)
        )
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{count}</td></tr>"
            for name, count in sorted(self.running_by_worker.items())
        )
        expired = f"<p>{self.expired} running task(s) with a lease that ran out</p>"
        return (
            "<table><tr><th>pending</th><th>running</th><th>completed</th><th>failed</th>"
            f"<th>cancelled</th></tr><tr>{cells}</tr></table>"
            f"<p>{self.throughput:.2f} tasks/s over the last minute</p>"
            + (expired if self.expired else "")
            + (f"<table><tr><th>worker</th><th>running</th></tr>{rows}</table>" if rows else "")
        )


async def queue_status(repository: Repository[Task]) -> QueueStatus:
    """Count ``repository``'s tasks by state and their running tasks by worker."""
    now = utc_now()
    counts = {status: await repository.count({"status": status}) for status in TaskStatus}
    running = await repository.find_all({"status": TaskStatus.RUNNING})
    recent = await repository.count(
        {"status": TaskStatus.COMPLETED, "completed_at": {"$gte": now - WINDOW}}
    )
    expired = sum(
        1 for task in running if task.lease_expires_at is not None and task.lease_expires_at < now
    )
    return QueueStatus(
        pending=counts[TaskStatus.PENDING],
        running=counts[TaskStatus.RUNNING],
        completed=counts[TaskStatus.COMPLETED],
        failed=counts[TaskStatus.FAILED],
        cancelled=counts[TaskStatus.CANCELLED],
        running_by_worker=dict(Counter(task.worker or "(no worker)" for task in running)),
        expired=expired,
        completed_last_minute=recent,
        at=now,
    )
