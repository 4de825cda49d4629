"""The change marker of a file store: how a reader learns, in one ``pread``, that files changed.

Every writer, holding the store's writer lock, counts a number in ``<folder>/.changes`` up
to odd before it replaces or removes entity files and up to even after (a sequence lock). A
reader that sees another value than before drops what it cached; one that sees an odd value
(a write under way, or a writer killed mid-write) caches nothing until it is even again.
Reopening the store repairs the marker a killed writer left odd.

The folder's own stamp is part of what a reader compares, so files added, removed or
replaced by other programs (as editors save) are noticed too, to the resolution of the
folder's timestamp; a file another program rewrites in place is not.
"""

from __future__ import annotations

import os
from contextlib import suppress

from .._errors import StorageError
from ..stores import Changed, ChangeFeed

MARKER_NAME = ".changes"
_WIDTH = 20
_MARKER_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parse(raw: bytes) -> int | None:
    text = raw.strip()
    return int(text) if text.isdigit() else None


def _count(folder: int, *, odd: bool) -> None:
    """Move the marker in ``folder`` (open, writer lock held) to the next odd or even value."""
    fd = os.open(MARKER_NAME, _MARKER_FLAGS, 0o600, dir_fd=folder)
    try:
        value = _parse(os.pread(fd, 64, 0)) or 0
        value += 1 if (value % 2 == 0) == odd else 2
        os.pwrite(fd, f"{value:0{_WIDTH}d}\n".encode(), 0)
    finally:
        os.close(fd)


def begin_change(folder: int, where: str) -> None:
    """Mark a write under way; StorageError (and no write) if the marker cannot be written."""
    try:
        _count(folder, odd=True)
    except OSError as exc:
        raise StorageError(
            f"cannot update the change marker {where}/{MARKER_NAME} ({exc.strerror or exc}); "
            "nothing was changed"
        ) from None


def end_change(folder: int) -> None:
    """Mark the write done. If that fails the marker stays odd, which readers treat safely:
    caches elsewhere read through until the next write, slower for a while but never stale."""
    with suppress(OSError):
        _count(folder, odd=False)


def repair(folder: int) -> None:
    """Under the writer lock no write is under way: an odd marker is a killed writer's."""
    try:
        fd = os.open(MARKER_NAME, _READ_FLAGS, dir_fd=folder)
    except OSError:
        return
    try:
        value = _parse(os.pread(fd, 64, 0))
    finally:
        os.close(fd)
    if value is not None and value % 2:
        end_change(folder)


class MarkerFeed(ChangeFeed):
    """Polls the marker of the model folder ``path``: a stat of the folder and a ``pread``."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._marker = os.path.join(path, MARKER_NAME)
        self._fd: int | None = None
        self._folder: tuple[int, int] | None = None
        self._seen: object = None

    def poll(self) -> Changed:
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            self._close()
            return self._compare("absent")
        except OSError:
            return Changed.UNKNOWN
        folder = (info.st_dev, info.st_ino)
        if self._fd is None or folder != self._folder:
            self._close()
            try:
                self._fd = os.open(self._marker, _READ_FLAGS)
            except FileNotFoundError:
                return self._compare((folder, info.st_mtime_ns, None))
            except OSError:
                return Changed.UNKNOWN
            self._folder = folder
        try:
            value = _parse(os.pread(self._fd, 64, 0))
        except OSError:
            self._close()
            return Changed.UNKNOWN
        if value is None or value % 2:
            self._seen = None
            return Changed.UNKNOWN
        return self._compare((folder, info.st_mtime_ns, value))

    def _compare(self, stamp: object) -> Changed:
        if stamp == self._seen:
            return Changed.NOTHING
        self._seen = stamp
        return Changed.EVERYTHING

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close()
        self._seen = None
