"""The read cache: a :class:`~symphony_nb.stores.StoreLayer` that is never stale.

It keeps the documents read by id and the results of repeated ``find_all`` / ``count``
queries, and before every read asks the store's :class:`~symphony_nb.stores.ChangeFeed`
what anyone else changed. What it holds are documents, never entities: every read is
validated into a new object, so nothing a caller mutates reaches the cache or the store.

Rules that keep it from going stale:

* A write through it drops what it wrote (and every query result) once the write is done.
* A fill (a read from the store to be kept) remembers the generation it began in; any
  invalidation meanwhile, from a write here or a change reported by the feed, bumps the
  generation, and the older value is handed to its callers but never kept.
* Concurrent misses for one key on one event loop share one store read; readers that come
  after an invalidation start a read of their own. Fills of one key from two loops that
  read different documents keep neither.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from enum import Enum
from html import escape
from typing import Any, Never, TypeVar

from ._changes import writing_for
from ._errors import CorruptEntityError, InvalidArgumentError
from ._filters import Condition, Query
from .stores import Changed, Counted, Document, Record, Selection, Store, StoreLayer

__all__ = ["Cache", "CacheLayer", "CacheStats", "cache_options"]

V = TypeVar("V")
Key = tuple[str, Hashable]
DEFAULT_MAX_ENTRIES = 10_000


class Cache:
    """Options of a repository's read cache: ``cache=Cache(max_entries=..., strict=...)``.

    ``cache=True`` is ``cache=Cache()``. Reads by id and repeated ``find_all`` / ``count``
    calls are answered from memory; a write committed by anyone else is seen by the next read
    on SQLite and files, and within the notification delay on PostgreSQL.

    Args:
        max_entries: the most documents held (int >= 1, default 10,000). A cached
            ``find_all`` result counts its rows, a count counts one; the least recently used
            go first.
        strict: on PostgreSQL, check with the server on every read (one round trip) instead
            of trusting that notifications of others' commits have arrived. Other backends
            are exact without it.

    A bad value raises :class:`InvalidArgumentError` (a ``ValueError``).
    """

    __slots__ = ("max_entries", "strict")
    max_entries: int
    strict: bool

    def __init__(
        self, *, max_entries: int = DEFAULT_MAX_ENTRIES, strict: bool = False, **unknown: Never
    ) -> None:
        if unknown:
            raise InvalidArgumentError(
                f"unknown cache option(s) {sorted(unknown)}; the options are max_entries, strict"
            )
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise InvalidArgumentError(f"max_entries must be an int >= 1, got {max_entries!r}")
        if not isinstance(strict, bool):
            raise InvalidArgumentError(f"strict must be True or False, got {strict!r}")
        object.__setattr__(self, "max_entries", max_entries)
        object.__setattr__(self, "strict", strict)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Cache options cannot be changed; make a new Cache({name}=...)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cache):
            return NotImplemented
        return (self.max_entries, self.strict) == (other.max_entries, other.strict)

    def __hash__(self) -> int:
        return hash((self.max_entries, self.strict))

    def __repr__(self) -> str:
        return f"Cache(max_entries={self.max_entries}, strict={self.strict})"


def cache_options(cache: object) -> Cache | None:
    """The options ``cache=`` asks for: None (no cache), or a :class:`Cache`.

    Takes None or False (no cache), True (the defaults) or a :class:`Cache`; anything else
    raises :class:`InvalidArgumentError`.
    """
    if cache is None or cache is False:
        return None
    if cache is True:
        return Cache()
    if isinstance(cache, Cache):
        return cache
    raise InvalidArgumentError(
        f"cache must be True, False, None or symphony_nb.Cache(...), got {cache!r}"
    )


@dataclass(frozen=True)
class CacheStats:
    """What a repository's read cache has done since it was opened (``repo.cache_stats()``).

    ``hits``: reads answered without a store read of their own (a miss shared with a
    concurrent reader counts as a hit); ``misses``: reads that went to the store and were
    kept; ``bypassed``: reads that went to the store uncached (a query that cannot be a cache
    key, a page of ``iter_all``, or a store that could not tell what changed at that moment);
    ``invalidations``:
    cached entries dropped because their documents were or may have been written;
    ``evictions``: entries dropped to stay within ``max_entries``; ``entries`` and ``size``:
    what it holds now (entries, and documents as counted against ``max_entries``).
    """

    hits: int
    misses: int
    bypassed: int
    invalidations: int
    evictions: int
    entries: int
    size: int
    max_entries: int
    strict: bool

    @property
    def hit_rate(self) -> float:
        """Hits over all reads (0.0 before the first read)."""
        reads = self.hits + self.misses + self.bypassed
        return self.hits / reads if reads else 0.0

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{escape(name)}</th><td>{escape(str(value))}</td></tr>"
            for name, value in (
                ("hits", self.hits),
                ("misses", self.misses),
                ("bypassed", self.bypassed),
                ("hit rate", f"{self.hit_rate:.0%}"),
                ("invalidations", self.invalidations),
                ("evictions", self.evictions),
                ("entries", self.entries),
                ("size", f"{self.size} of {self.max_entries}"),
                ("strict", self.strict),
            )
        )
        return f"<table><caption>read cache</caption>{rows}</table>"


class _Uncacheable(Exception):
    """A query part that cannot be part of a cache key."""


_SCALARS = (type(None), str, bool, int, float)
_NOTHING = Changed.NOTHING


def _key_of(value: Any) -> Hashable:
    """A hashable key equal only for equal query parts of the same types.

    ``1``, ``1.0`` and ``True`` are equal in Python but select different documents, so every
    scalar is keyed with its type. Anything else raises _Uncacheable.
    """
    kind = type(value)
    if kind in _SCALARS:
        return (kind, value)
    if kind is tuple or kind is list:
        return (tuple, tuple(_key_of(item) for item in value))
    if kind is frozenset:
        return (frozenset, frozenset(_key_of(item) for item in value))
    if isinstance(value, Enum):
        return (kind, _key_of(value.value))
    if is_dataclass(value) and not isinstance(value, type):
        return (kind, tuple((f.name, _key_of(getattr(value, f.name))) for f in fields(value)))
    raise _Uncacheable(kind.__name__)


def query_key(query: Query) -> Hashable | None:
    """The cache key of ``query``, or None when it cannot be cached."""
    try:
        return _key_of(query)
    except (_Uncacheable, TypeError, RecursionError):
        return None


def _fresh(error: CorruptEntityError) -> CorruptEntityError:
    """A copy of ``error`` (of its own class, every attribute kept) with no traceback yet:
    re-raising one instance for every read would pile up its tracebacks."""
    kind = type(error)
    clone = kind.__new__(kind)
    clone.__dict__.update(error.__dict__)
    clone.args = error.args
    return clone


def _corrupt_copies(
    items: Sequence[tuple[str, CorruptEntityError]],
) -> list[tuple[str, CorruptEntityError]]:
    return [(key, _fresh(error)) for key, error in items]


def _row_copies(
    rows: Sequence[tuple[str, Document | CorruptEntityError]],
) -> list[tuple[str, Document | CorruptEntityError]]:
    return [
        (key, _fresh(data)) if isinstance(data, CorruptEntityError) else (key, data)
        for key, data in rows
    ]


@dataclass(frozen=True, slots=True)
class _Rows:
    rows: tuple[tuple[str, Document | CorruptEntityError], ...]
    corrupt: tuple[tuple[str, CorruptEntityError], ...]
    broken: bool  # some row is an error in place of a document


@dataclass(frozen=True, slots=True)
class _Total:
    total: int
    corrupt: tuple[tuple[str, CorruptEntityError], ...]


class CacheLayer(StoreLayer):
    """The read cache over ``inner``, with ``options`` (see :class:`Cache`).

    Raises :class:`InvalidArgumentError` when ``inner`` offers no change feed: a cache there
    could not know of writes made by others.
    """

    def __init__(self, inner: Store, options: Cache) -> None:
        super().__init__(inner)
        feed = inner.change_feed()
        if feed is None:
            raise InvalidArgumentError(
                f"{inner.describe()} cannot tell when its documents are changed elsewhere "
                f"({type(inner).__name__}.change_feed() returns None), so a cache over it "
                "could return stale data; open it without cache="
            )
        self.options = options
        self._feed = feed
        self._strict = options.strict and not feed.exact
        self._max = options.max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, tuple[object, int]] = OrderedDict()
        self._queries: set[Key] = set()
        self._size = 0
        self._generation = 0
        self._inflight: dict[Key, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._hits = self._misses = self._bypassed = 0
        self._invalidations = self._evictions = 0

    def stats(self) -> CacheStats:
        """The counters and size of this cache now."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                bypassed=self._bypassed,
                invalidations=self._invalidations,
                evictions=self._evictions,
                entries=len(self._entries),
                size=self._size,
                max_entries=self._max,
                strict=self.options.strict,
            )

    # ------------------------------------------------------------------ reads

    async def get(self, entity_id: str) -> Document | None:
        key = ("get", entity_id)
        if not self._strict:  # the hot path inline: a hit is one poll and one lookup
            with self._lock:
                changed = self._feed.poll()
                if changed is not _NOTHING and not self._apply(changed):
                    self._bypassed += 1
                    through = True
                else:
                    entry = self._entries.get(key)
                    if entry is not None:
                        self._entries.move_to_end(key)
                        self._hits += 1
                        return entry[0]  # type: ignore[return-value]
                    through = False
            if through:
                return await self.inner.get(entity_id)
        return await self._read(
            key, lambda: self.inner.get(entity_id), _one, polled=not self._strict
        )

    async def select(self, query: Query) -> Selection:
        # Pages of iter_all (after_id) are read once: keeping them would only push out the
        # entries worth keeping.
        key = None if query.after_id is not None else query_key(query)
        if key is None:
            return await self._through(lambda: self.inner.select(query))

        async def load() -> _Rows:
            found = await self.inner.select(query)
            broken = any(isinstance(data, CorruptEntityError) for _, data in found.rows)
            return _Rows(tuple(found.rows), tuple(found.corrupt), broken)

        rows: _Rows = await self._read(("select", key), load, _rows_weight)
        copies = _row_copies(rows.rows) if rows.broken else list(rows.rows)
        return Selection(copies, _corrupt_copies(rows.corrupt))

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        key = query_key(Query(conditions))
        if key is None:
            return await self._through(lambda: self.inner.count(conditions))

        async def load() -> _Total:
            counted = await self.inner.count(conditions)
            return _Total(counted.total, tuple(counted.corrupt))

        total: _Total = await self._read(("count", key), load, _one)
        return Counted(total.total, _corrupt_copies(total.corrupt))

    async def _through(self, load: Callable[[], Awaitable[V]]) -> V:
        with self._lock:
            self._bypassed += 1
        return await load()

    async def _read(
        self,
        key: Key,
        load: Callable[[], Awaitable[V]],
        weigh: Callable[[V], int],
        *,
        polled: bool = False,
    ) -> V:
        """The value of ``key``: kept, shared with a read under way, or loaded and kept.

        ``polled``: the caller has just polled the feed and applied what it said.
        """
        if self._strict:
            await self._feed.sync()
        while True:
            with self._lock:
                # Polled under the lock: another thread must not read an entry between this
                # poll reporting a change and the entry being dropped.
                changed = _NOTHING if polled else self._feed.poll()
                polled = False
                if changed is not _NOTHING and not self._apply(changed):
                    self._bypassed += 1
                    shared = None
                else:
                    entry = self._entries.get(key)
                    if entry is not None:
                        self._entries.move_to_end(key)
                        self._hits += 1
                        return entry[0]  # type: ignore[return-value]
                    loop = asyncio.get_running_loop()
                    flight = self._inflight.get(key)
                    if flight is None or flight[0] is not loop:
                        future: asyncio.Future[Any] = loop.create_future()
                        self._inflight[key] = (loop, future)
                        generation = self._generation
                        self._misses += 1
                        break
                    self._hits += 1
                    shared = flight[1]
            if shared is None:  # the feed cannot tell now: read through
                return await load()
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The reader doing the shared read was cancelled, not us: read again.
        return await self._fill(key, load, weigh, future, generation)

    async def _fill(
        self,
        key: Key,
        load: Callable[[], Awaitable[V]],
        weigh: Callable[[V], int],
        future: asyncio.Future[Any],
        generation: int,
    ) -> V:
        try:
            value = await load()
        except BaseException as exc:
            with self._lock:
                self._forget_flight(key, future)
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" log without waiters
            raise
        with self._lock:
            self._forget_flight(key, future)
            if generation == self._generation:
                kept = self._entries.get(key)
                if kept is None:
                    self._keep(key, value, weigh(value))
                elif kept[0] != value:
                    # Two fills (from two event loops) read different states of one key, and
                    # either may be the older: keep neither.
                    self._drop([key])
        future.set_result(value)
        return value

    def _forget_flight(self, key: Key, future: asyncio.Future[Any]) -> None:
        flight = self._inflight.get(key)
        if flight is not None and flight[1] is future:
            del self._inflight[key]

    def _keep(self, key: Key, value: object, weight: int) -> None:
        if weight > self._max:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= old[1]
        self._entries[key] = (value, weight)
        self._size += weight
        if key[0] != "get":
            self._queries.add(key)
        while self._size > self._max:
            dropped, (_, size) = self._entries.popitem(last=False)
            self._queries.discard(dropped)
            self._size -= size
            self._evictions += 1

    # ------------------------------------------------------------------ invalidation

    def _apply(self, changed: Changed | frozenset[str]) -> bool:
        """Drop what the feed reported changed; False when it cannot tell (lock held)."""
        if isinstance(changed, frozenset):
            self._drop(("get", entity_id) for entity_id in changed)
            return True
        self._drop(list(self._entries))
        return changed is not Changed.UNKNOWN

    def _drop(self, keys: Any) -> None:
        """Drop ``keys`` and every query result; later fills start afresh (lock held)."""
        self._generation += 1
        self._inflight.clear()
        for key in [*keys, *self._queries]:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._size -= entry[1]
                self._invalidations += 1
        self._queries.clear()

    def _written(self, ids: Sequence[str]) -> None:
        with self._lock:
            self._drop(("get", entity_id) for entity_id in ids)

    def forget(self, ids: Sequence[str]) -> None:
        """Drop what the cache holds of ``ids`` (and every query result): for a write made
        below the cache, through a layer beneath it."""
        self._written(ids)

    def forget_all(self) -> None:
        """Drop everything the cache holds (after many writes made below it)."""
        with self._lock:
            self._drop(list(self._entries))

    # ------------------------------------------------------------------ writes

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        token = writing_for.set(self._feed)
        try:
            return await self.inner.write(records, create=create)
        finally:  # a failed write may have landed in part
            writing_for.reset(token)
            self._written([record.id for record in records])

    async def remove(self, entity_id: str) -> bool:
        token = writing_for.set(self._feed)
        try:
            return await self.inner.remove(entity_id)
        finally:
            writing_for.reset(token)
            self._written([entity_id])

    async def purge(self, entity_id: str) -> int:
        token = writing_for.set(self._feed)
        try:
            return await self.inner.purge(entity_id)
        finally:
            writing_for.reset(token)
            self._written([entity_id])

    def as_of(self, when: datetime) -> Store:
        """The inner store's view at ``when``, uncached (the past is read rarely)."""
        return self.inner.as_of(when)

    async def close(self) -> None:
        with self._lock:
            self._generation += 1
            self._inflight.clear()
            self._entries.clear()
            self._queries.clear()
            self._size = 0
        self._feed.close()
        await self.inner.close()


def _one(value: object) -> int:
    return 1


def _rows_weight(value: _Rows) -> int:
    return max(1, len(value.rows) + len(value.corrupt))
