"""Storage URLs: ``memory://``, a folder (``file:///path`` or a plain path), and what SQL backends add."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ._errors import SymphonyError
from ._repository import Repository, T

Opener = Callable[[type[Any], str], Repository[Any]]
_OPENERS: dict[str, Opener] = {}
# Backends whose module provides ``open_url(model, url)``, imported on first use.
_LAZY = {
    "sqlite": "symphony_nb.backends.sqlite",
    "postgresql": "symphony_nb.backends.postgres",
    "postgres": "symphony_nb.backends.postgres",
}
DEFAULT_URL = "sqlite:///./symphony_data/symphony.db"
URL_ENV = "SYMPHONY_NB_URL"


def register_scheme(scheme: str, opener: Opener) -> None:
    """Let ``open_repository`` handle URLs of ``scheme`` with ``opener(model, url)``."""
    _OPENERS[scheme] = opener


def default_url() -> str:
    """The storage URL used when none is given: ``$SYMPHONY_NB_URL`` or the embedded default."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def open_repository(model: type[T], url: str) -> Repository[T]:
    """A repository of ``model`` at storage ``url`` (see the module docstring for forms)."""
    if not isinstance(url, str) or not url:
        raise SymphonyError(f"a storage URL must be a non-empty string, got {url!r}")
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("", "file"):
        from .backends.filesystem import FileSystemRepository

        path = url.split("://", 1)[1] if scheme else url
        if not path:
            raise SymphonyError(f"storage URL {url!r} names no folder")
        return FileSystemRepository(model, path)
    if scheme == "memory":
        from .backends.memory import InMemoryRepository

        return InMemoryRepository(model)
    opener = _OPENERS.get(scheme)
    if opener is None and scheme in _LAZY:
        module = importlib.import_module(_LAZY[scheme])
        opener = module.open_url
    if opener is None:
        known = sorted({"memory", "file", *_OPENERS})
        raise SymphonyError(
            f"unknown storage URL scheme {scheme!r} in {mask_url(url)!r}; known: {known}"
        )
    return opener(model, url)
