"""Compile parsed filters and orderings (:mod:`symphony_nb._filters`) to PostgreSQL.

Documents live in a ``doc jsonb`` column. The SQL built here follows ``apply_query`` exactly:

* a path is ``doc->'field'->$n``: model field names that are plain identifiers are quoted
  literals (so expression indexes match them); in queries dict sub-keys are always bound
  parameters (an index on one is made with the key as an escaped literal);
* equality is jsonb equality (type-strict, ``1 = 1.0``); strings compare as ``text COLLATE
  "C"`` (code point order), so the ``COLLATE "C"`` expression indexes serve ``$eq``, ``$in``
  and ranges on string, enum and datetime fields;
* numbers are ``numeric``, exact at any size: :func:`document` writes each float so that
  jsonb keeps it a float (a decimal point survives, an exponent does not) and compares it
  exactly with integers;
* "no value" is SQL NULL (missing key) or JSON null; negations are ``NOT COALESCE(p, false)``
  so that they match entities with no value.

No user text ever becomes SQL text: every operand and every dict sub-key is a parameter.
"""

# Identifiers are quoted and operands bound; only fixed fragments become SQL text.
# ruff: noqa: S608

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel

from .._filters import COMPARISONS, Condition, OrderKey, Query, model_fields

_LITERAL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SQL_OPS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


_EXACT_FLOAT = 2**53
# A JSON string, or a number with a positive exponent (written by pydantic as "1e+20").
_EXPONENT_RE = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?[eE]\+?\d+')


def number(value: float) -> str:
    """The JSON text of a float as stored and compared in PostgreSQL.

    ``numeric`` forgets an exponent (``1e20`` comes back as the integer
    ``100000000000000000000``) but keeps a decimal point, so every float is written with one.
    From 2**53 on a float is an integer, written exactly (``123456789012345664.0``, not the
    shorter ``1.2345678901234566e17``), so it compares with integers as Python compares them.
    """
    if abs(value) >= _EXACT_FLOAT:
        return f"{int(value)}.0"
    return repr(value)  # positional with a point, or a negative exponent: both keep a point


def document(text: str) -> str:
    """A document's JSON as stored in PostgreSQL: floats written by :func:`number`.

    Below 1e16 pydantic writes floats positionally already (and a negative exponent
    keeps its decimals); only a positive exponent needs rewriting, and most documents have none.
    """
    if "e+" not in text and "E+" not in text:
        return text
    return _EXPONENT_RE.sub(_rewrite, text)


def _rewrite(match: re.Match[str]) -> str:
    token = match.group()
    return token if token.startswith('"') else number(float(token))


def jsonb(value: Any) -> str:
    """The JSON text of a filter operand (a scalar or a list of them), bound as ``jsonb``."""
    if isinstance(value, float):
        return number(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # any size; orjson stops at 64 bits
    if isinstance(value, list):
        return "[" + ",".join(jsonb(item) for item in value) + "]"
    return orjson.dumps(value).decode()


@dataclass
class Params:
    """Bound parameters of one statement; :meth:`add` returns the placeholder."""

    values: list[Any] = field(default_factory=list)

    def add(self, value: Any, cast: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


def model_segments(model: type[BaseModel], path: Sequence[str]) -> int:
    """How many leading segments of ``path`` are model fields (the rest are dict keys)."""
    current: type[BaseModel] | None = model
    for index, part in enumerate(path):
        if current is None:
            return index
        spec = model_fields(current).get(part)
        if spec is None:
            return index
        current = spec.model if spec.kind == "model" else None
    return len(path)


def path_sql(model: type[BaseModel], path: Sequence[str], params: Params | None) -> tuple[str, str]:
    """The ``(jsonb, text)`` expressions of ``path`` in ``doc``.

    With ``params`` None (DDL, where nothing can be bound) a segment that is not a plain model
    field name becomes an escaped string literal; a query binds the same key, and the planner
    matches the two once the parameter's value is known.
    """
    fixed = model_segments(model, path)
    parts: list[str] = []
    for index, part in enumerate(path):
        if index < fixed and _LITERAL_RE.fullmatch(part):
            parts.append(f"'{part}'")
        elif params is None:
            parts.append(_escaped_literal(part))
        else:
            parts.append(params.add(part, "text"))
    head = "doc" + "".join(f"->{p}" for p in parts[:-1])
    return f"({head}->{parts[-1]})", f"({head}->>{parts[-1]})"


def _escaped_literal(text: str) -> str:
    # An E'' string reads the same whatever standard_conforming_strings says.
    if "\x00" in text:
        raise ValueError(f"key {text!r} contains a NUL character")
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def index_sql(model: type[BaseModel], path: Sequence[str]) -> str:
    """The expression of a btree index on ``path``, as the filters below use it."""
    _, text = path_sql(model, path, None)
    return f'({text} COLLATE "C")'


def _typeof(value: str, kind: str) -> str:
    return f"jsonb_typeof({value}) = '{kind}'"


def _equal_any(value: str, text: str, operands: Sequence[Any], params: Params) -> str:
    """A predicate true when the value equals one of ``operands`` (NULL or false otherwise)."""
    strings = [item for item in operands if isinstance(item, str)]
    others = [item for item in operands if item is not None and not isinstance(item, str)]
    parts: list[str] = []
    if any(item is None for item in operands):
        parts.append(f"({value} IS NULL OR {_typeof(value, 'null')})")
    if len(strings) == 1:
        parts.append(
            f'({_typeof(value, "string")} AND {text} COLLATE "C" = {params.add(strings[0], "text")})'
        )
    elif strings:
        parts.append(
            f'({_typeof(value, "string")} AND {text} COLLATE "C" = ANY({params.add(strings, "text[]")}))'
        )
    if len(others) == 1:
        parts.append(f"{value} = {params.add(jsonb(others[0]), 'jsonb')}")
    elif others:
        parts.append(f"{value} = ANY({params.add([jsonb(o) for o in others], 'jsonb[]')})")
    if not parts:  # an empty $in; still mention the value so its bound sub-keys are used
        return f"({value} IS NULL AND false)"
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def _contains(value: str, text: str, operand: Any, params: Params) -> str:
    element = params.add(jsonb([operand]), "jsonb")
    array = f"({_typeof(value, 'array')} AND {value} @> {element})"
    if not isinstance(operand, str):
        return array
    substring = (
        f"({_typeof(value, 'string')} AND strpos({text}, {params.add(operand, 'text')}) > 0)"
    )
    return f"({array} OR {substring})"


def _compare(value: str, text: str, op: str, operand: Any, params: Params) -> str:
    sql_op = _SQL_OPS[op]
    if isinstance(operand, str):
        return f'({_typeof(value, "string")} AND {text} COLLATE "C" {sql_op} {params.add(operand, "text")})'
    # jsonb orders numbers numerically; the type check keeps other kinds out.
    return (
        f"({_typeof(value, 'number')} AND {value} {sql_op} {params.add(jsonb(operand), 'jsonb')})"
    )


def condition_sql(model: type[BaseModel], cond: Condition, params: Params) -> str:
    """One condition as a boolean SQL expression that is never NULL where it matters."""
    value, text = path_sql(model, cond.path, params)
    op, operand = cond.op, cond.value
    if op == "$eq":
        return _equal_any(value, text, [operand], params)
    if op == "$ne":
        return f"NOT COALESCE({_equal_any(value, text, [operand], params)}, false)"
    if op == "$in":
        return _equal_any(value, text, operand, params)
    if op == "$nin":
        return f"NOT COALESCE({_equal_any(value, text, operand, params)}, false)"
    if op == "$exists":
        present = f"COALESCE(jsonb_typeof({value}) <> 'null', false)"
        return present if operand else f"NOT {present}"
    if op == "$contains":
        return _contains(value, text, operand, params)
    if op in COMPARISONS:
        return _compare(value, text, op, operand, params)
    raise ValueError(f"unsupported operator {op!r}")  # pragma: no cover - parse_filter checks


def where_sql(
    model: type[BaseModel],
    conditions: Sequence[Condition],
    params: Params,
    after_id: str | None = None,
) -> str:
    """The WHERE clause (with its keyword) for ``conditions``, or an empty string."""
    parts = [condition_sql(model, cond, params) for cond in conditions]
    if after_id is not None:
        parts.append(f"id > {params.add(after_id, 'text')}")
    return " WHERE " + " AND ".join(parts) if parts else ""


def _order_key_sql(model: type[BaseModel], key: OrderKey, params: Params) -> list[str]:
    value, text = path_sql(model, key.path, params)
    direction = " DESC" if key.descending else ""
    present = f"(CASE WHEN jsonb_typeof({value}) <> 'null' THEN 1 ELSE 0 END){direction}"
    if key.enum:
        ranks = " ".join(
            f"WHEN {value} = {params.add(jsonb(member), 'jsonb')} THEN {rank}"
            for rank, member in enumerate(key.enum)
        )
        return [present, f"(CASE {ranks} ELSE {len(key.enum)} END){direction}"]
    return [
        present,
        f'(CASE WHEN {_typeof(value, "string")} THEN {text} END) COLLATE "C"{direction}',
        f"(CASE WHEN jsonb_typeof({value}) IN ('number', 'boolean') THEN {value} END){direction}",
    ]


def order_sql(model: type[BaseModel], order: Sequence[OrderKey], params: Params) -> str:
    """The ORDER BY clause: the keys (no value first ascending, last descending), then id."""
    keys = [sql for key in order for sql in _order_key_sql(model, key, params)]
    return " ORDER BY " + ", ".join([*keys, 'id COLLATE "C"'])


def select_sql(model: type[BaseModel], table: str, query: Query) -> tuple[str, list[Any]]:
    """``SELECT id, doc`` for ``query`` (filter, order, page) and its parameters."""
    params = Params()
    sql = f"SELECT id, doc FROM {table}"
    sql += where_sql(model, query.conditions, params, query.after_id)
    if not query.any_order:
        sql += order_sql(model, query.order, params)
    if query.limit is not None:
        sql += f" LIMIT {params.add(query.limit, 'bigint')}"
    if query.offset:
        sql += f" OFFSET {params.add(query.offset, 'bigint')}"
    return sql, params.values


def count_sql(
    model: type[BaseModel], table: str, conditions: Sequence[Condition]
) -> tuple[str, list[Any]]:
    """``SELECT count(*)`` for ``conditions`` and its parameters."""
    params = Params()
    return f"SELECT count(*) FROM {table}" + where_sql(model, conditions, params), params.values
