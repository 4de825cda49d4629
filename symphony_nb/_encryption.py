"""Secret fields encrypted at rest, for every backend: the :class:`SecretLayer`.

A model's ``SecretStr`` and ``SecretBytes`` values (also in lists, dicts and nested models)
are found by type, once per model (:func:`secret_plan`). The repository writes documents
with the secrets revealed (:func:`reveal`); the layer, directly above the backend's store,
seals each of them before it reaches the store and opens them again on every read, so no
backend ever holds a plaintext secret and every layer above sees documents as usual::

    Repository[T]
    └── ... other layers
        └── SecretLayer(keyring)    seal on write, open on read, rotate_keys, key_report
            └── the backend's Store

An empty secret is stored as ``""`` (there is nothing to hide), so a model with secret
fields works without a keyring until a non-empty secret is saved. A stored ``"**********"``
(pydantic's mask, all that a store written before this layer holds of a secret) reads back
as the mask with a :class:`CorruptEntityWarning`; any other plaintext is refused.
"""

from __future__ import annotations

from collections import abc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr

from ._errors import (
    CorruptEntityError,
    CorruptEntityWarning,
    DecryptionError,
    EncryptionError,
    UnstorableEntityError,
)
from ._fields import SECRET_TYPES, holds_secret, json_key, unwrap
from ._filters import dump_document, parse_document
from ._keyring import ENV, Keyring, Unsealable, context_of, is_sealed
from ._warnings import warn_caller
from .stores import (
    Condition,
    Counted,
    Document,
    Query,
    Record,
    Selection,
    Store,
    StoredRevision,
    StoreLayer,
    collection_name,
    find_layer,
)

__all__ = [
    "MASK",
    "SecretLayer",
    "document_of",
    "is_mask",
    "keep_stored",
    "reveal",
    "secret_layer",
    "secret_plan",
    "with_secrets",
]

Path = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

# ---------------------------------------------------------------------- where secrets are


@dataclass(frozen=True)
class Leaf:
    """A ``SecretStr`` or ``SecretBytes`` value."""


@dataclass(frozen=True)
class Items:
    """A dict (``keyed``) or a list, tuple or set whose items hold secrets as ``item`` says."""

    item: Node
    keyed: bool


@dataclass(frozen=True)
class Fields:
    """A nested model: ``(json key, attribute, node)`` for each field that holds secrets."""

    model: type[BaseModel]

    @property
    def fields(self) -> tuple[tuple[str, str, Node], ...]:
        return _model_plan(self.model)


Node = Leaf | Items | Fields
_LEAF = Leaf()
_MAPPINGS: set[Any] = {dict, abc.Mapping, abc.MutableMapping}
_SEQUENCES: set[Any] = {list, tuple, set, frozenset, abc.Sequence, abc.MutableSequence, abc.Set}


def _node(annotation: Any, where: str) -> Node | None:
    if not holds_secret(annotation):
        return None
    inner, _ = unwrap(annotation)
    if isinstance(inner, type) and issubclass(inner, SECRET_TYPES):
        return _LEAF
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return Fields(inner)
    origin = get_origin(inner)
    args = [arg for arg in get_args(inner) if arg is not Ellipsis]
    if origin in _MAPPINGS:
        item = _node(args[1], where) if len(args) == 2 else None
        if item is not None:
            return Items(item, keyed=True)
    elif origin in _SEQUENCES and len(args) == 1:
        item = _node(args[0], where)
        if item is not None:
            return Items(item, keyed=False)
    raise TypeError(
        f"{where}: secrets are encrypted where the type says they are: a SecretStr or "
        "SecretBytes field, or a list, dict or nested model of them (Optional allowed); "
        f"{inner!r} mixes them with other types in a way that cannot be told apart"
    )


@lru_cache(maxsize=256)
def _model_plan(model: type[BaseModel]) -> tuple[tuple[str, str, Node], ...]:
    plan: list[tuple[str, str, Node]] = []
    for name, info in model.model_fields.items():
        node = _node(info.annotation, f"{model.__name__}.{name}")
        if node is not None:
            plan.append((json_key(name, info), name, node))
    return tuple(plan)


def secret_plan(model: type[BaseModel]) -> Fields | None:
    """Where ``model``'s secrets are, or None if it has none (TypeError if it cannot tell)."""
    return Fields(model) if _model_plan(model) else None


def _shown(path: Path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _walk(value: Any, node: Node, path: Path, leaf: Callable[[Any, Path], Any]) -> Any:
    """``value`` (parsed JSON) with ``leaf(value, path)`` put in place of each secret."""
    if isinstance(node, Leaf):
        return leaf(value, path)
    if isinstance(node, Items):
        if node.keyed and type(value) is dict:
            for key, item in value.items():
                value[key] = _walk(item, node.item, (*path, key), leaf)
        elif not node.keyed and type(value) is list:
            for index, item in enumerate(value):
                value[index] = _walk(item, node.item, (*path, index), leaf)
        return value
    if type(value) is dict:
        for key, _, child in node.fields:
            if key in value:
                value[key] = _walk(value[key], child, (*path, key), leaf)
    return value


def _load(document: Document) -> Any:
    return parse_document(document, exact=True)


# ---------------------------------------------------------------------- revealing


def _plain_value(value: Any, node: Node, dumped: Any, path: Path, entity: str) -> Any:
    """``dumped`` (the masked JSON of ``value``) with the secrets of ``value`` revealed."""
    if value is None:
        return dumped
    if isinstance(node, Leaf):
        if isinstance(value, SecretBytes):
            try:
                return value.get_secret_value().decode()
            except UnicodeDecodeError:
                raise UnstorableEntityError(
                    f"{entity}: the SecretBytes at {_shown(path)} are not UTF-8 text, which is "
                    "all a JSON document can hold"
                ) from None
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        return dumped
    if isinstance(node, Items):
        if node.keyed and type(dumped) is dict and isinstance(value, Mapping):
            for key, item in value.items():
                text = key if isinstance(key, str) else str(key)
                if text in dumped:
                    dumped[text] = _plain_value(
                        item, node.item, dumped[text], (*path, text), entity
                    )
        elif not node.keyed and type(dumped) is list:
            for index, (item, out) in enumerate(zip(value, dumped, strict=False)):
                dumped[index] = _plain_value(item, node.item, out, (*path, index), entity)
        return dumped
    if type(dumped) is dict and isinstance(value, BaseModel):
        for key, attribute, child in node.fields:
            if key in dumped:
                item = value.__dict__.get(attribute)
                dumped[key] = _plain_value(item, child, dumped[key], (*path, key), entity)
    return dumped


def reveal(entity: BaseModel, plan: Fields, masked: str, entity_id: str) -> str:
    """The JSON of ``entity`` with its secrets' real values where pydantic wrote a mask."""
    where = f"{type(entity).__name__} {entity_id!r}"
    return dump_document(_plain_value(entity, plan, _load(masked), (), where))


def document_of(entity: BaseModel) -> str:
    """``entity``'s JSON as stored: by alias, with its secrets revealed (for the layer to seal)."""
    text = entity.model_dump_json(by_alias=True)
    plan = secret_plan(type(entity))
    return text if plan is None else reveal(entity, plan, text, str(getattr(entity, "id", "")))


MASK = "**********"
"""What pydantic shows for a non-empty secret, in reprs, JSON dumps and so in frames."""


def is_mask(value: str | bytes) -> bool:
    """Whether a secret's value is the mask a frame or a dump shows in its place."""
    return value in (MASK, MASK.encode())


def keep_stored(new: M, old: BaseModel | None, keep: Callable[[str | bytes], bool]) -> M:
    """``new`` with each secret for which ``keep(value)`` is true replaced by ``old``'s.

    For faces that never hold the plaintext: a frame cell shows the mask, a form's password
    box starts empty; such a value means "unchanged". A secret ``old`` lacks stays as it is.
    """
    plan = secret_plan(type(new))
    if plan is None or old is None:
        return new
    updates = {}
    for _, attribute, node in plan.fields:
        value = new.__dict__.get(attribute)
        merged = _merge(value, old.__dict__.get(attribute), node, keep)
        if merged is not value:
            updates[attribute] = merged
    return new.model_copy(update=updates) if updates else new


def _merge(new: Any, old: Any, node: Node, keep: Callable[[str | bytes], bool]) -> Any:
    if new is None or old is None:
        return new
    if isinstance(node, Leaf):
        if isinstance(new, SecretStr | SecretBytes) and keep(new.get_secret_value()):
            return old
        return new
    if isinstance(node, Items):
        if node.keyed and isinstance(new, Mapping) and isinstance(old, Mapping):
            merged = {k: _merge(v, old.get(k), node.item, keep) for k, v in new.items()}
            changed = any(merged[k] is not v for k, v in new.items())
            return merged if changed else new
        return new
    if isinstance(new, BaseModel) and isinstance(old, BaseModel):
        return keep_stored(new, old, keep)
    return new


# ---------------------------------------------------------------------- the layer


class SecretLayer(StoreLayer):
    """Seals the secrets of every document written to ``inner`` and opens them on reads.

    ``keyring`` encrypts and decrypts; without one, an empty secret is stored as ``""``, a
    non-empty one raises :class:`EncryptionError` (nothing is stored) and reading a sealed
    one raises :class:`DecryptionError`. Filters never reach a secret (the repository
    refuses them), so selects and counts pass through.
    """

    def __init__(self, inner: Store, keyring: Keyring | None) -> None:
        super().__init__(inner)
        plan = secret_plan(inner.model)
        if plan is None:
            raise TypeError(f"{inner.model.__name__} has no secret fields to encrypt")
        self.plan = plan
        self.keyring = keyring
        self.collection = collection_name(inner.model)

    def __repr__(self) -> str:
        return f"SecretLayer({self.inner!r}, {self.keyring!r})"

    # ------------------------------------------------------------------ sealing

    def _seal(self, record: Record) -> Record:
        keyring = self.keyring
        entity_id = record.id

        def seal(value: Any, path: Path) -> Any:
            if type(value) is not str or value == "":
                return value  # empty, None, or already sealed (a document copied as stored)
            if keyring is None:
                raise EncryptionError(
                    f"{self.model.__name__} {entity_id!r} has a secret in {_shown(path)!r} and "
                    "this repository has no keyring to encrypt it; pass keyring=Keyring(...) "
                    f"to the repository or set ${ENV} (see Keyring.from_env); nothing was stored"
                )
            return keyring.seal(value, context_of(self.collection, entity_id, path))

        doc = _walk(_load(record.json), self.plan, (), seal)
        return Record(entity_id, dump_document(doc), record.version, record.expected)

    def open_document(self, entity_id: str, document: Document) -> Document:
        """``document`` of ``entity_id`` with its secrets decrypted (DecryptionError if not)."""
        try:
            doc = _load(document)
        except ValueError:
            return document  # not JSON: the repository reports it as corrupt
        keyring = self.keyring
        opened = 0

        def unseal(value: Any, path: Path) -> Any:
            nonlocal opened
            if type(value) is str:
                if value == "":
                    return value
                if value == MASK:  # written by pydantic's JSON before secrets were sealed
                    lost.append(_shown(path))
                    return value
                raise self._refused(
                    entity_id, path, None, "it is stored unencrypted (planted, or tampered with)"
                )
            if not is_sealed(value):
                return value  # None, or a value the model will refuse as corrupt
            kid = value.get("kid")
            if keyring is None:
                raise self._refused(
                    entity_id,
                    path,
                    kid if isinstance(kid, str) else None,
                    f"this repository has no keyring; pass keyring=Keyring(...) or set ${ENV}",
                )
            try:
                plain = keyring.open(value, context_of(self.collection, entity_id, path))
            except Unsealable as exc:
                raise self._refused(entity_id, path, exc.key_id, exc.reason) from None
            opened += 1
            return plain

        lost: list[str] = []
        doc = _walk(doc, self.plan, (), unseal)
        if lost:
            warn_caller(
                f"secret(s) {lost} of {self.inner.location(entity_id)} were stored as "
                "pydantic's mask '**********', so their values were lost when written; "
                "save the entity with its secrets again",
                CorruptEntityWarning,
            )
        # Nothing sealed (no secrets, or only empty ones): the stored text is the document.
        return dump_document(doc) if opened else document

    def _refused(
        self,
        entity_id: str,
        path: Path,
        key_id: str | None,
        reason: str,
        revision: int | None = None,
    ) -> DecryptionError:
        where = self.inner.location(entity_id)
        if revision is not None:
            where = f"{where}, revision {revision}"
        return DecryptionError(where, _shown(path), key_id, reason)

    # ------------------------------------------------------------------ the Store contract

    async def get(self, entity_id: str) -> Document | None:
        document = await self.inner.get(entity_id)
        return None if document is None else self.open_document(entity_id, document)

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        return await self.inner.write([self._seal(r) for r in records], create=create)

    def revision_document(self, revision: StoredRevision) -> Document:
        """A kept revision with its secrets decrypted (they are bound to its id as stored)."""
        assert revision.json is not None
        return self.open_document(revision.id, revision.json)

    async def select(self, query: Query) -> Selection:
        found = await self.inner.select(query)
        found.rows = [
            (key, doc if isinstance(doc, CorruptEntityError) else self.open_document(key, doc))
            for key, doc in found.rows
        ]
        return found

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        return await self.inner.count(conditions)

    # ------------------------------------------------------------------ keys

    def _key_ids(self, document: Document) -> list[str | None]:
        """The key id of each sealed value in ``document`` (None where it names none)."""
        found: list[str | None] = []

        def note(value: Any, path: Path) -> Any:
            if is_sealed(value):
                kid = value.get("kid")
                found.append(kid if isinstance(kid, str) else None)
            return value

        _walk(_load(document), self.plan, (), note)
        return found

    async def _pages(self, batch_size: int) -> AsyncIterator[list[tuple[str, Document]]]:
        """Every stored document in id order, a page at a time; corrupt ones are warned about."""
        after: str | None = None
        while True:
            found = await self.inner.select(Query(limit=batch_size, after_id=after))
            for _, error in found.corrupt:
                warn_caller(f"{error}; its secrets were not looked at", CorruptEntityWarning)
            yield [(key, doc) for key, doc in found.rows if not isinstance(doc, CorruptEntityError)]
            if len(found.rows) < batch_size:
                return
            after = found.rows[-1][0]

    async def key_report(self, batch_size: int = 1000) -> dict[str, int]:
        """``{key id: number of encrypted values}`` over every stored document and every
        kept revision."""
        counts: dict[str, int] = {}

        def note(document: Document) -> None:
            try:
                kids = self._key_ids(document)
            except ValueError:
                return  # not JSON: reported as corrupt where it is read
            for kid in kids:
                counts[kid or "?"] = counts.get(kid or "?", 0) + 1

        async for rows in self._pages(batch_size):
            for _, document in rows:
                note(document)
        async for revisions in self._revision_pages(batch_size):
            for revision in revisions:
                assert revision.json is not None
                note(revision.json)
        return dict(sorted(counts.items()))

    async def rotate(
        self,
        *,
        batch_size: int,
        on_batch: Callable[[int, int], object] | None = None,
        on_revisions: Callable[[int, int], object] | None = None,
    ) -> int:
        """Re-encrypt under the primary key every value sealed with another; return entities written.

        Each batch is written all or nothing with the version each document was read at
        (unchanged: a rotation is no edit; with history on, one up, as every stored change
        is a version with its revision), so a concurrent edit wins and its batch is read
        again. A second run finds nothing to do; a killed run resumes where it stopped.
        ``on_batch(seen, rewritten)`` is called after each batch. With history on, the kept
        revisions are then sealed again too, a page at a time, each page all or nothing
        (on files, each history file whole), calling ``on_revisions(seen, rewritten)``.
        """
        from ._errors import ConflictError

        keyring = self.keyring
        if keyring is None:
            raise EncryptionError(
                f"cannot rotate the keys of {self.describe()}: this repository has no keyring; "
                f"pass keyring=Keyring(...) or set ${ENV}"
            )
        versioned = "version" in self.model.model_fields
        bump = self.kept() is not False
        rewritten = 0
        after: str | None = None
        while True:
            for attempt in range(100):
                found = await self.inner.select(Query(limit=batch_size, after_id=after))
                records = [
                    r
                    for key, doc in found.rows
                    if not isinstance(doc, CorruptEntityError)
                    and (r := self._rekey(key, doc, versioned, bump))
                ]
                try:
                    if records:
                        written = await self.inner.write(records, create=False)
                        rewritten += sum(written)
                    break
                except ConflictError:
                    if attempt == 99:
                        raise
            if on_batch is not None:
                on_batch(len(found.rows), len(records))
            if len(found.rows) < batch_size:
                break
            after = found.rows[-1][0]
        await self._rotate_revisions(batch_size, on_revisions)
        return rewritten

    def _rekey(
        self, entity_id: str, document: Document, versioned: bool, bump: bool
    ) -> Record | None:
        doc = self._resealed(entity_id, document)
        if doc is None:
            return None
        version = doc.get("version") if versioned and type(doc) is dict else None
        if versioned and type(version) is not int:
            raise CorruptEntityError(self.inner.location(entity_id), "its version is not an int")
        if bump and version is not None:
            doc["version"] = version + 1
            return Record(entity_id, dump_document(doc), version + 1, version)
        return Record(entity_id, dump_document(doc), version, version)

    def _resealed(self, entity_id: str, document: Document, revision: int | None = None) -> Any:
        """``document`` parsed, with every value sealed under a key other than the primary
        sealed again under the primary; None if it holds none (or is not JSON)."""
        keyring = self.keyring
        assert keyring is not None
        try:
            doc = _load(document)
        except ValueError:
            return None
        stale = False

        def rekey(value: Any, path: Path) -> Any:
            nonlocal stale
            if not is_sealed(value) or value.get("kid") == keyring.primary:
                return value
            context = context_of(self.collection, entity_id, path)
            try:
                plain = keyring.open(value, context)
            except Unsealable as exc:
                raise self._refused(entity_id, path, exc.key_id, exc.reason, revision) from None
            stale = True
            return keyring.seal(plain, context)

        doc = _walk(doc, self.plan, (), rekey)
        return doc if stale else None

    async def _revision_pages(self, batch_size: int) -> AsyncIterator[list[StoredRevision]]:
        """Every kept revision that holds a document, a page at a time; none without history."""
        if self.kept() is False:
            return
        after: tuple[str, int] | None = None
        while True:
            page = await self.inner.revision_page(after, batch_size)
            yield [revision for revision in page if revision.json is not None]
            if len(page) < batch_size:
                return
            after = (page[-1].id, page[-1].version)

    async def _rotate_revisions(
        self, batch_size: int, on_page: Callable[[int, int], object] | None
    ) -> int:
        """Seal again under the primary key the secrets of every kept revision; how many
        revisions were rewritten (in place: their number, time, actor and reason stay)."""
        rewritten = 0
        async for page in self._revision_pages(batch_size):
            before = rewritten
            changes: list[tuple[StoredRevision, Document]] = []
            for revision in page:
                assert revision.json is not None
                doc = self._resealed(revision.id, revision.json, revision.version)
                if doc is not None:
                    changes.append((revision, dump_document(doc)))
            if changes:  # one pruned or rotated by another process meanwhile is left alone
                rewritten += await self.inner.rewrite_revisions(changes)
            if on_page is not None:
                on_page(len(page), rewritten - before)
        return rewritten


def secret_layer(store: Store) -> SecretLayer | None:
    """The :class:`SecretLayer` among ``store`` and the stores it wraps, if any."""
    return find_layer(store, SecretLayer)


def with_secrets(model: type[BaseModel], store: Store, keyring: Keyring | None) -> Store:
    """``store`` with a :class:`SecretLayer` on it when ``model`` has secret fields.

    ``keyring`` defaults to ``$SYMPHONY_NB_KEYS`` (read now, not at import). A store that
    already has the layer keeps it; giving it another keyring is refused.
    """
    if keyring is not None and not isinstance(keyring, Keyring):
        raise TypeError(f"keyring must be a symphony_nb.Keyring, got {type(keyring).__name__}")
    existing = secret_layer(store)
    if existing is not None:
        if keyring is not None and keyring is not existing.keyring:
            raise TypeError(
                "this store already encrypts its secrets with a keyring of its own; "
                "give keyring= where the store is first wrapped"
            )
        return store
    if secret_plan(model) is None:
        return store
    return SecretLayer(store, keyring if keyring is not None else Keyring.from_env())
