"""Conversions between stored JSON documents, pandas columns and model field values.

The frame layout is described in :mod:`symphony_nb.dataframes`; this module only converts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from operator import itemgetter
from typing import Any, Literal, get_args

try:
    import numpy as np
    import pandas as pd
except ImportError as exc:  # pragma: no cover - the notebook extras are missing
    raise ImportError(
        "symphony_nb's pandas face needs pandas: pip install 'symphony_nb[notebook]'"
    ) from exc
from pydantic import AwareDatetime, BaseModel, FutureDatetime, NaiveDatetime, PastDatetime

from ._fields import unwrap

DATETIME_TYPES: tuple[Any, ...] = (
    datetime,
    AwareDatetime,
    NaiveDatetime,
    PastDatetime,
    FutureDatetime,
)
"""The annotations (after unwrapping) of datetime fields."""


@dataclass(frozen=True)
class Column:
    """How one model field becomes a column: its JSON key and pandas dtype."""

    key: str
    dtype: Any
    categories: tuple[Any, ...] | None = None
    is_dict: bool = False
    optional: bool = False
    has_default: bool = False

    @property
    def category_dtype(self) -> pd.CategoricalDtype:
        """The categorical dtype of an enum column: every member, in declaration order."""
        return pd.CategoricalDtype(list(self.categories or ()))


def _column(key: str, annotation: Any) -> Column:
    inner, optional = unwrap(annotation)
    origin = getattr(inner, "__origin__", None) or inner
    if isinstance(origin, type) and issubclass(origin, Enum):
        return Column(key, "category", tuple(m.value for m in origin), optional=optional)
    if origin is Literal:
        return Column(key, "category", get_args(inner), optional=optional)
    if inner is NaiveDatetime:
        return Column(key, "datetime64[us]", optional=optional)
    if inner in DATETIME_TYPES:
        return Column(key, "datetime64[us, UTC]", optional=optional)
    if inner is bool:
        return Column(key, "boolean" if optional else "bool", optional=optional)
    if inner is int:
        return Column(key, "Int64" if optional else "int64", optional=optional)
    if inner is float:
        return Column(key, "float64", optional=optional)
    if inner is str:
        return Column(key, "str", optional=optional)
    is_dict = inner is Any or origin in (dict, Mapping)
    return Column(key, object, is_dict=is_dict, optional=optional)


def model_columns(model: type[BaseModel]) -> dict[str, Column]:
    """The columns of ``model`` by JSON key, in field order (the id included)."""
    columns: dict[str, Column] = {}
    for name, info in model.model_fields.items():
        key = info.serialization_alias or info.alias or name
        column = _column(key, info.annotation)
        columns[key] = replace(column, has_default=not info.is_required())
    return columns


# --------------------------------------------------------------------------- documents -> frame


def _series_data(column: Column, values: Sequence[Any]) -> Any:
    if column.categories is not None:
        codes = {value: code for code, value in enumerate(column.categories)}
        return pd.Categorical.from_codes(
            [codes.get(value, -1) for value in values], dtype=column.category_dtype
        )
    if column.dtype in _NULLABLE and values.count(None) == len(values):
        return _NULLABLE[column.dtype](len(values))  # cheaper than parsing n missing values
    if column.dtype == "datetime64[us, UTC]":
        return pd.to_datetime(values, utc=True, format="ISO8601").as_unit("us")
    if column.dtype == "datetime64[us]":
        return pd.to_datetime(values, format="ISO8601").as_unit("us")
    if column.dtype is object:  # fromiter: lists stay elements, never a second dimension
        return np.fromiter(values, dtype=object, count=len(values))
    return pd.array(values, dtype=column.dtype)


_NULLABLE: dict[Any, Callable[[int], Any]] = {
    "str": lambda n: pd.array(np.full(n, np.nan, dtype=object), dtype="str"),
    "datetime64[us, UTC]": lambda n: pd.DatetimeIndex(
        np.full(n, np.datetime64("NaT", "us")), tz="UTC"
    ),
}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for sub, item in value.items():
            _flatten(f"{prefix}.{sub}", item, out)
    elif prefix:
        out[prefix] = value


def _flat_columns(key: str, values: Sequence[Any]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    for value in values:
        flat: dict[str, Any] = {}
        if isinstance(value, dict):
            for sub, item in value.items():
                _flatten(f"{key}.{sub}", item, flat)
        rows.append(flat)
        names.update(dict.fromkeys(flat))
    # pd.array keeps ints as Int64 where some rows lack the key (a Series would make floats).
    return {name: pd.array([row.get(name) for row in rows]) for name in names}


def transpose(
    docs: Sequence[Mapping[str, Any]], keys: Sequence[str], *, strict: bool = False
) -> list[Sequence[Any]]:
    """The values of each key across ``docs``; ``strict`` raises KeyError for a missing key."""
    if not keys:
        return []
    if not docs:
        return [() for _ in keys]
    try:
        rows = list(map(itemgetter(*keys), docs))
    except (KeyError, TypeError):
        if strict:
            raise KeyError("a document lacks a field") from None
        return [[doc.get(key) for doc in docs] for key in keys]
    if len(keys) == 1:
        return [rows]
    return list(zip(*rows, strict=True))


def build_frame(
    model: type[BaseModel],
    keys: Sequence[str],
    ids: Sequence[str],
    values: Sequence[Sequence[Any]],
    flatten: bool,
) -> pd.DataFrame:
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
    return [key for key in (columns or model_columns(model)) if key != "id"]


def documents_frame(
    model: type[BaseModel],
    ids: Sequence[str],
    docs: Sequence[Mapping[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    flatten: bool = False,
) -> pd.DataFrame:
    """A frame from JSON-form documents of ``model`` (as stored); see the module docstring."""
    keys = frame_keys(model, columns)
    return build_frame(model, keys, ids, transpose(docs, keys), flatten)


# --------------------------------------------------------------------------- frame -> values


def _python(value: Any) -> Any:
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
        return [_python(item) for item in value.tolist()]
    return value


def unflatten(
    row: dict[str, Any], specs: Mapping[str, Column], old: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Rebuild dict fields from dotted columns.

    An empty cell is a key the row does not have, unless the stored document ``old`` has
    that key (with a null value): then it stays, so an unedited row reads back unchanged.
    """
    out: dict[str, Any] = {}
    built: set[str] = set()
    for name, value in row.items():
        head, dot, rest = name.partition(".")
        if not dot or head not in specs or not specs[head].is_dict or head in row:
            out[name] = value
            continue
        built.add(head)
        target = out.setdefault(head, {})
        parts = rest.split(".")
        if value is None and not _has_path(old, [head, *parts]):
            continue
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    for head in built:
        if out[head] == {} and specs[head].optional and (old is None or old.get(head) is None):
            out[head] = None
    return out


def _has_path(doc: Any, path: Sequence[str]) -> bool:
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return False
        doc = doc[part]
    return True


def _cells(series: pd.Series[Any]) -> list[Any]:
    """A column's values as plain Python objects, converted a column at a time."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        return [None if value is pd.NaT else value.to_pydatetime() for value in series]
    if not pd.api.types.is_object_dtype(dtype):
        plain = series.astype(object)
        return plain.where(series.notna(), None).tolist()
    return [_python(value) for value in series]


def frame_records(df: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
    """``(id, field values)`` of each row of ``df``, converted to plain Python values."""
    if "id" in df.columns:
        ids = [str(value) for value in df["id"]]
        body = df.drop(columns="id")
    else:
        ids = [str(value) for value in df.index]
        body = df
    names = [str(name) for name in body.columns]
    columns = [_cells(body.iloc[:, position]) for position in range(len(names))]
    return (
        [
            (entity_id, dict(zip(names, values, strict=True)))
            for entity_id, values in zip(ids, zip(*columns, strict=True), strict=True)
        ]
        if columns
        else [(entity_id, {}) for entity_id in ids]
    )
