""":class:`RegistryExplorer`: browse, filter, page, open, create and delete registered entities."""

from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as widgets
from pydantic import BaseModel

from .._errors import SymphonyError
from .._fields import model_fields
from .._models import AgentConfig, Task
from .._repository import Repository
from ..services.registry import ServiceRegistry
from ..services.tasks import TaskManager
from ._agent_form import AgentConfigForm
from ._form import ModelForm
from ._queue import QueueView
from ._task_form import TaskForm
from ._util import close_tree, guarded, hide, show

_SUMMARY_SKIP = frozenset({"id", "version", "created_at", "updated_at", "description"})


def form_for(
    repository: Repository[Any], entity: BaseModel | None, registry: ServiceRegistry
) -> ModelForm[Any]:
    """The most specific form for ``repository``'s model."""
    if issubclass(repository.model, AgentConfig):
        return AgentConfigForm(repository, entity)  # type: ignore[arg-type]
    if issubclass(repository.model, Task):
        return TaskForm(repository, entity, registry=registry)  # type: ignore[arg-type]
    return ModelForm(repository, entity)


def summary_columns(model: type[BaseModel], limit: int = 4) -> list[str]:
    """The id, then up to ``limit`` short scalar fields, then ``updated_at`` if there is one."""
    specs = model_fields(model)
    keys = [
        key
        for key, spec in specs.items()
        if spec.kind == "scalar" and key not in _SUMMARY_SKIP and spec.name == key
    ][:limit]
    tail = ["updated_at"] if "updated_at" in specs else []
    return ["id", *keys, *tail]


class RegistryExplorer(widgets.VBox):  # type: ignore[misc]
    """Browse the repositories of a :class:`ServiceRegistry` (default: the global one).

    Choose a repository (``repository_picker``), filter with a JSON filter (``filter_box``),
    page with ``prev_button`` / ``next_button`` (``page_label`` shows the total count), select
    an entity in ``entity_list`` to open its form below (``form``), or click ``new_button``.
    For a Task repository, ``queue_button`` opens a live :class:`QueueView` of it below
    (``queue``). Errors, such as a malformed filter, are shown in ``status``.
    """

    def __init__(self, registry: ServiceRegistry | None = None, *, page_size: int = 10) -> None:
        super().__init__()
        self.registry = registry or ServiceRegistry.get_instance()
        self.page_size = page_size
        self.page = 0
        self.total = 0
        self.form: ModelForm[Any] | None = None
        self.queue: QueueView | None = None
        self.status = widgets.HTML()
        self.repository_picker = widgets.Dropdown(description="repository")
        self.filter_box = widgets.Text(
            description="filter",
            placeholder='{"status": "pending"}',
            continuous_update=False,
            layout=widgets.Layout(width="60%"),
        )
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.new_button = widgets.Button(description="New", icon="plus")
        self.queue_button = widgets.Button(description="Queue", icon="tasks")
        self.prev_button = widgets.Button(description="Previous", icon="arrow-left")
        self.next_button = widgets.Button(description="Next", icon="arrow-right")
        self.page_label = widgets.HTML()
        self.table = widgets.HTML()
        self.entity_list = widgets.Select(description="open", options=[], rows=page_size)
        self.form_box = widgets.VBox()
        self.refresh_button.on_click(guarded(self.refresh_repositories, self.status))
        self.new_button.on_click(guarded(self.new, self.status))
        self.queue_button.on_click(guarded(self.show_queue, self.status))
        self.prev_button.on_click(guarded(lambda: self.go(self.page - 1), self.status))
        self.next_button.on_click(guarded(lambda: self.go(self.page + 1), self.status))
        self.repository_picker.observe(guarded(self._switch, self.status), names="value")
        self.filter_box.observe(guarded(lambda: self.go(0), self.status), names="value")
        self.entity_list.observe(guarded(self._open_selected, self.status), names="value")
        self.children = [
            widgets.HBox(
                [self.repository_picker, self.refresh_button, self.new_button, self.queue_button]
            ),
            self.filter_box,
            widgets.HBox([self.prev_button, self.next_button, self.page_label]),
            self.table,
            self.entity_list,
            self.status,
            self.form_box,
        ]
        self.refresh_repositories()

    def close(self) -> None:
        """Close this widget and every widget in it."""
        close_tree(self)
        super().close()

    @property
    def repository(self) -> Repository[Any] | None:
        """The chosen repository, if any."""
        name = self.repository_picker.value
        return None if name is None else self.registry.repositories.get(name)

    def refresh_repositories(self) -> None:
        """Re-read the registry's repositories, keep the choice if it is still there, refresh."""
        names = sorted(self.registry.repositories)
        current = self.repository_picker.value
        self.repository_picker.options = names
        chosen = current if current in names else (names[0] if names else None)
        if self.repository_picker.value != chosen:
            self.repository_picker.value = chosen  # switching refreshes
        else:
            self.refresh()

    def _switch(self) -> None:
        self._close_form()
        self.go(0)

    def show_queue(self) -> QueueView | None:
        """Open a live :class:`QueueView` of the chosen Task repository below the list."""
        repository = self.repository
        if repository is None or not issubclass(repository.model, Task):
            show(self.status, "error", "choose a Task repository to see its queue")
            return None
        self._close_form()
        self.queue = QueueView(TaskManager(repository))
        self.queue.start()
        self.form_box.children = [self.queue]
        return self.queue

    def filter_criteria(self) -> dict[str, Any] | None:
        """The filter box's JSON as a dict (None when empty); ValueError says what is wrong."""
        text = self.filter_box.value.strip()
        if not text:
            return None
        try:
            criteria = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"the filter is not valid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        if not isinstance(criteria, dict):
            raise ValueError('a filter is a JSON object, for example {"status": "pending"}')
        return criteria

    def go(self, page: int) -> None:
        """Show page ``page`` (0-based, clamped to the pages that exist)."""
        self.page = max(0, page)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the current page and the total count from the chosen repository."""
        repository = self.repository
        self.status.value = ""
        hide(self.queue_button, repository is None or not issubclass(repository.model, Task))
        if repository is None:
            self._show_rows([], [])
            self.page_label.value = "no repository registered"
            return
        try:
            criteria = self.filter_criteria()
            self.total = repository.sync.count(criteria)
            last = max(0, (self.total - 1) // self.page_size)
            self.page = min(self.page, last)
            rows = repository.sync.find_all(
                criteria, limit=self.page_size, offset=self.page * self.page_size
            )
        except (ValueError, SymphonyError, OSError, TimeoutError) as exc:
            self._show_rows([], [])
            self.page_label.value = ""
            show(self.status, "error", str(exc))
            return
        first = self.page * self.page_size
        shown = f"{first + 1}-{first + len(rows)}" if rows else "0"
        self.page_label.value = f"{shown} of {self.total}"
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = first + len(rows) >= self.total
        self._show_rows(summary_columns(repository.model), rows)

    def _show_rows(self, columns: list[str], rows: list[BaseModel]) -> None:
        dumped = [row.model_dump(mode="json", by_alias=True) for row in rows]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape(_cell(doc.get(c)))}</td>" for c in columns)
            + "</tr>"
            for doc in dumped
        )
        self.table.value = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        selected = self.entity_list.value
        options = [
            (" | ".join(_cell(doc.get(c)) for c in columns[:3]), doc["id"]) for doc in dumped
        ]
        with self.entity_list.hold_trait_notifications():
            self.entity_list.options = options
            ids = [doc["id"] for doc in dumped]
            self.entity_list.value = selected if selected in ids else None

    def _open_selected(self) -> None:
        entity_id = self.entity_list.value
        if entity_id is not None:
            self.open_entity(entity_id)

    def open_entity(self, entity_id: str) -> ModelForm[Any] | None:
        """Open the form of entity ``entity_id`` of the chosen repository."""
        repository = self.repository
        if repository is None:
            return None
        entity = repository.sync.find_by_id(entity_id)
        if entity is None:
            show(self.status, "error", f"{entity_id} is no longer stored")
            self.refresh()
            return None
        return self._show_form(form_for(repository, entity, self.registry))

    def new(self) -> ModelForm[Any] | None:
        """Open an empty form for a new entity of the chosen repository."""
        repository = self.repository
        if repository is None:
            show(self.status, "error", "register a repository first")
            return None
        return self._show_form(form_for(repository, None, self.registry))

    def _close_form(self) -> None:
        if self.form is not None:
            self.form.close()
        if self.queue is not None:
            self.queue.close()
        self.form = None
        self.queue = None
        self.form_box.children = []

    def _show_form(self, form: ModelForm[Any]) -> ModelForm[Any]:
        self._close_form()
        form.on_change(lambda _form: self.refresh())
        self.form = form
        self.form_box.children = [form]
        return form


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
