"""The history of a file store: one JSON-lines file per entity, appended before each change.

``<model folder>/.history/<id>.jsonl`` (the id spelled as in its document's file name) holds
the entity's revisions, oldest first, one per line::

    {"v":2,"op":"update","at":"2026-05-01T09:30:00.123456+00:00","actor":"ana","reason":null,
     "ev":2,"doc":"{\\"id\\":\\"t\\",...}"}

``v`` numbers the revision, ``ev`` is the entity version it holds, ``doc`` the document's
JSON text as it was written (a string, so that it comes back to the byte), null for a delete.

A writer, holding the store's writer lock, appends a change's revisions and syncs them
before it replaces or removes the document, leaving out the newline of the last one; once
the document is in place it adds that newline. A line that ends in a newline is committed.
A last line without one is pending: it counts only while the live state is what it
describes (the live document is its document; for a delete, there is none), which is what a
writer killed after replacing the document leaves. A pending line that does not count (the
writer was killed before the document landed, or inside the line) is a trace that readers
skip and the next writer removes; one that counts, the next writer commits. So after a kill
at any point, every entity's current document has its revision, no revision reaches beyond
it, and every history file reads.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from .._errors import CorruptEntityError
from .._filters import has_long_digits
from .._ids import filename_to_id, id_to_filename
from ..stores import (
    Condition,
    Counted,
    Document,
    Head,
    Query,
    Selection,
    Store,
    StoredRevision,
    apply_query,
    head_of,
    matches,
    needs_exact,
    parse_document,
    to_prune,
)

HISTORY_NAME = ".history"
TEMP_PREFIX = ".tmp-"
_FILE_FLAGS = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FLAGS = _FILE_FLAGS | os.O_CREAT | os.O_EXCL
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPS = ("create", "update", "delete")

_T = TypeVar("_T")

IsLive = Callable[[StoredRevision], bool]
"""Whether the live state is what a pending revision describes (see the module docstring)."""


def history_name(entity_id: str) -> str:
    """The history file name of ``entity_id`` (its document's file name, plus ``l``)."""
    return id_to_filename(entity_id) + "l"


def history_id(name: str) -> str | None:
    """The id whose history file ``name`` is, or None if it is none."""
    return filename_to_id(name[:-1]) if name.endswith(".jsonl") else None


def encode(revision: StoredRevision) -> bytes:
    """One revision as its line, without the newline."""
    doc = revision.json
    return orjson.dumps(
        {
            "v": revision.version,
            "op": revision.op,
            "at": revision.at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": revision.actor,
            "reason": revision.reason,
            "ev": revision.entity_version,
            "doc": doc.decode() if isinstance(doc, bytes) else doc,
        }
    )


def decode(entity_id: str, line: bytes) -> StoredRevision:
    """The revision a line holds; ValueError if it holds none."""
    try:
        row = orjson.loads(line)
        revision = StoredRevision(
            entity_id,
            row["v"],
            row["op"],
            datetime.fromisoformat(row["at"]),
            row["actor"],
            row["reason"],
            row["doc"],
            row["ev"],
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a revision ({exc})") from None
    if (
        not isinstance(revision.version, int)
        or revision.op not in _OPS
        or revision.at.utcoffset() is None
        or (revision.json is None) != (revision.op == "delete")
        or not isinstance(revision.json, str | None)
        or not isinstance(revision.entity_version, int | None)
        or not isinstance(revision.actor, str | None)
        or not isinstance(revision.reason, str | None)
    ):
        raise ValueError("not a revision (a field is missing or of the wrong type)")
    return revision


def parse(
    entity_id: str, data: bytes, where: str, is_live: IsLive
) -> list[tuple[bytes, StoredRevision]]:
    """Every revision ``data`` (a history file) holds, as ``(line, revision)``, oldest first.

    A pending last line counts only if ``is_live`` says so. Raises CorruptEntityError (at
    ``where``) for a committed line that holds no revision: no writer leaves one.
    """
    committed, newline, pending = data.rpartition(b"\n")
    found: list[tuple[bytes, StoredRevision]] = []
    for number, line in enumerate(committed.split(b"\n") if newline else (), 1):
        try:
            found.append((line, decode(entity_id, line)))
        except ValueError as exc:
            raise CorruptEntityError(where, f"line {number}: {exc}") from None
    if pending:
        with suppress(ValueError):
            revision = decode(entity_id, pending)
            if is_live(revision):
                found.append((pending, revision))
    return found


def revisions(entity_id: str, data: bytes, where: str, is_live: IsLive) -> list[StoredRevision]:
    """The revisions of a history file, oldest first (see :func:`parse`)."""
    return [revision for _, revision in parse(entity_id, data, where, is_live)]


def read(folder: int, name: str) -> bytes | None:
    """The bytes of ``name`` in the open ``folder``, or None if it is not there."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as file:
        return file.read()


def write_file(folder: int, name: str, data: bytes, *, replace: bool) -> None:
    """Write ``data`` as ``name`` in ``folder`` and sync it; through a temp file and a rename
    when ``replace`` (the folder itself is not synced)."""
    temp = f"{TEMP_PREFIX}{uuid.uuid4().hex}" if replace else name
    fd = os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except OSError:
        with suppress(OSError):
            os.unlink(temp, dir_fd=folder)
        raise


def keep(folder: int, name: str, lines: Sequence[bytes]) -> None:
    """Replace the history file ``name`` with ``lines`` (all committed)."""
    write_file(folder, name, b"".join(line + b"\n" for line in lines), replace=True)


def prune_lines(
    found: Sequence[tuple[bytes, StoredRevision]],
    *,
    keep_last: int | None,
    older_than: datetime | None,
) -> list[bytes] | None:
    """The lines that stay once :func:`to_prune` has spoken, or None if none goes."""
    gone = set(
        to_prune([(r.version, r.at) for _, r in found], keep_last=keep_last, older_than=older_than)
    )
    return [line for line, r in found if r.version not in gone] if gone else None


def remove_tree(folder: int, name: str) -> None:
    """Remove the file or folder (with the files in it) ``name`` in ``folder``."""
    try:
        os.unlink(name, dir_fd=folder)
        return
    except IsADirectoryError:
        pass
    except PermissionError:  # some systems refuse unlink on a folder with EPERM
        if not _is_folder(folder, name):
            raise
    inner = os.open(
        name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder
    )
    try:
        for entry in os.listdir(inner):
            os.unlink(entry, dir_fd=inner)
    finally:
        os.close(inner)
    os.rmdir(name, dir_fd=folder)


def _is_folder(folder: int, name: str) -> bool:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
    except OSError:
        return False
    os.close(fd)
    return True


# ---------------------------------------------------------------------- writing

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
        failed: BaseException | None = None
        created = False
        for future in self._running:
            done = future.result()
            self._sizes.update(done.sizes)
            created |= done.created
            failed = failed or done.error
        self._running = []
        if failed is not None:
            raise failed
        if created:  # new history files: their names must last too
            os.fsync(self._folder)

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
            fd = os.open(name, _NEW_FLAGS, 0o600, dir_fd=self._folder)
        except FileExistsError:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self._folder)
            created = False
        else:
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
        committed, last, pending = _tail(fd, size)
        head = None if last is None else self._head(entity_id, name, last)
        if pending:
            revision = _maybe(entity_id, pending)
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
        with suppress(BaseException):
            self.synced()  # no worker may still be writing
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _maybe(entity_id: str, line: bytes) -> StoredRevision | None:
    try:
        return decode(entity_id, line)
    except ValueError:
        return None


def _tail(fd: int, size: int) -> tuple[int, bytes | None, bytes]:
    """``(committed bytes, last committed line or None, pending bytes)`` of a history file,
    read from its end."""
    window = 8192
    while True:
        start = max(0, size - window)
        chunk = os.pread(fd, size - start, start)
        end = chunk.rfind(b"\n")
        if end < 0 and start > 0:
            window *= 4
            continue
        if end < 0:
            return 0, None, chunk
        begin = chunk.rfind(b"\n", 0, end)
        if begin < 0 and start > 0:
            window *= 4
            continue
        return start + end + 1, chunk[begin + 1 : end], chunk[end + 1 :]


# ---------------------------------------------------------------------- reading the past


Rows = dict[str, tuple[str, Any]]
"""id -> (document, parsed document or the CorruptEntityError that stands for it)."""


def past_rows(folder: int, where: str, when: datetime, is_live: IsLive) -> Rows:
    """The document of every id as it stood at ``when``, from the open history ``folder``."""
    rows: Rows = {}
    for name in os.listdir(folder):
        entity_id = history_id(name)
        if entity_id is None:
            continue
        data = read(folder, name)
        if data is None:
            continue
        try:
            revision = latest(entity_id, data, f"{where}/{name}", is_live, when)
        except CorruptEntityError as exc:
            rows[entity_id] = ("", exc)
            continue
        if revision is None or revision.json is None:
            continue
        text = revision.json if isinstance(revision.json, str) else revision.json.decode()
        try:
            rows[entity_id] = (text, parse_document(text))
        except ValueError as exc:
            error = CorruptEntityError(f"{where}/{name}", f"version {revision.version}: {exc}")
            rows[entity_id] = (text, error)
    return rows


def latest(
    entity_id: str, data: bytes, where: str, is_live: IsLive, when: datetime
) -> StoredRevision | None:
    """The revision of a history file that stood at ``when`` (highest version made at or
    before it), or None."""
    best: StoredRevision | None = None
    for revision in revisions(entity_id, data, where, is_live):
        if revision.at <= when and (best is None or revision.version > best.version):
            best = revision
    return best


class Past(Store):
    """The collection as it stood at one instant, read from its history when first asked.

    ``load()`` reads every id's document then (in a worker thread); ``one(id)`` reads a
    single id's, for a ``get`` before that. Queries have the file store's own semantics:
    the shared filter evaluation, and corrupt history reported as corrupt documents.
    """

    def __init__(
        self,
        model: type[BaseModel],
        load: Callable[[], Rows],
        one: Callable[[str], Document | None],
    ) -> None:
        super().__init__(model)
        self._load = load
        self._one = one
        self._rows: Rows | None = None
        self._loading = asyncio.Lock()

    async def rows(self) -> Rows:
        """Every id's document at the instant, read once."""
        async with self._loading:
            if self._rows is None:
                self._rows = await asyncio.to_thread(self._load)
        return self._rows

    async def get(self, entity_id: str) -> Document | None:
        if self._rows is None:
            return await asyncio.to_thread(self._one, entity_id)
        row = self._rows.get(entity_id)
        return None if row is None or isinstance(row[1], CorruptEntityError) else row[0]

    async def select(self, query: Query) -> Selection:
        return await asyncio.to_thread(_select, query, await self.rows())

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        return await asyncio.to_thread(_count, conditions, await self.rows())

    async def write(self, records: Any, *, create: bool) -> list[bool]:
        raise NotImplementedError  # behind a ReadOnlyView, which refuses writes

    async def remove(self, entity_id: str) -> bool:
        raise NotImplementedError  # behind a ReadOnlyView, which refuses writes


def _documents(rows: Rows, exact: bool) -> Iterator[tuple[str, Any]]:
    for key, (text, doc) in rows.items():
        if not isinstance(doc, CorruptEntityError):
            yield key, parse_document(text, exact=True) if exact and has_long_digits(text) else doc


def _broken(rows: Rows, after: str | None) -> list[tuple[str, CorruptEntityError]]:
    return sorted(
        (key, doc)
        for key, (_, doc) in rows.items()
        if isinstance(doc, CorruptEntityError) and (after is None or key > after)
    )


def _select(query: Query, rows: Rows) -> Selection:
    exact = needs_exact(query.conditions, query.order)
    ids = apply_query(query, _documents(rows, exact))
    return Selection([(key, rows[key][0]) for key in ids], _broken(rows, query.after_id))


def _count(conditions: tuple[Condition, ...], rows: Rows) -> Counted:
    docs = _documents(rows, needs_exact(conditions))
    return Counted(sum(1 for _, doc in docs if matches(conditions, doc)), _broken(rows, None))
