"""Compile parsed filters and orderings (:mod:`symphony_nb._filters`) to PostgreSQL.

Documents live in a ``doc jsonb`` column. :mod:`._sql` builds each statement; the leaves here
follow ``apply_query`` exactly:

* a path is ``doc->'field'->$n``: model field names that are plain identifiers are quoted
  literals (so expression indexes match them); in queries dict sub-keys are always bound
  parameters (an index on one is made with the key as an escaped literal);
* equality is jsonb equality (type-strict, ``1 = 1.0``); strings compare as ``text COLLATE
  "C"`` (code point order), so the ``COLLATE "C"`` expression indexes serve ``$eq``, ``$in``
  and ranges on string, enum and datetime fields;
* numbers are ``numeric``, exact at any size: :func:`document` writes each float so that
  jsonb keeps it a float (a decimal point survives, an exponent does not) and compares it
  exactly with integers;
* "no value" is SQL NULL (missing key) or JSON null, so ordering puts a presence term first.

No user text ever becomes SQL text: every operand and every dict sub-key is a parameter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel

from .._filters import Condition, OrderKey, Query
from ..stores import SCHEMA_KEY
from ._sql import PLAIN, SIGNS, Path, Statement, model_segments
from ._sql import quote as quote_ident

__all__ = ["count_sql", "document", "index_sql", "model_segments", "quote_ident", "select_sql"]

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
    ``text`` comes from pydantic, which writes exponents as ``e+``.
    """
    if "e+" not in text:
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


def path_sql(model: type[BaseModel], path: Path, statement: Statement | None) -> tuple[str, str]:
    """The ``(jsonb, text)`` expressions of ``path`` in ``doc``.

    With no ``statement`` (DDL, where nothing can be bound) a segment that is not a plain model
    field name becomes an escaped string literal; a query binds the same key, and the planner
    matches the two once the parameter's value is known.
    """
    fixed = model_segments(model, path)
    parts: list[str] = []
    for index, part in enumerate(path):
        if (index < fixed and PLAIN.fullmatch(part)) or path == (SCHEMA_KEY,):
            parts.append(f"'{part}'")
        elif statement is None:
            parts.append(_escaped_literal(part))
        else:
            parts.append(statement.param(part, "text"))
    head = "doc" + "".join(f"->{p}" for p in parts[:-1])
    return f"({head}->{parts[-1]})", f"({head}->>{parts[-1]})"


def _escaped_literal(text: str) -> str:
    # An E'' string reads the same whatever standard_conforming_strings says.
    if "\x00" in text:
        raise ValueError(f"key {text!r} contains a NUL character")
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def index_sql(model: type[BaseModel], path: Path) -> str:
    """The expression of a btree index on ``path``, as the filters below use it."""
    _, text = path_sql(model, path, None)
    return f'({text} COLLATE "C")'


def _typeof(value: str, kind: str) -> str:
    return f"jsonb_typeof({value}) = '{kind}'"


class PgStatement(Statement):
    """PostgreSQL's leaves; parameters are ``$n::type``, after any ``params`` bound already."""

    FALSE = "false"

    def __init__(self, model: type[BaseModel], params: Sequence[Any] = ()) -> None:
        super().__init__(model)
        self.values: list[Any] = list(params)

    def param(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}::{cast}"

    def equal(self, path: Path, operand: Any) -> str:
        return self.one_of(path, (operand,))

    def one_of(self, path: Path, operands: tuple[Any, ...]) -> str:
        value, text = path_sql(self.model, path, self)
        strings = [item for item in operands if isinstance(item, str)]
        others = [item for item in operands if item is not None and not isinstance(item, str)]
        parts: list[str] = []
        if any(item is None for item in operands):
            parts.append(f"({value} IS NULL OR {_typeof(value, 'null')})")
        if len(strings) == 1:
            parts.append(
                f'({_typeof(value, "string")} AND {text} COLLATE "C" = {self.param(strings[0], "text")})'
            )
        elif strings:
            parts.append(
                f'({_typeof(value, "string")} AND {text} COLLATE "C" = ANY({self.param(strings, "text[]")}))'
            )
        if len(others) == 1:
            parts.append(f"{value} = {self.param(jsonb(others[0]), 'jsonb')}")
        elif others:
            parts.append(f"{value} = ANY({self.param([jsonb(o) for o in others], 'jsonb[]')})")
        if not parts:  # an empty $in; still mention the value so its bound sub-keys are used
            return f"({value} IS NULL AND false)"
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def exists(self, path: Path, present: bool) -> str:
        value, _ = path_sql(self.model, path, self)
        held = f"COALESCE(jsonb_typeof({value}) <> 'null', false)"
        return held if present else f"NOT {held}"

    def contains(self, path: Path, operand: Any) -> str:
        value, text = path_sql(self.model, path, self)
        element = self.param(jsonb([operand]), "jsonb")
        array = f"({_typeof(value, 'array')} AND {value} @> {element})"
        if not isinstance(operand, str):
            return array
        substring = (
            f"({_typeof(value, 'string')} AND strpos({text}, {self.param(operand, 'text')}) > 0)"
        )
        return f"({array} OR {substring})"

    def compare(self, path: Path, op: str, operand: Any) -> str:
        value, text = path_sql(self.model, path, self)
        sign = SIGNS[op]
        if isinstance(operand, str):
            return f'({_typeof(value, "string")} AND {text} COLLATE "C" {sign} {self.param(operand, "text")})'
        # jsonb orders numbers numerically; the type check keeps other kinds out.
        return (
            f"({_typeof(value, 'number')} AND {value} {sign} {self.param(jsonb(operand), 'jsonb')})"
        )

    def order_key(self, key: OrderKey) -> list[str]:
        value, text = path_sql(self.model, key.path, self)
        direction = " DESC" if key.descending else ""
        present = f"(CASE WHEN jsonb_typeof({value}) <> 'null' THEN 1 ELSE 0 END){direction}"
        if key.enum:
            ranks = self.ranks(key.enum, lambda m: f"{value} = {self.param(jsonb(m), 'jsonb')}")
            return [present, f"(CASE {ranks}){direction}"]
        return [
            present,
            f'(CASE WHEN {_typeof(value, "string")} THEN {text} END) COLLATE "C"{direction}',
            f"(CASE WHEN jsonb_typeof({value}) IN ('number', 'boolean') THEN {value} END){direction}",
        ]

    def tie(self, query: Query) -> str:
        return 'id COLLATE "C"'


def select_sql(
    model: type[BaseModel], table: str, query: Query, params: Sequence[Any] = ()
) -> tuple[str, list[Any]]:
    """``SELECT id, doc`` for ``query`` (filter, order, page) and its parameters.

    ``table`` is a table or a subquery with ``id`` and ``doc`` columns; ``params`` are the
    values it binds as ``$1``, ``$2``..., numbered before those of the query.
    """
    statement = PgStatement(model, params)
    return statement.select(table, query), statement.values


def count_sql(
    model: type[BaseModel],
    table: str,
    conditions: tuple[Condition, ...],
    params: Sequence[Any] = (),
) -> tuple[str, list[Any]]:
    """``SELECT count(*)`` for ``conditions`` and its parameters (``table`` and ``params``
    as for :func:`select_sql`)."""
    statement = PgStatement(model, params)
    return statement.count(table, conditions), statement.values
