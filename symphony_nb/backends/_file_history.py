"""The history of a file store: what :class:`FileStore` does with history on.

Revisions live in the model folder's ``.history`` folder, one file per entity (see
:mod:`._file_revisions`); every write appends its revisions, synced, before its documents
land (see :mod:`._file_appender`). The folder is made with a baseline of every stored
document the first time a store with history uses it (built under a temp name and renamed,
so it is there whole or not at all). Everything here runs on a worker thread, under the
store's writer lock where it writes; readers take no lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .._errors import CorruptEntityError, StorageError
from .._filters import has_long_digits
from .._ids import id_to_filename
from ..stores import (
    Condition,
    Counted,
    Document,
    Head,
    Provenance,
    Query,
    ReadOnlyView,
    Record,
    Selection,
    Store,
    StoredRevision,
    apply_query,
    baseline,
    matches,
    needs_baseline,
    needs_exact,
    parse_document,
    plan_removal,
    plan_revisions,
    plan_writes,
)
from . import _file_revisions as files
from ._file_appender import Appender, appending, sync_files
from ._file_changes import changing
from ._file_revisions import HISTORY_NAME, TEMP_PREFIX, IsLive, Rows, history_name

if TYPE_CHECKING:
    from .filesystem import FileStore

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
Found = list[tuple[bytes, StoredRevision]]


class FileHistory:
    """The history folder of one :class:`FileStore`, and every history call on it."""

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.path = store.path / HISTORY_NAME
        self._turned_on: Provenance | None = None  # until the folder is found or made

    def turn_on(self, stamp: Provenance) -> None:
        """History was turned on at ``stamp``: a folder made later keeps its baselines then."""
        self._turned_on = stamp

    # ------------------------------------------------------------------ the folder

    def _open(self, folder: int) -> int | None:
        """The history folder in the open model ``folder``, open; None where there is none."""
        try:
            return os.open(HISTORY_NAME, _DIR_FLAGS, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(
                f"cannot open {self.path} ({exc.strerror or exc}); "
                "a symbolic link there is never followed"
            ) from None

    def _made(self, folder: int, stamp: Provenance) -> int:
        """The history folder, open; made first (writer lock held) if there is none."""
        found = self._open(folder)
        if found is None:
            self._start(folder, self._turned_on or stamp)
            found = self._open(folder)
        self._turned_on = None
        if found is None:
            raise StorageError(f"{self.path} vanished as it was made")
        return found

    def _start(self, folder: int, stamp: Provenance) -> None:
        """Make the history folder with a baseline of every stored document."""
        temp = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            os.mkdir(temp, 0o700, dir_fd=folder)
            made = os.open(temp, _DIR_FLAGS, dir_fd=folder)
            try:
                names = []
                for entity_id, raw, doc in self.store._entries(folder, exact=True):
                    if not isinstance(doc, dict):
                        continue  # no document: its history starts at its next write
                    version = doc.get(self.store._version_key)
                    version = version if isinstance(version, int) else None
                    text = raw.decode(errors="replace")  # it parsed: it is UTF-8
                    line = files.encode(baseline(entity_id, version, text, None, stamp))
                    names.append(history_name(entity_id))
                    files.write_file(made, names[-1], line + b"\n", replace=False, sync=False)
                sync_files(made, names)
                os.fsync(made)
            finally:
                os.close(made)
            os.rename(temp, HISTORY_NAME, src_dir_fd=folder, dst_dir_fd=folder)
            os.fsync(folder)
        except OSError as exc:
            with suppress(OSError):
                files.remove_tree(folder, temp)
            raise StorageError(
                f"cannot start the history in {self.path} ({exc.strerror or exc}); "
                "nothing was changed"
            ) from None

    @contextmanager
    def _reading(self) -> Iterator[tuple[int, int] | None]:
        """The model folder and the history folder, open to read; None without history.

        History turned on and not started yet is started here, if this process may write.
        """
        with self.store._folder() as folder:
            kept = None if folder is None else self._open(folder)
            stamp = self._turned_on
            if folder is not None and kept is None and stamp is not None:
                with suppress(StorageError), self.store._writer_lock(folder):
                    kept = self._made(folder, stamp)
            if folder is None or kept is None:
                yield None
                return
            try:
                yield folder, kept
            except StorageError:
                raise
            except OSError as exc:
                raise StorageError(f"cannot read {self.path}: {exc.strerror or exc}") from None
            finally:
                os.close(kept)

    @contextmanager
    def _appending(self, folder: int, stamp: Provenance) -> Iterator[Appender]:
        kept = self._made(folder, stamp)
        try:
            with appending(kept, str(self.path), self._live(folder)) as appender:
                yield appender
        finally:
            os.close(kept)

    def remove_leftovers(self, folder: int) -> None:
        """Remove temp files a killed rewrite left (writer lock held)."""
        kept = self._open(folder)
        if kept is not None:
            try:
                for name in os.listdir(kept):
                    if name.startswith(TEMP_PREFIX):
                        os.unlink(name, dir_fd=kept)
            finally:
                os.close(kept)

    def _live(self, folder: int) -> IsLive:
        """Whether the live state in the open ``folder`` is what a pending revision says."""

        def is_live(revision: StoredRevision) -> bool:
            try:
                raw = self.store._read(folder, id_to_filename(revision.id))
                if revision.json is None:
                    return raw is None
                return raw is not None and raw == self.store.file_bytes(revision.json)
            except ValueError:  # a symbolic link there, or a document that is no JSON
                return False

        return is_live

    def _stored(
        self, folder: int, entity_id: str, strict: bool
    ) -> tuple[bool, bytes | None, int | None]:
        """Whether ``entity_id`` is stored, its document (None if it is none) and version;
        ``strict`` raises CorruptEntityError for a file that is no document."""
        try:
            raw = self.store._read(folder, id_to_filename(entity_id))
            if raw is None:
                return False, None, None
            return True, raw, self.store._version_of(entity_id, raw)
        except CorruptEntityError:
            if strict:
                raise
            return True, None, None

    # ------------------------------------------------------------------ writes

    def write(self, records: Sequence[Record], create: bool, stamp: Provenance) -> list[bool]:
        """:meth:`FileStore.write` with history: the revisions land before the documents."""
        store = self.store
        with store._locked_folder() as folder:
            stored: dict[str, int | None] = {}
            raws: dict[str, bytes] = {}
            for record in records:
                strict = record.expected is not None or not create
                exists, raw, version = self._stored(folder, record.id, strict)
                if exists:
                    stored[record.id] = version
                if raw is not None:
                    raws[record.id] = raw
            written = plan_writes(records, stored, create=create)
            todo = [record for record, write in zip(records, written, strict=True) if write]
            if not todo:
                return written

            def plan(record: Record, head: Head | None) -> list[StoredRevision]:
                heads = {} if head is None else {record.id: head}
                baselines = {}
                if record.id in raws and needs_baseline(record.id, stored, heads):
                    baselines[record.id] = raws[record.id].decode()
                return plan_revisions([record], [True], stored, heads, stamp, baselines)

            with self._appending(folder, stamp) as appender:
                appender.start([(record.id, partial(plan, record)) for record in todo])
                with changing(folder, str(store.path)):
                    try:
                        store._replace_files(folder, todo, appender.synced)
                    except StorageError as exc:
                        appender.commit(exc.written)
                        raise
                appender.commit(record.id for record in todo)
                self._trim(appender, [record.id for record in todo])
            return written

    def remove(self, entity_id: str, stamp: Provenance) -> bool:
        """:meth:`FileStore.remove` with history: the delete lands before the file goes."""
        store = self.store
        with store._locked_folder() as folder:
            exists, raw, version = self._stored(folder, entity_id, strict=False)
            if not exists:
                return False

            def plan(head: Head | None) -> list[StoredRevision]:
                heads = {} if head is None else {entity_id: head}
                needed = raw is not None and needs_baseline(entity_id, {entity_id: version}, heads)
                document = raw.decode() if needed and raw is not None else None
                return plan_removal(entity_id, version, head, stamp, document)

            with self._appending(folder, stamp) as appender:
                try:
                    appender.start([(entity_id, plan)])
                    appender.synced()
                except StorageError:
                    raise
                except OSError as exc:
                    raise StorageError(
                        f"could not write the history in {self.path} ({exc.strerror or exc}); "
                        "nothing was changed"
                    ) from None
                with changing(folder, str(store.path)):
                    try:
                        removed = store._unlink(folder, entity_id)
                    except StorageError:
                        appender.commit([entity_id])  # the file is gone, its removal unsynced
                        raise
                if removed:
                    appender.commit([entity_id])
                    self._trim(appender, [entity_id])
                return removed

    def _trim(self, appender: Appender, ids: Sequence[str]) -> None:
        keep_last = self.store.kept()
        if keep_last is not None and keep_last is not False:
            appender.trim(ids, keep_last)

    # ------------------------------------------------------------------ reads

    def revisions(self, entity_id: str) -> list[StoredRevision]:
        """Every revision of ``entity_id``, oldest first."""
        with self._reading() as opened:
            if opened is None:
                return []
            folder, kept = opened
            name = history_name(entity_id)
            data = files.read(kept, name)
            if data is None:
                return []
            return files.revisions(entity_id, data, f"{self.path}/{name}", self._live(folder))

    def page(self, after: tuple[str, int] | None, limit: int) -> list[StoredRevision]:
        """Up to ``limit`` revisions of every id after ``after``, in ``(id, version)`` order."""
        with self._reading() as opened:
            if opened is None:
                return []
            folder, kept = opened
            is_live = self._live(folder)
            named = ((files.history_id(name), name) for name in os.listdir(kept))
            found: list[StoredRevision] = []
            for entity_id, name in sorted((key, name) for key, name in named if key is not None):
                if after is not None and entity_id < after[0]:
                    continue
                data = files.read(kept, name)
                if data is None:
                    continue  # purged meanwhile
                for revision in files.revisions(entity_id, data, f"{self.path}/{name}", is_live):
                    if after is None or (entity_id, revision.version) > after:
                        found.append(revision)
                if len(found) >= limit:
                    return found[:limit]
            return found

    def as_of(self, when: datetime) -> Store:
        """A read-only view of the collection at ``when``."""
        past = _Past(self.store.model, partial(self._rows, when), partial(self._one, when))
        return ReadOnlyView(past, f"{self.store.describe()} as of {when.isoformat()}")

    def _rows(self, when: datetime) -> Rows:
        with self._reading() as opened:
            if opened is None:
                return {}
            folder, kept = opened
            return files.past_rows(kept, str(self.path), when, self._live(folder))

    def _one(self, when: datetime, entity_id: str) -> Document | None:
        with self._reading() as opened:
            if opened is None:
                return None
            folder, kept = opened
            name = history_name(entity_id)
            data = files.read(kept, name)
            if data is None:
                return None
            where = f"{self.path}/{name}"
            found = files.latest(entity_id, data, where, self._live(folder), when)
            return None if found is None else found.json

    # ------------------------------------------------------------------ retention, erasure

    def prune(self, keep_last: int | None, older_than: datetime | None) -> int:
        """Remove the revisions :func:`to_prune` names; return how many went."""

        def prune(found: Found) -> tuple[list[bytes], int] | None:
            lines = files.prune_lines(found, keep_last=keep_last, older_than=older_than)
            return None if lines is None else (lines, len(found) - len(lines))

        return self._edit(None, prune, "prune", "removed")

    def rewrite(self, changes: Sequence[tuple[StoredRevision, Document]]) -> int:
        """Put each new document in place of its revision's, where that is still the one
        given; how many. Each history file is replaced whole (through a rename)."""
        wanted: dict[tuple[str, int, Document], Document] = {
            (old.id, old.version, old.json): new for old, new in changes if old.json is not None
        }

        def rewrite(found: Found) -> tuple[list[bytes], int] | None:
            lines: list[bytes] = []
            changed = 0
            for line, revision in found:
                doc = revision.json
                fresh = None if doc is None else wanted.get((revision.id, revision.version, doc))
                if fresh is None:
                    lines.append(line)
                else:
                    lines.append(files.encode(dataclasses.replace(revision, json=fresh)))
                    changed += 1
            return (lines, changed) if changed else None

        ids = sorted({key for key, _, _ in wanted})
        return self._edit(
            [history_name(key) for key in ids], rewrite, "rewrite revisions in", "rewritten"
        )

    def _edit(
        self,
        names: Sequence[str] | None,
        edit: Callable[[Found], tuple[list[bytes], int] | None],
        doing: str,
        done: str,
    ) -> int:
        """Replace each history file ``names`` names (None: every one) with the lines
        ``edit`` makes of its revisions, where it makes any; the revisions they change."""
        changed = 0
        with self.store._locked_folder() as folder:
            kept = self._open(folder)
            if kept is None:
                return 0
            try:
                is_live = self._live(folder)
                for name in os.listdir(kept) if names is None else names:
                    entity_id = files.history_id(name)
                    data = None if entity_id is None else files.read(kept, name)
                    if entity_id is None or data is None:
                        continue
                    found = files.parse(entity_id, data, f"{self.path}/{name}", is_live)
                    edited = edit(found)
                    if edited is not None:
                        files.keep(kept, name, edited[0])
                        changed += edited[1]
                if changed:
                    os.fsync(kept)
            except OSError as exc:
                raise StorageError(
                    f"could not {doing} {self.path} ({exc.strerror or exc}); "
                    f"{changed} revisions were {done} before the error"
                ) from None
            finally:
                os.close(kept)
        return changed

    def purge(self, entity_id: str) -> int:
        """Remove the document and history of ``entity_id``; how many records went.

        The history goes first: a kill between leaves a document that no revision records,
        as a write without history does, never revisions of a document that is gone.
        """
        store = self.store
        with store._locked_folder() as folder:
            kept = self._open(folder)
            count = 0
            if kept is not None:
                name = history_name(entity_id)
                try:
                    data = files.read(kept, name)
                    if data is not None:
                        where = f"{self.path}/{name}"
                        try:
                            count = len(files.revisions(entity_id, data, where, self._live(folder)))
                        except CorruptEntityError:
                            count = data.count(b"\n")
                        os.unlink(name, dir_fd=kept)
                        os.fsync(kept)
                except OSError as exc:
                    raise StorageError(
                        f"could not purge {entity_id!r} from {self.path} "
                        f"({exc.strerror or exc}); nothing was removed"
                    ) from None
                finally:
                    os.close(kept)
            with changing(folder, str(store.path)):
                return count + store._unlink(folder, entity_id)


class _Past(Store):
    """The collection as it stood at one instant, read from its history when first asked.

    ``load()`` reads every id's document then (on a worker thread); ``one(id)`` reads a
    single id's, for a ``get`` before that. Queries have the file store's semantics: the
    shared filter evaluation, and history that does not read reported as corrupt documents.
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

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
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
