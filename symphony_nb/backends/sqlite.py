"""SQLite storage: one file, a table per model, filters and ordering run as SQL."""

# ruff: noqa: S608  (SQL text holds only names derived from the model; values are bound)

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from .._cache import Cache
from .._errors import ConflictError, CorruptEntityError, InvalidUrlError, StorageError
from .._gc import gc_paused
from .._keyring import Keyring
from .._repository import Repository
from .._types import T
from .._urls import expand_path, mask_url
from ..stores import (
    Change,
    ChangeFeed,
    Claimed,
    Condition,
    Counted,
    Document,
    Provenance,
    Query,
    ReadOnlyView,
    Record,
    Selection,
    Store,
    StoredRevision,
    plan_writes,
    provenance,
)
from ._sqlite_conn import (
    MEMORY,
    DataVersionFeed,
    Session,
    WorkerClosed,
    immediate,
    read_only_error,
    translate,
)
from ._sqlite_history import HistoryTable, PastStore
from ._sqlite_schema import IndexSpec, Layout
from ._sqlite_sql import SqlCompiler, quote

R = TypeVar("R")
_OPEN: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
_INHERITED: list[Session] = []


class SQLiteStore(Store):
    """The documents of ``model`` in one table of the SQLite file ``path``.

    Filters, ordering, paging and counts are compiled to SQL over generated columns for the
    indexed paths; each write checks versions and writes inside ``BEGIN IMMEDIATE``. What a
    user sees of it is described on :class:`SQLiteRepository`, which builds one. With
    history, each write appends its revisions to the table's history table (see
    :mod:`._sqlite_history`) in the same transaction.
    """

    def __init__(
        self,
        model: type[BaseModel],
        path: str | os.PathLike[str],
        *,
        indexes: Iterable[IndexSpec] = (),
        timeout: float = 10.0,
    ) -> None:
        super().__init__(model)
        path = os.fspath(path)
        if not path:
            raise StorageError("an SQLite path must not be empty (use ':memory:' for memory)")
        # Resolved now: connections opened later, on other threads, must find the same file
        # even if the working directory changes.
        self.path = path if path == MEMORY else os.path.abspath(path)
        self.timeout = timeout
        self.table = self.name
        self._layout = Layout.plan(model, self.table, indexes)
        self._sql = SqlCompiler(model, self.table, self._layout.columns)
        self._session: Session | None = None
        self._missing = False  # the table does not exist in a database we may only read
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._guard = threading.Lock()
        self._writes = 0  # writes and removals made through this store, for change feeds
        self.history = HistoryTable(self.table)
        self.has_history = False  # the history table exists (known once the session is ready)
        self._since: datetime | None = None  # when keep_history() turned history on
        table = quote(self.table)
        self._get_sql = f"SELECT doc FROM {table} WHERE id = ?"
        self._delete_sql = f"DELETE FROM {table} WHERE id = ?"
        self._versions_sql = (
            f"SELECT id, version FROM {table} WHERE id IN (SELECT value FROM json_each(?))"
        )
        self._upsert_sql = (
            f"INSERT INTO {table} (id, version, doc) VALUES (?1, ?2, ?3) ON CONFLICT (id) "
            f"DO UPDATE SET version = excluded.version, doc = excluded.doc "
            f"WHERE ?4 IS NULL OR {table}.version IS ?4"
        )
        self._update_sql = f"UPDATE {table} SET version = ?, doc = ? WHERE id = ?"

    def describe(self) -> str:
        return f"{self.path} table {self.table!r}"

    def change_feed(self) -> ChangeFeed:
        return DataVersionFeed(self._current, lambda: self._writes)

    def location(self, entity_id: str) -> str:
        return f"{self.path} table {self.table!r} id {entity_id!r}"

    # ------------------------------------------------------------------ sessions

    def _current(self) -> Session:
        session = self._session
        if session is not None:
            return session
        with self._guard:
            if self._session is None:
                if self.path != MEMORY:
                    try:
                        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise StorageError(
                            f"cannot open SQLite database {self.path}: cannot create its "
                            f"folder ({exc.strerror or exc})"
                        ) from None
                session = Session(self.path, self.timeout, f"symphony_nb-sqlite-{self.table}")
                self._finalizer = weakref.finalize(self, session.abandon)
                self._finalizer.atexit = False  # exiting must not wait for anything
                self._session = session
                _OPEN.add(self)
            return self._session

    async def _run(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(connection, *args)`` in the worker thread, the schema made first."""
        session = self._current()

        def job() -> R:
            try:
                conn = session.writer()
                if not session.ready or self._missing or self._history_wanted():
                    self._prepare(conn, session)
                return fn(conn, *args)
            except sqlite3.Error as exc:
                raise translate(exc, self.path, self.timeout) from None

        try:
            future = session.worker.submit(job)
        except WorkerClosed:  # closed by another thread meanwhile: open afresh
            return await self._run(fn, *args)
        return await asyncio.wrap_future(future)

    def _prepare(self, conn: sqlite3.Connection, session: Session) -> None:
        """Make the table and its indexes, or take them as they are where we may only read.

        There, only the indexed columns the table has are used, and a missing table is empty.
        """
        if session.read_only:
            present = self._layout.inspect(conn, self.path)
            self._missing = present is None
            columns = {p: c for p, c in self._layout.columns.items() if c in (present or ())}
            self._sql = SqlCompiler(self.model, self.table, columns)
            self.has_history = self.history.exists(conn)
        else:
            self._layout.create(conn, self.path)
            self._missing = False
            self._sql = SqlCompiler(self.model, self.table, self._layout.columns)
            if self._since is not None:
                self.history.create(conn, self._since)
            self.has_history = self._since is not None
        session.ready = True

    def _refuse_writes(self) -> None:
        if self._current().read_only:
            raise read_only_error(self.path, "no write permission on the file or its folder")

    async def close(self) -> None:
        with self._guard:
            session, self._session = self._session, None
            if self._finalizer is not None:
                self._finalizer.detach()
        if session is not None:
            await asyncio.wrap_future(session.close())
            session.join()

    # ------------------------------------------------------------------ reads

    async def get(self, entity_id: str) -> str | None:
        session = self._current()
        if session.ready and session.direct_reads and not self._missing:
            try:
                reader = session.reader()
                if reader is not None:
                    conn, lock = reader
                    with lock:
                        rows = conn.execute(self._get_sql, (entity_id,)).fetchall()
                    return rows[0][0] if rows else None
            except sqlite3.ProgrammingError:
                pass  # closed by another thread meanwhile: the worker path reopens
            except sqlite3.Error as exc:
                raise translate(exc, self.path, self.timeout) from None
        return await self._run(self._get_sync, entity_id)

    def _get_sync(self, conn: sqlite3.Connection, entity_id: str) -> str | None:
        if self._missing:
            return None
        rows = conn.execute(self._get_sql, (entity_id,)).fetchall()
        return rows[0][0] if rows else None

    async def select(self, query: Query) -> Selection:
        return await self._run(self._select_sync, query)

    def _select_sync(self, conn: sqlite3.Connection, query: Query) -> Selection:
        if self._missing:
            return Selection([])
        with gc_paused():  # a row tuple per match: the same collector cost as decoding
            return self._fetch(conn, query)

    def _fetch(
        self, conn: sqlite3.Connection, query: Query, compiler: SqlCompiler | None = None
    ) -> Selection:
        """Run ``query`` as ``compiler`` (default: the table's) compiles it."""
        compiler = compiler or self._sql
        sql, params = compiler.select(query)
        try:
            return Selection(conn.execute(sql, params).fetchall())
        except sqlite3.OperationalError as exc:
            if "malformed JSON" not in str(exc):
                raise
        # Some doc is not JSON (written around the CHECK constraint): report those rows as
        # corrupt and answer the query over the others.
        after = query.after_id or ""
        broken = [
            (entity_id, self._unparsable(entity_id))
            for entity_id in self._unparsable_ids(conn, compiler)
            if entity_id > after
        ]
        sql, params = compiler.select(query, guard=True)
        return Selection(conn.execute(sql, params).fetchall(), broken)

    def _unparsable_ids(self, conn: sqlite3.Connection, compiler: SqlCompiler) -> list[str]:
        return [row[0] for row in conn.execute(*compiler.unparsable())]

    def _unparsable(self, entity_id: str) -> CorruptEntityError:
        return CorruptEntityError(self.location(entity_id), "the doc column is not valid JSON")

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        return await self._run(self._count_sync, conditions)

    def _count_sync(self, conn: sqlite3.Connection, conditions: tuple[Condition, ...]) -> Counted:
        if self._missing:
            return Counted(0)
        return self._tally(conn, conditions, self._sql)

    def _tally(
        self, conn: sqlite3.Connection, conditions: tuple[Condition, ...], compiler: SqlCompiler
    ) -> Counted:
        """Count the rows satisfying ``conditions`` as ``compiler`` compiles them."""
        sql, params = compiler.count(conditions)
        try:
            return Counted(int(conn.execute(sql, params).fetchone()[0]))
        except sqlite3.OperationalError as exc:
            if "malformed JSON" not in str(exc):
                raise
        broken = [
            (entity_id, self._unparsable(entity_id))
            for entity_id in self._unparsable_ids(conn, compiler)
        ]
        sql, params = compiler.count(conditions, guard=True)
        return Counted(int(conn.execute(sql, params).fetchone()[0]), broken)

    # ------------------------------------------------------------------ writes

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        self._refuse_writes()
        stamp = None if self._kept is False else provenance()
        try:
            return await self._run(self._write_sync, records, create, stamp)
        finally:
            self._writes += 1

    def _write_sync(
        self,
        conn: sqlite3.Connection,
        records: Sequence[Record],
        create: bool,
        stamp: Provenance | None,
    ) -> list[bool]:
        with immediate(conn):
            written = None
            if stamp is not None:  # the revisions go first: baselines are the stored documents
                stored, heads = self.history.state(conn, [r.id for r in records])
                written = plan_writes(records, stored, create=create)
                keep = self._keep()
                self.history.record_writes(conn, records, written, stored, heads, stamp, keep)
            if create:
                rows = ((r.id, r.version, r.json, r.expected) for r in records)
                # The upsert skips a row whose stored version differs; then find and refuse it.
                if conn.executemany(self._upsert_sql, rows).rowcount != len(records):
                    plan_writes(records, self._versions(conn, records), create=True)
                    raise StorageError(
                        f"SQLite {self.path}: a write was skipped without a version conflict"
                    )
                return [True] * len(records)
            if written is None:
                written = plan_writes(records, self._versions(conn, records), create=False)
            todo = [(r.version, r.json, r.id) for r, ok in zip(records, written, strict=True) if ok]
            conn.executemany(self._update_sql, todo)
            return written

    def _versions(self, conn: sqlite3.Connection, records: Sequence[Record]) -> dict[str, Any]:
        ids = orjson.dumps([r.id for r in records]).decode()
        return dict(conn.execute(self._versions_sql, (ids,)).fetchall())

    async def claim(self, query: Query, change: Change) -> Claimed:
        """Read the candidates and write the claimed one in one ``BEGIN IMMEDIATE`` transaction.

        Claimers from every process take the write lock in turn, so each sees the others'
        claims and none loses a race; candidates are taken in the query's order.
        """
        self._refuse_writes()
        stamp = None if self._kept is False else provenance()
        return await self._run(self._claim_sync, query, change, stamp)

    def _claim_sync(
        self, conn: sqlite3.Connection, query: Query, change: Change, stamp: Provenance | None
    ) -> Claimed:
        conflicts = 0
        with immediate(conn):
            rows = (row for part in _by_leading_enum(query) for row in self._fetch(conn, part).rows)
            for entity_id, document in itertools.islice(rows, query.limit):
                if isinstance(document, CorruptEntityError):
                    continue
                record = change(entity_id, document)
                if record is None:
                    continue
                try:
                    plan_writes([record], self._versions(conn, [record]), create=False)
                except ConflictError:
                    conflicts += 1  # the document did not hold its row's version
                    continue
                if stamp is not None:
                    stored, heads = self.history.state(conn, [record.id])
                    keep = self._keep()
                    self.history.record_writes(conn, [record], [True], stored, heads, stamp, keep)
                conn.execute(self._update_sql, (record.version, record.json, record.id))
                return Claimed(record, conflicts)
        return Claimed(None, conflicts)

    async def remove(self, entity_id: str) -> bool:
        self._refuse_writes()
        stamp = None if self._kept is False else provenance()
        try:
            return await self._run(self._remove_sync, entity_id, stamp)
        finally:
            self._writes += 1

    def _remove_sync(
        self, conn: sqlite3.Connection, entity_id: str, stamp: Provenance | None
    ) -> bool:
        if stamp is None:
            return bool(conn.execute(self._delete_sql, (entity_id,)).rowcount)
        with immediate(conn):
            if not self.history.record_removal(conn, entity_id, stamp, self._keep()):
                return False
            return bool(conn.execute(self._delete_sql, (entity_id,)).rowcount)

    # ------------------------------------------------------------------ history

    def _keep(self) -> int | None:
        return None if self._kept is False else self._kept

    def keep_history(self, keep_last: int | None) -> None:
        """Keep revisions in the history table, which the next call makes (with the
        first-time baselines) if the file has none."""
        self._since = self._since or provenance().at
        self._kept = keep_last

    def _history_wanted(self) -> bool:
        """Whether history is on and its table not known to exist (so prepare again)."""
        return self._since is not None and not self.has_history

    async def revisions(self, entity_id: str, version: int | None = None) -> list[StoredRevision]:
        if self._kept is False:
            return await super().revisions(entity_id, version)
        return await self._run(self._revisions_sync, entity_id, version)

    def _revisions_sync(
        self, conn: sqlite3.Connection, entity_id: str, version: int | None
    ) -> list[StoredRevision]:
        if not self.has_history:
            return []
        with gc_paused():
            return self.history.revisions(conn, entity_id, version)

    async def revision_page(
        self, after: tuple[str, int] | None, limit: int
    ) -> list[StoredRevision]:
        if self._kept is False:
            return await super().revision_page(after, limit)
        return await self._run(self._page_sync, after, limit)

    def _page_sync(
        self, conn: sqlite3.Connection, after: tuple[str, int] | None, limit: int
    ) -> list[StoredRevision]:
        if not self.has_history:
            return []
        with gc_paused():
            return self.history.page(conn, after, limit)

    async def rewrite_revisions(self, changes: Sequence[tuple[StoredRevision, Document]]) -> int:
        if self._kept is False:
            return await super().rewrite_revisions(changes)
        self._refuse_writes()
        if not changes:
            return 0
        return await self._run(self.history.rewrite, list(changes))

    def as_of(self, when: datetime) -> Store:
        if self._kept is False:
            return super().as_of(when)
        past = PastStore(self, when)
        return ReadOnlyView(past, past.describe())

    async def prune(self, *, keep_last: int | None, older_than: datetime | None) -> int:
        if self._kept is False:
            return await super().prune(keep_last=keep_last, older_than=older_than)
        self._refuse_writes()
        return await self._run(self._prune_sync, keep_last, older_than)

    def _prune_sync(
        self, conn: sqlite3.Connection, keep_last: int | None, older_than: datetime | None
    ) -> int:
        return self.history.prune(conn, keep_last, older_than)

    async def purge(self, entity_id: str) -> int:
        """Remove the document and every revision of it, also where this store keeps no
        history but the file has some (an erasure leaves nothing behind)."""
        self._refuse_writes()
        try:
            return await self._run(self._purge_sync, entity_id)
        finally:
            self._writes += 1

    def _purge_sync(self, conn: sqlite3.Connection, entity_id: str) -> int:
        with immediate(conn):
            found = conn.execute(self._delete_sql, (entity_id,)).rowcount
            return int(found) + self.history.purge(conn, entity_id)


def _by_leading_enum(query: Query) -> list[Query]:
    """``query`` as one query per rank of its leading enum ordering key, in rank order.

    Each part filters on one value of the enum instead of sorting by its rank, so an index
    on (conditions, enum field, next keys) answers it without a sort (Task declares one for
    a worker's claim: the oldest pending task of the highest priority). Together the parts
    select the same rows, in the query's order except for values outside the enum (which a
    model with that enum cannot read): those come last, since finding them means a scan.
    """
    key = query.order[0] if query.order else None
    if key is None or key.enum is None or len(key.path) != 1 or query.offset or query.after_id:
        return [query]
    members, rest = key.enum, query.order[1:]
    ranked: list[tuple[Condition, ...]] = [
        (Condition(key.path, "$eq", member),) for member in members
    ]
    missing = (Condition(key.path, "$exists", False),)
    parts = [*reversed(ranked), missing] if key.descending else [missing, *ranked]
    parts.append((Condition(key.path, "$exists", True), Condition(key.path, "$nin", members)))
    return [
        dataclasses.replace(query, conditions=(*query.conditions, *extra), order=rest)
        for extra in parts
    ]


class SQLiteRepository(Repository[T]):
    """A repository of ``model`` in the SQLite file ``path``, e.g. ``SQLiteRepository(Task, "symphony.db")``.

    The file and its folder are created if missing; a relative path is resolved at once.

    Filters, ordering, paging and counts run in SQLite, with the same semantics as every
    other backend. The fields the model declares in ``__indexes__`` (Task: ``status``,
    ``priority``, ``created_at``) are indexed; ``indexes`` adds more: field names or dotted
    keys into dict fields (``"agent_id"``, ``"input_data.kind"``), or tuples of them for
    composite indexes.

    Several repositories (one per model) and several processes may share one file: the file
    is in WAL mode, readers never wait, and each write checks versions and writes inside
    ``BEGIN IMMEDIATE``, waiting up to ``timeout`` seconds for another writer. Commits are
    durable (``synchronous=FULL``). ``path=":memory:"`` keeps a private in-memory database.

    A file this process may read but not write (or in a folder it may not write) is opened
    read-only: reads work (a table not made yet reads as empty) and writes raise
    :class:`StorageError` saying so. Nothing is created in it, not even the table.

    ``keyring`` encrypts secret fields (see :class:`~symphony_nb.Repository`).

    ``history=True`` (or ``history=N``) keeps every change as a revision in the table
    ``"<table>::history"`` of the same file, written in the transaction of the change;
    as-of reads run the same SQL over the revisions standing at that instant. A file with
    history opens as before without it, in read-only mode and in older symphony_nb.

    ``cache=True`` (or a :class:`~symphony_nb.Cache`) keeps documents read in memory; every
    read first checks ``PRAGMA data_version`` (a few microseconds), so a commit by any other
    connection or process is seen by the next read.
    """

    def __init__(
        self,
        model: type[T],
        path: str | os.PathLike[str],
        *,
        indexes: Iterable[IndexSpec] = (),
        timeout: float = 10.0,
        keyring: Keyring | None = None,
        cache: bool | Cache | None = None,
        history: bool | int | None = None,
    ) -> None:
        database = SQLiteStore(model, path, indexes=indexes, timeout=timeout)
        super().__init__(model, database, keyring=keyring, cache=cache, history=history)
        self.path = database.path
        self.table = database.table
        self.timeout = database.timeout

    def __repr__(self) -> str:
        return f"SQLiteRepository({self.model.__name__}, {self.path!r})"


def open_url(
    model: type[T],
    url: str,
    *,
    keyring: Keyring | None = None,
    cache: bool | Cache | None = None,
    history: bool | int | None = None,
) -> SQLiteRepository[T]:
    """A repository for ``sqlite:///relative.db``, ``sqlite:////abs.db`` (``sqlite:///~/x.db``
    expands ``~``) or ``sqlite://:memory:``."""
    rest = url.split("://", 1)[1]
    if rest in ("", MEMORY, "/" + MEMORY):
        return SQLiteRepository(model, MEMORY, keyring=keyring, cache=cache, history=history)
    if not rest.startswith("/") or rest == "/":
        raise InvalidUrlError(
            f"SQLite URL {mask_url(url)!r} names no file: use sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite://:memory:"
        )
    path = expand_path(rest[1:].split("?", 1)[0])
    return SQLiteRepository(model, path, keyring=keyring, cache=cache, history=history)


def _after_fork() -> None:
    # A connection must not cross fork(): the child starts afresh and never touches (not
    # even closes, which could checkpoint the parent's WAL) what it inherited.
    for repo in list(_OPEN):
        if repo._session is not None:
            _INHERITED.append(repo._session)
        if repo._finalizer is not None:
            repo._finalizer.detach()
        repo._session = None
        repo._guard = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
