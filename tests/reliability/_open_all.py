"""Open one repository of every available backend at once, for cross-backend comparisons."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from symphony_nb import Repository
from tests.backends import BACKENDS, opened


@contextlib.contextmanager
def every_backend(model: type[Any], where: Path) -> Iterator[dict[str, Repository[Any]]]:
    """``{backend name: repository}`` for every backend, opened on the sync facades' loop.

    An unavailable backend skips the test (a failure where CI requires the service).
    """
    with contextlib.ExitStack() as stack:
        repos = {}
        for name in sorted(BACKENDS):
            folder = where / name
            folder.mkdir()
            repos[name] = stack.enter_context(opened(name, model, folder))
        yield repos
