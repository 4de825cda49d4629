"""Text of storage URLs: masking passwords for messages, expanding ``~`` in paths."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

_SECRET_KEYS = ("password", "sslpassword")
_BAD_PORT = re.compile(r"^([^:/?#\[\]]*):(?![0-9]*(?:[/?#,]|$)).*", re.DOTALL)


def mask_url(url: str) -> str:
    """``url`` with every form of password replaced by ``***``, for messages and logs.

    Masks the password of the user part (even one holding unescaped ``/``, ``@``, ``#``, ``?``
    or ``:``, by taking the user part to end at the last ``@``) and ``password=`` query values.
    """
    head, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, after = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if colon:
            rest = f"{user}:***@{after}"
    elif sep:  # no "@": a "port" that is not a number may be a password; hide all after it
        rest = _BAD_PORT.sub(r"\1:***", rest)
    masked = head + sep + rest
    base, question, query = masked.partition("?")
    if not question:
        return masked
    fields: list[str] = []
    hiding = False
    for field in query.split("&"):
        key, equals, _ = field.partition("=")
        if _is_secret(key):
            field, hiding = f"{key}=***", True
        elif hiding and not equals:  # "password=a&b": the rest of an unescaped password
            field = "***"
        else:
            hiding = False
        fields.append(field)
    return base + "?" + "&".join(fields)


def _is_secret(key: str) -> bool:
    return unquote(key).strip().lower() in _SECRET_KEYS


def expand_path(path: str) -> str:
    """``path`` with a leading ``~`` expanded to the home folder."""
    return os.path.expanduser(path)
