"""pandas round-trip: entities to a DataFrame and edited rows back.

A frame made here is indexed by entity id (index name ``id``) and has one column per model
field, named by its JSON key (``AgentConfig.llm_config`` is the column ``model_config``):

* enum (and Literal) fields are ``pd.Categorical`` with every member as a category, in order,
  so an invalid edit is refused by pandas itself;
* datetimes are ``datetime64[us, UTC]`` (``NaiveDatetime`` fields stay naive); ints
  ``int64`` (``Int64`` when optional), floats ``float64``, bools ``bool`` (``boolean`` when
  optional), text the pandas ``str`` dtype;
* dict, list and nested-model fields hold the Python objects (nested models in their JSON
  form), unless ``flatten=True`` turns each dict field into dotted columns
  (``input_data.query``, ``input_data.opts.depth``): one column per leaf, where an empty dict
  is a leaf too. A key containing ``.`` or ``\\`` is escaped with a backslash
  (``{"a.b": 1}`` is the column ``input_data.a\\.b``), so no key is ever split. A dotted
  column of one JSON type gets a typed dtype (``Int64``, ``Float64``, ``boolean``, ``str``);
  a column mixing types (an int beside a float) or holding ints wider than 64 bits holds the
  Python objects, so an int never becomes a float;
* an empty result still has every column with these dtypes.

Reading validates every stored document with the model, as ``find_all`` does: a document
that does not validate raises :class:`CorruptEntityError` naming where it is, or, with
``on_corrupt="warn"``, is left out with a :class:`CorruptEntityWarning`. It never becomes an
editable row.

Writing back converts NaN/NaT/NA to None, pandas timestamps to datetimes, numpy scalars to
Python values and categoricals to their values, then compares each row with the stored
entity and writes only the rows that differ (ignoring ``version`` and ``updated_at``), so an
unedited frame writes nothing. Empty cells mean different things in new and stored rows:

* a row whose id is not stored is new: an empty cell of a field that cannot be None takes the
  model's default (so rows added in pandas work). A row without an id (a missing ``id`` cell,
  or a number as its index label, as ``pd.concat`` or ``df.loc[len(df)] = ...`` give) is new
  and gets a fresh id from the model's default, written back into the frame;
* in a stored row, an empty cell of a field that cannot be None (``status``, ``input_data``,
  ``created_at``, ...) is a :class:`RowValidationError` naming the row and field, never a
  silent default; an empty cell of an optional field sets it to None;
* in dotted columns, a cell that differs from the stored value at its path sets that path
  (creating the dicts above it where they are missing or null), an emptied cell removes the
  key, and unedited cells leave the stored dict exactly as it was (key order, empty dicts,
  nulls, number types).

Every row is validated before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import orjson

try:
    import pandas as pd
except ImportError as exc:  # pragma: no cover - the notebook extras are missing
    raise ImportError(
        "symphony_nb's pandas face needs pandas: pip install 'symphony_nb[notebook]'"
    ) from exc
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import to_jsonable_python

from ._encryption import is_mask, keep_stored
from ._errors import CorruptEntityError, RowValidationError
from ._frames import (
    MISSING,
    Column,
    FlatCell,
    build_frame,
    documents_frame,
    entity_columns,
    flat_layout,
    flat_name,
    flat_paths,
    frame_keys,
    frame_records,
    model_columns,
    patch,
    plain_value,
    same,
)
from ._gc import gc_paused
from ._values import storable_fields
from .stores import Query, merge_corrupt, parse_query

if TYPE_CHECKING:
    from ._history import Revision
    from ._repository import Filter, OnCorrupt, OrderBy, Repository

M = TypeVar("M", bound=BaseModel)
Problems = list[tuple[str, str]]

_SKIP_ON_COMPARE = ("version", "updated_at")
_ID_CHUNK = 500
_SCAN_ABOVE = 5000
_DECODE_CHUNK = 2000


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
    on_corrupt: OnCorrupt = "raise",
) -> pd.DataFrame:
    """The entities of ``repo`` matching ``filter_criteria`` as a DataFrame.

    Filtering, ordering and column selection run in the backend. Every document is validated
    with the model once, as ``find_all`` validates it, and the columns are taken from the
    validated values; ``on_corrupt`` is as for ``find_all``.
    """
    if on_corrupt not in ("raise", "warn"):
        raise ValueError(f"on_corrupt must be 'raise' or 'warn', got {on_corrupt!r}")
    query = parse_query(
        repo.model, filter_criteria, order_by=order_by, limit=limit, columns=columns
    ).unordered()
    keys = frame_keys(repo.model, query.columns)
    # The collector stays paused until the validated entities are freed: its passes over so
    # many fresh objects would cost more than the work itself.
    with gc_paused():
        rows = merge_corrupt(query, await repo.store.select(query))
        ids: list[str] = []
        values: list[list[Any]] = [[] for _ in keys]
        # A chunk at a time, while the entities are still in the CPU cache.
        for start in range(0, len(rows), _DECODE_CHUNK):
            entities = repo.decode_rows(rows[start : start + _DECODE_CHUNK], on_corrupt=on_corrupt)
            ids.extend(str(getattr(entity, "id", "")) for entity in entities)
            parts = entity_columns(repo.model, entities, keys)
            for column, part in zip(values, parts, strict=True):
                column.extend(part)
            del entities, parts
        del rows
        return build_frame(repo.model, keys, ids, values, flatten)


# --------------------------------------------------------------------------- frame -> entities


def _label(position: int, entity_id: str | None) -> str:
    return entity_id if entity_id is not None else f"row {position} (no id)"


def _json_value(entity: BaseModel, column: Column) -> Any:
    if column.native:
        return entity.__dict__[column.name]
    return entity.model_dump(mode="json", by_alias=True, include={column.name})[column.key]


def _empty_cell(key: str, stored: Any) -> str:
    shown = repr(stored)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return (
        f"the cell is empty, but {key} cannot be empty (stored: {shown}); give it a value "
        "(the model's default applies only to new rows)"
    )


def _row_data(
    specs: Mapping[str, Column],
    flat: Mapping[str, Sequence[FlatCell]],
    row: Mapping[str, Any],
    old: BaseModel | None,
) -> tuple[dict[str, Any], Problems]:
    """The field values of one row, ready for validation, and the problems found on the way."""
    data: dict[str, Any] = {}
    problems: Problems = []
    for key, column in specs.items():
        if key == "id":
            continue
        if key in row:
            value = row[key]
            if value is None and not column.optional:
                if old is not None:
                    value = old.__dict__[column.name]
                    problems.append((key, _empty_cell(key, _frame_value(old, column))))
                elif column.has_default:
                    continue
            data[key] = value
        elif key in flat:
            stored = _json_value(old, column) if old is not None else None
            cells = [(cell, row[cell.column]) for cell in flat[key]]
            value, trouble = patch(stored, cells, stored=old is not None)
            problems.extend(trouble)
            if value is MISSING:
                if column.has_default:
                    continue
                value = {}
            data[key] = value
        elif old is not None:
            data[key] = old.__dict__[column.name]
    return data, problems


def _validate(
    model: type[M],
    records: Sequence[tuple[str | None, dict[str, Any]]],
    stored: Mapping[str, BaseModel] | None = None,
) -> list[M]:
    """Each row as a ``model``; :class:`RowValidationError` lists every problem of every row."""
    specs = model_columns(model)
    names = list(records[0][1]) if records else []
    flat = flat_layout(specs, names)
    flat_names = {cell.column for cells in flat.values() for cell in cells}
    other = [name for name in names if name not in specs and name not in flat_names]
    entities: list[M] = []
    problems: dict[str, Problems] = {}
    version_field = "version" in specs and not specs["version"].optional
    for position, (entity_id, row) in enumerate(records):
        old = (stored or {}).get(entity_id) if entity_id is not None else None
        data, trouble = _row_data(specs, flat, row, old)
        for name in other:  # not a field: validation reports it (or ignores it)
            data[name] = row[name]
        if entity_id is not None:
            data["id"] = entity_id
        elif version_field and isinstance(row.get("version"), int | float) and row["version"]:
            trouble.append(
                (
                    "id",
                    f"the row has no id but version {row['version']!r}, so it was read from "
                    "the store and lost its id (reset_index(drop=True)?); put the ids back, "
                    "or empty its version cell to add it as a new entity",
                )
            )
        try:
            entities.append(model.model_validate(data))
        except PydanticValidationError as exc:
            trouble.extend(
                (".".join(map(str, err["loc"])) or "<row>", err["msg"]) for err in exc.errors()
            )
        if trouble:
            problems[_label(position, entity_id)] = trouble
    if problems:
        raise RowValidationError(problems)
    return entities


def from_dataframe(model: type[M], df: pd.DataFrame) -> list[M]:
    """Validate each row of ``df`` as a new ``model``; :class:`RowValidationError` lists bad rows.

    Empty cells take the model's defaults, and a row without an id gets a fresh one.
    """
    return _validate(model, frame_records(df))


async def save_dataframe(repo: Repository[M], df: pd.DataFrame) -> list[str]:
    """Write the new and edited rows of ``df`` to ``repo``; return the ids written.

    Every row is validated first: if any fails, :class:`RowValidationError` lists each bad
    row id and field and nothing is saved. Each row is compared with the stored entity and
    written only if it differs (``version`` and ``updated_at`` aside), so an unedited frame
    writes nothing and returns ``[]``. Columns missing from ``df`` keep their stored values
    (so a frame of selected columns can be saved). A stored row with an empty cell in a field
    that cannot be None is refused (see :mod:`symphony_nb.dataframes`); a row without an id
    is new and gets a fresh id. A row whose id holds a corrupt stored document raises
    :class:`CorruptEntityError` rather than overwriting it. Versions are checked: a row
    edited from a stale export raises :class:`ConflictError` and, where the backend is
    atomic, nothing is written. After a successful save the ``version`` and ``updated_at``
    columns of ``df`` (and the ids of new rows) are updated in place, as
    :meth:`Repository.save` updates the object it is given, so the frame can be edited and
    saved again.
    """
    with gc_paused():
        records = frame_records(df)
    wanted = [entity_id for entity_id, _ in records if entity_id is not None]
    stored = await _stored_entities(repo, wanted)
    with gc_paused():
        entities = _validate(repo.model, records, stored)
        # A frame shows secrets masked: a masked cell keeps the stored secret.
        entities = [
            keep_stored(entity, stored.get(entity_id or ""), is_mask)
            for (entity_id, _), entity in zip(records, entities, strict=True)
        ]
        changed = [
            (position, entity)
            for position, ((entity_id, _), entity) in enumerate(zip(records, entities, strict=True))
            if entity_id is None or _differs(entity, stored.get(entity_id))
        ]
    ids = await repo.save_many([entity for _, entity in changed])
    stored_ids = set(stored)
    _update_frame(
        df,
        changed,
        new=[p for p, _ in changed if records[p][0] not in stored_ids],
        fresh=[p for p, _ in changed if records[p][0] is None],
    )
    return ids


async def _stored_entities(repo: Repository[M], ids: Sequence[str]) -> dict[str, M]:
    unique = list(dict.fromkeys(ids))
    wanted = set(unique)
    rows: list[tuple[str, Any]] = []
    if len(unique) > _SCAN_ABOVE:
        # One scan beats thousands of id lookups (and stays under SQL parameter limits).
        rows = merge_corrupt(Query(), await repo.store.select(Query()))
    else:
        for start in range(0, len(unique), _ID_CHUNK):
            chunk = unique[start : start + _ID_CHUNK]
            query = parse_query(repo.model, {"id": {"$in": chunk}})
            rows.extend(merge_corrupt(query, await repo.store.select(query)))
    found: dict[str, M] = {}
    with gc_paused():
        for entity_id, data in rows:
            if entity_id not in wanted:
                continue  # a file store reports unparsable files whatever the query
            if isinstance(data, CorruptEntityError):
                raise data
            found[entity_id] = repo.decode(entity_id, data)
    return found


@cache
def _compared(model: type[BaseModel]) -> tuple[tuple[str, bool], ...]:
    """The fields compared by :func:`_differs`, and whether ``==`` may hide a JSON type change.

    Typed fields hold one type after validation; dicts, lists and ``Any`` may hold ``1``,
    ``1.0`` and ``True``, which are equal in Python but not in JSON.
    """
    return tuple(
        (column.name, column.dtype is object)
        for column in model_columns(model).values()
        if column.name not in _SKIP_ON_COMPARE
    )


def _differs(new: BaseModel, old: BaseModel | None) -> bool:
    """Whether ``new`` differs from the stored ``old`` in a value or a JSON type."""
    if old is None:
        return True
    if new.__pydantic_extra__ != old.__pydantic_extra__:
        return True
    a, b = new.__dict__, old.__dict__
    stored_as = storable_fields(new, str(getattr(new, "id", "")))
    if stored_as:  # compared as it would be stored: a datetime in a dict as its UTC text
        a = {**a, **stored_as}
    for name, loose in _compared(type(new)):
        x, y = a[name], b[name]
        if x is y:
            continue
        if x != y:
            if not same(x, y):  # NaN is not equal to itself
                return True
        elif loose and not _json_equal(x, y):
            return True
    return False


def _json_equal(x: Any, y: Any) -> bool:
    try:
        if orjson.dumps(x) == orjson.dumps(y):
            return True
    except TypeError:  # not JSON orjson can write (an int wider than 64 bits, ...)
        pass
    return same(x, y)  # the same values, maybe in another key order


def _position(df: pd.DataFrame, name: Any) -> int:
    return list(df.columns).index(name)


def _set_cell(df: pd.DataFrame, position: int, name: str, value: Any) -> None:
    at = _position(df, name)
    if same(plain_value(df.iat[position, at]), value):
        return
    try:
        df.iat[position, at] = value
    except (TypeError, ValueError):  # the column's dtype cannot hold it: make it hold objects
        df[name] = df[name].astype(object)
        df.iat[position, at] = value


def _frame_value(entity: BaseModel, column: Column) -> Any:
    value = _json_value(entity, column)
    return value.value if isinstance(value, Enum) else value


def _update_frame(
    df: pd.DataFrame,
    written: Sequence[tuple[int, BaseModel]],
    *,
    new: Sequence[int],
    fresh: Sequence[int],
) -> None:
    """Make the written rows of ``df`` show what was stored, as :meth:`Repository.save`
    updates the object it is given, so that they read as stored rows when saved again.

    Every written row gets its new version and timestamp, and its dict, list and dotted
    cells show their JSON form as stored (a datetime typed into a dict shows as its text; a
    cell set to ``[]`` empties the dotted cells below it; a dict typed into a dotted cell is
    spread over dotted columns, added where missing). Rows that were new also show the values
    their empty cells took (the defaults) and, where they had none, their fresh ids.
    """
    if not written:
        return
    if fresh:
        by_position = dict(written)
        ids = [str(getattr(by_position[position], "id", "")) for position in fresh]
        if "id" in df.columns:
            df.iloc[np.asarray(fresh), _position(df, "id")] = ids
        else:
            labels = list(df.index)
            for position, entity_id in zip(fresh, ids, strict=True):
                labels[position] = entity_id
            df.index = pd.Index(labels, name=df.index.name or "id")
    specs = model_columns(type(written[0][1]))
    names = [str(name) for name in df.columns]
    skip = ("id", *_SKIP_ON_COMPARE)
    plain = [specs[name] for name in names if name in specs and name not in skip]
    layout = flat_layout(specs, names)
    dumped = {c.name for c in plain if c.dtype is object} | {specs[k].name for k in layout}
    shown = {key: {cell.path: cell.column for cell in cells} for key, cells in layout.items()}
    new_rows = set(new)
    fields = type(written[0][1]).model_fields
    for position, entity in written:
        doc = entity.model_dump(mode="json", by_alias=True, include=dumped) if dumped else {}
        for name, value in storable_fields(entity, str(getattr(entity, "id", ""))).items():
            if name in dumped:  # as stored: a datetime in a dict as its UTC text
                info = fields[name]
                doc[info.serialization_alias or info.alias or name] = to_jsonable_python(value)
        for column in plain:
            if column.dtype is object:
                _set_cell(df, position, column.key, doc[column.key])
            elif position in new_rows:
                _set_cell(df, position, column.key, _frame_value(entity, column))
        for key, columns in shown.items():
            leaves = flat_paths(doc[key])
            for path in leaves.keys() - columns.keys():
                columns[path] = flat_name(key, path)
                df[columns[path]] = np.full(len(df), None, dtype=object)
            for path, name in columns.items():
                _set_cell(df, position, name, leaves.get(path))
    positions = [position for position, _ in written]
    for name in _SKIP_ON_COMPARE:
        if name not in df.columns:
            continue
        values: Any = [getattr(entity, name) for _, entity in written]
        if name == "updated_at":
            values = pd.to_datetime(values, utc=True).as_unit("us")
        df.iloc[np.asarray(positions), _position(df, name)] = values


# --------------------------------------------------------------------------- history -> frame


def revisions_to_dataframe(model: type[M], revisions: Sequence[Revision[M]]) -> pd.DataFrame:
    """One row per revision, indexed by its version: ``op`` (a categorical), ``at`` (UTC),
    ``actor``, ``reason``, then the entity's columns as :func:`to_dataframe` makes them
    (empty for a delete; the entity's own ``version`` field is ``entity_version``)."""
    docs = [
        {} if r.entity is None else r.entity.model_dump(mode="json", by_alias=True)
        for r in revisions
    ]
    entities = documents_frame(model, [str(r.version) for r in revisions], docs)
    entities = entities.rename(columns={"version": "entity_version"}).reset_index(drop=True)
    meta = pd.DataFrame(
        {
            "op": pd.Categorical(
                [r.op for r in revisions], categories=["create", "update", "delete"]
            ),
            "at": pd.to_datetime([r.at for r in revisions], utc=True),
            "actor": pd.array([r.actor for r in revisions], dtype="string"),
            "reason": pd.array([r.reason for r in revisions], dtype="string"),
        }
    )
    frame = pd.concat([meta, entities], axis=1)
    frame.index = pd.Index([r.version for r in revisions], name="version", dtype="int64")
    return frame
