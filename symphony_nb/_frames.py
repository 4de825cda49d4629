"""Conversions between entities, pandas columns and model field values.

The frame layout is described in :mod:`symphony_nb.dataframes`; this module only converts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from operator import itemgetter
from typing import Any, get_args, get_origin

try:
    import numpy as np
    import pandas as pd
except ImportError as exc:  # pragma: no cover - the notebook extras are missing
    raise ImportError(
        "symphony_nb's pandas face needs pandas: pip install 'symphony_nb[notebook]'"
    ) from exc
from pydantic import BaseModel, NaiveDatetime

from ._fields import field_spec, json_key, unwrap

_JSON_SCALARS: tuple[Any, ...] = (str, int, float, bool, type(None))
_INT64 = (-(2**63), 2**63 - 1)
Path = tuple[str, ...]


@dataclass(frozen=True)
class Column:
    """How one model field becomes a column: its JSON key, attribute name and pandas dtype.

    ``native`` says that the field's value, as validated from JSON, is already its JSON form
    (text, numbers, lists and dicts of them), so a frame can hold it without a dump.
    """

    key: str
    name: str
    dtype: Any
    categories: tuple[Any, ...] | None = None
    members: tuple[Any, ...] = ()
    is_dict: bool = False
    native: bool = True
    optional: bool = False
    has_default: bool = False

    @property
    def category_dtype(self) -> pd.CategoricalDtype:
        """The categorical dtype of an enum column: every member, in declaration order."""
        return pd.CategoricalDtype(list(self.categories or ()))


def _is_native(annotation: Any) -> bool:
    inner, _ = unwrap(annotation)
    if inner is Any or inner in _JSON_SCALARS:
        return True
    origin, args = get_origin(inner), get_args(inner)
    if inner in (dict, list) or (origin in (dict, Mapping) and args and args[0] is str):
        return all(map(_is_native, args[1:]))
    if origin is list:
        return all(map(_is_native, args))
    return False


def _column(key: str, name: str, annotation: Any) -> Column:
    spec = field_spec(key, annotation)
    inner, optional = spec.inner, spec.optional
    origin = get_origin(inner) or inner
    base = Column(key, name, object, optional=optional)
    if spec.enum is not None:
        return replace(base, dtype="category", categories=spec.choices, members=tuple(origin))
    if spec.choices is not None:
        return replace(base, dtype="category", categories=spec.choices)
    if inner is NaiveDatetime:
        return replace(base, dtype="datetime64[us]")
    if spec.datetime:
        return replace(base, dtype="datetime64[us, UTC]")
    if inner is bool:
        return replace(base, dtype="boolean" if optional else "bool")
    if inner is int:
        return replace(base, dtype="Int64" if optional else "int64")
    if inner is float:
        return replace(base, dtype="float64")
    if inner is str:
        return replace(base, dtype="str")
    return replace(base, is_dict=origin in (dict, Mapping), native=_is_native(annotation))


@cache
def model_columns(model: type[BaseModel]) -> Mapping[str, Column]:
    """The columns of ``model`` by JSON key, in field order (the id included)."""
    columns: dict[str, Column] = {}
    for name, info in model.model_fields.items():
        key = json_key(name, info)
        column = _column(key, name, info.annotation)
        columns[key] = replace(column, has_default=not info.is_required())
    return columns


# --------------------------------------------------------------------------- dotted names


def escape_key(key: str) -> str:
    """A dict key as one part of a dotted column name: ``.`` and ``\\`` take a backslash."""
    if "." in key or "\\" in key:
        return key.replace("\\", "\\\\").replace(".", "\\.")
    return key


def split_name(name: str) -> list[str]:
    """The parts of a dotted column name, undoing :func:`escape_key`."""
    if "\\" not in name:
        return name.split(".")
    parts: list[str] = []
    current: list[str] = []
    chars = iter(name)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def flat_name(key: str, path: Path) -> str:
    """The column name of ``path`` inside the dict field ``key``."""
    return ".".join([key, *map(escape_key, path)])


def flat_paths(
    value: Any, prefix: Path = (), out: dict[Path, Any] | None = None
) -> dict[Path, Any]:
    """The leaves of a dict as ``{path: value}``; an empty dict is a leaf, as is any non-dict."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for sub, item in value.items():
            path = (*prefix, str(sub))
            if isinstance(item, dict) and item:
                flat_paths(item, path, out)
            else:
                out[path] = item
    return out


# --------------------------------------------------------------------------- values -> frame


def _objects(values: Sequence[Any]) -> Any:
    # fromiter: lists stay elements, never a second dimension
    return np.fromiter(values, dtype=object, count=len(values))


def infer_array(values: Sequence[Any]) -> Any:
    """A column for JSON values of mixed origin, holding each exactly.

    Only a column of one type gets a typed dtype (``boolean``, ``Int64`` within 64 bits,
    ``Float64``, ``str``); anything mixed (an int beside a float, an int wider than 64 bits)
    holds the Python objects, so no int ever becomes a float.
    """
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if kinds == {bool}:
        return pd.array(values, dtype="boolean")
    if kinds == {int}:
        present = [value for value in values if value is not None]
        if _INT64[0] <= min(present) and max(present) <= _INT64[1]:
            return pd.array(values, dtype="Int64")
    elif kinds == {float}:
        if not any(value != value for value in values if value is not None):  # NaN is no NA
            return pd.array(values, dtype="Float64")
    elif kinds == {str}:
        return pd.array(values, dtype="str")
    return _objects(values)


def _series_data(column: Column, values: Sequence[Any]) -> Any:
    if column.categories is not None:
        codes = {value: code for code, value in enumerate(column.categories)}
        codes.update((member, code) for code, member in enumerate(column.members))
        return pd.Categorical.from_codes(
            [codes.get(value, -1) for value in values], dtype=column.category_dtype
        )
    if column.dtype in _NULLABLE and values.count(None) == len(values):
        return _NULLABLE[column.dtype](len(values))  # cheaper than parsing n missing values
    if column.dtype == "datetime64[us, UTC]":
        return pd.to_datetime(values, utc=True, format="ISO8601").as_unit("us")
    if column.dtype == "datetime64[us]":
        return pd.to_datetime(values, format="ISO8601").as_unit("us")
    if column.dtype is object:
        return _objects(values)
    try:
        return pd.array(values, dtype=column.dtype)
    except (OverflowError, TypeError, ValueError):  # an int wider than 64 bits
        return _objects(values)


_NULLABLE: dict[Any, Callable[[int], Any]] = {
    "str": lambda n: pd.array(np.full(n, np.nan, dtype=object), dtype="str"),
    "datetime64[us, UTC]": lambda n: pd.DatetimeIndex(
        np.full(n, np.datetime64("NaT", "us")), tz="UTC"
    ),
}


def _flat_columns(key: str, values: Sequence[Any]) -> dict[str, Any]:
    rows = [flat_paths(value) for value in values]
    paths: dict[Path, None] = {}
    for row in rows:
        paths.update(dict.fromkeys(row))
    return {flat_name(key, path): infer_array([row.get(path) for row in rows]) for path in paths}


def transpose(docs: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[Sequence[Any]]:
    """The values of each key across ``docs`` (None where a document lacks it)."""
    if not keys:
        return []
    if not docs:
        return [() for _ in keys]
    try:
        rows = list(map(itemgetter(*keys), docs))
    except (KeyError, TypeError):
        return [[doc.get(key) for doc in docs] for key in keys]
    if len(keys) == 1:
        return [rows]
    return list(zip(*rows, strict=True))


def entity_columns(
    model: type[BaseModel], entities: Sequence[BaseModel], keys: Sequence[str]
) -> list[Sequence[Any]]:
    """The values of each key across ``entities``, validated from JSON, in frame form.

    Native fields are read from the entities as they are; the others (nested models, UUIDs,
    ...) are dumped to their JSON form.
    """
    specs = model_columns(model)
    columns = [specs[key] for key in keys]
    values = transpose([entity.__dict__ for entity in entities], [c.name for c in columns])
    for position, column in enumerate(columns):
        if not column.native and column.dtype is object:
            include = {column.name}
            values[position] = [
                entity.model_dump(mode="json", by_alias=True, include=include)[column.key]
                for entity in entities
            ]
    return values


def build_frame(
    model: type[BaseModel],
    keys: Sequence[str],
    ids: Sequence[str],
    values: Sequence[Sequence[Any]],
    flatten: bool,
) -> pd.DataFrame:
    """The frame of ``values`` (one sequence per key) indexed by ``ids``."""
    specs = model_columns(model)
    data: dict[str, Any] = {}
    for key, column_values in zip(keys, values, strict=True):
        column = specs[key]
        if flatten and column.is_dict:
            data.update(_flat_columns(key, column_values))
        else:
            data[key] = _series_data(column, column_values)
    index = pd.Index(list(ids), name="id", dtype="str")
    return pd.DataFrame(data, index=index, columns=list(data) if data else None, copy=False)


def frame_keys(model: type[BaseModel], columns: Sequence[str] | None) -> list[str]:
    """The JSON keys of the frame's columns: ``columns`` or every field, without the id."""
    return [key for key in (columns or model_columns(model)) if key != "id"]


def documents_frame(
    model: type[BaseModel],
    ids: Sequence[str],
    docs: Sequence[Mapping[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    flatten: bool = False,
) -> pd.DataFrame:
    """A frame from JSON-form documents of ``model``; see the module docstring."""
    keys = frame_keys(model, columns)
    return build_frame(model, keys, ids, transpose(docs, keys), flatten)


# --------------------------------------------------------------------------- frame -> values


def plain_value(value: Any) -> Any:
    """A cell value as pydantic expects it: no NaN/NaT/NA, no pandas or numpy scalar types."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return None if isinstance(value, np.floating) and np.isnan(value) else value.item()
    if isinstance(value, np.ndarray):
        return [plain_value(item) for item in value.tolist()]
    return value


def _cells(series: pd.Series[Any]) -> list[Any]:
    """A column's values as plain Python objects, converted a column at a time."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        values: list[Any] = pd.DatetimeIndex(series).to_pydatetime().tolist()
        missing = series.isna().to_numpy()
        if missing.any():
            values = [
                None if empty else value for value, empty in zip(values, missing, strict=True)
            ]
        return values
    if not pd.api.types.is_object_dtype(dtype):
        plain = series.astype(object)
        return plain.where(series.notna(), None).tolist()
    return [plain_value(value) for value in series]


def frame_ids(df: pd.DataFrame) -> list[str | None]:
    """The id of each row: its ``id`` cell, else its index label.

    Only a non-empty string is an id; a missing value or a number (the position a RangeIndex
    gives a row added in pandas) means the row has none.
    """
    labels = df["id"] if "id" in df.columns else df.index
    return [label if isinstance(label, str) and label else None for label in labels]


def frame_records(df: pd.DataFrame) -> list[tuple[str | None, dict[str, Any]]]:
    """``(id or None, field values)`` of each row, converted to plain Python values."""
    ids = frame_ids(df)
    body = df.drop(columns="id") if "id" in df.columns else df
    names = [str(name) for name in body.columns]
    columns = [_cells(body.iloc[:, position]) for position in range(len(names))]
    if not columns:
        return [(entity_id, {}) for entity_id in ids]
    return [
        (entity_id, dict(zip(names, values, strict=True)))
        for entity_id, values in zip(ids, zip(*columns, strict=True), strict=True)
    ]


# --------------------------------------------------------------------------- comparing, patching

MISSING: Any = object()


def same(a: Any, b: Any) -> bool:
    """JSON values equal in value and type: ``1``, ``1.0`` and ``True`` all differ."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(item, b[key]) for key, item in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@dataclass(frozen=True)
class FlatCell:
    """A dotted column of a dict field: its name and the path it stands for."""

    column: str
    path: Path


def flat_layout(specs: Mapping[str, Column], names: Sequence[str]) -> dict[str, list[FlatCell]]:
    """The dotted columns among ``names`` by dict field (a field with its own column has none)."""
    layout: dict[str, list[FlatCell]] = {}
    for name in names:
        head, *path = split_name(name)
        if path and head in specs and specs[head].is_dict and head not in names:
            layout.setdefault(head, []).append(FlatCell(name, tuple(path)))
    return layout


def patch(
    old: Any, cells: Sequence[tuple[FlatCell, Any]], *, stored: bool
) -> tuple[Any, list[tuple[str, str]]]:
    """The dict field ``old`` with the edited cells applied; and problems, by column.

    For a stored row a cell is edited when it differs from ``old``'s value at its path (an
    empty cell matches an absent key or null): a value sets its path, an empty cell removes
    the key. Unedited cells change nothing, so ``old`` comes back as it was. For a new row
    every non-empty cell sets its path in an empty dict. Returns ``MISSING`` as the value
    when a new row sets nothing.
    """
    leaves = flat_paths(old) if stored else {}
    edits = [
        (cell, value)
        for cell, value in cells
        if not (
            value is None
            if not stored
            else (
                leaves.get(cell.path) is None
                if value is None
                else same(value, leaves.get(cell.path, MISSING))
            )
        )
    ]
    if not edits:
        return (old if stored else MISSING), []
    result: dict[str, Any] = copy.deepcopy(old) if isinstance(old, dict) else {}
    problems: list[tuple[str, str]] = []
    for cell, value in sorted(edits, key=lambda edit: len(edit[0].path)):
        *parents, last = cell.path
        target: Any = result
        for depth, part in enumerate(parents):
            inner = target.get(part)
            if inner is None and value is not None:
                inner = target[part] = {}
            if not isinstance(inner, dict):
                if value is not None:
                    where = flat_name(cell.column.split(".", 1)[0], cell.path[: depth + 1])
                    problems.append(
                        (
                            cell.column,
                            f"cannot set a key inside {where}, which holds {inner!r}, not a "
                            "dict; edit that cell instead",
                        )
                    )
                break
            target = inner
        else:
            if value is None:
                target.pop(last, None)
            else:
                target[last] = value
    return result, problems
