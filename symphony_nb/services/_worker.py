"""Workers: any number of them, in any processes, share the pending tasks of one store.

A worker claims a pending task by storing it as running under its own name and a lease
(see :mod:`symphony_nb.services._runs`), through :meth:`Store.claim`: a claim another worker
wins first is skipped, never an error. Running tasks whose lease ran out (their worker was
killed or lost its machine) are put back to pending, counting their attempts, or failed once
``max_attempts`` is reached, by whichever worker notices first.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._claims import claim
from .._errors import ConflictError
from .._models import Task, TaskStatus, utc_now
from .._repository import Repository
from ..stores import parse_query
from ._runs import (
    CANCEL_REQUESTED,
    Interrupted,
    LeaseTimes,
    Run,
    check_number,
    hand_back,
    host_worker_name,
    settle,
    start,
)
from .agent import Agent

ORDER = ("-priority", "created_at")
CANDIDATES = 32
"""How many pending tasks a claim looks at once workers compete (the generic claim then
picks one of them at random)."""


@dataclass
class WorkReport:
    """What one :meth:`TaskManager.work` call did; ``str()`` is a one-line summary.

    ``started`` counts runs begun; each ended ``completed``, ``failed``, ``cancelled`` (on
    request), ``handed_back`` (pending again, when the worker was stopped mid-run) or ``lost``
    (its lease ran out and another worker took the task over; the result was dropped).
    ``requeued`` and ``expired`` count other workers' tasks whose lease ran out, put back to
    pending or ended (failed at ``max_attempts``, cancelled if asked). ``conflicts`` counts
    claims lost to another worker (each skipped).
    """

    worker: str
    started: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    handed_back: int = 0
    lost: int = 0
    requeued: int = 0
    expired: int = 0
    conflicts: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"worker {self.worker}: {self.started} started, {self.completed} completed, "
            f"{self.failed} failed, {self.cancelled} cancelled, {self.handed_back} handed back, "
            f"{self.lost} lost; {self.requeued} requeued and {self.expired} ended after a lease "
            f"ran out; {self.conflicts} claim conflicts; {self.seconds:.1f} s"
        )


class Worker:
    """The worker behind :meth:`TaskManager.work` (arguments as documented there)."""

    def __init__(
        self,
        repository: Repository[Task],
        agent: Agent,
        filter_criteria: Mapping[str, Any] | None = None,
        *,
        concurrency: int = 4,
        lease: float = 30.0,
        renew_every: float | None = None,
        max_attempts: int = 3,
        stop_when_idle: bool = False,
        poll: float = 1.0,
        name: str | None = None,
        progress: bool = True,
        interrupted: Interrupted = "hand back",
        keep_results: bool = False,
    ) -> None:
        check_number("concurrency", concurrency, minimum=1, integer=True)
        check_number("max_attempts", max_attempts, minimum=1, integer=True)
        check_number("poll", poll, minimum=0)
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValueError(f"a worker name must be a non-empty string, got {name!r}")
        self.repository = repository
        self.agent = agent
        self.filter = dict(filter_criteria or {})
        self.concurrency = concurrency
        self.lease = LeaseTimes.of(lease, renew_every)
        self.max_attempts = max_attempts
        self.stop_when_idle = stop_when_idle
        self.poll = poll
        self.name = name or f"{host_worker_name()}#{secrets.token_hex(2)}"
        self.progress = progress
        self.interrupted: Interrupted = interrupted
        self.report = WorkReport(self.name)
        self.results: dict[int, Task] = {}
        self._keep_results = keep_results
        self._pending = {**self.filter, "status": TaskStatus.PENDING}
        self._stopping = asyncio.Event()
        self._claiming = asyncio.Lock()  # this worker's slots claim one at a time
        self._recover_at = 0.0
        # Alone, a worker claims the first task in order; once it has lost a claim race, it
        # picks among a page of candidates (a store that locks them never loses one).
        self._crowded = False
        self._claims = 0
        parse_query(repository.model, self._pending)  # a bad filter fails before any claim

    def stop(self) -> None:
        """Claim nothing more; the tasks running now finish and :meth:`run` returns."""
        self._stopping.set()

    async def run(self) -> WorkReport:
        """Work until stopped (or idle, with ``stop_when_idle``); return the report."""
        from tqdm.auto import tqdm

        began = time.monotonic()
        total = await self.repository.count(self._pending) if self.stop_when_idle else None
        bar = tqdm(total=total, desc=f"tasks ({self.name})", disable=not self.progress)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.concurrency):
                    group.create_task(self._slot(bar.update))
        except ExceptionGroup as failure:
            raise first_error(failure) from None
        finally:
            bar.close()
            self.report.seconds = time.monotonic() - began
        return self.report

    async def _slot(self, tick: Callable[[], object]) -> None:
        while not self._stopping.is_set():
            claimed = await self._take()
            if claimed is None:
                if self.stop_when_idle:
                    return
                await self._idle()
                continue
            index, task = claimed
            await self._execute(index, task)
            tick()

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.poll * random.uniform(0.5, 1.5))

    async def _take(self) -> tuple[int, Task] | None:
        async with self._claiming:
            if self._stopping.is_set():
                return None
            await self._recover()
            page = CANDIDATES if self._crowded else 1
            while True:
                # A claim interrupted mid-write may land all the same: let it finish, then
                # hand back what it took, so that nothing claimed is left unstarted.
                taken, cancelled = await settle(
                    claim(
                        self.repository, self._pending, self._start, order_by=ORDER, candidates=page
                    )
                )
                if cancelled:
                    if taken.entity is not None:
                        await settle(self._unclaim(taken.entity))
                    raise asyncio.CancelledError
                self.report.conflicts += taken.conflicts
                if taken.conflicts:
                    self._crowded = True  # other workers take from this queue: spread out
                if taken.entity is not None:
                    self._claims += 1
                    self.report.started += 1
                    return self._claims, taken.entity
                if taken.conflicts == 0 and (taken.passed == 0 or page == CANDIDATES):
                    return None
                page = CANDIDATES

    async def _unclaim(self, task: Task) -> None:
        """Put back a task this worker claimed and never started, as if it had not."""
        hand_back(task)
        task.attempts -= 1
        with contextlib.suppress(ConflictError):  # changed meanwhile: no longer ours to undo
            await self.repository.save(task)
            self.report.handed_back += 1

    def _start(self, task: Task) -> Task | None:
        if task.status is not TaskStatus.PENDING or task.cancel_requested:
            return None
        return start(task, self.name, self.agent, self.lease, rerun=False)

    async def _execute(self, index: int, task: Task) -> None:
        run = Run(self.repository, task, self.agent, self.name, self.lease, self.interrupted)
        try:
            final = await run.execute()
        finally:
            self._count(run.outcome)
        if final is not None and self._keep_results:
            self.results[index] = final

    def _count(self, outcome: str) -> None:
        report = self.report
        if outcome == "completed":
            report.completed += 1
        elif outcome == "failed":
            report.failed += 1
        elif outcome == "cancelled":
            report.cancelled += 1
        elif outcome == "handed back":
            report.handed_back += 1
        elif outcome == "lost":
            report.lost += 1

    async def _recover(self) -> None:
        """Put back (or end) the running tasks whose lease ran out, at most once per renewal."""
        if time.monotonic() < self._recover_at:
            return
        self._recover_at = time.monotonic() + self.lease.renew_every
        now = utc_now()
        expired = {**self.filter, "status": TaskStatus.RUNNING, "lease_expires_at": {"$lt": now}}
        change = self._requeue(now)
        while True:
            taken = await claim(
                self.repository, expired, change, order_by="lease_expires_at", candidates=CANDIDATES
            )
            self.report.conflicts += taken.conflicts
            if taken.entity is None:
                if taken.conflicts == 0:
                    return
            elif taken.entity.status is TaskStatus.PENDING:
                self.report.requeued += 1
            else:
                self.report.expired += 1

    def _requeue(self, now: datetime) -> Callable[[Task], Task | None]:
        def change(task: Task) -> Task | None:
            expires = task.lease_expires_at
            if task.status is not TaskStatus.RUNNING or expires is None or expires >= now:
                return None
            gone = f"the lease of worker {task.worker!r} ran out during attempt {task.attempts}"
            if task.cancel_requested:
                status, error = TaskStatus.CANCELLED, f"{CANCEL_REQUESTED}; {gone}"
            elif task.attempts >= self.max_attempts:
                status = TaskStatus.FAILED
                error = f"{gone}; not retried, max_attempts={self.max_attempts} reached"
            else:
                status, error = TaskStatus.PENDING, f"{gone}; queued again"
            ended = status is not TaskStatus.PENDING
            changed = {
                "status": status,
                "error": error,
                "lease_expires_at": None,
                "completed_at": now if ended else None,
                "worker": task.worker if ended else None,
                "started_at": task.started_at if ended else None,
            }
            task.__dict__.update(changed)
            task.__pydantic_fields_set__.update(changed)
            return task

        return change


def first_error(failure: ExceptionGroup[Exception]) -> Exception:
    """The first error of a batch, noting how many other tasks failed the same way."""
    first = failure.exceptions[0]
    if len(failure.exceptions) > 1:
        first.add_note(f"{len(failure.exceptions) - 1} other task(s) of the batch failed as well")
    return first
