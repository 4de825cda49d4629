"""One input widget per model field, chosen by the field's type.

Each :class:`FieldInput` converts between the model's value and what the widget shows, and
has an error label beside the widget. ``read()`` returns the value to validate (text for
datetimes and optional numbers, so pydantic parses and reports them) or raises
:class:`InputError` when the text cannot even be parsed (JSON syntax).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import Enum
from typing import Any, get_args

import ipywidgets as widgets
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from .._fields import field_spec
from ._util import message

_STYLE = {"description_width": "150px"}
_NONE_OPTION = ("(none)", "")


class InputError(ValueError):
    """Text in an input that cannot be turned into a value (shown beside the input)."""


class FieldInput:
    """The input of one field: ``widget`` (its description is the field key) and ``error``."""

    def __init__(self, key: str, widget: widgets.ValueWidget, *, optional: bool) -> None:
        self.key = key
        self.optional = optional
        self.widget = widget
        widget.description = key
        widget.style = _STYLE
        self.error = widgets.HTML()
        self.row = widgets.HBox([widget, self.error])

    def set(self, value: Any) -> None:
        """Show ``value`` (a model value, or None for empty)."""
        self.widget.value = "" if value is None else str(_plain(value))

    def read(self) -> Any:
        """The value to validate; raise :class:`InputError` for unparsable text."""
        value = self.widget.value
        return None if self.optional and value == "" else value

    def show_error(self, text: str | None) -> None:
        """Show ``text`` beside the input, or clear it."""
        self.error.value = "" if text is None else message("error", text)


class ChoiceInput(FieldInput):
    """A dropdown over an enum's members (or a Literal's values)."""

    def __init__(self, key: str, choices: list[Any], *, optional: bool) -> None:
        options = [(str(choice), choice) for choice in choices]
        super().__init__(
            key,
            widgets.Dropdown(options=[_NONE_OPTION, *options] if optional else options),
            optional=optional,
        )

    def set(self, value: Any) -> None:
        self.widget.value = _NONE_OPTION[1] if value is None else _plain(value)


class JsonInput(FieldInput):
    """A JSON text area for dicts, lists and nested models."""

    def __init__(self, key: str, *, optional: bool) -> None:
        super().__init__(
            key,
            widgets.Textarea(layout=widgets.Layout(width="60%", height="6em")),
            optional=optional,
        )

    def set(self, value: Any) -> None:
        self.widget.value = "" if value is None else json.dumps(to_jsonable_python(value), indent=2)

    def read(self) -> Any:
        text = self.widget.value.strip()
        if not text:
            if self.optional:
                return None
            raise InputError("enter JSON, for example {} or []")
        try:
            return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, but storing them as JSON writes null.
    raise InputError(f"{name} is not a JSON number and cannot be stored; use null or a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputError(f"{text} is too large to store as a number; use a smaller one")
    return value


class DateTimeInput(FieldInput):
    """ISO 8601 text that keeps the time zone and microseconds (parsed by the model)."""

    def __init__(self, key: str, *, optional: bool) -> None:
        super().__init__(
            key, widgets.Text(placeholder="2026-01-31T09:00:00+00:00"), optional=optional
        )

    def set(self, value: Any) -> None:
        self.widget.value = value.isoformat() if isinstance(value, datetime) else (value or "")

    def read(self) -> Any:
        text = self.widget.value.strip()
        return None if self.optional and not text else text


class CheckboxInput(FieldInput):
    """A checkbox for a bool."""

    def __init__(self, key: str) -> None:
        super().__init__(key, widgets.Checkbox(indent=False), optional=False)

    def set(self, value: Any) -> None:
        self.widget.value = bool(value)


class NumberInput(FieldInput):
    """``IntText`` / ``FloatText`` for a required number."""

    def __init__(self, key: str, kind: type) -> None:
        widget = widgets.IntText() if kind is int else widgets.FloatText()
        super().__init__(key, widget, optional=False)

    def set(self, value: Any) -> None:
        self.widget.value = 0 if value is None else value


class SecretInput(FieldInput):
    """A password box for a ``SecretStr`` / ``SecretBytes``: it never shows the stored value.

    The box starts empty whatever is stored, so the plaintext never reaches the browser:
    left empty it keeps the stored secret (see :meth:`ModelForm.validate`), typed into it
    replaces it.
    """

    def __init__(self, key: str, *, optional: bool) -> None:
        super().__init__(key, widgets.Password(), optional=optional)

    def set(self, value: Any) -> None:
        self.widget.value = ""
        self.widget.placeholder = _KEEP if _is_set(value) else ""

    def read(self) -> Any:
        return self.widget.value


class SecretDictInput(FieldInput):
    """A ``dict[str, SecretStr]``: a text of names, and a password box for each name.

    ``widget`` holds the names, separated by commas; ``boxes[name]`` is its password box,
    empty at first (the stored value is never sent to the browser). Left empty, a box keeps
    the stored secret; removing a name from the list removes that secret.
    """

    def __init__(self, key: str, *, optional: bool) -> None:
        super().__init__(
            key, widgets.Text(placeholder="names, such as api_key, org"), optional=optional
        )
        self.boxes: dict[str, widgets.Password] = {}
        self.box_list = widgets.VBox(layout=widgets.Layout(margin="0 0 0 160px"))
        self.row.close()  # the names and their boxes go in one row instead
        self.row = widgets.VBox([widgets.HBox([self.widget, self.error]), self.box_list])
        self._stored: set[str] = set()
        self.widget.observe(self._names_changed, names="value")

    def names(self) -> list[str]:
        """The names typed, in order, without blanks or repeats."""
        parts = (part.strip() for part in self.widget.value.split(","))
        return list(dict.fromkeys(part for part in parts if part))

    def _names_changed(self, _change: Any = None) -> None:
        wanted = self.names()
        for name in list(self.boxes):
            if name not in wanted:
                self.boxes.pop(name).close()
        for name in wanted:
            if name not in self.boxes:
                box = widgets.Password(description=name, style=_STYLE)
                box.placeholder = _KEEP if name in self._stored else ""
                self.boxes[name] = box
        self.box_list.children = [self.boxes[name] for name in wanted]

    def set(self, value: Any) -> None:
        stored = dict(value or {})
        self._stored = {name for name, secret in stored.items() if _is_set(secret)}
        for box in self.boxes.values():
            box.close()
        self.boxes = {}
        self.widget.value = ", ".join(str(name) for name in stored)
        self._names_changed()

    def read(self) -> Any:
        if self.optional and not self.names():
            return None
        return {name: self.boxes[name].value for name in self.names()}


_KEEP = "stored; leave empty to keep it, type to replace it"


def _is_set(value: Any) -> bool:
    return value is not None and bool(getattr(value, "get_secret_value", lambda: value)())


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def make_input(key: str, info: FieldInfo, *, long_text: bool, read_only: bool) -> FieldInput:
    """The input for field ``key`` (its JSON name) described by ``info``."""
    spec = field_spec(key, info.annotation)
    inner, optional = spec.inner, spec.optional
    field: FieldInput
    element = field_spec(key, get_args(inner)[1]) if spec.kind == "dict" and spec.secret else None
    if spec.secret and spec.kind == "scalar":
        field = SecretInput(key, optional=optional)
    elif element is not None and element.kind == "scalar":
        field = SecretDictInput(key, optional=optional)
    elif spec.choices is not None:
        field = ChoiceInput(key, list(spec.choices), optional=optional)
    elif spec.datetime:
        field = DateTimeInput(key, optional=optional)
    elif inner is bool and not optional:
        field = CheckboxInput(key)
    elif inner in (int, float) and not optional:
        field = NumberInput(key, inner)
    elif inner is str or inner in (int, float, bool):
        text = widgets.Textarea(layout=widgets.Layout(width="60%", height="5em"))
        field = FieldInput(key, text if long_text else widgets.Text(), optional=optional)
    else:
        field = JsonInput(key, optional=optional)
    field.widget.disabled = read_only
    return field
