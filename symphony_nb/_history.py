"""History: every change of an entity kept as a revision, written by the store that writes it.

A store keeps history once :meth:`Store.keep_history` turned it on (a repository does that for
``history=True`` or ``history=N``). From then on each ``write``, ``remove`` and ``claim``
appends, in the same transaction (or crash-consistently, on files), one
:class:`StoredRevision` per entity it changed. The rules every store follows are written here
once: :func:`plan_revisions` numbers them, :func:`needs_baseline` says when the stored document
must first be kept as a baseline (it was written while history was off), and
:func:`to_prune` says which revisions retention removes.

A revision's ``version`` counts the changes of one id: it is the entity's ``version`` for
models with one (until an entity is deleted and created again: numbers never go back), else
1, 2, 3... Who made a change and why come from :func:`change_context`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Generic, Literal

from ._errors import InvalidArgumentError
from ._models import utc_now
from ._types import T

if TYPE_CHECKING:
    from .stores import Document, Record

Op = Literal["create", "update", "delete"]
BASELINE = "baseline: stored before history was kept"
"""The reason of a revision that records a document written while history was off."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """When a change was made, by whom and why: what each revision of the change records."""

    at: datetime
    actor: str | None = None
    reason: str | None = None


_CONTEXT: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "symphony_nb_change_context", default=(None, None)
)


@contextmanager
def change_context(*, actor: str | None = None, reason: str | None = None) -> Iterator[None]:
    """Record ``actor`` and ``reason`` on every revision written inside the ``with`` block.

    ``with change_context(actor="ana", reason="fix typo"): repo.sync.save(task)``. It holds
    for ``await`` and ``.sync`` calls, for widget callbacks and for asyncio tasks started
    inside the block (a context variable). Nested blocks override what they give and keep
    the rest. Both are free text, at most 1000 characters.
    """
    for name, value in (("actor", actor), ("reason", reason)):
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(f"{name} must be a string or None, got {value!r}")
        if value is not None and len(value) > 1000:
            raise InvalidArgumentError(f"{name} is {len(value)} characters; at most 1000")
    outer_actor, outer_reason = _CONTEXT.get()
    token = _CONTEXT.set(
        (outer_actor if actor is None else actor, outer_reason if reason is None else reason)
    )
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_change() -> tuple[str | None, str | None]:
    """The ``(actor, reason)`` of the innermost :func:`change_context`, or ``(None, None)``."""
    return _CONTEXT.get()


_WRITTEN_AT: contextvars.ContextVar[datetime | None] = contextvars.ContextVar(
    "symphony_nb_written_at", default=None
)


@contextmanager
def written_at(when: datetime) -> Iterator[None]:
    """Stamp the revisions written inside the block with ``when`` (the ``updated_at`` a
    repository gives the entities it writes), so an as-of read at it finds them."""
    token = _WRITTEN_AT.set(when)
    try:
        yield
    finally:
        _WRITTEN_AT.reset(token)


def provenance() -> Provenance:
    """When (the :func:`written_at` stamp, else now), with the actor and reason of the
    current :func:`change_context`."""
    actor, reason = _CONTEXT.get()
    return Provenance(_WRITTEN_AT.get() or utc_now(), actor, reason)


@dataclass(frozen=True, slots=True)
class Revision(Generic[T]):
    """One kept version of an entity, as :meth:`Repository.history` returns it.

    ``version`` numbers the changes of the id (it is the entity's ``version`` for models
    with one, until an entity is deleted and created again: numbers never go back); ``op``
    is ``"create"``, ``"update"`` or ``"delete"``; ``at`` is when (UTC); ``actor`` and
    ``reason`` come from :func:`change_context`; ``entity`` is the model as it was (None
    for a delete).
    """

    id: str
    version: int
    op: Op
    at: datetime
    actor: str | None
    reason: str | None
    entity: T | None

    def __repr__(self) -> str:
        who = f" by {self.actor!r}" if self.actor else ""
        why = f" ({self.reason})" if self.reason else ""
        return (
            f"<Revision {self.id!r} v{self.version} {self.op} at {self.at.isoformat()}{who}{why}>"
        )

    def _repr_html_(self) -> str:
        """The revision's facts, then its entity as the entity shows itself."""
        facts = " · ".join(
            escape(part)
            for part in (
                f"v{self.version}",
                self.op,
                self.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                self.actor or "",
                self.reason or "",
            )
            if part
        )
        body = "<em>deleted</em>"
        if self.entity is not None:
            shown = getattr(self.entity, "_repr_html_", None)
            body = shown() if callable(shown) else f"<pre>{escape(repr(self.entity))}</pre>"
        return f"<div><div><b>revision</b> {facts}</div>{body}</div>"


@dataclass(frozen=True, slots=True)
class StoredRevision:
    """One revision as a store keeps it.

    ``version`` numbers the revisions of ``id`` (see the module docstring);
    ``entity_version`` is the ``version`` the document held (None for models without one;
    for a delete, the version deleted); ``json`` is the document (None for a delete).
    """

    id: str
    version: int
    op: Op
    at: datetime
    actor: str | None
    reason: str | None
    json: Document | None
    entity_version: int | None = None


@dataclass(frozen=True, slots=True)
class Head:
    """The latest kept revision of an id: its number, op and the entity version it held."""

    version: int
    op: Op
    entity_version: int | None


def head_of(revision: StoredRevision) -> Head:
    """The :class:`Head` that ``revision`` makes when it is the latest."""
    return Head(revision.version, revision.op, revision.entity_version)


def needs_baseline(
    entity_id: str, stored: Mapping[str, int | None], heads: Mapping[str, Head]
) -> bool:
    """Whether the stored document of ``entity_id`` is missing from its history.

    True when it is stored and its history has no revision, ends in a delete, or ends at
    another entity version (it was written while history was off): a store then keeps the
    stored document as a baseline revision before the new one.
    """
    if entity_id not in stored:
        return False
    head = heads.get(entity_id)
    return head is None or head.op == "delete" or head.entity_version != stored[entity_id]


def baseline(
    entity_id: str,
    stored_version: int | None,
    document: Document,
    head: Head | None,
    stamp: Provenance,
) -> StoredRevision:
    """The revision that keeps a stored document no revision records (see
    :func:`needs_baseline`): numbered after ``head``, or at its entity version if higher."""
    number = max((0 if head is None else head.version) + 1, stored_version or 0)
    op: Op = "create" if head is None or head.op == "delete" else "update"
    return StoredRevision(entity_id, number, op, stamp.at, None, BASELINE, document, stored_version)


def plan_revisions(
    records: Sequence[Record],
    written: Sequence[bool],
    stored: Mapping[str, int | None],
    heads: Mapping[str, Head],
    stamp: Provenance,
    baselines: Mapping[str, Document],
) -> list[StoredRevision]:
    """The revisions a write appends: for each written record, its baseline if it needs one
    (``baselines`` holds the stored documents of the ids :func:`needs_baseline` named), then
    a ``create`` (not stored before) or ``update`` revision of its new document."""
    out: list[StoredRevision] = []
    for record, done in zip(records, written, strict=True):
        if not done:
            continue
        head = heads.get(record.id)
        if record.id in baselines:
            kept = baseline(record.id, stored.get(record.id), baselines[record.id], head, stamp)
            out.append(kept)
            head = head_of(kept)
        number = 0 if head is None else head.version
        out.append(
            StoredRevision(
                record.id,
                max(number + 1, record.version or 0),
                "update" if record.id in stored else "create",
                stamp.at,
                stamp.actor,
                stamp.reason,
                record.json,
                record.version,
            )
        )
    return out


def plan_removal(
    entity_id: str,
    stored_version: int | None,
    head: Head | None,
    stamp: Provenance,
    document: Document | None,
) -> list[StoredRevision]:
    """The revisions removing a stored entity appends: its baseline when ``document`` (the
    stored one) is given because :func:`needs_baseline` said so, then the delete."""
    out: list[StoredRevision] = []
    if document is not None:
        out.append(baseline(entity_id, stored_version, document, head, stamp))
        head = head_of(out[0])
    number = 0 if head is None else head.version
    out.append(
        StoredRevision(
            entity_id,
            number + 1,
            "delete",
            stamp.at,
            stamp.actor,
            stamp.reason,
            None,
            stored_version,
        )
    )
    return out


def to_prune(
    revisions: Sequence[tuple[int, datetime]],
    *,
    keep_last: int | None,
    older_than: datetime | None,
) -> list[int]:
    """The revision numbers of one id that retention removes, from ``(version, at)`` pairs.

    The latest revision always stays. With ``keep_last`` alone, all but the last
    ``keep_last`` go; with ``older_than`` alone, those made before it; with both, those
    that are beyond the last ``keep_last`` and older than ``older_than``.
    """
    ordered = sorted(revisions)
    if not ordered:
        return []
    candidates = ordered[:-1]
    if keep_last is not None:
        candidates = ordered[: max(0, len(ordered) - keep_last)]
    if older_than is not None:
        candidates = [(v, at) for v, at in candidates if at < older_than]
    return [version for version, _ in candidates]


def latest_at(revisions: Sequence[StoredRevision], when: datetime) -> StoredRevision | None:
    """The revision of one id that stood at ``when`` (the highest version made at or before
    it), or None; a delete means the entity did not exist then."""
    best: StoredRevision | None = None
    for revision in revisions:
        if revision.at <= when and (best is None or revision.version > best.version):
            best = revision
    return best


def check_keep(history: object) -> int | Literal[False] | None:
    """``history=`` as a repository takes it: False (off), None (keep all) or N (keep last N)."""
    if history is None or history is False:
        return False
    if history is True:
        return None
    if isinstance(history, int) and not isinstance(history, bool):
        if history < 1:
            raise ValueError(
                f"history=N keeps the last N revisions of each entity; N must be >= 1, got {history}"
            )
        return history
    raise ValueError(
        f"history must be True (keep every revision), an int N >= 1 (keep the last N) "
        f"or False, got {history!r}"
    )
