from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
import time
from collections.abc import Mapping, Sequence
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
    StorageError,
    SymphonyError,
    Task,
    TaskManager,
    TaskStatus,
    offline_model,
)
from symphony_nb.backends.memory import MemoryStore
from symphony_nb.stores import Record, StoreLayer


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


async def test_output_that_cannot_be_stored_fails_the_task(repo: Repository[Task]) -> None:
    manager = TaskManager(repo)
    task = await manager.create_task("t", input_data={"query": "q"})
    result = await manager.execute_task(task.id, await make_agent(lambda m, s: "bad\x00text"))
    assert result.status is TaskStatus.FAILED and result.output_data is None
    assert result.error is not None
    assert result.error.startswith("the output could not be stored: UnstorableEntityError")
    assert "NUL character" in result.error
    assert await repo.get(task.id) == result


class Returns(Agent):
    """An agent whose ``execute`` returns ``output`` as it is."""

    def __init__(self, output: Any) -> None:
        super().__init__(AgentConfig(name="R", instruction_template="x"))
        self.output = output

    async def execute(self, task: Task) -> Any:
        return self.output


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("plain text", "UnstorableEntityError: the agent returned str, not a dict"),
        (["a", "b"], "UnstorableEntityError: the agent returned list, not a dict"),
        ({1: "a"}, "ValidationError"),
        ({"when": object()}, "UnstorableEntityError: cannot serialise Task"),
        ({"text": "nul \x00"}, "UnstorableEntityError"),
    ],
)
async def test_agent_output_that_is_not_storable_fails_the_task(output: Any, reason: str) -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    manager = TaskManager(repo)
    task = await manager.create_task("t")
    result = await manager.execute_task(task.id, Returns(output))
    assert result.status is TaskStatus.FAILED and result.completed_at is not None
    assert result.error is not None
    assert result.error.startswith(f"the output could not be stored: {reason}")
    assert await repo.get(task.id) == result


async def test_agent_error_with_nul_text_is_still_recorded() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    manager = TaskManager(repo)

    def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        raise RuntimeError("echo: bad\x00")

    task = await manager.create_task("t")
    result = await manager.execute_task(task.id, await make_agent(llm))
    assert result.status is TaskStatus.FAILED
    assert result.error == "RuntimeError: echo: bad\\x00"
    assert (await repo.get(task.id)).status is TaskStatus.FAILED


async def test_rerun_clears_the_previous_output() -> None:
    manager = TaskManager(InMemoryRepository(Task))
    task = await manager.create_task("t")
    assert (await manager.execute_task(task.id, await make_agent())).output_data is not None
    again = await manager.execute_task(task.id, Returns("not a dict"), rerun=True)
    assert again.status is TaskStatus.FAILED and again.output_data is None


async def test_run_pending_records_each_failure_and_finishes_the_batch() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    manager = TaskManager(repo)
    calls: list[str] = []

    async def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        query = messages[-1]["content"]
        calls.append(query)
        await asyncio.sleep(0.01)
        if query == "raise":
            raise RuntimeError("model down")
        return "bad\x00" if query == "nul" else "ok"

    queries = ["nul", "ok", "raise", "ok", "ok", "ok"]
    for n, query in enumerate(queries):
        await manager.create_task(f"t{n}", input_data={"query": query})
    results = await manager.run_pending(await make_agent(llm), concurrency=2, progress=False)
    assert sorted(calls) == sorted(queries)
    by_query = {t.input_data["query"]: t for t in results}
    assert by_query["nul"].status is TaskStatus.FAILED
    assert "could not be stored" in (by_query["nul"].error or "")
    assert by_query["raise"].error == "RuntimeError: model down"
    assert [t.status for t in results].count(TaskStatus.COMPLETED) == 4
    assert await repo.count({"status": "running"}) == 0


_ENDS = ("completed", "failed", "cancelled")


class FailsToRecord(StoreLayer):
    """Fails every write that would record the end of task ``bad``."""

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        for record in records:
            if record.id == "bad" and json.loads(record.json)["status"] in _ENDS:
                raise StorageError("disk full")
        return await self.inner.write(records, create=create)


async def test_run_pending_stops_and_awaits_the_batch_when_an_error_escapes() -> None:
    repo = Repository(Task, FailsToRecord(MemoryStore(Task)))
    manager = TaskManager(repo)
    active = 0
    calls = 0
    others_started = asyncio.Event()

    async def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        nonlocal active, calls
        calls += 1
        active += 1
        try:
            if messages[-1]["content"] == "bad":
                await others_started.wait()
                return "ok"
            if active == 3:
                others_started.set()
            await asyncio.sleep(30)
            return "never"
        finally:
            active -= 1

    await manager.create_task("bad", id="bad", priority="high", input_data={"query": "bad"})
    for n in range(5):
        await manager.create_task(f"t{n}", input_data={"query": str(n)})
    with pytest.raises(StorageError, match="disk full"):
        await manager.run_pending(await make_agent(llm), concurrency=3, progress=False)
    assert active == 0  # nothing still asks the model once the error is raised
    assert calls == 3
    stored = await repo.find_all({"id": {"$ne": "bad"}})
    statuses = sorted(t.status.value for t in stored)
    assert statuses == ["cancelled", "cancelled", "pending", "pending", "pending"]
    await asyncio.sleep(0.05)
    assert calls == 3


async def test_cancelling_run_pending_cancels_and_awaits_every_started_task() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    manager = TaskManager(repo)
    active = 0
    started = asyncio.Event()

    async def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        nonlocal active
        active += 1
        if active == 3:
            started.set()
        try:
            await asyncio.sleep(30)
            return "never"
        finally:
            active -= 1

    for n in range(5):
        await manager.create_task(f"t{n}")
    batch = asyncio.create_task(
        manager.run_pending(await make_agent(llm), concurrency=3, progress=False)
    )
    await started.wait()
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert active == 0
    statuses = sorted(t.status.value for t in await repo.find_all())
    assert statuses == ["cancelled", "cancelled", "cancelled", "pending", "pending"]


@pytest.mark.parametrize("concurrency", ["2", 0, -1, True, 1.5, None])
async def test_run_pending_validates_concurrency(concurrency: Any) -> None:
    manager = TaskManager(InMemoryRepository(Task))
    await manager.create_task("t")
    with pytest.raises(ValueError, match=r"concurrency must be an int >= 1, got"):
        await manager.run_pending(await make_agent(), concurrency=concurrency, progress=False)
    assert (await manager.repository.find_all())[0].status is TaskStatus.PENDING


# ---------------------------------------------------------------- sync language models


async def test_sync_models_run_concurrently_in_worker_threads(repo: Repository[Task]) -> None:
    manager = TaskManager(repo)
    # Passes only if all eight calls overlap: more than asyncio.to_thread's pool holds on
    # two cores (6), which the file system backend also needs for its own I/O.
    barrier = threading.Barrier(8, timeout=10)
    threads: set[int] = set()
    request = contextvars.ContextVar("request", default="unset")
    request.set("from the caller")
    seen: list[str] = []

    def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        threads.add(threading.get_ident())
        seen.append(request.get())
        barrier.wait()
        return "ok"

    for n in range(8):
        await manager.create_task(f"t{n}")
    results = await manager.run_pending(await make_agent(llm), concurrency=8, progress=False)
    assert [t.status for t in results] == [TaskStatus.COMPLETED] * 8, [t.error for t in results]
    assert len(threads) == 8 and threading.get_ident() not in threads
    assert seen == ["from the caller"] * 8


async def test_a_callable_returning_an_awaitable_still_works() -> None:
    async def answer(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        return "awaited"

    class Client:
        async def __call__(self, messages: list[Any], settings: Mapping[str, Any]) -> str:
            return "async call"

    agent = await make_agent(lambda m, s: answer(m, s))
    assert (await agent.run({}))["response"] == "awaited"
    assert (await (await make_agent(Client())).run({}))["response"] == "async call"


def test_a_blocking_model_does_not_block_other_calls() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    manager = TaskManager(repo)
    entered, release = threading.Event(), threading.Event()

    def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        entered.set()
        release.wait(10)
        return "ok"

    task = manager.sync.create_task("t")
    agent = Agent(AgentConfig(name="A", instruction_template="x"), llm)
    runner = threading.Thread(target=lambda: manager.sync.execute_task(task.id, agent))
    runner.start()
    try:
        assert entered.wait(10)
        assert repo.sync.count(timeout=5) == 1  # the loop is free while the model blocks
        assert repo.sync.get(task.id).status is TaskStatus.RUNNING
    finally:
        release.set()
        runner.join(10)
    assert repo.sync.get(task.id).status is TaskStatus.COMPLETED


def test_a_timeout_stops_the_wait_and_stores_the_task_cancelled() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    manager = TaskManager(repo)
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()

    def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        entered.set()
        release.wait(10)
        returned.set()
        return "late"

    task = manager.sync.create_task("t")
    agent = Agent(AgentConfig(name="A", instruction_template="x"), llm)
    try:
        with pytest.raises(TimeoutError, match="within 1.0 s"):
            manager.sync.execute_task(task.id, agent, timeout=1.0)
        assert entered.is_set() and not returned.is_set()  # gave up while the model ran
        stored = repo.sync.get(task.id)
        assert stored.status is TaskStatus.CANCELLED and stored.completed_at is not None
        assert stored.error == "execution was cancelled"
    finally:
        release.set()
    assert returned.wait(10)
    time.sleep(0.1)
    assert repo.sync.get(task.id) == stored  # the late reply is discarded, never stored


def test_a_batch_timeout_cancels_every_started_task() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    manager = TaskManager(repo)
    release = threading.Event()
    calls = 0
    lock = threading.Lock()

    def llm(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        nonlocal calls
        with lock:
            calls += 1
        release.wait(10)
        return "late"

    for n in range(5):
        manager.sync.create_task(f"t{n}")
    agent = Agent(AgentConfig(name="A", instruction_template="x"), llm)
    try:
        with pytest.raises(TimeoutError):
            manager.sync.run_pending(agent, concurrency=2, progress=False, timeout=1.0)
        started = calls
        statuses = [t.status.value for t in repo.sync.find_all()]
    finally:
        release.set()
    assert set(statuses) <= {"cancelled", "pending"}
    assert 1 <= started <= statuses.count("cancelled") <= 2
    time.sleep(0.2)
    assert calls == started  # no model call starts once the caller is told the batch stopped
    assert [t.status.value for t in repo.sync.find_all()] == statuses  # late replies dropped


# ---------------------------------------------------------------- registry


def test_registry_singleton_thread_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = 16
    start = threading.Barrier(threads)
    # Construction waits until a second construction starts (or 0.5 s pass): without the lock
    # a second thread always finds no instance yet and builds its own while the first waits.
    second_construction = threading.Barrier(2, timeout=0.5)
    built: list[ServiceRegistry] = []
    original_init = ServiceRegistry.__init__

    def slow_init(self: ServiceRegistry) -> None:
        built.append(self)
        with contextlib.suppress(threading.BrokenBarrierError):  # nobody else got in
            second_construction.wait()
        original_init(self)

    monkeypatch.setattr(ServiceRegistry, "_instance", None)
    monkeypatch.setattr(ServiceRegistry, "__init__", slow_init)
    seen: list[ServiceRegistry] = []

    def get() -> None:
        start.wait()
        seen.append(ServiceRegistry.get_instance())

    workers = [threading.Thread(target=get) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(built) == 1, f"{len(built)} registries were constructed"
    assert len(seen) == threads and {id(r) for r in seen} == {id(built[0])}


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
