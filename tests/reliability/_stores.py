"""Storage URLs of the backends that other processes can open, for tests using subprocesses."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest


def has_backend(name: str) -> bool:
    """Whether ``symphony_nb.backends.<name>`` exists in this checkout."""
    return importlib.util.find_spec(f"symphony_nb.backends.{name}") is not None


# Backends whose store survives the process: crash tests run on the local ones.
LOCAL = ["files"] + (["sqlite"] if has_backend("sqlite") else [])
SHARED = LOCAL + (["postgres"] if has_backend("postgres") else [])


@contextlib.asynccontextmanager
async def store_url(backend: str, where: Path) -> AsyncIterator[str]:
    """A storage URL of a fresh store of ``backend``; a PostgreSQL schema is dropped after."""
    if backend == "files":
        yield str(where / "store")
    elif backend == "sqlite":
        yield f"sqlite:///{where / 'store.db'}"
    elif backend == "postgres":
        from tests import pg

        try:
            async with pg.schema() as name:
                yield f"{pg.dsn()}?schema={name}"
        except pg.ServerUnavailable as exc:
            pytest.skip(f"postgres backend unavailable: {exc}")
    else:
        raise ValueError(f"no storage URL for backend {backend!r}")
