"""In-process storage, for tests and quick notebooks."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import BaseModel

from .._cache import Cache
from .._errors import ConflictError
from .._filters import document_text, has_long_digits
from .._keyring import Keyring
from .._repository import Repository
from .._types import T
from ..stores import (
    SCHEMA_KEY,
    Change,
    Changed,
    ChangeFeed,
    Claimed,
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
    count_schema_key,
    head_of,
    latest_at,
    matches,
    needs_baseline,
    needs_exact,
    on_schema_key,
    parse_document,
    plan_removal,
    plan_revisions,
    plan_writes,
    provenance,
    to_prune,
)


class MemoryStore(Store):
    """Keeps documents in this process, as JSON, so every read returns an independent copy.

    Storing the serialised form costs one JSON parse per read instead of a deep copy
    (about 4x cheaper for a Task) and guarantees that nothing a caller holds aliases the
    stored data. Safe under concurrent asyncio tasks and threads.
    """

    def __init__(self, model: type[BaseModel]) -> None:
        super().__init__(model)
        self._lock = threading.Lock()
        # id -> (version, json, parsed document used for filtering; never handed out)
        self._rows: dict[str, tuple[int | None, str, object]] = {}
        self._marks: dict[str, object] = {}  # id -> its schema key, where it has one
        self._revisions: dict[str, list[StoredRevision]] = {}  # id -> oldest first
        self.changes = 0  # bumped by every write and removal, for change feeds

    def describe(self) -> str:
        return "memory of this process"

    async def get(self, entity_id: str) -> str | None:
        row = self._rows.get(entity_id)
        return None if row is None else row[1]

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        parsed = [parse_document(record.json) for record in records]
        stamp = provenance() if self._kept is not False else None
        with self._lock:
            stored = {r.id: self._rows[r.id][0] for r in records if r.id in self._rows}
            written = plan_writes(records, stored, create=create)
            if stamp is not None:
                self._record_writes(records, written, stored, stamp)
            for record, doc, write in zip(records, parsed, written, strict=True):
                if write:
                    self._put(record, doc)
            self.changes += 1
        return written

    def _put(self, record: Record, doc: object) -> None:
        self._rows[record.id] = (record.version, record.json, doc)
        mark = doc.get(SCHEMA_KEY) if isinstance(doc, dict) else None
        if mark is None:
            self._marks.pop(record.id, None)
        else:
            self._marks[record.id] = mark

    async def remove(self, entity_id: str) -> bool:
        stamp = provenance() if self._kept is not False else None
        with self._lock:
            row = self._rows.get(entity_id)
            if row is not None and stamp is not None:
                heads = self._heads([entity_id])
                stored = {entity_id: row[0]}
                document = row[1] if needs_baseline(entity_id, stored, heads) else None
                revisions = plan_removal(entity_id, row[0], heads.get(entity_id), stamp, document)
                self._append(revisions)
            self._marks.pop(entity_id, None)
            self.changes += 1
            return self._rows.pop(entity_id, None) is not None

    # ------------------------------------------------------------------ history

    def keep_history(self, keep_last: int | None) -> None:
        stamp = provenance()
        with self._lock:
            first = self._kept is False and not self._revisions
            self._kept = keep_last
            if first:  # every stored document gets its baseline now
                self._append(
                    [
                        baseline(key, version, text, None, stamp)
                        for key, (version, text, _) in self._rows.items()
                    ]
                )

    def _heads(self, ids: Iterable[str]) -> dict[str, Head]:
        return {key: head_of(self._revisions[key][-1]) for key in ids if self._revisions.get(key)}

    def _record_writes(
        self,
        records: Sequence[Record],
        written: Sequence[bool],
        stored: dict[str, int | None],
        stamp: Provenance,
    ) -> None:
        heads = self._heads(r.id for r in records)
        baselines = {
            r.id: self._rows[r.id][1]
            for r, ok in zip(records, written, strict=True)
            if ok and needs_baseline(r.id, stored, heads)
        }
        self._append(plan_revisions(records, written, stored, heads, stamp, baselines))

    def _append(self, revisions: Iterable[StoredRevision]) -> None:
        touched: set[str] = set()
        for revision in revisions:
            self._revisions.setdefault(revision.id, []).append(revision)
            touched.add(revision.id)
        if self._kept is not False and self._kept is not None:
            for key in touched:
                kept = self._revisions[key]
                if len(kept) > self._kept:
                    del kept[: len(kept) - self._kept]

    async def revisions(self, entity_id: str, version: int | None = None) -> list[StoredRevision]:
        with self._lock:
            found = list(self._revisions.get(entity_id, ()))
        return found if version is None else [r for r in found if r.version == version]

    async def revision_page(
        self, after: tuple[str, int] | None, limit: int
    ) -> list[StoredRevision]:
        if self._kept is False:
            return await super().revision_page(after, limit)
        with self._lock:
            ids = sorted(key for key in self._revisions if after is None or key >= after[0])
            page: list[StoredRevision] = []
            for key in ids:
                for revision in self._revisions[key]:
                    if after is None or (key, revision.version) > after:
                        page.append(revision)
                        if len(page) == limit:
                            return page
            return page

    async def rewrite_revisions(self, changes: Sequence[tuple[StoredRevision, Document]]) -> int:
        if self._kept is False:
            return await super().rewrite_revisions(changes)
        with self._lock:
            replaced = 0
            for old, document in changes:
                if old.json is None:
                    continue  # a delete holds no document to replace
                kept = self._revisions.get(old.id, [])
                for place, revision in enumerate(kept):
                    if revision.version == old.version and revision.json == old.json:
                        kept[place] = dataclasses.replace(revision, json=document)
                        replaced += 1
            return replaced

    def as_of(self, when: datetime) -> Store:
        view = MemoryStore(self.model)
        with self._lock:
            histories = list(self._revisions.items())
        for key, revisions in histories:
            revision = latest_at(revisions, when)
            if revision is not None and revision.json is not None:
                text = document_text(revision.json)
                view._put(Record(key, text, revision.entity_version, None), parse_document(text))
        return ReadOnlyView(view, f"memory of this process as of {when.isoformat()}")

    async def prune(self, *, keep_last: int | None, older_than: datetime | None) -> int:
        removed = 0
        with self._lock:
            for revisions in self._revisions.values():
                gone = set(
                    to_prune(
                        [(r.version, r.at) for r in revisions],
                        keep_last=keep_last,
                        older_than=older_than,
                    )
                )
                if gone:
                    revisions[:] = [r for r in revisions if r.version not in gone]
                    removed += len(gone)
        return removed

    async def purge(self, entity_id: str) -> int:
        with self._lock:
            self._marks.pop(entity_id, None)
            self.changes += 1
            found = self._rows.pop(entity_id, None) is not None
            return int(found) + len(self._revisions.pop(entity_id, ()))

    def change_feed(self) -> ChangeFeed:
        return _MemoryFeed(self)

    async def select(self, query: Query) -> Selection:
        with self._lock:
            rows = dict(self._rows)
        exact = needs_exact(query.conditions, query.order)
        ids = apply_query(query, _documents(rows.items(), exact))
        return Selection([(key, rows[key][1]) for key in ids])

    async def claim(self, query: Query, change: Change) -> Claimed:
        """Take the first candidate in order, under the lock: no claim loses a race here."""
        exact = needs_exact(query.conditions, query.order)
        conflicts = 0
        stamp = provenance() if self._kept is not False else None
        with self._lock:
            for key in apply_query(query, _documents(self._rows.items(), exact)):
                version, text, _ = self._rows[key]
                record = change(key, text)
                if record is None:
                    continue
                try:
                    plan_writes([record], {key: version}, create=False)
                except ConflictError:
                    conflicts += 1
                    continue
                if stamp is not None:
                    self._record_writes([record], [True], {key: version}, stamp)
                self._put(record, parse_document(record.json))
                self.changes += 1
                return Claimed(record, conflicts)
        return Claimed(None, conflicts)

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        if on_schema_key(conditions):
            with self._lock:
                marks, total = list(self._marks.values()), len(self._rows)
            return Counted(count_schema_key(conditions, marks, total - len(marks)))
        with self._lock:
            rows = dict(self._rows)
        docs = _documents(rows.items(), needs_exact(conditions))
        return Counted(sum(1 for _, doc in docs if matches(conditions, doc)))


def _documents(
    rows: Iterable[tuple[str, tuple[int | None, str, object]]], exact: bool
) -> Iterable[tuple[str, object]]:
    """``(id, parsed document)``; re-read exactly where integers beyond 64 bits may be."""
    for key, (_, text, doc) in rows:
        if exact and has_long_digits(text):
            yield key, parse_document(text, exact=True)
        else:
            yield key, doc


class _MemoryFeed(ChangeFeed):
    """Any write to the store since the last poll changes everything (exact)."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._seen: int | None = None

    def poll(self) -> Changed:
        now = self._store.changes
        if now == self._seen:
            return Changed.NOTHING
        self._seen = now
        return Changed.EVERYTHING

    def close(self) -> None:
        self._seen = None


class InMemoryRepository(Repository[T]):
    """A repository of ``model`` in this process's memory (a :class:`MemoryStore`).

    Every read returns an independent copy; nothing survives the process. ``keyring``
    encrypts secret fields (see :class:`~symphony_nb.Repository`); ``cache`` turns on the
    read cache (``True`` or :class:`~symphony_nb.Cache`; see there).
    """

    def __init__(
        self,
        model: type[T],
        *,
        keyring: Keyring | None = None,
        cache: bool | Cache | None = None,
        history: bool | int | None = None,
    ) -> None:
        super().__init__(model, MemoryStore(model), keyring=keyring, cache=cache, history=history)
