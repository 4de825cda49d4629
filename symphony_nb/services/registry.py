"""The :class:`ServiceRegistry`: one place to find repositories and the services built on them."""

from __future__ import annotations

import os
import threading
from typing import Any, ClassVar

from .._cache import Cache
from .._errors import NotFoundError
from .._keyring import Keyring
from .._models import AgentConfig, Task
from .._repository import Repository
from .._storage import default_url, open_repository
from .agent import AgentFactory, LanguageModel
from .tasks import TaskManager


class ServiceRegistry:
    """Repositories by name, and the services that use them.

    ``get_instance()`` returns the process-wide registry (thread-safe). Services are built
    from whatever is registered at the moment you ask, so they never hold a stale repository.
    """

    _instance: ClassVar[ServiceRegistry | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._repositories: dict[str, Repository[Any]] = {}
        self.llm: LanguageModel | None = None

    @classmethod
    def get_instance(cls) -> ServiceRegistry:
        """The process-wide registry, created on first use."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def register_repository(self, name: str, repository: Repository[Any]) -> None:
        """Register ``repository`` under ``name``, replacing any earlier one."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a repository name must be a non-empty string, got {name!r}")
        if not isinstance(repository, Repository):
            raise TypeError(f"expected a Repository, got {type(repository).__name__}")
        with self._lock:
            self._repositories[name] = repository

    def get_repository(self, name: str) -> Repository[Any]:
        """The repository registered as ``name``; :class:`NotFoundError` lists the others."""
        with self._lock:
            repository = self._repositories.get(name)
            names = sorted(self._repositories)
        if repository is None:
            raise NotFoundError(
                f"no repository registered as {name!r}; registered: {names or 'none'} "
                "(use register_repository or configure)"
            )
        return repository

    @property
    def repositories(self) -> dict[str, Repository[Any]]:
        """A snapshot of the registered repositories by name."""
        with self._lock:
            return dict(self._repositories)

    def get_task_manager(self) -> TaskManager:
        """A :class:`TaskManager` over the repository registered as ``"task"``."""
        return TaskManager(self.get_repository("task"))

    def get_agent_factory(self) -> AgentFactory:
        """An :class:`AgentFactory` over the repository registered as ``"agent_config"``."""
        return AgentFactory(self.get_repository("agent_config"), llm=self.llm)

    def configure(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        keyring: Keyring | None = None,
        cache: bool | Cache | None = None,
        history: bool | int | None = None,
    ) -> ServiceRegistry:
        """Register the ``"task"`` and ``"agent_config"`` repositories from one storage URL.

        ``url`` is ``memory://``, a folder (``file:///path``, a plain path or an
        ``os.PathLike``; ``~`` is expanded), ``sqlite:///path.db`` or ``postgresql://...``;
        without it, ``$SYMPHONY_NB_URL`` (if not blank) or the embedded default is used.
        A malformed URL such as ``memory:`` raises :class:`InvalidUrlError`. ``keyring``
        encrypts secret fields such as ``AgentConfig.secrets`` (default:
        ``$SYMPHONY_NB_KEYS`` when set); ``cache`` turns on the read cache of both (``True``
        or a :class:`~symphony_nb.Cache`); ``history`` keeps every change of both as revisions
        (``True``, or ``N``: the last N of each entity). Returns self.
        """
        target = default_url() if url is None else url
        tasks = open_repository(Task, target, keyring=keyring, cache=cache, history=history)
        configs = open_repository(
            AgentConfig, target, keyring=keyring, cache=cache, history=history
        )
        with self._lock:
            self._repositories["task"] = tasks
            self._repositories["agent_config"] = configs
        return self

    def reset(self) -> None:
        """Forget every registered repository (handy when re-running notebook cells)."""
        with self._lock:
            self._repositories.clear()
        self.llm = None

    def explore(self) -> Any:
        """Display a :class:`~symphony_nb.widgets.RegistryExplorer` of this registry."""
        from ..widgets import RegistryExplorer  # type: ignore[import-not-found, unused-ignore]

        explorer = RegistryExplorer(self)
        try:
            from IPython.display import display
        except ImportError:
            return explorer
        display(explorer)  # type: ignore[no-untyped-call, unused-ignore]
        return explorer

    def __repr__(self) -> str:
        return f"ServiceRegistry({sorted(self.repositories)})"

    def _repr_html_(self) -> str:
        """The registered repositories and their counts as HTML, for notebooks."""
        from .._display import registry_html

        return registry_html(self)
