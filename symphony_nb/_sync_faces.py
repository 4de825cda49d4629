"""Typed sync faces of Repository, TaskManager, AgentFactory, Agent.

Generated from the async classes by scripts/generate-sync. Do not edit: change the
async methods, then run ``python scripts/generate-sync`` (tests/test_sync_generated.py
fails while this file is stale).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic

from ._sync import SyncFacade, run_sync, sync_iterator
from ._types import T

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from datetime import datetime
    from typing import Any

    import pandas as pd

    from ._history import Revision
    from ._models import Task
    from ._repository import Filter, OnCorrupt, OrderBy, Repository
    from ._schema import MigrationReport
    from .services._queue import QueueStatus
    from .services._worker import WorkReport
    from .services.agent import Agent, AgentFactory, LanguageModel
    from .services.tasks import TaskManager


class SyncRepository(SyncFacade["Repository[T]"], Generic[T]):
    """Blocking methods of :class:`Repository`.

    Each one runs the coroutine method of the same name to completion (see
    :func:`run_sync`) and takes a keyword-only ``timeout`` in seconds.
    """

    __slots__ = ()
    _target: Repository[T]

    def save(self, entity: T, *, timeout: float | None = None) -> str:
        """Insert or replace ``entity``; return its id.

        Raises :class:`ConflictError` if the stored version is not ``entity.version``; on
        success ``entity.version`` and ``entity.updated_at`` are updated in place.
        """
        return run_sync(self._target.save(entity), timeout)

    def save_many(self, entities: Iterable[T], *, timeout: float | None = None) -> list[str]:
        """Save several entities, all or nothing where the backend allows; return their ids."""
        return run_sync(self._target.save_many(entities), timeout)

    def find_by_id(
        self, id: str, *, as_of: datetime | None = None, timeout: float | None = None
    ) -> T | None:
        """The entity with this id, or None if there is none.

        ``as_of`` (an aware datetime; needs ``history=``) reads it as it stood then.
        """
        return run_sync(self._target.find_by_id(id, as_of=as_of), timeout)

    def get(self, id: str, *, version: int | None = None, timeout: float | None = None) -> T:
        """The entity with this id; raise :class:`NotFoundError` if there is none.

        ``version=k`` (needs ``history=``) returns the entity as revision k kept it;
        NotFoundError when there is no such revision (never made, or pruned) or it is the
        entity's deletion.
        """
        return run_sync(self._target.get(id, version=version), timeout)

    def find_all(
        self,
        filter_criteria: Filter | None = None,
        *,
        order_by: OrderBy | None = None,
        limit: int | None = None,
        offset: int = 0,
        on_corrupt: OnCorrupt = "raise",
        as_of: datetime | None = None,
        timeout: float | None = None,
    ) -> list[T]:
        """Entities matching ``filter_criteria`` (see :mod:`symphony_nb.filters`).

        ``order_by`` is a field, ``"-field"`` for descending, or a list of them (id order by
        default); ``limit`` and ``offset`` page the result. ``on_corrupt="warn"`` skips corrupt
        entities with a :class:`CorruptEntityWarning` instead of raising. ``as_of`` (an aware
        datetime; needs ``history=``) answers as the repository stood at that instant.
        """
        return run_sync(
            self._target.find_all(
                filter_criteria,
                order_by=order_by,
                limit=limit,
                offset=offset,
                on_corrupt=on_corrupt,
                as_of=as_of,
            ),
            timeout,
        )

    def count(
        self,
        filter_criteria: Filter | None = None,
        *,
        on_corrupt: OnCorrupt = "raise",
        as_of: datetime | None = None,
        timeout: float | None = None,
    ) -> int:
        """How many entities match ``filter_criteria`` (``as_of``: at that instant).

        A stored document that cannot be read at all (not JSON, or a file whose name is no
        entity id) raises :class:`CorruptEntityError`; ``on_corrupt="warn"`` leaves each one
        out of the count with a :class:`CorruptEntityWarning` instead, as :meth:`find_all`
        does. Documents are not validated against the model here (:meth:`find_all` does).
        """
        return run_sync(
            self._target.count(filter_criteria, on_corrupt=on_corrupt, as_of=as_of), timeout
        )

    def iter_all(
        self,
        filter_criteria: Filter | None = None,
        *,
        order_by: OrderBy | None = None,
        batch_size: int = 1000,
        on_corrupt: OnCorrupt = "raise",
        timeout: float | None = None,
    ) -> Iterator[T]:
        """Iterate over matches in batches of ``batch_size``, keeping memory bounded.

        Without ``order_by`` it pages by id, so entities added or removed while iterating
        never cause duplicates or skips of the others.
        """
        return sync_iterator(
            self._target.iter_all(
                filter_criteria, order_by=order_by, batch_size=batch_size, on_corrupt=on_corrupt
            ),
            timeout,
        )

    def update(self, entity: T, *, timeout: float | None = None) -> bool:
        """Replace a stored entity; False (and nothing created) if its id is not stored."""
        return run_sync(self._target.update(entity), timeout)

    def delete(self, id: str, *, timeout: float | None = None) -> bool:
        """Delete the entity with this id; False if there was none."""
        return run_sync(self._target.delete(id), timeout)

    def history(self, id: str, *, timeout: float | None = None) -> list[Revision[T]]:
        """The revisions of the entity with this id, oldest first (needs ``history=``).

        Each has ``version``, ``op`` (``"create"``, ``"update"`` or ``"delete"``), ``at``
        (UTC), ``actor``, ``reason`` (see :func:`~symphony_nb.change_context`) and
        ``entity`` (as it was; None for a delete). A deleted entity's history stays.
        Raises :class:`NotFoundError` for an id with no revision and no document.
        """
        return run_sync(self._target.history(id), timeout)

    def revert(
        self,
        id: str,
        version: int,
        *,
        expected_version: int | None = None,
        timeout: float | None = None,
    ) -> T:
        """Write a new version whose content is revision ``version``'s; return it.

        History is never rewritten: the revert is one more revision (an ``update``, or a
        ``create`` that brings a deleted entity back). With ``expected_version``, raises
        :class:`ConflictError` unless the stored entity is at that version (a deleted one
        is at none). Its reason is ``"revert to version k"`` unless a
        :func:`~symphony_nb.change_context` gives one.
        """
        return run_sync(
            self._target.revert(id, version, expected_version=expected_version), timeout
        )

    def prune(
        self,
        *,
        keep_last: int | None = None,
        older_than: datetime | None = None,
        timeout: float | None = None,
    ) -> int:
        """Remove old revisions, never an entity's latest; return how many went.

        ``keep_last=N`` keeps the last N of each entity; ``older_than`` (an aware datetime)
        removes those made before it; both: those beyond the last N *and* older. Neither:
        the repository's ``history=N``.
        """
        return run_sync(self._target.prune(keep_last=keep_last, older_than=older_than), timeout)

    def purge(self, id: str, *, timeout: float | None = None) -> int:
        """Remove the entity with this id and every revision of it; return how many records
        went (the entity counts one). For erasure: nothing of it stays, not even a delete
        revision. Works with and without history."""
        return run_sync(self._target.purge(id), timeout)

    def history_dataframe(self, id: str, *, timeout: float | None = None) -> pd.DataFrame:
        """The revisions of one entity as a DataFrame, one row per revision: ``version``,
        ``op``, ``at``, ``actor``, ``reason``, then the entity's columns (empty for a delete).
        """
        return run_sync(self._target.history_dataframe(id), timeout)

    def schema_versions(self, *, timeout: float | None = None) -> dict[int, int]:
        """How many stored documents are at each schema version, e.g. ``{1: 40, 2: 60}``.

        The model's version is its ``__schema_version__`` class attribute (1 when absent);
        documents stored before a model declared one count as version 1. Reads return every
        document at the current version whatever it is stored at; :meth:`migrate` rewrites
        the older ones.
        """
        return run_sync(self._target.schema_versions(), timeout)

    def migrate(
        self, *, batch_size: int = 500, progress: bool = True, timeout: float | None = None
    ) -> MigrationReport:
        """Rewrite every document stored at an older schema version at the current one.

        Documents go through the model's upgraders (see :func:`symphony_nb.upgrader`) and
        its validation, then are written in batches of ``batch_size``, each all or nothing
        and through the version check: an entity edited meanwhile is read again, never
        overwritten with its content from before the edit. ``version`` goes up by one;
        ``updated_at`` is kept. A second run rewrites nothing; an interrupted one resumes
        where it stopped. Documents that cannot be upgraded are left as stored and listed in
        the report's ``failed``. Shows a progress bar (``tqdm.auto``) unless ``progress=False``.
        """
        return run_sync(self._target.migrate(batch_size=batch_size, progress=progress), timeout)

    def to_dataframe(
        self,
        filter_criteria: Filter | None = None,
        *,
        columns: Sequence[str] | None = None,
        order_by: OrderBy | None = None,
        limit: int | None = None,
        flatten: bool = False,
        on_corrupt: OnCorrupt = "raise",
        timeout: float | None = None,
    ) -> pd.DataFrame:
        """Matching entities as a pandas DataFrame indexed by id (see :mod:`symphony_nb.dataframes`).

        Enum columns are categoricals, datetimes stay UTC, dict fields stay dicts unless
        ``flatten=True`` (dotted column names); ``columns`` selects fields. Every entity is
        validated as by :meth:`find_all`: a corrupt one raises :class:`CorruptEntityError`,
        or with ``on_corrupt="warn"`` is left out with a :class:`CorruptEntityWarning`.
        """
        return run_sync(
            self._target.to_dataframe(
                filter_criteria,
                columns=columns,
                order_by=order_by,
                limit=limit,
                flatten=flatten,
                on_corrupt=on_corrupt,
            ),
            timeout,
        )

    def save_dataframe(self, df: pd.DataFrame, *, timeout: float | None = None) -> list[str]:
        """Write the new and edited rows of ``df`` (as made by :meth:`to_dataframe`) back.

        Returns the ids written: rows equal to the stored entity are not written, so an
        unedited frame returns ``[]``; a row without an id gets a fresh one. Every row is
        validated first; if any is invalid (an empty cell in a stored row's required field
        included), :class:`RowValidationError` lists each bad row and field and nothing is
        saved. Stale rows raise :class:`ConflictError`.
        """
        return run_sync(self._target.save_dataframe(df), timeout)

    def rotate_keys(
        self, *, progress: bool = True, batch_size: int = 500, timeout: float | None = None
    ) -> int:
        """Re-encrypt under the keyring's primary key every secret stored under another key.

        Works in batches of ``batch_size`` entities, each written all or nothing through the
        version check; an entity edited meanwhile is read again (the edit wins, already under
        the primary key). Returns the number of entities rewritten: a second run rewrites
        none, and a run that was killed resumes where it stopped. Shows a progress bar
        (``tqdm.auto``) unless ``progress=False``. A model without secrets has nothing to do.
        With history on, the secrets of every kept revision are then sealed again too, in
        place (only their stored form changes; they are not counted); a repository opened
        without ``history=`` leaves the revisions as they are. Then :meth:`key_report` shows
        whether a retired key is still needed.
        """
        return run_sync(self._target.rotate_keys(progress=progress, batch_size=batch_size), timeout)

    def key_report(self, *, timeout: float | None = None) -> dict[str, int]:
        """``{key id: number of encrypted values}`` over every stored entity and every kept
        revision (with history on; a repository opened without ``history=`` does not look at
        revisions), by key id.

        Values under a key that is not the primary are what :meth:`rotate_keys` rewrites;
        empty secrets are stored as ``""`` and not counted. ``{}`` for a model without secrets.
        """
        return run_sync(self._target.key_report(), timeout)

    def close(self, *, timeout: float | None = None) -> None:
        """Release the backend's resources; safe to call more than once."""
        run_sync(self._target.close(), timeout)


class SyncTaskManager(SyncFacade["TaskManager"]):
    """Blocking methods of :class:`TaskManager`.

    Each one runs the coroutine method of the same name to completion (see
    :func:`run_sync`) and takes a keyword-only ``timeout`` in seconds.
    """

    __slots__ = ()
    _target: TaskManager

    def create_task(self, name: str, *, timeout: float | None = None, **fields: Any) -> Task:
        """Validate a new task (``name`` plus any Task field) and save it."""
        return run_sync(self._target.create_task(name, **fields), timeout)

    def get_task(self, task_id: str, *, timeout: float | None = None) -> Task:
        """The stored task ``task_id``; raises :class:`NotFoundError` if there is none."""
        return run_sync(self._target.get_task(task_id), timeout)

    def execute_task(
        self, task_id: str, agent: Agent, *, rerun: bool = False, timeout: float | None = None
    ) -> Task:
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
        return run_sync(self._target.execute_task(task_id, agent, rerun=rerun), timeout)

    def work(
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
        timeout: float | None = None,
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
        return run_sync(
            self._target.work(
                agent,
                filter_criteria,
                concurrency=concurrency,
                lease=lease,
                renew_every=renew_every,
                max_attempts=max_attempts,
                stop_when_idle=stop_when_idle,
                poll=poll,
                worker=worker,
                progress=progress,
            ),
            timeout,
        )

    def run_pending(
        self,
        agent: Agent,
        filter_criteria: Mapping[str, Any] | None = None,
        *,
        concurrency: int = 4,
        progress: bool = True,
        timeout: float | None = None,
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
        return run_sync(
            self._target.run_pending(
                agent, filter_criteria, concurrency=concurrency, progress=progress
            ),
            timeout,
        )

    def cancel(self, task_id: str, *, wait: bool = True, timeout: float | None = None) -> Task:
        """Cancel task ``task_id`` from any process; return it as stored.

        A pending task is stored cancelled at once. A running task gets a cancel request:
        the worker running it notices within a second, stops its agent and stores it
        cancelled; with ``wait=True`` this returns once it has (a task whose worker is gone
        is stored cancelled here once its lease has run out), with ``wait=False`` at once.
        A task that finished meanwhile is returned as it finished. Raises
        :class:`NotFoundError` for an unknown id and :class:`TaskStateError` for a task
        that had already finished.
        """
        return run_sync(self._target.cancel(task_id, wait=wait), timeout)

    def queue_status(self, *, timeout: float | None = None) -> QueueStatus:
        """How many tasks are pending, running (by worker), completed, failed and cancelled."""
        return run_sync(self._target.queue_status(), timeout)


class SyncAgentFactory(SyncFacade["AgentFactory"]):
    """Blocking methods of :class:`AgentFactory`.

    Each one runs the coroutine method of the same name to completion (see
    :func:`run_sync`) and takes a keyword-only ``timeout`` in seconds.
    """

    __slots__ = ()
    _target: AgentFactory

    def create_agent(
        self,
        config_id: str,
        *,
        llm: LanguageModel | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> Agent:
        """Load config ``config_id`` and build an agent, with ``overrides`` for its fields.

        ``llm`` replaces the factory's language model for this agent. Raises
        :class:`NotFoundError` for an unknown id.
        """
        return run_sync(self._target.create_agent(config_id, llm=llm, **overrides), timeout)


class SyncAgent(SyncFacade["Agent"]):
    """Blocking methods of :class:`Agent`.

    Each one runs the coroutine method of the same name to completion (see
    :func:`run_sync`) and takes a keyword-only ``timeout`` in seconds.
    """

    __slots__ = ()
    _target: Agent

    def run(self, input_data: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Ask the language model about ``input_data``; return the output to store on a task.

        The model gets the config's ``model_config`` as ``settings`` and, if it declares a
        ``secrets`` parameter, the config's secrets revealed (see :class:`LanguageModel`).
        """
        return run_sync(self._target.run(input_data), timeout)

    def execute(self, task: Task, *, timeout: float | None = None) -> dict[str, Any]:
        """Run this agent on ``task``'s input data."""
        return run_sync(self._target.execute(task), timeout)
