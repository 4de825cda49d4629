"""Sync facades: call any async service's methods without ``await``.

``repo.sync.find_all(...)`` runs ``repo.find_all(...)`` to completion and returns its result.
One mechanism serves every object (repositories, services, users' own subclasses): a
:class:`SyncFacade` wraps whatever coroutine method you reach through it, keeping its
signature and docstring, and adds a keyword-only ``timeout`` (seconds).

Two modes (see :func:`set_sync_mode`):

* ``"thread"`` (default): coroutines run on a private event loop in a daemon thread. It works
  in scripts, in pytest (sync or async tests), in Jupyter cells (including Run All) and in
  widget callbacks, because it never re-enters the caller's loop; Ctrl-C / kernel interrupt
  cancels the operation on that loop and waits for it to unwind.
* ``"nested"``: coroutines run on the caller's own running loop, re-entered with
  nest-asyncio2 (never applied at import time; only when this mode is chosen).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Generic, Literal, TypeVar

from ._errors import SymphonyError

TargetT = TypeVar("TargetT")
R = TypeVar("R")
SyncMode = Literal["thread", "nested"]

_mode: SyncMode = "thread"
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid = 0
_CANCEL_GRACE = 5.0


class SyncUsageError(SymphonyError, RuntimeError):
    """The sync facade was called where it would deadlock; use ``await`` there instead."""


def set_sync_mode(mode: SyncMode) -> None:
    """Choose how sync facades run coroutines: ``"thread"`` (default) or ``"nested"``.

    ``"nested"`` needs the ``nest-asyncio2`` package (``pip install 'symphony_nb[nested]'``)
    and patches the running loop the first time a sync call is made on it.
    """
    global _mode
    if mode not in ("thread", "nested"):
        raise ValueError(f"sync mode must be 'thread' or 'nested', got {mode!r}")
    if mode == "nested":
        _import_nest_asyncio()
    _mode = mode


def get_sync_mode() -> SyncMode:
    """The current sync mode."""
    return _mode


def _import_nest_asyncio() -> Any:
    try:
        import nest_asyncio2
    except ImportError as exc:
        raise ImportError(
            "nested sync mode needs nest-asyncio2: pip install 'symphony_nb[nested]'"
        ) from exc
    return nest_asyncio2


def _loop_thread() -> asyncio.AbstractEventLoop:
    global _loop, _thread, _pid
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive() or _pid != os.getpid():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="symphony_nb-loop", daemon=True)
            thread.start()
            ready.wait()
            _loop, _thread, _pid = loop, thread, os.getpid()
        return _loop


def in_loop_thread() -> bool:
    """Whether the caller runs on the private loop of the sync facades."""
    return _thread is not None and threading.current_thread() is _thread


def run_sync(coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
    """Run ``coro`` to completion from sync code and return its result.

    ``timeout`` (seconds) cancels it and raises :class:`TimeoutError`. A KeyboardInterrupt
    cancels it too, and waits for the cancellation to unwind before re-raising.
    """
    if _mode == "nested":
        return _run_nested(coro, timeout)
    if in_loop_thread():
        coro.close()
        raise SyncUsageError(
            "a sync facade was called from inside the loop that runs symphony_nb's async work; "
            "use 'await' on the async method there instead"
        )
    loop = _loop_thread()
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        _cancel_and_wait(future)
        raise TimeoutError(
            f"operation did not finish within {timeout} s and was cancelled"
        ) from None
    except BaseException:
        _cancel_and_wait(future)
        raise


def _cancel_and_wait(future: concurrent.futures.Future[Any]) -> None:
    if future.done():
        return
    future.cancel()
    # The operation's own outcome after cancellation is not the caller's concern.
    with contextlib.suppress(BaseException):
        future.result(_CANCEL_GRACE)


def _run_nested(coro: Coroutine[Any, Any, R], timeout: float | None) -> R:
    task_coro: Coroutine[Any, Any, R] = coro if timeout is None else asyncio.wait_for(coro, timeout)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(task_coro)
    _import_nest_asyncio().apply(loop)
    return loop.run_until_complete(task_coro)


async def _next(agen: AsyncIterator[R]) -> R:
    return await agen.__anext__()


def _sync_iterator(agen: AsyncIterator[R], timeout: float | None) -> Iterator[R]:
    try:
        while True:
            try:
                yield run_sync(_next(agen), timeout)
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            run_sync(aclose())


def _add_timeout(signature: inspect.Signature) -> inspect.Signature:
    params = list(signature.parameters.values())
    if any(p.name == "timeout" for p in params):
        return signature
    timeout = inspect.Parameter(
        "timeout", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="float | None"
    )
    if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        params.insert(len(params) - 1, timeout)
    else:
        params.append(timeout)
    return signature.replace(parameters=params)


def syncify(method: Callable[..., Any]) -> Callable[..., Any]:
    """A blocking version of a bound coroutine (or async generator) method."""
    is_agen = inspect.isasyncgenfunction(method)
    takes_timeout = "timeout" in inspect.signature(method).parameters

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        timeout = kwargs.get("timeout") if takes_timeout else kwargs.pop("timeout", None)
        result = method(*args, **kwargs)
        if is_agen:
            return _sync_iterator(result, timeout)
        return run_sync(result, timeout)

    call.__signature__ = _add_timeout(inspect.signature(method))  # type: ignore[attr-defined]
    return call


class SyncFacade(Generic[TargetT]):
    """Blocking access to the async methods of ``target``; other attributes pass through."""

    __slots__ = ("_target",)

    def __init__(self, target: TargetT) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.iscoroutinefunction(attr) or inspect.isasyncgenfunction(attr):
            return syncify(attr)
        return attr

    def __dir__(self) -> list[str]:
        return [name for name in dir(self._target) if not name.startswith("_")]

    def __repr__(self) -> str:
        return f"<sync facade of {self._target!r}>"
