"""Sync facades: call any async service's methods without ``await``.

``repo.sync.find_all(...)`` runs ``repo.find_all(...)`` to completion and returns its result.
One mechanism serves every object (repositories, services, users' own subclasses): a
:class:`SyncFacade` wraps whatever coroutine method you reach through it, keeping its
signature and docstring, and adds a keyword-only ``timeout`` (seconds). For type checkers,
``_sync_faces.py`` (generated from the async classes by ``scripts/generate-sync``) subclasses it
with one typed method per public coroutine method of the library's services; methods it does
not know (a user's subclass) are still served by ``SyncFacade.__getattr__``.

Two modes (see :func:`set_sync_mode`):

* ``"thread"`` (default): coroutines run on a private event loop in a daemon thread. It works
  in scripts, in pytest (sync or async tests), in Jupyter cells (including Run All) and in
  widget callbacks, because it never re-enters the caller's loop; Ctrl-C / kernel interrupt
  cancels the operation on that loop and waits for it to unwind.
* ``"nested"``: coroutines run on the caller's own running loop, re-entered with
  nest-asyncio2 (never applied at import time; only when this mode is chosen). Without a
  running loop, a loop kept for the calling thread is used, so loop-bound resources survive
  from one call to the next. Ctrl-C cancels the operation and raises KeyboardInterrupt once
  it has unwound, as ``asyncio.run`` does.

In thread mode, a sync call made from code that itself runs on the private loop would wait
for itself forever; it raises :class:`SyncUsageError` instead.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import os
import signal
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Generic, Literal, TypeVar

from ._errors import SyncUsageError as SyncUsageError
from ._loopthread import in_loop_thread as in_loop_thread
from ._loopthread import set_loop_thread
from ._warnings import WarningsToCaller

TargetT = TypeVar("TargetT")
R = TypeVar("R")
SyncMode = Literal["thread", "nested"]

_mode: SyncMode = "thread"
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid = 0
_own_loops = threading.local()
# How long an interrupted or timed-out call waits for the operation to unwind (its
# ``except CancelledError`` / ``finally`` blocks) before giving control back anyway.
CANCEL_GRACE = 10.0


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


# ---------------------------------------------------------------------- thread mode


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
            if _pid == 0:  # a forked child inherits the parent's registration
                atexit.register(_stop_loop_thread)
            _loop, _thread, _pid = loop, thread, os.getpid()
            set_loop_thread(thread)
        return _loop


def _stop_loop_thread() -> None:
    """Cancel what still runs on the private loop, then stop and close it (at exit)."""
    global _loop, _thread
    with _lock:
        loop, thread = _loop, _thread
        _loop = _thread = None
        set_loop_thread(None)
    if loop is None or thread is None or not thread.is_alive():
        return

    async def wind_down() -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_GRACE)
        await loop.shutdown_asyncgens()

    future = asyncio.run_coroutine_threadsafe(wind_down(), loop)
    concurrent.futures.wait([future], CANCEL_GRACE)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(CANCEL_GRACE)
    if not thread.is_alive():
        loop.close()


class _Job(Generic[R]):
    """One coroutine running as a task on the private loop, watched from the calling thread.

    Unlike ``run_coroutine_threadsafe``, whose future reports "cancelled" as soon as it is
    asked to cancel, ``outcome`` is only set once the task has really finished, so a caller
    can wait for the cancellation to unwind (a task saved as cancelled, a transaction
    rolled back) before it moves on.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.outcome: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._task: asyncio.Task[R] | None = None
        self._coro: Coroutine[Any, Any, R] | None = None

    def submit(self, coro: Coroutine[Any, Any, R]) -> None:
        """Start ``coro`` on the loop; the caller's context variables travel with it."""
        self._coro = coro
        self.loop.call_soon_threadsafe(self._start, contextvars.copy_context())

    def _start(self, context: contextvars.Context) -> None:
        coro, self._coro = self._coro, None
        if coro is None:  # cancelled before it started
            return
        self._task = self.loop.create_task(coro, context=context)
        self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[R]) -> None:
        if task.cancelled():
            self.outcome.cancel()
        elif (exc := task.exception()) is not None:
            self.outcome.set_exception(exc)
        else:
            self.outcome.set_result(task.result())

    def _cancel(self) -> None:
        # Runs on the loop after ``_start`` if that was scheduled (call_soon_threadsafe keeps
        # order); if an interrupt came before it was, the coroutine is dropped unstarted.
        if self._task is not None:
            self._task.cancel()
            return
        coro, self._coro = self._coro, None
        if coro is not None:
            coro.close()
        self.outcome.cancel()

    def cancel_and_wait(self) -> None:
        """Cancel the task and wait (up to CANCEL_GRACE) until it has finished unwinding."""
        if self.outcome.done():
            return
        self.loop.call_soon_threadsafe(self._cancel)
        # Not concurrent.futures.wait(): it never sees a future cancelled this way as done.
        with contextlib.suppress(concurrent.futures.CancelledError, TimeoutError):
            self.outcome.exception(CANCEL_GRACE)
        if not self.outcome.done():
            warnings.warn(
                f"a cancelled symphony_nb operation did not stop within {CANCEL_GRACE} s "
                "(is it blocked in synchronous code?); it keeps running in the background",
                RuntimeWarning,
                stacklevel=4,
            )


def _run_in_thread(coro: Coroutine[Any, Any, R], timeout: float | None) -> R:
    if in_loop_thread():
        coro.close()
        raise SyncUsageError(
            "a sync facade was called from inside the loop that runs symphony_nb's async work; "
            "use 'await' on the async method there instead"
        )
    job: _Job[R] = _Job(_loop_thread())
    try:
        job.submit(coro)
        return job.outcome.result(timeout)
    except BaseException as exc:
        if job.outcome.done():  # the operation's own outcome, not an interruption
            raise
        job.cancel_and_wait()
        if isinstance(exc, TimeoutError):
            raise _timed_out(timeout) from None
        raise


def _timed_out(timeout: float | None) -> TimeoutError:
    return TimeoutError(f"the operation did not finish within {timeout} s and was cancelled")


# ---------------------------------------------------------------------- nested mode


def _own_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_own_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _own_loops.loop = loop
        atexit.register(loop.close)
    return loop


async def _bounded(coro: Coroutine[Any, Any, R], timeout: float) -> R:
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await coro
    except TimeoutError:
        if scope.expired():
            raise _timed_out(timeout) from None
        raise


@contextlib.contextmanager
def _sigint_cancels(task: asyncio.Task[Any]) -> Iterator[list[int]]:
    """While ``task`` runs on the main thread's loop, Ctrl-C cancels it (as ``asyncio.run`` does).

    The default handler would raise KeyboardInterrupt wherever the loop happens to be, possibly
    inside another task's callback (the kernel's own message handling), which is then lost. A
    second Ctrl-C still raises at once. Yields the list of signals received.
    """
    received: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield received  # someone else handles Ctrl-C here: leave it to them
        return

    def on_sigint(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) > 1 or task.done():
            raise KeyboardInterrupt
        task.cancel()
        task.get_loop().call_soon_threadsafe(lambda: None)  # wake the selector

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_nested(coro: Coroutine[Any, Any, R], timeout: float | None) -> R:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = _own_loop()
    _import_nest_asyncio().apply(loop)
    task = loop.create_task(coro if timeout is None else _bounded(coro, timeout))
    with _sigint_cancels(task) as interrupts:
        try:
            result = loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupts:
                raise KeyboardInterrupt from None
            raise
        except BaseException:
            _unwind(loop, task)
            raise
    if interrupts:  # the operation finished despite the interrupt; still report it
        raise KeyboardInterrupt
    return result


def _unwind(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` if it still runs and let it finish unwinding (up to CANCEL_GRACE)."""
    if task.done():
        return
    task.cancel()
    try:
        loop.run_until_complete(asyncio.wait([task], timeout=CANCEL_GRACE))
    finally:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as lost


# ---------------------------------------------------------------------- the facade


def run_sync(coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
    """Run ``coro`` to completion from sync code and return its result.

    ``timeout`` (seconds) cancels it and raises :class:`TimeoutError`. A KeyboardInterrupt
    (kernel interrupt) cancels it too, and waits for the cancellation to unwind before
    re-raising. Called from inside the private loop it raises :class:`SyncUsageError`.
    Warnings the operation issues (such as :class:`CorruptEntityWarning`) are issued again
    here, in the calling thread, pointing at the caller's line.
    """
    with WarningsToCaller():
        if _mode == "nested":
            return _run_nested(coro, timeout)
        return _run_in_thread(coro, timeout)


async def _next(agen: AsyncIterator[R]) -> R:
    return await agen.__anext__()


def sync_iterator(agen: AsyncIterator[R], timeout: float | None = None) -> Iterator[R]:
    """Iterate over ``agen`` from sync code, each step run with :func:`run_sync`.

    ``timeout`` bounds each step; leaving the loop early closes ``agen``.
    """
    try:
        while True:
            try:
                yield run_sync(_next(agen), timeout)
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            if in_loop_thread() and _loop is not None:
                # Collected on the private loop itself, which must not block on itself.
                _loop.create_task(aclose())
            else:
                run_sync(aclose())


def _sync_signature(signature: inspect.Signature, is_agen: bool) -> inspect.Signature:
    params = list(signature.parameters.values())
    if not any(p.name == "timeout" for p in params):
        timeout = inspect.Parameter(
            "timeout", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="float | None"
        )
        at = len(params) - 1 if params and params[-1].kind is params[-1].VAR_KEYWORD else None
        params.insert(len(params) if at is None else at, timeout)
    returns = signature.return_annotation
    if is_agen and isinstance(returns, str) and returns.startswith("AsyncIterator["):
        returns = returns.removeprefix("Async")
    return signature.replace(parameters=params, return_annotation=returns)


def syncify(method: Callable[..., Any]) -> Callable[..., Any]:
    """A blocking version of a bound coroutine (or async generator) method.

    The result keeps the method's name, docstring and signature, plus a keyword-only
    ``timeout`` in seconds; an async generator becomes a plain iterator.
    """
    is_agen = inspect.isasyncgenfunction(method)
    takes_timeout = "timeout" in inspect.signature(method).parameters

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        timeout = kwargs.get("timeout") if takes_timeout else kwargs.pop("timeout", None)
        result = method(*args, **kwargs)
        if is_agen:
            return sync_iterator(result, timeout)
        return run_sync(result, timeout)

    call.__signature__ = _sync_signature(inspect.signature(method), is_agen)  # type: ignore[attr-defined]
    return call


class SyncFacade(Generic[TargetT]):
    """Blocking access to the async methods of ``target``; other attributes pass through.

    ``facade.method(...)`` runs ``await target.method(...)`` to completion (see
    :func:`run_sync`) and accepts an extra keyword-only ``timeout`` in seconds.
    """

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
