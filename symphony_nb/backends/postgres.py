"""PostgreSQL storage: one JSONB table per model in a configurable schema (needs asyncpg)."""

# SQL text here only interpolates quoted identifiers (schema, table); every value is bound.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._errors import ConflictError, StorageError
from .._filters import Condition, Query, parse_filter
from .._repository import Data, Record, Repository, T, model_name
from .._storage import mask_url
from ._pg_pool import LoopPools
from ._pg_sql import count_sql, index_sql, quote_ident, select_sql

SCHEMA_VERSION = 1
"""The layout version this package writes; a schema with a newer one is refused."""
DEFAULT_SCHEMA = "symphony"
DEFAULT_INDEXES = ("status", "priority", "created_at")
"""Fields indexed whenever the model has them (Task: all three)."""
META_TABLE = "_symphony_meta"
_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SCHEMES = ("postgresql", "postgres")


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


def _split_url(url: Any) -> tuple[str, str | None]:
    """The DSN for the driver (without ``schema=``) and the ``schema`` query parameter."""
    if not isinstance(url, str) or "://" not in url:
        raise StorageError(f"not a PostgreSQL URL: {url!r}; use postgresql://user@host:port/db")
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise StorageError(
            f"not a PostgreSQL URL: {mask_url(url)!r}; it must start with postgresql://"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    rest = [(key, value) for key, value in query if key != "schema"]
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    return dsn, schemas[-1] if schemas else None


def _check_schema(schema: Any) -> str:
    if not isinstance(schema, str) or not _SCHEMA_RE.fullmatch(schema):
        raise StorageError(
            f"invalid PostgreSQL schema name {schema!r}: use 1-63 ASCII letters, digits and '_', "
            "not starting with a digit"
        )
    return schema


def _lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"symphony_nb:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresRepository(Repository[T]):
    """Stores each entity as a JSONB document in ``<schema>.<model name>`` on PostgreSQL.

    Args:
        model: the pydantic model class to store.
        url: ``postgresql://user:password@host:port/database``; a ``?schema=name`` query
            parameter chooses the schema when ``schema`` is not given.
        schema: the PostgreSQL schema holding the tables (default ``symphony``); it and the
            table are created on first use, safely when several processes start at once.
        indexes: more fields (dotted paths into nested models allowed) to index, in addition
            to those of ``DEFAULT_INDEXES`` the model has. Indexes serve ``$eq``, ``$in`` and
            range filters on string, enum and datetime fields.
        pool_size: the most connections kept per event loop.

    Filters, ordering, paging and counts run in the database. Writes use optimistic
    concurrency (see :class:`~symphony_nb.Repository`); ``save_many`` is one statement in one
    transaction. The same object works with ``await`` and through ``.sync`` in any order: it
    keeps one connection pool per event loop, and ``close()`` closes all of them.
    """

    def __init__(
        self,
        model: type[T],
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
        self._dsn, url_schema = _split_url(url)
        self.url = mask_url(url)
        self.schema = _check_schema(schema if schema is not None else url_schema or DEFAULT_SCHEMA)
        self.table = model_name(model)
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be an int >= 1, got {pool_size!r}")
        self._pool_size = pool_size
        self._qualified = f"{quote_ident(self.schema)}.{quote_ident(self.table)}"
        self._indexes = self._index_expressions(indexes)
        self._ready = False
        self._pools = LoopPools(self._new_pool)

    def __repr__(self) -> str:
        return f"PostgresRepository({self.model.__name__}, {self.url!r}, schema={self.schema!r})"

    def _location(self, entity_id: str) -> str:
        return f"{self.schema}.{self.table} id {entity_id!r}"

    def _index_expressions(self, extra: Sequence[str]) -> dict[str, str]:
        if isinstance(extra, str):
            extra = [extra]
        fields = self.model.model_fields
        names = [name for name in DEFAULT_INDEXES if name in fields] + list(extra)
        expressions: dict[str, str] = {}
        for name in dict.fromkeys(names):
            (condition,) = parse_filter(self.model, {name: {"$exists": True}})
            key = "_".join(condition.path)
            if len(f"{self.table}_{key}_idx") > 63:
                key = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
            expressions[f"{self.table}_{key}_idx"] = index_sql(self.model, condition.path)
        return expressions

    # ------------------------------------------------------------------ connections

    def _failure(self, exc: BaseException, doing: str) -> StorageError:
        message = str(exc).strip() or type(exc).__name__
        return StorageError(f"PostgreSQL at {self.url}: {doing} failed: {message}")

    async def _new_pool(self) -> Any:
        try:
            pool = await self._asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, timeout=10
            )
        except self._connect_errors as exc:
            raise self._failure(exc, "connecting") from exc
        if not self._ready:
            try:
                async with pool.acquire() as conn:
                    await self._create_schema(conn)
            except BaseException as exc:
                await pool.close()
                if isinstance(exc, self._errors):
                    raise self._failure(exc, f"creating schema {self.schema!r}") from exc
                raise
            self._ready = True
        return pool

    async def _create_schema(self, conn: Any) -> None:
        schema = quote_ident(self.schema)
        meta = f"{schema}.{quote_ident(META_TABLE)}"
        async with conn.transaction():
            # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalogs.
            await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", _lock_key(self.schema))
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {meta} (key text PRIMARY KEY, value text NOT NULL)"
            )
            stored = await conn.fetchval(f"SELECT value FROM {meta} WHERE key = 'schema_version'")
            if stored is None:
                await conn.execute(
                    f"INSERT INTO {meta} (key, value) VALUES ('schema_version', $1::text)",
                    str(SCHEMA_VERSION),
                )
            elif not stored.isdigit() or int(stored) > SCHEMA_VERSION:
                raise StorageError(
                    f"PostgreSQL schema {self.schema!r} at {self.url} has layout version "
                    f"{stored}, newer than the {SCHEMA_VERSION} this symphony_nb understands; "
                    "upgrade symphony_nb (pip install -U symphony_nb) or use another schema"
                )
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS {self._qualified} (id text COLLATE "C" PRIMARY KEY, '
                "version bigint, doc jsonb NOT NULL)"
            )
            for name, expression in self._indexes.items():
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {quote_ident(name)} "
                    f"ON {self._qualified} ({expression})"
                )

    @asynccontextmanager
    async def _connection(self, doing: str) -> AsyncIterator[Any]:
        pool = await self._pools.get()
        try:
            async with pool.acquire() as conn:
                yield conn
        except self._errors as exc:
            raise self._failure(exc, doing) from exc

    # ------------------------------------------------------------------ hooks

    async def _get(self, entity_id: str) -> str | None:
        async with self._connection("reading") as conn:
            doc = await conn.fetchval(f"SELECT doc FROM {self._qualified} WHERE id = $1", entity_id)
        return cast("str | None", doc)

    async def _write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        ids = [record.id for record in records]
        versions = [record.version for record in records]
        docs = [record.json for record in records]
        async with self._connection("writing") as conn, conn.transaction():
            if not create:
                return await self._update(conn, records, ids, versions, docs)
            # A conflicting row is locked but left alone (the WHERE), so it is missing from
            # RETURNING; racing inserts of one id serialise on the primary key the same way.
            written = await conn.fetch(
                f"INSERT INTO {self._qualified} AS t (id, version, doc) "
                "SELECT * FROM unnest($1::text[], $2::bigint[], $3::jsonb[]) "
                "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, doc = EXCLUDED.doc "
                "WHERE EXCLUDED.version IS NULL OR t.version = EXCLUDED.version - 1 "
                "RETURNING id",
                ids,
                versions,
                docs,
            )
            if len(written) < len(records):
                done = {row[0] for row in written}
                record = next(record for record in records if record.id not in done)
                stored = await conn.fetchval(
                    f"SELECT version FROM {self._qualified} WHERE id = $1", record.id
                )
                raise ConflictError(record.id, record.expected, stored)
        return [True] * len(records)

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
        stored = {row[0]: row[1] for row in rows}
        for record in records:
            if (
                record.id in stored
                and record.expected is not None
                and stored[record.id] != record.expected
            ):
                raise ConflictError(record.id, record.expected, stored[record.id])
        present = [entity_id in stored for entity_id in ids]
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

    async def _remove(self, entity_id: str) -> bool:
        async with self._connection("deleting") as conn:
            status = await conn.execute(f"DELETE FROM {self._qualified} WHERE id = $1", entity_id)
        return cast(str, status) == "DELETE 1"

    async def _select(self, query: Query) -> list[tuple[str, Data]]:
        sql, params = select_sql(self.model, self._qualified, query)
        async with self._connection("querying") as conn:
            rows = await conn.fetch(sql, *params)
        return [(row[0], row[1]) for row in rows]

    async def _count(self, conditions: tuple[Condition, ...]) -> int:
        sql, params = count_sql(self.model, self._qualified, conditions)
        async with self._connection("counting") as conn:
            return cast(int, await conn.fetchval(sql, *params))

    async def _close(self) -> None:
        await self._pools.close()


def open_url(model: type[T], url: str) -> PostgresRepository[T]:
    """The repository for a ``postgresql://...[?schema=name]`` storage URL."""
    return PostgresRepository(model, url)
