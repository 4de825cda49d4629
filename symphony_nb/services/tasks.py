"""The :class:`TaskManager`: creates tasks and runs them through agents, persisting each step."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import NotFoundError, TaskStateError, UnstorableEntityError
from .._models import Task, TaskStatus, utc_now
from .._repository import Repository
from .agent import Agent

if TYPE_CHECKING:
    from .._sync_faces import SyncTaskManager

_FINISHED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
_CANCELLED = "execution was cancelled"


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
        ``output_data``, or as failed with ``error`` when the agent raises or returns output
        that cannot be stored (not a dict, NUL text, not serialisable). If the execution is
        cancelled (an interrupt, a ``timeout=``) it is saved as cancelled and the cancellation
        propagates; a language model still running in a worker thread then finishes in the
        background and its reply is discarded. A task that already ran (or is running) is
        refused unless ``rerun=True``.
        """
        task = await self.get_task(task_id)
        if task.status is not TaskStatus.PENDING and not rerun:
            raise TaskStateError(
                f"task {task_id!r} is {task.status.value}; pass rerun=True to execute it again"
            )
        task.status = TaskStatus.RUNNING
        task.started_at = utc_now()
        task.completed_at = None
        task.error = None
        task.output_data = None
        task.agent_id = agent.config.id
        if await self._save_through_cancellation(task):
            # The running state landed although the execution was cancelled meanwhile.
            await self._finish(task, TaskStatus.CANCELLED, error=_CANCELLED)
            raise asyncio.CancelledError
        try:
            output = await agent.execute(task)
        except asyncio.CancelledError:
            await self._finish(task, TaskStatus.CANCELLED, error=_CANCELLED)
            raise
        except Exception as exc:  # the agent's failure is recorded on the task
            await self._finish(task, TaskStatus.FAILED, error=_describe(exc))
        else:
            await self._complete(task, output)
        return task

    async def _complete(self, task: Task, output: object) -> None:
        """Store ``output`` as the task's result, or the task as failed with why it cannot be."""
        try:
            if not isinstance(output, Mapping):
                raise UnstorableEntityError(
                    f"the agent returned {type(output).__name__}, not a dict"
                )
            task.output_data = dict(output)
            await self._finish(task, TaskStatus.COMPLETED)
        except Exception as exc:
            task.output_data = None
            await self._finish(
                task, TaskStatus.FAILED, error=f"the output could not be stored: {_describe(exc)}"
            )

    async def _finish(self, task: Task, status: TaskStatus, *, error: str | None = None) -> None:
        task.status = status
        task.completed_at = utc_now()
        task.error = error
        if await self._save_through_cancellation(task):
            raise asyncio.CancelledError

    async def _save_through_cancellation(self, task: Task) -> bool:
        """Save ``task`` even if cancelled meanwhile; return whether a cancellation came.

        Waiting for the save (not only shielding it) means that when the cancellation reaches
        the caller, the stored state is already the final one. A failed save raises its error
        (or CancelledError, chained to it, if a cancellation came too).
        """
        saving = asyncio.ensure_future(self.repository.save(task))
        cancelled = False
        while not saving.done():
            try:
                await asyncio.wait([saving])
            except asyncio.CancelledError:
                cancelled = True
        error = saving.exception()
        if error is not None:
            if cancelled:
                raise asyncio.CancelledError from error
            raise error
        return cancelled

    async def run_pending(
        self,
        agent: Agent,
        filter_criteria: Mapping[str, Any] | None = None,
        *,
        concurrency: int = 4,
        progress: bool = True,
    ) -> list[Task]:
        """Execute every pending task (optionally filtered), ``concurrency`` at a time.

        Returns the tasks in the order they were found, each with its final status: a task
        whose agent fails (or whose output cannot be stored) is failed and the batch goes on.
        If an error escapes a task (the storage fails, for example), or the batch is cancelled,
        every task already started is cancelled and awaited (stored as cancelled; tasks not
        yet started stay pending) before the error propagates, so nothing is left running.
        Shows a progress bar (``tqdm.auto``) unless ``progress=False``.
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        criteria = {**(filter_criteria or {}), "status": TaskStatus.PENDING}
        pending = await self.repository.find_all(criteria, order_by=["-priority", "created_at"])
        done: dict[int, Task] = {}
        queue = iter(enumerate(pending))  # shared: each worker takes the next task
        from tqdm.auto import tqdm

        with tqdm(total=len(pending), desc="tasks", disable=not progress) as bar:

            async def worker() -> None:
                for index, task in queue:
                    done[index] = await self.execute_task(task.id, agent)
                    bar.update()

            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(concurrency, len(pending))):
                        group.create_task(worker())
            except ExceptionGroup as failure:
                raise _first(failure) from None
        return [done[index] for index in range(len(pending))]

    @property
    def sync(self) -> SyncTaskManager:
        """The same methods without ``await``."""
        from .._sync_faces import SyncTaskManager

        return SyncTaskManager(self)


def _describe(exc: BaseException) -> str:
    # The error is stored on the task, and no backend stores NUL text.
    return f"{type(exc).__name__}: {exc}".replace("\x00", "\\x00")


def _first(failure: ExceptionGroup[Exception]) -> Exception:
    """The first error of a batch, noting how many other tasks failed the same way."""
    first = failure.exceptions[0]
    if len(failure.exceptions) > 1:
        first.add_note(f"{len(failure.exceptions) - 1} other task(s) of the batch failed as well")
    return first
