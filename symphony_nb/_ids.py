"""Which entity ids are accepted, and how an id maps to a file name.

The same rules hold on every backend, so data can always move between them. An id is 1 to
120 ASCII letters, digits, ``_``, ``-`` or ``.``; it starts with a letter, digit or ``_``,
does not end with ``.``, and is not a Windows device name (``CON``, ``nul.txt``, ...).
Letters may be upper or lower case: on disk an upper-case letter ``A`` is written ``^a``,
so ``Alice`` and ``alice`` stay two files even on case-insensitive file systems.
"""

from __future__ import annotations

import re
from typing import Any

from ._errors import InvalidIdError

MAX_ID_LENGTH = 120

_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(10)]
    + [f"lpt{i}" for i in range(10)]
    + ["com¹", "com²", "com³", "lpt¹", "lpt²", "lpt³"]
)
_UPPER_RE = re.compile(r"[A-Z]")
_ESCAPED_RE = re.compile(r"\^([a-z])")


def check_id(entity_id: Any) -> str:
    """Return ``entity_id`` if it is a valid id, else raise :class:`InvalidIdError` saying why."""
    if not isinstance(entity_id, str):
        raise InvalidIdError(f"an id must be a str, got {type(entity_id).__name__}: {entity_id!r}")
    if not entity_id:
        raise InvalidIdError("an id must not be empty")
    if len(entity_id) > MAX_ID_LENGTH:
        raise InvalidIdError(
            f"id is {len(entity_id)} characters long; the limit is {MAX_ID_LENGTH}: "
            f"{entity_id[:40]!r}..."
        )
    if _ID_RE.fullmatch(entity_id) is None:
        raise InvalidIdError(
            f"invalid id {entity_id!r}: use ASCII letters, digits, '_', '-' and '.', "
            "starting with a letter, digit or '_' (no path separators, spaces or control characters)"
        )
    if entity_id.endswith("."):
        raise InvalidIdError(f"invalid id {entity_id!r}: it must not end with '.'")
    if entity_id.split(".", 1)[0].lower() in _WINDOWS_DEVICES:
        raise InvalidIdError(f"invalid id {entity_id!r}: it is a reserved device name on Windows")
    return entity_id


def id_to_filename(entity_id: str) -> str:
    """The file name (without folder) that stores ``entity_id``; the id must be valid."""
    return _UPPER_RE.sub(lambda m: "^" + m.group(0).lower(), entity_id) + ".json"


def filename_to_id(filename: str) -> str | None:
    """The id stored in ``filename``, or None if the name is not an entity file."""
    if not filename.endswith(".json") or filename.startswith("."):
        return None
    stem = filename[: -len(".json")]
    if "^" in stem:
        entity_id = _ESCAPED_RE.sub(lambda m: m.group(1).upper(), stem)
        if "^" in entity_id:
            return None
    else:
        entity_id = stem
    try:
        check_id(entity_id)
    except InvalidIdError:
        return None
    return entity_id if id_to_filename(entity_id) == filename else None
