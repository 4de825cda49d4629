"""PostgreSQL layout: URL and schema-name checks, and creation of the schema and tables."""

# SQL text here only interpolates quoted identifiers (schema, table); every value is bound.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._errors import StorageError
from .._storage import mask_url
from ._pg_sql import quote_ident

SCHEMA_VERSION = 1
"""The layout version this package writes; a schema with a newer one is refused."""
DEFAULT_SCHEMA = "symphony"
META_TABLE = "_symphony_meta"
_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SCHEMES = ("postgresql", "postgres")


def split_url(url: Any) -> tuple[str, str | None]:
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


def check_schema(schema: Any) -> str:
    """``schema`` if it is a plain identifier; else StorageError."""
    if not isinstance(schema, str) or not _SCHEMA_RE.fullmatch(schema):
        raise StorageError(
            f"invalid PostgreSQL schema name {schema!r}: use 1-63 ASCII letters, digits and '_', "
            "not starting with a digit"
        )
    return schema


def _lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"symphony_nb:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def create_schema(
    conn: Any, schema_name: str, table: str, indexes: Mapping[str, str], url: str
) -> None:
    """Create ``schema_name``, its meta table, ``table`` and ``indexes`` (name -> expression).

    Idempotent and safe when several processes do it at once; refuses (StorageError) a schema
    whose stored layout version is newer than :data:`SCHEMA_VERSION`.
    """
    schema = quote_ident(schema_name)
    meta = f"{schema}.{quote_ident(META_TABLE)}"
    qualified = f"{schema}.{quote_ident(table)}"
    async with conn.transaction():
        # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalogs.
        await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", _lock_key(schema_name))
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
                f"PostgreSQL schema {schema_name!r} at {url} has layout version "
                f"{stored}, newer than the {SCHEMA_VERSION} this symphony_nb understands; "
                "upgrade symphony_nb (pip install -U symphony_nb) or use another schema"
            )
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS {qualified} (id text COLLATE "C" PRIMARY KEY, '
            "version bigint, doc jsonb NOT NULL)"
        )
        for name, expression in indexes.items():
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {quote_ident(name)} ON {qualified} ({expression})"
            )
