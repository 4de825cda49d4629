"""symphony_nb/_sync_faces.py is what scripts/generate-sync makes from the async classes today."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from symphony_nb import Agent, AgentConfig, AgentFactory, InMemoryRepository, Task, TaskManager
from symphony_nb._sync import SyncFacade, syncify

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "symphony_nb" / "_sync_faces.py"


def test_the_checked_in_module_is_up_to_date(tmp_path: Path) -> None:
    fresh = tmp_path / "_sync_faces.py"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate-sync"), "--output", str(fresh)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert fresh.read_text() == GENERATED.read_text(), (
        "symphony_nb/_sync_faces.py is stale: regenerate it with `python scripts/generate-sync`"
    )


def faced() -> list[object]:
    repo = InMemoryRepository(Task)
    agent = Agent(AgentConfig(name="a", instruction_template="b"))
    return [repo, TaskManager(repo), AgentFactory(), agent]


@pytest.mark.parametrize("target", faced(), ids=lambda target: type(target).__name__)
def test_each_coroutine_method_has_the_signature_the_runtime_facade_gives_it(target: Any) -> None:
    face = target.sync
    assert type(face) is not SyncFacade
    names = [
        name
        for name, member in inspect.getmembers(type(target))
        if not name.startswith("_")
        and (inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member))
    ]
    assert names
    for name in names:
        typed = getattr(type(face), name)  # defined on the class, not reached by __getattr__
        untyped = syncify(getattr(target, name))
        assert inspect.signature(getattr(face, name)) == inspect.signature(untyped), name
        assert typed.__doc__ == untyped.__doc__, name
