"""The storage contract: a :class:`Store` moves the JSON documents of one collection.

A :class:`~symphony_nb.Repository` holds a store and does everything model-level once
(validation, ids, versions, filter parsing, errors, corrupt-row reporting); a store only
reads and writes documents::

    Repository[T]
    └── Store                        get, write, remove, select, count, close (+ claim)
        ├── MemoryStore              symphony_nb.backends.memory
        ├── FileStore                symphony_nb.backends.filesystem
        ├── SQLiteStore              symphony_nb.backends.sqlite
        ├── PostgresStore            symphony_nb.backends.postgres
        └── StoreLayer(inner)        wraps another store and sees every read and write

The layers every repository puts over the store it is given, outermost first: the schema
layer (documents at the model's ``__schema_version__``, see :func:`symphony_nb.upgrader`),
then, for a model with secret fields, the secret layer (encryption at rest, directly above
the backend). ``repo.store`` is the outermost; each layer's ``inner`` is the next one down.

A new backend subclasses :class:`Store` using only the names of this module: filters
arrive parsed (:class:`Query`, :class:`Condition`), :func:`matches` and :func:`apply_query`
evaluate them over JSON documents, and :func:`plan_writes` is the one optimistic-concurrency
rule every store applies inside its own lock or transaction::

    class DictStore(Store):
        def __init__(self, model):
            super().__init__(model)
            self.docs = {}            # id -> (version, json)

        async def get(self, entity_id):
            row = self.docs.get(entity_id)
            return None if row is None else row[1]

        async def write(self, records, *, create):
            stored = {r.id: self.docs[r.id][0] for r in records if r.id in self.docs}
            written = plan_writes(records, stored, create=create)
            for record, ok in zip(records, written):
                if ok:
                    self.docs[record.id] = (record.version, record.json)
            return written
        ...

A layer (history, schema versions, encryption, a cache) subclasses :class:`StoreLayer`
and overrides what it changes; everything else passes through to ``inner``.

A store that can tell cheaply when anyone else changed its documents (SQLite's
``data_version``, a change marker, server notifications) returns a :class:`ChangeFeed` from
:meth:`Store.change_feed`; the read cache (``cache=True``) needs one to never be stale.

:meth:`Store.claim` (write the first of a query's documents that nobody else is taking) has a
generic implementation in terms of ``select`` and ``write``, correct on any store; a backend
with a cheaper atomic way (a lock held across the read and the write) overrides it.
"""

from __future__ import annotations

import copy
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import itemgetter
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from ._changes import Changed, ChangeFeed
from ._errors import ConflictError, CorruptEntityError, HistoryError, StorageError
from ._filters import (
    Condition,
    OrderKey,
    Query,
    apply_query,
    check_paging,
    lookup,
    matches,
    needs_exact,
    parse_columns,
    parse_document,
    parse_filter,
    parse_order,
)
from ._history import (
    BASELINE,
    Head,
    Provenance,
    StoredRevision,
    baseline,
    head_of,
    latest_at,
    needs_baseline,
    plan_removal,
    plan_revisions,
    provenance,
    to_prune,
)

__all__ = [
    "BASELINE",
    "SCHEMA_KEY",
    "Change",
    "ChangeFeed",
    "Changed",
    "Claimed",
    "Condition",
    "Counted",
    "Document",
    "Head",
    "OrderKey",
    "Provenance",
    "Query",
    "ReadOnlyView",
    "Record",
    "Selection",
    "Store",
    "StoreLayer",
    "StoredRevision",
    "apply_query",
    "baseline",
    "collection_name",
    "count_schema_key",
    "declared_indexes",
    "find_layer",
    "head_of",
    "latest_at",
    "lookup",
    "matches",
    "merge_corrupt",
    "needs_baseline",
    "needs_exact",
    "on_schema_key",
    "parse_document",
    "parse_query",
    "plan_removal",
    "plan_revisions",
    "plan_writes",
    "provenance",
    "to_prune",
]

L = TypeVar("L", bound="Store")

Document = str | bytes
"""The JSON text of one entity, as stored."""

SCHEMA_KEY = "$"
"""The top-level key of a document that holds its model's schema version, written first.

Repositories write and read it (see :mod:`symphony_nb._schema`); a store keeps documents as
given, and a store that can index should index this key too: every query first asks for the
documents that are not at the current version (``{"$": {"$gt": 1}}`` at version 1).
One character, so that PostgreSQL's jsonb, which orders keys by length, keeps it first."""


@dataclass(frozen=True, slots=True)
class Record:
    """One document to write.

    ``version`` is the version written with it (None for models without one); ``expected``
    is the version the writer read: the store refuses the write with :class:`ConflictError`
    when another version is stored (None: do not check).
    """

    id: str
    json: str
    version: int | None
    expected: int | None


@dataclass(slots=True)
class Selection:
    """What :meth:`Store.select` found.

    ``rows`` are ``(id, document)`` in the query's order and page; a layer that cannot hand on
    a row's document (one newer than the model, say) puts the :class:`CorruptEntityError` in
    its place, and the repository raises or skips it there. ``corrupt`` lists, as
    ``(id, error)`` in id order, the stored documents that could not even be parsed to
    evaluate the query, with ids greater than ``query.after_id`` (if set), whatever the
    page: the repository decides, by one rule, on which page each is reported.
    """

    rows: list[tuple[str, Document | CorruptEntityError]]
    corrupt: list[tuple[str, CorruptEntityError]] = field(default_factory=list)


@dataclass(slots=True)
class Counted:
    """What :meth:`Store.count` found: matches, and documents too broken to evaluate.

    ``corrupt`` lists the documents the store had to parse and could not; a count that needs
    no document (no conditions, on a database) may not notice one.
    """

    total: int
    corrupt: list[tuple[str, CorruptEntityError]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Claimed:
    """What :meth:`Store.claim` did: the record it wrote (None: none), and the races it lost.

    ``conflicts`` counts candidates another writer changed between this claim's read and its
    write (a lost race, skipped); stores that lock their candidates never lose one.
    """

    record: Record | None
    conflicts: int = 0


Change = Callable[[str, Document], Record | None]
"""``change(id, document)``: the record to write in place of a claim candidate, or None to
pass it by. Stores may call it on another thread; it must not block or await."""


def collection_name(model: type[BaseModel]) -> str:
    """The folder / table name of a model: its class name, lower-cased."""
    return model.__name__.lower()


def parse_query(
    model: type[BaseModel],
    filter_criteria: Mapping[str, Any] | None = None,
    *,
    order_by: str | Sequence[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
    columns: Sequence[str] | None = None,
) -> Query:
    """A :class:`Query` for ``model``, checked as :meth:`Repository.find_all` checks it.

    Raises :class:`FilterError` for a filter, ordering or column that does not fit the model
    and ``ValueError`` for bad paging.
    """
    check_paging(limit, offset)
    return Query(
        conditions=parse_filter(model, filter_criteria),
        order=parse_order(model, order_by),
        limit=limit,
        offset=offset,
        columns=parse_columns(model, columns),
    )


def merge_corrupt(
    query: Query, found: Selection
) -> list[tuple[str, Document | CorruptEntityError]]:
    """The rows of ``found`` in ``query``'s order, with its corrupt documents put among them.

    A corrupt document (too broken to filter or order) goes on one page only: in id order on
    the page whose id range holds it (the last page takes the rest); under another order or
    an offset its place is unknown, so the first page reports them all. Rows the store was
    allowed to return in any order (``query.any_order``) are sorted by id.
    """
    rows: list[tuple[str, Document | CorruptEntityError]] = [*found.rows]
    if query.any_order:
        rows.sort(key=itemgetter(0))  # linear when the store returned them sorted
    if not found.corrupt or query.limit == 0:
        return rows
    broken: list[tuple[str, Document | CorruptEntityError]] = [*found.corrupt]
    if query.order or query.offset:
        return [*broken, *rows] if query.offset == 0 else rows
    if query.limit is not None and len(found.rows) >= query.limit:
        last = found.rows[-1][0]
        broken = [item for item in broken if item[0] <= last]
    return sorted([*broken, *rows], key=itemgetter(0))


def declared_indexes(model: type[BaseModel]) -> tuple[str | tuple[str, ...], ...]:
    """The fields ``model`` asks every store to index: its ``__indexes__`` class attribute.

    ``class Task(Entity): __indexes__ = ("status", "priority", "created_at")``; a store that
    can index (SQLite, PostgreSQL) indexes them, plus any its constructor is given. A tuple
    of field names asks for a composite index, which a store may build (SQLite does) or
    leave out.
    """
    declared = getattr(model, "__indexes__", ())
    if isinstance(declared, str) or not all(
        isinstance(name, str)
        or (isinstance(name, tuple) and name and all(isinstance(n, str) for n in name))
        for name in declared
    ):
        raise TypeError(
            f"{model.__name__}.__indexes__ must be a tuple of field names "
            "(or of tuples of them, for composite indexes)"
        )
    return tuple(declared)


def on_schema_key(conditions: Sequence[Condition]) -> bool:
    """Whether ``conditions`` are all on :data:`SCHEMA_KEY` (the probes of every query).

    A store that scans its documents can answer those from what it knows of each document's
    key, without reading them all: :func:`count_schema_key` does the counting.
    """
    return bool(conditions) and all(cond.path == (SCHEMA_KEY,) for cond in conditions)


def count_schema_key(conditions: tuple[Condition, ...], marks: Iterable[Any], unmarked: int) -> int:
    """How many documents satisfy ``conditions`` (all on the schema key), given the key's
    value in each document that has it (``marks``) and how many have none (``unmarked``)."""
    total = sum(1 for mark in marks if matches(conditions, {SCHEMA_KEY: mark}))
    return total + (unmarked if matches(conditions, {}) else 0)


def find_layer(store: Store, kind: type[L]) -> L | None:
    """The first store of type ``kind`` among ``store`` and the stores it wraps, or None."""
    current: Store | None = store
    while current is not None:
        if isinstance(current, kind):
            return current
        current = current.inner if isinstance(current, StoreLayer) else None
    return None


def plan_writes(
    records: Sequence[Record], stored: Mapping[str, int | None], *, create: bool
) -> list[bool]:
    """The optimistic-concurrency rule: which of ``records`` to write, given the stored versions.

    ``stored`` maps each record id that is stored to its stored version (ids not stored are
    absent). Raises :class:`ConflictError` for the first record whose ``expected`` version is
    not None and differs from the stored one; otherwise each record is written if it is
    stored or ``create`` is true. Call it inside the lock or transaction that writes.
    """
    for record in records:
        if record.expected is not None and record.id in stored:
            version = stored[record.id]
            if version != record.expected:
                raise ConflictError(record.id, record.expected, version)
    return [create or record.id in stored for record in records]


class Store(ABC):
    """The documents of one model's collection; every backend implements this contract.

    Methods are coroutines; a store is used from one event loop at a time unless it says
    otherwise. ``model`` is the pydantic model whose documents it holds (stores use it
    only for its name and the types of its fields, for indexes and SQL).
    """

    model: type[BaseModel]

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    @property
    def name(self) -> str:
        """The collection's name (the model's name, lower-cased)."""
        return collection_name(self.model)

    @abstractmethod
    async def get(self, entity_id: str) -> Document | None:
        """The stored document of ``entity_id``, or None."""

    @abstractmethod
    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        """Store ``records`` all or nothing, checking versions with :func:`plan_writes`.

        With ``create=False`` a record whose id is not stored is skipped. Returns, for each
        record, whether it was written. A failure after some records landed raises
        :class:`StorageError` with their ids in ``written``.
        """

    @abstractmethod
    async def remove(self, entity_id: str) -> bool:
        """Delete ``entity_id``; False if it was not stored."""

    @abstractmethod
    async def select(self, query: Query) -> Selection:
        """The documents matching ``query``, in its order and page (see :class:`Selection`).

        With ``query.any_order`` the rows may come in any order (the caller sorts by id).
        """

    @abstractmethod
    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        """How many documents satisfy ``conditions``."""

    async def claim(self, query: Query, change: Change) -> Claimed:
        """Write the first candidate of ``query`` that ``change`` turns into a record.

        Candidates are the documents ``query`` selects (its ``limit`` bounds how many are
        looked at). Each record is written as ``write(..., create=False)`` writes it, so its
        ``expected`` version is checked; a candidate another writer changed or is claiming
        meanwhile is skipped, never an error. Returns what was written, if anything.

        This implementation, for every store, reads the candidates with :meth:`select` and
        tries them in random order, so that claimers reading the same page at once rarely
        pick the same document; ordering then holds within the page. A store that can lock
        candidates between the read and the write overrides it and takes them in order.
        """
        found = await self.select(query)
        rows = random.sample(found.rows, len(found.rows))
        conflicts = 0
        for entity_id, document in rows:
            if isinstance(document, CorruptEntityError):
                continue  # the repository reports it where it reads the collection
            record = change(entity_id, document)
            if record is None:
                continue
            try:
                (written,) = await self.write([record], create=False)
            except ConflictError:
                conflicts += 1
                continue
            if written:
                return Claimed(record, conflicts)
        return Claimed(None, conflicts)

    async def close(self) -> None:  # noqa: B027  (a store with nothing to release keeps it)
        """Release connections, threads and files; safe to call more than once."""

    # ------------------------------------------------------------------ history

    _kept: int | Literal[False] | None = False

    def kept(self) -> int | Literal[False] | None:
        """False without history; with it, how many revisions of each id are kept (None: all)."""
        return self._kept

    def keep_history(self, keep_last: int | None) -> None:
        """Append a :class:`StoredRevision` for every change from now on, keeping the last
        ``keep_last`` of each entity (None: all).

        A store that keeps history writes, in the transaction of each ``write``, ``remove``
        and ``claim`` (on files: before the document, so a crash leaves at most a revision
        that readers ignore), the revisions :func:`plan_revisions` and :func:`plan_removal`
        plan, with the :func:`provenance` of the call, and then drops what ``keep_last``
        leaves out (:func:`to_prune`). Documents it already holds that no revision records
        get a baseline revision (reason :data:`BASELINE`) when history is first turned on
        for the collection, or at the latest when they are next written. This
        implementation refuses: the store keeps no history.
        """
        raise HistoryError(f"{self.describe()} cannot keep history")

    async def revisions(self, entity_id: str, version: int | None = None) -> list[StoredRevision]:
        """The kept revisions of ``entity_id``, oldest first (only ``version``, if given).

        Raises :class:`HistoryError` on a store that keeps no history.
        """
        raise HistoryError(f"{self.describe()} keeps no history")

    async def revision_page(
        self, after: tuple[str, int] | None, limit: int
    ) -> list[StoredRevision]:
        """Up to ``limit`` kept revisions of every id, in ``(id, version)`` order, those after
        ``after`` (an ``(id, version)`` pair; None: from the first). Deleted entities'
        revisions included.

        Raises :class:`HistoryError` on a store that keeps no history.
        """
        raise HistoryError(f"{self.describe()} keeps no history")

    async def rewrite_revisions(self, changes: Sequence[tuple[StoredRevision, Document]]) -> int:
        """Store each ``(revision, document)``'s document in place of the revision's, all or
        nothing, where that revision is still kept with ``revision.json``; return how many
        were replaced (one pruned, purged or rewritten meanwhile is left as it is, and so is a
        delete, which holds no document).

        Only the document's stored form changes (:meth:`~symphony_nb.Repository.rotate_keys`
        seals its secrets again): the revision's number, op, time, actor and reason stay.
        Raises :class:`HistoryError` on a store that keeps no history.
        """
        raise HistoryError(f"{self.describe()} keeps no history")

    def as_of(self, when: datetime) -> Store:
        """A read-only store of the collection as it stood at ``when`` (an aware datetime).

        Its ``get``, ``select`` and ``count`` answer from the latest revision of each id made
        at or before ``when``, with the semantics of this store's own; an id whose latest
        revision then is a delete, or that has none, is absent. Writes raise StorageError.
        """
        raise HistoryError(f"{self.describe()} keeps no history")

    async def prune(self, *, keep_last: int | None, older_than: datetime | None) -> int:
        """Remove the revisions :func:`to_prune` names for every id; return how many went."""
        raise HistoryError(f"{self.describe()} keeps no history")

    async def purge(self, entity_id: str) -> int:
        """Remove ``entity_id`` and every revision of it, writing none; return how many
        records went (the document counts one). Without history, only the document."""
        return int(await self.remove(entity_id))

    def change_feed(self) -> ChangeFeed | None:
        """A new :class:`ChangeFeed` of this collection, or None if the store cannot tell.

        A read cache over a store without one would go stale when others write, so it is
        refused there.
        """
        return None

    def location(self, entity_id: str) -> str:
        """Where ``entity_id`` is stored, for error messages."""
        return f"{self.describe()} id {entity_id!r}"

    def describe(self) -> str:
        """A short description of where the collection lives (no secrets), for reprs."""
        return f"{type(self).__name__}({self.name})"

    def __repr__(self) -> str:
        return self.describe()


class StoreLayer(Store):
    """A store that wraps ``inner``: every call passes through unless a subclass overrides it."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner.model)
        self.inner = inner

    async def get(self, entity_id: str) -> Document | None:
        return await self.inner.get(entity_id)

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        return await self.inner.write(records, create=create)

    async def remove(self, entity_id: str) -> bool:
        return await self.inner.remove(entity_id)

    async def select(self, query: Query) -> Selection:
        return await self.inner.select(query)

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        return await self.inner.count(conditions)

    async def claim(self, query: Query, change: Change) -> Claimed:
        """Claim through ``inner`` when this layer changes no reads or writes, else generically.

        A layer that overrides ``get``, ``select``, ``write`` or ``remove`` (it transforms or
        watches documents) claims through its own ``select`` and ``write``, so it sees the
        claim. Such a layer may override this to keep the inner store's atomic claim, passing
        ``inner.claim`` a ``change`` that hands the wrapped ``change`` each document as the
        layer reads it and returns its record as the layer writes it (with the same id and
        version).
        """
        layer = type(self)
        if all(getattr(layer, name) is getattr(StoreLayer, name) for name in _DOCUMENT_CALLS):
            return await self.inner.claim(query, change)
        return await super().claim(query, change)

    async def close(self) -> None:
        await self.inner.close()

    def kept(self) -> int | Literal[False] | None:
        return self.inner.kept()

    def keep_history(self, keep_last: int | None) -> None:
        self.inner.keep_history(keep_last)

    async def revisions(self, entity_id: str, version: int | None = None) -> list[StoredRevision]:
        """The inner store's revisions, each document passed through :meth:`revision_document`."""
        return self._handed_on(await self.inner.revisions(entity_id, version))

    def _keeps_revisions_as_stored(self) -> bool:
        return type(self).revision_document is StoreLayer.revision_document

    def _handed_on(self, found: list[StoredRevision]) -> list[StoredRevision]:
        if self._keeps_revisions_as_stored():
            return found
        return [
            rev if rev.json is None else replace(rev, json=self.revision_document(rev))
            for rev in found
        ]

    def revision_document(self, revision: StoredRevision) -> Document:
        """A kept revision's document as this layer hands documents on (as ``get`` does);
        CorruptEntityError where it cannot."""
        assert revision.json is not None
        return revision.json

    async def revision_page(
        self, after: tuple[str, int] | None, limit: int
    ) -> list[StoredRevision]:
        """The inner store's page, each document passed through :meth:`revision_document`."""
        return self._handed_on(await self.inner.revision_page(after, limit))

    async def rewrite_revisions(self, changes: Sequence[tuple[StoredRevision, Document]]) -> int:
        """Passed to the inner store as given, by a layer that hands revisions on as they
        are stored; a layer that changes them on the way (:meth:`revision_document`) refuses
        with :class:`HistoryError`, since what it would pass down is not in the stored form
        (a secret not sealed, say). Rewrite through the store beneath it."""
        if not self._keeps_revisions_as_stored():
            raise HistoryError(
                f"{self!r} hands revisions on in another form than they are stored in, so it "
                "cannot pass rewrites down; rewrite them through the store beneath it"
            )
        return await self.inner.rewrite_revisions(changes)

    def as_of(self, when: datetime) -> Store:
        """This layer over the inner store's view at ``when`` (a shallow copy of it)."""
        view = copy.copy(self)
        view.inner = self.inner.as_of(when)
        return view

    async def prune(self, *, keep_last: int | None, older_than: datetime | None) -> int:
        return await self.inner.prune(keep_last=keep_last, older_than=older_than)

    async def purge(self, entity_id: str) -> int:
        return await self.inner.purge(entity_id)

    def change_feed(self) -> ChangeFeed | None:
        return self.inner.change_feed()

    def location(self, entity_id: str) -> str:
        return self.inner.location(entity_id)

    def describe(self) -> str:
        return self.inner.describe()


_DOCUMENT_CALLS = ("get", "select", "write", "remove")


class ReadOnlyView(Store):
    """A store that answers reads from ``source`` and refuses every write (as-of views)."""

    def __init__(self, source: Store, what: str) -> None:
        super().__init__(source.model)
        self.source = source
        self.what = what

    async def get(self, entity_id: str) -> Document | None:
        return await self.source.get(entity_id)

    async def select(self, query: Query) -> Selection:
        return await self.source.select(query)

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        return await self.source.count(conditions)

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        raise StorageError(f"{self.what} is read-only: the past cannot be written")

    async def remove(self, entity_id: str) -> bool:
        raise StorageError(f"{self.what} is read-only: the past cannot be written")

    def location(self, entity_id: str) -> str:
        return f"{self.what} id {entity_id!r}"

    def describe(self) -> str:
        return self.what
