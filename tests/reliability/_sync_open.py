"""Open a ``tests.backends`` repository on the sync facades' loop, for sync and threaded tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from symphony_nb import Repository
from symphony_nb._sync import run_sync
from tests.backends import BACKENDS, BackendUnavailable


@contextlib.contextmanager
def opened(backend: str, model: type[Any], where: Path) -> Iterator[Repository[Any]]:
    """A fresh repository of ``backend``, opened and closed on the sync facades' loop."""
    stack = contextlib.AsyncExitStack()

    async def enter() -> Repository[Any]:
        return await stack.enter_async_context(BACKENDS[backend](model, where))

    try:
        repo = run_sync(enter())
    except BackendUnavailable as exc:
        pytest.skip(f"{backend} backend unavailable: {exc}")
    try:
        yield repo
    finally:
        run_sync(stack.aclose())
