"""In-process storage, for tests and quick notebooks."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from .._errors import ConflictError
from .._filters import has_long_digits
from .._keyring import Keyring
from .._repository import Repository
from .._types import T
from ..stores import (
    Change,
    Claimed,
    Condition,
    Counted,
    Query,
    Record,
    Selection,
    Store,
    apply_query,
    matches,
    needs_exact,
    parse_document,
    plan_writes,
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

    def describe(self) -> str:
        return "memory of this process"

    async def get(self, entity_id: str) -> str | None:
        row = self._rows.get(entity_id)
        return None if row is None else row[1]

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        parsed = [parse_document(record.json) for record in records]
        with self._lock:
            stored = {r.id: self._rows[r.id][0] for r in records if r.id in self._rows}
            written = plan_writes(records, stored, create=create)
            for record, doc, write in zip(records, parsed, written, strict=True):
                if write:
                    self._rows[record.id] = (record.version, record.json, doc)
        return written

    async def remove(self, entity_id: str) -> bool:
        with self._lock:
            return self._rows.pop(entity_id, None) is not None

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
                self._rows[key] = (record.version, record.json, parse_document(record.json))
                return Claimed(record, conflicts)
        return Claimed(None, conflicts)

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
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


class InMemoryRepository(Repository[T]):
    """A repository of ``model`` in this process's memory (a :class:`MemoryStore`).

    Every read returns an independent copy; nothing survives the process. ``keyring``
    encrypts secret fields (see :class:`~symphony_nb.Repository`).
    """

    def __init__(self, model: type[T], *, keyring: Keyring | None = None) -> None:
        super().__init__(model, MemoryStore(model), keyring=keyring)
