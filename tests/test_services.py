from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from symphony_nb import (
    Agent,
    AgentConfig,
    AgentFactory,
    FileSystemRepository,
    InMemoryRepository,
    NotFoundError,
    Repository,
    ServiceRegistry,
    SymphonyError,
    Task,
    TaskManager,
    TaskStatus,
    offline_model,
)


@pytest.fixture
async def configs() -> Repository[AgentConfig]:
    return InMemoryRepository(AgentConfig)


@pytest.fixture
async def config_id(configs: Repository[AgentConfig]) -> str:
    return await configs.save(
        AgentConfig(
            name="Ada",
            role="Analyst",
            instruction_template="You are {name}, a {role}.",
            model_config={"temperature": 0},
        )
    )


# ---------------------------------------------------------------- agents


async def test_factory_creates_agent(configs: Repository[AgentConfig], config_id: str) -> None:
    agent = await AgentFactory(configs).create_agent(config_id)
    assert agent.instructions == "You are Ada, a Analyst."
    out = await agent.run({"query": "hi"})
    assert out["agent"] == "Ada" and "You asked: hi" in out["response"]
    assert out == await agent.run({"query": "hi"})  # deterministic offline model


async def test_factory_overrides_and_llm(configs: Repository[AgentConfig], config_id: str) -> None:
    seen: list[Any] = []

    async def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        seen.append((messages, dict(settings)))
        return "real answer"

    agent = await AgentFactory(configs).create_agent(
        config_id, llm=llm, name="Bob", model_config={"t": 1}
    )
    assert agent.instructions == "You are Bob, a Analyst."
    assert (await agent.run({"query": "q"}))["response"] == "real answer"
    assert seen[0][1] == {"t": 1}
    assert seen[0][0][0] == {"role": "system", "content": "You are Bob, a Analyst."}
    stored = await configs.find_by_id(config_id)
    assert stored.name == "Ada"  # overrides are not persisted


async def test_factory_errors(configs: Repository[AgentConfig], config_id: str) -> None:
    with pytest.raises(NotFoundError, match="no AgentConfig with id 'nope'"):
        await AgentFactory(configs).create_agent("nope")
    with pytest.raises(SymphonyError, match="no repository"):
        await AgentFactory().create_agent(config_id)
    with pytest.raises(SymphonyError, match=r"unknown AgentConfig field\(s\) \['colour'\]"):
        await AgentFactory(configs).create_agent(config_id, colour="red")
    with pytest.raises(SymphonyError, match="invalid override"):
        await AgentFactory(configs).create_agent(config_id, name="")


async def test_llm_must_return_text(configs: Repository[AgentConfig], config_id: str) -> None:
    agent = await AgentFactory(configs).create_agent(config_id, llm=lambda m, s: 42)  # type: ignore[arg-type,return-value]
    with pytest.raises(SymphonyError, match="returned int"):
        await agent.run({})


# ---------------------------------------------------------------- task manager


async def make_agent(llm: Any = offline_model) -> Agent:
    return Agent(AgentConfig(name="A", instruction_template="x"), llm)


async def test_execute_task_success_persists_each_step() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    manager = TaskManager(repo)
    statuses: list[TaskStatus] = []

    async def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        statuses.append((await repo.get(task.id)).status)
        return "done"

    task = await manager.create_task("t", input_data={"query": "q"})
    result = await manager.execute_task(task.id, await make_agent(llm))
    assert statuses == [TaskStatus.RUNNING]
    assert result.status is TaskStatus.COMPLETED and result.output_data["response"] == "done"
    assert result.started_at is not None and result.completed_at >= result.started_at
    assert await repo.find_by_id(task.id) == result


async def test_execute_task_failure_is_recorded() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    manager = TaskManager(repo)

    def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        raise RuntimeError("model down")

    task = await manager.create_task("t")
    result = await manager.execute_task(task.id, await make_agent(llm))
    assert result.status is TaskStatus.FAILED and result.error == "RuntimeError: model down"
    assert (await repo.get(task.id)).status is TaskStatus.FAILED


async def test_cancelled_execution_ends_cancelled_not_running() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    manager = TaskManager(repo)
    started = asyncio.Event()

    async def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    task = await manager.create_task("t")
    running = asyncio.create_task(manager.execute_task(task.id, await make_agent(llm)))
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    stored = await repo.get(task.id)
    assert stored.status is TaskStatus.CANCELLED and stored.completed_at is not None


async def test_rerun_requires_consent_and_unknown_task() -> None:
    manager = TaskManager(InMemoryRepository(Task))
    agent = await make_agent()
    task = await manager.create_task("t")
    await manager.execute_task(task.id, agent)
    with pytest.raises(SymphonyError, match="rerun=True"):
        await manager.execute_task(task.id, agent)
    again = await manager.execute_task(task.id, agent, rerun=True)
    assert again.status is TaskStatus.COMPLETED
    with pytest.raises(NotFoundError, match="no Task with id 'ghost'"):
        await manager.execute_task("ghost", agent)


async def test_create_task_validates() -> None:
    manager = TaskManager(InMemoryRepository(Task))
    with pytest.raises(ValueError, match="name"):
        await manager.create_task("  ")
    assert await manager.repository.count() == 0


async def test_run_pending_bounded_concurrency() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    manager = TaskManager(repo)
    active = 0
    peak = 0

    async def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return "ok"

    for n in range(10):
        await manager.create_task(f"t{n}", priority="high" if n == 7 else "low")
    done_task = await manager.create_task("done", status="completed")
    results = await manager.run_pending(await make_agent(llm), concurrency=3, progress=False)
    assert len(results) == 10 and results[0].name == "t7"
    assert all(t.status is TaskStatus.COMPLETED for t in results)
    assert peak == 3
    assert (await repo.get(done_task.id)).output_data is None


# ---------------------------------------------------------------- registry


def test_registry_singleton_thread_safe() -> None:
    ServiceRegistry._instance = None
    seen: list[ServiceRegistry] = []
    threads = [
        threading.Thread(target=lambda: seen.append(ServiceRegistry.get_instance()))
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(r) for r in seen}) == 1


def test_registry_missing_name_lists_registered() -> None:
    registry = ServiceRegistry.get_instance()
    registry.register_repository("task", InMemoryRepository(Task))
    with pytest.raises(
        NotFoundError, match=r"no repository registered as 'agent_config'; registered: \['task'\]"
    ):
        registry.get_agent_factory()


def test_registry_services_never_stale() -> None:
    registry = ServiceRegistry.get_instance()
    first: InMemoryRepository[Task] = InMemoryRepository(Task)
    registry.register_repository("task", first)
    assert registry.get_task_manager().repository is first
    second: InMemoryRepository[Task] = InMemoryRepository(Task)
    registry.register_repository("task", second)
    assert registry.get_task_manager().repository is second
    registry.reset()
    assert registry.repositories == {}


def test_registry_configure(tmp_path: Path) -> None:
    registry = ServiceRegistry.get_instance()
    registry.configure("memory://")
    assert isinstance(registry.get_repository("task"), InMemoryRepository)
    registry.configure(f"file://{tmp_path}")
    repo = registry.get_repository("agent_config")
    assert isinstance(repo, FileSystemRepository) and repo.model is AgentConfig
    registry.configure(str(tmp_path / "plain"))
    assert registry.get_repository("task").path == tmp_path / "plain" / "task"  # type: ignore[attr-defined]
    with pytest.raises(SymphonyError, match="unknown storage URL scheme 'mongodb'"):
        registry.configure("mongodb://user:secret@host/db")
    try:
        registry.configure("mongodb://user:secret@host/db")
    except SymphonyError as exc:
        assert "secret" not in str(exc)


def test_registry_rejects_non_repositories() -> None:
    with pytest.raises(TypeError, match="expected a Repository"):
        ServiceRegistry.get_instance().register_repository("x", object())  # type: ignore[arg-type]
