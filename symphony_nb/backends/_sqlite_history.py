"""The revisions of one model's SQLite table, in the table ``"<table>::history"`` of its file::

    id TEXT, version INTEGER, op TEXT, at TEXT, actor TEXT, reason TEXT, doc TEXT,
    entity_version INTEGER
    UNIQUE INDEX "<table>::history:key" (id, version)
    INDEX "<table>::history:time" (id, version, at, op, entity_version)
    INDEX "<table>::history:$" (id) WHERE doc begins with the schema key

``at`` is fixed-width ISO text in UTC (``2026-12-01T15:36:53.279583+00:00``), so its text
order is time order; ``doc`` is the document as written (NULL for a delete). The two colons
keep the names apart from the table's indexes (``"<table>:<columns>"``).

Revisions are appended in rowid order, so a write adds pages at the end instead of
rewriting the ones its ids' older revisions are on (a table clustered by id would be
rewritten whole by a write of every entity). The ``time`` index covers what finding the
latest revision of an id (at or before an instant) needs, so as-of reads scan that index
and read only the documents they return. The partial ``$`` index lists the revisions whose
document holds a schema version: for most models it stays empty, and the query every read
makes for older documents costs nothing.

The table is made when a store first keeps history (a file that never kept any has none),
and ``PRAGMA user_version`` stays as it was: older symphony_nb, which knows only the model
tables, opens a file that has one as before. The methods that record a change run inside
the caller's ``BEGIN IMMEDIATE`` transaction, the one that changes the model's table;
:class:`PastStore` reads the collection as it stood.
"""

# ruff: noqa: S608  (SQL text holds only names derived from the model; values are bound)

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from .._errors import StorageError
from .._filters import document_text
from ..stores import (
    BASELINE,
    Condition,
    Counted,
    Document,
    Head,
    Provenance,
    Query,
    Record,
    Selection,
    Store,
    StoredRevision,
    count_schema_key,
    matches,
    needs_baseline,
    on_schema_key,
    plan_removal,
    plan_revisions,
    to_prune,
)
from ._sqlite_conn import immediate
from ._sqlite_sql import MARKED, SqlCompiler, quote, schema_key_value

if TYPE_CHECKING:
    from .sqlite import SQLiteStore

_COLUMNS = "id, version, op, at, actor, reason, doc, entity_version"


def at_text(at: datetime) -> str:
    """``at`` as the table keeps it: ISO text in UTC, to the microsecond, fixed width."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _ids(ids: Iterable[str]) -> str:
    return orjson.dumps(sorted(ids)).decode()  # in key order: lookups walk the indexes once


class HistoryTable:
    """The SQL of the history table of the model table ``table`` (its own name unquoted)."""

    def __init__(self, table: str) -> None:
        self.name = f"{table}::history"
        hist, live = quote(self.name), quote(table)
        marked = f"substr(doc, 1, {len(MARKED)}) = '{MARKED}'"
        self._create_sql = [
            f"CREATE TABLE IF NOT EXISTS {hist} (id TEXT NOT NULL, version INTEGER NOT NULL, "
            "op TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete')), at TEXT NOT NULL, "
            "actor TEXT, reason TEXT, doc TEXT, entity_version INTEGER)",
            f"CREATE UNIQUE INDEX IF NOT EXISTS {quote(self.name + ':key')} "
            f"ON {hist} (id, version)",
            f"CREATE INDEX IF NOT EXISTS {quote(self.name + ':time')} "
            f"ON {hist} (id, version, at, op, entity_version)",
            f"CREATE INDEX IF NOT EXISTS {quote(self.name + ':$')} ON {hist} (id) WHERE {marked}",
        ]
        self._marks_sql = (
            f"SELECT w.op, {schema_key_value()} FROM (SELECT DISTINCT id FROM {hist} "
            f"WHERE {marked}) AS k JOIN {hist} AS w ON w.id = k.id AND w.version = "
            f"(SELECT max(version) FROM {hist} WHERE id = k.id AND at <= :when)"
        )
        # The numbering of baseline() for an id with no revision: at its version, at least 1.
        self._baselines_sql = (
            f"INSERT INTO {hist} ({_COLUMNS}) SELECT id, max(1, coalesce(version, 0)), "
            f"'create', ?, NULL, ?, doc, version FROM {live} "
            f"WHERE NOT EXISTS (SELECT 1 FROM {hist})"
        )
        self._exists_sql = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?"
        # One id: whether and at which version it is stored, and its latest revision.
        self._state_sql = (
            f"SELECT t.id IS NOT NULL, t.version, h.version, h.op, h.entity_version "
            f"FROM (SELECT ?1 AS id) AS j LEFT JOIN {live} AS t ON t.id = j.id "
            f"LEFT JOIN {hist} AS h ON h.id = j.id "
            f"AND h.version = (SELECT max(version) FROM {hist} WHERE id = j.id)"
        )
        # Many ids (two queries: faster than the join over json_each).
        self._versions_sql = (
            f"SELECT id, version FROM {live} WHERE id IN (SELECT value FROM json_each(?))"
        )
        self._heads_sql = (
            f"SELECT h.id, h.version, h.op, h.entity_version FROM json_each(?) AS j "
            f"JOIN {hist} AS h ON h.id = j.value "
            f"AND h.version = (SELECT max(version) FROM {hist} WHERE id = j.value)"
        )
        self._documents_sql = (
            f"SELECT id, doc FROM {live} WHERE id IN (SELECT value FROM json_each(?))"
        )
        self._stored_sql = f"SELECT doc FROM {live} WHERE id = ?"
        self._insert_sql = f"INSERT INTO {hist} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        # All but the last ?2 revisions of id ?1 (what to_prune(keep_last=?2) names).
        self._trim_sql = (
            f"DELETE FROM {hist} WHERE id = ?1 AND version < (SELECT version FROM {hist} "
            f"WHERE id = ?1 ORDER BY version DESC LIMIT 1 OFFSET ?2 - 1)"
        )
        self._revisions_sql = (
            f"SELECT version, op, at, actor, reason, doc, entity_version FROM {hist} "
            "WHERE id = ? ORDER BY version"
        )
        self._revision_sql = (
            f"SELECT version, op, at, actor, reason, doc, entity_version FROM {hist} "
            "WHERE id = ? AND version = ?"
        )
        self._at_sql = (
            f"SELECT op, doc FROM {hist} WHERE id = ? AND at <= ? ORDER BY version DESC LIMIT 1"
        )
        self._keys_sql = f"SELECT id, version, at, rowid FROM {hist} ORDER BY id, version"
        self._forget_sql = f"DELETE FROM {hist} WHERE rowid = ?"
        self._purge_sql = f"DELETE FROM {hist} WHERE id = ?"
        self._page_sql = (
            f"SELECT id, version, op, at, actor, reason, doc, entity_version FROM {hist} "
            "WHERE (id, version) > (?, ?) ORDER BY id, version LIMIT ?"
        )
        self._rewrite_sql = f"UPDATE {hist} SET doc = ? WHERE id = ? AND version = ? AND doc = ?"
        self.past = (
            f"SELECT m.id AS id, h.doc AS doc FROM (SELECT id, rowid AS r, op, max(version) "
            f"FROM {hist} WHERE at <= :when GROUP BY id) AS m JOIN {hist} AS h "
            "ON h.rowid = m.r WHERE m.op <> 'delete'"
        )
        """The ``(id, doc)`` rows of the collection at ``:when``. SQLite's bare columns take
        their values from the row of the max; conditions on ``id`` (pages after an id) reach
        the grouped scan of the index."""

    # ------------------------------------------------------------------ the table

    def exists(self, conn: sqlite3.Connection) -> bool:
        """Whether the file has the table."""
        return conn.execute(self._exists_sql, (self.name,)).fetchone() is not None

    def create(self, conn: sqlite3.Connection, since: datetime) -> None:
        """Make the table; when it holds no revision yet, keep every stored document as a
        baseline made at ``since``, in the same transaction."""
        with immediate(conn):
            for sql in self._create_sql:
                conn.execute(sql)
            conn.execute(self._baselines_sql, (at_text(since), BASELINE))

    # ------------------------------------------------------------------ appending

    def state(
        self, conn: sqlite3.Connection, ids: Sequence[str]
    ) -> tuple[dict[str, Any], dict[str, Head]]:
        """The stored versions of those of ``ids`` that are stored, and the latest revision
        of those that have one."""
        if len(ids) == 1:
            (key,) = ids
            present, version, number, op, entity = conn.execute(self._state_sql, (key,)).fetchone()
            stored = {key: version} if present else {}
            return stored, {} if number is None else {key: Head(number, op, entity)}
        keys = _ids(ids)
        stored = dict(conn.execute(self._versions_sql, (keys,)).fetchall())
        rows = conn.execute(self._heads_sql, (keys,)).fetchall()
        return stored, {key: Head(number, op, entity) for key, number, op, entity in rows}

    def record_writes(
        self,
        conn: sqlite3.Connection,
        records: Sequence[Record],
        written: Sequence[bool],
        stored: dict[str, Any],
        heads: dict[str, Head],
        stamp: Provenance,
        keep_last: int | None,
    ) -> None:
        """Append the revisions of a write, given the :meth:`state` of its ids (before it
        changes the model's table: the baselines it may need are the documents there)."""
        need = [
            r.id
            for r, ok in zip(records, written, strict=True)
            if ok and needs_baseline(r.id, stored, heads)
        ]
        baselines: dict[str, Document] = {}
        if need:
            baselines = dict(conn.execute(self._documents_sql, (_ids(need),)).fetchall())
        self.append(
            conn, plan_revisions(records, written, stored, heads, stamp, baselines), keep_last
        )

    def record_removal(
        self, conn: sqlite3.Connection, entity_id: str, stamp: Provenance, keep_last: int | None
    ) -> bool:
        """Append the revisions of removing ``entity_id`` (before it is removed); False if
        it is not stored."""
        stored, heads = self.state(conn, [entity_id])
        if entity_id not in stored:
            return False
        version = stored[entity_id]
        document = None
        if needs_baseline(entity_id, stored, heads):
            document = conn.execute(self._stored_sql, (entity_id,)).fetchone()[0]
        self.append(
            conn, plan_removal(entity_id, version, heads.get(entity_id), stamp, document), keep_last
        )
        return True

    def append(
        self, conn: sqlite3.Connection, revisions: Sequence[StoredRevision], keep_last: int | None
    ) -> None:
        """Insert ``revisions``, then keep only the last ``keep_last`` of each id (None: all)."""
        if len(revisions) == 1:
            r = revisions[0]
            row = (
                r.id,
                r.version,
                r.op,
                at_text(r.at),
                r.actor,
                r.reason,
                r.json,
                r.entity_version,
            )
            conn.execute(self._insert_sql, row)
        else:
            texts = {at: at_text(at) for at in {r.at for r in revisions}}  # one per write, mostly
            # In key order: the inserts walk the indexes once.
            rows = sorted(
                (r.id, r.version, r.op, texts[r.at], r.actor, r.reason, r.json, r.entity_version)
                for r in revisions
            )
            conn.executemany(self._insert_sql, rows)
        if keep_last is not None:
            touched = dict.fromkeys(r.id for r in revisions)
            conn.executemany(self._trim_sql, [(key, keep_last) for key in touched])

    # ------------------------------------------------------------------ reading

    def revisions(
        self, conn: sqlite3.Connection, entity_id: str, version: int | None
    ) -> list[StoredRevision]:
        """The revisions of ``entity_id``, oldest first (only ``version``, if given)."""
        if version is None:
            rows = conn.execute(self._revisions_sql, (entity_id,)).fetchall()
        else:
            rows = conn.execute(self._revision_sql, (entity_id, version)).fetchall()
        return [
            StoredRevision(
                entity_id, number, op, datetime.fromisoformat(at), actor, reason, doc, entity
            )
            for number, op, at, actor, reason, doc, entity in rows
        ]

    def page(
        self, conn: sqlite3.Connection, after: tuple[str, int] | None, limit: int
    ) -> list[StoredRevision]:
        """Up to ``limit`` revisions after ``after`` in ``(id, version)`` order."""
        start = after or ("", -(2**63))  # every id is a non-empty string
        rows = conn.execute(self._page_sql, (*start, limit)).fetchall()
        return [
            StoredRevision(key, number, op, datetime.fromisoformat(at), actor, reason, doc, entity)
            for key, number, op, at, actor, reason, doc, entity in rows
        ]

    def rewrite(
        self, conn: sqlite3.Connection, changes: Sequence[tuple[StoredRevision, Document]]
    ) -> int:
        """Replace each revision's document where it is still the one given; how many."""
        with immediate(conn):
            before = conn.total_changes
            conn.executemany(
                self._rewrite_sql,
                [
                    (document_text(new), old.id, old.version, document_text(old.json))
                    for old, new in changes
                    if old.json is not None  # a delete holds no document to replace
                ],
            )
            return conn.total_changes - before

    def marks_at(self, conn: sqlite3.Connection, when: str) -> list[Any]:
        """The schema key of each document at ``when`` that has one."""
        rows = conn.execute(self._marks_sql, {"when": when}).fetchall()
        return [mark for op, mark in rows if op != "delete" and mark is not None]

    def document_at(self, conn: sqlite3.Connection, entity_id: str, when: str) -> str | None:
        """The document of ``entity_id`` at ``when`` (as :func:`at_text` writes it), or None."""
        row = conn.execute(self._at_sql, (entity_id, when)).fetchone()
        return None if row is None or row[0] == "delete" else row[1]

    # ------------------------------------------------------------------ retention

    def prune(
        self, conn: sqlite3.Connection, keep_last: int | None, older_than: datetime | None
    ) -> int:
        """Remove what :func:`to_prune` names for each id; how many went."""
        with immediate(conn):
            gone: list[tuple[int]] = []
            for _, group in groupby(conn.execute(self._keys_sql), key=itemgetter(0)):
                rows = {version: (at, rowid) for _, version, at, rowid in group}
                kept = [(version, datetime.fromisoformat(at)) for version, (at, _) in rows.items()]
                names = to_prune(kept, keep_last=keep_last, older_than=older_than)
                gone.extend((rows[version][1],) for version in names)
            conn.executemany(self._forget_sql, sorted(gone))
        return len(gone)

    def purge(self, conn: sqlite3.Connection, entity_id: str) -> int:
        """Remove every revision of ``entity_id`` (if the table exists); how many went."""
        if not self.exists(conn):
            return 0
        return int(conn.execute(self._purge_sql, (entity_id,)).rowcount)


class PastStore(Store):
    """The collection of an SQLite store as it stood at ``when``, answered from its history.

    Queries run as the store's own do, compiled over :attr:`HistoryTable.past` instead of
    the model's table (no generated columns, so every path is read from the document).
    """

    def __init__(self, store: SQLiteStore, when: datetime) -> None:
        super().__init__(store.model)
        self._store = store
        self._when = at_text(when)
        self._sql = SqlCompiler.over(store.model, store.history.past, {"when": self._when})

    async def get(self, entity_id: str) -> Document | None:
        return await self._store._run(self._get_sync, entity_id)

    def _get_sync(self, conn: sqlite3.Connection, entity_id: str) -> str | None:
        if not self._store.has_history:
            return None
        return self._store.history.document_at(conn, entity_id, self._when)

    async def select(self, query: Query) -> Selection:
        return await self._store._run(self._select_sync, query)

    def _select_sync(self, conn: sqlite3.Connection, query: Query) -> Selection:
        if not self._store.has_history:
            return Selection([])
        return self._store._fetch(conn, query, self._sql)

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        return await self._store._run(self._count_sync, conditions)

    def _count_sync(self, conn: sqlite3.Connection, conditions: tuple[Condition, ...]) -> Counted:
        if not self._store.has_history:
            return Counted(0)
        if on_schema_key(conditions):  # the probe of every query: answered from the marks
            try:
                marks = self._store.history.marks_at(conn, self._when)
            except sqlite3.OperationalError as exc:
                if "malformed JSON" not in str(exc):
                    raise
            else:
                unmarked = 0
                if matches(conditions, {}):
                    unmarked = self._store._tally(conn, (), self._sql).total - len(marks)
                return Counted(count_schema_key(conditions, marks, unmarked))
        return self._store._tally(conn, conditions, self._sql)

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        raise StorageError(f"{self.describe()} is read-only")

    async def remove(self, entity_id: str) -> bool:
        raise StorageError(f"{self.describe()} is read-only")

    def location(self, entity_id: str) -> str:
        return f"{self._store.location(entity_id)} as of {self._when}"

    def describe(self) -> str:
        return f"{self._store.describe()} as of {self._when}"
