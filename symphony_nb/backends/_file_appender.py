"""The writer's side of a file store's history: appending revisions before the documents land.

See :mod:`._file_revisions` for the files and the rule that makes a kill at any point safe.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .._errors import CorruptEntityError
from ..stores import Head, StoredRevision, head_of
from ._file_revisions import IsLive, decode, encode, history_name, keep, maybe, read, tail

_FILE_FLAGS = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FLAGS = _FILE_FLAGS | os.O_CREAT | os.O_EXCL
_T = TypeVar("_T")

_CHUNK = 32  # ids one worker appends to in a row

Plan = Callable[[Head | None], Sequence[StoredRevision]]
"""The revisions to append for one id, given the head of its history."""


class _Workers:
    """This process's few threads that append to history files while the writer writes
    its documents: their file creations and syncs run beside the writer's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, call: Callable[..., _T], *args: Any) -> Future[_T]:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(4, thread_name_prefix="symphony-nb-history")
            return self._pool.submit(call, *args)

    def forget(self) -> None:
        """In a forked child, which has none of its parent's threads."""
        self._lock = threading.Lock()
        self._pool = None


_WORKERS = _Workers()
os.register_at_fork(after_in_child=_WORKERS.forget)


@dataclass(slots=True)
class _Appended:
    """What one worker appended: each id's committed size before (0: it made the file)."""

    sizes: dict[str, int] = field(default_factory=dict)
    created: bool = False
    error: BaseException | None = None


class Appender:
    """The history files one write appends to, under the store's writer lock.

    :meth:`start` hands the ids the write changes to worker threads, which open each id's
    history (learning its head, and removing or committing what a killed writer left),
    append the revisions its plan makes of that head (the last line pending) and sync
    them. :meth:`synced` waits for that: call it before any document is replaced. Then
    :meth:`commit` the ids whose document landed; :meth:`close` rolls back the others.
    """

    def __init__(self, folder: int, where: str, is_live: IsLive) -> None:
        self._folder = folder
        self._where = where
        self._is_live = is_live
        self._sizes: dict[str, int] = {}  # id -> its committed bytes before this write
        self._running: list[Future[_Appended]] = []

    def start(self, plans: Sequence[tuple[str, Plan]]) -> None:
        """Append what ``plans`` (``(id, plan)``) make, on worker threads; a single id is
        appended here and only synced on one, so its sync overlaps the writer's own."""
        if len(plans) == 1:
            done = _Appended()
            fds: list[int] = []
            try:
                fd = self._open(*plans[0], done)
                fds += [] if fd is None else [fd]
            except BaseException as exc:  # handed on to synced()
                done.error = exc
            self._running.append(_WORKERS.submit(_sync, done, fds))
            return
        for begin in range(0, len(plans), _CHUNK):
            chunk = plans[begin : begin + _CHUNK]
            self._running.append(_WORKERS.submit(self._append, chunk))

    def synced(self) -> None:
        """Wait until every revision started is on disk; raise what a worker met (OSError
        if a file could not be written or synced)."""
        failed, created = self._wait()
        if failed is not None:
            raise failed
        if created:  # new history files: their names must last too
            os.fsync(self._folder)

    def _wait(self) -> tuple[BaseException | None, bool]:
        """Wait for every worker; the first error one met, and whether any made a file."""
        failed: BaseException | None = None
        created = False
        for future in self._running:
            done = future.result()  # never raises: a worker hands its error on in ``done``
            self._sizes.update(done.sizes)
            created |= done.created
            failed = failed or done.error
        self._running = []
        return failed, created

    def _append(self, plans: Sequence[tuple[str, Plan]]) -> _Appended:
        done = _Appended()
        fds: list[int] = []
        try:
            for entity_id, plan in plans:
                fd = self._open(entity_id, plan, done)
                fds += [] if fd is None else [fd]
        except BaseException as exc:  # handed on to synced(), and rolled back
            done.error = exc
        return _sync(done, fds)

    def _open(self, entity_id: str, plan: Plan, done: _Appended) -> int | None:
        """Append ``plan``'s revisions to the history of ``entity_id``; the open file, or
        None if there were none."""
        name = history_name(entity_id)
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self._folder)
            created = False
        except FileNotFoundError:
            fd = os.open(name, _NEW_FLAGS, 0o600, dir_fd=self._folder)
            done.sizes[entity_id] = 0  # rolled back by removing it
            created = done.created = True
        try:
            size, head = (0, None) if created else self._resolve(entity_id, name, fd)
            revisions = plan(head)
            if revisions:
                done.sizes[entity_id] = size
                _write_all(fd, b"\n".join(encode(revision) for revision in revisions))
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if created:
            del done.sizes[entity_id]
            os.unlink(name, dir_fd=self._folder)
        return None

    def _resolve(self, entity_id: str, name: str, fd: int) -> tuple[int, Head | None]:
        """The committed size and head of an open history file, with what a killed writer
        left at its end committed (its document landed) or cut off (it did not)."""
        size = os.fstat(fd).st_size
        committed, last, pending = tail(fd, size)
        head = None if last is None else self._head(entity_id, name, last)
        if pending:
            revision = maybe(entity_id, pending)
            if revision is not None and self._is_live(revision):
                _write_all(fd, b"\n")
                return size + 1, head_of(revision)
            os.ftruncate(fd, committed)
        return committed, head

    def _head(self, entity_id: str, name: str, line: bytes) -> Head:
        try:
            return head_of(decode(entity_id, line))
        except ValueError as exc:
            raise CorruptEntityError(
                f"{self._where}/{name}", f"its last line: {exc}; move the file away to go on"
            ) from None

    def commit(self, ids: Iterable[str]) -> None:
        """Mark the revisions of ``ids`` committed: their documents are in place."""
        for entity_id in ids:
            if self._sizes.pop(entity_id, None) is None:
                continue
            with suppress(OSError):  # left pending, it still counts; the next writer commits it
                fd = os.open(history_name(entity_id), _FILE_FLAGS, dir_fd=self._folder)
                try:
                    _write_all(fd, b"\n")
                finally:
                    os.close(fd)

    def trim(self, ids: Iterable[str], keep_last: int) -> None:
        """Keep only the last ``keep_last`` revisions of each of ``ids`` (all committed)."""
        for entity_id in ids:
            name = history_name(entity_id)
            with suppress(OSError):  # kept until this id's next write trims it
                lines = (read(self._folder, name) or b"").rstrip(b"\n").split(b"\n")
                if len(lines) > keep_last:
                    keep(self._folder, name, lines[len(lines) - keep_last :])

    def close(self) -> None:
        """Roll back what was appended for the ids not committed."""
        self._wait()  # no worker may still be writing
        for entity_id, size in self._sizes.items():
            name = history_name(entity_id)
            with suppress(OSError):  # else a trace, which readers skip and writers remove
                if size == 0:
                    os.unlink(name, dir_fd=self._folder)
                    continue
                fd = os.open(name, _FILE_FLAGS, dir_fd=self._folder)
                try:
                    os.ftruncate(fd, size)
                finally:
                    os.close(fd)
        self._sizes.clear()


def _sync(done: _Appended, fds: Sequence[int]) -> _Appended:
    """Sync and close ``fds``, unless appending to them already failed."""
    try:
        if done.error is None:
            for fd in fds:
                os.fsync(fd)
    except BaseException as exc:
        done.error = exc
    finally:
        for fd in fds:
            os.close(fd)
    return done


@contextmanager
def appending(folder: int, where: str, is_live: IsLive) -> Iterator[Appender]:
    """An :class:`Appender` on the open history ``folder``, closed afterwards."""
    appender = Appender(folder, where, is_live)
    try:
        yield appender
    finally:
        appender.close()


def sync_files(folder: int, names: Sequence[str]) -> None:
    """Sync the files ``names`` of the open ``folder`` on the worker threads, side by side;
    OSError if one could not be."""
    running = [
        _WORKERS.submit(_sync_names, folder, names[begin : begin + _CHUNK])
        for begin in range(0, len(names), _CHUNK)
    ]
    failed: OSError | None = None
    for future in running:
        try:
            future.result()
        except OSError as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


def _sync_names(folder: int, names: Sequence[str]) -> None:
    for name in names:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
