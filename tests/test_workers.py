"""Many workers, one task queue: claims, leases, recovery and cancellation on every backend.

Processes, SIGKILLs and the figures of RELIABILITY.md are in ``tests/reliability/test_workers.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from symphony_nb import (
    Agent,
    AgentConfig,
    CorruptEntityWarning,
    InMemoryRepository,
    NotFoundError,
    Repository,
    Task,
    TaskManager,
    TaskStateError,
    TaskStatus,
    WorkReport,
)
from symphony_nb._claims import claim
from symphony_nb._models import utc_now
from symphony_nb.backends.memory import MemoryStore
from symphony_nb.stores import Change, Claimed, Query, Record, StoreLayer

QUIET = {"progress": False}


def agent_of(llm: Any) -> Agent:
    return Agent(AgentConfig(name="A", instruction_template="x"), llm)


class Counting:
    """An async model that counts its runs per query and may wait first."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.runs: dict[str, int] = {}
        self.active = 0
        self.started = asyncio.Event()

    async def __call__(self, messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        query = messages[-1]["content"]
        self.runs[query] = self.runs.get(query, 0) + 1
        self.active += 1
        self.started.set()
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        return f"done {query}"


async def make_tasks(manager: TaskManager, n: int, **fields: Any) -> list[Task]:
    return [
        await manager.create_task(f"t{i}", input_data={"query": f"q{i}"}, **fields)
        for i in range(n)
    ]


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- every backend


async def test_workers_share_the_queue_and_run_each_task_once(repo: Repository[Task]) -> None:
    manager = TaskManager(repo)
    await make_tasks(manager, 12)
    model = Counting(delay=0.01)
    reports = await asyncio.gather(
        *(
            manager.work(
                agent_of(model), concurrency=3, stop_when_idle=True, worker=f"w{n}", **QUIET
            )
            for n in range(3)
        )
    )
    assert model.runs == {f"q{i}": 1 for i in range(12)}
    assert sum(r.completed for r in reports) == sum(r.started for r in reports) == 12
    stored = await repo.find_all()
    assert {t.status for t in stored} == {TaskStatus.COMPLETED}
    assert all(t.attempts == 1 and t.lease_expires_at is None for t in stored)
    assert {t.worker for t in stored} <= {"w0", "w1", "w2"}
    assert all(
        t.output_data
        == {"response": f"done {t.input_data['query']}", "agent": "A", "agent_id": t.agent_id}
        for t in stored
    )


async def test_a_task_stored_before_the_worker_fields_existed_runs(repo: Repository[Task]) -> None:
    old = Task(name="old", input_data={"query": "q"}).model_dump(mode="json")
    for name in ("worker", "lease_expires_at", "attempts", "cancel_requested"):
        del old[name]
    old["version"] = 1
    await repo.store.write([Record(old["id"], json.dumps(old), 1, None)], create=True)
    assert (await repo.get(old["id"])).attempts == 0
    report = await TaskManager(repo).work(agent_of(Counting()), stop_when_idle=True, **QUIET)
    assert report.completed == 1
    done = await repo.get(old["id"])
    assert done.status is TaskStatus.COMPLETED and done.attempts == 1


async def test_an_expired_lease_is_requeued_and_counted(repo: Repository[Task]) -> None:
    manager = TaskManager(repo)
    past = utc_now() - timedelta(seconds=5)
    ghost = dict(status="running", worker="ghost", lease_expires_at=past, started_at=past)
    again = await manager.create_task("again", input_data={"query": "a"}, attempts=1, **ghost)
    spent = await manager.create_task("spent", input_data={"query": "s"}, attempts=2, **ghost)
    asked = await manager.create_task("asked", attempts=1, cancel_requested=True, **ghost)
    alive = await manager.create_task(
        "alive", attempts=1, **{**ghost, "lease_expires_at": utc_now() + timedelta(minutes=5)}
    )
    model = Counting()
    report = await manager.work(agent_of(model), max_attempts=2, stop_when_idle=True, **QUIET)
    assert model.runs == {"a": 1}
    assert (report.requeued, report.expired, report.completed) == (1, 2, 1)
    rerun = await repo.get(again.id)
    assert rerun.status is TaskStatus.COMPLETED and rerun.attempts == 2
    failed = await repo.get(spent.id)
    assert failed.status is TaskStatus.FAILED and failed.attempts == 2
    assert failed.error == (
        "the lease of worker 'ghost' ran out during attempt 2; not retried, max_attempts=2 reached"
    )
    assert (await repo.get(asked.id)).status is TaskStatus.CANCELLED
    assert (await repo.get(alive.id)).status is TaskStatus.RUNNING  # its lease still holds


async def test_cancel_stops_the_running_agent_and_stores_it_cancelled(
    repo: Repository[Task],
) -> None:
    manager = TaskManager(repo)
    (task,) = await make_tasks(manager, 1)
    model = Counting(delay=60)
    worker = asyncio.create_task(
        manager.work(agent_of(model), lease=3, renew_every=0.5, stop_when_idle=True, **QUIET)
    )
    await asyncio.wait_for(model.started.wait(), 10)
    cancelled = await asyncio.wait_for(manager.cancel(task.id), 10)
    assert cancelled.status is TaskStatus.CANCELLED and model.active == 0
    assert cancelled.error == "cancelled by request (TaskManager.cancel)"
    report = await asyncio.wait_for(worker, 10)
    assert (report.started, report.cancelled) == (1, 1)
    assert await repo.get(task.id) == cancelled


async def test_cancel_pending_unknown_finished_and_abandoned(repo: Repository[Task]) -> None:
    manager = TaskManager(repo)
    pending, done = await make_tasks(manager, 2)
    await manager.execute_task(done.id, agent_of(Counting()))
    assert (await manager.cancel(pending.id)).status is TaskStatus.CANCELLED
    with pytest.raises(TaskStateError, match=r"is already completed; only pending or running"):
        await manager.cancel(done.id)
    with pytest.raises(TaskStateError, match="is already cancelled"):
        await manager.cancel(pending.id)
    with pytest.raises(NotFoundError, match="no Task with id 'ghost'"):
        await manager.cancel("ghost")
    gone = await manager.create_task(
        "gone", status="running", worker="dead", lease_expires_at=utc_now() - timedelta(seconds=1)
    )
    assert (await asyncio.wait_for(manager.cancel(gone.id), 5)).status is TaskStatus.CANCELLED


async def test_the_lease_is_renewed_while_the_agent_runs(repo: Repository[Task]) -> None:
    manager = TaskManager(repo)
    (task,) = await make_tasks(manager, 1)
    model = Counting(delay=1.5)
    worker = asyncio.create_task(
        manager.work(agent_of(model), lease=0.9, renew_every=0.3, stop_when_idle=True, **QUIET)
    )
    await asyncio.wait_for(model.started.wait(), 10)
    first = (await repo.get(task.id)).lease_expires_at
    await asyncio.sleep(0.8)
    later = await repo.get(task.id)
    assert later.status is TaskStatus.RUNNING and later.lease_expires_at > first
    report = await asyncio.wait_for(worker, 10)
    assert report.completed == 1 and (await repo.get(task.id)).status is TaskStatus.COMPLETED


async def test_a_lost_lease_stops_the_agent_and_stores_nothing(repo: Repository[Task]) -> None:
    manager = TaskManager(repo)
    (task,) = await make_tasks(manager, 1)
    model = Counting(delay=60)
    worker = asyncio.create_task(
        manager.work(agent_of(model), lease=3, renew_every=0.3, stop_when_idle=True, **QUIET)
    )
    await asyncio.wait_for(model.started.wait(), 10)
    taken = await repo.get(task.id)
    taken.worker, taken.attempts = "other", taken.attempts + 1  # reclaimed after its lease ran out
    await repo.save(taken)
    report = await asyncio.wait_for(worker, 10)
    assert (report.lost, report.completed, model.active) == (1, 0, 0)
    assert await repo.get(task.id) == taken


async def test_cancelling_work_hands_its_tasks_back(repo: Repository[Task]) -> None:
    manager = TaskManager(repo)
    await make_tasks(manager, 4)
    model = Counting(delay=60)
    worker = asyncio.create_task(manager.work(agent_of(model), concurrency=2, **QUIET))

    async def both_started() -> bool:
        # Stored as running is not yet started: a claim not yet acknowledged is handed back
        # as never attempted (test_a_claim_interrupted_after_it_landed_is_handed_back).
        return model.active == 2 and await _count(repo, "running", 2)

    await wait_for(both_started)
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    assert model.active == 0
    stored = await repo.find_all()
    assert [t.status for t in stored] == [TaskStatus.PENDING] * 4
    assert sorted(t.attempts for t in stored) == [0, 0, 1, 1]
    assert all(t.worker is None and t.lease_expires_at is None for t in stored)


async def test_queue_status_counts_states_and_workers(repo: Repository[Task]) -> None:
    manager = TaskManager(repo)
    await make_tasks(manager, 3)
    await manager.create_task(
        "r", status="running", worker="w1", lease_expires_at=utc_now() + timedelta(minutes=1)
    )
    await manager.create_task(
        "x", status="running", worker="w2", lease_expires_at=utc_now() - timedelta(minutes=1)
    )
    await manager.create_task("c", status="completed", completed_at=utc_now())
    await manager.create_task("f", status="failed")
    status = await manager.queue_status()
    assert (status.pending, status.running, status.completed, status.failed, status.cancelled) == (
        3,
        2,
        1,
        1,
        0,
    )
    assert status.running_by_worker == {"w1": 1, "w2": 1} and status.expired == 1
    assert status.completed_last_minute == 1 and status.total == 7
    assert "3 pending, 2 running (w1: 1, w2: 1)" in str(status)


async def _count(repo: Repository[Task], status: str, n: int) -> bool:
    return await repo.count({"status": status}) == n


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, r"concurrency must be an int >= 1, got 0"),
        ({"concurrency": 2.0}, r"concurrency must be an int >= 1, got 2.0"),
        ({"max_attempts": 0}, r"max_attempts must be an int >= 1, got 0"),
        ({"lease": 0}, r"lease must be a number of seconds > 0, got 0"),
        ({"lease": 5, "renew_every": 5}, r"must be longer than its renewal interval"),
        ({"lease": 5, "renew_every": 0}, r"must be longer than its renewal interval"),
        ({"lease": float("nan")}, r"lease must be a number >= 0, got nan"),
        ({"poll": -1}, r"poll must be a number >= 0"),
        ({"worker": " "}, r"a worker name must be a non-empty string"),
    ],
)
async def test_work_refuses_bad_options_before_claiming(
    options: dict[str, Any], message: str
) -> None:
    manager = TaskManager(InMemoryRepository(Task))
    await manager.create_task("t")
    with pytest.raises(ValueError, match=message):
        await manager.work(agent_of(Counting()), stop_when_idle=True, **QUIET, **options)
    assert (await manager.repository.find_all())[0].status is TaskStatus.PENDING


# ---------------------------------------------------------------- sync face, execute_task


def test_work_and_cancel_through_the_sync_face() -> None:
    manager = TaskManager(InMemoryRepository(Task))
    first, second = (manager.sync.create_task(f"t{n}") for n in range(2))
    manager.sync.cancel(second.id)
    report = manager.sync.work(agent_of(Counting()), stop_when_idle=True, progress=False)
    assert isinstance(report, WorkReport) and report.completed == 1
    assert "1 started, 1 completed" in str(report)
    assert manager.sync.get_task(first.id).status is TaskStatus.COMPLETED
    assert manager.sync.queue_status().cancelled == 1


async def test_execute_task_holds_a_lease_that_cancel_reaches() -> None:
    manager = TaskManager(InMemoryRepository(Task))
    (task,) = await make_tasks(manager, 1)
    model = Counting(delay=60)
    running = asyncio.create_task(manager.execute_task(task.id, agent_of(model)))
    await asyncio.wait_for(model.started.wait(), 10)
    held = await manager.get_task(task.id)
    assert held.worker and held.lease_expires_at is not None and held.attempts == 1
    cancelled = await asyncio.wait_for(manager.cancel(task.id), 10)
    assert cancelled.status is TaskStatus.CANCELLED
    assert (await asyncio.wait_for(running, 5)).status is TaskStatus.CANCELLED
    again = await manager.execute_task(task.id, agent_of(Counting()), rerun=True)
    assert again.status is TaskStatus.COMPLETED and again.attempts == 1  # a rerun starts afresh


# ---------------------------------------------------------------- the claim seam


class Watching(StoreLayer):
    """A layer that sees writes: claims through it go the generic way, through its write."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.writes = 0

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        self.writes += 1
        return await self.inner.write(records, create=create)


class Passing(StoreLayer):
    """A layer that changes nothing: claims pass straight down."""


class CountsClaims(MemoryStore):
    def __init__(self, model: type[Any]) -> None:
        super().__init__(model)
        self.claims = 0

    async def claim(self, query: Query, change: Change) -> Claimed:
        self.claims += 1
        return await super().claim(query, change)


async def test_a_layer_that_sees_writes_claims_through_them_and_one_that_does_not_passes() -> None:
    base = CountsClaims(Task)
    watching, passing = Watching(base), Passing(base)
    claims = []
    for store in (watching, passing):
        manager = TaskManager(Repository(Task, store))
        await make_tasks(manager, 2)
        report = await manager.work(agent_of(Counting()), stop_when_idle=True, **QUIET)
        assert report.completed == 2
        claims.append(base.claims)
    assert claims[0] == 0 and claims[1] >= 2  # the store's own claim only through ``passing``
    assert watching.writes >= 2 * 3  # each task: its creation, its claim, its end


async def test_the_generic_claim_skips_a_lost_race() -> None:
    store = Watching(MemoryStore(Task))
    repo = Repository(Task, store)
    await repo.save(Task(id="a", name="a"))

    def stale(task: Task) -> Task:
        task.version -= 1  # another worker wrote it since this one read it
        return task

    taken = await claim(repo, {"status": "pending"}, stale)
    assert (taken.entity, taken.conflicts) == (None, 1)
    assert (await repo.get("a")).version == 1


async def test_claims_pass_corrupt_candidates_by_with_a_warning(repo: Repository[Task]) -> None:
    bad = Task(id="bad", name="bad").model_dump(mode="json")
    bad["status"] = "pending"
    bad["attempts"] = -1  # fails validation, parses as JSON
    await repo.store.write([Record("bad", json.dumps(bad), 1, None)], create=True)
    await repo.save(Task(id="good", name="good"))
    with pytest.warns(CorruptEntityWarning, match="attempts"):
        report = await TaskManager(repo).work(agent_of(Counting()), stop_when_idle=True, **QUIET)
    assert report.completed == 1 and (await repo.get("good")).status is TaskStatus.COMPLETED


def test_worker_threads_each_with_its_own_repository_share_one_file(tmp_path: Any) -> None:
    import threading

    from symphony_nb import SQLiteRepository

    path = tmp_path / "queue.db"
    seeded = SQLiteRepository(Task, path)
    seeded.sync.save_many(Task(name=f"t{n}", input_data={"query": f"q{n}"}) for n in range(30))
    runs: list[str] = []
    lock = threading.Lock()

    def model(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        with lock:
            runs.append(messages[-1]["content"])
        return "ok"

    reports: list[WorkReport] = []

    def work() -> None:
        repo = SQLiteRepository(Task, path)
        try:
            manager = TaskManager(repo)
            reports.append(manager.sync.work(agent_of(model), stop_when_idle=True, progress=False))
        finally:
            repo.sync.close()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(runs) == sorted(f"q{n}" for n in range(30))
    assert sum(r.completed for r in reports) == 30 and sum(r.conflicts for r in reports) == 0
    assert {t.status for t in seeded.sync.find_all()} == {TaskStatus.COMPLETED}
    seeded.sync.close()


async def test_a_lone_worker_keeps_priority_order_through_the_generic_claim() -> None:
    manager = TaskManager(Repository(Task, Watching(MemoryStore(Task))))
    priorities = ["low", "critical", "medium", "high"] * 5
    for n, priority in enumerate(priorities):
        await manager.create_task(f"t{n:02d}", priority=priority)
    done = await manager.run_pending(agent_of(Counting()), concurrency=3, progress=False)
    rank = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    assert [t.priority.value for t in done] == sorted(priorities, key=rank.__getitem__)
    assert [t.name for t in done if t.priority == "high"] == [f"t{n:02d}" for n in range(3, 20, 4)]


class SlowToAnswer(StoreLayer):
    """Writes land at once but are acknowledged only after a pause."""

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        written = await self.inner.write(records, create=create)
        await asyncio.sleep(0.3)
        return written


async def test_a_claim_interrupted_after_it_landed_is_handed_back() -> None:
    repo = Repository(Task, SlowToAnswer(MemoryStore(Task)))
    manager = TaskManager(repo)
    (task,) = await make_tasks(manager, 1)
    model = Counting()
    worker = asyncio.create_task(manager.work(agent_of(model), **QUIET))
    await wait_for(lambda: _count(repo, "running", 1))  # landed, not yet acknowledged
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    stored = await repo.get(task.id)
    assert (stored.status, stored.attempts, stored.worker) == (TaskStatus.PENDING, 0, None)
    assert model.runs == {}


async def test_claims_see_upgraded_documents_while_older_ones_are_stored(make_repo: Any) -> None:
    from tests.test_schema_evolution import Note, old_notes

    notes: Repository[Note] = await make_repo(Note)
    await old_notes(notes)  # versions 1, 2 and 3 of the schema, side by side

    def take(note: Note) -> Note | None:
        if note.title.endswith("(taken)"):
            return None
        note.title += " (taken)"
        return note

    # ``rank`` is ``score`` in older documents: n4 (stored at version 2) matches only once
    # upgraded, n5 (stored at version 3) as stored.
    taken = []
    while (got := await claim(notes, {"rank": {"$gte": 4}}, take, candidates=8)).entity:
        taken.append(got.entity.id)
        assert got.conflicts == 0
    assert sorted(taken) == ["n4", "n5"]
    titles = {n.id: n.title for n in await notes.find_all({"title": {"$contains": "taken"}})}
    assert titles == {"n4": "note 4 (taken)", "n5": "note 5 (taken)"}
