"""PostgreSQL storage: one JSONB table per model in a configurable schema (needs asyncpg)."""

# SQL text here only interpolates quoted identifiers (schema, table); every value is bound.
# ruff: noqa: S608

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar, cast

import orjson
from pydantic import BaseModel

from .._cache import Cache
from .._errors import ConflictError, StorageError
from .._filters import Condition, Query, document_text, parse_filter
from .._gc import gc_paused
from .._keyring import Keyring
from .._repository import Repository
from .._schema import schema_version
from .._types import T
from ..stores import (
    SCHEMA_KEY,
    Change,
    ChangeFeed,
    Claimed,
    Counted,
    Document,
    Head,
    Provenance,
    ReadOnlyView,
    Record,
    Selection,
    Store,
    StoredRevision,
    declared_indexes,
    needs_baseline,
    plan_removal,
    plan_writes,
    provenance,
)
from ._pg_history import STORED, PgAsOf, PgHistory, Raced, revisions_of
from ._pg_listen import NotifyFeed
from ._pg_pool import LoopPools
from ._pg_schema import DEFAULT_SCHEMA, SCHEMA_VERSION, check_schema, create_schema, split_url
from ._pg_sql import count_sql, document, index_sql, model_segments, quote_ident, select_sql

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_VERSION", "PostgresRepository", "PostgresStore", "open_url"]

BULK_THRESHOLD = 1000
"""From this many records on, ``save_many`` loads them with COPY into a temp table."""
# ``{expected}`` is a jsonb object of id -> the version each checked record was based on; an
# id missing from it is written whatever is stored. (A jsonb key lookup is a binary search;
# looking each conflicting row up in the source rows instead measured 11x slower at 999 rows.)
_UPSERT = (
    "INSERT INTO {table} AS t (id, version, doc) {source} "
    "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, doc = EXCLUDED.doc "
    "WHERE ({expected} -> EXCLUDED.id) IS NULL "
    "OR t.version = ({expected} ->> EXCLUDED.id)::bigint "
    "RETURNING id"
)
_UPDATE = (
    "UPDATE {table} AS t SET version = src.version, doc = src.doc FROM {source} "
    "WHERE t.id = src.id AND (({expected} -> t.id) IS NULL "
    "OR t.version = ({expected} ->> t.id)::bigint) RETURNING t.id"
)
_INCOMING = "_symphony_incoming"
_UNNESTED = "unnest($1::text[], $2::bigint[], $3::jsonb[]) AS src(id, version, doc)"
_ATTEMPTS = 50
R = TypeVar("R")


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:
        raise ImportError(
            "PostgresRepository needs the asyncpg driver: pip install 'symphony_nb[postgres]'"
        ) from exc
    return asyncpg


def _driver_errors(asyncpg: Any) -> tuple[type[BaseException], ...]:
    return (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.InternalClientError,
        OSError,
        TimeoutError,
    )


class PostgresStore(Store):
    """The documents of ``model`` as JSONB in ``<schema>.<model name>`` on PostgreSQL.

    Takes the arguments described on :class:`PostgresRepository`, which builds one. Filters,
    ordering, paging and counts are compiled to SQL; writes check versions in the same
    statement; one connection pool is kept per event loop.
    """

    def __init__(
        self,
        model: type[BaseModel],
        url: str,
        *,
        schema: str | None = None,
        indexes: Sequence[str] = (),
        pool_size: int = 10,
    ) -> None:
        super().__init__(model)
        self._asyncpg = _asyncpg()
        self._errors = _driver_errors(self._asyncpg)
        self._connect_errors: tuple[type[BaseException], ...] = (*self._errors, ValueError)
        self._url = split_url(url)
        self.url = self._url.masked
        self.schema = check_schema(
            schema if schema is not None else self._url.schema or DEFAULT_SCHEMA
        )
        self.table = self.name
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be an int >= 1, got {pool_size!r}")
        self._pool_size = pool_size
        self._qualified = f"{quote_ident(self.schema)}.{quote_ident(self.table)}"
        self._get_sql = f"SELECT doc FROM {self._qualified} WHERE id = $1"
        self._indexes = self._index_expressions(indexes)
        self._ready = False
        self._pools = LoopPools(self._new_pool)
        self._history = PgHistory(model, self.schema, self.table)
        self._history_ready = False
        self._turned_on: Provenance | None = None

    def describe(self) -> str:
        return f"{self.url} table {self.schema}.{self.table}"

    def change_feed(self) -> ChangeFeed:
        return NotifyFeed(self._listening_connection, self.schema, self.table)

    async def _listening_connection(self) -> Any:
        return await self._asyncpg.connect(self._url.dsn, password=self._url.password, timeout=10)

    def location(self, entity_id: str) -> str:
        return f"{self.schema}.{self.table} id {entity_id!r}"

    def _index_expressions(self, extra: Sequence[str]) -> dict[str, str]:
        if isinstance(extra, str):
            extra = [extra]
        fields = self.model.model_fields
        declared = [name for name in declared_indexes(self.model) if isinstance(name, str)]
        names = [name for name in declared if name in fields] + list(extra)
        expressions: dict[str, str] = {}
        for name in dict.fromkeys(names):
            (condition,) = parse_filter(self.model, {name: {"$exists": True}})
            path = condition.path
            key = "_".join(path)
            if len(f"{self.table}_{key}_idx") > 63 or model_segments(self.model, path) < len(path):
                # Dict keys may hold any text, and "a.b_c" must not take the name of "a_b.c".
                key = hashlib.blake2b("\x00".join(path).encode(), digest_size=6).hexdigest()
            expressions[f"{self.table}_{key}_idx"] = f"({index_sql(self.model, path)})"
        # Every query first asks for the documents not at the model's schema version: "holds
        # a number above 1" at version 1, "lacks it, or holds another number" beyond. Partial
        # indexes, so the planner sees how few such documents there are without statistics.
        key = f"{self.table}_schema"
        if len(key) > 58:
            key = hashlib.blake2b(key.encode(), digest_size=6).hexdigest() + "_schema"
        value = f"(doc->'{SCHEMA_KEY}')"
        expressions[f"{key}_idx"] = f"({value}) WHERE {value} IS NOT NULL"
        if schema_version(self.model) > 1:
            lacking = f"NOT COALESCE(jsonb_typeof({value}) <> 'null', false)"
            expressions[f"{key}_none_idx"] = f"(id) WHERE {lacking}"
        return expressions

    # ------------------------------------------------------------------ connections

    def _failure(self, exc: BaseException, doing: str) -> StorageError:
        message = self._url.scrub(str(exc).strip() or type(exc).__name__)
        return StorageError(f"PostgreSQL at {self.url}: {doing} failed: {message}")

    async def _new_pool(self) -> Any:
        try:
            pool = await self._asyncpg.create_pool(
                self._url.dsn,
                password=self._url.password,
                min_size=1,
                max_size=self._pool_size,
                timeout=10,
            )
        except self._connect_errors as exc:
            raise self._failure(exc, "connecting") from exc
        if not self._ready:
            try:
                async with pool.acquire() as conn:
                    await create_schema(conn, self.schema, self.table, self._indexes, self.url)
                    if self._kept is not False:
                        await self._history.create(conn, self._turned_on or provenance())
                        self._history_ready = True
            except BaseException as exc:
                await pool.close()
                if isinstance(exc, self._errors):
                    raise self._failure(exc, f"creating schema {self.schema!r}") from exc
                raise
            self._ready = True
        return pool

    @asynccontextmanager
    async def _connection(self, doing: str) -> AsyncIterator[Any]:
        pool = await self._pools.get()
        try:
            async with pool.acquire() as conn:
                yield conn
        except self._errors as exc:
            raise self._failure(exc, doing) from exc

    # ------------------------------------------------------------------ the Store contract

    async def _run(self, doing: str, method: str, sql: str, *args: Any) -> Any:
        """One statement on a pooled connection (``method``: fetch, fetchval or execute)."""
        pool = self._pools.ready() or await self._pools.get()
        try:
            return await getattr(pool, method)(sql, *args)
        except self._errors as exc:
            raise self._failure(exc, doing) from exc

    async def get(self, entity_id: str) -> str | None:
        doc = await self._run("reading", "fetchval", self._get_sql, entity_id)
        return cast("str | None", doc)

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        keep = self._kept
        if keep is not False:
            stamp = provenance()
            return await self._retrying(
                "writing", lambda conn: self._write_kept(conn, records, create, keep, stamp)
            )
        ids = [record.id for record in records]
        versions = [record.version for record in records]
        docs = [document(record.json) for record in records]
        async with self._connection("writing") as conn, conn.transaction():
            if not create:
                return await self._update(conn, records, ids, versions, docs)
            written = await self._upsert(conn, records, ids, versions, docs)
            if len(written) < len(records):
                done = {row[0] for row in written}
                skipped = [record.id for record in records if record.id not in done]
                rows = await conn.fetch(
                    f"SELECT id, version FROM {self._qualified} WHERE id = ANY($1::text[])",
                    skipped,
                )
                plan_writes(records, {row[0]: row[1] for row in rows}, create=True)
                raise StorageError(
                    f"PostgreSQL at {self.url}: writing skipped {skipped} without a version conflict"
                )
        return [True] * len(records)

    async def _upsert(
        self,
        conn: Any,
        records: Sequence[Record],
        ids: list[str],
        versions: list[int | None],
        docs: list[str],
    ) -> list[Any]:
        """The ``(id,)`` rows written; a row left out had a version conflict."""
        # A conflicting row is locked but left alone (the WHERE), so it is missing from
        # RETURNING; racing inserts of one id serialise on the primary key the same way.
        expected = _expected(records)
        if len(ids) < BULK_THRESHOLD:
            source = "SELECT * FROM unnest($1::text[], $2::bigint[], $3::jsonb[])"
            sql = _UPSERT.format(table=self._qualified, source=source, expected="$4::jsonb")
            return cast("list[Any]", await conn.fetch(sql, ids, versions, docs, expected))
        rows = list(zip(ids, versions, docs, strict=True))
        if await self._copy_new(conn, ids, rows):
            return rows
        await conn.execute(
            f'CREATE TEMP TABLE {_INCOMING} (id text COLLATE "C", version bigint, doc jsonb) '
            "ON COMMIT DROP"
        )
        await conn.copy_records_to_table(_INCOMING, records=rows)
        source = f"SELECT id, version, doc FROM {_INCOMING}"
        sql = _UPSERT.format(table=self._qualified, source=source, expected="$1::jsonb")
        return cast("list[Any]", await conn.fetch(sql, expected))

    async def _copy_new(self, conn: Any, ids: list[str], rows: list[Any]) -> bool:
        """COPY ``rows`` straight into the table if none of them is stored yet."""
        stored = await conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {self._qualified} WHERE id = ANY($1::text[]))", ids
        )
        if stored:
            return False
        try:
            async with conn.transaction():  # a savepoint: a failed COPY leaves nothing behind
                await conn.copy_records_to_table(
                    self.table,
                    schema_name=self.schema,
                    records=rows,
                    columns=["id", "version", "doc"],
                )
        except self._asyncpg.UniqueViolationError:
            return False  # inserted meanwhile by someone else: check versions the slow way
        return True

    async def _update(
        self,
        conn: Any,
        records: Sequence[Record],
        ids: list[str],
        versions: list[int | None],
        docs: list[str],
    ) -> list[bool]:
        rows = await conn.fetch(
            f"SELECT id, version FROM {self._qualified} WHERE id = ANY($1::text[]) FOR UPDATE",
            ids,
        )
        present = plan_writes(records, {row[0]: row[1] for row in rows}, create=False)
        if any(present):
            await conn.execute(
                f"UPDATE {self._qualified} AS t SET version = u.version, doc = u.doc "
                "FROM unnest($1::text[], $2::bigint[], $3::jsonb[]) AS u(id, version, doc) "
                "WHERE t.id = u.id",
                ids,
                versions,
                docs,
            )
        return present

    async def claim(self, query: Query, change: Change) -> Claimed:
        """Lock the candidates with ``FOR UPDATE SKIP LOCKED`` and write the claimed one.

        Rows another transaction is claiming are skipped rather than waited for, so many
        workers take different rows at once and none loses a race.
        """
        stamp = None if self._kept is False else provenance()
        # Most claims take their first candidate: lock one row, and more only if need be.
        first = await self._claim(dataclasses.replace(query, limit=1), change, stamp)
        if first.record is not None or query.limit == 1:
            return first
        rest = await self._claim(query, change, stamp)
        return Claimed(rest.record, first.conflicts + rest.conflicts)

    async def _claim(self, query: Query, change: Change, stamp: Provenance | None) -> Claimed:
        if stamp is not None:
            return await self._retrying(
                "claiming", lambda conn: self._claim_on(conn, query, change, stamp)
            )
        async with self._connection("claiming") as conn:
            return await self._claim_on(conn, query, change, None)

    async def _claim_on(
        self, conn: Any, query: Query, change: Change, stamp: Provenance | None
    ) -> Claimed:
        sql, params = select_sql(self.model, self._qualified, query)
        update = (
            f"UPDATE {self._qualified} SET version = $2, doc = $3::jsonb "
            "WHERE id = $1 AND ($4::bigint IS NULL OR version = $4::bigint)"
        )
        conflicts = 0
        async with conn.transaction():
            for entity_id, doc in await conn.fetch(sql + " FOR UPDATE SKIP LOCKED", *params):
                record = change(entity_id, doc)
                if record is None:
                    continue
                if stamp is None:
                    args = (record.id, record.version, document(record.json), record.expected)
                    if await conn.execute(update, *args) == "UPDATE 1":
                        return Claimed(record, conflicts)
                elif await self._claimed(conn, record, stamp):
                    return Claimed(record, conflicts)
                conflicts += 1  # the document did not hold its row's version
        return Claimed(None, conflicts)

    async def remove(self, entity_id: str) -> bool:
        keep = self._kept
        if keep is not False:
            stamp = provenance()
            return await self._retrying(
                "deleting", lambda conn: self._remove_kept(conn, entity_id, keep, stamp)
            )
        sql = f"DELETE FROM {self._qualified} WHERE id = $1"
        return cast(str, await self._run("deleting", "execute", sql, entity_id)) == "DELETE 1"

    async def select(self, query: Query) -> Selection:
        sql, params = select_sql(self.model, self._qualified, query)
        rows = await self._run("querying", "fetch", sql, *params)
        return Selection([(row[0], row[1]) for row in rows])

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        sql, params = count_sql(self.model, self._qualified, conditions)
        return Counted(cast(int, await self._run("counting", "fetchval", sql, *params)))

    async def close(self) -> None:
        await self._pools.close()

    # ------------------------------------------------------------------ history

    def keep_history(self, keep_last: int | None) -> None:
        """Keep revisions in ``"<table>:history"``, made (with the baselines of the stored
        documents, if it holds no revision yet) on first use."""
        if not self._history_ready:
            self._turned_on = provenance()
        self._kept = keep_last

    async def _kept_pool(self) -> Any:
        """The running loop's pool, once the history table is made."""
        pool = self._pools.ready() or await self._pools.get()
        if not self._history_ready:
            async with self._connection("creating the history table") as conn:
                await self._history.create(conn, self._turned_on or provenance())
            self._history_ready = True
        return pool

    async def _run_kept(self, doing: str, method: str, sql: str, *args: Any) -> Any:
        await self._kept_pool()
        return await self._run(doing, method, sql, *args)

    async def _retrying(self, doing: str, attempt: Callable[[Any], Awaitable[R]]) -> R:
        """``attempt(conn)`` again while another writer changes what it planned from."""
        await self._kept_pool()
        async with self._connection(doing) as conn:
            for _ in range(_ATTEMPTS):
                try:
                    return await attempt(conn)
                except Raced:
                    continue
        raise StorageError(
            f"PostgreSQL at {self.url}: {doing} {self.schema}.{self.table} found its "
            f"revisions taken by other writers {_ATTEMPTS} times in a row; try again"
        )

    async def _write_kept(
        self,
        conn: Any,
        records: Sequence[Record],
        create: bool,
        keep: int | None,
        stamp: Provenance,
    ) -> list[bool]:
        if len(records) < BULK_THRESHOLD:  # one statement: no transaction needed
            return await self._record_writes(conn, records, create, keep, stamp)
        async with conn.transaction():
            # Compiling its statements over so many rows would cost more than running them.
            if conn.get_server_version().major >= 11:  # the first with JIT compilation
                await conn.execute("SET LOCAL jit = off")
            return await self._record_writes(conn, records, create, keep, stamp, bulk=True)

    async def _record_writes(
        self,
        conn: Any,
        records: Sequence[Record],
        create: bool,
        keep: int | None,
        stamp: Provenance,
        *,
        bulk: bool = False,
    ) -> list[bool]:
        """Write ``records`` and append their revisions, planned from the state read first."""
        stored, heads = await self._history.state(conn, [record.id for record in records])
        written = plan_writes(records, stored, create=create)
        chosen = [record for record, done in zip(records, written, strict=True) if done]
        if not chosen:
            return written
        with gc_paused():  # a revision per record: the collector's passes would cost more
            revisions = revisions_of(records, written, stored, heads, stamp)
        if bulk:
            await self._write_bulk_kept(conn, chosen, create, revisions, heads, keep)
            return written
        ids = [record.id for record in chosen]
        versions = [record.version for record in chosen]
        docs = [document(record.json) for record in chosen]
        change = self._change(create, _UNNESTED, "$4::jsonb")
        args = [ids, versions, docs, _expected(chosen)]
        await self._history.append(conn, change, args, revisions, heads, keep, source=_UNNESTED)
        return written

    async def _write_bulk_kept(
        self,
        conn: Any,
        chosen: list[Record],
        create: bool,
        revisions: list[StoredRevision],
        heads: Mapping[str, Head],
        keep: int | None,
    ) -> None:
        """Write ``chosen`` as without history, keeping their revisions around the write
        (in the caller's transaction)."""
        written = await self._history.trim_and_keep_baselines(conn, revisions, heads, keep)
        ids = [record.id for record in chosen]
        versions = [record.version for record in chosen]
        docs = [document(record.json) for record in chosen]
        if create:
            done = len(await self._upsert(conn, chosen, ids, versions, docs)) == len(chosen)
        else:
            done = all(await self._update(conn, chosen, ids, versions, docs))
        if not done:
            raise Raced  # changed since the state was read: undo, and read it again
        await self._history.keep_stored(conn, written)

    def _change(self, create: bool, source: str, expected: str) -> str:
        """The upsert (``create``) or update of the table from ``source`` (relation ``src``),
        checking versions with the jsonb ``expected``, returning the ids written."""
        if create:
            select = f"SELECT id, version, doc FROM {source}"
            return _UPSERT.format(table=self._qualified, source=select, expected=expected)
        return _UPDATE.format(table=self._qualified, source=source, expected=expected)

    async def _claimed(self, conn: Any, record: Record, stamp: Provenance) -> bool:
        keep = self._kept
        assert keep is not False  # a claim is given a stamp only with history
        try:
            (written,) = await self._record_writes(conn, [record], False, keep, stamp)
        except ConflictError:
            return False
        return written

    async def _remove_kept(
        self, conn: Any, entity_id: str, keep: int | None, stamp: Provenance
    ) -> bool:
        stored, heads = await self._history.state(conn, [entity_id])
        if entity_id not in stored:
            return False
        version = stored[entity_id]
        document = STORED if needs_baseline(entity_id, stored, heads) else None
        revisions = plan_removal(entity_id, version, heads.get(entity_id), stamp, document)
        change = (
            f"DELETE FROM {self._qualified} "
            "WHERE id = $1 AND version IS NOT DISTINCT FROM $2::bigint RETURNING id"
        )
        await self._history.append(conn, change, [entity_id, version], revisions, heads, keep)
        return True

    async def revisions(self, entity_id: str, version: int | None = None) -> list[StoredRevision]:
        if self._kept is False:
            return await super().revisions(entity_id, version)
        sql = self._history.revisions_sql
        rows = await self._run_kept("reading history", "fetch", sql, entity_id, version)
        return [self._history.revision(entity_id, row) for row in rows]

    async def revision_page(
        self, after: tuple[str, int] | None, limit: int
    ) -> list[StoredRevision]:
        if self._kept is False:
            return await super().revision_page(after, limit)
        history, doing = self._history, "reading history"
        if after is None:
            rows = await self._run_kept(doing, "fetch", history.first_page_sql, limit)
        else:
            rows = await self._run_kept(doing, "fetch", history.page_sql, *after, limit)
        return [self._history.page_revision(row) for row in rows]

    async def rewrite_revisions(self, changes: Sequence[tuple[StoredRevision, Document]]) -> int:
        if self._kept is False:
            return await super().rewrite_revisions(changes)
        if not changes:
            return 0
        columns = (
            [old.id for old, _ in changes],
            [old.version for old, _ in changes],
            # As it was read, compared as text; a delete's None matches no document.
            [None if old.json is None else document_text(old.json) for old, _ in changes],
            [document(document_text(new)) for _, new in changes],
        )
        sql = self._history.rewrite_sql
        status = await self._run_kept("rewriting history", "execute", sql, *columns)
        return int(status.split()[-1])

    def as_of(self, when: datetime) -> Store:
        if self._kept is False:
            return super().as_of(when)
        what = f"{self.describe()} as of {when.isoformat()}"
        return ReadOnlyView(PgAsOf(self._history, when, self._run_kept, what), what)

    async def prune(self, *, keep_last: int | None, older_than: datetime | None) -> int:
        if self._kept is False:
            return await super().prune(keep_last=keep_last, older_than=older_than)
        await self._kept_pool()
        async with self._connection("pruning history") as conn:
            return await self._history.prune(conn, keep_last=keep_last, older_than=older_than)

    async def purge(self, entity_id: str) -> int:
        """Delete the document and every revision of it, in one statement.

        Without history here, revisions other repositories kept go too, if there are any.
        """
        if self._kept is not False:
            await self._kept_pool()
        elif not await self._run(
            "purging", "fetchval", "SELECT to_regclass($1) IS NOT NULL", self._history.qualified
        ):
            return await super().purge(entity_id)
        return cast(int, await self._run("purging", "fetchval", self._history.purge_sql, entity_id))


def _expected(records: Sequence[Record]) -> str:
    """The jsonb object of id -> the version each checked record was based on."""
    return orjson.dumps(
        {record.id: record.expected for record in records if record.expected is not None}
    ).decode()


class PostgresRepository(Repository[T]):
    """A repository of ``model`` as JSONB documents in ``<schema>.<model name>`` on PostgreSQL.

    Args:
        model: the pydantic model class to store.
        url: ``postgresql://user:password@host:port/database``; a ``?schema=name`` query
            parameter chooses the schema when ``schema`` is not given.
        schema: the PostgreSQL schema holding the tables (default ``symphony``); it and the
            table are created on first use, safely when several processes start at once.
        indexes: more fields to index, besides those the model declares in ``__indexes__``
            (Task: ``status``, ``priority``, ``created_at``): field names, dotted paths into
            nested models, or dotted keys into dict fields (``"input_data.kind"``). Indexes
            serve ``$eq``, ``$in`` and range filters on string, enum and datetime values.
        pool_size: the most connections kept per event loop.
        keyring: the :class:`~symphony_nb.Keyring` that encrypts secret fields (default:
            ``$SYMPHONY_NB_KEYS`` when set; see :class:`~symphony_nb.Repository`).
        cache: ``True`` or a :class:`~symphony_nb.Cache`: keep documents read in memory.
            Triggers on the table notify every write at its commit, and the cache drops
            what others changed as the notifications arrive (a listening connection on a
            thread of its own); ``Cache(strict=True)`` also checks with the server on every
            read, so none is ever read before its notification has arrived.
        history: ``True`` (every revision) or ``N`` (the last N of each entity): keep each
            change as a revision in the table ``"<table>:history"`` beside the documents,
            written in the statement (or, for large batches, the transaction) of the change
            (see :class:`~symphony_nb.Repository`).

    Filters, ordering, paging and counts run in the database; ``save_many`` is all or nothing
    in one transaction and loads large batches with COPY. The same object works with
    ``await`` and through ``.sync`` in any order (one connection pool per event loop;
    ``close()`` closes all of them). ``url`` keeps the URL with its password masked.
    """

    def __init__(
        self,
        model: type[T],
        url: str,
        *,
        schema: str | None = None,
        indexes: Sequence[str] = (),
        pool_size: int = 10,
        keyring: Keyring | None = None,
        cache: bool | Cache | None = None,
        history: bool | int | None = None,
    ) -> None:
        database = PostgresStore(model, url, schema=schema, indexes=indexes, pool_size=pool_size)
        super().__init__(model, database, keyring=keyring, cache=cache, history=history)
        self.url = database.url
        self.schema = database.schema
        self.table = database.table

    def __repr__(self) -> str:
        return f"PostgresRepository({self.model.__name__}, {self.url!r}, schema={self.schema!r})"


def open_url(
    model: type[T],
    url: str,
    *,
    keyring: Keyring | None = None,
    cache: bool | Cache | None = None,
    history: bool | int | None = None,
) -> PostgresRepository[T]:
    """The repository for a ``postgresql://...[?schema=name]`` storage URL."""
    return PostgresRepository(model, url, keyring=keyring, cache=cache, history=history)
