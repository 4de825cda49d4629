"""Storage URLs of the persistent backends, for tests that run repositories in subprocesses."""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable
from pathlib import Path

POSTGRES_ENV = "SYMPHONY_NB_TEST_POSTGRES"
POSTGRES_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def has_backend(name: str) -> bool:
    """Whether ``symphony_nb.backends.<name>`` exists in this checkout."""
    return importlib.util.find_spec(f"symphony_nb.backends.{name}") is not None


def files_url(where: Path) -> str:
    """A folder store under ``where``."""
    return str(where / "store")


def sqlite_url(where: Path) -> str:
    """A SQLite database file under ``where``."""
    return f"sqlite:///{where / 'store.db'}"


def postgres_dsn() -> str:
    """The DSN of the test PostgreSQL server."""
    return os.environ.get(POSTGRES_ENV) or POSTGRES_DEFAULT


def unique_schema() -> str:
    """A fresh schema name, so tests never see each other's tables."""
    return f"rel_{uuid.uuid4().hex[:12]}"


PERSISTENT: dict[str, Callable[[Path], str]] = {"files": files_url}
if has_backend("sqlite"):
    PERSISTENT["sqlite"] = sqlite_url
