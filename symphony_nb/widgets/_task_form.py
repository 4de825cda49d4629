""":class:`TaskForm`: a :class:`ModelForm` that can also run the task with a stored agent."""

from __future__ import annotations

import html
import json

import ipywidgets as widgets
from pydantic_core import to_jsonable_python

from .._errors import NotFoundError, SymphonyError
from .._models import AgentConfig, Task
from .._repository import Repository
from ..services.registry import ServiceRegistry
from ..services.tasks import TaskManager
from ._form import ModelForm
from ._util import guarded, show


class TaskForm(ModelForm[Task]):
    """Edit a :class:`Task`, and run it with an agent chosen from the registry's configs.

    ``form.agent_picker`` lists the configs of the registry's ``"agent_config"`` repository;
    Run (``form.run()``) saves the form, executes the task through a :class:`TaskManager` on
    this form's repository and shows the stored result in ``form.result``.
    """

    def __init__(
        self,
        repository: Repository[Task],
        entity: Task | None = None,
        *,
        registry: ServiceRegistry | None = None,
    ) -> None:
        self.registry = registry or ServiceRegistry.get_instance()
        self.agent_picker = widgets.Dropdown(description="agent", options=[])
        self.run_button = widgets.Button(description="Run", icon="play")
        self.refresh_agents_button = widgets.Button(description="Refresh agents", icon="refresh")
        self.result = widgets.HTML()
        super().__init__(repository, entity)
        self.run_button.on_click(guarded(self.run, self.result))
        self.refresh_agents_button.on_click(guarded(self.refresh_agents, self.result))
        self.refresh_agents()

    def _extra_widgets(self) -> list[widgets.Widget]:
        run_row = widgets.HBox([self.agent_picker, self.run_button, self.refresh_agents_button])
        return [run_row, self.result]

    def refresh_agents(self) -> None:
        """Reload the agent choices from the registry."""
        try:
            configs = self.registry.get_repository("agent_config")
        except NotFoundError:
            self.agent_picker.options = []
            show(self.result, "info", "Register an 'agent_config' repository to run tasks")
            return
        found: list[AgentConfig] = configs.sync.find_all(order_by="name")
        self.agent_picker.options = [(f"{c.name} ({c.id})", c.id) for c in found]

    def run(self) -> Task | None:
        """Save the task, run it with the chosen agent, show and return the stored result."""
        agent_id = self.agent_picker.value
        if agent_id is None:
            show(self.result, "error", "Choose an agent first (or register agent configs)")
            return None
        task_id = self.save()
        if task_id is None:
            show(self.result, "error", "Fix the task before running it")
            return None
        try:
            agent = self.registry.get_agent_factory().sync.create_agent(agent_id)
            task: Task = TaskManager(self.repository).sync.execute_task(task_id, agent, rerun=True)
        except (SymphonyError, OSError, TimeoutError) as exc:
            show(self.result, "error", f"Not run: {exc}")
            return None
        self.load(task)
        self._show_result(task)
        self._notify()
        return task

    def _show_result(self, task: Task) -> None:
        if task.error is not None:
            show(self.result, "error", f"{task.status.value}: {task.error}")
            return
        output = json.dumps(to_jsonable_python(task.output_data), indent=2)
        self.result.value = (
            f"<b>{html.escape(task.status.value)}</b>"
            f'<pre style="white-space:pre-wrap;margin:0">{html.escape(output)}</pre>'
        )
