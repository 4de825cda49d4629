"""Compile parsed filters and orderings (:mod:`symphony_nb._filters`) to SQLite SQL.

The SQL reproduces :func:`~symphony_nb._filters.apply_query` on the stored JSON documents;
:mod:`._sql` builds each statement and this module supplies SQLite's leaves. Only table and
generated-column names (derived from the model, never from a filter) become SQL text; every
value and every JSON path is a named parameter.

How the semantics map onto SQLite:

* ``json_extract`` returns SQL NULL for a missing key and for JSON ``null``: one "no value".
* ``json_extract`` turns ``true`` into ``1``, so equality adds a ``json_type`` guard unless the
  model field can only hold the operand's JSON type (which keeps indexed filters index-only).
* SQLite orders NULL first ascending and last descending, as the reference does; text
  compares with the BINARY collation, which on UTF-8 is code point order.
* A condition is 1 when it holds and 0 or NULL otherwise (negations: :mod:`._sql`).
* ``json_extract`` reads an integer beyond 64 bits as the nearest REAL. That still compares
  exactly with operands below 2**63 in magnitude (see ``_filters.wide``); a wider operand is
  compared exactly with such integers through their JSON text (``doc -> path``).
"""

# ruff: noqa: S608  (SQL text holds only names derived from the model; values are bound)

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Union, get_origin

from pydantic import BaseModel

from .._fields import unwrap
from .._filters import COMPARISONS, WIDE, Condition, OrderKey, Query, wide
from ..stores import SCHEMA_KEY
from ._sql import SIGNS, Path, Statement, model_path, quote

__all__ = ["SqlCompiler", "json_path", "quote", "schema_key_value"]

TEXT = frozenset({"text"})
NUMBER = frozenset({"integer", "real"})
BOOL = frozenset({"true", "false"})
ARRAY = frozenset({"array"})


def json_path(path: Path) -> str:
    """The SQLite JSON path of ``path`` (keys quoted, so spaces and unicode are fine)."""
    return "$" + "".join(f'."{part}"' for part in path)


MARKED = '{"' + SCHEMA_KEY + '":'
"""How a document holding its schema version begins (repositories write the key first)."""


def schema_key_value() -> str:
    """SQL for the schema key of ``doc``: only a document that begins with it is parsed."""
    literal = json_path((SCHEMA_KEY,)).replace("'", "''")
    return f"CASE WHEN substr(doc, 1, {len(MARKED)}) = '{MARKED}' THEN json_extract(doc, '{literal}') END"


def _json_kinds(annotation: Any) -> frozenset[str] | None:
    """The JSON types a value of ``annotation`` can have (None: any), ``null`` aside."""
    annotation, _ = unwrap(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return None
    origin = get_origin(annotation) or annotation
    if not isinstance(origin, type):
        return None
    if origin in (list, tuple, set, frozenset):
        return ARRAY
    if issubclass(origin, bool):
        return BOOL
    if issubclass(origin, str | datetime | date):
        return TEXT
    if issubclass(origin, int):
        return frozenset({"integer"})
    if issubclass(origin, float):
        return NUMBER
    return None


@lru_cache(maxsize=1024)
def stored_kinds(model: type[BaseModel], path: Path) -> frozenset[str] | None:
    """The JSON types the value at ``path`` can have in a valid document (None: any)."""
    specs = model_path(model, path)
    if len(specs) < len(path) or specs[-1].kind in ("dict", "model"):
        return None
    return _json_kinds(specs[-1].annotation)


def _kinds_of(value: Any) -> frozenset[str]:
    if isinstance(value, bool):
        return frozenset({"true" if value else "false"})
    if isinstance(value, int | float):
        return NUMBER
    return TEXT


class SqliteStatement(Statement):
    """SQLite's leaves: ``columns`` maps indexed paths to their generated columns, quoted.

    With ``guard`` the conditions skip rows whose doc is not JSON (and read no column,
    since a generated column would parse the document).
    """

    FALSE = "0"

    def __init__(self, model: type[BaseModel], columns: Mapping[Path, str], guard: bool) -> None:
        super().__init__(model)
        self.columns = columns
        self.guard = guard
        self.params: dict[str, Any] = {}
        self._paths: dict[Path, str] = {}

    def param(self, value: Any, cast: str = "") -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return ":" + name

    def _path_param(self, path: Path) -> str:
        if path not in self._paths:
            self._paths[path] = self.param(json_path(path))
        return self._paths[path]

    def _json(self, function: str, path: Path) -> str:
        return f"{function}(doc, {self._path_param(path)})"

    def value(self, path: Path) -> str:
        if path == ("id",):
            return "id"
        column = self.columns.get(path)
        if column is not None and not self.guard:
            return column
        return self._json("json_extract", path)

    def typed(self, path: Path, operand_kinds: frozenset[str]) -> str:
        """SQL that holds when the stored JSON type is one of ``operand_kinds``.

        It is ``1`` when the model guarantees that type, so an indexed column is compared alone.
        """
        kinds = stored_kinds(self.model, path)
        if kinds is not None and kinds <= operand_kinds:
            return "1"
        names = ", ".join(self.param(kind) for kind in sorted(operand_kinds))
        return f"{self._json('json_type', path)} IN ({names})"

    # ------------------------------------------------------------------ conditions

    def equal(self, path: Path, operand: Any) -> str:
        if operand is None:
            return f"{self.value(path)} IS NULL"
        if wide(operand):
            return self.wide(path, "$eq", operand)
        kinds = _kinds_of(operand)
        stored = stored_kinds(self.model, path)
        if isinstance(operand, bool) and not (stored is not None and stored <= BOOL):
            return self.typed(path, kinds)
        return f"({self.value(path)} = {self.param(operand)} AND {self.typed(path, kinds)})"

    def one_of(self, path: Path, operands: tuple[Any, ...]) -> str:
        parts: list[str] = []
        for kinds in (TEXT, NUMBER):
            group = [
                v
                for v in operands
                if not isinstance(v, bool)
                and v is not None
                and _kinds_of(v) == kinds
                and not wide(v)
            ]
            if group:
                values = ", ".join(self.param(v) for v in group)
                parts.append(f"({self.value(path)} IN ({values}) AND {self.typed(path, kinds)})")
        # A set of the booleans alone: in a mixed set, True == 1 would swallow one of them.
        parts.extend(self.equal(path, v) for v in {v for v in operands if isinstance(v, bool)})
        parts.extend(self.equal(path, v) for v in operands if wide(v))
        if any(v is None for v in operands):
            parts.append(self.equal(path, None))
        return "(" + " OR ".join(parts) + ")" if parts else "0"

    def exists(self, path: Path, present: bool) -> str:
        return f"{self.value(path)} IS {'NOT NULL' if present else 'NULL'}"

    def contains(self, path: Path, operand: Any) -> str:
        kinds = stored_kinds(self.model, path)
        parts: list[str] = []
        if kinds is None or "array" in kinds:
            element_kinds = _kinds_of(operand)
            names = ", ".join(self.param(kind) for kind in sorted(element_kinds))
            match = f"e.type IN ({names})"
            if wide(operand):
                exact = self.exact("e.value", "e.type", "(doc -> e.fullkey)", "$eq", operand)
                match += f" AND {exact}"
            elif not isinstance(operand, bool):
                match += f" AND e.value = {self.param(operand)}"
            parts.append(
                f"({self._json('json_type', path)} = 'array' AND EXISTS (SELECT 1 FROM "
                f"json_each(doc, {self._path_param(path)}) AS e WHERE {match}))"
            )
        if isinstance(operand, str) and (kinds is None or "text" in kinds):
            parts.append(
                f"(instr({self.value(path)}, {self.param(operand)}) > 0 "
                f"AND {self.typed(path, TEXT)})"
            )
        return "(" + " OR ".join(parts) + ")" if parts else "0"

    def compare(self, path: Path, op: str, operand: Any) -> str:
        if wide(operand):
            return self.wide(path, op, operand)
        return (
            f"({self.value(path)} {SIGNS[op]} {self.param(operand)} "
            f"AND {self.typed(path, _kinds_of(operand))})"
        )

    def guarded(self, parts: list[str]) -> list[str]:
        if not self.guard:
            return parts
        # The fallback for unparsable rows: CASE evaluates its branches lazily.
        return [f"CASE WHEN json_valid(doc) THEN {' AND '.join(parts or ['1'])} ELSE 0 END"]

    # ------------------------------------------------------------------ wide numbers

    def wide(self, path: Path, op: str, operand: int | float) -> str:
        """``value op operand`` for an operand of 2**63 or more in magnitude, exactly."""
        exact = self.exact(
            self.value(path),
            self._json("json_type", path),
            f"(doc -> {self._path_param(path)})",
            op,
            operand,
        )
        return f"({exact} AND {self.typed(path, NUMBER)})"

    def exact(self, value: str, kind: str, text: str, op: str, operand: int | float) -> str:
        """Compare a stored number (its SQL value, JSON type and JSON text) exactly.

        An integer read as REAL (beyond 64 bits) is compared as digits; any other stored
        number is exact in SQL, and is compared with the operand's nearest double, the
        tie decided here where Python knows whether that double is above the operand.
        """
        try:
            near = float(operand)
        except OverflowError:
            near = math.inf if operand > 0 else -math.inf
        above = (near > operand) - (near < operand)
        sign = {
            "$eq": "=" if above == 0 else None,
            "$gt": ">=" if above > 0 else ">",
            "$gte": ">=" if above >= 0 else ">",
            "$lt": "<=" if above < 0 else "<",
            "$lte": "<=" if above <= 0 else "<",
        }[op]
        native = "0" if sign is None else f"{value} {sign} {self.param(near)}"
        return (
            f"(CASE WHEN {kind} = 'integer' AND typeof({value}) = 'real' "
            f"THEN {self.digits(text, op, operand)} ELSE {native} END)"
        )

    def digits(self, text: str, op: str, operand: int | float) -> str:
        """``op`` between an integer's JSON ``text`` and ``operand``, exactly."""
        if op == "$eq":
            integral = isinstance(operand, int) or operand.is_integer()
            return f"{text} = {self.param(str(int(operand)))}" if integral else "0"
        # Against an integer, x > operand is x >= floor(operand) + 1, and so on.
        bound = math.floor(operand) + 1 if op in ("$gt", "$lte") else math.ceil(operand)
        at_least = self.at_least(text, bound)
        return at_least if op in ("$gt", "$gte") else f"NOT {at_least}"

    def at_least(self, text: str, bound: int) -> str:
        """Whether the integer written ``text`` is >= ``bound``: by sign, length, then digits."""
        digits = str(bound)
        size, same = self.param(len(digits)), self.param(digits)
        positive = f"substr({text}, 1, 1) <> '-'"
        if bound >= 0:
            return (
                f"({positive} AND (length({text}) > {size} "
                f"OR (length({text}) = {size} AND {text} >= {same})))"
            )
        return (
            f"({positive} OR length({text}) < {size} "
            f"OR (length({text}) = {size} AND {text} <= {same}))"
        )

    # ------------------------------------------------------------------ ordering

    def order_key(self, key: OrderKey) -> list[str]:
        value = self.value(key.path)
        if key.enum:
            ranks = self.ranks(key.enum, self.param)
            value = f"CASE WHEN {value} IS NULL THEN NULL ELSE CASE {value} {ranks} END"
        up, down = ("DESC", "ASC") if key.descending else ("ASC", "DESC")
        kinds = stored_kinds(self.model, key.path)
        if key.enum or not key.numeric or not (kinds is None or kinds == {"integer"}):
            return [f"{value} {up}"]
        # Integers beyond 64 bits read as the REAL they round to, so they tie with each other
        # (and -2**63 with those just below it): order the tied by sign, length, then digits.
        digits = (
            f"(CASE WHEN typeof({value}) = 'real' THEN (CASE WHEN "
            f"{self._json('json_type', key.path)} = 'integer' THEN "
            f"(doc -> {self._path_param(key.path)}) END) "
            f"WHEN {value} = {-WIDE} THEN '{-WIDE}' END)"
        )
        negative = f"substr({digits}, 1, 1) = '-'"
        return [
            f"{value} {up}",
            f"(CASE WHEN {negative} THEN -length({digits}) ELSE length({digits}) END) {up}",
            f"(CASE WHEN {negative} THEN NULL ELSE {digits} END) {up}",
            f"(CASE WHEN {negative} THEN {digits} END) {down}",
        ]

    def tie(self, query: Query) -> str:
        """``+id`` to stop SQLite from walking the primary key to avoid a sort.

        Without statistics it prefers that for a range on an indexed column, which then
        evaluates the column (parses the document) row by row; the index and a sort is cheaper.
        """
        indexed = [c.op for c in query.conditions if c.path in self.columns]
        if query.order or query.after_id is not None or "$eq" in indexed or "$in" in indexed:
            return "id ASC"
        return "+id ASC" if any(op in COMPARISONS for op in indexed) else "id ASC"

    def page(self, limit: int | None, offset: int) -> str:
        if limit is None and not offset:
            return ""
        # SQLite has no OFFSET without LIMIT; -1 is no limit.
        return f" LIMIT {self.param(-1 if limit is None else limit)} OFFSET {self.param(offset)}"


class SqlCompiler:
    """Compiles queries on one model's table; ``columns`` maps indexed paths to columns."""

    def __init__(self, model: type[BaseModel], table: str, columns: Mapping[Path, str]) -> None:
        self.model = model
        self.table = quote(table)
        self.columns = {path: quote(name) for path, name in columns.items()}
        self.bound: dict[str, Any] = {}

    @classmethod
    def over(cls, model: type[BaseModel], source: str, bound: Mapping[str, Any]) -> SqlCompiler:
        """A compiler of queries over the ``(id, doc)`` rows of the subquery ``source``.

        ``bound`` holds the subquery's own named parameters. There are no generated
        columns: every path is read from ``doc``, the schema key as the table's column
        reads it (without a JSON parse of the documents that lack it).
        """
        compiler = cls(model, "", {})
        compiler.table = f"({source})"
        compiler.columns = {(SCHEMA_KEY,): f"({schema_key_value()})"}
        compiler.bound = dict(bound)
        return compiler

    def select(self, query: Query, *, guard: bool = False) -> tuple[str, dict[str, Any]]:
        """``SELECT id, doc`` for ``query``; ``guard`` skips rows whose doc is not JSON."""
        statement = SqliteStatement(self.model, self.columns, guard)
        return statement.select(self.table, query), {**self.bound, **statement.params}

    def count(
        self, conditions: tuple[Condition, ...], *, guard: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """``SELECT count(*)`` of the rows satisfying ``conditions``; ``guard`` as for select."""
        statement = SqliteStatement(self.model, self.columns, guard)
        return statement.count(self.table, conditions), {**self.bound, **statement.params}

    def unparsable(self) -> tuple[str, dict[str, Any]]:
        """``SELECT id`` of the rows whose doc is not JSON, in id order."""
        return f"SELECT id FROM {self.table} WHERE NOT json_valid(doc) ORDER BY id", self.bound
