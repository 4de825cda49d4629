"""Storage URLs: ``memory://``, a folder (``file:///path`` or a plain path), and what SQL backends add.

A URL is stripped of surrounding whitespace and ``~`` is expanded in paths. Anything that looks
like a URL but is not one (``memory:``, ``sqlite:data.db``) is refused with
:class:`InvalidUrlError` rather than taken for a folder name.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from typing import Any

from ._cache import Cache, cache_options
from ._errors import InvalidUrlError
from ._history import check_keep
from ._keyring import Keyring
from ._repository import Repository
from ._types import T
from ._urls import expand_path, mask_url

__all__ = ["expand_path", "known_schemes", "mask_url", "open_repository", "register_scheme"]

Opener = Callable[[type[Any], str], Repository[Any]]
_OPENERS: dict[str, Opener] = {}
# Backends whose module provides ``open_url(model, url)``, imported on first use.
_LAZY = {
    "sqlite": "symphony_nb.backends.sqlite",
    "postgresql": "symphony_nb.backends.postgres",
    "postgres": "symphony_nb.backends.postgres",
}
_BUILT_IN = ("file", "memory")
DEFAULT_URL = "sqlite:///./symphony_data/symphony.db"
URL_ENV = "SYMPHONY_NB_URL"
# "name:" not followed by "//": a URL missing its slashes, never meant as a folder name.
_SCHEME_ONLY = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(?!//)")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def register_scheme(scheme: str, opener: Opener) -> None:
    """Let ``open_repository`` handle URLs of ``scheme`` with ``opener(model, url)``.

    When ``open_repository`` is given a keyring, the opener is called with ``keyring=`` too.
    """
    _OPENERS[scheme] = opener


def known_schemes() -> list[str]:
    """Every URL scheme ``open_repository`` understands, sorted."""
    return sorted({*_BUILT_IN, *_LAZY, *_OPENERS})


def default_url() -> str:
    """The storage URL used when none is given: ``$SYMPHONY_NB_URL`` or the embedded default.

    A blank ``$SYMPHONY_NB_URL`` counts as unset.
    """
    return os.environ.get(URL_ENV, "").strip() or DEFAULT_URL


def _refuse_malformed(url: str) -> None:
    match = _SCHEME_ONLY.match(url)
    if match is None or (os.name == "nt" and len(match.group(1)) == 1):  # C:\folder
        return
    scheme = match.group(1).lower()
    hint = (
        f"did you mean {scheme}://...?"
        if scheme in known_schemes()
        else "for a folder whose name contains ':', write ./ before it"
    )
    raise InvalidUrlError(
        f"storage URL {mask_url(url)!r} is malformed: a scheme must be followed by '//' "
        f"({hint}); known schemes: {known_schemes()}"
    )


def open_repository(
    model: type[T],
    url: str | os.PathLike[str],
    *,
    keyring: Keyring | None = None,
    cache: bool | Cache | None = None,
    history: bool | int | None = None,
) -> Repository[T]:
    """A repository of ``model`` at storage ``url`` (see the module docstring for forms).

    ``url`` is ``memory://``, ``file:///folder``, a folder path (a string or an
    ``os.PathLike``), ``sqlite:///file.db`` or ``postgresql://...``; surrounding whitespace
    is ignored and ``~`` is expanded. A malformed URL raises :class:`InvalidUrlError`.
    ``keyring`` encrypts secret fields (default: ``$SYMPHONY_NB_KEYS`` when set); ``cache``
    turns on the read cache (``True`` or a :class:`~symphony_nb.Cache`); ``history`` keeps
    revisions (``True``: all, ``N``: the last N of each entity; see :class:`Repository`).
    """
    from .backends.filesystem import FileSystemRepository

    options = cache_options(cache)
    check_keep(history)  # refused before anything is opened
    if isinstance(url, os.PathLike):
        path = os.fspath(url)
        if not isinstance(path, str):
            raise InvalidUrlError(f"a storage folder must be a str path, got {path!r}")
        return FileSystemRepository(
            model, expand_path(path), keyring=keyring, cache=options, history=history
        )
    if not isinstance(url, str):
        raise InvalidUrlError(f"a storage URL must be a string or a path, got {type(url).__name__}")
    url = url.strip()
    if not url:
        raise InvalidUrlError(
            "a storage URL must not be empty: use memory://, a folder, sqlite:///file.db "
            "or postgresql://..."
        )
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if not scheme:
        _refuse_malformed(url)
    if scheme in ("", "file"):
        path = url[match.end() :] if match else url
        if not path:
            raise InvalidUrlError(f"storage URL {mask_url(url)!r} names no folder")
        return FileSystemRepository(
            model, expand_path(path), keyring=keyring, cache=options, history=history
        )
    if scheme == "memory":
        from .backends.memory import InMemoryRepository

        return InMemoryRepository(model, keyring=keyring, cache=options, history=history)
    if scheme in _LAZY and scheme not in _OPENERS:
        opened: Repository[T] = importlib.import_module(_LAZY[scheme]).open_url(
            model, url, keyring=keyring, cache=options, history=history
        )
        return opened
    opener = _OPENERS.get(scheme)
    if opener is None:
        raise InvalidUrlError(
            f"unknown storage URL scheme {scheme!r} in {mask_url(url)!r}; known: {known_schemes()}"
        )
    repository = opener(model, url) if keyring is None else opener(model, url, keyring=keyring)  # type: ignore[call-arg]
    if options is not None:  # an opener of a registered scheme knows nothing of caches
        repository._cache = repository._with_cache(options)
    keep = check_keep(history)
    if keep is not False:
        repository.store.keep_history(keep)
    return repository
