"""PostgreSQL test helpers: the test DSN, unique schemas dropped afterwards, worker processes.

The server is the one on this machine (``SYMPHONY_NB_TEST_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/test``). Every schema a test makes is named
``symphony_test_<pid>_<random>`` and dropped (CASCADE) when the test ends; schemas left by
killed runs (whose process is gone) are dropped by :func:`drop_stale_schemas`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from symphony_nb import Task
from symphony_nb.backends.postgres import PostgresRepository

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PREFIX = "symphony_test_"
_STALE_RE = re.compile(rf"{PREFIX}(\d+)_[0-9a-f]+")


class ServerUnavailable(Exception):
    """The test server cannot be reached; the message says why."""


def dsn() -> str:
    """The test server's DSN."""
    return os.environ.get("SYMPHONY_NB_TEST_POSTGRES") or DEFAULT_DSN


def unique_schema() -> str:
    """A schema name no other test run uses."""
    return f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:10]}"


async def connect() -> Any:
    """A raw asyncpg connection to the test server (raise ServerUnavailable)."""
    try:
        return await asyncpg.connect(dsn(), timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise ServerUnavailable(f"PostgreSQL at 127.0.0.1:5432 not reachable: {exc}") from exc


async def ping() -> None:
    """Connect once and close (raise ServerUnavailable)."""
    conn = await connect()
    await conn.close()


async def drop_schema(schema: str) -> None:
    """Drop ``schema`` and everything in it."""
    conn = await connect()
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def drop_stale_schemas() -> None:
    """Drop test schemas whose process no longer runs (left by killed runs)."""
    conn = await connect()
    try:
        names = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", PREFIX
        )
        for (name,) in names:
            match = _STALE_RE.fullmatch(name)
            if match and not _alive(int(match.group(1))):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.asynccontextmanager
async def schema() -> AsyncIterator[str]:
    """A fresh schema name, dropped with its contents on exit (raise ServerUnavailable)."""
    name = unique_schema()
    await ping()
    try:
        yield name
    finally:
        await drop_schema(name)


# ---------------------------------------------------------------- worker processes


def open_worker(url: str, schema_name: str, entity_id: str) -> int:
    """Open a repository in a new schema (creating it) and save one task; return its count."""

    async def run() -> int:
        async with PostgresRepository(Task, url, schema=schema_name) as repo:
            await repo.save(Task(id=entity_id, name=entity_id))
            return await repo.count()

    return asyncio.run(run())
