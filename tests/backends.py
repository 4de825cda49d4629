"""Every backend the tests run on, and what each can do besides the Repository contract.

``BACKENDS`` maps a name to a :class:`Backend`. ``BACKENDS[name](model, where)`` is an async
context manager yielding a fresh, empty repository of ``model``; ``where`` is a temp folder
it may use. A backend whose service is not reachable raises ``BackendUnavailable`` with the
reason. A suite that needs more than the contract picks backends by capability with
:func:`having`, never by name, so a backend added here reaches every suite that can run it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

import pytest

from symphony_nb import FileSystemRepository, InMemoryRepository, Repository
from symphony_nb._sync import run_sync
from symphony_nb.stores import StoreLayer

Factory = Callable[[type[Any], Path], contextlib.AbstractAsyncContextManager[Repository[Any]]]
UrlFactory = Callable[[Path], contextlib.AbstractAsyncContextManager[str]]
Plant = Callable[[Any, str, bytes], Awaitable[bool]]


class BackendUnavailable(Exception):
    """The backend's service cannot be reached; the message says why."""


@dataclass(frozen=True)
class Backend:
    """How to make a repository of one backend, and its capabilities beyond the contract.

    - ``url(where)``: an async context manager yielding the storage URL of a fresh store
      under ``where``, which ``open_repository`` opens in this process or in another one.
    - ``shared``: processes that open the same URL work on one store (multi-process tests).
    - ``on_disk``: the store is files under ``where`` that outlive a killed writer process
      (crash tests).
    - ``plant(repo, id, raw)``: store the bytes ``raw`` as the document of ``id`` behind the
      repository's back; False when the storage itself refuses them (corrupt-data tests).
    """

    make: Factory
    url: UrlFactory | None = None
    shared: bool = False
    on_disk: bool = False
    plant: Plant | None = None

    def __call__(
        self, model: type[Any], where: Path
    ) -> contextlib.AbstractAsyncContextManager[Repository[Any]]:
        return self.make(model, where)


BACKENDS: dict[str, Backend] = {}


def backend_store(repo: Repository[Any]) -> Any:
    """The backend's own store under every layer of ``repo`` (for backend-specific checks)."""
    store: Any = repo.store
    while isinstance(store, StoreLayer):
        store = store.inner
    return store


async def written_behind(repo: Repository[Any]) -> None:
    """Call after writing a store behind ``repo``'s back, so its read cache (if any) knows.

    The memory store counts only writes made through it, so the count is bumped; PostgreSQL
    tells a cache by notifications, whose arrival this waits for (and for the cache to be
    listening at all). SQLite and files need nothing: their caches check on every read.
    """
    store = backend_store(repo)
    if hasattr(store, "changes"):
        store.changes += 1
    cache = getattr(repo, "_cache", None)
    if cache is None:
        return
    feed = cache._feed
    for _ in range(1000):  # PostgreSQL: until it listens (a connection's time)
        if getattr(feed, "_ready", True):
            break
        await asyncio.sleep(0.01)
    await feed.sync()


def base(name: str) -> str:
    """The real backend under ``name`` (``recorded:sqlite`` -> ``sqlite``)."""
    return name.rsplit(":", 1)[-1]


def having(*capabilities: str) -> list[str]:
    """The names, sorted, of the backends that have every one of ``capabilities``."""
    known = {field.name for field in fields(Backend)}
    for capability in capabilities:
        if capability not in known:
            raise ValueError(f"{capability!r} is not a capability of Backend: {sorted(known)}")
    return sorted(
        name
        for name, backend in BACKENDS.items()
        if all(getattr(backend, capability) for capability in capabilities)
    )


# ---------------------------------------------------------------------- memory


@contextlib.asynccontextmanager
async def memory(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    async with InMemoryRepository(model) as repo:
        yield repo


@contextlib.asynccontextmanager
async def memory_url(where: Path) -> AsyncIterator[str]:
    """A store of its own in each process that opens it."""
    yield "memory://"


BACKENDS["memory"] = Backend(memory, url=memory_url)


# ---------------------------------------------------------------------- files


@contextlib.asynccontextmanager
async def files(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    async with FileSystemRepository(model, where / "store") as repo:
        yield repo


@contextlib.asynccontextmanager
async def files_url(where: Path) -> AsyncIterator[str]:
    yield str(where / "store")


async def plant_file(repo: Any, key: str, raw: bytes) -> bool:
    from symphony_nb._ids import id_to_filename

    (repo.path / id_to_filename(key)).write_bytes(raw)
    return True


BACKENDS["files"] = Backend(files, url=files_url, shared=True, on_disk=True, plant=plant_file)


# ---------------------------------------------------------------------- postgres


@contextlib.asynccontextmanager
async def postgres(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    """A repository in its own schema on the test server, dropped afterwards."""
    from symphony_nb.backends.postgres import PostgresRepository
    from tests import pg

    async with postgres_schema() as name, PostgresRepository(model, pg.dsn(), schema=name) as repo:
        yield repo


@contextlib.asynccontextmanager
async def postgres_url(where: Path) -> AsyncIterator[str]:
    """The test server's URL with a schema of its own, dropped afterwards."""
    from tests import pg

    async with postgres_schema() as name:
        yield f"{pg.dsn()}?schema={name}"


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    from tests import pg

    try:
        await pg.ping()
    except pg.ServerUnavailable as exc:
        raise BackendUnavailable(str(exc)) from exc
    async with pg.schema() as name:
        yield name


async def plant_postgres(repo: Any, key: str, raw: bytes) -> bool:
    import asyncpg

    from tests import pg

    conn = await pg.connect()
    try:
        await conn.execute(
            f'INSERT INTO "{repo.schema}"."{repo.table}" (id, version, doc) VALUES ($1, 1, $2::jsonb)',
            key,
            raw.decode(),
        )
    except (asyncpg.PostgresError, UnicodeDecodeError):
        return False  # jsonb refuses it
    finally:
        await conn.close()
    await written_behind(repo)
    return True


BACKENDS["postgres"] = Backend(postgres, url=postgres_url, shared=True, plant=plant_postgres)


# ---------------------------------------------------------------------- sqlite


@contextlib.asynccontextmanager
async def sqlite(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    """A repository in a fresh SQLite file."""
    from symphony_nb import SQLiteRepository

    async with SQLiteRepository(model, where / "symphony.db") as repo:
        yield repo


@contextlib.asynccontextmanager
async def sqlite_url(where: Path) -> AsyncIterator[str]:
    yield f"sqlite:///{where / 'symphony.db'}"


async def plant_sqlite(repo: Any, key: str, raw: bytes) -> bool:
    import sqlite3

    conn = sqlite3.connect(repo.path, timeout=30)
    try:
        with conn:
            conn.execute(
                f'INSERT INTO "{repo.table}" (id, version, doc) VALUES (?, 1, ?)',
                (key, raw.decode()),
            )
    except (sqlite3.DatabaseError, UnicodeDecodeError):
        return False  # the database itself refuses it (CHECK json_valid, TEXT encoding)
    finally:
        conn.close()
    return True


BACKENDS["sqlite"] = Backend(sqlite, url=sqlite_url, shared=True, on_disk=True, plant=plant_sqlite)


# ---------------------------------------------------------------------- through the seam


@contextlib.asynccontextmanager
async def dict_store(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    """The store ``tests/test_store_seam.py`` writes from public names only."""
    from tests.test_store_seam import DictStore

    async with Repository(model, DictStore(model)) as repo:
        yield repo


BACKENDS["dict"] = Backend(dict_store)


def _recorded(base: Factory) -> Factory:
    @contextlib.asynccontextmanager
    async def make(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
        from tests.test_store_seam import Recording

        async with base(model, where) as repo:
            yield Repository(model, Recording(backend_store(repo)))

    return make


# Every real backend once more, its store wrapped in a layer that records each call.
for _name in ("files", "memory", "postgres", "sqlite"):
    BACKENDS[f"recorded:{_name}"] = Backend(_recorded(BACKENDS[_name].make))


# ---------------------------------------------------------------------- through the cache


@contextlib.asynccontextmanager
async def cached_memory(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    async with InMemoryRepository(model, cache=True) as repo:
        yield repo


@contextlib.asynccontextmanager
async def cached_files(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    async with FileSystemRepository(model, where / "store", cache=True) as repo:
        yield repo


@contextlib.asynccontextmanager
async def cached_sqlite(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    from symphony_nb import SQLiteRepository

    async with SQLiteRepository(model, where / "symphony.db", cache=True) as repo:
        yield repo


@contextlib.asynccontextmanager
async def cached_postgres(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
    from symphony_nb.backends.postgres import PostgresRepository
    from tests import pg

    async with (
        postgres_schema() as name,
        PostgresRepository(model, pg.dsn(), schema=name, cache=True) as repo,
    ):
        yield repo


# Every real backend once more through the read cache (cache=True), the outermost layer.
BACKENDS["cached:memory"] = Backend(cached_memory)
BACKENDS["cached:files"] = Backend(cached_files, plant=plant_file)
BACKENDS["cached:postgres"] = Backend(cached_postgres, plant=plant_postgres)
BACKENDS["cached:sqlite"] = Backend(cached_sqlite, plant=plant_sqlite)


# ---------------------------------------------------------------------- with history

HISTORY: tuple[str, ...] = ("files", "memory", "postgres", "sqlite")
"""The backends whose stores keep history (``history=`` on their repositories)."""


@contextlib.asynccontextmanager
async def with_history(
    name: str, model: type[Any], where: Path, *, history: bool | int = True, **options: Any
) -> AsyncIterator[Repository[Any]]:
    """A fresh repository of backend ``name`` keeping history, opened by its URL."""
    from symphony_nb import open_repository

    url = BACKENDS[name].url
    assert url is not None, f"{name} has no URL"
    async with (
        url(where) as target,
        open_repository(model, target, history=history, **options) as repo,
    ):
        yield repo


def _historied(name: str) -> Factory:
    @contextlib.asynccontextmanager
    async def make(model: type[Any], where: Path) -> AsyncIterator[Repository[Any]]:
        async with with_history(name, model, where) as repo:
            yield repo

    return make


# Backends once more with history on: the whole contract holds while every change is kept.
BACKENDS["history:memory"] = Backend(_historied("memory"))
BACKENDS["history:files"] = Backend(_historied("files"), plant=plant_file)
BACKENDS["history:sqlite"] = Backend(_historied("sqlite"), plant=plant_sqlite)
BACKENDS["history:postgres"] = Backend(_historied("postgres"), plant=plant_postgres)


# ---------------------------------------------------------------------- opening


def _skip(name: str, exc: BackendUnavailable) -> NoReturn:
    pytest.skip(f"{name} backend unavailable: {exc}")


@contextlib.contextmanager
def opened(backend: str, model: type[Any], where: Path) -> Iterator[Repository[Any]]:
    """A fresh repository of ``backend``, opened and closed on the sync facades' loop."""
    stack = contextlib.AsyncExitStack()

    async def enter() -> Repository[Any]:
        return await stack.enter_async_context(BACKENDS[backend](model, where))

    try:
        repo = run_sync(enter())
    except BackendUnavailable as exc:
        _skip(backend, exc)
    try:
        yield repo
    finally:
        run_sync(stack.aclose())


@contextlib.contextmanager
def opened_with_history(
    backend: str, model: type[Any], where: Path, **options: Any
) -> Iterator[Repository[Any]]:
    """:func:`with_history` opened and closed on the sync facades' loop."""
    stack = contextlib.AsyncExitStack()

    async def enter() -> Repository[Any]:
        return await stack.enter_async_context(with_history(backend, model, where, **options))

    try:
        repo = run_sync(enter())
    except BackendUnavailable as exc:
        _skip(backend, exc)
    try:
        yield repo
    finally:
        run_sync(stack.aclose())


def _url_factory(backend: str) -> UrlFactory:
    url = BACKENDS[backend].url
    if url is None:
        raise ValueError(f"the {backend} backend has no storage URL; pick one from having('url')")
    return url


@contextlib.asynccontextmanager
async def store_url(backend: str, where: Path) -> AsyncIterator[str]:
    """The storage URL of a fresh store of ``backend``; skip the test if it is unavailable."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            url = await stack.enter_async_context(_url_factory(backend)(where))
        except BackendUnavailable as exc:
            _skip(backend, exc)
        yield url


@contextlib.contextmanager
def store_url_sync(backend: str, where: Path) -> Iterator[str]:
    """:func:`store_url` for code without an event loop, made on the sync facades' loop."""
    stack = contextlib.AsyncExitStack()

    async def enter() -> str:
        return await stack.enter_async_context(_url_factory(backend)(where))

    try:
        url = run_sync(enter())
    except BackendUnavailable as exc:
        _skip(backend, exc)
    try:
        yield url
    finally:
        run_sync(stack.aclose())
