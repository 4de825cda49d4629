"""Forms and the registry explorer, driven without a browser: set values, click, check storage."""

from __future__ import annotations

import contextlib
import html
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import ipywidgets as widgets
import pytest
from pydantic import AwareDatetime, BaseModel, Field

from symphony_nb import (
    Agent,
    AgentConfig,
    InMemoryRepository,
    Repository,
    ServiceRegistry,
    Task,
    TaskPriority,
    TaskStatus,
)
from symphony_nb.backends.memory import MemoryStore
from symphony_nb.stores import Record, StoreLayer
from symphony_nb.widgets import AgentConfigForm, ModelForm, RegistryExplorer, TaskForm
from tests.backends import BACKENDS, opened

Make = Callable[[type[Any]], Repository[Any]]


@pytest.fixture(params=sorted(BACKENDS))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """Build repositories of the current backend, to use through their sync faces; close them after."""
    with contextlib.ExitStack() as stack:

        def build(model: type[Any]) -> Repository[Any]:
            return stack.enter_context(opened(str(request.param), model, tmp_path))

        yield build


def hidden(widget: widgets.Widget) -> bool:
    return bool(widget.layout.display == "none")


class Gadget(BaseModel):
    id: str = Field(default_factory=lambda: "g-default")
    enabled: bool = True
    weight: float = 1.5
    count: int | None = None
    kind: Literal["a", "b"] = "a"
    parts: list[str] = Field(default_factory=lambda: ["bolt"])
    due: AwareDatetime | None = None


# --------------------------------------------------------------------------- ModelForm


def test_inputs_follow_field_types_and_defaults_are_filled(make: Make) -> None:
    form = TaskForm(make(Task))
    fields = form.fields
    assert isinstance(fields["name"], widgets.Text)
    assert isinstance(fields["description"], widgets.Textarea)
    assert isinstance(fields["status"], widgets.Dropdown)
    assert list(fields["priority"].options) == [(p.value, p.value) for p in TaskPriority]
    assert fields["priority"].value == "medium"
    assert isinstance(fields["version"], widgets.IntText)
    assert json.loads(fields["input_data"].value) == {}
    assert fields["output_data"].value == ""
    assert len(fields["id"].value) == 36
    created = datetime.fromisoformat(fields["created_at"].value)
    assert created.tzinfo is not None
    for key in ("id", "version", "created_at", "updated_at"):
        assert fields[key].disabled
    assert not fields["name"].disabled
    assert all(widget.description == key for key, widget in fields.items())
    assert form.save_button.description == "Save"


def test_generic_form_for_any_model() -> None:
    form: ModelForm[Gadget] = ModelForm(InMemoryRepository(Gadget))
    assert isinstance(form.fields["enabled"], widgets.Checkbox)
    assert form.fields["enabled"].value is True
    assert isinstance(form.fields["weight"], widgets.FloatText)
    assert form.fields["weight"].value == 1.5
    assert isinstance(form.fields["count"], widgets.Text)
    assert form.fields["kind"].options == (("a", "a"), ("b", "b"))
    assert json.loads(form.fields["parts"].value) == ["bolt"]
    form.fields["count"].value = "7"
    form.fields["kind"].value = "b"
    form.fields["due"].value = "2026-02-03T04:05:06.123456-05:00"
    assert form.save() == "g-default"
    stored = form.repository.sync.get("g-default")
    assert (stored.count, stored.kind, stored.parts) == (7, "b", ["bolt"])
    assert stored.due == datetime(2026, 2, 3, 9, 5, 6, 123456, tzinfo=UTC)
    form.fields["count"].value = "seven"
    assert form.save() is None
    assert "count" in form.errors


def test_invalid_fields_show_errors_and_nothing_is_stored(make: Make) -> None:
    repo = make(Task)
    form = TaskForm(repo)
    form.fields["name"].value = ""
    form.fields["input_data"].value = '{"query": '
    form.fields["started_at"].value = "2026-05-01T10:00:00"
    form.save_button.click()
    assert set(form.errors) == {"name", "input_data", "started_at"}
    assert "invalid JSON" in form.errors["input_data"]
    assert "line 1" in form.errors["input_data"]
    assert "timezone" in form.errors["started_at"]
    assert form.errors["name"] in form.inputs["name"].error.value
    assert form.inputs["description"].error.value == ""
    assert "Not saved" in form.status.value
    assert repo.sync.count() == 0
    assert form.save() is None


def test_save_stores_the_entity_and_confirms_with_its_id(make: Make) -> None:
    repo = make(Task)
    form = TaskForm(repo)
    form.fields["name"].value = "write report"
    form.fields["priority"].value = "high"
    form.fields["tags"].value = '["a", "b"]'
    form.fields["input_data"].value = '{"query": "why?"}'
    form.fields["started_at"].value = "2026-05-01T10:00:00.250000+02:00"
    task_id = form.save()
    assert task_id is not None and task_id in form.status.value
    assert form.errors == {}
    stored = repo.sync.get(task_id)
    assert stored.name == "write report"
    assert stored.priority is TaskPriority.HIGH
    assert stored.tags == ["a", "b"]
    assert stored.input_data == {"query": "why?"}
    assert stored.started_at == datetime(2026, 5, 1, 8, 0, 0, 250000, tzinfo=UTC)
    assert form.fields["version"].value == 1
    form.fields["name"].value = "write the report"
    assert form.save() == task_id
    assert repo.sync.get(task_id).version == 2


def test_loading_an_entity_fills_every_input(make: Make) -> None:
    repo = make(Task)
    task = Task(
        name="loaded",
        description="long\ntext",
        status=TaskStatus.FAILED,
        priority=TaskPriority.CRITICAL,
        input_data={"q": [1, 2]},
        output_data={"r": None},
        error="boom",
        tags=["t"],
        agent_id="agent-1",
        metadata={"m": True},
        started_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    )
    repo.sync.save(task)
    form = TaskForm(repo, repo.sync.get(task.id))
    expected = {
        "id": task.id,
        "version": 1,
        "name": "loaded",
        "description": "long\ntext",
        "status": "failed",
        "priority": "critical",
        "error": "boom",
        "agent_id": "agent-1",
        "parent_task_id": "",
        "started_at": "2026-01-02T03:04:05.000006+00:00",
        "completed_at": "",
    }
    for key, value in expected.items():
        assert form.fields[key].value == value, key
    assert json.loads(form.fields["input_data"].value) == {"q": [1, 2]}
    assert json.loads(form.fields["output_data"].value) == {"r": None}
    assert json.loads(form.fields["metadata"].value) == {"m": True}
    assert form.fields["updated_at"].value == task.updated_at.isoformat()
    assert task.id in form.title.value


def test_version_conflict_offers_reload(make: Make) -> None:
    repo = make(Task)
    repo.sync.save(Task(id="c1", name="original"))
    form = TaskForm(repo, repo.sync.get("c1"))
    elsewhere = repo.sync.get("c1")
    elsewhere.name = "changed elsewhere"
    repo.sync.save(elsewhere)
    form.fields["name"].value = "my edit"
    assert hidden(form.reload_button)
    assert form.save() is None
    assert "someone else changed" in form.status.value
    assert not hidden(form.reload_button)
    assert repo.sync.get("c1").name == "changed elsewhere"
    form.reload_button.click()
    assert form.fields["name"].value == "changed elsewhere"
    assert form.fields["version"].value == 2
    assert hidden(form.reload_button)
    form.fields["name"].value = "my edit"
    assert form.save() == "c1"
    assert repo.sync.get("c1").name == "my edit"


def test_reset_restores_the_loaded_values(make: Make) -> None:
    repo = make(Task)
    repo.sync.save(Task(id="r1", name="keep me"))
    form = TaskForm(repo, repo.sync.get("r1"))
    form.fields["name"].value = ""
    form.fields["tags"].value = "[oops"
    form.save()
    assert form.errors
    form.reset_button.click()
    assert form.fields["name"].value == "keep me"
    assert json.loads(form.fields["tags"].value) == []
    assert form.errors == {}
    assert form.inputs["tags"].error.value == ""


def test_delete_needs_confirmation(make: Make) -> None:
    repo = make(Task)
    repo.sync.save(Task(id="d1", name="doomed"))
    form = TaskForm(repo, repo.sync.get("d1"))
    assert hidden(form.confirm_box)
    form.delete_button.click()
    assert not hidden(form.confirm_box)
    assert repo.sync.find_by_id("d1") is not None
    form.cancel_delete_button.click()
    assert hidden(form.confirm_box)
    assert repo.sync.find_by_id("d1") is not None
    form.delete_button.click()
    form.confirm_delete_button.click()
    assert repo.sync.find_by_id("d1") is None
    assert "Deleted" in form.status.value
    assert form.entity is None
    assert form.fields["id"].value != "d1"


def test_unexpected_storage_errors_are_shown_not_raised() -> None:
    class Broken(StoreLayer):
        async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
            raise RuntimeError("disk on fire")

    form = TaskForm(Repository(Task, Broken(MemoryStore(Task))))
    form.fields["name"].value = "x"
    form.save_button.click()
    assert "disk on fire" in form.status.value


# --------------------------------------------------------------------------- specialised forms


def test_agent_config_form_previews_instructions_live(make: Make) -> None:
    repo = make(AgentConfig)
    form = AgentConfigForm(repo)
    assert isinstance(form.fields["instruction_template"], widgets.Textarea)
    form.fields["name"].value = "Ada"
    form.fields["role"].value = "tutor"
    form.fields["instruction_template"].value = "I am {name}, a {role}."
    assert "I am Ada, a tutor." in form.preview.value
    form.fields["instruction_template"].value = "Hello {nobody}"
    assert "nobody" in form.preview.value
    assert "#b3261e" in form.preview.value
    form.fields["instruction_template"].value = "Use {model_config}"
    form.fields["model_config"].value = '{"temperature": 0.5}'
    assert "temperature" in form.preview.value
    config_id = form.save()
    assert config_id is not None
    assert repo.sync.get(config_id).llm_config == {"temperature": 0.5}


def test_task_form_runs_the_task_with_a_registered_agent(make: Make) -> None:
    registry = ServiceRegistry()
    tasks, configs = make(Task), make(AgentConfig)
    registry.register_repository("task", tasks)
    registry.register_repository("agent_config", configs)
    configs.sync.save(AgentConfig(id="helper", name="Helper", instruction_template="Be {name}"))
    form = TaskForm(tasks, registry=registry)
    assert form.agent_picker.options == (("Helper (helper)", "helper"),)
    form.fields["name"].value = "ask"
    form.fields["input_data"].value = '{"query": "What is Symphony?"}'
    form.agent_picker.value = "helper"
    form.run_button.click()
    stored = tasks.sync.find_all()
    assert len(stored) == 1
    assert stored[0].status is TaskStatus.COMPLETED
    assert stored[0].agent_id == "helper"
    assert "What is Symphony?" in stored[0].output_data["response"]
    assert "completed" in form.result.value
    assert form.fields["status"].value == "completed"


def test_agent_config_form_refuses_a_template_that_does_not_render(make: Make) -> None:
    repo = make(AgentConfig)
    form = AgentConfigForm(repo)
    form.fields["name"].value = "Ada"
    for template in ("Hello {nobody}", "Hello {name:>99999999999}"):
        form.fields["instruction_template"].value = template
        assert "#b3261e" in form.preview.value
        form.save_button.click()
        assert repo.sync.count() == 0
        assert set(form.errors) == {"instruction_template"}
        assert form.errors["instruction_template"] in html.unescape(form.preview.value)
        assert "instruction_template" in form.status.value
        assert "#b3261e" in form.inputs["instruction_template"].error.value
    form.fields["instruction_template"].value = "Hello, I am {name}"
    config_id = form.save()
    assert config_id is not None and form.errors == {}
    assert repo.sync.get(config_id).render_instructions() == "Hello, I am Ada"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"temperature": NaN}', "NaN is not a JSON number"),
        ('{"temperature": Infinity}', "Infinity is not a JSON number"),
        ('{"limits": [-Infinity]}', "-Infinity is not a JSON number"),
        ('{"temperature": 1e999}', "1e999 is too large"),
    ],
)
def test_json_inputs_refuse_non_finite_numbers(text: str, message: str) -> None:
    repo: InMemoryRepository[AgentConfig] = InMemoryRepository(AgentConfig)
    form = AgentConfigForm(repo)
    form.fields["name"].value = "Ada"
    form.fields["instruction_template"].value = "Hi"
    form.fields["model_config"].value = text
    assert form.save() is None
    assert repo.sync.count() == 0
    assert message in form.errors["model_config"]
    assert message in html.unescape(form.inputs["model_config"].error.value)
    form.fields["model_config"].value = '{"temperature": 0.5}'
    assert form.save() is not None


def test_task_form_run_records_output_that_cannot_be_stored(make: Make) -> None:
    registry = ServiceRegistry()
    tasks, configs = make(Task), make(AgentConfig)
    registry.register_repository("task", tasks)
    registry.register_repository("agent_config", configs)
    registry.llm = lambda messages, settings: "bad\x00reply"
    configs.sync.save(AgentConfig(id="helper", name="Helper", instruction_template="Be {name}"))
    form = TaskForm(tasks, registry=registry)
    form.fields["name"].value = "ask"
    form.agent_picker.value = "helper"
    form.run_button.click()
    [stored] = tasks.sync.find_all()
    assert stored.status is TaskStatus.FAILED
    assert "the output could not be stored" in (stored.error or "")
    assert "failed: the output could not be stored" in html.unescape(form.result.value)
    assert form.fields["status"].value == "failed"


def test_task_form_without_agents_says_so() -> None:
    registry = ServiceRegistry()
    form = TaskForm(InMemoryRepository(Task), registry=registry)
    assert "agent_config" in form.result.value
    form.fields["name"].value = "x"
    assert form.run() is None
    assert "Choose an agent" in form.result.value


# --------------------------------------------------------------------------- explorer


@pytest.fixture
def registry(make: Make) -> ServiceRegistry:
    registry = ServiceRegistry()
    tasks = make(Task)
    registry.register_repository("task", tasks)
    registry.register_repository("agent_config", make(AgentConfig))
    tasks.sync.save_many(
        [
            Task(id=f"t{i:02}", name=f"task {i}", priority="high" if i % 3 else "low")
            for i in range(23)
        ]
    )
    return registry


def test_explorer_pages_and_counts(registry: ServiceRegistry) -> None:
    explorer = RegistryExplorer(registry, page_size=10)
    assert explorer.repository_picker.options == ("agent_config", "task")
    explorer.repository_picker.value = "task"
    assert explorer.page_label.value == "1-10 of 23"
    assert len(explorer.entity_list.options) == 10
    assert "<td>t00</td>" in explorer.table.value
    assert explorer.prev_button.disabled
    explorer.next_button.click()
    explorer.next_button.click()
    assert explorer.page_label.value == "21-23 of 23"
    assert explorer.next_button.disabled
    assert "<td>t22</td>" in explorer.table.value
    explorer.prev_button.click()
    assert explorer.page_label.value == "11-20 of 23"


def test_explorer_filter_and_its_errors(registry: ServiceRegistry) -> None:
    explorer = RegistryExplorer(registry)
    explorer.repository_picker.value = "task"
    explorer.filter_box.value = '{"priority": "low"}'
    assert explorer.page_label.value == "1-8 of 8"
    assert explorer.status.value == ""
    explorer.filter_box.value = '{"priority": '
    assert "not valid JSON" in explorer.status.value
    explorer.filter_box.value = '{"colour": "red"}'
    assert "unknown field" in explorer.status.value
    explorer.filter_box.value = '["a"]'
    assert "JSON object" in explorer.status.value
    explorer.filter_box.value = ""
    assert explorer.page_label.value == "1-10 of 23"


def test_explorer_opens_creates_and_deletes(registry: ServiceRegistry) -> None:
    tasks = registry.get_repository("task")
    explorer = RegistryExplorer(registry)
    explorer.repository_picker.value = "task"
    explorer.entity_list.value = "t01"
    form = explorer.form
    assert isinstance(form, TaskForm)
    assert form.fields["name"].value == "task 1"
    form.fields["name"].value = "renamed"
    form.save_button.click()
    assert tasks.sync.get("t01").name == "renamed"
    assert "renamed" in explorer.table.value
    explorer.new_button.click()
    new_form = explorer.form
    assert new_form is not form and new_form.entity is None
    new_form.fields["name"].value = "brand new"
    new_id = new_form.save()
    assert new_id is not None
    assert explorer.page_label.value.endswith("of 24")
    new_form.delete_button.click()
    new_form.confirm_delete_button.click()
    assert tasks.sync.find_by_id(new_id) is None
    assert explorer.page_label.value.endswith("of 23")
    explorer.repository_picker.value = "agent_config"
    explorer.new_button.click()
    assert isinstance(explorer.form, AgentConfigForm)


def test_explorer_refresh_sees_new_repositories_and_default_registry() -> None:
    global_registry = ServiceRegistry.get_instance()
    explorer = RegistryExplorer()
    assert explorer.registry is global_registry
    assert explorer.page_label.value == "no repository registered"
    global_registry.register_repository("task", InMemoryRepository(Task))
    explorer.refresh_button.click()
    assert explorer.repository_picker.value == "task"
    assert explorer.page_label.value == "0 of 0"
    assert isinstance(global_registry.explore(), RegistryExplorer)


def test_closing_releases_every_inner_widget(registry: ServiceRegistry) -> None:
    explorer = RegistryExplorer(registry)
    explorer.repository_picker.value = "task"
    explorer.entity_list.value = "t01"
    first = explorer.form
    assert first is not None
    explorer.new_button.click()
    assert first.fields["name"].comm is None
    assert first.save_button.comm is None
    current = explorer.form
    assert current is not None and current.fields["name"].comm is not None
    explorer.close()
    assert current.fields["name"].comm is None
    assert explorer.entity_list.comm is None


# ---------------------------------------------------------------------- the queue view


def test_queue_view_shows_states_workers_and_goes_live() -> None:
    import time

    from symphony_nb import TaskManager
    from symphony_nb.widgets import QueueView

    manager = TaskManager(InMemoryRepository(Task))
    for n in range(3):
        manager.sync.create_task(f"t{n}")
    manager.sync.create_task("r", status="running", worker="<b>w1</b>")
    view = QueueView(manager, interval=0.05)
    try:
        assert "<td>3</td><td>1</td><td>0</td>" in view.counts.value
        assert "&lt;b&gt;w1&lt;/b&gt;" in view.workers.value and "<b>w1" not in view.workers.value
        assert view.progress.value == 0 and view.progress.description == "0/4"
        view.start()
        assert view.live and view.live_button.value
        agent = Agent(AgentConfig(name="a", instruction_template="x"))
        for task in manager.repository.sync.find_all({"status": "pending"}):
            manager.sync.execute_task(task.id, agent)
        deadline = time.monotonic() + 10
        while view.last is None or view.last.completed < 3:
            assert time.monotonic() < deadline, view.counts.value
            time.sleep(0.02)
        view.live_button.value = False  # the toggle stops it too
        assert not view.live
        assert view.progress.description == "3/4" and "tasks/s" in view.rate.value
    finally:
        view.close()
    assert not view.live


def test_queue_view_reports_errors_and_refuses_a_bad_interval() -> None:
    from symphony_nb import StorageError, TaskManager
    from symphony_nb.widgets import QueueView

    class Down(StoreLayer):
        async def count(self, conditions: Any) -> Any:
            raise StorageError("database unreachable")

    with pytest.raises(ValueError, match="interval must be a number of seconds > 0"):
        QueueView(TaskManager(InMemoryRepository(Task)), interval=0)
    view = QueueView(Repository(Task, Down(MemoryStore(Task))))
    try:
        assert "database unreachable" in view.status.value and view.last is None
    finally:
        view.close()


def test_the_explorer_opens_a_live_queue_for_tasks_only() -> None:
    registry = ServiceRegistry()
    registry.register_repository("task", InMemoryRepository(Task))
    registry.register_repository("agent_config", InMemoryRepository(AgentConfig))
    registry.get_repository("task").sync.save(Task(name="t"))
    explorer = RegistryExplorer(registry)
    try:
        explorer.repository_picker.value = "task"
        assert not hidden(explorer.queue_button)
        explorer.queue_button.click()
        assert explorer.queue is not None and explorer.queue.live
        assert explorer.form_box.children == (explorer.queue,)
        assert "<td>1</td>" in explorer.queue.counts.value
        queue = explorer.queue
        explorer.repository_picker.value = "agent_config"  # switching closes it
        assert not queue.live and explorer.queue is None and hidden(explorer.queue_button)
    finally:
        explorer.close()
