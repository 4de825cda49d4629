"""Values inside documents: what can be stored faithfully, and in which form.

pydantic writes a datetime inside a ``dict[str, Any]`` in its own ISO form
(``"2024-01-01T00:00:00Z"``) and NaN or infinity as ``null``. Before an entity is serialised,
every value held where any value is allowed (``Any``, ``dict[str, Any]``, ``list[Any]``, ...)
is checked, and a few are rewritten:

* a timezone-aware datetime becomes the fixed-width UTC text of ``UTCDateTime`` fields
  (``"2024-01-01T00:00:00.000000Z"``), so filters compare it as an instant, like a field;
* a naive datetime is refused, as it is everywhere else: its instant is unknown;
* NaN and infinity (there and in ``float`` fields) are refused: JSON cannot hold them;
* an integer of more than ``MAX_DIGITS`` digits is refused: it could not be read back.

A refusal is an :class:`UnstorableEntityError` naming the value's path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from ._errors import UnstorableEntityError
from ._fields import unwrap
from ._filters import MAX_DIGITS
from ._models import _format_utc

_DIGIT_BOUND = 10**MAX_DIGITS
_CONTAINERS: tuple[Any, ...] = (
    dict, Mapping, MutableMapping, list, tuple, set, frozenset, Sequence, MutableSequence,
)  # fmt: skip


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []  # innermost first


def storable_fields(entity: BaseModel, entity_id: str) -> dict[str, Any]:
    """The fields of ``entity`` to serialise in place of their values (usually none).

    Raises UnstorableEntityError for a value that no backend can store faithfully.
    """
    try:
        return _changes(entity)
    except _Refused as exc:
        path = "".join(part if part.startswith("[") else f".{part}" for part in reversed(exc.path))
        raise UnstorableEntityError(
            f"{type(entity).__name__} {entity_id!r}: {path.lstrip('.')} {exc.reason}; "
            "no backend can store it faithfully"
        ) from None


def _changes(entity: BaseModel) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    values = entity.__dict__
    for name, convert in _plan(type(entity)):
        value = values.get(name)
        if value is None or _plain(value):
            continue
        try:
            new = _clean(value, convert)
        except _Refused as exc:
            exc.path.append(name)
            raise
        if new is not value:
            changes[name] = new
    return changes


@lru_cache(maxsize=256)
def _plan(model: type[BaseModel]) -> tuple[tuple[str, bool], ...]:
    """``(field, convert)`` for the fields to check; ``convert`` where any value is allowed."""
    plan: list[tuple[str, bool]] = []
    for name, info in model.model_fields.items():
        mode = _mode(info.annotation)
        if mode is not None:
            plan.append((name, mode == "any"))
    return tuple(plan)


def _mode(annotation: Any) -> str | None:
    """``"any"`` if any value is allowed, ``"typed"`` if a float or model may hide, else None."""
    inner, _ = unwrap(annotation)
    if inner is Any or inner is object or inner in _CONTAINERS:
        return "any"
    origin = get_origin(inner)
    if origin is None:
        if isinstance(inner, type) and issubclass(inner, float | BaseModel):
            return "typed"
        return None
    if origin is not Union and origin not in _CONTAINERS:
        return None  # Literal[...], type[...] and the like hold no free values
    modes = {_mode(arg) for arg in get_args(inner) if arg is not Ellipsis}
    if "any" in modes:
        return "any"
    return "typed" if "typed" in modes else None


def _plain(value: Any) -> bool:
    """Whether ``value`` is stored as it is: JSON scalars, finite, in dicts and lists.

    The fast path of every save; anything else goes to :func:`_clean`.
    """
    cls = type(value)
    if cls is dict:
        items: Any = value.values()
    elif cls is list:
        if value and type(value[0]) in (float, int) and _finite_sum(value):
            return True  # a list of numbers (a series): summed in C, not looped over here
        items = value
    else:
        items = (value,)
    for item in items:
        cls = type(item)
        if cls is str or item is None or cls is bool:
            continue
        if cls is int:
            if -_DIGIT_BOUND < item < _DIGIT_BOUND:
                continue
            return False
        if cls is float:
            if item - item == 0.0:  # NaN and infinity give NaN
                continue
            return False
        if (cls is dict or cls is list) and _plain(item):
            continue
        return False
    return True


def _finite_sum(numbers: list[Any]) -> bool:
    """True if every item is a number and none is NaN or infinite (False: look closer)."""
    try:
        return math.isfinite(sum(numbers))
    except (TypeError, OverflowError):  # not only numbers, or integers too big for a float
        return False


def _clean(value: Any, convert: bool) -> Any:
    """``value`` as it must be serialised (the same object when nothing changes)."""
    cls = type(value)
    if cls is str or cls is bool or value is None:
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise _Refused(f"is {value!r}, which JSON cannot hold (it would be stored as null)")
    if isinstance(value, int) and cls is not bool:
        if -_DIGIT_BOUND < value < _DIGIT_BOUND:
            return value
        raise _Refused(f"is an integer of more than {MAX_DIGITS} digits, too long to read back")
    if isinstance(value, dict):
        return _clean_dict(value, convert)
    if isinstance(value, list | tuple | set | frozenset):
        return _clean_items(value, convert)
    if isinstance(value, datetime):
        if not convert:
            return value
        if value.utcoffset() is None:
            raise _Refused(
                f"is the naive datetime {value.isoformat()}; give it a timezone "
                "(for example tzinfo=UTC), as for every datetime field"
            )
        return _format_utc(value)
    if isinstance(value, BaseModel):
        changes = _changes(value)
        return value.model_copy(update=changes) if changes else value
    return value


def _clean_dict(value: dict[Any, Any], convert: bool) -> dict[Any, Any]:
    changed: dict[Any, Any] | None = None
    for key, item in value.items():
        try:
            new = _clean(item, convert)
        except _Refused as exc:
            exc.path.append(str(key))
            raise
        if new is not item:
            if changed is None:
                changed = dict(value)
            changed[key] = new
    return value if changed is None else changed


def _clean_items(value: Any, convert: bool) -> Any:
    changed: list[Any] | None = None
    for index, item in enumerate(value):
        try:
            new = _clean(item, convert)
        except _Refused as exc:
            exc.path.append(f"[{index}]")
            raise
        if new is not item:
            if changed is None:
                changed = list(value)
            changed[index] = new
    if changed is None:
        return value
    return tuple(changed) if isinstance(value, tuple) else changed
