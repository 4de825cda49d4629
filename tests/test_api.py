"""The public API is curated: pinned, sorted and importable."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import symphony_nb


def test_all_is_sorted_and_importable() -> None:
    assert symphony_nb.__all__ == sorted(symphony_nb.__all__)
    for name in symphony_nb.__all__:
        assert hasattr(symphony_nb, name), name


def test_issue_names_exported() -> None:
    required = {
        "Repository",
        "InMemoryRepository",
        "FileSystemRepository",
        "Task",
        "TaskStatus",
        "TaskPriority",
        "AgentConfig",
        "Agent",
        "AgentFactory",
        "TaskManager",
        "ServiceRegistry",
        "SymphonyError",
        "InvalidIdError",
        "FilterError",
        "ConflictError",
        "CorruptEntityError",
        "NotFoundError",
    }
    assert required <= set(symphony_nb.__all__)


def test_errors_form_one_tree() -> None:
    errors = [getattr(symphony_nb, n) for n in symphony_nb.__all__ if n.endswith("Error")]
    for error in errors:
        assert issubclass(error, symphony_nb.SymphonyError), error
    assert issubclass(symphony_nb.InvalidIdError, ValueError)
    assert issubclass(symphony_nb.NotFoundError, LookupError)
    assert issubclass(symphony_nb.StorageError, OSError)


def test_public_callables_have_docstrings() -> None:
    for name in symphony_nb.__all__:
        obj = getattr(symphony_nb, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(member):
                    assert inspect.getdoc(member), f"{name}.{attr}"


# ---------------------------------------------------------------- storage URLs


def test_unknown_scheme_lists_every_scheme_and_masks_the_password() -> None:
    from symphony_nb import InvalidUrlError, Task, open_repository

    with pytest.raises(InvalidUrlError) as info:
        open_repository(Task, "mongodb://user:Zq9xWk7v@host/db")
    message = str(info.value)
    assert "Zq9xWk7v" not in message
    assert "['file', 'memory', 'postgres', 'postgresql', 'sqlite']" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, symphony_nb.StorageError)


@pytest.mark.parametrize(
    "url", ["memory:", "sqlite:data.db", "postgresql:host/db", "file:data", "   ", ""]
)
def test_malformed_urls_are_refused_instead_of_becoming_folders(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from symphony_nb import InvalidUrlError, ServiceRegistry

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidUrlError, match="malformed|must not be empty"):
        ServiceRegistry.get_instance().configure(url)
    assert list(tmp_path.iterdir()) == []


def test_a_known_scheme_missing_its_slashes_gets_a_hint() -> None:
    from symphony_nb import InvalidUrlError, Task, open_repository

    with pytest.raises(InvalidUrlError, match=r"did you mean memory://"):
        open_repository(Task, "memory:")


def test_blank_environment_url_means_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from symphony_nb import ServiceRegistry, SQLiteRepository

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYMPHONY_NB_URL", "   ")
    repo = ServiceRegistry.get_instance().configure().get_repository("task")
    assert isinstance(repo, SQLiteRepository)
    assert repo.path == str(tmp_path / "symphony_data" / "symphony.db")
    monkeypatch.setenv("SYMPHONY_NB_URL", f"  file://{tmp_path / 'env'}\n")
    repo = ServiceRegistry.get_instance().configure().get_repository("task")
    assert repo.path == tmp_path / "env" / "task"  # type: ignore[attr-defined]


def test_home_is_expanded_and_paths_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from symphony_nb import (
        FileSystemRepository,
        ServiceRegistry,
        SQLiteRepository,
        Task,
        open_repository,
    )

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    registry = ServiceRegistry.get_instance()
    for url in ("~/data", " ~/data ", "file://~/data", tmp_path / "home" / "data"):
        repo = registry.configure(url).get_repository("task")
        assert isinstance(repo, FileSystemRepository)
        assert repo.path == tmp_path / "home" / "data" / "task", url
    assert open_repository(Task, tmp_path / "p").path == tmp_path / "p" / "task"  # type: ignore[attr-defined]
    sqlite = open_repository(Task, "sqlite:///~/s.db")
    assert isinstance(sqlite, SQLiteRepository)
    assert sqlite.path == str(tmp_path / "home" / "s.db")
    assert not (tmp_path / "~").exists()
