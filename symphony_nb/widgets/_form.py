""":class:`ModelForm`: edit, validate, save, reset and delete one entity of any model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import ipywidgets as widgets
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from .._encryption import is_mask, keep_stored
from .._errors import ConflictError, SymphonyError
from .._fields import json_key
from .._history import change_context
from .._repository import Repository
from ._history import HistoryPanel, form_reason
from ._inputs import FieldInput, InputError, make_input
from ._util import close_tree, guarded, hide, show

M = TypeVar("M", bound=BaseModel)
Listener = Callable[["ModelForm[Any]"], None]

READ_ONLY = frozenset({"id", "version", "created_at", "updated_at"})
LONG_TEXT = frozenset({"description", "instruction_template"})
_WHOLE = "__all__"


class ModelForm(widgets.VBox, Generic[M]):  # type: ignore[misc]
    """A form for one entity of ``repository.model``; a new one when ``entity`` is None.

    One input per field (``form.fields[key]``, keyed by the field's JSON name), each with its
    error beside it (``form.errors``). Save validates with the model and stores nothing while
    any field is invalid; a version conflict offers Reload. Delete asks for confirmation.
    The repository is called through its sync facade, since widget callbacks are sync.

    On a repository that keeps history, ``history_button`` opens a :class:`HistoryPanel` of
    the entity below (``history``): its revisions, a diff between any two, and revert. What
    the form writes records ``"... from a form"`` as its reason.
    """

    read_only: frozenset[str] = READ_ONLY
    long_text: frozenset[str] = LONG_TEXT

    def __init__(self, repository: Repository[M], entity: M | None = None) -> None:
        super().__init__()
        self.repository = repository
        self.model: type[M] = repository.model
        self.entity: M | None = None
        self.errors: dict[str, str] = {}
        self._listeners: list[Listener] = []
        self._initial: dict[str, Any] = {}
        self.inputs: dict[str, FieldInput] = {}
        for name, info in self.model.model_fields.items():
            key = json_key(name, info)
            self.inputs[key] = make_input(
                key, info, long_text=key in self.long_text, read_only=key in self.read_only
            )
        self.fields: dict[str, widgets.ValueWidget] = {
            key: field.widget for key, field in self.inputs.items()
        }
        self.title = widgets.HTML()
        self.status = widgets.HTML()
        self.save_button = widgets.Button(description="Save", button_style="primary", icon="save")
        self.reset_button = widgets.Button(description="Reset", icon="undo")
        self.delete_button = widgets.Button(description="Delete", icon="trash")
        self.confirm_delete_button = widgets.Button(
            description="Yes, delete", button_style="danger"
        )
        self.cancel_delete_button = widgets.Button(description="Cancel")
        self.reload_button = widgets.Button(description="Reload", icon="refresh")
        self.history_button = widgets.Button(description="History", icon="history")
        self.history: HistoryPanel | None = None
        self.history_box = widgets.VBox()
        self.confirm_box = widgets.HBox(
            [
                widgets.HTML("Delete this entity?"),
                self.confirm_delete_button,
                self.cancel_delete_button,
            ]
        )
        self.save_button.on_click(guarded(self.save, self.status))
        self.reset_button.on_click(guarded(self.reset, self.status))
        self.delete_button.on_click(guarded(self.ask_delete, self.status))
        self.confirm_delete_button.on_click(guarded(self.delete, self.status))
        self.cancel_delete_button.on_click(guarded(self._cancel_delete, self.status))
        self.reload_button.on_click(guarded(self.reload, self.status))
        self.history_button.on_click(guarded(self.toggle_history, self.status))
        self.buttons = widgets.HBox(
            [
                self.save_button,
                self.reset_button,
                self.delete_button,
                self.reload_button,
                self.history_button,
            ]
        )
        self.children = [
            self.title,
            *(field.row for field in self.inputs.values()),
            *self._extra_widgets(),
            self.buttons,
            self.confirm_box,
            self.status,
            self.history_box,
        ]
        self.load(entity)

    def _extra_widgets(self) -> list[widgets.Widget]:
        """Widgets a subclass shows between the fields and the buttons."""
        return []

    # ------------------------------------------------------------------ state

    def load(self, entity: M | None) -> None:
        """Edit ``entity`` (fill every input from it), or a new entity with defaults if None."""
        if entity is not None and not isinstance(entity, self.model):
            raise TypeError(f"this form edits {self.model.__name__}, got {type(entity).__name__}")
        self.entity = entity
        self._initial = self._values_of(entity)
        self._fill(self._initial)
        self._clear_errors()
        hide(self.confirm_box)
        hide(self.reload_button)
        hide(self.history_button, entity is None or self.repository.store.kept() is False)
        panel = self.history
        if (
            panel is not None
            and entity is not None
            and panel.entity_id == getattr(entity, "id", None)
        ):
            panel.refresh()  # the same entity, written again: show its new revision
        else:
            self._close_history()
        label = "new" if entity is None else f"id {getattr(entity, 'id', '?')}"
        self.title.value = f"<b>{self.model.__name__}</b> ({label})"
        self.status.value = ""

    def _values_of(self, entity: M | None) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, info in self.model.model_fields.items():
            key = json_key(name, info)
            if entity is not None:
                values[key] = getattr(entity, name)
            elif info.is_required():
                values[key] = None
            else:
                default = info.get_default(call_default_factory=True, validated_data={})
                values[key] = None if default is PydanticUndefined else default
        return values

    def _fill(self, values: dict[str, Any]) -> None:
        for key, field in self.inputs.items():
            field.set(values.get(key))

    def _clear_errors(self) -> None:
        self.errors = {}
        for field in self.inputs.values():
            field.show_error(None)

    def _show_errors(self, errors: dict[str, str]) -> None:
        self.errors = errors
        for key, text in errors.items():
            if key in self.inputs:
                self.inputs[key].show_error(text)
        others = [f"{key}: {text}" for key, text in errors.items() if key not in self.inputs]
        invalid = sorted(key for key in errors if key in self.inputs)
        show(
            self.status,
            "error",
            "Not saved: invalid " + ", ".join(invalid + others) if invalid or others else "",
        )

    def raw_values(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The inputs' values by key, and the keys whose text cannot be parsed (with why)."""
        values: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for key, field in self.inputs.items():
            try:
                values[key] = field.read()
            except InputError as exc:
                problems[key] = str(exc)
        return values, problems

    def validate(self) -> M | None:
        """The entity the inputs describe, or None after showing each invalid field's error."""
        self._clear_errors()
        values, problems = self.raw_values()
        try:
            entity = self.model.model_validate(values)
        except ValidationError as exc:
            for error in exc.errors():
                key = str(error["loc"][0]) if error["loc"] else _WHOLE
                problems.setdefault(key, error["msg"])
            entity = None
        if problems:
            self._show_errors(problems)
            return None
        assert entity is not None
        # Password boxes start empty and JSON shows masks (the plaintext never goes to the
        # browser): an empty box or a mask keeps the stored secret.
        return keep_stored(entity, self.entity, lambda value: value in ("", b"") or is_mask(value))

    def close(self) -> None:
        """Close this widget and every widget in it."""
        close_tree(self)
        super().close()

    # ------------------------------------------------------------------ history

    def toggle_history(self) -> HistoryPanel | None:
        """Open the :class:`HistoryPanel` of the loaded entity below the form, or close it."""
        if self.history is not None:
            self._close_history()
            return None
        if self.entity is None:
            show(self.status, "info", "A new entity has no history yet")
            return None
        panel = HistoryPanel(self.repository, str(getattr(self.entity, "id", "")))
        panel.on_revert(self._reverted)
        self.history = panel
        self.history_box.children = [panel]
        return panel

    def _close_history(self) -> None:
        if self.history is not None:
            close_tree(self.history)
            self.history.close()
        self.history = None
        self.history_box.children = []

    def _reverted(self, entity: Any) -> None:
        self.load(entity)
        self._notify()

    # ------------------------------------------------------------------ actions

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(form)`` after every successful save or delete."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self)

    def save(self) -> str | None:
        """Validate and store the entity (same as clicking Save); its id, or None if not saved."""
        hide(self.reload_button)
        entity = self.validate()
        if entity is None:
            return None
        try:
            with change_context(reason=form_reason("saved")):
                entity_id = self.repository.sync.save(entity)
        except ConflictError as exc:
            show(
                self.status,
                "error",
                f"Not saved: someone else changed this {self.model.__name__} "
                f"(stored version {exc.stored}, yours {exc.given}). "
                "Reload to get the stored version, then reapply your change.",
            )
            hide(self.reload_button, False)
            return None
        except (SymphonyError, OSError, TimeoutError) as exc:
            show(self.status, "error", f"Not saved: {exc}")
            return None
        self.load(entity)
        version = getattr(entity, "version", None)
        suffix = "" if version is None else f" (version {version})"
        show(self.status, "ok", f"Saved {self.model.__name__} {entity_id}{suffix}")
        self._notify()
        return str(entity_id)

    def reset(self) -> None:
        """Put back the values the form was loaded with and clear the errors."""
        self._fill(self._initial)
        self._clear_errors()
        hide(self.confirm_box)
        show(self.status, "info", "Reset to the loaded values")

    def reload(self) -> None:
        """Load the stored version of the entity (after a conflict, for example)."""
        entity_id = self._initial.get("id")
        fresh = None if entity_id is None else self.repository.sync.find_by_id(entity_id)
        if fresh is None:
            self.load(None)
            show(self.status, "error", f"{entity_id} is no longer stored; this is a new entity")
            return
        self.load(fresh)
        version = getattr(fresh, "version", None)
        show(self.status, "info", f"Reloaded the stored version {version}; reapply your change")

    def ask_delete(self) -> None:
        """First step of Delete: show the confirmation buttons."""
        if self.entity is None:
            show(self.status, "info", "Nothing to delete: this entity was never saved")
            return
        hide(self.confirm_box, False)

    def _cancel_delete(self) -> None:
        hide(self.confirm_box)

    def delete(self) -> bool:
        """Delete the loaded entity (the confirmed step of Delete); the form then becomes new."""
        hide(self.confirm_box)
        if self.entity is None:
            show(self.status, "info", "Nothing to delete: this entity was never saved")
            return False
        entity_id = str(getattr(self.entity, "id", ""))
        try:
            with change_context(reason=form_reason("deleted")):
                deleted = self.repository.sync.delete(entity_id)
        except (SymphonyError, OSError, TimeoutError) as exc:
            show(self.status, "error", f"Not deleted: {exc}")
            return False
        self.load(None)
        if deleted:
            show(self.status, "ok", f"Deleted {self.model.__name__} {entity_id}")
        else:
            show(self.status, "info", f"{entity_id} was already deleted")
        self._notify()
        return bool(deleted)
