"""What a model's fields are: one description that filters, SQL, frames and widgets all read.

:func:`model_fields` maps each field's JSON key (its alias, if any; the Python name too when
it differs) to a :class:`FieldSpec`: its kind (a scalar, a dict of anything, a nested model,
a list), whether it may be None, enum or Literal choices, whether it holds datetimes or a
secret. Annotations are unwrapped once, here (``Annotated``, ``Optional``).
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import lru_cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AwareDatetime,
    BaseModel,
    FutureDatetime,
    NaiveDatetime,
    PastDatetime,
    SecretBytes,
    SecretStr,
)
from pydantic.fields import FieldInfo

Kind = Literal["scalar", "dict", "model", "list"]
DATETIME_TYPES: tuple[Any, ...] = (
    datetime,
    AwareDatetime,
    NaiveDatetime,
    PastDatetime,
    FutureDatetime,
)
"""The annotations (after unwrapping) of datetime fields."""
SECRET_TYPES: tuple[type, ...] = (SecretStr, SecretBytes)


@dataclass(frozen=True)
class FieldSpec:
    """One field of a model, as every layer of symphony_nb sees it.

    ``name`` is the JSON key; ``annotation`` the full type (metadata kept), ``inner`` the
    type once ``Annotated`` and ``Optional`` are stripped. ``enum`` holds an enum's member
    values as text (the order ranks them); ``choices`` the values of an enum or a Literal.
    ``secret`` is true when the field is or holds a ``SecretStr`` or ``SecretBytes`` (in a
    list, a dict or a nested model): such values are encrypted at rest and never queried.
    """

    name: str
    kind: Kind
    annotation: Any
    inner: Any = None
    optional: bool = False
    enum: tuple[str, ...] | None = None
    choices: tuple[Any, ...] | None = None
    model: type[BaseModel] | None = None
    element: Any = None
    datetime: bool = False
    secret: bool = False


def json_key(name: str, info: FieldInfo) -> str:
    """The JSON key of the field whose Python name is ``name``: its alias, if it has one."""
    return info.serialization_alias or info.alias or name


def unwrap(annotation: Any) -> tuple[Any, bool]:
    """Strip ``Annotated`` and ``Optional``; return the inner type and whether None is allowed."""
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(get_args(annotation))
            if len(args) != 1:
                return annotation, optional
            annotation = args[0]
        else:
            return annotation, optional


def field_spec(name: str, annotation: Any) -> FieldSpec:
    """The description of a field named ``name`` (its JSON key) of type ``annotation``."""
    inner, optional = unwrap(annotation)
    origin = get_origin(inner) or inner
    base = {"annotation": annotation, "inner": inner, "optional": optional}
    base["secret"] = holds_secret(inner)
    if inner is Any or origin in (dict, Mapping) or inner is dict:
        return FieldSpec(name, "dict", **base)
    if isinstance(origin, type) and issubclass(origin, BaseModel):
        return FieldSpec(name, "model", model=origin, **base)
    if origin in (list, tuple, set, frozenset, Sequence):
        args = get_args(inner)
        return FieldSpec(name, "list", element=args[0] if args else Any, **base)
    if isinstance(origin, type) and issubclass(origin, Enum):
        values = tuple(member.value for member in origin)
        enum = tuple(str(value) for value in values)
        return FieldSpec(name, "scalar", enum=enum, choices=values, **base)
    if origin is Literal:
        return FieldSpec(name, "scalar", choices=get_args(inner), **base)
    return FieldSpec(
        name,
        "scalar",
        datetime=inner in DATETIME_TYPES,
        **base,
    )


def holds_secret(annotation: Any) -> bool:
    """Whether values of ``annotation`` are or may contain a ``SecretStr`` or ``SecretBytes``."""
    return _holds_secret(annotation, frozenset())


def _holds_secret(annotation: Any, seen: frozenset[type]) -> bool:
    inner, _ = unwrap(annotation)
    if isinstance(inner, type) and issubclass(inner, SECRET_TYPES):
        return True
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        if inner in seen:
            return False
        return any(
            _holds_secret(info.annotation, seen | {inner}) for info in inner.model_fields.values()
        )
    return any(_holds_secret(arg, seen) for arg in get_args(inner) if arg is not Ellipsis)


@lru_cache(maxsize=256)
def model_fields(model: type[BaseModel]) -> dict[str, FieldSpec]:
    """The fields of ``model`` by JSON key (alias), plus Python names that differ."""
    specs: dict[str, FieldSpec] = {}
    for python_name, info in model.model_fields.items():
        key = json_key(python_name, info)
        # pydantic moves Annotated metadata (validators, serializers) out of the annotation
        annotation = (
            Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        )
        specs[key] = field_spec(key, annotation)
    for python_name, info in model.model_fields.items():
        key = json_key(python_name, info)
        specs.setdefault(python_name, specs[key])
    return specs
