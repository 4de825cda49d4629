"""The SQL that filters compile to, written once; each dialect supplies only the leaves.

A :class:`Statement` turns a parsed :class:`~symphony_nb._filters.Query` into one statement's
text and its bound parameters. It owns what every dialect shares:

* the walk over the conditions (all must hold) and the dispatch on their operator;
* negation: a condition is true when it holds and false or NULL otherwise (NULL meaning
  "no value"), so ``$ne`` and ``$nin`` are ``NOT COALESCE(condition, false)`` and match
  entities with no value, as ``apply_query`` says;
* WHERE, keyset paging (``id > after_id``), ORDER BY with the id tie-break, LIMIT and OFFSET,
  for select and count, and the collection of parameters in the order they appear.

A dialect subclass says how a parameter is written, how each operator's primitive reads a
path, and how one ordering key sorts (enum rank, no value first ascending and last descending).

Also here: the identifier rules, the model fields along a path, and the schema-version check.
"""

# ruff: noqa: S608  (SQL text holds only names derived from the model; values are bound)

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, ClassVar

from pydantic import BaseModel

from .._errors import StorageError
from .._fields import FieldSpec, model_fields
from .._filters import Condition, OrderKey, Query

Path = tuple[str, ...]
SIGNS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""ASCII letters, digits and ``_``, not starting with a digit: SQL text without escaping."""


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier; ValueError if it holds a NUL character."""
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


@lru_cache(maxsize=1024)
def model_path(model: type[BaseModel], path: Path) -> tuple[FieldSpec, ...]:
    """The model fields along ``path``, one per leading segment that is one (then dict keys)."""
    specs: list[FieldSpec] = []
    current: type[BaseModel] | None = model
    for part in path:
        spec = None if current is None else model_fields(current).get(part)
        if spec is None:
            break
        specs.append(spec)
        current = spec.model if spec.kind == "model" else None
    return tuple(specs)


def model_segments(model: type[BaseModel], path: Path) -> int:
    """How many leading segments of ``path`` are model fields (the rest are dict keys)."""
    return len(model_path(model, path))


def check_version(found: int | str, supported: int, where: str, *, label: str, advice: str) -> None:
    """Refuse (StorageError) storage whose layout ``found`` is newer than ``supported``.

    ``found`` is the stored version, as a number or as text (anything but digits is refused).
    """
    if isinstance(found, str):
        newer = not (found.isascii() and found.isdigit()) or int(found) > supported
    else:
        newer = found > supported
    if newer:
        raise StorageError(
            f"{where} has {label} {found}, newer than the {supported} this symphony_nb "
            f"understands; upgrade symphony_nb (pip install -U symphony_nb) {advice}"
        )


class Statement(ABC):
    """One statement being built: its SQL text from a query, and its parameters.

    Subclasses implement the leaves: :meth:`param`, one method per operator primitive
    (each true when the condition holds, false or NULL otherwise), :meth:`order_key` and
    :meth:`tie`.
    """

    FALSE: ClassVar[str]
    """The dialect's false, for ``COALESCE``."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    # ------------------------------------------------------------------ leaves

    @abstractmethod
    def param(self, value: Any, cast: str = "") -> str:
        """Bind ``value`` (as SQL type ``cast`` where the dialect needs one); its placeholder."""

    @abstractmethod
    def equal(self, path: Path, operand: Any) -> str:
        """The value at ``path`` equals ``operand`` (None: there is no value)."""

    @abstractmethod
    def one_of(self, path: Path, operands: tuple[Any, ...]) -> str:
        """The value at ``path`` equals one of ``operands``."""

    @abstractmethod
    def exists(self, path: Path, present: bool) -> str:
        """There is a value at ``path`` (``present``) or there is none; never NULL."""

    @abstractmethod
    def contains(self, path: Path, operand: Any) -> str:
        """A list at ``path`` has an element equal to ``operand``, or a string has it."""

    @abstractmethod
    def compare(self, path: Path, op: str, operand: Any) -> str:
        """``value op operand`` (``op`` in :data:`SIGNS`), numbers and strings each alone."""

    @abstractmethod
    def order_key(self, key: OrderKey) -> list[str]:
        """The ORDER BY terms of ``key``: enums by rank; no value first ascending, last descending."""

    @abstractmethod
    def tie(self, query: Query) -> str:
        """The last ORDER BY term: id, ascending."""

    def guarded(self, parts: list[str]) -> list[str]:
        """The conditions as the WHERE clause holds them (a dialect may wrap them)."""
        return parts

    # ------------------------------------------------------------------ skeleton

    def condition(self, cond: Condition) -> str:
        """One condition as an SQL expression: true when it holds."""
        path, op, operand = cond.path, cond.op, cond.value
        if op == "$eq" or op == "$ne":
            held = self.equal(path, operand)
        elif op == "$in" or op == "$nin":
            held = self.one_of(path, operand)
        elif op == "$exists":
            return self.exists(path, operand)
        elif op == "$contains":
            return self.contains(path, operand)
        else:
            return self.compare(path, op, operand)
        return f"NOT COALESCE({held}, {self.FALSE})" if op in ("$ne", "$nin") else held

    def where(self, conditions: Sequence[Condition], after_id: str | None) -> str:
        """The WHERE clause (with its keyword), or an empty string."""
        parts = self.guarded([self.condition(cond) for cond in conditions])
        if after_id is not None:
            parts.append(f"id > {self.param(after_id, 'text')}")
        return " WHERE " + " AND ".join(parts) if parts else ""

    def ranks(self, members: Sequence[str], when: Callable[[str], str]) -> str:
        """An enum's rank: ``WHEN when(member) THEN`` its index, any other value after them."""
        whens = " ".join(f"WHEN {when(member)} THEN {rank}" for rank, member in enumerate(members))
        return f"{whens} ELSE {len(members)} END"

    def order(self, query: Query) -> str:
        """The ORDER BY clause: the keys of ``query``, then id."""
        keys = [term for key in query.order for term in self.order_key(key)]
        return " ORDER BY " + ", ".join([*keys, self.tie(query)])

    def page(self, limit: int | None, offset: int) -> str:
        """LIMIT and OFFSET, each when it restricts."""
        sql = "" if limit is None else f" LIMIT {self.param(limit, 'bigint')}"
        return sql + (f" OFFSET {self.param(offset, 'bigint')}" if offset else "")

    def select(self, table: str, query: Query) -> str:
        """``SELECT id, doc`` from ``table`` (quoted) for ``query``: filter, order, page."""
        where = self.where(query.conditions, query.after_id)
        order = "" if query.any_order else self.order(query)
        return f"SELECT id, doc FROM {table}{where}{order}{self.page(query.limit, query.offset)}"

    def count(self, table: str, conditions: Sequence[Condition]) -> str:
        """``SELECT count(*)`` from ``table`` (quoted) of the rows satisfying ``conditions``."""
        return f"SELECT count(*) FROM {table}{self.where(conditions, None)}"
