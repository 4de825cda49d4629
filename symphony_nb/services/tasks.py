"""The :class:`TaskManager`: creates tasks and runs them through agents, persisting each step."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import NotFoundError, SymphonyError
from .._models import Task, TaskStatus, utc_now
from .._repository import Repository
from .agent import Agent

if TYPE_CHECKING:
    from .._sync_faces import SyncTaskManager

_FINISHED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


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

        The task is saved as running (with ``started_at``), then as completed with
        ``output_data`` or as failed with ``error``. If the execution is cancelled it is saved
        as cancelled and the cancellation propagates. A task that already ran (or is running)
        is refused unless ``rerun=True``.
        """
        task = await self.get_task(task_id)
        if task.status is not TaskStatus.PENDING and not rerun:
            raise SymphonyError(
                f"task {task_id!r} is {task.status.value}; pass rerun=True to execute it again"
            )
        task.status = TaskStatus.RUNNING
        task.started_at = utc_now()
        task.completed_at = None
        task.error = None
        task.agent_id = agent.config.id
        saving = asyncio.ensure_future(self.repository.save(task))
        try:
            await asyncio.shield(saving)
        except asyncio.CancelledError:
            # The running state may still land after the cancellation: let it, then record
            # the end, so the task is never left stored as running.
            with contextlib.suppress(Exception):
                await saving
            if saving.done() and not saving.cancelled() and saving.exception() is None:
                await self._finish(task, TaskStatus.CANCELLED, error="execution was cancelled")
            raise
        try:
            output = await agent.execute(task)
        except asyncio.CancelledError:
            await self._finish(task, TaskStatus.CANCELLED, error="execution was cancelled")
            raise
        except Exception as exc:  # the agent's failure is recorded on the task
            await self._finish(task, TaskStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        else:
            await self._finish(task, TaskStatus.COMPLETED, output=output)
        return task

    async def _finish(
        self,
        task: Task,
        status: TaskStatus,
        *,
        output: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        task.status = status
        task.completed_at = utc_now()
        task.error = error
        if output is not None:
            task.output_data = dict(output)
        # Shielded so that a second cancellation cannot leave the task stored as running.
        await asyncio.shield(self.repository.save(task))

    async def run_pending(
        self,
        agent: Agent,
        filter_criteria: Mapping[str, Any] | None = None,
        *,
        concurrency: int = 4,
        progress: bool = True,
    ) -> list[Task]:
        """Execute every pending task (optionally filtered), ``concurrency`` at a time.

        Shows a progress bar (``tqdm.auto``) unless ``progress=False``; returns the tasks
        in the order they were found.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        criteria = {**(filter_criteria or {}), "status": TaskStatus.PENDING}
        pending = await self.repository.find_all(criteria, order_by=["-priority", "created_at"])
        gate = asyncio.Semaphore(concurrency)
        from tqdm.auto import tqdm

        with tqdm(total=len(pending), desc="tasks", disable=not progress) as bar:

            async def one(task: Task) -> Task:
                async with gate:
                    done = await self.execute_task(task.id, agent)
                bar.update()
                return done

            return list(await asyncio.gather(*(one(task) for task in pending)))

    @property
    def sync(self) -> SyncTaskManager:
        """The same methods without ``await``."""
        from .._sync_faces import SyncTaskManager

        return SyncTaskManager(self)
