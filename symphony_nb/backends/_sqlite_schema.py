"""The SQLite table of a model: documents, versions, generated columns and their indexes.

One table per model (its lower-cased class name)::

    id TEXT PRIMARY KEY, version INTEGER, doc TEXT CHECK (json_valid(doc)),
    "<field>" GENERATED ALWAYS AS (json_extract(doc, '$."<field>"')) VIRTUAL, ...

Each indexed field gets a virtual generated column and an index on ``(column, id)``, so an
equality filter is answered from the index already in the default id order. Several models
share one file; the file's schema version is ``PRAGMA user_version``. A model's revisions,
once it keeps history, are in a table of their own (see :mod:`._sqlite_history`).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from .._errors import FilterError, StorageError
from .._fields import model_fields
from .._filters import parse_filter
from ..stores import SCHEMA_KEY, declared_indexes
from . import _sql
from ._sql import PLAIN, Path, quote
from ._sqlite_conn import immediate
from ._sqlite_sql import json_path, schema_key_value

SCHEMA_VERSION = 1
IndexSpec = str | Sequence[str]
_RESERVED = frozenset({"id", "version", "doc", "rowid", "oid", "_rowid_"})


def column_name(path: Path) -> str:
    """The generated column of ``path``: the dotted path when plain, else a stable hash."""
    name = ".".join(path)
    if all(PLAIN.fullmatch(part) for part in path) and name.lower() not in _RESERVED:
        return name
    return "j_" + hashlib.sha256("\x00".join(path).encode()).hexdigest()[:16]


def _index_path(model: type[BaseModel], key: str) -> Path:
    if not isinstance(key, str):
        raise FilterError(f"indexes take field names or tuples of them, got {key!r}")
    (condition,) = parse_filter(model, {key: {"$exists": True}})
    spec = model_fields(model)[condition.path[0]]
    if len(condition.path) == 1 and spec.kind != "scalar":
        raise FilterError(f"cannot index {key!r}: it is a {spec.kind}; index one of its keys")
    return condition.path


@dataclass(frozen=True)
class Layout:
    """The generated columns and indexes of one model's table."""

    table: str
    columns: dict[Path, str]
    indexes: tuple[tuple[Path, ...], ...]

    @classmethod
    def plan(cls, model: type[BaseModel], table: str, extra: Iterable[IndexSpec]) -> Layout:
        """Check the index declarations against ``model`` (FilterError) and name columns."""
        fields = model_fields(model)
        declared: list[IndexSpec] = [
            key
            for key in declared_indexes(model)
            if (key in fields if isinstance(key, str) else all(k in fields for k in key))
        ]
        declared.extend(extra)
        indexes: list[tuple[Path, ...]] = []
        for spec in declared:
            keys = [spec] if isinstance(spec, str) else list(spec)
            if not keys:
                raise FilterError("an index needs at least one field")
            paths = tuple(_index_path(model, key) for key in keys)
            if paths not in indexes and paths != (("id",),):
                indexes.append(paths)
        indexes.append(((SCHEMA_KEY,),))  # every query first asks which documents are older
        columns = {
            path: column_name(path) for paths in indexes for path in paths if path != ("id",)
        }
        return cls(table, columns, tuple(indexes))

    def _index_sql(self, paths: tuple[Path, ...]) -> str:
        names = [("id" if path == ("id",) else self.columns[path]) for path in paths]
        index = quote(f"{self.table}:{'+'.join(names)}")
        cols = ", ".join([*(quote(n) for n in names), "id"])
        return f"CREATE INDEX IF NOT EXISTS {index} ON {quote(self.table)} ({cols})"

    def _columns(self, conn: sqlite3.Connection, where: str) -> set[str] | None:
        existing = {row[1] for row in conn.execute(f"PRAGMA table_xinfo({quote(self.table)})")}
        if not existing:
            return None
        if not {"id", "version", "doc"} <= existing:
            raise StorageError(
                f"table {self.table!r} in {where} was not made by symphony_nb "
                f"(its columns are {sorted(existing)}); use another file or model name"
            )
        return existing

    def inspect(self, conn: sqlite3.Connection, where: str) -> set[str] | None:
        """The columns of the table as it is, or None if it does not exist; writes nothing.

        For a database that may only be read: refuses a newer schema or a foreign table.
        """
        check_version(conn, where)
        return self._columns(conn, where)

    def create(self, conn: sqlite3.Connection, where: str) -> None:
        """Create or extend the table and its indexes; refuse a newer schema."""
        check_version(conn, where)
        if conn.execute("PRAGMA journal_mode").fetchone()[0] not in ("wal", "memory"):
            conn.execute("PRAGMA journal_mode = WAL")
        table = quote(self.table)
        with immediate(conn):
            check_version(conn, where)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY NOT NULL, "
                "version INTEGER, doc TEXT NOT NULL CHECK (json_valid(doc)))"
            )
            existing = self._columns(conn, where) or set()
            for path, name in self.columns.items():
                if name not in existing:
                    literal = json_path(path).replace("'", "''")
                    value = f"json_extract(doc, '{literal}')"
                    if path == (SCHEMA_KEY,):
                        value = schema_key_value()
                    conn.execute(
                        f"ALTER TABLE {table} ADD COLUMN {quote(name)} GENERATED ALWAYS AS "
                        f"({value}) VIRTUAL"
                    )
            for paths in self.indexes:
                try:
                    conn.execute(self._index_sql(paths))
                except sqlite3.OperationalError as exc:
                    # A doc written around the CHECK: queries read it without the index
                    # and report it as corrupt; the index is made once it is gone.
                    if "malformed JSON" not in str(exc):
                        raise
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def check_version(conn: sqlite3.Connection, where: str) -> None:
    """Raise StorageError if the file was written by a newer schema than this package knows."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    _sql.check_version(found, SCHEMA_VERSION, where, label="storage schema", advice="to open it")
