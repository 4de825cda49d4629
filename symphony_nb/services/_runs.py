"""One claimed task being executed: its agent, the lease kept alive beside it, its final write.

A task is *held* by a worker while it is stored running with that worker's name, its
``attempts`` and a ``lease_expires_at`` in the future. The :class:`Run` renews the lease while
the agent works and watches the stored task: a cancel request stops the agent and stores the
task cancelled; a task that is no longer held (its lease ran out and another worker took it
over) stops the agent and stores nothing, since the task is someone else's now.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

from .._errors import ConflictError, StorageError, UnstorableEntityError
from .._models import Task, TaskStatus, utc_now
from .._repository import Repository
from .agent import Agent

R = TypeVar("R")
CANCELLED = "execution was cancelled"
CANCEL_REQUESTED = "cancelled by request (TaskManager.cancel)"
Interrupted = Literal["cancel", "hand back"]
"""What an interrupted execution stores: the task cancelled, or pending again for others."""


def host_worker_name() -> str:
    """This process's worker name: ``pid<pid>@<host>``."""
    return f"pid{os.getpid()}@{socket.gethostname()}"


def check_number(name: str, value: object, *, minimum: float, integer: bool = False) -> None:
    """ValueError unless ``value`` is a number (an int if ``integer``) of at least ``minimum``."""
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= minimum:  # type: ignore[operator]
        kind = "an int" if integer else "a number"
        raise ValueError(f"{name} must be {kind} >= {minimum:g}, got {value!r}")


@dataclass(frozen=True)
class LeaseTimes:
    """How long a claim lasts unless renewed, and how often its worker renews it."""

    seconds: float
    renew_every: float

    @classmethod
    def of(cls, lease: float, renew_every: float | None) -> LeaseTimes:
        """Checked times; ``renew_every`` defaults to a third of the lease."""
        check_number("lease", lease, minimum=0)
        if not lease > 0:
            raise ValueError(f"lease must be a number of seconds > 0, got {lease!r}")
        every = lease / 3 if renew_every is None else renew_every
        check_number("renew_every", every, minimum=0)
        if not 0 < every < lease:
            raise ValueError(
                f"the lease ({lease!r} s) must be longer than its renewal interval "
                f"(renew_every={every!r} s), which must be > 0; a lease renewed no more often "
                "than it lasts runs out between renewals"
            )
        return cls(float(lease), float(every))

    @property
    def check_every(self) -> float:
        """How often the stored task is read for a cancel request or a lost lease."""
        return min(self.renew_every, 1.0)

    def expiry(self) -> timedelta:
        """The lease as a timedelta."""
        return timedelta(seconds=self.seconds)


def start(task: Task, worker: str, agent: Agent, lease: LeaseTimes, *, rerun: bool) -> Task:
    """Mark ``task`` (in place) as started by ``worker`` under a fresh lease; return it."""
    now = utc_now()
    started = {
        "status": TaskStatus.RUNNING,
        "started_at": now,
        "completed_at": None,
        "error": None,
        "output_data": None,
        "agent_id": agent.config.id,
        "worker": worker,
        "lease_expires_at": now + lease.expiry(),
        "attempts": 1 if rerun else task.attempts + 1,
        "cancel_requested": False,
    }
    task.__dict__.update(started)  # every value is valid: skip assignment validation
    task.__pydantic_fields_set__.update(started)
    return task


def holds(stored: Task | None, worker: str, attempts: int) -> bool:
    """Whether ``stored`` is still the run ``worker`` started as attempt ``attempts``."""
    return (
        stored is not None
        and stored.status is TaskStatus.RUNNING
        and stored.worker == worker
        and stored.attempts == attempts
    )


async def settle(awaitable: Awaitable[R]) -> tuple[R, bool]:
    """Await ``awaitable`` to its end even if cancelled meanwhile; also say if that happened.

    Waiting for it (not only shielding it) means that when a cancellation reaches the
    caller, what it was doing (a final write) is done. Its error is raised (chained under
    CancelledError if a cancellation came too).
    """
    future = asyncio.ensure_future(awaitable)
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    error = future.exception()
    if error is not None:
        if cancelled:
            raise asyncio.CancelledError from error
        raise error
    return future.result(), cancelled


class Run:
    """The execution of ``task``, already stored as started by ``worker`` (see :func:`start`)."""

    def __init__(
        self,
        repository: Repository[Task],
        task: Task,
        agent: Agent,
        worker: str,
        lease: LeaseTimes,
        interrupted: Interrupted,
    ) -> None:
        self.repository = repository
        self.task = task
        self.agent = agent
        self.worker = worker
        self.attempts = task.attempts
        self.lease = lease
        self.interrupted = interrupted
        self.outcome: Literal["", "completed", "failed", "cancelled", "handed back", "lost"] = ""
        self._stop_reason: Literal["", "cancel", "lost"] = ""
        self._done = asyncio.Event()
        self._agent: asyncio.Future[dict[str, Any]] | None = None
        self._cancelled_meanwhile = False

    async def execute(self) -> Task | None:
        """Run the agent and store the result; the stored task, or None if the lease was lost.

        A cancellation from outside stores the task as ``interrupted`` says, then propagates.
        """
        agent = self._agent = asyncio.ensure_future(self.agent.execute(self.task))
        keeper = asyncio.ensure_future(self._keep())
        try:
            output = await agent
        except asyncio.CancelledError:
            await self._stop_keeper(keeper)
            return await self._after_cancel()
        except Exception as exc:  # the agent's failure is recorded on the task
            await self._stop_keeper(keeper)
            return await self._finish(TaskStatus.FAILED, error=describe(exc))
        await self._stop_keeper(keeper)
        return await self._complete(output)

    async def _stop_keeper(self, keeper: asyncio.Future[None]) -> None:
        self._done.set()
        _, cancelled = await settle(keeper)
        self._cancelled_meanwhile |= cancelled

    async def _after_cancel(self) -> Task | None:
        current = asyncio.current_task()
        from_outside = current is not None and current.cancelling() > 0
        if self._stop_reason == "lost" and not from_outside:
            self.outcome = "lost"
            return None
        if self._stop_reason == "cancel" and not from_outside:
            return await self._finish(TaskStatus.CANCELLED, error=CANCEL_REQUESTED)
        self._cancelled_meanwhile = True
        if self.interrupted == "hand back":
            await self._store(hand_back, "handed back")
        else:
            await self._finish(TaskStatus.CANCELLED, error=CANCELLED)
        raise asyncio.CancelledError

    async def _complete(self, output: object) -> Task | None:
        """Store ``output`` as the result, or the task as failed with why it cannot be."""
        try:
            if not isinstance(output, Mapping):
                raise UnstorableEntityError(
                    f"the agent returned {type(output).__name__}, not a dict"
                )
            return await self._finish(TaskStatus.COMPLETED, output=dict(output))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return await self._finish(
                TaskStatus.FAILED, error=f"the output could not be stored: {describe(exc)}"
            )

    async def end(
        self, status: TaskStatus, *, error: str | None = None, output: dict[str, Any] | None = None
    ) -> Task | None:
        """Store the task ended as ``status`` while this worker holds it; None if it does not."""

        def ended(task: Task) -> None:
            task.status = status
            task.completed_at = utc_now()
            task.error = error
            task.output_data = output
            task.lease_expires_at = None

        return await self._store(ended, status.value)  # type: ignore[arg-type]

    async def _finish(
        self, status: TaskStatus, *, error: str | None = None, output: dict[str, Any] | None = None
    ) -> Task | None:
        stored = await self.end(status, error=error, output=output)
        if self._cancelled_meanwhile:
            raise asyncio.CancelledError
        return stored

    async def _store(
        self,
        change: Callable[[Task], None],
        outcome: Literal["completed", "failed", "cancelled", "handed back"],
    ) -> Task | None:
        """Apply ``change`` to the task and save it while this worker holds it."""
        while True:
            change(self.task)
            try:
                _, cancelled = await settle(self.repository.save(self.task))
            except ConflictError:
                stored, cancelled = await settle(self.repository.find_by_id(self.task.id))
                self._cancelled_meanwhile |= cancelled
                if not holds(stored, self.worker, self.attempts):
                    self.outcome = "lost"
                    return None
                assert stored is not None
                self.task = stored
                continue
            self._cancelled_meanwhile |= cancelled
            self.outcome = outcome
            return self.task

    def _stop(self, reason: Literal["cancel", "lost"]) -> None:
        self._stop_reason = reason
        if self._agent is not None:
            self._agent.cancel()

    async def _keep(self) -> None:
        """Renew the lease and watch for a cancel request or a lost lease until the agent ends."""
        renew_at = time.monotonic() + self.lease.renew_every
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.lease.check_every)
            if self._done.is_set():
                return
            try:
                stored = await self.repository.find_by_id(self.task.id)
            except StorageError:
                continue  # try again; a lease lost meanwhile shows on the next read
            if not holds(stored, self.worker, self.attempts):
                self._stop("lost")
                return
            assert stored is not None
            if stored.version != self.task.version:
                self.task = stored  # changed by someone else meanwhile: build on theirs
            if stored.cancel_requested:
                self._stop("cancel")
                return
            if time.monotonic() < renew_at:
                continue
            self.task.lease_expires_at = utc_now() + self.lease.expiry()
            with contextlib.suppress(ConflictError, StorageError):  # looked at again soon
                await self.repository.save(self.task)
                renew_at = time.monotonic() + self.lease.renew_every


def hand_back(task: Task) -> None:
    """Make ``task`` (in place) pending again, held by no worker."""
    handed = {
        "status": TaskStatus.PENDING,
        "worker": None,
        "lease_expires_at": None,
        "started_at": None,
        "error": None,
    }
    task.__dict__.update(handed)
    task.__pydantic_fields_set__.update(handed)


def describe(exc: BaseException) -> str:
    """``Type: message`` of an error, as stored on a task (no backend stores NUL text)."""
    return f"{type(exc).__name__}: {exc}".replace("\x00", "\\x00")
