"""One asyncpg pool per event loop.

asyncpg pools and connections belong to the loop that made them. A repository is used from a
notebook kernel's loop (``await``) and from the sync facades' private loop (``repo.sync``), in
any order, so it keeps one pool per loop. Each pool is tied to an async generator started on
its loop: when that loop shuts down (``asyncio.run``, ``Runner.close``) the loop finalises the
generator, which closes the pool while the loop can still run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._loopthread import in_loop_thread

PoolFactory = Callable[[], Awaitable[Any]]
_CLOSE_TIMEOUT = 10.0


@dataclass
class _Entry:
    loop: asyncio.AbstractEventLoop
    creating: asyncio.Future[Any]
    guard: AsyncGenerator[None, None] | None = None


async def _guard(pool: Any, forget: Callable[[], None]) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        forget()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), _CLOSE_TIMEOUT)
        if not pool._closed:  # graceful close timed out or failed: drop the sockets
            pool.terminate()


class LoopPools:
    """The pools of one repository, keyed by event loop; ``factory`` makes a pool."""

    def __init__(self, factory: PoolFactory) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._entries: dict[asyncio.AbstractEventLoop, _Entry] = {}

    def ready(self) -> Any:
        """The running loop's pool if it is made already, else None (no await needed)."""
        entry = self._entries.get(asyncio.get_running_loop())
        if entry is not None and entry.guard is not None:
            return entry.creating.result()
        return None

    async def get(self) -> Any:
        """The pool of the running loop, made on first use."""
        pool = self.ready()
        if pool is not None:
            return pool
        loop = asyncio.get_running_loop()
        with self._lock:
            self._drop_closed_loops()
            entry = self._entries.get(loop)
            if entry is None:
                entry = _Entry(loop, loop.create_task(self._create(loop)))
                self._entries[loop] = entry
        return await asyncio.shield(entry.creating)

    async def _create(self, loop: asyncio.AbstractEventLoop) -> Any:
        try:
            pool = await self._factory()
        except BaseException:
            with self._lock:
                self._entries.pop(loop, None)
            raise
        entry = self._entries[loop]

        def forget() -> None:
            with self._lock:
                if self._entries.get(loop) is entry:
                    del self._entries[loop]

        guard = _guard(pool, forget)
        await guard.__anext__()  # the loop now tracks it and finalises it on shutdown
        entry.guard = guard
        return pool

    def _drop_closed_loops(self) -> None:
        for loop in [loop for loop in self._entries if loop.is_closed()]:
            del self._entries[loop]

    async def close(self) -> None:
        """Close every pool, each on its own loop; safe to call more than once."""
        with self._lock:
            entries = list(self._entries.values())
        here = asyncio.get_running_loop()
        # Through a sync facade the caller's own loop is blocked until this returns, and runs
        # its pool's close right after; waiting for that here would deadlock.
        wait_for_others = not in_loop_thread()
        waits: list[Awaitable[Any]] = []
        for entry in entries:
            if entry.loop is here:
                waits.append(_close_entry(entry))
            elif entry.loop.is_running():
                future = asyncio.run_coroutine_threadsafe(_close_entry(entry), entry.loop)
                if wait_for_others:
                    waits.append(asyncio.wrap_future(future))
            # A loop that is not running cannot run anything now; its pool is closed when
            # that loop shuts down (or dropped once it is closed).
        results = await asyncio.gather(*waits, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]


async def _close_entry(entry: _Entry) -> None:
    try:
        await entry.creating
    except BaseException:
        return
    if entry.guard is not None:
        await entry.guard.aclose()
