"""pandas round-trip: entities to a DataFrame and edited rows back.

A frame made here is indexed by entity id (index name ``id``) and has one column per model
field, named by its JSON key (``AgentConfig.llm_config`` is the column ``model_config``):

* enum (and Literal) fields are ``pd.Categorical`` with every member as a category, in order,
  so an invalid edit is refused by pandas itself;
* datetimes are ``datetime64[us, UTC]`` (``NaiveDatetime`` fields stay naive); ints
  ``int64`` (``Int64`` when optional), floats ``float64``, bools ``bool`` (``boolean`` when
  optional), text the pandas ``str`` dtype;
* dict, list and nested-model fields hold the Python objects, unless ``flatten=True`` turns
  each dict field into dotted columns (``input_data.query``);
* an empty result still has every column with these dtypes.

Writing back converts NaN/NaT/NA to None, pandas timestamps to datetimes, numpy scalars to
Python values and categoricals to their values; an empty cell of a field that cannot be None
but has a default takes the default (so rows added in pandas work). Every row is validated
before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

try:
    import pandas as pd
except ImportError as exc:  # pragma: no cover - the notebook extras are missing
    raise ImportError(
        "symphony_nb's pandas face needs pandas: pip install 'symphony_nb[notebook]'"
    ) from exc
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from ._errors import CorruptEntityError, RowValidationError
from ._filters import Query
from ._frames import (
    build_frame,
    documents_frame,
    frame_keys,
    frame_records,
    model_columns,
    transpose,
    unflatten,
)
from ._repository import _gc_paused

if TYPE_CHECKING:
    from ._repository import Filter, OrderBy, Repository

M = TypeVar("M", bound=BaseModel)

_SKIP_ON_COMPARE = ("version", "updated_at")
_ID_CHUNK = 500
_SCAN_ABOVE = 5000
_PARSE_CHUNK = 2000


# --------------------------------------------------------------------------- entities -> frame


def to_dataframe(
    models: Iterable[M], model: type[M] | None = None, *, flatten: bool = False
) -> pd.DataFrame:
    """A DataFrame of ``models`` indexed by id (see :mod:`symphony_nb.dataframes`).

    ``model`` is the model class, needed only when ``models`` may be empty.
    """
    items = list(models)
    kind = model or (type(items[0]) if items else None)
    if kind is None:
        raise TypeError("to_dataframe of an empty list needs the model: to_dataframe([], Task)")
    docs = [item.model_dump(mode="json", by_alias=True) for item in items]
    return documents_frame(kind, [str(doc["id"]) for doc in docs], docs, flatten=flatten)


async def repository_to_dataframe(
    repo: Repository[Any],
    filter_criteria: Filter | None = None,
    *,
    columns: Sequence[str] | None = None,
    order_by: OrderBy | None = None,
    limit: int | None = None,
    flatten: bool = False,
) -> pd.DataFrame:
    """The entities of ``repo`` matching ``filter_criteria`` as a DataFrame.

    Filtering, ordering and column selection run in the backend; the frame is built from the
    stored JSON without a model object per row (a document that lacks a field, as written by
    an older schema, is validated to fill in its defaults).
    """
    query = repo._query(filter_criteria, order_by, limit, 0, columns).unordered()
    keys = frame_keys(repo.model, query.columns)
    # The collector stays paused until the parsed documents are freed: its passes over so many
    # fresh objects would cost more than the work itself.
    with _gc_paused():
        rows = await repo._select_sorted(query)
        split = _columns(repo, rows, keys)
        values: Sequence[Sequence[Any]]
        if split is not None:
            ids, values = [entity_id for entity_id, _ in rows], split
        else:  # some document lacks a field: written by an older schema
            ids, docs = _parse_rows(repo, rows)
            ids, docs = await _complete(repo, ids, docs, frozenset(keys))
            values = transpose(docs, keys)
            del docs
        del rows, split
        return build_frame(repo.model, keys, ids, values, flatten)


def _columns(
    repo: Repository[Any], rows: Sequence[tuple[str, Any]], keys: Sequence[str]
) -> list[list[Any]] | None:
    """The values of each key across the documents in ``rows``; None if one lacks a key.

    Documents are parsed and split into columns a chunk at a time, while they are still in
    the CPU cache (a third faster than parsing them all first for 100k Tasks).
    """
    columns: list[list[Any]] = [[] for _ in keys]
    for start in range(0, len(rows), _PARSE_CHUNK):
        _, docs = _parse_rows(repo, rows[start : start + _PARSE_CHUNK])
        try:
            parts = transpose(docs, keys, strict=True)
        except KeyError:
            return None
        for column, part in zip(columns, parts, strict=True):
            column.extend(part)
    return columns


def _parse_rows(
    repo: Repository[Any], rows: Sequence[tuple[str, Any]]
) -> tuple[list[str], list[Any]]:
    ids = [entity_id for entity_id, _ in rows]
    try:
        docs = list(map(orjson.loads, [data for _, data in rows]))
    except (orjson.JSONDecodeError, TypeError):
        docs = [_parse_one(repo, entity_id, data) for entity_id, data in rows]
    return ids, docs


async def _complete(
    repo: Repository[Any], ids: list[str], docs: list[Any], wanted: frozenset[str]
) -> tuple[list[str], list[Any]]:
    """Validate the documents that lack a field, so the model's defaults fill it in."""
    gone: set[int] = set()
    for position, doc in enumerate(docs):
        if isinstance(doc, dict) and doc.keys() >= wanted:
            continue
        entity_id = ids[position]
        data = await repo.store.get(entity_id)
        if data is None:  # deleted since the select
            gone.add(position)
        else:
            docs[position] = repo._decode(entity_id, data).model_dump(mode="json", by_alias=True)
    if gone:
        ids = [entity_id for position, entity_id in enumerate(ids) if position not in gone]
        docs = [doc for position, doc in enumerate(docs) if position not in gone]
    return ids, docs


def _parse_one(repo: Repository[Any], entity_id: str, data: Any) -> Any:
    if isinstance(data, CorruptEntityError):
        raise data
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # Raises CorruptEntityError saying what is wrong, unless pydantic's parser is laxer.
        return repo._decode(entity_id, data).model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------- frame -> entities


def _validate(
    model: type[M],
    records: Sequence[tuple[str, dict[str, Any]]],
    stored: Mapping[str, Any] | None = None,
) -> list[M]:
    specs = model_columns(model)
    entities: list[M] = []
    problems: dict[str, list[tuple[str, str]]] = {}
    # An empty cell of a field that cannot be None means "the default" (a row added in pandas).
    defaulted = {key for key, spec in specs.items() if spec.has_default and not spec.optional}
    for entity_id, row in records:
        data = {
            key: value
            for key, value in unflatten(row, specs, (stored or {}).get(entity_id)).items()
            if value is not None or key not in defaulted
        }
        data["id"] = entity_id
        try:
            entities.append(model.model_validate(data))
        except PydanticValidationError as exc:
            problems[entity_id] = [
                (".".join(map(str, err["loc"])) or "<row>", err["msg"]) for err in exc.errors()
            ]
    if problems:
        raise RowValidationError(problems)
    return entities


def from_dataframe(model: type[M], df: pd.DataFrame) -> list[M]:
    """Validate each row of ``df`` as a ``model``; :class:`RowValidationError` lists bad rows."""
    return _validate(model, frame_records(df))


async def save_dataframe(repo: Repository[M], df: pd.DataFrame) -> list[str]:
    """Write the new and edited rows of ``df`` to ``repo``; return the ids written.

    Every row is validated first: if any fails, :class:`RowValidationError` lists each bad
    row id and field and nothing is saved. Rows equal to what is stored are skipped. Columns
    missing from ``df`` keep their stored values (so a frame of selected columns can be
    saved). Versions are checked: a row edited from a stale export raises
    :class:`ConflictError` and, where the backend is atomic, nothing is written. After a
    successful save the ``version`` and ``updated_at`` columns of ``df`` are updated in
    place, as :meth:`Repository.save` updates the object it is given, so the frame can be
    edited and saved again.
    """
    with _gc_paused():
        records = frame_records(df)
    stored = await _stored_documents(repo, [entity_id for entity_id, _ in records])
    with _gc_paused():
        changed = _changed_entities(repo.model, df, records, stored)
    ids = await repo.save_many(changed)
    _update_frame(df, changed)
    return ids


def _changed_entities(
    model: type[M],
    df: pd.DataFrame,
    records: Sequence[tuple[str, dict[str, Any]]],
    stored: Mapping[str, Any],
) -> list[M]:
    specs = model_columns(model)
    present = {name.partition(".")[0] for name in df.columns} | {"id"}
    missing = [key for key in specs if key not in present]
    merged = []
    for entity_id, row in records:
        old = stored.get(entity_id)
        if old is not None and missing:
            row = {**{key: old.get(key) for key in missing}, **row}
        merged.append((entity_id, row))
    entities = _validate(model, merged, stored)
    return [
        entity
        for (entity_id, _), entity in zip(merged, entities, strict=True)
        if _differs(entity.model_dump(mode="json", by_alias=True), stored.get(entity_id))
    ]


async def _stored_documents(repo: Repository[Any], ids: Sequence[str]) -> dict[str, Any]:
    unique = list(dict.fromkeys(ids))
    rows: list[tuple[str, Any]] = []
    if len(unique) > _SCAN_ABOVE:
        # One scan beats thousands of id lookups (and stays under SQL parameter limits).
        wanted = set(unique)
        rows = [row for row in await repo._select(Query()) if row[0] in wanted]
    else:
        for start in range(0, len(unique), _ID_CHUNK):
            chunk = unique[start : start + _ID_CHUNK]
            query = Query(conditions=repo._query({"id": {"$in": chunk}}).conditions)
            rows.extend(await repo._select(query))
    found: dict[str, Any] = {}
    with _gc_paused():
        for entity_id, data in rows:
            if isinstance(data, CorruptEntityError):
                continue  # replaced by the validated row
            try:
                found[entity_id] = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
    return found


def _differs(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    if old is None:
        return True
    new, old = dict(new), dict(old)
    for key in _SKIP_ON_COMPARE:
        new.pop(key, None)
        old.pop(key, None)
    return new != old


def _update_frame(df: pd.DataFrame, written: Sequence[BaseModel]) -> None:
    by_id = {str(getattr(entity, "id", "")): entity for entity in written}
    if not by_id:
        return
    ids = df["id"].astype(str) if "id" in df.columns else pd.Series(df.index.astype(str))
    rows = ids.isin(by_id).to_numpy()
    order = ids[rows].tolist()
    for name in _SKIP_ON_COMPARE:
        if name not in df.columns:
            continue
        values: Any = [getattr(by_id[entity_id], name) for entity_id in order]
        if name == "updated_at":
            values = pd.to_datetime(values, utc=True).as_unit("us")
        df.loc[rows, name] = values
