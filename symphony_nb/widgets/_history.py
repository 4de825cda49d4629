""":class:`HistoryPanel`: the revisions of one entity, a diff between any two, and revert."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .._diff import diff
from .._errors import ConflictError, SymphonyError
from .._history import Revision, change_context, current_change
from .._repository import Repository
from ._util import guarded, hide, show

FROM_A_FORM = "from a form"


def form_reason(action: str) -> str:
    """The reason a form records on what it writes: the change context's, marked as a form's."""
    _, reason = current_change()
    return f"{reason} ({action} {FROM_A_FORM})" if reason else f"{action} {FROM_A_FORM}"


class HistoryPanel(widgets.VBox):  # type: ignore[misc]
    """The revisions of entity ``entity_id`` in ``repository`` (which keeps history).

    ``revision_list`` lists them, newest first (version, op, when, actor, reason); choose one
    and ``compare_with`` another (by default the one before it) to see ``diff_view``, the
    changed fields side by side (secrets show only that they changed). ``revert_button``
    asks for confirmation (``confirm_revert_button``), then writes a new version with the
    chosen revision's content, through the version check; ``on_revert`` listeners hear of it.
    """

    def __init__(self, repository: Repository[Any], entity_id: str) -> None:
        super().__init__()
        self.repository = repository
        self.entity_id = entity_id
        self.revisions: list[Revision[Any]] = []
        self._refreshing = False
        self._seen: tuple[bool, int | None] = (False, None)  # stored?, version, when refreshed
        self._listeners: list[Callable[[Any], None]] = []
        self.title = widgets.HTML(f"<b>History</b> of {entity_id}")
        self.revision_list = widgets.Select(description="revision", options=[], rows=6)
        self.compare_with = widgets.Dropdown(description="compare with", options=[])
        self.diff_view = widgets.HTML()
        self.revert_button = widgets.Button(description="Revert to this version", icon="history")
        self.confirm_revert_button = widgets.Button(
            description="Yes, revert", button_style="warning"
        )
        self.cancel_revert_button = widgets.Button(description="Cancel")
        self.confirm_text = widgets.HTML()
        self.confirm_box = widgets.HBox(
            [self.confirm_text, self.confirm_revert_button, self.cancel_revert_button]
        )
        self.status = widgets.HTML()
        self.revision_list.observe(guarded(self._chosen, self.status), names="value")
        self.compare_with.observe(guarded(self._show_diff, self.status), names="value")
        self.revert_button.on_click(guarded(self.ask_revert, self.status))
        self.confirm_revert_button.on_click(guarded(self.revert, self.status))
        self.cancel_revert_button.on_click(guarded(lambda: hide(self.confirm_box), self.status))
        self.children = [
            self.title,
            self.revision_list,
            self.compare_with,
            self.diff_view,
            self.revert_button,
            self.confirm_box,
            self.status,
        ]
        hide(self.confirm_box)
        self.refresh()

    def on_revert(self, listener: Callable[[Any], None]) -> None:
        """Call ``listener(entity)`` with the entity each confirmed revert wrote."""
        self._listeners.append(listener)

    def refresh(self) -> None:
        """Read the revisions again; keep the chosen one unless it was the latest."""
        was_latest = bool(self.revisions) and self.revision_list.value == self.revisions[-1].version
        try:
            self.revisions = self.repository.sync.history(self.entity_id)
            current = self.repository.sync.find_by_id(self.entity_id)
            seen = getattr(current, "version", None)
            self._seen = (current is not None, seen if isinstance(seen, int) else None)
        except (SymphonyError, OSError, TimeoutError) as exc:
            self.revisions = []
            show(self.status, "error", str(exc))
        chosen = self.revision_list.value
        options = [(_label(r), r.version) for r in reversed(self.revisions)]
        versions = [r.version for r in self.revisions]
        self._refreshing = True
        try:
            self.revision_list.options = options
            self.compare_with.options = [("(absent)", 0), *options]
            latest = versions[-1] if versions else None
            keep = chosen in versions and not was_latest
            self.revision_list.value = chosen if keep else latest
        finally:
            self._refreshing = False
        self._chosen()

    def chosen(self) -> Revision[Any] | None:
        """The revision chosen in ``revision_list``."""
        return self._find(self.revision_list.value)

    def _find(self, version: int | None) -> Revision[Any] | None:
        return next((r for r in self.revisions if r.version == version), None)

    def _chosen(self) -> None:
        if self._refreshing:
            return
        revision = self.chosen()
        hide(self.confirm_box)
        self.revert_button.disabled = revision is None or revision.entity is None
        if revision is None:
            self.diff_view.value = ""
            return
        earlier = [r.version for r in self.revisions if r.version < revision.version]
        target = earlier[-1] if earlier else 0
        if self.compare_with.value != target:
            self.compare_with.value = target  # shows the diff
        else:
            self._show_diff()

    def _show_diff(self) -> None:
        if self._refreshing:
            return
        revision = self.chosen()
        if revision is None:
            self.diff_view.value = ""
            return
        other = self._find(self.compare_with.value)
        self.diff_view.value = diff(other, revision)._repr_html_()

    def ask_revert(self) -> None:
        """First step of revert: say what will happen and show the confirmation buttons."""
        revision = self.chosen()
        if revision is None or revision.entity is None:
            show(self.status, "info", "choose a revision that holds the entity")
            return
        self.confirm_text.value = (
            f"Write a new version with the content of version {revision.version}?"
        )
        hide(self.confirm_box, False)

    def revert(self) -> Any:
        """Revert to the chosen revision (the confirmed step); the entity written, or None."""
        hide(self.confirm_box)
        revision = self.chosen()
        if revision is None or revision.entity is None:
            return None
        stored, expected = self._seen
        try:
            if stored and expected is None:  # a model without versions: compare by content
                current = self.repository.sync.find_by_id(self.entity_id)
                if current != self.revisions[-1].entity:
                    raise ConflictError(self.entity_id, None, None)
            with change_context(reason=form_reason(f"revert to version {revision.version}")):
                entity = self.repository.sync.revert(
                    self.entity_id, revision.version, expected_version=expected
                )
        except ConflictError:
            self.refresh()
            show(
                self.status,
                "error",
                "Not reverted: the entity changed since this history was shown; "
                "look at its new revisions and revert again",
            )
            return None
        except (SymphonyError, OSError, TimeoutError) as exc:
            show(self.status, "error", f"Not reverted: {exc}")
            return None
        self.refresh()
        show(self.status, "ok", f"Reverted to the content of version {revision.version}")
        for listener in self._listeners:
            listener(entity)
        return entity


def _label(revision: Revision[Any]) -> str:
    parts = [
        f"v{revision.version}",
        revision.op,
        revision.at.strftime("%Y-%m-%d %H:%M:%S"),
        revision.actor or "",
        revision.reason or "",
    ]
    return "  ".join(part for part in parts if part)
