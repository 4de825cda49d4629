"""Schema versions: every stored document carries its model's version; older ones are upgraded.

A model declares its version as a class attribute, ``__schema_version__ = 2`` (absent: 1),
and registers one upgrader per step with :func:`upgrader`. Every write stores the document
with the version under the top-level key ``"$"``, written first (a document without it is
version 1, so nothing changes for a model that never declares a version). Every read goes
through :class:`SchemaLayer`, which every repository puts over its store:

* a current document is handed on without the key;
* an older one goes through the upgraders in order, then on to the model's validation;
* a newer one (written by a newer definition of the model) is refused with
  :class:`SchemaVersionError`.

Queries stay exact over mixed versions: the layer asks the store, through an index on the
key where the store has one, for the documents that are not current; when there are none
(the usual case, and always after :meth:`Repository.migrate`) the query runs unchanged in
the store. Otherwise the current documents are queried in the store and the others are
upgraded and evaluated here, and the two are merged in the query's order before paging.
"""

from __future__ import annotations

import heapq
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import from_json

from ._errors import CorruptEntityError, SchemaError, SchemaVersionError
from ._fields import model_fields
from ._filters import (
    Condition,
    Query,
    apply_query,
    dump_document,
    matches,
    needs_exact,
    parse_document,
)
from ._gc import gc_paused
from .stores import (
    SCHEMA_KEY,
    Change,
    Claimed,
    Counted,
    Document,
    Record,
    Selection,
    Store,
    StoredRevision,
    StoreLayer,
    find_layer,
)

__all__ = [
    "MigrationReport",
    "SchemaLayer",
    "Upgraded",
    "Upgrader",
    "census",
    "schema_layer",
    "schema_version",
    "upgrader",
]


Upgrader = Callable[[dict[str, Any]], dict[str, Any]]
F = TypeVar("F", bound=Callable[..., Any])

_MARKER = re.compile(r'\{\s*"\$"\s*:\s*(-?[0-9]+)\s*([,}])')
_MARKER_BYTES = re.compile(rb'\{\s*"\$"\s*:\s*(-?[0-9]+)\s*([,}])')
_NEEDLE = f'"{SCHEMA_KEY}"'
_NEEDLE_BYTES = _NEEDLE.encode()
_HEAD = 16
"""The key, when first, begins within this many characters (PostgreSQL writes ``{"$": ``,
files an indented document)."""
_KEY_FIRST = re.compile(r'\{\s*"\$"')
_KEY_FIRST_BYTES = re.compile(rb'\{\s*"\$"')


@dataclass(frozen=True)
class _Step:
    owner: type[BaseModel]
    upgrade: Upgrader


_REGISTRY: dict[str, dict[int, _Step]] = {}
_LOCK = threading.Lock()
_generation = 0
"""Bumped by every registration, so a layer knows when to look its chain up again."""


def _key(model: type[BaseModel]) -> str:
    return f"{model.__module__}.{model.__qualname__}"


def _name(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", None) or repr(function)


def schema_version(model: type[BaseModel]) -> int:
    """``model.__schema_version__`` (1 when absent); :class:`SchemaError` unless a positive int."""
    declared = getattr(model, "__schema_version__", 1)
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
        raise SchemaError(
            f"{model.__name__}.__schema_version__ must be a positive int, got {declared!r}"
        )
    return declared


def upgrader(model: type[BaseModel], *, from_version: int) -> Callable[[F], F]:
    """Register the decorated function as the upgrader of ``model``'s documents from
    ``from_version`` to ``from_version + 1``.

    The function takes the stored JSON document (a dict, without the schema key) and returns
    the document of the next version; it may change the dict it is given::

        @symphony_nb.upgrader(Note, from_version=1)
        def split_tag(doc: dict) -> dict:
            tag = doc.pop("tag", None)
            return {**doc, "tags": [tag] if tag else []}

    Upgraders are registered by the model's name (module and qualified name), so running a
    notebook cell again, or redefining the model in another cell, replaces them: the newest
    definition wins. Two different functions for one step of one model definition, a step
    at or beyond ``model.__schema_version__``, or a function that is not callable raise
    :class:`SchemaError`.
    """
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise SchemaError(f"upgrader() takes a pydantic model class, got {model!r}")
    current = schema_version(model)
    if isinstance(from_version, bool) or not isinstance(from_version, int):
        raise SchemaError(f"from_version must be an int, got {from_version!r}")
    if not 1 <= from_version < current:
        raise SchemaError(
            f"{model.__name__} is at schema version {current}, so an upgrader takes a "
            f"from_version from 1 to {current - 1}, not {from_version}"
        )

    def register(function: F) -> F:
        if not callable(function):
            raise SchemaError(f"an upgrader must be callable, got {function!r}")
        with _LOCK:
            steps = _REGISTRY.setdefault(_key(model), {})
            known = steps.get(from_version)
            if (
                known is not None
                and known.owner is model
                and known.upgrade is not function
                and _name(known.upgrade) != _name(function)
            ):
                raise SchemaError(
                    f"{model.__name__} already has an upgrader from schema version "
                    f"{from_version}: {_name(known.upgrade)}; {_name(function)} cannot be a "
                    "second one (merge them into one function)"
                )
            steps[from_version] = _Step(model, function)
            global _generation
            _generation += 1
        return function

    return register


def upgraders(model: type[BaseModel]) -> dict[int, Upgrader]:
    """The upgrader of every step below ``model``'s version; :class:`SchemaError` on a gap."""
    current = schema_version(model)
    chain: dict[int, Upgrader] = {}
    if current == 1:
        return chain
    keys = [_key(base) for base in model.__mro__ if isinstance(base, type)]
    with _LOCK:
        for version in range(1, current):
            step = next(
                (
                    _REGISTRY[key][version]
                    for key in keys
                    if key in _REGISTRY and version in _REGISTRY[key]
                ),
                None,
            )
            if step is None:
                raise SchemaError(
                    f"{model.__name__} is at schema version {current} but no upgrader takes "
                    f"its documents from version {version} to {version + 1}; register one "
                    f"with @symphony_nb.upgrader({model.__name__}, from_version={version})"
                )
            chain[version] = step.upgrade
    return chain


class Upgraded(str):
    """A document upgraded by the schema layer: the JSON text, plus where it came from.

    ``origin`` is the stored schema version and ``steps`` the upgraders it went through, so
    a document that does not validate afterwards is reported with them.
    """

    origin: int
    steps: tuple[str, ...]

    def __new__(cls, text: str, origin: int, steps: tuple[str, ...]) -> Upgraded:
        made = super().__new__(cls, text)
        made.origin = origin
        made.steps = steps
        return made


class SchemaLayer(StoreLayer):
    """Stores documents with their model's schema version; hands on only current ones.

    Every :class:`~symphony_nb.Repository` wraps its store in one (see the module
    docstring). ``version`` is the model's ``__schema_version__``.
    """

    PAGE = 500
    """How many older documents are read at a time when a query pages in id order."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.version = schema_version(self.model)
        taken = [spec.name for spec in model_fields(self.model).values()]
        first = [name for name in taken if len(name) == 1 and name < SCHEMA_KEY]
        if first:
            raise SchemaError(
                f"{self.model.__name__} has a field stored as {first[0]!r}, which PostgreSQL "
                f"would keep before {SCHEMA_KEY!r}, the key of a document's schema version "
                "that every store keeps first; give it another alias"
            )
        if SCHEMA_KEY in taken:
            raise SchemaError(
                f"{self.model.__name__} has a field stored as {SCHEMA_KEY!r}, the key that "
                "holds a document's schema version; give it another alias"
            )
        self._chain_at = -1
        self._steps: dict[int, Upgrader] = {}
        self._step_names: dict[int, tuple[str, ...]] = {}
        self._prefix = f'{{"{SCHEMA_KEY}":{self.version},'
        key = (SCHEMA_KEY,)
        # The documents that are not current, as conditions a store can answer from an index
        # on the key (ranges: SQLite scans the table for "IS NOT NULL" without statistics).
        # At version 1 those are the newer ones; a key that is no number is refused on read.
        if self.version == 1:
            self._not_current: tuple[tuple[Condition, ...], ...] = ((Condition(key, "$gt", 1),),)
            self._current: tuple[Condition, ...] = (Condition(key, "$exists", False),)
        else:
            self._not_current = (
                (Condition(key, "$exists", False),),
                (Condition(key, "$lt", self.version),),
                (Condition(key, "$gt", self.version),),
            )
            self._current = (Condition(key, "$eq", self.version),)

    # ------------------------------------------------------------------ documents

    def stored_version(self, entity_id: str, document: Document) -> tuple[int, Document]:
        """The schema version of a stored document, and the document without its key.

        The key is the document's first (every store keeps it there, see
        :data:`~symphony_nb.stores.SCHEMA_KEY`); a document that does not begin with it is
        version 1.
        """
        if isinstance(document, str):
            if document.startswith(self._prefix):  # as this layer writes it
                return self.version, "{" + document[len(self._prefix) :]
            if not _KEY_FIRST.match(document):
                return 1, document
            found = _MARKER.match(document)
            if found is not None:
                rest: Document = "{" + document[found.end() :] if found.group(2) == "," else "{}"
                return self._checked(entity_id, int(found.group(1))), rest
        else:
            raw = bytes(document)
            if not _KEY_FIRST_BYTES.match(raw):
                return 1, document
            found_bytes = _MARKER_BYTES.match(raw)
            if found_bytes is not None:
                rest = b"{" + raw[found_bytes.end() :] if found_bytes.group(2) == b"," else b"{}"
                return self._checked(entity_id, int(found_bytes.group(1))), rest
        # The key first, holding something else than a number: read it to say what.
        doc = self._parse(entity_id, document)
        if not isinstance(doc, dict) or SCHEMA_KEY not in doc:
            return 1, document
        version = doc.pop(SCHEMA_KEY)
        if isinstance(version, bool) or not isinstance(version, int):
            raise CorruptEntityError(
                self.location(entity_id), f"its schema version {version!r} is not an int"
            )
        return self._checked(entity_id, version), dump_document(doc)

    def _checked(self, entity_id: str, version: int) -> int:
        if version < 1:
            raise CorruptEntityError(
                self.location(entity_id), f"its schema version {version} is not positive"
            )
        return version

    def _parse(self, entity_id: str, document: Document) -> Any:
        try:  # pydantic's parser: as fast as orjson here, and exact for any integer
            return from_json(document, allow_inf_nan=False)
        except ValueError as exc:
            raise CorruptEntityError(self.location(entity_id), f"not JSON: {exc}") from None

    def current(self, entity_id: str, document: Document) -> Document:
        """``document`` as the current version of the model stores it, without the key.

        Raises :class:`SchemaVersionError` for a newer document and
        :class:`CorruptEntityError` when an upgrader fails.
        """
        version, rest = self.stored_version(entity_id, document)
        if version == self.version:
            return rest
        return self.upgraded(self.upgrade(entity_id, version, rest), version)

    def upgraded(self, text: str, version: int) -> Upgraded:
        """``text``, upgraded from ``version``, marked with the upgraders it went through."""
        return Upgraded(text, version, self._names(version))

    def _names(self, version: int) -> tuple[str, ...]:
        chain = self._chain()
        names = self._step_names.get(version)
        if names is None:
            names = tuple(_name(chain[step]) for step in range(version, self.version))
            self._step_names[version] = names
        return names

    def upgrade(self, entity_id: str, version: int, document: Document) -> str:
        """A document of schema ``version`` (without its key), upgraded to the model's version.

        Raises :class:`SchemaVersionError` for a version newer than the model's and
        :class:`CorruptEntityError` when an upgrader fails or returns what JSON cannot hold.
        """
        if version > self.version:
            raise SchemaVersionError(self.location(entity_id), entity_id, version, self.version)
        chain = self._chain()
        doc = self._parse(entity_id, document)
        steps: list[str] = []
        for step in range(version, self.version):
            function = chain[step]
            steps.append(_name(function))
            what = f"upgrader {_name(function)} (schema version {step} to {step + 1})"
            if not isinstance(doc, dict):
                raise CorruptEntityError(
                    self.location(entity_id),
                    f"{what} needs a JSON object, got a {type(doc).__name__}",
                )
            try:
                doc = function(doc)
            except Exception as exc:
                raise CorruptEntityError(
                    self.location(entity_id),
                    f"{what} failed on a document stored at schema version {version}: "
                    f"{type(exc).__name__}: {exc}",
                ) from exc
            if not isinstance(doc, dict):
                raise CorruptEntityError(
                    self.location(entity_id),
                    f"{what} returned a {type(doc).__name__}, not a dict",
                )
        doc.pop(SCHEMA_KEY, None)
        try:
            text = dump_document(doc)
        except (TypeError, ValueError) as exc:
            raise CorruptEntityError(
                self.location(entity_id),
                f"upgrader {steps[-1]} returned a value JSON cannot hold: {exc}",
            ) from None
        return text

    def _chain(self) -> dict[int, Upgrader]:
        if self._chain_at != _generation:
            self._steps = upgraders(self.model)
            self._step_names = {}
            self._chain_at = _generation
        return self._steps

    def stamped(self, record: Record) -> Record:
        """``record`` with the model's schema version written first in its document."""
        if self.version == 1:
            return record
        body = record.json[1:].lstrip()
        text = self._prefix[:-1] + "}" if body == "}" else self._prefix + body
        return replace(record, json=text)

    # ------------------------------------------------------------------ the contract

    async def get(self, entity_id: str) -> Document | None:
        self._chain()
        document = await self.inner.get(entity_id)
        return None if document is None else self.current(entity_id, document)

    def revision_document(self, revision: StoredRevision) -> Document:
        """A kept revision at the model's current schema version, upgraded as ``get`` does."""
        self._chain()
        assert revision.json is not None
        return self.current(revision.id, revision.json)

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        self._chain()
        blind = [record.id for record in records if record.expected is None]
        if blind:
            # No version check protects these: refuse to replace a newer document's fields.
            newer = Condition((SCHEMA_KEY,), "$gt", self.version)
            found = await self.inner.select(Query((Condition(("id",), "$in", tuple(blind)), newer)))
            for entity_id, document in found.rows:
                if not isinstance(document, CorruptEntityError):
                    version, _ = self.stored_version(entity_id, document)
                    raise SchemaVersionError(
                        self.location(entity_id), entity_id, version, self.version
                    )
        return await self.inner.write([self.stamped(record) for record in records], create=create)

    async def claim(self, query: Query, change: Change) -> Claimed:
        """Claim through ``inner``, keeping its atomic claim; ``change`` sees documents as
        ``select`` hands them on.

        An older document is a candidate only if its upgraded form matches ``query`` too.
        One that would match only once upgraded is not found by the inner store's query:
        when that finds nothing and older documents are stored, this claims through its own
        ``select`` and ``write``, which see every document upgraded.
        """

        def current(entity_id: str, document: Document) -> Record | None:
            try:
                seen = self.current(entity_id, document)
            except (CorruptEntityError, SchemaVersionError):
                return None  # reported where the collection is read
            if isinstance(seen, Upgraded) and not matches(
                query.conditions, parse_document(seen, exact=True)
            ):
                return None
            record = change(entity_id, seen)
            return None if record is None else self.stamped(record)

        claimed = await self.inner.claim(query, current)
        if claimed.record is not None or not await self._any_others(None):
            return claimed
        found = await Store.claim(self, query, change)
        return Claimed(found.record, claimed.conflicts + found.conflicts)

    async def select(self, query: Query) -> Selection:
        if not await self._any_others(query.after_id):
            found = await self.inner.select(query)
            return Selection(self._current_rows(found.rows), found.corrupt)
        need = None if query.limit is None else query.offset + query.limit
        found = await self.inner.select(
            replace(query, conditions=query.conditions + self._current, limit=need, offset=0)
        )
        broken: dict[str, CorruptEntityError] = dict(found.corrupt)
        rows: list[tuple[str, Document]] = []
        for entity_id, document in self._current_rows(found.rows):
            if isinstance(document, CorruptEntityError):
                broken.setdefault(entity_id, document)  # changed version since the probe
            else:
                rows.append((entity_id, document))
        bound = None
        if not query.order and need and len(found.rows) == need:
            bound = found.rows[-1][0]  # no older document after it can make the page
        exact = needs_exact(query.conditions, query.order)
        with gc_paused():
            older = await self._older(query, bound, None if query.order else need, broken, exact)
        if not query.order:
            return Selection(self._by_id(query, rows, older), sorted(broken.items()))
        texts: dict[str, Document] = dict(rows)
        docs: list[tuple[str, Any]] = []
        for entity_id, document in rows:
            try:
                docs.append((entity_id, parse_document(document, exact=exact)))
            except ValueError as exc:
                broken.setdefault(
                    entity_id, CorruptEntityError(self.location(entity_id), f"not JSON: {exc}")
                )
        for entity_id, version, doc, text in older:
            texts[entity_id] = self.upgraded(text, version)
            docs.append((entity_id, doc))
        page = Query((), query.order, query.limit, query.offset)
        ids = apply_query(page, docs)
        return Selection(
            [(entity_id, texts[entity_id]) for entity_id in ids], sorted(broken.items())
        )

    def _by_id(
        self,
        query: Query,
        rows: list[tuple[str, Document]],
        older: list[tuple[str, int, Any, str]],
    ) -> list[tuple[str, Document | CorruptEntityError]]:
        """Current ``rows`` (in id order) and ``older`` merged in id order, then paged."""
        upgraded: list[tuple[str, Document | CorruptEntityError]] = [
            (entity_id, self.upgraded(text, version)) for entity_id, version, _, text in older
        ]
        if query.any_order:  # the whole result, which the caller sorts by id
            return [*rows, *upgraded]
        upgraded.sort(key=itemgetter(0))  # one sorted run per kind of older document
        merged = list(heapq.merge(rows, upgraded, key=itemgetter(0)))
        stop = None if query.limit is None else query.offset + query.limit
        return merged[query.offset : stop]

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        if not await self._any_others(None):
            return await self.inner.count(conditions)
        counted = await self.inner.count(conditions + self._current)
        broken: dict[str, CorruptEntityError] = dict(counted.corrupt)
        exact = needs_exact(conditions)
        with gc_paused():
            older = await self._older(Query(conditions), None, None, broken, exact)
        return Counted(counted.total + len(older), sorted(broken.items()))

    # ------------------------------------------------------------------ older documents

    @property
    def older(self) -> tuple[tuple[Condition, ...], ...]:
        """Conditions selecting the stored documents older than the model (one set per kind)."""
        return self._not_current[:2] if self.version > 1 else ()

    async def _any_others(self, after_id: str | None = None) -> bool:
        # A count, not a select with a limit: SQLite would answer "ORDER BY id LIMIT 1" by
        # walking the primary key and reading the key of every row; a count reads the index.
        # Over the whole store, even for a page after ``after_id``: conditions on the key
        # alone are what a scanning store can answer without reading every document.
        self._chain()
        for conditions in self._not_current:
            if (await self.inner.count(conditions)).total:
                return True
        return False

    async def _older(
        self,
        query: Query,
        bound: str | None,
        need: int | None,
        broken: dict[str, CorruptEntityError],
        exact: bool,
    ) -> list[tuple[str, int, Any, str]]:
        """The documents that are not current and, upgraded, match ``query``'s conditions.

        Read in id order after ``query.after_id`` and up to ``bound``; with ``need``, each
        kind stops once it has that many matches (the rest cannot make the page). Those that
        cannot be upgraded go to ``broken``. Returns (id, stored version, document for
        filters and ordering, or None when the query has neither, JSON text).
        """
        out: list[tuple[str, int, Any, str]] = []
        evaluate = bool(query.conditions or query.order)
        limit = None if need is None else max(need, self.PAGE)
        upto = () if bound is None else (Condition(("id",), "$lte", bound),)
        for conditions in self._not_current:
            cursor = query.after_id
            kept = 0
            while True:
                page = await self.inner.select(
                    Query(conditions + upto, limit=limit, after_id=cursor)
                )
                for entity_id, document in page.rows:
                    if isinstance(document, CorruptEntityError):
                        broken.setdefault(entity_id, document)
                        continue
                    try:
                        version, rest = self.stored_version(entity_id, document)
                        if version == self.version:
                            continue  # became current meanwhile: the store query has it
                        text = self.upgrade(entity_id, version, rest)
                        doc = parse_document(text, exact=exact) if evaluate else None
                    except CorruptEntityError as exc:
                        broken.setdefault(entity_id, exc)
                        continue
                    if not evaluate or matches(query.conditions, doc):
                        out.append((entity_id, version, doc, text))
                        kept += 1
                for entity_id, error in page.corrupt:
                    broken.setdefault(entity_id, error)
                if limit is None or len(page.rows) < limit or (need is not None and kept >= need):
                    break
                cursor = page.rows[-1][0]
        return out

    def _current_rows(
        self, rows: list[tuple[str, Document | CorruptEntityError]]
    ) -> list[tuple[str, Document | CorruptEntityError]]:
        if self.version == 1:
            # The common case, a model that never declared a version: hand the rows on as
            # they are unless one begins with the key (it would be newer, or not a number).
            for _, document in rows:
                if isinstance(document, str):
                    if _NEEDLE in document[:_HEAD]:
                        break
                elif isinstance(document, bytes) and _NEEDLE_BYTES in document[:_HEAD]:
                    break
            else:
                return rows
        out: list[tuple[str, Document | CorruptEntityError]] = []
        for entity_id, document in rows:
            if isinstance(document, CorruptEntityError):
                out.append((entity_id, document))
                continue
            try:
                out.append((entity_id, self.current(entity_id, document)))
            except CorruptEntityError as exc:
                out.append((entity_id, exc))
        return out


def schema_layer(store: Store) -> SchemaLayer:
    """The schema layer in ``store``'s stack (every repository's store has one)."""
    layer = find_layer(store, SchemaLayer)
    if layer is None:
        raise TypeError(f"{store!r} has no schema layer; use a Repository's store")
    return layer


async def census(layer: SchemaLayer) -> dict[int, int]:
    """How many stored documents are at each schema version (documents that are not JSON,
    or hold no valid version, are not counted)."""
    key = (SCHEMA_KEY,)
    counts: dict[int, int] = {}
    unmarked = await layer.inner.count((Condition(key, "$exists", False),))
    if unmarked.total:
        counts[1] = unmarked.total
    for version in range(2, layer.version + 1):
        found = await layer.inner.count((Condition(key, "$eq", version),))
        if found.total:
            counts[version] = found.total
    newer = await layer.inner.select(Query((Condition(key, "$gt", layer.version),)))
    for entity_id, document in newer.rows:
        if isinstance(document, CorruptEntityError):
            continue
        try:
            version, _ = layer.stored_version(entity_id, document)
        except CorruptEntityError:
            continue
        counts[version] = counts.get(version, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class MigrationReport:
    """What :meth:`Repository.migrate` did.

    ``found`` counts the documents it met per stored schema version (the current one
    included), ``upgraded`` how many it rewrote at the current version, ``already_current``
    how many needed nothing, and ``failed`` lists ``(id, error)`` for each document it could
    not upgrade (left as stored). ``batches`` is how many all-or-nothing writes it made and
    ``retried`` how many of them it redid after a concurrent edit.
    """

    version: int
    found: dict[int, int] = field(default_factory=dict)
    upgraded: int = 0
    already_current: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    batches: int = 0
    retried: int = 0

    def __str__(self) -> str:
        found = ", ".join(f"v{version}: {count}" for version, count in self.found.items())
        text = (
            f"migrated to schema version {self.version}: {self.upgraded} upgraded, "
            f"{self.already_current} already current, {len(self.failed)} failed "
            f"(found {found or 'nothing'})"
        )
        for entity_id, error in self.failed[:10]:
            text += f"\n  {entity_id}: {error}"
        if len(self.failed) > 10:
            text += f"\n  ... and {len(self.failed) - 10} more"
        return text

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr><td>v{version}</td><td>{count}</td></tr>" for version, count in self.found.items()
        )
        failed = "".join(
            f"<tr><td><code>{escape(entity_id)}</code></td><td>{escape(error)}</td></tr>"
            for entity_id, error in self.failed[:50]
        )
        more = f"<p>... and {len(self.failed) - 50} more</p>" if len(self.failed) > 50 else ""
        return (
            f"<div><b>migrated to schema version {self.version}</b>: {self.upgraded} upgraded, "
            f"{self.already_current} already current, {len(self.failed)} failed"
            f"<table><tr><th>stored at</th><th>documents</th></tr>{rows}</table>"
            + (f"<table><tr><th>id</th><th>error</th></tr>{failed}</table>{more}" if failed else "")
            + "</div>"
        )
