"""SQLite connections and threads for :class:`~symphony_nb.backends.sqlite.SQLiteRepository`.

Threading model (each sqlite3 connection is only ever used by one thread at a time):

* Writes, scans and counts run in one daemon worker thread per open repository, on the
  writer connection that this thread creates and alone uses. A write may wait for another
  process's lock (busy timeout), so it must not run on an event loop.
* Point reads run directly on the calling thread, on a connection private to that thread
  (``threading.local``). In WAL mode a reader never waits for writers and sees the last
  committed state; each read is one autocommit statement run to completion, so no read
  transaction stays open. A per-connection lock only lets ``close()`` from another thread
  wait for a read in progress.
* The worker is a daemon, so a program that never calls ``close()`` still exits; its
  connections are then released by the operating system, and WAL keeps the file consistent.
* A database this process may not write is opened read-only (``mode=ro``): reads work as
  usual, writes are refused. With no writer open, its reads go to a snapshot of the file
  through the worker (see :func:`connect_read_only`).
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from .._errors import StorageError
from ..stores import Changed, ChangeFeed

R = TypeVar("R")
MEMORY = ":memory:"


def translate(exc: sqlite3.Error, where: str, timeout: float) -> StorageError:
    """A :class:`StorageError` that says what went wrong with the database at ``where``."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StorageError(
            f"SQLite database {where} stayed locked by another connection for more than "
            f"{timeout} s ({exc}); retry, or pass a larger timeout="
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return StorageError(f"cannot open SQLite database {where}: {exc}")
    if name.startswith("SQLITE_NOTADB"):
        return StorageError(f"cannot open {where}: it is not an SQLite database ({exc})")
    if name.startswith("SQLITE_READONLY"):
        return read_only_error(where, str(exc))
    if name.startswith("SQLITE_CORRUPT"):
        return StorageError(f"SQLite database {where} is damaged ({exc}); restore a backup")
    if isinstance(exc, sqlite3.ProgrammingError):
        return StorageError(f"SQLite database {where} was closed while in use ({exc})")
    return StorageError(f"SQLite error on {where}: {exc}")


def read_only_error(where: str, detail: str) -> StorageError:
    """The error of a write to a database this process may only read."""
    return StorageError(
        f"SQLite database {where} is read-only for this process ({detail}): it can be read "
        "but not written; ask its owner for write access, or copy it to a file you may write "
        "(copy_repository)"
    )


def _may_write(path: str) -> bool:
    try:
        return os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids)
    except OSError:
        return False


def may_only_read(path: str) -> bool:
    """Whether ``path`` is an existing database file that this process may not write.

    SQLite writes beside the file too (its write-ahead log), so the folder counts as well.
    """
    if path == MEMORY or not os.path.exists(path):
        return False
    return not (_may_write(path) and _may_write(os.path.dirname(path) or "."))


Stamp = tuple[int, int, int, bool]


def _stamp(path: str) -> Stamp:
    info = os.stat(path)
    return (info.st_ino, info.st_size, info.st_mtime_ns, os.path.exists(path + "-wal"))


def connect_read_only(path: str, timeout: float) -> tuple[sqlite3.Connection, Stamp | None]:
    """A connection that never writes, and the file's stamp if it is a frozen snapshot.

    A reader of a database in WAL mode shares the ``-shm`` index with the writers; with no
    writer open there is none, and a reader that may not write the folder cannot create it.
    Then the file, complete as the last writer left it, is opened ``immutable``: a snapshot
    that :func:`is_stale` tells apart from the file once anyone writes it again.
    """
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
    for _ in range(3):
        conn = _open(uri, timeout)
        try:
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            return conn, None
        except sqlite3.OperationalError as exc:
            conn.close()
            name = getattr(exc, "sqlite_errorname", "")
            if not name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
                raise
            error = exc
        stamp = _stamp(path)
        if not stamp[3]:
            return _open(uri + "&immutable=1", timeout), stamp
        # A writer opened it meanwhile: its log must be read, not skipped; try again.
    raise error


def is_stale(path: str, stamp: Stamp) -> bool:
    """Whether the file changed, or a writer opened it, since ``stamp`` was taken."""
    try:
        return _stamp(path) != stamp
    except OSError:
        return True


def _open(uri: str, timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(
        uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA query_only = ON")
    return conn


def connect(path: str, timeout: float, *, reader: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with our pragmas."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        # FULL: a commit is on disk when save() returns (WAL + NORMAL could lose the last
        # commits on power loss); it measured 170 us per commit here.
        conn.execute("PRAGMA synchronous = FULL")
        if reader:
            conn.execute("PRAGMA query_only = ON")
        else:  # a WAL grown by a bulk load is cut back to 64 MiB when the log restarts
            conn.execute(f"PRAGMA journal_size_limit = {64 * 2**20}")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the write lock before its first read.

    A deferred transaction's read-then-write loses updates or fails with "database is
    locked" under concurrent writers; ``BEGIN IMMEDIATE`` waits for the lock instead.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class WorkerClosed(Exception):
    """The worker was stopped before the call was submitted (its repository was closed)."""


class Worker:
    """A daemon thread that runs submitted calls one after another."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]]]
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopping = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[[], R], *, last: bool = False) -> concurrent.futures.Future[R]:
        """Run ``fn()`` in the worker thread; its future carries the result or error.

        ``last=True`` ends the thread after ``fn``; later submissions raise WorkerClosed.
        """
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        with self._lock:
            if self._stopping:
                raise WorkerClosed
            self._stopping = last
            self._jobs.put((future, fn))
        return future

    def _run(self) -> None:
        while True:
            future, fn = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)
            with self._lock:
                if self._stopping and self._jobs.empty():
                    return


class Session:
    """What an open repository holds: its worker, writer and per-thread reader connections."""

    def __init__(self, path: str, timeout: float, name: str) -> None:
        self.path = path
        self.timeout = timeout
        self.ready = False
        self.read_only = may_only_read(path)
        self.direct_reads = path != MEMORY
        self.worker = Worker(name)
        self._writer: sqlite3.Connection | None = None
        self._snapshot: Stamp | None = None
        self._local = threading.local()
        self._readers: list[tuple[sqlite3.Connection, threading.Lock]] = []
        self._lock = threading.Lock()
        self._closed = False

    def writer(self) -> sqlite3.Connection:
        """The worker thread's connection (call only from the worker thread).

        For a database that may only be read it never writes; if it is a snapshot (see
        :func:`connect_read_only`), it is opened afresh once the file has changed.
        """
        if self._snapshot is not None and is_stale(self.path, self._snapshot):
            self._close_writer()
            self.ready = False
        if self._writer is None:
            if self.read_only:
                self._writer, self._snapshot = connect_read_only(self.path, self.timeout)
                # Point reads on other threads would need a snapshot each; use this one.
                self.direct_reads = self._snapshot is None
            else:
                self._writer = connect(self.path, self.timeout, reader=False)
        return self._writer

    def reader(self) -> tuple[sqlite3.Connection, threading.Lock] | None:
        """The calling thread's read connection and its lock; None once closed."""
        if self._closed:
            return None
        entry: tuple[sqlite3.Connection, threading.Lock] | None = getattr(
            self._local, "entry", None
        )
        if entry is None:
            with self._lock:
                if self._closed:
                    return None
                conn = self._read_connection()
                if conn is None:
                    return None
                entry = (conn, threading.Lock())
                self._readers.append(entry)
            self._local.entry = entry
        return entry

    def _read_connection(self) -> sqlite3.Connection | None:
        if not self.read_only:
            return connect(self.path, self.timeout, reader=True)
        conn, snapshot = connect_read_only(self.path, self.timeout)
        if snapshot is None:
            return conn
        conn.close()
        self.direct_reads = False
        return None

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> concurrent.futures.Future[None]:
        """Close every connection and end the worker; the future is done when it has."""
        with self._lock:
            self._closed = True
            readers, self._readers = self._readers, []
        for conn, lock in readers:
            with lock:
                conn.close()
        return self.worker.submit(self._close_writer, last=True)

    def join(self) -> None:
        """Wait for the worker thread to end (after :meth:`close`)."""
        self.worker.thread.join()

    def abandon(self) -> None:
        """Release what can be released without waiting (for an unreferenced repository)."""
        with suppress(WorkerClosed):
            self.close()


class DataVersionFeed(ChangeFeed):
    """What others committed, from ``PRAGMA data_version`` of the calling thread's reader.

    ``data_version`` of a connection changes whenever another connection commits (our own
    writer included) and costs a few microseconds, so every poll is exact. Each thread has
    its own reader connection, so each keeps the value it saw last. ``session()`` is the
    store's open session and ``writes()`` counts the store's own writes, which are the only
    ones a private ``:memory:`` database can see.
    """

    def __init__(self, session: Callable[[], Session], writes: Callable[[], int]) -> None:
        self._session = session
        self._writes = writes
        self._seen = threading.local()

    def poll(self) -> Changed:
        session = self._session()
        state = getattr(self._seen, "state", None)
        if state is None or state[0] is not session or not session.direct_reads:
            if session.path == MEMORY:
                return self._compare_writes(session)
            state = self._state(session)
            if state is None:
                return Changed.UNKNOWN  # the worker reads a snapshot, or nothing is made yet
        try:
            with state[2]:
                version = state[1].execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.ProgrammingError:  # closed by another thread meanwhile
            self._seen.state = None
            return Changed.UNKNOWN
        except sqlite3.Error as exc:
            raise translate(exc, session.path, session.timeout) from None
        if version == state[3]:
            return Changed.NOTHING
        state[3] = version
        return Changed.EVERYTHING

    def _state(self, session: Session) -> list[Any] | None:
        """This thread's ``[session, cursor, lock, version seen]`` for polling, or None."""
        self._seen.state = None
        if not (session.ready and session.direct_reads):
            return None
        try:
            entry = session.reader()
            if entry is None:
                return None
            conn, lock = entry
            with lock:
                state = [session, conn.cursor(), lock, None]
        except sqlite3.ProgrammingError:
            return None
        self._seen.state = state
        return state

    def _compare_writes(self, session: Session) -> Changed:
        seen = getattr(self._seen, "writes", None)
        writes = (session, self._writes())
        if seen is not None and seen[0] is session and seen[1] == writes[1]:
            return Changed.NOTHING
        self._seen.writes = writes
        return Changed.EVERYTHING

    def close(self) -> None:
        self._seen = threading.local()
