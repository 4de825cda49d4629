"""The :class:`TaskManager`: creates tasks and runs them through agents, persisting each step."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import ConflictError, NotFoundError, TaskStateError
from .._history import change_context
from .._models import Task, TaskStatus, utc_now
from .._repository import Repository
from ._queue import QueueStatus, queue_status
from ._runs import (
    CANCEL_REQUESTED,
    CANCELLED,
    LeaseTimes,
    Run,
    host_worker_name,
    settle,
    start,
)
from ._worker import Worker, WorkReport
from .agent import Agent

if TYPE_CHECKING:
    from .._sync_faces import SyncTaskManager

_FINISHED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
DEFAULT_LEASE = 30.0
"""Seconds a worker's claim on a task lasts unless renewed."""


class TaskManager:
    """Creates, stores and executes :class:`Task` objects in ``repository``."""

    def __init__(self, repository: Repository[Task]) -> None:
        self.repository = repository

    def __repr__(self) -> str:
        return f"TaskManager({self.repository!r})"

    async def create_task(self, name: str, **fields: Any) -> Task:
        """Validate a new task (``name`` plus any Task field) and save it."""
        task = Task(name=name, **fields)
        await self.repository.save(task)
        return task

    async def get_task(self, task_id: str) -> Task:
        """The stored task ``task_id``; raises :class:`NotFoundError` if there is none."""
        task = await self.repository.find_by_id(task_id)
        if task is None:
            raise NotFoundError(f"no Task with id {task_id!r} in {self.repository!r}")
        return task

    async def execute_task(self, task_id: str, agent: Agent, *, rerun: bool = False) -> Task:
        """Run task ``task_id`` with ``agent`` and return the stored result.

        The task is saved as running (with ``started_at``, this process as its ``worker``
        and a lease renewed while the agent runs, so that :meth:`cancel` reaches it and a
        killed process leaves nothing running for good), then as completed with
        ``output_data``, or as failed with ``error`` when the agent raises or returns output
        that cannot be stored (not a dict, NUL text, not serialisable). If the execution is
        cancelled (an interrupt, a ``timeout=``) it is saved as cancelled and the cancellation
        propagates; a language model still running in a worker thread then finishes in the
        background and its reply is discarded. A task that already ran (or is running) is
        refused unless ``rerun=True``. With history on, each of these writes records the
        agent's config id as its actor.
        """
        with change_context(actor=agent.config.id):
            return await self._execute(task_id, agent, rerun)

    async def _execute(self, task_id: str, agent: Agent, rerun: bool) -> Task:
        task = await self.get_task(task_id)
        if task.status is not TaskStatus.PENDING and not rerun:
            raise TaskStateError(
                f"task {task_id!r} is {task.status.value}; pass rerun=True to execute it again"
            )
        worker, lease = host_worker_name(), LeaseTimes.of(DEFAULT_LEASE, None)
        start(task, worker, agent, lease, rerun=task.status is not TaskStatus.PENDING)
        run = Run(self.repository, task, agent, worker, lease, "cancel")
        _, cancelled = await settle(self.repository.save(task))
        if cancelled:
            # The running state landed although the execution was cancelled meanwhile.
            await settle(run.end(TaskStatus.CANCELLED, error=CANCELLED))
            raise asyncio.CancelledError
        final = await run.execute()
        return final if final is not None else await self.get_task(task_id)

    async def work(
        self,
        agent: Agent,
        filter_criteria: Mapping[str, Any] | None = None,
        *,
        concurrency: int = 4,
        lease: float = 30.0,
        renew_every: float | None = None,
        max_attempts: int = 3,
        stop_when_idle: bool = False,
        poll: float = 1.0,
        worker: str | None = None,
        progress: bool = True,
    ) -> WorkReport:
        """Be one of any number of workers running this store's pending tasks with ``agent``.

        Workers in threads, processes or on other machines may share one store: each pending
        task (optionally filtered) is claimed by exactly one of them, higher priority and
        older first; a claim another worker wins first is skipped, never an error. A claimed
        task is stored running with the worker's name (``worker``, by default
        ``pid<pid>@<host>#<random>``) and a lease of ``lease`` seconds, renewed every
        ``renew_every`` seconds (default a third of the lease) while its agent runs, up to
        ``concurrency`` at a time. A task whose lease ran out (its worker was killed) is put
        back to pending by the next worker that looks, counting its ``attempts``, and failed
        once ``max_attempts`` is reached. The agent may thus run more than once for a task
        whose worker died after the agent returned and before the result was stored (at
        least once), never twice at once while leases hold (keep the workers' clocks within
        a fraction of the lease of each other). :meth:`cancel` from anywhere stops a task.

        Runs until cancelled, or until no task is pending with ``stop_when_idle=True``;
        when idle it looks again every ``poll`` seconds. A cancellation (Ctrl-C) hands the
        tasks it was running back as pending for other workers, then propagates. Returns a
        :class:`WorkReport`. Shows a progress bar (``tqdm.auto``) unless ``progress=False``.
        Raises ``ValueError`` for ``concurrency`` or ``max_attempts`` < 1 or a lease not
        longer than its renewal interval. With history on, its writes record the agent's
        config id as their actor and the worker's name in their reason.
        """
        runner = Worker(
            self.repository,
            agent,
            filter_criteria,
            concurrency=concurrency,
            lease=lease,
            renew_every=renew_every,
            max_attempts=max_attempts,
            stop_when_idle=stop_when_idle,
            poll=poll,
            name=worker,
            progress=progress,
        )
        with change_context(actor=agent.config.id, reason=f"worker {runner.name}"):
            return await runner.run()

    async def run_pending(
        self,
        agent: Agent,
        filter_criteria: Mapping[str, Any] | None = None,
        *,
        concurrency: int = 4,
        progress: bool = True,
    ) -> list[Task]:
        """Execute every pending task (optionally filtered), ``concurrency`` at a time.

        Safe to run from several processes at once: it is :meth:`work` with
        ``stop_when_idle=True``, and each task is run by one of them. Returns the tasks this
        call ran, in the order it took them, each with its final status: a task whose agent
        fails (or whose output cannot be stored) is failed and the batch goes on. If an error
        escapes a task (the storage fails, for example), or the batch is cancelled, every
        task already started is cancelled and awaited (stored as cancelled; tasks not yet
        started stay pending) before the error propagates, so nothing is left running.
        Shows a progress bar (``tqdm.auto``) unless ``progress=False``.
        """
        batch = Worker(
            self.repository,
            agent,
            filter_criteria,
            concurrency=concurrency,
            stop_when_idle=True,
            progress=progress,
            interrupted="cancel",
            keep_results=True,
        )
        with change_context(actor=agent.config.id, reason=f"worker {batch.name}"):
            await batch.run()
        return [batch.results[index] for index in sorted(batch.results)]

    async def cancel(self, task_id: str, *, wait: bool = True) -> Task:
        """Cancel task ``task_id`` from any process; return it as stored.

        A pending task is stored cancelled at once. A running task gets a cancel request:
        the worker running it notices within a second, stops its agent and stores it
        cancelled; with ``wait=True`` this returns once it has (a task whose worker is gone
        is stored cancelled here once its lease has run out), with ``wait=False`` at once.
        A task that finished meanwhile is returned as it finished. Raises
        :class:`NotFoundError` for an unknown id and :class:`TaskStateError` for a task
        that had already finished.
        """
        asked = False
        while True:
            task = await self.get_task(task_id)
            if task.status in _FINISHED:
                if asked:
                    return task
                raise TaskStateError(
                    f"task {task_id!r} is already {task.status.value}; only pending or "
                    "running tasks can be cancelled"
                )
            now = utc_now()
            unheld = task.lease_expires_at is None or task.lease_expires_at < now
            try:
                if task.status is TaskStatus.PENDING or unheld:
                    task.status = TaskStatus.CANCELLED
                    task.completed_at = now
                    task.error = CANCEL_REQUESTED
                    task.lease_expires_at = None
                    task.cancel_requested = True
                    await self.repository.save(task)
                    return task
                if not task.cancel_requested:
                    task.cancel_requested = True
                    await self.repository.save(task)
            except ConflictError:
                continue  # changed meanwhile: look again
            asked = True
            if not wait:
                return task
            await asyncio.sleep(0.1)

    async def queue_status(self) -> QueueStatus:
        """How many tasks are pending, running (by worker), completed, failed and cancelled."""
        return await queue_status(self.repository)

    @property
    def sync(self) -> SyncTaskManager:
        """The same methods without ``await``."""
        from .._sync_faces import SyncTaskManager

        return SyncTaskManager(self)
