"""PostgreSQL history: the revisions of a table, in the table ``"<table>:history"`` beside it.

A write, removal or claim appends its revisions in the very statement that changes the
table (:meth:`PgHistory.append`): the change is a data-modifying CTE, ``changed``, that
returns the ids it changed, and each revision takes its id from there. The state the
revisions are planned from (the stored versions and the latest revision of each id) is read
by the statement before, without locks. When another writer changed that state in between,
the change skips a row (its version is no longer the one expected) and a revision gets a
NULL id, or a revision takes a number already taken: the history table refuses either, the
whole statement is undone, and the store reads the state again (:class:`Raced`).

A large write (loaded with COPY, as without history) keeps its revisions in its transaction
instead, taking their documents from the table: the baselines before it changes, the others
after. A row it did not change (fewer than planned) undoes the transaction the same way.
"""

# SQL text here only interpolates quoted identifiers and constants; every value is bound.
# ruff: noqa: S608

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, cast

from pydantic import BaseModel

from .._errors import StorageError
from .._filters import Condition, Query
from .._gc import gc_paused
from .._schema import schema_version
from ..stores import (
    SCHEMA_KEY,
    Counted,
    Document,
    Head,
    Provenance,
    Record,
    Selection,
    Store,
    StoredRevision,
    baseline,
    needs_baseline,
    plan_revisions,
    to_prune,
)
from ._pg_schema import asyncpg_errors, create_history, fit_name, history_name
from ._pg_sql import count_sql, quote_ident, select_sql

STORED: Document = "\x00the stored document"
"""A planned revision's document when it is the one the table holds (a baseline): the
statement appending the revision takes it from the table."""

_COLUMNS = "id, version, op, at, actor, reason, doc, entity_version"
_PLAN = (
    ("id", "text"),
    ("version", "bigint"),
    ("op", "text"),
    ("at", "timestamptz"),
    ("actor", "text"),
    ("reason", "text"),
    ("entity_version", "bigint"),
    ("stored", "boolean"),
)

Run = Callable[..., Awaitable[Any]]
"""``run(doing, method, sql, *args)``: one statement on a pooled connection."""


class Raced(Exception):
    """Another writer changed what a write planned its revisions from: read and plan again."""


def revisions_of(
    records: Sequence[Record],
    written: Sequence[bool],
    stored: Mapping[str, int | None],
    heads: Mapping[str, Head],
    stamp: Provenance,
) -> list[StoredRevision]:
    """The revisions writing ``records`` appends, baselines taking the stored document."""
    baselines = {
        record.id: STORED
        for record, done in zip(records, written, strict=True)
        if done and needs_baseline(record.id, stored, heads)
    }
    return plan_revisions(records, written, stored, heads, stamp, baselines)


def _planned(first: int) -> str:
    """The relation ``r`` of planned revisions, bound as arrays from ``$first`` on."""
    arrays = ", ".join(f"${first + n}::{kind}[]" for n, (_, kind) in enumerate(_PLAN))
    return f"unnest({arrays}) AS r({', '.join(name for name, _ in _PLAN)})"


def _columns(revisions: Sequence[StoredRevision]) -> list[list[Any]]:
    """The arrays :func:`_planned` binds: one per column, one element per revision."""
    return [
        [r.id for r in revisions],
        [r.version for r in revisions],
        [r.op for r in revisions],
        [r.at for r in revisions],
        [r.actor for r in revisions],
        [r.reason for r in revisions],
        [r.entity_version for r in revisions],
        [r.json == STORED for r in revisions],
    ]


def _trimmed(
    revisions: list[StoredRevision], heads: Mapping[str, Head], keep_last: int | None
) -> tuple[list[StoredRevision], dict[str, int]]:
    """The revisions to insert with ``keep_last``, and how many kept ones each id keeps."""
    if keep_last is None:
        return revisions, {}
    by_id: dict[str, list[StoredRevision]] = {}
    for revision in revisions:
        by_id.setdefault(revision.id, []).append(revision)
    kept = [revision for group in by_id.values() for revision in group[-keep_last:]]
    trim = {
        key: keep_last - min(len(group), keep_last) for key, group in by_id.items() if key in heads
    }
    return kept, trim


class PgHistory:
    """The history table of ``schema.table``: its layout and the statements on it."""

    def __init__(self, model: type[BaseModel], schema: str, table: str) -> None:
        self.model = model
        self.schema = schema
        self.table = history_name(table)
        self.qualified = hist = f"{quote_ident(schema)}.{quote_ident(self.table)}"
        self.live = live = f"{quote_ident(schema)}.{quote_ident(table)}"
        self._state_sql = (
            "SELECT k.id, t.id IS NOT NULL, t.version, h.version, h.op, h.entity_version "
            "FROM unnest($1::text[]) AS k(id) LEFT JOIN LATERAL (SELECT id, version FROM "
            f"{live} AS t WHERE t.id = k.id LIMIT 1) AS t ON true "
            "LEFT JOIN LATERAL (SELECT version, op, entity_version FROM "
            f"{hist} AS x WHERE x.id = k.id ORDER BY x.version DESC LIMIT 1) AS h ON true "
            "WHERE t.id IS NOT NULL OR h.version IS NOT NULL"
        )
        self.revisions_sql = (
            f"SELECT version, op, at, actor, reason, doc, entity_version FROM {hist} "
            "WHERE id = $1 AND ($2::bigint IS NULL OR version = $2::bigint) ORDER BY version"
        )
        page = f"SELECT id, version, op, at, actor, reason, doc, entity_version FROM {hist} "
        self.first_page_sql = f"{page} ORDER BY id, version LIMIT $1"
        self.page_sql = f"{page} WHERE (id, version) > ($1, $2) ORDER BY id, version LIMIT $3"
        """Pages of every id's revisions, in the order of the (id, version) key's index."""
        # A document compared as text, not as jsonb: an equal value in another form (keys in
        # another order, say) is still a document this rewrite did not read.
        self.rewrite_sql = (
            f"UPDATE {hist} AS h SET doc = c.new::jsonb FROM unnest($1::text[], $2::bigint[], "
            "$3::text[], $4::text[]) AS c(id, version, old, new) "
            "WHERE h.id = c.id AND h.version = c.version AND h.doc::text = c.old"
        )
        self.get_sql = (
            f"SELECT doc FROM (SELECT doc, op FROM {hist} WHERE id = $1 AND at <= $2 "
            "ORDER BY version DESC LIMIT 1) AS latest WHERE op <> 'delete'"
        )
        # Not DISTINCT ON: filters on the documents reach the revisions through this (an
        # index on the schema key answers the probes), nothing sorts whole documents, and in
        # id order the anti-join streams (a page stops early).
        self.stood = (
            f"(SELECT h.id, h.doc FROM {hist} AS h WHERE h.at <= $1::timestamptz "
            f"AND h.op <> 'delete' AND NOT EXISTS (SELECT 1 FROM {hist} AS later "
            "WHERE later.id = h.id AND later.version > h.version "
            "AND later.at <= $1::timestamptz)) AS stood"
        )
        """The documents as they stood at ``$1``: each id's latest revision by then."""
        self.purge_sql = (
            f"WITH gone AS (DELETE FROM {live} WHERE id = $1 RETURNING 1), "
            f"erased AS (DELETE FROM {hist} WHERE id = $1 RETURNING 1) "
            "SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM erased)"
        )
        self._candidates_sql = (
            f"SELECT id, version, at FROM {hist} WHERE id IN (SELECT id FROM {hist} "
            "GROUP BY id HAVING count(*) > $1::bigint "
            "AND ($2::timestamptz IS NULL OR min(at) < $2::timestamptz)) ORDER BY id, version"
        )
        self._prune_sql = (
            f"DELETE FROM {hist} AS h USING unnest($1::text[], $2::bigint[]) AS gone(id, version) "
            "WHERE h.id = gone.id AND h.version = gone.version"
        )
        # Each id looked up by key: a LIMIT keeps the planner from joining (and hashing) the
        # whole table instead, which for a batch of documents spills to disk.
        self._stored_doc = f"SELECT doc FROM {live} AS old WHERE old.id = r.id LIMIT 1"
        errors = asyncpg_errors()
        self._refusals = (
            errors.NotNullViolationError,
            errors.UniqueViolationError,
            errors.CheckViolationError,
        )

    def _indexes(self) -> dict[str, str]:
        # The probe of every query, as on the table: few revisions hold other schema versions.
        value = f"(doc->'{SCHEMA_KEY}')"
        indexes = {fit_name(f"{self.table}_schema_idx"): f"({value}) WHERE {value} IS NOT NULL"}
        if schema_version(self.model) > 1:
            lacking = f"NOT COALESCE(jsonb_typeof({value}) <> 'null', false)"
            indexes[fit_name(f"{self.table}_schema_none_idx")] = (
                f"(id) WHERE op <> 'delete' AND {lacking}"
            )
        return indexes

    async def create(self, conn: Any, stamp: Provenance) -> None:
        """Make the history table; if it holds no revision, keep every stored document as a
        baseline (stamped ``stamp``), in the same transaction."""
        async with conn.transaction():
            if not await create_history(conn, self.schema, self.table, self._indexes()):
                return
            rows = await conn.fetch(f"SELECT id, version FROM {self.live}")
            if rows:
                await self.keep_stored(
                    conn, [baseline(key, version, STORED, None, stamp) for key, version in rows]
                )

    async def state(
        self, conn: Any, ids: list[str]
    ) -> tuple[dict[str, int | None], dict[str, Head]]:
        """The stored versions of ``ids`` (those stored) and their latest revisions."""
        stored: dict[str, int | None] = {}
        heads: dict[str, Head] = {}
        rows = await conn.fetch(self._state_sql, ids)
        with gc_paused():
            for key, present, version, number, op, entity_version in rows:
                if present:
                    stored[key] = version
                if number is not None:
                    heads[key] = Head(number, op, entity_version)
        return stored, heads

    async def append(
        self,
        conn: Any,
        change: str,
        args: list[Any],
        revisions: list[StoredRevision],
        heads: Mapping[str, Head],
        keep_last: int | None,
        *,
        source: str | None = None,
    ) -> None:
        """Run ``change`` and append ``revisions`` in one statement, keeping ``keep_last``.

        ``change`` returns the ids it changed; ``args`` are its parameters, ``$1`` on. A
        revision whose id it did not change makes the statement fail (:class:`Raced`), so
        the change lands with all its revisions or not at all. ``source`` is the relation
        ``src`` that ``change`` writes from: the revisions of its ids hold its ``doc``.
        """
        revisions, trim = _trimmed(revisions, heads, keep_last)
        params = [*args, *_columns(revisions)]
        trim_at = None
        if trim:
            trim_at = len(params) + 1
            params += [list(trim), list(trim.values())]
        ctes = [f"changed AS ({change})"]
        if trim_at is not None:
            ctes.append(f"trimmed AS ({self._trim_sql(trim_at)})")
        joins = "" if source is None else f" LEFT JOIN {source} ON src.id = r.id"
        sql = (
            f"WITH {', '.join(ctes)} INSERT INTO {self.qualified} ({_COLUMNS}) "
            "SELECT changed.id, r.version, r.op, r.at, r.actor, r.reason, "
            f"CASE WHEN r.stored THEN ({self._stored_doc}) ELSE "
            f"{'NULL' if source is None else 'src.doc'} END, r.entity_version "
            f"FROM {_planned(len(args) + 1)} LEFT JOIN changed ON changed.id = r.id{joins}"
        )
        await self._execute(conn, sql, *params)

    async def trim_and_keep_baselines(
        self,
        conn: Any,
        revisions: list[StoredRevision],
        heads: Mapping[str, Head],
        keep_last: int | None,
    ) -> list[StoredRevision]:
        """The first half of a large write, in its transaction, before the table changes:
        trim to ``keep_last``, keep the baselines among ``revisions`` (their documents are
        still stored). Returns the other revisions, for :meth:`keep_stored` once the
        documents they hold are."""
        with gc_paused():
            revisions, trim = _trimmed(revisions, heads, keep_last)
            baselines = [revision for revision in revisions if revision.json == STORED]
            written = [revision for revision in revisions if revision.json != STORED]
        if trim:
            await conn.execute(self._trim_sql(1), list(trim), list(trim.values()))
        await self.keep_stored(conn, baselines, strict=True)
        return written

    async def keep_stored(
        self, conn: Any, revisions: list[StoredRevision], *, strict: bool = False
    ) -> None:
        """Insert ``revisions`` with the documents the table holds for their ids now.

        One whose document is not stored (deleted meanwhile) is left out, or, if
        ``strict``, makes it :class:`Raced`.
        """
        if not revisions:
            return
        sql = (
            f"INSERT INTO {self.qualified} ({_COLUMNS}) "
            "SELECT r.id, r.version, r.op, r.at, r.actor, r.reason, old.doc, r.entity_version "
            f"FROM {_planned(1)} CROSS JOIN LATERAL ({self._stored_doc}) AS old"
        )
        with gc_paused():
            columns = _columns(revisions)
        status = await self._execute(conn, sql, *columns)
        if strict and int(status.split()[-1]) < len(revisions):
            raise Raced

    async def _execute(self, conn: Any, sql: str, *args: Any) -> str:
        """``conn.execute(sql, *args)``; :class:`Raced` when the history table refuses a row."""
        try:
            return cast(str, await conn.execute(sql, *args))
        except self._refusals as exc:
            if getattr(exc, "table_name", None) == self.table:
                raise Raced from exc
            raise

    def _trim_sql(self, first: int) -> str:
        """Delete all but the latest ``keep`` kept revisions of each ``(id, keep)`` given."""
        ids, keep = f"${first}::text[]", f"${first + 1}::bigint[]"
        return (
            f"DELETE FROM {self.qualified} AS h USING (SELECT x.id, x.version FROM "
            "(SELECT id, version, row_number() OVER (PARTITION BY id ORDER BY version DESC) "
            f"AS place FROM {self.qualified} WHERE id = ANY({ids})) AS x "
            f"JOIN unnest({ids}, {keep}) AS k(id, keep) ON k.id = x.id WHERE x.place > k.keep) "
            "AS gone WHERE h.id = gone.id AND h.version = gone.version"
        )

    def page_revision(self, row: Sequence[Any]) -> StoredRevision:
        """A row of :attr:`page_sql` as a :class:`StoredRevision`."""
        return self.revision(row[0], row[1:])

    def revision(self, entity_id: str, row: Sequence[Any]) -> StoredRevision:
        """A row of :attr:`revisions_sql` as a :class:`StoredRevision`."""
        version, op, at, actor, reason, doc, entity_version = row
        return StoredRevision(entity_id, version, op, at, actor, reason, doc, entity_version)

    async def prune(self, conn: Any, *, keep_last: int | None, older_than: datetime | None) -> int:
        """Remove what :func:`to_prune` names for every id; how many revisions went."""
        async with conn.transaction():
            # Only ids with more than one revision (or than keep_last), one older than
            # older_than: the others have nothing to prune.
            rows = await conn.fetch(self._candidates_sql, keep_last or 1, older_than)
            ids: list[str] = []
            versions: list[int] = []
            for key, group in itertools.groupby(rows, key=itemgetter(0)):
                kept = [(version, at) for _, version, at in group]
                for version in to_prune(kept, keep_last=keep_last, older_than=older_than):
                    ids.append(key)
                    versions.append(version)
            if not ids:
                return 0
            status = await conn.execute(self._prune_sql, ids, versions)
        return int(status.split()[-1])


class PgAsOf(Store):
    """The documents of a table as they stood at ``when``, read from its history.

    ``get``, ``select`` and ``count`` compile as on the table, over each id's latest
    revision made by then; ``run`` runs one statement (with the history table made).
    """

    def __init__(self, history: PgHistory, when: datetime, run: Run, what: str) -> None:
        super().__init__(history.model)
        self._history = history
        self._when = when
        self._run = run
        self._what = what

    def describe(self) -> str:
        return self._what

    async def get(self, entity_id: str) -> Document | None:
        found = await self._run(
            "reading history", "fetchval", self._history.get_sql, entity_id, self._when
        )
        return cast("str | None", found)

    async def select(self, query: Query) -> Selection:
        sql, params = select_sql(self.model, self._history.stood, query, [self._when])
        rows = await self._run("querying history", "fetch", sql, *params)
        return Selection([(row[0], row[1]) for row in rows])

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        sql, params = count_sql(self.model, self._history.stood, conditions, [self._when])
        return Counted(cast(int, await self._run("counting history", "fetchval", sql, *params)))

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        raise StorageError(f"{self._what} is read-only")

    async def remove(self, entity_id: str) -> bool:
        raise StorageError(f"{self._what} is read-only")
