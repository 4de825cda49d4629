"""What changed between two entities or revisions: :func:`diff`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from html import escape
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

from ._history import Revision

_SECRET = "(secret)"  # noqa: S105  (the mask shown for a changed secret)
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One changed value: its dotted ``path``, and its ``old`` and ``new`` values.

    A secret field shows only that it changed: both values are ``"(secret)"``; a value that
    one side lacks is None there and ``added`` / ``removed`` says so.
    """

    path: str
    old: Any
    new: Any
    added: bool = False
    removed: bool = False


class Diff:
    """The changes between two entities, path by path (see :func:`diff`).

    Iterate over it for :class:`FieldChange` items; it is false when nothing changed. In a
    notebook it renders as a side-by-side table.
    """

    def __init__(self, changes: list[FieldChange], left: str, right: str) -> None:
        self.changes = changes
        self.left = left
        self.right = right

    def __iter__(self) -> Iterator[FieldChange]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __getitem__(self, path: str) -> FieldChange:
        """The change at ``path``; KeyError if that path did not change."""
        for change in self.changes:
            if change.path == path:
                return change
        raise KeyError(path)

    def paths(self) -> list[str]:
        """The changed dotted paths, in field order."""
        return [change.path for change in self.changes]

    def __repr__(self) -> str:
        if not self.changes:
            return f"<Diff {self.left} -> {self.right}: no changes>"
        lines = [f"<Diff {self.left} -> {self.right}:"]
        lines += [f"  {c.path}: {_short(c.old)} -> {_short(c.new)}" for c in self.changes]
        return "\n".join(lines) + ">"

    def _repr_html_(self) -> str:
        """A table: path, old value, new value (text escaped, long values collapsed)."""
        head = f"<tr><th>field</th><th>{escape(self.left)}</th><th>{escape(self.right)}</th></tr>"
        if not self.changes:
            return f"<table>{head}<tr><td colspan='3'><em>no changes</em></td></tr></table>"
        rows = "".join(
            "<tr>"
            f"<td style='text-align:left'><code>{escape(c.path)}</code></td>"
            f"<td style='text-align:left;background:#fdecea'>{_cell(c.old, c.added)}</td>"
            f"<td style='text-align:left;background:#e6f4ea'>{_cell(c.new, c.removed)}</td>"
            "</tr>"
            for c in self.changes
        )
        return f"<table class='symphony-diff'>{head}{rows}</table>"


def _short(value: Any) -> str:
    text = value.isoformat() if isinstance(value, datetime) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _cell(value: Any, missing: bool) -> str:
    if missing:
        return "<em>(absent)</em>"
    if isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, str):
        text = value
    else:
        text = repr(value)
    if len(text) > 200:
        return f"<details><summary>{escape(text[:80])}...</summary>{escape(text)}</details>"
    return escape(text)


def _label(item: BaseModel | Revision[Any] | None, side: str) -> str:
    if item is None:
        return "(absent)"
    if isinstance(item, Revision):
        return f"v{item.version} ({item.op})"
    version = getattr(item, "version", None)
    stored = isinstance(version, int) and not isinstance(version, bool) and version > 0
    return f"v{version}" if stored else side


def diff(
    a: BaseModel | Revision[Any] | None,
    b: BaseModel | Revision[Any] | None,
    *,
    ignore: Sequence[str] = ("version", "updated_at"),
) -> Diff:
    """What changed from ``a`` to ``b``: two entities, or two revisions (``history()``).

    ``diff(old, new).paths()`` lists the changed dotted paths (``"metadata.team"``,
    ``"tags"``; fields by their stored names, as frames and forms show them); each :class:`FieldChange` has the old and new value. Secret fields show only
    that they changed, never a value. A deleted revision (or None) compares as absent.
    Fields in ``ignore`` (the bookkeeping every write changes, by default) are left out.
    """
    left, right = _entity(a), _entity(b)
    if left is not None and right is not None and type(left) is not type(right):
        raise TypeError(
            f"diff compares two entities of one model, got {type(left).__name__} "
            f"and {type(right).__name__}"
        )
    if isinstance(ignore, str):
        raise TypeError("ignore takes a list of field names, not one string")
    changes: list[FieldChange] = []
    skip = set(ignore)
    _compare(
        {k: v for k, v in _fields(left).items() if k not in skip},
        {k: v for k, v in _fields(right).items() if k not in skip},
        "",
        changes,
    )
    left_label, right_label = _label(a, "before"), _label(b, "after")
    if left_label == right_label:
        left_label, right_label = f"{left_label} (before)", f"{right_label} (after)"
    return Diff(changes, left_label, right_label)


def _entity(item: BaseModel | Revision[Any] | None) -> BaseModel | None:
    if isinstance(item, Revision):
        return item.entity
    if item is None or isinstance(item, BaseModel):
        return item
    raise TypeError(f"diff compares entities or revisions, got {type(item).__name__}")


def _fields(model: BaseModel | None) -> dict[str, Any]:
    """The fields by the names they are stored and shown under (aliases, as in frames)."""
    if model is None:
        return {}
    return {
        info.alias or name: getattr(model, name) for name, info in type(model).model_fields.items()
    }


def _compare(old: Any, new: Any, path: str, out: list[FieldChange]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            _compare(old.get(key, _ABSENT), new.get(key, _ABSENT), _join(path, key), out)
        return
    if isinstance(old, BaseModel) and isinstance(new, BaseModel) and type(old) is type(new):
        _compare(_fields(old), _fields(new), path, out)
        return
    if _plain(old) == _plain(new):
        return
    secret = isinstance(old, SecretStr | SecretBytes) or isinstance(new, SecretStr | SecretBytes)
    out.append(
        FieldChange(
            path,
            None if old is _ABSENT else (_SECRET if secret else _shown(old)),
            None if new is _ABSENT else (_SECRET if secret else _shown(new)),
            added=old is _ABSENT,
            removed=new is _ABSENT,
        )
    )


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _plain(value: Any) -> Any:
    """A value to compare: secrets revealed (never shown), models as dicts."""
    if isinstance(value, SecretStr | SecretBytes):
        return ("secret", value.get_secret_value())
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in _fields(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _shown(value: Any) -> Any:
    """A value as a change shows it: enums by value, models as dicts, secrets masked."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_SECRET if isinstance(v, SecretStr | SecretBytes) else _shown(v) for v in value]
    if isinstance(value, dict):
        return {
            k: _SECRET if isinstance(v, SecretStr | SecretBytes) else _shown(v)
            for k, v in value.items()
        }
    return value
