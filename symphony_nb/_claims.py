"""Claims at the model level: change the first matching entity that nobody else is taking.

:func:`claim` turns a model-level ``change`` (an entity in, the changed entity or None out)
into the document-level one :meth:`~symphony_nb.stores.Store.claim` calls, using the
repository's own decoding and record building, so versions, stamps and checks are the ones
every write gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic

from ._errors import CorruptEntityError, CorruptEntityWarning
from ._models import utc_now
from ._repository import Filter, OrderBy, Repository
from ._types import T
from ._warnings import warn_caller
from .stores import Document, Record, parse_query


@dataclass(frozen=True, slots=True)
class Taken(Generic[T]):
    """The entity a claim changed and stored (None: none), the races it lost, and how many
    candidates it passed by (corrupt, or refused by ``change``)."""

    entity: T | None
    conflicts: int
    passed: int = 0


async def claim(
    repo: Repository[T],
    filter_criteria: Filter,
    change: Callable[[T], T | None],
    *,
    order_by: OrderBy | None = None,
    candidates: int = 16,
) -> Taken[T]:
    """Store ``change(entity)`` for the first of the first ``candidates`` matches it accepts.

    ``change`` gets a fresh copy of a stored entity and returns it changed, or None to pass
    it by; it may run on a storage thread, so it must be quick and must not await. Corrupt
    candidates are passed by with a :class:`CorruptEntityWarning`.
    """
    query = parse_query(repo.model, filter_criteria, order_by=order_by, limit=candidates)
    now = utc_now()
    changed: dict[str, T] = {}
    corrupt: list[CorruptEntityError] = []
    passed = 0

    def on_document(entity_id: str, document: Document) -> Record | None:
        nonlocal passed
        try:
            entity = repo.decode(entity_id, document)
        except CorruptEntityError as exc:
            corrupt.append(exc)
            passed += 1
            return None
        result = change(entity)
        if result is None:
            passed += 1
            return None
        changed[entity_id] = result
        return repo._record(result, now)

    claimed = await repo.store.claim(query, on_document)
    for error in corrupt:
        warn_caller(str(error), CorruptEntityWarning)
    if claimed.record is None:
        return Taken(None, claimed.conflicts, passed)
    entity = changed[claimed.record.id]
    repo._written(entity, claimed.record, now)
    return Taken(entity, claimed.conflicts, passed)
