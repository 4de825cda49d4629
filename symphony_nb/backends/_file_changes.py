"""The change marker of a file store: how a reader learns, in one ``pread``, that files changed.

Every writer, holding the store's writer lock, counts a number in ``<folder>/.changes`` up
to odd before it replaces or removes entity files and up to even after (a sequence lock). A
reader that sees another value than before drops what it cached; one that sees an odd value
(a write under way, or a writer killed mid-write) caches nothing until it is even again.
Reopening the store repairs the marker a killed writer left odd. A write made through a
cache tells that cache's feed the values before and after it, so that cache (which drops
what it wrote itself) keeps everything else.

The folder's own timestamp is part of what a reader compares, so files added, removed or
replaced by other programs (as editors save) are noticed too, to the resolution of that
timestamp; a file another program rewrites in place is not.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from .._changes import writing_for
from .._errors import StorageError
from ..stores import Changed, ChangeFeed

MARKER_NAME = ".changes"
_WIDTH = 20
_MARKER_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


def stamp(folder: int) -> tuple[int, int, int | None] | None:
    """What a :class:`MarkerFeed` compares for the open ``folder``: its inode and timestamp
    and the marker's value; None if it cannot be read."""
    try:
        info = os.fstat(folder)
        try:
            fd = os.open(MARKER_NAME, _READ_FLAGS, dir_fd=folder)
        except FileNotFoundError:
            return (info.st_ino, info.st_mtime_ns, None)
        try:
            return (info.st_ino, info.st_mtime_ns, _parse(os.pread(fd, 64, 0)))
        finally:
            os.close(fd)
    except OSError:
        return None


@contextmanager
def changing(folder: int, where: str) -> Iterator[None]:
    """Mark a write under way around the body (see :func:`begin_change`).

    When the write is made through a cache (``writing_for``) whose feed watches this folder,
    that feed is told the marker's value before and after, so it can tell the write from
    others' (whose writers hold the lock, so none falls between the two).
    """
    feed = writing_for.get()
    own = feed if isinstance(feed, MarkerFeed) and feed.watches(folder) else None
    before = stamp(folder) if own is not None else None
    begin_change(folder, where)
    try:
        yield
    finally:
        end_change(folder)
        if own is not None and before is not None:
            after = stamp(folder)
            if after is not None and after[2] is not None and after[2] % 2 == 0:
                own.own_change(before, after)


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
    """Polls the marker of the model folder ``path``: an ``fstat`` of the folder, a ``pread``.

    Both stay open between polls. A folder removed (and perhaps made again) shows as no
    links left on the open one; a changed folder timestamp reopens the marker too.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._folder: int | None = None
        self._marker: int | None = None
        self._mtime: int | None = None
        self._seen: object = None
        self._own: deque[tuple[object, object]] = deque(maxlen=64)
        self._own_lock = threading.Lock()

    def watches(self, folder: int) -> bool:
        """Whether the open ``folder`` is the one this feed polls."""
        try:
            mine, theirs = os.stat(self._path), os.fstat(folder)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)

    def own_change(self, before: object, after: object) -> None:
        """A write through this feed's cache moved the stamp from ``before`` to ``after``."""
        with self._own_lock:
            self._own.append((before, after))

    def poll(self) -> Changed:
        try:
            if self._folder is None:
                self._folder = os.open(self._path, _FOLDER_FLAGS)
            info = os.fstat(self._folder)
            if info.st_nlink == 0:  # removed since it was opened
                self._close()
                self._folder = os.open(self._path, _FOLDER_FLAGS)
                info = os.fstat(self._folder)
        except FileNotFoundError:
            self._close()
            return self._compare("absent")
        except OSError:
            self._close()
            return Changed.UNKNOWN
        if self._marker is None or info.st_mtime_ns != self._mtime:
            if self._marker is not None:
                os.close(self._marker)
                self._marker = None
            self._mtime = info.st_mtime_ns
            try:
                self._marker = os.open(MARKER_NAME, _READ_FLAGS, dir_fd=self._folder)
            except FileNotFoundError:
                return self._compare((info.st_ino, info.st_mtime_ns, None))
            except OSError:
                return Changed.UNKNOWN
        try:
            value = _parse(os.pread(self._marker, 64, 0))
        except OSError:
            self._close()
            return Changed.UNKNOWN
        if value is None or value % 2:
            self._seen = None
            return Changed.UNKNOWN
        return self._compare((info.st_ino, info.st_mtime_ns, value))

    def _compare(self, now: object) -> Changed:
        seen, self._seen = self._seen, now
        if now == seen:
            return Changed.NOTHING
        with self._own_lock:
            steps = dict(self._own)
        while seen in steps and seen != now:  # only the cache's own writes since the last poll
            seen = steps.pop(seen)
        return Changed.NOTHING if seen == now else Changed.EVERYTHING

    def _close(self) -> None:
        for fd in (self._marker, self._folder):
            if fd is not None:
                os.close(fd)
        self._marker = self._folder = self._mtime = None
        with self._own_lock:  # a folder made again counts its marker from the start
            self._own.clear()

    def close(self) -> None:
        self._close()
        self._seen = None
