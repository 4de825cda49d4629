"""The history files of a file store: one JSON-lines file per entity, and how they read.

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

import os
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import orjson

from .._errors import CorruptEntityError
from .._filters import document_text
from .._ids import filename_to_id, id_to_filename
from ..stores import StoredRevision, parse_document, to_prune

HISTORY_NAME = ".history"
TEMP_PREFIX = ".tmp-"
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPS = ("create", "update", "delete")

IsLive = Callable[[StoredRevision], bool]
"""Whether the live state is what a pending revision describes (see the module docstring)."""

Rows = dict[str, tuple[str, Any]]
"""id -> (document, parsed document or the CorruptEntityError that stands for it)."""


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
            "doc": None if doc is None else document_text(doc),
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


def write_file(folder: int, name: str, data: bytes, *, replace: bool, sync: bool = True) -> None:
    """Write ``data`` as the new file ``name`` in ``folder`` and sync it (unless not
    ``sync``); with ``replace``, over the old one through a temp file and a rename (the
    folder itself is not synced)."""
    temp = f"{TEMP_PREFIX}{uuid.uuid4().hex}" if replace else name
    fd = os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            if sync:
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
    inner = os.open(name, _DIR_FLAGS, dir_fd=folder)
    try:
        for entry in os.listdir(inner):
            os.unlink(entry, dir_fd=inner)
    finally:
        os.close(inner)
    os.rmdir(name, dir_fd=folder)


def _is_folder(folder: int, name: str) -> bool:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=folder)
    except OSError:
        return False
    os.close(fd)
    return True


def maybe(entity_id: str, line: bytes) -> StoredRevision | None:
    """The revision a line holds, or None."""
    try:
        return decode(entity_id, line)
    except ValueError:
        return None


def tail(fd: int, size: int) -> tuple[int, bytes | None, bytes]:
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
        text = document_text(revision.json)
        try:
            rows[entity_id] = (text, parse_document(text))
        except ValueError as exc:
            error = CorruptEntityError(f"{where}/{name}", f"version {revision.version}: {exc}")
            rows[entity_id] = (text, error)
    return rows


def latest(
    entity_id: str, data: bytes, where: str, is_live: IsLive, when: datetime
) -> StoredRevision | None:
    """The revision of a history file that stood at ``when`` (the highest version made at
    or before it), or None.

    Only the chosen line is decoded whole: the others need their version and instant, and
    instants as writers write them compare as text.
    """
    stamp = when.astimezone(UTC).isoformat(timespec="microseconds")
    committed, newline, pending = data.rpartition(b"\n")
    best: tuple[int, bytes, int] | None = None  # (version, line, line number)
    for number, line in enumerate(committed.split(b"\n") if newline else (), 1):
        try:
            row = orjson.loads(line)
            version, at = row["v"], row["at"]
            if not isinstance(version, int):
                raise TypeError(f"its version is {version!r}")
            made = at <= stamp if _canonical(at) else datetime.fromisoformat(at) <= when
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CorruptEntityError(where, f"line {number}: not a revision ({exc})") from None
        if made and (best is None or version > best[0]):
            best = (version, line, number)
    last = maybe(entity_id, pending) if pending else None
    newer = last is not None and last.at <= when and (best is None or last.version > best[0])
    if last is not None and newer and is_live(last):
        return last
    if best is None:
        return None
    try:
        return decode(entity_id, best[1])
    except ValueError as exc:
        raise CorruptEntityError(where, f"line {best[2]}: {exc}") from None


def _canonical(at: object) -> bool:
    """Whether ``at`` is an instant as :func:`encode` writes it (UTC, to the microsecond)."""
    return isinstance(at, str) and len(at) == 32 and at.endswith("+00:00")
