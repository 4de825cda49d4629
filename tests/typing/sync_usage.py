"""Checked by mypy and basedpyright in tests/test_typing.py: ``.sync`` keeps the real types.

Each wrong use is marked ignore, and both checkers must find the ignore needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, assert_type

import pandas as pd

from symphony_nb import (
    Agent,
    AgentConfig,
    AgentFactory,
    InMemoryRepository,
    Repository,
    Task,
    TaskManager,
    WorkReport,
)


def repositories(repo: Repository[Task], df: pd.DataFrame) -> None:
    assert_type(repo.sync.save(Task(name="ok"), timeout=5), str)
    assert_type(repo.sync.save_many([Task(name="a"), Task(name="b")]), list[str])
    assert_type(repo.sync.find_by_id("x"), Task | None)
    assert_type(repo.sync.get("x"), Task)
    assert_type(repo.sync.find_all(), list[Task])
    assert_type(
        repo.sync.find_all({"status": "pending"}, order_by="-priority", limit=5, timeout=2.5),
        list[Task],
    )
    assert_type(repo.sync.iter_all(batch_size=10), Iterator[Task])
    assert_type(repo.sync.count(), int)
    assert_type(repo.sync.count({"status": "pending"}, timeout=None), int)
    assert_type(repo.sync.update(Task(name="x")), bool)
    assert_type(repo.sync.delete("x"), bool)
    assert_type(repo.sync.to_dataframe(columns=["name"]), pd.DataFrame)
    assert_type(repo.sync.save_dataframe(df), list[str])
    assert_type(repo.sync.close(), None)
    for task in repo.sync.iter_all():
        assert_type(task, Task)

    configs = InMemoryRepository(AgentConfig)
    assert_type(configs.sync.find_all(), list[AgentConfig])
    assert_type(configs.sync.find_by_id("x"), AgentConfig | None)

    repo.sync.save("not a task")  # type: ignore[arg-type]
    repo.sync.save(AgentConfig(name="a", instruction_template="b"))  # type: ignore[arg-type]
    repo.sync.find_all(limt=5)  # type: ignore[call-arg]
    repo.sync.find_all({}, "-priority")  # type: ignore[call-arg]
    repo.sync.count(timeout="soon")  # type: ignore[arg-type]
    repo.sync.find_by_id()  # type: ignore[call-arg]
    wrong: list[int] = repo.sync.find_all()  # type: ignore[assignment]
    print(wrong, repo.sync.get("x").nme)  # type: ignore[attr-defined]


def services(manager: TaskManager, factory: AgentFactory, agent: Agent, task: Task) -> None:
    assert_type(manager.sync.create_task("t", input_data={"query": "hi"}), Task)
    assert_type(manager.sync.get_task("t"), Task)
    assert_type(manager.sync.execute_task("t", agent, rerun=True, timeout=60), Task)
    assert_type(manager.sync.run_pending(agent, concurrency=2, progress=False), list[Task])
    assert_type(manager.sync.work(agent, lease=10.0, stop_when_idle=True), WorkReport)
    assert_type(manager.sync.cancel("t", wait=False), Task)
    assert_type(manager.sync.queue_status().running_by_worker, dict[str, int])
    assert_type(factory.sync.create_agent("c", temperature=0.2), Agent)
    assert_type(agent.sync.run({"query": "hi"}), dict[str, Any])
    assert_type(agent.sync.execute(task), dict[str, Any])

    manager.sync.create_task(name=3)  # type: ignore[arg-type]
    manager.sync.create_task("t", timeout="soon")  # type: ignore[arg-type]
    manager.sync.execute_task("t", "not an agent")  # type: ignore[arg-type]
    manager.sync.execute_task("t", agent, True)  # type: ignore[call-arg]
    manager.sync.run_pending(agent, concurency=2)  # type: ignore[call-arg]
    manager.sync.work(agent, lease="30s")  # type: ignore[arg-type]
    factory.sync.create_agent(42)  # type: ignore[arg-type]
    factory.sync.create_agent("c", llm="gpt")  # type: ignore[arg-type]
    agent.sync.run()  # type: ignore[call-arg]
    agent.sync.execute({"query": "hi"})  # type: ignore[arg-type]
