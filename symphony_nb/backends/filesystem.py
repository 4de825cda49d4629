"""One human-readable JSON file per entity, in a folder per model."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

import orjson
from pydantic import BaseModel

from .._cache import Cache
from .._errors import CorruptEntityError, StorageError
from .._fields import json_key
from .._ids import filename_to_id, id_to_filename
from .._keyring import Keyring
from .._repository import Repository
from .._types import T
from ..stores import (
    SCHEMA_KEY,
    ChangeFeed,
    Condition,
    Counted,
    Document,
    Query,
    Record,
    Selection,
    Store,
    StoredRevision,
    apply_query,
    count_schema_key,
    matches,
    needs_exact,
    on_schema_key,
    parse_document,
    plan_writes,
    provenance,
)
from ._file_changes import MarkerFeed, changing, repair
from ._file_history import FileHistory
from ._file_revisions import TEMP_PREFIX, remove_tree

LOCK_NAME = ".lock"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def _may_write(folder: int) -> bool:
    """Whether this process may create and remove files in the open ``folder``."""
    try:
        return os.access(".", os.W_OK | os.X_OK, dir_fd=folder, effective_ids=True)
    except NotImplementedError:  # a platform without faccessat flags: let the write tell
        return True


class FileStore(Store):
    """Stores each document as ``<directory>/<model name>/<id>.json`` (pretty-printed JSON).

    Several models can share one ``directory``. Writes are atomic and durable: a temp file in
    the same folder, fsync, rename, fsync of the folder; a crash leaves the old or the new
    version, never a torn file, and leftover temp files are removed on open. Writers in
    several processes are serialised by a lock file; readers never wait. Symbolic links are
    never followed; folders are created 0700 and files 0600. File I/O runs in worker threads.

    With history (:meth:`keep_history`), each entity's revisions are the JSON lines of
    ``<model name>/.history/<id>.jsonl``, each change's synced before its document lands, so
    that a writer killed at any point leaves every history whole (see ``_file_revisions``).
    """

    def __init__(self, model: type[BaseModel], directory: str | os.PathLike[str]) -> None:
        super().__init__(model)
        self.directory = Path(directory)
        self.path = self.directory / self.name
        self._lock = threading.Lock()
        self._marks: dict[str, tuple[tuple[int, int, int], object]] = {}
        self._opened = False
        self._history = FileHistory(self)
        info = model.model_fields.get("version")
        # The document holds the version under its JSON name (an alias, if it has one).
        self._version_key = "version" if info is None else json_key("version", info)

    def describe(self) -> str:
        return str(self.path)

    def location(self, entity_id: str) -> str:
        return str(self.path / id_to_filename(entity_id))

    def change_feed(self) -> ChangeFeed:
        return MarkerFeed(str(self.path))

    # ------------------------------------------------------------------ folder access

    @contextmanager
    def _folder(self) -> Iterator[int | None]:
        """The model folder, open for reading; None where it does not exist and cannot be made.

        That is a store we may read but not write, in which this model has nothing stored.
        """
        if not self._opened:
            self._open()
        fd = self._open_folder()
        if fd is None and self._opened:  # removed since it was opened: made again if we may
            self._opened = False
            self._open()
            fd = self._open_folder()
        if fd is None:
            yield None
            return
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_folder(self) -> int | None:
        try:
            return os.open(self.path, _DIR_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._refuse(exc) from None

    @contextmanager
    def _locked_folder(self) -> Iterator[int]:
        """The model folder, open and locked for writing; StorageError if it is read-only."""
        with self._folder() as folder:
            if folder is None:
                raise self._read_only("cannot create the folder")
            with self._writer_lock(folder):
                yield folder

    def _refuse(self, exc: OSError) -> StorageError:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
            return self._not_a_folder()
        return StorageError(f"cannot open {self.path}: {exc.strerror or exc}")

    def _not_a_folder(self) -> StorageError:
        # Folders above the model folder may be symbolic links (followed, as for any path);
        # the model folder itself never is.
        for candidate in [*reversed(self.path.parents), self.path]:
            try:
                mode = os.lstat(candidate).st_mode
                if candidate != self.path and stat.S_ISLNK(mode):
                    mode = os.stat(candidate).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                continue
            if stat.S_ISLNK(mode):
                return StorageError(
                    f"{candidate} is a symbolic link, not a real folder; symbolic links are "
                    "never followed there: replace it with a folder"
                )
            kind = "a file" if stat.S_ISREG(mode) else "not a folder"
            return StorageError(
                f"{candidate} is {kind}, where the store needs a folder: move it away or "
                "choose another storage folder"
            )
        return StorageError(f"{self.path} is not a real folder; refusing to use it")

    def _read_only(self, detail: str) -> StorageError:
        return StorageError(
            f"the store {self.path} is read-only for this process ({detail}): it can be read "
            "but not written; ask its owner for write access, or copy it to a folder you may "
            "write (copy_repository)"
        )

    def _open(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with suppress(FileExistsError):
                os.mkdir(self.path, 0o700)
        except OSError as exc:
            if exc.errno not in _READ_ONLY:
                raise self._refuse(exc) from None
            if not self.directory.is_dir():  # no store at all: a mistyped path, most likely
                raise StorageError(
                    f"cannot create the store folder {self.directory}: {exc.strerror or exc}"
                ) from None
        fd = self._open_folder()
        if fd is None:
            return  # read-only and not made yet: reads see an empty folder
        try:
            if _may_write(fd):
                self._remove_leftovers(fd)
        finally:
            os.close(fd)
        self._opened = True

    def _remove_leftovers(self, folder: int) -> None:
        # Under the writer lock no other process is between writing a temp file and renaming
        # it, so every temp file seen is a leftover of a crash. Reads never need them gone
        # (temp files are never read), so a lock or folder we may not write skips this.
        try:
            with self._writer_lock(folder):
                for name in os.listdir(folder):
                    if name.startswith(TEMP_PREFIX):
                        remove_tree(folder, name)
                self._history.remove_leftovers(folder)
                repair(folder)
        except StorageError:
            return
        except OSError as exc:
            if exc.errno not in _READ_ONLY:
                raise StorageError(
                    f"cannot remove leftover temp files in {self.path}: {exc.strerror or exc}"
                ) from None

    @contextmanager
    def _writer_lock(self, folder: int) -> Iterator[None]:
        with self._lock:
            try:
                fd = os.open(
                    LOCK_NAME,
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=folder,
                )
            except OSError as exc:
                if exc.errno in _READ_ONLY:
                    raise self._read_only(f"cannot open its lock file: {exc.strerror}") from None
                raise StorageError(
                    f"cannot open the lock file {self.path / LOCK_NAME} "
                    f"({exc.strerror or exc}); a symbolic link there is never followed"
                ) from None
            try:
                if not _may_write(folder):
                    raise self._read_only("no write permission on the folder")
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _read(self, folder: int | None, filename: str) -> bytes | None:
        if folder is None:
            return None
        try:
            fd = os.open(filename, _READ_FLAGS, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CorruptEntityError(
                    str(self.path / filename), "it is a symbolic link; not followed"
                ) from None
            raise StorageError(
                f"cannot read {self.path / filename}: {exc.strerror or exc}"
            ) from None
        with os.fdopen(fd, "rb") as file:
            return file.read()

    def _stored_version(self, folder: int, entity_id: str) -> tuple[bool, int | None]:
        data = self._read(folder, id_to_filename(entity_id))
        if data is None:
            return False, None
        return True, self._version_of(entity_id, data)

    def _version_of(self, entity_id: str, data: bytes) -> int | None:
        try:
            doc = parse_document(data, exact=True)
        except ValueError as exc:
            raise CorruptEntityError(
                self.location(entity_id), f"not valid JSON ({exc}); delete it to replace it"
            ) from None
        version = doc.get(self._version_key) if isinstance(doc, dict) else None
        return version if isinstance(version, int) else None

    # ------------------------------------------------------------------ the Store contract

    async def get(self, entity_id: str) -> bytes | None:
        return await asyncio.to_thread(self._get_sync, entity_id)

    def _get_sync(self, entity_id: str) -> bytes | None:
        with self._folder() as folder:
            return self._read(folder, id_to_filename(entity_id))

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        if self._kept is not False:
            return await asyncio.to_thread(self._history.write, records, create, provenance())
        return await asyncio.to_thread(self._write_sync, records, create)

    def _write_sync(self, records: Sequence[Record], create: bool) -> list[bool]:
        with self._locked_folder() as folder:
            stored: dict[str, int | None] = {}
            for record in records:
                if record.expected is not None or not create:  # otherwise written regardless
                    exists, version = self._stored_version(folder, record.id)
                    if exists:
                        stored[record.id] = version
            written = plan_writes(records, stored, create=create)
            todo = [record for record, write in zip(records, written, strict=True) if write]
            if todo:
                with changing(folder, str(self.path)):
                    self._replace_files(folder, todo)
            return written

    def _replace_files(
        self,
        folder: int,
        records: Sequence[Record],
        before_rename: Callable[[], None] | None = None,
    ) -> None:
        """Replace the files of ``records``; ``before_rename()``, if given, is called once
        their new versions are synced, before the first is renamed into place (an OSError
        it raises changes nothing)."""
        temps: list[str] = []
        try:
            for record in records:
                temp = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
                fd = os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=folder)
                temps.append(temp)
                with os.fdopen(fd, "wb") as file:
                    file.write(_pretty(record.json))
                    file.write(b"\n")
                    file.flush()
                    os.fsync(file.fileno())
            if before_rename is not None:
                before_rename()
        except OSError as exc:
            self._discard(folder, temps)
            raise StorageError(
                f"could not write to {self.path} ({exc.strerror or exc}); nothing was changed"
            ) from exc
        except BaseException:
            self._discard(folder, temps)
            raise
        done = 0
        try:
            for temp, record in zip(temps, records, strict=True):
                os.replace(temp, id_to_filename(record.id), src_dir_fd=folder, dst_dir_fd=folder)
                done += 1
        except OSError as exc:
            self._discard(folder, temps[done:])
            kept = [record.id for record in records[:done]]
            synced = self._sync_folder(folder) if kept else True
            raise StorageError(
                f"could not rename into {self.path} ({exc.strerror or exc}); "
                f"written before the error: {kept or 'nothing'}"
                f"{'' if synced else ' (durability after a power loss unknown)'}; "
                "the rest is unchanged",
                written=kept,
            ) from exc
        if not self._sync_folder(folder):
            written = [record.id for record in records]
            raise StorageError(
                f"wrote {written} in {self.path} but could not sync the folder: "
                "durability after a power loss is unknown",
                written=written,
            )

    @staticmethod
    def _sync_folder(folder: int) -> bool:
        try:
            os.fsync(folder)
        except OSError:
            return False
        return True

    @staticmethod
    def _discard(folder: int, temps: Sequence[str]) -> None:
        for temp in temps:
            with suppress(OSError):  # otherwise cleaned on the next open
                os.unlink(temp, dir_fd=folder)

    async def remove(self, entity_id: str) -> bool:
        if self._kept is not False:
            return await asyncio.to_thread(self._history.remove, entity_id, provenance())
        return await asyncio.to_thread(self._remove_sync, entity_id)

    def _remove_sync(self, entity_id: str) -> bool:
        with self._locked_folder() as folder, changing(folder, str(self.path)):
            return self._unlink(folder, entity_id)

    def _unlink(self, folder: int, entity_id: str) -> bool:
        try:
            os.unlink(id_to_filename(entity_id), dir_fd=folder)
        except FileNotFoundError:
            return False
        try:
            os.fsync(folder)
        except OSError as exc:
            raise StorageError(
                f"deleted {entity_id!r} but could not sync {self.path}: {exc}"
            ) from exc
        return True

    def _scan(self, exact: bool = False) -> Iterator[tuple[str, bytes, object]]:
        """Every entity file as ``(id, raw, parsed)``; ``parsed`` is an error when unusable.

        ``exact`` keeps integers beyond 64 bits exact (see ``parse_document``).
        """
        with self._folder() as folder:
            if folder is not None:
                yield from self._entries(folder, exact)

    def _entries(self, folder: int, exact: bool) -> Iterator[tuple[str, bytes, object]]:
        """:meth:`_scan` of the open ``folder``."""
        for name in sorted(os.listdir(folder)):
            if name.startswith(".") or not name.endswith(".json"):
                continue
            entity_id = filename_to_id(name)
            if entity_id is None:
                yield (
                    name,
                    b"",
                    CorruptEntityError(
                        str(self.path / name), "the file name is not a valid entity id"
                    ),
                )
                continue
            try:
                raw = self._read(folder, name)
            except CorruptEntityError as exc:
                yield entity_id, b"", exc
                continue
            if raw is None:  # deleted while scanning
                continue
            try:
                doc = parse_document(raw, exact=exact)
            except ValueError as exc:
                doc = CorruptEntityError(str(self.path / name), f"not valid JSON: {exc}")
            yield entity_id, raw, doc

    async def select(self, query: Query) -> Selection:
        return await asyncio.to_thread(self._select_sync, query)

    def _select_sync(self, query: Query) -> Selection:
        raws: dict[str, bytes] = {}
        docs: list[tuple[str, object]] = []
        broken: list[tuple[str, CorruptEntityError]] = []
        after = query.after_id
        for entity_id, raw, doc in self._scan(needs_exact(query.conditions, query.order)):
            if isinstance(doc, CorruptEntityError):
                if after is None or entity_id > after:
                    broken.append((entity_id, doc))
            else:
                raws[entity_id] = raw
                docs.append((entity_id, doc))
        ids = apply_query(query, docs)
        return Selection([(key, raws[key]) for key in ids], broken)

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        if on_schema_key(conditions):
            return await asyncio.to_thread(self._count_marks, conditions)
        return await asyncio.to_thread(self._count_sync, conditions)

    def _count_marks(self, conditions: tuple[Condition, ...]) -> Counted:
        """A count on the schema key alone, from each file's key as last read.

        A file is read again only when its inode, size or modification time changed (every
        write replaces the file, so its inode changes), so the probe every query makes stats
        the folder instead of reading it.
        """
        marks: list[object] = []
        unmarked = 0
        broken: list[tuple[str, CorruptEntityError]] = []
        seen: dict[str, tuple[tuple[int, int, int], object]] = {}
        with self._folder() as folder:
            entries = list(os.scandir(folder)) if folder is not None else []
            for entry in entries:
                name = entry.name
                if name.startswith(".") or not name.endswith(".json"):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                key = (info.st_ino, info.st_size, info.st_mtime_ns)
                cached = self._marks.get(name)
                if cached is not None and cached[0] == key:
                    mark = cached[1]
                else:
                    entity_id = filename_to_id(name)
                    try:
                        raw = None if entity_id is None else self._read(folder, name)
                        if raw is None:
                            if entity_id is not None:
                                continue  # deleted meanwhile
                            raise CorruptEntityError(
                                str(self.path / name), "the file name is not a valid entity id"
                            )
                        doc = parse_document(raw)
                    except CorruptEntityError as exc:
                        broken.append((entity_id or name, exc))
                        continue
                    except ValueError as exc:
                        error = CorruptEntityError(str(self.path / name), f"not valid JSON: {exc}")
                        broken.append((entity_id or name, error))
                        continue
                    mark = doc.get(SCHEMA_KEY) if isinstance(doc, dict) else None
                seen[name] = (key, mark)
                if mark is None:
                    unmarked += 1
                else:
                    marks.append(mark)
        self._marks = seen
        broken.sort(key=lambda item: item[0])
        return Counted(count_schema_key(conditions, marks, unmarked), broken)

    def _count_sync(self, conditions: tuple[Condition, ...]) -> Counted:
        total = 0
        broken: list[tuple[str, CorruptEntityError]] = []
        for entity_id, _, doc in self._scan(needs_exact(conditions)):
            if isinstance(doc, CorruptEntityError):
                broken.append((entity_id, doc))
            else:
                total += matches(conditions, doc)
        return Counted(total, broken)

    # ------------------------------------------------------------------ history

    def keep_history(self, keep_last: int | None) -> None:
        """Keep history from now on (see :class:`Store`), in the ``.history`` folder.

        Nothing is read or written here: the first history call makes the folder, with a
        baseline, stamped now, of every document stored, unless another store made it first.
        """
        if self._kept is False:
            self._history.turn_on(provenance())
        self._kept = keep_last

    async def revisions(self, entity_id: str, version: int | None = None) -> list[StoredRevision]:
        found = await asyncio.to_thread(self._history.revisions, entity_id)
        return found if version is None else [r for r in found if r.version == version]

    async def revision_page(
        self, after: tuple[str, int] | None, limit: int
    ) -> list[StoredRevision]:
        if self._kept is False:
            return await super().revision_page(after, limit)
        return await asyncio.to_thread(self._history.page, after, limit)

    async def rewrite_revisions(self, changes: Sequence[tuple[StoredRevision, Document]]) -> int:
        if self._kept is False:
            return await super().rewrite_revisions(changes)
        if not changes:
            return 0
        return await asyncio.to_thread(self._history.rewrite, list(changes))

    def as_of(self, when: datetime) -> Store:
        return self._history.as_of(when)

    async def prune(self, *, keep_last: int | None, older_than: datetime | None) -> int:
        return await asyncio.to_thread(self._history.prune, keep_last, older_than)

    async def purge(self, entity_id: str) -> int:
        return await asyncio.to_thread(self._history.purge, entity_id)

    @staticmethod
    def file_bytes(document: Document) -> bytes:
        """The bytes of the file that stores ``document``."""
        return _pretty(document) + b"\n"


def _pretty(text: str | bytes) -> bytes:
    """``text`` (a document) indented for people, every number kept exactly."""
    doc = parse_document(text, exact=True)
    try:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    except TypeError:  # an integer beyond 64 bits, which orjson cannot write
        return json.dumps(doc, indent=2, ensure_ascii=False).encode()


class FileSystemRepository(Repository[T]):
    """A repository of ``model`` as JSON files in ``directory`` (a :class:`FileStore`).

    Each entity is ``<directory>/<model name>/<id>.json``; writes are atomic and durable,
    writers in several processes take turns, readers never wait (see :class:`FileStore`).
    ``keyring`` encrypts secret fields (see :class:`~symphony_nb.Repository`).

    ``cache=True`` (or a :class:`~symphony_nb.Cache`) keeps documents read in memory; every
    read first checks the folder's change marker (an ``fstat`` and a ``pread``), which every
    writer counts up, so a write by any other process is seen by the next read.

    ``history=True`` (or N) keeps every change (the last N of each entity) in
    ``<model name>/.history/<id>.jsonl``, one JSON line per revision; a writer killed
    mid-write leaves no revision its document does not have, and none missing.
    """

    def __init__(
        self,
        model: type[T],
        directory: str | os.PathLike[str],
        *,
        keyring: Keyring | None = None,
        cache: bool | Cache | None = None,
        history: bool | int | None = None,
    ) -> None:
        files = FileStore(model, directory)
        super().__init__(model, files, keyring=keyring, cache=cache, history=history)
        self.directory = files.directory
        self.path = files.path

    def __repr__(self) -> str:
        return f"FileSystemRepository({self.model.__name__}, {str(self.directory)!r})"
