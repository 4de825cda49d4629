"""Filter and ordering semantics: parsed once here, evaluated here, compiled to SQL elsewhere.

A filter is a dict of conditions that must all hold (AND)::

    {"status": TaskStatus.PENDING,                      # equality (an enum matches its value)
     "priority": {"$in": ["high", "critical"]},         # operators
     "input_data.query": {"$contains": "Symphony"},     # dotted paths into dicts and models
     "created_at": {"$gte": datetime(2026, 1, 1, tzinfo=UTC)}}

Semantics, on the entity's JSON document (the form every backend stores):

* A missing key and a JSON ``null`` are the same thing ("no value").
* ``$eq`` / ``$ne``: ``$eq None`` matches no value; otherwise the stored value must have the
  same JSON type (numbers are one type, ``1 == 1.0``; ``true`` is not ``1``) and be equal.
  Numbers compare exactly by value, integers of any size included (``10**20 == 1e20``,
  ``2**64 + 1 != 2**64``); NaN and infinity are refused.
  ``$ne`` is exactly ``not $eq`` (so it matches entities with no value).
* ``$in`` / ``$nin``: a list of such values; ``$nin`` is exactly ``not $in``.
* ``$gt $gte $lt $lte``: only numbers against numbers and strings against strings (by code
  point); anything else, including no value, does not match. Datetimes (fields, and values
  inside dicts) are stored as fixed-width UTC text, so a datetime operand compares as an
  instant; a string operand compares as text.
* ``$exists``: ``True`` matches a value that is present and not null, ``False`` the opposite.
* ``$contains``: a list that has an element equal to the operand, or a string that has the
  operand (a string) as a substring.

Keys are checked against the model: a top-level key must be a field (its name or alias); a
dotted key continues into a nested model's fields or into any key of a dict field. Values are
validated against the field's type, so ``{"status": "bogus"}`` is an error, not an empty result.

Ordering: ``order_by`` is a field name, ``"-field"`` for descending, or a list of them. Enum
fields order by declaration (low < medium < high < critical); no value sorts first ascending
and last descending; ties are broken by id. Without ``order_by`` results come in id order.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import Enum
from functools import lru_cache
from typing import Any, Literal, get_args, get_origin

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    FutureDate,
    FutureDatetime,
    NaiveDatetime,
    PastDate,
    PastDatetime,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import from_json

from ._errors import FilterError
from ._fields import FieldSpec, model_fields, unwrap
from ._models import _format_utc

Operator = Literal[
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains"
]
OPERATORS: tuple[str, ...] = get_args(Operator)
COMPARISONS = frozenset({"$gt", "$gte", "$lt", "$lte"})
Scalar = None | bool | int | float | str

WIDE = 2**63
MAX_DIGITS = 4300
"""The longest integer (in digits) that Python and pydantic read back from JSON text."""
_DIGIT_BOUND = 10**MAX_DIGITS
_DIGIT_RUNS = bytes(ord("0") if 48 <= i <= 57 else ord(" ") for i in range(256))
_LONG_RUN = b"0" * 19
_DATE_TYPES = (AwareDatetime, NaiveDatetime, PastDatetime, FutureDatetime, PastDate, FutureDate)
_SUBKEY_RE = re.compile(r'[^\x00-\x1f\x7f".\\\[\]*$]+')
_MAX_SUBKEY = 200
_MISSING: Any = None


@dataclass(frozen=True)
class Condition:
    """One parsed condition: ``path`` (JSON keys), an operator, and a JSON-form operand."""

    path: tuple[str, ...]
    op: Operator
    value: Any


@dataclass(frozen=True)
class OrderKey:
    """One parsed ordering key; ``enum`` gives the rank order of an enum field.

    ``numeric`` is False when the field cannot hold a number (text, datetime, enum, bool).
    """

    path: tuple[str, ...]
    descending: bool = False
    enum: tuple[str, ...] | None = None
    numeric: bool = True


@dataclass(frozen=True)
class Query:
    """A parsed query: conditions (AND), ordering (id order when empty), paging.

    ``after_id`` restricts to ids greater than it (keyset paging in id order).
    ``any_order`` (only without order, limit, offset or after_id) lets a backend return the
    rows in whatever order is cheapest: the caller sorts them by id itself.
    """

    conditions: tuple[Condition, ...] = ()
    order: tuple[OrderKey, ...] = ()
    limit: int | None = None
    offset: int = 0
    after_id: str | None = None
    columns: tuple[str, ...] | None = field(default=None)
    any_order: bool = False

    def unordered(self) -> Query:
        """This query with ``any_order`` set when the result is needed whole in id order."""
        if self.order or self.limit is not None or self.offset or self.after_id is not None:
            return self
        return replace(self, any_order=True)


# --------------------------------------------------------------------------- model schema


@lru_cache(maxsize=1024)
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


# --------------------------------------------------------------------------- parsing


def _resolve(model: type[BaseModel], key: Any) -> tuple[tuple[str, ...], FieldSpec | None]:
    """Check a (dotted) key; return its JSON path and the spec of its last model field.

    The spec is None when the path continues into a dict field (any JSON value).
    """
    if not isinstance(key, str) or not key:
        raise FilterError(f"filter keys must be non-empty strings, got {key!r}")
    parts = key.split(".")
    path: list[str] = []
    current: type[BaseModel] | None = model
    spec: FieldSpec | None = None
    for index, part in enumerate(parts):
        if current is None:  # inside a dict: any key that is safe in every backend
            if not _SUBKEY_RE.fullmatch(part) or len(part) > _MAX_SUBKEY:
                raise FilterError(
                    f"invalid key segment {part!r} in {key!r}: dict keys in a filter must be "
                    f"1-{_MAX_SUBKEY} characters without quotes, backslashes, brackets, '*', "
                    "'$' or control characters"
                )
            path.append(part)
            continue
        fields = model_fields(current)
        if part not in fields:
            where = (
                f"model {current.__name__}"
                if index == 0
                else f"{'.'.join(path)} ({current.__name__})"
            )
            valid = sorted(fields)
            raise FilterError(
                f"unknown field {part!r} in key {key!r} for {where}; valid fields: {valid}"
            )
        spec = fields[part]
        path.append(spec.name)
        if spec.secret and (index + 1 == len(parts) or spec.kind != "model"):
            raise FilterError(_secret_refusal(key))
        if index + 1 < len(parts):
            if spec.kind == "model":
                current = spec.model
            elif spec.kind == "dict":
                current = None
                spec = None
            else:
                raise FilterError(
                    f"key {key!r}: field {part!r} is a {spec.kind} and has no sub-fields"
                )
    return tuple(path), spec


def _secret_refusal(key: str, verb: str = "filter on") -> str:
    return (
        f"cannot {verb} {key!r}: it is a secret field (SecretStr or SecretBytes), stored "
        "encrypted, and secret fields cannot be queried; filter on another field and compare "
        "the secret in Python after loading"
    )


def _json_scalar(value: Any, key: str) -> Scalar:
    """An operand for a path inside a dict: plain JSON scalars (enums and datetimes converted)."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise FilterError(
                f"{key!r}: naive datetime {value!r}; give a timezone (for example UTC)"
            )
        return _format_utc(value)
    if isinstance(value, str) and "\x00" in value:
        raise FilterError(f"{key!r}: text with a NUL character (\\x00) can never be stored")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -_DIGIT_BOUND < value < _DIGIT_BOUND:
            raise FilterError(
                f"{key!r}: an integer of more than {MAX_DIGITS} digits can never be stored"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"{key!r}: {value!r} cannot be compared; use a finite number")
        return value
    raise FilterError(
        f"{key!r}: cannot compare with {type(value).__name__} {value!r}; "
        "use a string, number, bool, None, enum or datetime"
    )


def _operand(spec: FieldSpec | None, value: Any, key: str, *, element: bool = False) -> Scalar:
    """Validate ``value`` against the field type and return its JSON form."""
    if value is None:
        return None
    if spec is None:
        return _json_scalar(value, key)
    if spec.kind == "dict" or spec.kind == "model":
        raise FilterError(
            f"{key!r} is a {spec.kind}; compare its parts with dotted keys such as '{key}.name'"
        )
    annotation = spec.element if element else spec.annotation
    if spec.kind == "list" and not element:
        raise FilterError(f"{key!r} is a list; use {{'$contains': value}} to match an element")
    try:
        checked = _adapter(annotation).validate_python(value)
        dumped = _adapter(annotation).dump_python(checked, mode="json")
    except ValidationError as exc:
        message = exc.errors()[0]["msg"] if exc.errors() else str(exc)
        raise FilterError(
            f"{key!r}: {value!r} is not a valid value for this field: {message}"
        ) from None
    return _json_scalar(dumped, key)


def _condition(model: type[BaseModel], key: Any, op: Any, value: Any) -> Condition:
    path, spec = _resolve(model, key)
    if op not in OPERATORS:
        raise FilterError(f"unknown operator {op!r} for {key!r}; operators: {list(OPERATORS)}")
    if op == "$exists":
        if not isinstance(value, bool):
            raise FilterError(f"{key!r}: $exists takes True or False, got {value!r}")
        return Condition(path, op, value)
    if op in ("$in", "$nin"):
        if not isinstance(value, list | tuple | set | frozenset):
            raise FilterError(f"{key!r}: {op} takes a list of values, got {value!r}")
        items = tuple(_operand(spec, item, key) for item in value)
        return Condition(path, op, items)
    if op == "$contains":
        if spec is not None and spec.kind == "list":
            item = _operand(spec, value, key, element=True)
        elif spec is None or (spec.kind == "scalar" and isinstance(value, str)):
            item = _json_scalar(value, key)
        else:
            raise FilterError(f"{key!r}: $contains applies to lists, strings and dict values")
        if item is None:
            raise FilterError(f"{key!r}: $contains needs a value, not None")
        return Condition(path, op, item)
    operand = _operand(spec, value, key)
    if op in COMPARISONS and (operand is None or isinstance(operand, bool)):
        raise FilterError(f"{key!r}: {op} compares numbers or strings, got {value!r}")
    return Condition(path, op, operand)


def parse_filter(
    model: type[BaseModel], criteria: Mapping[str, Any] | None
) -> tuple[Condition, ...]:
    """Check ``criteria`` against ``model`` and return its conditions (raise FilterError)."""
    if criteria is None:
        return ()
    if not isinstance(criteria, Mapping):
        raise FilterError(
            f"a filter is a dict of field -> value or operators, got {type(criteria).__name__}"
        )
    conditions: list[Condition] = []
    for key, value in criteria.items():
        if isinstance(value, Mapping):
            ops = list(value)
            if not ops:
                raise FilterError(f"{key!r}: empty operator dict; use for example {{'$eq': value}}")
            if not all(isinstance(op, str) and op.startswith("$") for op in ops):
                raise FilterError(
                    f"{key!r}: a dict value must hold only operators ({', '.join(OPERATORS)}); "
                    f"to match inside a dict field use dotted keys such as '{key}.subkey'"
                )
            conditions.extend(_condition(model, key, op, operand) for op, operand in value.items())
        else:
            conditions.append(_condition(model, key, "$eq", value))
    return tuple(conditions)


def parse_order(
    model: type[BaseModel], order_by: str | Sequence[str] | None
) -> tuple[OrderKey, ...]:
    """Check ``order_by`` against ``model`` and return its keys (raise FilterError)."""
    if order_by is None:
        return ()
    names = [order_by] if isinstance(order_by, str) else list(order_by)
    keys: list[OrderKey] = []
    for name in names:
        if not isinstance(name, str) or not name.lstrip("-"):
            raise FilterError(f"order_by takes field names ('-name' for descending), got {name!r}")
        descending = name.startswith("-")
        bare = name[1:] if descending else name
        fields = model_fields(model)
        if bare not in fields:
            raise FilterError(
                f"cannot order by unknown field {bare!r}; valid fields: {sorted(fields)}"
            )
        spec = fields[bare]
        if spec.secret:
            raise FilterError(_secret_refusal(bare, "order by"))
        if spec.kind != "scalar":
            raise FilterError(f"cannot order by {bare!r}: it is a {spec.kind}, not a single value")
        keys.append(OrderKey((spec.name,), descending, spec.enum, _may_be_number(spec)))
    return tuple(keys)


def _may_be_number(spec: FieldSpec) -> bool:
    inner, _ = unwrap(spec.annotation)
    origin = get_origin(inner) or inner
    if not isinstance(origin, type):
        return True
    return not issubclass(origin, (str, bool, date, Enum, *_DATE_TYPES))


def parse_columns(model: type[BaseModel], columns: Sequence[str] | None) -> tuple[str, ...] | None:
    """Check a column selection against ``model``; return the JSON keys (raise FilterError)."""
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [columns]
    fields = model_fields(model)
    unknown = [c for c in columns if c not in fields]
    if unknown:
        raise FilterError(f"unknown column(s) {unknown}; valid fields: {sorted(fields)}")
    return tuple(dict.fromkeys(fields[c].name for c in columns))


def check_paging(limit: int | None, offset: int) -> None:
    """Raise FilterError unless ``limit`` is None or >= 0 and ``offset`` >= 0 (ints)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise FilterError(f"limit must be None or an int >= 0, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise FilterError(f"offset must be an int >= 0, got {offset!r}")


# --------------------------------------------------------------------------- numbers


def wide(value: Any) -> bool:
    """Whether ``value`` is a number that 64-bit arithmetic cannot compare exactly.

    Integers outside the signed 64-bit range are where stores lose precision: SQLite (and
    orjson, from 2**64 on) read them as the nearest double. Such a double ``d`` has
    ``|d| >= 2**63``, so it still compares with any number ``x`` with ``|x| < 2**63``
    exactly as the integer does; only an operand with ``|x| >= 2**63`` needs exact integers.
    """
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and not -WIDE < value < WIDE
    )


def needs_exact(conditions: Iterable[Condition], order: Iterable[OrderKey] = ()) -> bool:
    """Whether evaluating needs integers beyond 64 bits exactly (see :func:`wide`).

    True for a wide operand, and for an ordering by a field that can hold numbers: two
    integers that round to one double would otherwise tie.
    """
    for cond in conditions:
        values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
        if any(wide(value) for value in values):
            return True
    return any(key.numeric for key in order)


def parse_document(data: str | bytes, *, exact: bool = False) -> Any:
    """A stored JSON document as filters evaluate it; ValueError if it is not JSON.

    Fast (orjson), but integers beyond 64 bits come back as the nearest float (see
    :func:`wide` for when that is enough); with ``exact``, a document that may hold one is
    read by pydantic's parser instead, exactly as the model reads it.
    """
    if exact and has_long_digits(data):
        return from_json(data, allow_inf_nan=False)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # also raised for valid JSON: an integer beyond 1e308
        return from_json(data, allow_inf_nan=False)


def dump_document(doc: Any) -> str:
    """A parsed document as compact JSON text, every integer kept exactly."""
    try:
        return orjson.dumps(doc).decode()
    except TypeError:  # an integer beyond 64 bits: the standard library writes it exactly
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def document_text(document: str | bytes) -> str:
    """A stored document as text (documents are UTF-8 JSON, as ``str`` or ``bytes``)."""
    return document if isinstance(document, str) else document.decode()


def has_long_digits(data: str | bytes) -> bool:
    """Whether ``data`` has 19 digits in a row: maybe an integer orjson cannot read exactly."""
    raw = data.encode() if isinstance(data, str) else data
    return _LONG_RUN in raw.translate(_DIGIT_RUNS)


# --------------------------------------------------------------------------- evaluation


def lookup(doc: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in a JSON document, or None when missing."""
    for part in path:
        if not isinstance(doc, dict):
            return _MISSING
        doc = doc.get(part, _MISSING)
    return doc


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "str"
    return "null" if value is None else "other"


def _equal(stored: Any, operand: Scalar) -> bool:
    if operand is None:
        return stored is None
    return _kind(stored) == _kind(operand) and stored == operand


def _holds(cond: Condition, stored: Any) -> bool:
    op, operand = cond.op, cond.value
    if op == "$eq":
        return _equal(stored, operand)
    if op == "$ne":
        return not _equal(stored, operand)
    if op == "$in":
        return any(_equal(stored, item) for item in operand)
    if op == "$nin":
        return not any(_equal(stored, item) for item in operand)
    if op == "$exists":
        return (stored is not None) is operand
    if op == "$contains":
        if isinstance(stored, list):
            return any(_equal(item, operand) for item in stored)
        return isinstance(stored, str) and isinstance(operand, str) and operand in stored
    if _kind(stored) != _kind(operand) or _kind(stored) not in ("num", "str"):
        return False
    if op == "$gt":
        return bool(stored > operand)
    if op == "$gte":
        return bool(stored >= operand)
    if op == "$lt":
        return bool(stored < operand)
    return bool(stored <= operand)


def matches(conditions: tuple[Condition, ...], doc: Any) -> bool:
    """Whether a JSON document satisfies every condition."""
    return all(_holds(cond, lookup(doc, cond.path)) for cond in conditions)


def _sort_key(key: OrderKey) -> Callable[[tuple[str, Any]], tuple[int, Any]]:
    rank = {value: index for index, value in enumerate(key.enum)} if key.enum else None

    def sort_key(row: tuple[str, Any]) -> tuple[int, Any]:
        value = lookup(row[1], key.path)
        if value is None:
            return (0, 0)
        if rank is not None:
            return (1, rank.get(value, len(rank)))
        return (1, value)

    return sort_key


def apply_query(query: Query, docs: Iterable[tuple[str, Any]]) -> list[str]:
    """Evaluate ``query`` over ``(id, document)`` pairs; return the ids in result order."""
    rows = [
        (entity_id, doc)
        for entity_id, doc in docs
        if (query.after_id is None or entity_id > query.after_id) and matches(query.conditions, doc)
    ]
    rows.sort(key=lambda row: row[0])
    for key in reversed(query.order):
        rows.sort(key=_sort_key(key), reverse=key.descending)
    stop = None if query.limit is None else query.offset + query.limit
    return [entity_id for entity_id, _ in rows[query.offset : stop]]
