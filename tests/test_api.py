"""The public API is curated: pinned, sorted and importable."""

from __future__ import annotations

import inspect

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
