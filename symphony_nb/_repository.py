"""The :class:`Repository`: the public contract, written once over a :class:`~symphony_nb.stores.Store`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, Self

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from ._cache import Cache, CacheLayer, CacheStats, cache_options
from ._display import register_model, repository_html
from ._encryption import reveal, secret_layer, secret_plan, with_secrets
from ._errors import (
    ConflictError,
    CorruptEntityError,
    CorruptEntityWarning,
    HistoryError,
    InvalidArgumentError,
    InvalidIdError,
    NotFoundError,
    StorageError,
    UnstorableEntityError,
)
from ._fields import unwrap
from ._filters import Query, parse_filter
from ._gc import gc_paused
from ._history import (
    Revision,
    StoredRevision,
    change_context,
    check_keep,
    current_change,
    written_at,
)
from ._ids import check_id
from ._keyring import Keyring
from ._models import utc_now
from ._schema import MigrationReport, SchemaLayer, Upgraded, census, schema_layer
from ._types import T
from ._values import storable_fields
from ._warnings import warn_caller
from .stores import (
    SCHEMA_KEY,
    Condition,
    Record,
    Store,
    find_layer,
    merge_corrupt,
    parse_query,
)

if TYPE_CHECKING:
    import pandas as pd

    from ._sync_faces import SyncRepository

OnCorrupt = Literal["raise", "warn"]
Filter = Mapping[str, Any]
OrderBy = str | Sequence[str]
Data = str | bytes | CorruptEntityError
_NUL_RE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class Repository(Generic[T]):
    """Async storage of one pydantic model type in a :class:`~symphony_nb.stores.Store`.

    ``Repository(Task, store)`` works over any store; the backends' classes
    (``SQLiteRepository(Task, path)`` and the others) build their store for you. Validation,
    id checks, versions, filter parsing, copies and error messages are done here, once, for
    every store.

    Models with an integer ``version`` field get optimistic concurrency: a write whose version
    is not the stored one raises :class:`ConflictError`, and a successful write bumps the
    version of the object you passed, so saving it again just works. A ``version`` field of
    another type is an ordinary field.

    ``SecretStr`` and ``SecretBytes`` fields (also in lists, dicts and nested models) are
    encrypted at rest with ``keyring`` (a :class:`Keyring`; without one, ``$SYMPHONY_NB_KEYS``
    when set): AES-256-GCM, bound to the collection, id, field and key id. Saving a
    non-empty secret without a key raises :class:`EncryptionError`; a stored secret that does
    not decrypt raises :class:`DecryptionError`; secret fields cannot be filtered on.

    ``cache=True`` (or a :class:`~symphony_nb.Cache`) puts a read cache over the store, as
    the outermost layer: reads by id and repeated ``find_all`` / ``count`` calls are answered
    from memory, never stale (see :class:`~symphony_nb.Cache`); :meth:`cache_stats` tells
    what it did. A store offering no change feed refuses it with ``InvalidArgumentError``.

    ``history=True`` keeps every change of every entity as a revision, written by the store
    in the same transaction as the change (``history=N``: the last N of each entity). Then
    :meth:`history`, ``get(id, version=k)``, ``as_of=`` reads, :meth:`revert`, :meth:`prune`
    and :meth:`purge` answer from them; :func:`~symphony_nb.change_context` records who made
    a change and why. Documents stored before history was turned on get a baseline revision
    then (an as-of read before that instant does not see them).
    """

    model: type[T]
    store: Store
    """Where the documents live: the store given, under the schema layer that keeps every
    document at the model's ``__schema_version__`` (see :mod:`symphony_nb.stores`)."""

    def __init__(
        self,
        model: type[T],
        store: Store,
        *,
        keyring: Keyring | None = None,
        cache: bool | Cache | None = None,
        history: bool | int | None = None,
    ) -> None:
        keep = check_keep(history)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"a repository stores a pydantic model class, got {model!r}")
        if "id" not in model.model_fields:
            raise TypeError(f"{model.__name__} has no 'id' field; a repository needs one")
        if not isinstance(store, Store):
            raise TypeError(f"a repository needs a symphony_nb.stores.Store, got {store!r}")
        if store.model is not model:
            raise TypeError(
                f"the store holds {store.model.__name__} documents, not {model.__name__}"
            )
        # Secrets are sealed directly above the backend's store, below every other layer.
        store = with_secrets(model, store, keyring)
        self._secrets = secret_plan(model)
        self.model = model
        self.store = store if find_layer(store, SchemaLayer) else SchemaLayer(store)
        if keep is not False:
            self.store.keep_history(keep)
        # The read cache goes outermost: it keeps documents as every other layer made them.
        self._cache = self._with_cache(cache)
        self._versioned = _field_is(model, "version", int)
        self._stamped = _field_is(model, "updated_at", datetime)
        register_model(model)

    def _with_cache(self, cache: object) -> CacheLayer | None:
        options = cache_options(cache)
        if options is None:
            return None
        layer = CacheLayer(self.store, options)
        self.store = layer
        return layer

    def cache_stats(self) -> CacheStats | None:
        """Hits, misses, invalidations and evictions of the read cache; None without one.

        See :class:`~symphony_nb.Cache` (``cache=True`` when opening the repository).
        """
        return None if self._cache is None else self._cache.stats()

    def _location(self, entity_id: str) -> str:
        return self.store.location(entity_id)

    # ------------------------------------------------------------------ conversions

    def decode(self, entity_id: str, document: str | bytes) -> T:
        """The entity a stored document of ``entity_id`` holds, validated by the model.

        Raises :class:`CorruptEntityError` (naming where it is stored) when the document does
        not validate or holds another id. For code that reads a store directly.
        """
        data = document
        try:
            entity = self.model.model_validate_json(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or '<document>'}: {err['msg']}"
                for err in exc.errors()[:5]
            )
            if isinstance(data, Upgraded):
                problems = (
                    f"{problems} (after upgrading it from schema version {data.origin} "
                    f"with {', '.join(data.steps)})"
                )
            raise CorruptEntityError(self._location(entity_id), problems) from None
        stored_id = getattr(entity, "id", None)
        if stored_id != entity_id:
            raise CorruptEntityError(
                self._location(entity_id), f"the document's id {stored_id!r} differs from its key"
            )
        return entity

    def decode_rows(
        self, rows: Iterable[tuple[str, Data]], *, on_corrupt: OnCorrupt = "raise"
    ) -> list[T]:
        """:meth:`decode` each ``(id, document)``; a CorruptEntityError in place of a document
        (see :func:`~symphony_nb.stores.merge_corrupt`) is raised, or warned about and skipped
        with ``on_corrupt="warn"``, as :meth:`find_all` does."""
        _check_on_corrupt(on_corrupt)
        out: list[T] = []
        with gc_paused():
            for entity_id, data in rows:
                try:
                    if isinstance(data, CorruptEntityError):
                        raise data
                    out.append(self.decode(entity_id, data))
                except CorruptEntityError as exc:
                    if on_corrupt == "raise":
                        raise
                    warn_caller(str(exc), CorruptEntityWarning)
        return out

    def _record(self, entity: T, now: Any) -> Record:
        if not isinstance(entity, self.model):
            raise TypeError(
                f"{type(self).__name__} stores {self.model.__name__}, got {type(entity).__name__}"
            )
        entity_id = check_id(getattr(entity, "id", None))
        expected = getattr(entity, "version", None) if self._versioned else None
        version = None if expected is None else expected + 1
        # Dump with the new version, stamp and normalised values in place, then restore: a
        # model_copy per write would double the cost of serialising.
        swaps = storable_fields(entity, entity_id)
        fields = entity.__dict__
        saved: dict[str, Any] = {n: fields[n] for n in ("version", "updated_at") if n in fields}
        saved.update((name, fields[name]) for name in swaps)
        fields.update(swaps)
        if version is not None:
            fields["version"] = version
        if self._stamped:
            fields["updated_at"] = now
        try:
            data = entity.model_dump_json(by_alias=True)
        except PydanticSerializationError as exc:
            raise UnstorableEntityError(
                f"cannot serialise {self.model.__name__} {entity_id!r}: {exc}"
            ) from None
        finally:
            fields.update(saved)
        if self._secrets is not None:  # pydantic writes a mask: put the real values back
            data = reveal(entity, self._secrets, data, entity_id)
        if "\\u0000" in data and _NUL_RE.search(data):
            raise UnstorableEntityError(
                f"{self.model.__name__} {entity_id!r} contains a NUL character (\\x00) in its text; "
                "no backend can store it faithfully (PostgreSQL refuses it, SQLite truncates it)"
            )
        return Record(entity_id, data, version, expected)

    def _written(self, entity: T, record: Record, now: Any) -> None:
        # The values were validated when the entity was built; bypass assignment validation.
        fields = entity.__dict__
        if record.version is not None:
            fields["version"] = record.version
        if self._stamped:
            fields["updated_at"] = now
        entity.__pydantic_fields_set__.update(
            ("version", "updated_at") if self._stamped else ("version",)
        )

    async def _store(
        self, entities: Sequence[T], records: Sequence[Record], now: Any, *, create: bool
    ) -> list[bool]:
        """Write ``records``, then give each written entity its new version and timestamp."""
        try:
            with written_at(now):
                written = await self.store.write(records, create=create)
        except StorageError as exc:
            landed = set(exc.written)
            for entity, record in zip(entities, records, strict=True):
                if record.id in landed:
                    self._written(entity, record, now)
            raise
        for entity, record, done in zip(entities, records, written, strict=True):
            if done:
                self._written(entity, record, now)
        return written

    def _query(
        self,
        filter_criteria: Filter | None,
        order_by: OrderBy | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Query:
        return parse_query(
            self.model, filter_criteria, order_by=order_by, limit=limit, offset=offset
        )

    # ------------------------------------------------------------------ public API

    async def save(self, entity: T) -> str:
        """Insert or replace ``entity``; return its id.

        Raises :class:`ConflictError` if the stored version is not ``entity.version``; on
        success ``entity.version`` and ``entity.updated_at`` are updated in place.
        """
        now = utc_now()
        record = self._record(entity, now)
        await self._store([entity], [record], now, create=True)
        return record.id

    async def save_many(self, entities: Iterable[T]) -> list[str]:
        """Save several entities, all or nothing where the backend allows; return their ids."""
        now = utc_now()
        items = list(entities)
        with gc_paused():
            records = [self._record(entity, now) for entity in items]
        seen: set[str] = set()
        for record in records:
            if record.id in seen:
                raise InvalidIdError(f"id {record.id!r} appears more than once in save_many")
            seen.add(record.id)
        if records:
            await self._store(items, records, now, create=True)
        return [record.id for record in records]

    async def find_by_id(self, id: str, *, as_of: datetime | None = None) -> T | None:
        """The entity with this id, or None if there is none.

        ``as_of`` (an aware datetime; needs ``history=``) reads it as it stood then.
        """
        entity_id = check_id(id)
        data = await self._at(as_of).get(entity_id)
        return None if data is None else self.decode(entity_id, data)

    async def get(self, id: str, *, version: int | None = None) -> T:
        """The entity with this id; raise :class:`NotFoundError` if there is none.

        ``version=k`` (needs ``history=``) returns the entity as revision k kept it;
        NotFoundError when there is no such revision (never made, or pruned) or it is the
        entity's deletion.
        """
        if version is None:
            entity = await self.find_by_id(id)
            if entity is None:
                raise NotFoundError(f"no {self.model.__name__} with id {id!r} in {self!r}")
            return entity
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"version must be an int, got {version!r}")
        entity_id = check_id(id)
        self._need_history("get(id, version=...)")
        found = await self.store.revisions(entity_id, version)
        if not found:
            raise NotFoundError(
                f"{self.model.__name__} id {id!r} has no version {version} in {self!r} "
                "(never written, or pruned)"
            )
        revision = self._revision(found[0])
        if revision.entity is None:
            raise NotFoundError(
                f"version {version} of {self.model.__name__} id {id!r} is its deletion; "
                f"get(id, version={version - 1}) is what was deleted"
            )
        return revision.entity

    async def find_all(
        self,
        filter_criteria: Filter | None = None,
        *,
        order_by: OrderBy | None = None,
        limit: int | None = None,
        offset: int = 0,
        on_corrupt: OnCorrupt = "raise",
        as_of: datetime | None = None,
    ) -> list[T]:
        """Entities matching ``filter_criteria`` (see :mod:`symphony_nb.filters`).

        ``order_by`` is a field, ``"-field"`` for descending, or a list of them (id order by
        default); ``limit`` and ``offset`` page the result. ``on_corrupt="warn"`` skips corrupt
        entities with a :class:`CorruptEntityWarning` instead of raising. ``as_of`` (an aware
        datetime; needs ``history=``) answers as the repository stood at that instant.
        """
        query = self._query(filter_criteria, order_by, limit, offset).unordered()
        store = self._at(as_of)
        rows = merge_corrupt(query, await store.select(query))
        return self.decode_rows(rows, on_corrupt=on_corrupt)

    async def count(
        self,
        filter_criteria: Filter | None = None,
        *,
        on_corrupt: OnCorrupt = "raise",
        as_of: datetime | None = None,
    ) -> int:
        """How many entities match ``filter_criteria`` (``as_of``: at that instant).

        A stored document that cannot be read at all (not JSON, or a file whose name is no
        entity id) raises :class:`CorruptEntityError`; ``on_corrupt="warn"`` leaves each one
        out of the count with a :class:`CorruptEntityWarning` instead, as :meth:`find_all`
        does. Documents are not validated against the model here (:meth:`find_all` does).
        """
        _check_on_corrupt(on_corrupt)
        counted = await self._at(as_of).count(parse_filter(self.model, filter_criteria))
        for _, error in counted.corrupt:
            if on_corrupt == "raise":
                raise error
            warn_caller(str(error), CorruptEntityWarning)
        return counted.total

    async def iter_all(
        self,
        filter_criteria: Filter | None = None,
        *,
        order_by: OrderBy | None = None,
        batch_size: int = 1000,
        on_corrupt: OnCorrupt = "raise",
    ) -> AsyncIterator[T]:
        """Iterate over matches in batches of ``batch_size``, keeping memory bounded.

        Without ``order_by`` it pages by id, so entities added or removed while iterating
        never cause duplicates or skips of the others.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        query = self._query(filter_criteria, order_by, batch_size, 0)
        while True:
            found = await self.store.select(query)
            rows = merge_corrupt(query, found)
            for entity in self.decode_rows(rows, on_corrupt=on_corrupt):
                yield entity
            if len(found.rows) < batch_size:
                return
            if query.order:
                query = Query(query.conditions, query.order, batch_size, query.offset + batch_size)
            else:
                query = Query(query.conditions, (), batch_size, 0, after_id=found.rows[-1][0])

    async def update(self, entity: T) -> bool:
        """Replace a stored entity; False (and nothing created) if its id is not stored."""
        now = utc_now()
        record = self._record(entity, now)
        (written,) = await self._store([entity], [record], now, create=False)
        return written

    async def delete(self, id: str) -> bool:
        """Delete the entity with this id; False if there was none."""
        return await self.store.remove(check_id(id))

    # ------------------------------------------------------------------ history

    def _need_history(self, what: str) -> None:
        if self.store.kept() is False:
            raise HistoryError(
                f"{what} needs history, and {self!r} keeps none; open the repository with "
                "history=True (every revision) or history=N (the last N of each entity)"
            )

    def _at(self, as_of: datetime | None) -> Store:
        """The store reads go to: the repository's, or its view at ``as_of``."""
        if as_of is None:
            return self.store
        if not isinstance(as_of, datetime):
            raise ValueError(f"as_of must be a datetime, got {as_of!r}")
        if as_of.tzinfo is None or as_of.utcoffset() is None:
            raise ValueError(
                f"as_of is the naive datetime {as_of.isoformat()}; give it a timezone "
                "(for example datetime.now(timezone.utc))"
            )
        self._need_history("as_of")
        return self.store.as_of(as_of.astimezone(UTC))

    def _revision(self, stored: StoredRevision) -> Revision[T]:
        entity = None
        if stored.json is not None:
            entity = self.decode(stored.id, stored.json)
        return Revision(
            stored.id, stored.version, stored.op, stored.at, stored.actor, stored.reason, entity
        )

    async def history(self, id: str) -> list[Revision[T]]:
        """The revisions of the entity with this id, oldest first (needs ``history=``).

        Each has ``version``, ``op`` (``"create"``, ``"update"`` or ``"delete"``), ``at``
        (UTC), ``actor``, ``reason`` (see :func:`~symphony_nb.change_context`) and
        ``entity`` (as it was; None for a delete). A deleted entity's history stays.
        Raises :class:`NotFoundError` for an id with no revision and no document.
        """
        entity_id = check_id(id)
        self._need_history("history()")
        found = await self.store.revisions(entity_id)
        if not found and await self.store.get(entity_id) is None:
            raise NotFoundError(
                f"no {self.model.__name__} with id {id!r} in {self!r}, and no history of one"
            )
        with gc_paused():
            return [self._revision(revision) for revision in found]

    async def revert(self, id: str, version: int, *, expected_version: int | None = None) -> T:
        """Write a new version whose content is revision ``version``'s; return it.

        History is never rewritten: the revert is one more revision (an ``update``, or a
        ``create`` that brings a deleted entity back). With ``expected_version``, raises
        :class:`ConflictError` unless the stored entity is at that version (a deleted one
        is at none). Its reason is ``"revert to version k"`` unless a
        :func:`~symphony_nb.change_context` gives one.
        """
        target = await self.get(id, version=version)
        current = await self.find_by_id(id)
        stored = getattr(current, "version", None) if self._versioned else None
        if expected_version is not None and (current is None or stored != expected_version):
            raise ConflictError(check_id(id), expected_version, stored)
        if self._versioned:
            # The stored version is what the write checks against; none: create it again.
            target.__dict__["version"] = stored if current is not None else 0
        _, reason = current_change()
        with change_context(reason=reason or f"revert to version {version}"):
            await self.save(target)
        return target

    async def prune(
        self, *, keep_last: int | None = None, older_than: datetime | None = None
    ) -> int:
        """Remove old revisions, never an entity's latest; return how many went.

        ``keep_last=N`` keeps the last N of each entity; ``older_than`` (an aware datetime)
        removes those made before it; both: those beyond the last N *and* older. Neither:
        the repository's ``history=N``.
        """
        self._need_history("prune()")
        if keep_last is not None and (
            isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1
        ):
            raise ValueError(f"keep_last must be an int >= 1, got {keep_last!r}")
        if older_than is not None:
            if not isinstance(older_than, datetime) or older_than.utcoffset() is None:
                raise ValueError(
                    f"older_than must be an aware datetime (with a timezone), got {older_than!r}"
                )
            older_than = older_than.astimezone(UTC)
        if keep_last is None and older_than is None:
            kept = self.store.kept()
            if not isinstance(kept, int):
                raise InvalidArgumentError(
                    "prune() needs keep_last=N or older_than=when (this repository keeps "
                    "every revision: history=True)"
                )
            keep_last = kept
        return await self.store.prune(keep_last=keep_last, older_than=older_than)

    async def purge(self, id: str) -> int:
        """Remove the entity with this id and every revision of it; return how many records
        went (the entity counts one). For erasure: nothing of it stays, not even a delete
        revision. Works with and without history."""
        return await self.store.purge(check_id(id))

    async def history_dataframe(self, id: str) -> pd.DataFrame:
        """The revisions of one entity as a DataFrame, one row per revision: ``version``,
        ``op``, ``at``, ``actor``, ``reason``, then the entity's columns (empty for a delete).
        """
        from .dataframes import revisions_to_dataframe

        return revisions_to_dataframe(self.model, await self.history(id))

    async def schema_versions(self) -> dict[int, int]:
        """How many stored documents are at each schema version, e.g. ``{1: 40, 2: 60}``.

        The model's version is its ``__schema_version__`` class attribute (1 when absent);
        documents stored before a model declared one count as version 1. Reads return every
        document at the current version whatever it is stored at; :meth:`migrate` rewrites
        the older ones.
        """
        return await census(schema_layer(self.store))

    async def migrate(self, *, batch_size: int = 500, progress: bool = True) -> MigrationReport:
        """Rewrite every document stored at an older schema version at the current one.

        Documents go through the model's upgraders (see :func:`symphony_nb.upgrader`) and
        its validation, then are written in batches of ``batch_size``, each all or nothing
        and through the version check: an entity edited meanwhile is read again, never
        overwritten with its content from before the edit. ``version`` goes up by one;
        ``updated_at`` is kept. A second run rewrites nothing; an interrupted one resumes
        where it stopped. Documents that cannot be upgraded are left as stored and listed in
        the report's ``failed``. Shows a progress bar (``tqdm.auto``) unless ``progress=False``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")

        layer = schema_layer(self.store)
        _, reason = current_change()
        with change_context(reason=reason or f"migrate to schema version {layer.version}"):
            return await self._migrate(layer, batch_size, progress)

    async def _migrate(
        self, layer: SchemaLayer, batch_size: int, progress: bool
    ) -> MigrationReport:
        from tqdm.auto import tqdm

        before = await census(layer)
        report = MigrationReport(layer.version, found=before)
        report.already_current = before.get(layer.version, 0)
        todo = sum(count for version, count in before.items() if version < layer.version)
        with tqdm(total=todo, desc=f"migrate {self.model.__name__}", disable=not progress) as bar:
            for conditions in layer.older:
                cursor: str | None = None
                while True:
                    page = await layer.inner.select(
                        Query(conditions, limit=batch_size, after_id=cursor)
                    )
                    if not page.rows:
                        break
                    try:
                        written = await self._migrate_page(layer, page.rows, report)
                    except ConflictError:
                        report.retried += 1  # edited meanwhile: read the page again
                        continue
                    bar.update(written)
                    cursor = page.rows[-1][0]
                    if len(page.rows) < batch_size:
                        break
        newer = {v: n for v, n in report.found.items() if v > layer.version}
        if newer:
            found = await layer.inner.select(
                Query((Condition((SCHEMA_KEY,), "$gt", layer.version),))
            )
            for entity_id, document in found.rows:
                try:
                    if isinstance(document, CorruptEntityError):
                        raise document
                    layer.current(entity_id, document)
                except CorruptEntityError as exc:
                    report.failed.append((entity_id, str(exc)))
        return report

    async def _migrate_page(
        self, layer: SchemaLayer, rows: Sequence[tuple[str, Data]], report: MigrationReport
    ) -> int:
        """Upgrade and write one page of older documents, all or nothing; return how many."""
        records: list[Record] = []
        failed: list[tuple[str, str]] = []
        with gc_paused():
            for entity_id, document in rows:
                outcome = self._migrated(layer, entity_id, document)
                if isinstance(outcome, Record):
                    records.append(outcome)
                elif outcome is not None:
                    failed.append((entity_id, outcome))
        if records:
            try:
                await layer.write(records, create=False)
            finally:
                if self._cache is not None:  # written beneath the cache, past its invalidation
                    self._cache.forget([record.id for record in records])
            report.batches += 1
        report.upgraded += len(records)
        report.failed.extend(failed)
        return len(rows)

    def _migrated(self, layer: SchemaLayer, entity_id: str, document: Data) -> Record | str | None:
        """The record that rewrites one older document, the error that prevents it, or None
        when it is current already."""
        try:
            if isinstance(document, CorruptEntityError):
                raise document
            version, rest = layer.stored_version(entity_id, document)
            if version == layer.version:
                return None  # written at the current version meanwhile
            text = layer.upgraded(layer.upgrade(entity_id, version, rest), version)
            entity = self.decode(entity_id, text)
            # The stamp it had: a migration is not an edit.
            return self._record(entity, getattr(entity, "updated_at", None))
        except (CorruptEntityError, UnstorableEntityError) as exc:
            return str(exc)

    async def to_dataframe(
        self,
        filter_criteria: Filter | None = None,
        *,
        columns: Sequence[str] | None = None,
        order_by: OrderBy | None = None,
        limit: int | None = None,
        flatten: bool = False,
        on_corrupt: OnCorrupt = "raise",
    ) -> pd.DataFrame:
        """Matching entities as a pandas DataFrame indexed by id (see :mod:`symphony_nb.dataframes`).

        Enum columns are categoricals, datetimes stay UTC, dict fields stay dicts unless
        ``flatten=True`` (dotted column names); ``columns`` selects fields. Every entity is
        validated as by :meth:`find_all`: a corrupt one raises :class:`CorruptEntityError`,
        or with ``on_corrupt="warn"`` is left out with a :class:`CorruptEntityWarning`.
        """
        from .dataframes import repository_to_dataframe

        return await repository_to_dataframe(
            self,
            filter_criteria,
            columns=columns,
            order_by=order_by,
            limit=limit,
            flatten=flatten,
            on_corrupt=on_corrupt,
        )

    async def save_dataframe(self, df: pd.DataFrame) -> list[str]:
        """Write the new and edited rows of ``df`` (as made by :meth:`to_dataframe`) back.

        Returns the ids written: rows equal to the stored entity are not written, so an
        unedited frame returns ``[]``; a row without an id gets a fresh one. Every row is
        validated first; if any is invalid (an empty cell in a stored row's required field
        included), :class:`RowValidationError` lists each bad row and field and nothing is
        saved. Stale rows raise :class:`ConflictError`.
        """
        from .dataframes import save_dataframe

        return await save_dataframe(self, df)

    async def rotate_keys(self, *, progress: bool = True, batch_size: int = 500) -> int:
        """Re-encrypt under the keyring's primary key every secret stored under another key.

        Works in batches of ``batch_size`` entities, each written all or nothing through the
        version check; an entity edited meanwhile is read again (the edit wins, already under
        the primary key). Returns the number of entities rewritten: a second run rewrites
        none, and a run that was killed resumes where it stopped. Shows a progress bar
        (``tqdm.auto``) unless ``progress=False``. A model without secrets has nothing to do.
        With history on, the secrets of every kept revision are then sealed again too, in
        place (only their stored form changes; they are not counted); a repository opened
        without ``history=`` leaves the revisions as they are. Then :meth:`key_report` shows
        whether a retired key is still needed.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        layer = secret_layer(self.store)
        if layer is None:
            return 0
        from tqdm.auto import tqdm

        total = (await self.store.count(())).total
        _, reason = current_change()
        with (
            tqdm(total=total, desc=f"rotate {self.model.__name__}", disable=not progress) as bar,
            change_context(reason=reason or "rotate keys"),
        ):
            try:
                return await layer.rotate(
                    batch_size=batch_size, on_batch=lambda seen, _: bar.update(seen)
                )
            finally:
                if self._cache is not None:  # written beneath the cache, past its invalidation
                    self._cache.forget_all()

    async def key_report(self) -> dict[str, int]:
        """``{key id: number of encrypted values}`` over every stored entity and every kept
        revision (with history on; a repository opened without ``history=`` does not look at
        revisions), by key id.

        Values under a key that is not the primary are what :meth:`rotate_keys` rewrites;
        empty secrets are stored as ``""`` and not counted. ``{}`` for a model without secrets.
        """
        layer = secret_layer(self.store)
        return {} if layer is None else await layer.key_report()

    async def close(self) -> None:
        """Release the backend's resources; safe to call more than once."""
        await self.store.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def sync(self) -> SyncRepository[T]:
        """The same methods, called without ``await`` (for scripts and notebook cells)."""
        from ._sync_faces import SyncRepository

        return SyncRepository(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model.__name__})"

    def _repr_html_(self) -> str:
        """Backend, location and count of entities as HTML, for notebooks; never raises."""
        return repository_html(self)


def _field_is(model: type[BaseModel], name: str, kind: type) -> bool:
    """Whether ``model`` has a field ``name`` that holds values of ``kind`` (int: not bool)."""
    info = model.model_fields.get(name)
    if info is None:
        return False
    inner, _ = unwrap(info.annotation)
    if kind is int or info.annotation is None:
        return inner is kind
    try:
        return isinstance(TypeAdapter(info.annotation).validate_python(utc_now()), kind)
    except ValidationError:
        return False


def _check_on_corrupt(on_corrupt: object) -> None:
    if on_corrupt not in ("raise", "warn"):
        raise ValueError(f"on_corrupt must be 'raise' or 'warn', got {on_corrupt!r}")
