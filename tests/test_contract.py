"""The Repository contract, run over every backend in ``tests/backends.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from symphony_nb import (
    AgentConfig,
    ConflictError,
    InvalidIdError,
    Repository,
    Task,
    TaskPriority,
    TaskStatus,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ids(entities: list[Any]) -> list[str]:
    return [e.id for e in entities]


async def seed(repo: Repository[Task]) -> list[Task]:
    tasks = [
        Task(
            id="t1",
            name="alpha",
            status="pending",
            priority="low",
            tags=["x", "y"],
            input_data={"query": "What is Symphony?", "n": 1, "flag": True, "nested": {"k": "v"}},
            created_at=T0,
        ),
        Task(
            id="t2",
            name="beta",
            status="running",
            priority="high",
            tags=["y"],
            input_data={"query": "other", "n": 2.5, "flag": False},
            created_at=T0 + timedelta(hours=1),
        ),
        Task(
            id="t3",
            name="gamma",
            status="completed",
            priority="critical",
            tags=[],
            input_data={"n": "2"},
            output_data={"answer": 42},
            created_at=T0 + timedelta(days=1),
        ),
        Task(
            id="t4",
            name="delta",
            status="pending",
            priority="medium",
            description="Symphony docs",
            input_data={"query": None, "n": 1.0},
            agent_id="a1",
            created_at=T0 + timedelta(microseconds=1),
        ),
    ]
    for task in tasks:
        await repo.save(task)
    return tasks


# ---------------------------------------------------------------- CRUD semantics


async def test_save_returns_id_and_find_by_id_round_trips(repo: Repository[Task]) -> None:
    task = Task(
        name="Example", input_data={"query": "q", "deep": {"a": [1, 2.5, None]}}, tags=["t"]
    )
    task_id = await repo.save(task)
    assert task_id == task.id
    found = await repo.find_by_id(task_id)
    assert found == task
    assert found is not task
    assert found.created_at.tzinfo is not None and found.created_at.utcoffset() == timedelta(0)


async def test_find_by_id_missing_returns_none(repo: Repository[Task]) -> None:
    assert await repo.find_by_id("missing") is None


async def test_save_replaces(repo: Repository[Task]) -> None:
    task = Task(name="one")
    await repo.save(task)
    task.name = "two"
    await repo.save(task)
    stored = await repo.find_by_id(task.id)
    assert stored is not None and stored.name == "two"
    assert await repo.count() == 1


async def test_update_existing_and_missing(repo: Repository[Task]) -> None:
    task = Task(name="one")
    assert await repo.update(task) is False
    assert await repo.find_by_id(task.id) is None
    assert await repo.count() == 0
    await repo.save(task)
    task.status = TaskStatus.RUNNING
    assert await repo.update(task) is True
    stored = await repo.find_by_id(task.id)
    assert stored is not None and stored.status is TaskStatus.RUNNING


async def test_delete(repo: Repository[Task]) -> None:
    task = Task(name="one")
    await repo.save(task)
    assert await repo.delete(task.id) is True
    assert await repo.find_by_id(task.id) is None
    assert await repo.delete(task.id) is False


async def test_model_config_alias_round_trips(make_repo: Callable[[type[Any]], Any]) -> None:
    repo = await make_repo(AgentConfig)
    config = AgentConfig(
        name="A", instruction_template="I am {name}", model_config={"temperature": 0.1, "m": "x"}
    )
    await repo.save(config)
    stored = await repo.find_by_id(config.id)
    assert stored.llm_config == {"temperature": 0.1, "m": "x"}
    assert await repo.find_all({"model_config.m": "x"}) == [stored]


async def test_models_share_one_store(make_repo: Callable[[type[Any]], Any]) -> None:
    tasks = await make_repo(Task)
    configs = await make_repo(AgentConfig)
    await tasks.save(Task(id="same", name="t"))
    await configs.save(AgentConfig(id="same", name="c", instruction_template="x"))
    assert (await tasks.find_by_id("same")).name == "t"
    assert (await configs.find_by_id("same")).name == "c"


async def test_wrong_type_is_rejected(repo: Repository[Task]) -> None:
    with pytest.raises(TypeError, match="stores Task"):
        await repo.save(AgentConfig(name="c", instruction_template="x"))  # type: ignore[arg-type]


# ---------------------------------------------------------------- copies


async def test_reads_return_copies(repo: Repository[Task]) -> None:
    task = Task(name="one", input_data={"list": [1]})
    await repo.save(task)
    task.input_data["list"].append(2)
    first = await repo.find_by_id(task.id)
    assert first.input_data == {"list": [1]}
    first.input_data["list"].append(3)
    (listed,) = await repo.find_all()
    assert listed.input_data == {"list": [1]}
    listed.tags.append("mutated")
    assert (await repo.find_by_id(task.id)).tags == []


# ---------------------------------------------------------------- versions


async def test_version_bumps_and_saving_twice_works(repo: Repository[Task]) -> None:
    task = Task(name="v")
    assert task.version == 0
    before = task.updated_at
    await repo.save(task)
    assert task.version == 1
    await repo.save(task)
    assert task.version == 2
    assert task.updated_at >= before
    stored = await repo.find_by_id(task.id)
    assert stored.version == 2 and stored.updated_at == task.updated_at


async def test_stale_write_conflicts_and_overwrites_nothing(repo: Repository[Task]) -> None:
    task = Task(name="original")
    await repo.save(task)
    first = await repo.find_by_id(task.id)
    second = await repo.find_by_id(task.id)
    first.name = "first"
    await repo.save(first)
    second.name = "second"
    with pytest.raises(ConflictError) as info:
        await repo.save(second)
    assert info.value.given == 1 and info.value.stored == 2
    with pytest.raises(ConflictError):
        await repo.update(second)
    stored = await repo.find_by_id(task.id)
    assert stored.name == "first" and stored.version == 2
    assert second.version == 1


async def test_save_many_is_all_or_nothing_on_conflict(repo: Repository[Task]) -> None:
    existing = Task(id="e", name="existing")
    await repo.save(existing)
    stale = await repo.find_by_id("e")
    await repo.save(existing)
    fresh = Task(id="f", name="fresh")
    with pytest.raises(ConflictError):
        await repo.save_many([fresh, stale])
    assert await repo.find_by_id("f") is None
    assert fresh.version == 0
    assert await repo.save_many([fresh, Task(id="g", name="g")]) == ["f", "g"]
    assert fresh.version == 1
    assert await repo.count() == 3


async def test_save_many_rejects_duplicate_ids(repo: Repository[Task]) -> None:
    with pytest.raises(InvalidIdError, match="more than once"):
        await repo.save_many([Task(id="d", name="a"), Task(id="d", name="b")])
    assert await repo.count() == 0


async def test_concurrent_increments_with_retry(repo: Repository[Task]) -> None:
    await repo.save(Task(id="counter", name="c", metadata={"n": 0}))

    async def increment() -> None:
        while True:
            task = await repo.find_by_id("counter")
            task.metadata["n"] += 1
            try:
                await repo.save(task)
                return
            except ConflictError:
                await asyncio.sleep(0)

    await asyncio.gather(*(increment() for _ in range(25)))
    stored = await repo.find_by_id("counter")
    assert stored.metadata["n"] == 25
    assert stored.version == 26


class Plain(BaseModel):
    id: str
    value: int = 0


async def test_models_without_version_are_last_write_wins(
    make_repo: Callable[[type[Any]], Any],
) -> None:
    repo = await make_repo(Plain)
    await repo.save(Plain(id="p", value=1))
    await repo.save(Plain(id="p", value=2))
    assert (await repo.find_by_id("p")).value == 2
    assert await repo.find_all({"value": {"$gt": 1}}) == [Plain(id="p", value=2)]


# ---------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({}, ["t1", "t2", "t3", "t4"]),
        ({"status": TaskStatus.PENDING}, ["t1", "t4"]),
        ({"status": "pending"}, ["t1", "t4"]),
        ({"status": "pending", "priority": "low"}, ["t1"]),
        ({"status": {"$ne": "pending"}}, ["t2", "t3"]),
        ({"priority": {"$in": ["high", TaskPriority.CRITICAL]}}, ["t2", "t3"]),
        ({"priority": {"$nin": ["high", "critical"]}}, ["t1", "t4"]),
        ({"priority": {"$in": []}}, []),
        ({"input_data.query": "What is Symphony?"}, ["t1"]),
        ({"input_data.query": None}, ["t3", "t4"]),
        ({"input_data.query": {"$exists": True}}, ["t1", "t2"]),
        ({"input_data.query": {"$exists": False}}, ["t3", "t4"]),
        ({"input_data.query": {"$ne": "other"}}, ["t1", "t3", "t4"]),
        ({"input_data.n": 1}, ["t1", "t4"]),
        ({"input_data.n": {"$gt": 1}}, ["t2"]),
        ({"input_data.n": {"$gte": 1}}, ["t1", "t2", "t4"]),
        ({"input_data.n": {"$lt": 2.5}}, ["t1", "t4"]),
        ({"input_data.n": {"$lt": 2**64}}, ["t1", "t2", "t4"]),
        ({"input_data.n": {"$gt": -(10**30), "$lte": 1e20}}, ["t1", "t2", "t4"]),
        ({"input_data.n": {"$in": [10**20, 1]}}, ["t1", "t4"]),
        ({"input_data.n": {"$ne": 2**64}}, ["t1", "t2", "t3", "t4"]),
        ({"input_data.n": {"$lte": "2"}}, ["t3"]),
        ({"input_data.n": "2"}, ["t3"]),
        ({"input_data.flag": True}, ["t1"]),
        ({"input_data.flag": 1}, []),
        ({"input_data.n": True}, []),
        ({"input_data.nested.k": "v"}, ["t1"]),
        ({"input_data.missing.deeper": None}, ["t1", "t2", "t3", "t4"]),
        ({"tags": {"$contains": "y"}}, ["t1", "t2"]),
        ({"name": {"$contains": "et"}}, ["t2"]),
        ({"description": {"$contains": "Symphony"}}, ["t4"]),
        ({"input_data.query": {"$contains": "Symphony"}}, ["t1"]),
        ({"output_data.answer": {"$gte": 42}}, ["t3"]),
        ({"output_data": None}, ["t1", "t2", "t4"]),
        ({"output_data": {"$exists": True}}, ["t3"]),
        ({"agent_id": {"$exists": True}}, ["t4"]),
        ({"name": {"$gt": "alpha", "$lte": "delta"}}, ["t2", "t4"]),
        ({"created_at": {"$gt": T0}}, ["t2", "t3", "t4"]),
        ({"created_at": {"$gte": T0 + timedelta(hours=1)}}, ["t2", "t3"]),
        (
            {"created_at": {"$lte": datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))}},
            ["t1"],
        ),
        ({"created_at": "2026-01-02T00:00:00+00:00"}, ["t3"]),
        ({"version": 1}, ["t1", "t2", "t3", "t4"]),
    ],
)
async def test_filter_semantics(
    repo: Repository[Task], criteria: dict[str, Any], expected: list[str]
) -> None:
    await seed(repo)
    assert ids(await repo.find_all(criteria)) == expected
    assert await repo.count(criteria) == len(expected)


# ---------------------------------------------------------------- ordering and paging


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (None, ["t1", "t2", "t3", "t4"]),
        ("name", ["t1", "t2", "t4", "t3"]),
        ("-name", ["t3", "t4", "t2", "t1"]),
        ("priority", ["t1", "t4", "t2", "t3"]),
        ("-priority", ["t3", "t2", "t4", "t1"]),
        (["status", "-created_at"], ["t4", "t1", "t2", "t3"]),
        ("created_at", ["t1", "t4", "t2", "t3"]),
        ("agent_id", ["t1", "t2", "t3", "t4"]),
        ("-agent_id", ["t4", "t1", "t2", "t3"]),
        ("version", ["t1", "t2", "t3", "t4"]),
    ],
)
async def test_ordering(repo: Repository[Task], order_by: Any, expected: list[str]) -> None:
    await seed(repo)
    assert ids(await repo.find_all(order_by=order_by)) == expected


async def test_paging(repo: Repository[Task]) -> None:
    await seed(repo)
    assert ids(await repo.find_all(order_by="name", limit=2)) == ["t1", "t2"]
    assert ids(await repo.find_all(order_by="name", limit=2, offset=2)) == ["t4", "t3"]
    assert ids(await repo.find_all(order_by="name", offset=3)) == ["t3"]
    assert ids(await repo.find_all(limit=0)) == []
    assert ids(await repo.find_all({"status": "pending"}, offset=1)) == ["t4"]


async def test_iter_all_pages_through_everything(repo: Repository[Task]) -> None:
    await repo.save_many([Task(id=f"i{n:03d}", name=f"n{n % 7}") for n in range(53)])
    seen = [task.id async for task in repo.iter_all(batch_size=10)]
    assert seen == sorted(seen) and len(seen) == 53
    ordered = [
        task.name
        async for task in repo.iter_all({"name": {"$ne": "n0"}}, order_by="-name", batch_size=4)
    ]
    assert ordered == sorted(ordered, reverse=True) and len(ordered) == 53 - 8
    with pytest.raises(ValueError, match="batch_size"):
        async for _ in repo.iter_all(batch_size=0):
            pass


# ---------------------------------------------------------------- ids


async def test_case_distinct_ids_are_distinct_entities(repo: Repository[Task]) -> None:
    await repo.save(Task(id="Alice", name="upper"))
    await repo.save(Task(id="alice", name="lower"))
    assert (await repo.find_by_id("Alice")).name == "upper"
    assert (await repo.find_by_id("alice")).name == "lower"
    assert ids(await repo.find_all()) == ["Alice", "alice"]


async def test_count_takes_on_corrupt_like_find_all(repo: Repository[Task]) -> None:
    await repo.save_many([Task(id="a", name="a"), Task(id="b", name="b", status="running")])
    assert await repo.count(on_corrupt="warn") == await repo.count() == 2
    assert await repo.count({"status": "running"}, on_corrupt="warn") == 1
    with pytest.raises(ValueError, match="on_corrupt must be 'raise' or 'warn'"):
        await repo.count(on_corrupt="ignore")  # type: ignore[arg-type]
