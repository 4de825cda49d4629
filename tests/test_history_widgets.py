"""History in the notebook faces: the form's history panel, diff view and revert, the
explorer, and what forms record, driven without a browser on every history backend."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pytest

from symphony_nb import InMemoryRepository, Repository, ServiceRegistry, Task, change_context
from symphony_nb.widgets import HistoryPanel, RegistryExplorer, TaskForm
from tests.backends import HISTORY, opened_with_history

Make = Callable[[type[Any]], Repository[Any]]


@pytest.fixture(params=HISTORY)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    with contextlib.ExitStack() as stack:
        count = 0

        def build(model: type[Any]) -> Repository[Any]:
            nonlocal count
            count += 1
            where = tmp_path / f"r{count}"
            where.mkdir()
            return stack.enter_context(opened_with_history(str(request.param), model, where))

        yield build


def hidden(widget: widgets.Widget) -> bool:
    return bool(widget.layout.display == "none")


def edited(repo: Repository[Task]) -> Task:
    task = Task(id="t", name="first", description="<b>kept</b>")
    repo.sync.save(task)
    task.name = "second"
    repo.sync.save(task)
    task.name = "<img src=x onerror=alert(1)>"
    repo.sync.save(task)
    return task


def test_the_form_opens_the_history_and_records_its_writes(make: Make) -> None:
    repo = make(Task)
    edited(repo)
    form = TaskForm(repo, repo.sync.get("t"))
    assert not hidden(form.history_button)
    form.history_button.click()
    panel = form.history
    assert isinstance(panel, HistoryPanel)
    assert [v for _, v in panel.revision_list.options] == [3, 2, 1]
    assert panel.revision_list.value == 3
    assert panel.compare_with.value == 2
    assert "second" in panel.diff_view.value
    assert "<img" not in panel.diff_view.value and "&lt;img" in panel.diff_view.value
    form.fields["name"].value = "from the form"
    with change_context(actor="ana"):
        form.save_button.click()
    last = repo.sync.history("t")[-1]
    assert (last.actor, last.reason) == ("ana", "saved from a form")
    assert form.history is panel and panel.revision_list.value == 4  # refreshed
    form.history_button.click()  # closes
    assert form.history is None and form.history_box.children == ()


def test_revert_asks_first_then_writes_a_new_version(make: Make) -> None:
    repo = make(Task)
    edited(repo)
    form = TaskForm(repo, repo.sync.get("t"))
    panel = form.toggle_history()
    assert panel is not None
    panel.revision_list.value = 1
    assert panel.compare_with.value == 0  # nothing before the first
    panel.compare_with.value = 3
    assert "first" in panel.diff_view.value
    panel.revert_button.click()
    assert not hidden(panel.confirm_box)
    assert "version 1" in panel.confirm_text.value
    assert repo.sync.get("t").name != "first"
    panel.cancel_revert_button.click()
    assert hidden(panel.confirm_box)
    assert repo.sync.get("t").version == 3
    panel.revert_button.click()
    panel.confirm_revert_button.click()
    stored = repo.sync.get("t")
    assert (stored.name, stored.version) == ("first", 4)
    assert form.entity is not None and form.entity.name == "first"
    assert form.fields["name"].value == "first"
    assert [v for _, v in panel.revision_list.options] == [4, 3, 2, 1]
    assert repo.sync.history("t")[-1].reason == "revert to version 1 from a form"
    assert "Reverted" in panel.status.value


def test_revert_of_a_changed_entity_is_refused_and_says_so(make: Make) -> None:
    repo = make(Task)
    task = edited(repo)
    panel = HistoryPanel(repo, "t")
    panel.revision_list.value = 1
    task.name = "meanwhile"
    repo.sync.save(task)  # the panel's view is one version behind now
    panel.revert_button.click()
    panel.confirm_revert_button.click()
    assert "Not reverted" in panel.status.value
    assert repo.sync.get("t").name == "meanwhile"
    assert panel.revision_list.options[0][1] == 4  # shown again, up to date
    panel.revision_list.value = 1
    panel.revert_button.click()
    panel.confirm_revert_button.click()
    assert repo.sync.get("t").name == "first"


def test_a_repository_without_history_shows_no_history_button() -> None:
    repo = InMemoryRepository(Task)
    repo.sync.save(Task(id="t", name="t"))
    assert hidden(TaskForm(repo, repo.sync.get("t")).history_button)


def test_the_explorer_reaches_the_history_through_the_form(make: Make) -> None:
    repo = make(Task)
    edited(repo)
    registry = ServiceRegistry()
    registry.register_repository("task", repo)
    explorer = RegistryExplorer(registry)
    form = explorer.open_entity("t")
    assert form is not None
    panel = form.toggle_history()
    assert panel is not None and len(panel.revisions) == 3
    panel.revision_list.value = 2
    panel.revert_button.click()
    panel.confirm_revert_button.click()
    assert repo.sync.get("t").name == "second"
    assert "second" in explorer.table.value  # the list was refreshed
    explorer.close()
