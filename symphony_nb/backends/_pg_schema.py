"""PostgreSQL layout: URL and schema-name checks, and creation of the schema and tables."""

# SQL text here only interpolates quoted identifiers (schema, table); every value is bound.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode

from .._errors import InvalidUrlError, StorageError
from .._urls import mask_url
from ._pg_listen import has_triggers, trigger_sql
from ._sql import PLAIN, check_version
from ._sql import quote as quote_ident

SCHEMA_VERSION = 1
"""The layout version this package writes; a schema with a newer one is refused."""
DEFAULT_SCHEMA = "symphony"
META_TABLE = "_symphony_meta"
_MAX_NAME = 63
_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class PgUrl:
    """A PostgreSQL URL taken apart: what the driver is given, and what messages may show.

    The password never stays in ``dsn``: it travels to the driver as its own argument, so
    no driver message that quotes the DSN can reveal it.
    """

    dsn: str = field(repr=False)
    """For the driver: without the password and ``schema=`` (``sslpassword=`` stays)."""
    password: str | None = field(repr=False)
    schema: str | None
    masked: str
    """The URL as messages and ``repr`` show it, every password replaced by ``***``."""
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def scrub(self, text: str) -> str:
        """``text`` with every spelling of a password of this URL replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def _malformed(masked: str, problem: str) -> InvalidUrlError:
    return InvalidUrlError(
        f"malformed PostgreSQL URL {masked!r}: {problem}; write it as "
        "postgresql://user:password@host:port/database, with '@', '/', ':', '?' and '#' in "
        "the user name or password percent-encoded (urllib.parse.quote(password, safe=''))"
    )


def _check_hosts(hostspec: str, masked: str) -> None:
    for number, host in enumerate(hostspec.split(","), 1):
        if host.startswith("["):
            _, bracket, after = host[1:].partition("]")
            if not bracket or (after and not after.startswith(":")):
                raise _malformed(masked, f"host {number} is not a valid [IPv6] address")
            has_port, port = bool(after), after[1:]
        else:
            _, colon, port = host.partition(":")
            has_port = bool(colon)
        if has_port and not port.isdigit():
            # The port is never quoted: a password with a stray delimiter ends up here.
            raise _malformed(masked, f"the port of host {number} is not a number")


def split_url(url: Any) -> PgUrl:
    """Take apart a ``postgresql://`` URL; :class:`InvalidUrlError` if it is malformed.

    A password in the user part or in a ``password=`` query parameter is moved out of the
    DSN; ``schema=`` is taken out as the schema name.
    """
    if not isinstance(url, str):
        raise InvalidUrlError(f"a PostgreSQL URL must be a string, got {type(url).__name__}")
    url = url.strip()
    masked = mask_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise InvalidUrlError(
            f"not a PostgreSQL URL: {masked!r}; it must start with postgresql://, as in "
            "postgresql://user:password@host:port/database"
        )
    if "#" in rest:
        raise _malformed(masked, "it contains '#'")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    path, _, query = tail.partition("?")
    if "@" in path or ("@" in tail and "@" not in authority):
        raise _malformed(masked, "it has an '@' after the host")
    userinfo, at, hostspec = authority.rpartition("@")
    _check_hosts(hostspec, masked)
    try:
        fields = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise _malformed(masked, "its query is not a list of name=value pairs") from None
    raw_user, colon, raw_password = userinfo.partition(":")
    secrets = [raw_password, unquote(raw_password)] if colon else []
    password = unquote(raw_password) if colon else None
    kept: list[tuple[str, str]] = []
    schemas: list[str] = []
    for key, value in fields:
        if key.lower() in ("password", "sslpassword"):
            secrets += [value, quote(value, safe=""), quote_plus(value, safe="")]
        if key == "schema":
            schemas.append(value)
        elif key.lower() == "password":
            if not colon:  # as in libpq, a password in the user part wins
                password = value
        else:
            kept.append((key, value))
    user = quote(unquote(raw_user), safe="") + "@" if at and raw_user else ""
    dsn = f"{scheme.lower()}://{user}{hostspec}{path}" + (f"?{urlencode(kept)}" if kept else "")
    return PgUrl(
        dsn=dsn,
        password=password or None,
        schema=schemas[-1] if schemas else None,
        masked=masked,
        # Longest first, so a spelling containing another is replaced whole.
        secrets=tuple(sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True)),
    )


def check_schema(schema: Any) -> str:
    """``schema`` if it is a plain identifier; else StorageError."""
    if not isinstance(schema, str) or len(schema) > _MAX_NAME or not PLAIN.fullmatch(schema):
        raise StorageError(
            f"invalid PostgreSQL schema name {schema!r}: use 1-63 ASCII letters, digits and '_', "
            "not starting with a digit"
        )
    return schema


def asyncpg_errors() -> Any:
    """asyncpg's exception classes (imported only once PostgreSQL is in use)."""
    import asyncpg

    return asyncpg.exceptions


def _lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"symphony_nb:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def create_schema(
    conn: Any, schema_name: str, table: str, indexes: Mapping[str, str], url: str
) -> None:
    """Create ``schema_name``, its meta table, ``table``, ``indexes`` and the triggers that
    notify change feeds of every write (see :mod:`._pg_listen`).

    ``indexes`` maps each index name to what follows ``ON table``: ``(expression)``, and a
    ``WHERE`` clause for a partial index.

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
        else:
            where = f"PostgreSQL schema {schema_name!r} at {url}"
            advice = "or use another schema"
            check_version(stored, SCHEMA_VERSION, where, label="layout version", advice=advice)
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS {qualified} (id text COLLATE "C" PRIMARY KEY, '
            "version bigint, doc jsonb NOT NULL)"
        )
        for name, spec in indexes.items():
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {quote_ident(name)} ON {qualified} {spec}"
            )
        if not await has_triggers(conn, schema_name, table):  # tables made before they were
            try:
                async with conn.transaction():  # a savepoint
                    for statement in trigger_sql(schema_name, table):
                        await conn.execute(statement)
            except asyncpg_errors().InsufficientPrivilegeError:
                pass  # not the table's owner: it works as before, and caches read through


def fit_name(name: str, limit: int = _MAX_NAME) -> str:
    """``name`` if it fits in ``limit`` bytes (PostgreSQL keeps 63), else a prefix and a
    digest of it."""
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
    return name.encode()[: limit - 17].decode(errors="ignore") + "_" + digest


def history_name(table: str) -> str:
    """The history table of ``table``: ``<table>:history`` (a model's table has no colon)."""
    return fit_name(table, _MAX_NAME - len(":history")) + ":history"


async def create_history(
    conn: Any, schema_name: str, history: str, indexes: Mapping[str, str]
) -> bool:
    """Create the history table ``history`` in ``schema_name`` and its ``indexes``, in the
    caller's transaction; True when it holds no revision yet.

    One revision per row: ``version`` numbers the revisions of ``id``, ``doc`` is NULL
    exactly for a delete. The schema's lock is held until the caller commits, so of
    several processes turning history on at once one finds the table empty.
    """
    qualified = f"{quote_ident(schema_name)}.{quote_ident(history)}"
    await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", _lock_key(schema_name))
    await conn.execute(
        f'CREATE TABLE IF NOT EXISTS {qualified} (id text COLLATE "C" NOT NULL, '
        "version bigint NOT NULL, op text NOT NULL CHECK (op IN ('create', 'update', 'delete')), "
        "at timestamptz NOT NULL, actor text, reason text, doc jsonb, entity_version bigint, "
        "PRIMARY KEY (id, version), CHECK ((op = 'delete') = (doc IS NULL)))"
    )
    for name, spec in indexes.items():
        await conn.execute(f"CREATE INDEX IF NOT EXISTS {quote_ident(name)} ON {qualified} {spec}")
    return not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {qualified})")
