"""ipywidgets faces: forms for any model, and an explorer of the registry's repositories.

::

    from symphony_nb.widgets import AgentConfigForm, TaskForm, RegistryExplorer
    AgentConfigForm(registry.get_repository("agent_config"))      # a new config
    TaskForm(task_repo, task_repo.sync.get(task_id))                # edit and run a task
    RegistryExplorer()                                              # browse everything
    QueueView(task_manager).start()                                 # the queue, live
    HistoryPanel(repo, entity_id)                                   # revisions, diff, revert

The forms call repositories through their sync facades, since widget callbacks are sync.
"""

from ._agent_form import AgentConfigForm
from ._explorer import RegistryExplorer
from ._form import ModelForm
from ._history import HistoryPanel
from ._queue import QueueView
from ._task_form import TaskForm

__all__ = [
    "AgentConfigForm",
    "HistoryPanel",
    "ModelForm",
    "QueueView",
    "RegistryExplorer",
    "TaskForm",
]
