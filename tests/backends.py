"""Factories for every backend, so one behavioural suite runs over all of them.

Each factory is an async context manager ``make(model, where)`` yielding a fresh, empty
repository of ``model``; ``where`` is a temp folder the factory may use. A backend whose
service is not reachable raises ``BackendUnavailable`` with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from symphony_nb import FileSystemRepository, InMemoryRepository, Repository
from symphony_nb._sync import run_sync

Factory = Callable[[type[Any], Path], contextlib.AbstractAsyncContextManager[Repository[Any]]]


class BackendUnavailable(Exception):
    """The backend's service cannot be reached; the message says why."""


@contextlib.asynccontextmanager
async def memory(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    async with InMemoryRepository(model) as repo:
        yield repo


@contextlib.asynccontextmanager
async def files(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    async with FileSystemRepository(model, where / "store") as repo:
        yield repo


BACKENDS: dict[str, Factory] = {"memory": memory, "files": files}


@contextlib.asynccontextmanager
async def postgres(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    """A repository in its own schema on the test server, dropped afterwards."""
    from symphony_nb.backends.postgres import PostgresRepository
    from tests import pg

    try:
        await pg.ping()
    except pg.ServerUnavailable as exc:
        raise BackendUnavailable(str(exc)) from exc
    async with pg.schema() as name, PostgresRepository(model, pg.dsn(), schema=name) as repo:
        yield repo


BACKENDS["postgres"] = postgres


@contextlib.asynccontextmanager
async def sqlite(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    """A repository in a fresh SQLite file."""
    from symphony_nb import SQLiteRepository

    async with SQLiteRepository(model, where / "symphony.db") as repo:
        yield repo


BACKENDS["sqlite"] = sqlite


@contextlib.contextmanager
def opened(backend: str, model: type[Any], where: Path) -> Iterator[Repository[Any]]:
    """A fresh repository of ``backend``, opened and closed on the sync facades' loop."""
    stack = contextlib.AsyncExitStack()

    async def enter() -> Repository[Any]:
        return await stack.enter_async_context(BACKENDS[backend](model, where))

    try:
        repo = run_sync(enter())
    except BackendUnavailable as exc:
        pytest.skip(f"{backend} backend unavailable: {exc}")
    try:
        yield repo
    finally:
        run_sync(stack.aclose())
