"""symphony_nb: notebook-friendly persistence for AI-agent systems.

Async repositories over pydantic models (memory, files, SQLite, PostgreSQL), the Task and
AgentConfig models, the services that use them, and sync facades for notebook cells::

    from symphony_nb import InMemoryRepository, Task
    repo = InMemoryRepository(Task)
    task_id = await repo.save(Task(name="hello"))       # or repo.sync.save(...)
"""

from typing import TYPE_CHECKING, Any

from ._cache import Cache, CacheStats
from ._copy import copy_repository
from ._diff import Diff, FieldChange, diff
from ._errors import (
    ConflictError,
    CorruptEntityError,
    CorruptEntityWarning,
    DecryptionError,
    EncryptionError,
    FilterError,
    HistoryError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidUrlError,
    KeyringError,
    LanguageModelError,
    NotFoundError,
    RowValidationError,
    SchemaError,
    SchemaVersionError,
    StorageError,
    SymphonyError,
    SyncUsageError,
    TaskStateError,
    TemplateError,
    UnstorableEntityError,
)
from ._history import Revision, change_context
from ._keyring import Keyring
from ._models import AgentConfig, Task, TaskPriority, TaskStatus
from ._repository import Repository
from ._schema import MigrationReport, upgrader
from ._storage import open_repository
from ._sync import get_sync_mode, set_sync_mode
from .backends.filesystem import FileSystemRepository
from .backends.memory import InMemoryRepository
from .backends.postgres import PostgresRepository
from .backends.sqlite import SQLiteRepository
from .services._queue import QueueStatus
from .services._worker import WorkReport
from .services.agent import Agent, AgentFactory, LanguageModel, offline_model
from .services.registry import ServiceRegistry
from .services.tasks import TaskManager

__version__ = "0.1.0"

_LAZY = {"to_dataframe": "symphony_nb.dataframes", "from_dataframe": "symphony_nb.dataframes"}
"""Names whose module needs the notebook extras (pandas): imported on first use."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'symphony_nb' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .dataframes import from_dataframe, to_dataframe

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentFactory",
    "Cache",
    "CacheStats",
    "ConflictError",
    "CorruptEntityError",
    "CorruptEntityWarning",
    "DecryptionError",
    "Diff",
    "EncryptionError",
    "FieldChange",
    "FileSystemRepository",
    "FilterError",
    "HistoryError",
    "InMemoryRepository",
    "InvalidArgumentError",
    "InvalidIdError",
    "InvalidUrlError",
    "Keyring",
    "KeyringError",
    "LanguageModel",
    "LanguageModelError",
    "MigrationReport",
    "NotFoundError",
    "PostgresRepository",
    "QueueStatus",
    "Repository",
    "Revision",
    "RowValidationError",
    "SQLiteRepository",
    "SchemaError",
    "SchemaVersionError",
    "ServiceRegistry",
    "StorageError",
    "SymphonyError",
    "SyncUsageError",
    "Task",
    "TaskManager",
    "TaskPriority",
    "TaskStateError",
    "TaskStatus",
    "TemplateError",
    "UnstorableEntityError",
    "WorkReport",
    "change_context",
    "copy_repository",
    "diff",
    "from_dataframe",
    "get_sync_mode",
    "offline_model",
    "open_repository",
    "set_sync_mode",
    "to_dataframe",
    "upgrader",
]
