"""The sync facades in this process: plain sync tests, async tests, scripts, interrupts.

Real Jupyter kernels (cells, Run All, widget callbacks, kernel interrupt) are exercised in
``test_kernel.py``. Nested mode patches asyncio process-wide, so it is tested only in
subprocesses and kernels, never in this pytest process.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import pydoc
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from symphony_nb import (
    Agent,
    AgentConfig,
    AgentFactory,
    FileSystemRepository,
    InMemoryRepository,
    Repository,
    SyncUsageError,
    Task,
    TaskManager,
    TaskStatus,
    get_sync_mode,
    set_sync_mode,
)
from symphony_nb._sync import in_loop_thread
from symphony_nb.backends.filesystem import FileStore
from symphony_nb.stores import (
    Condition,
    Counted,
    Document,
    Record,
    StoreLayer,
)
from tests.backends import opened
from tests.test_store_seam import DictStore as PlainDictStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sync_repo(backend_name: str, tmp_path: Path) -> Iterator[Repository[Task]]:
    """A Task repository of each backend, opened and closed through the sync facade's loop."""
    with opened(backend_name, Task, tmp_path) as repo:
        yield repo


class DictStore(PlainDictStore):
    """The dict store of tests/test_store_seam.py, with optional slowness."""

    def __init__(self, model: type[Task]) -> None:
        super().__init__(model)
        self.slow = False
        self.started = threading.Event()
        self.cancelled = threading.Event()

    async def _pause(self) -> None:
        if not self.slow:
            return
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def get(self, entity_id: str) -> Document | None:
        await self._pause()
        return await super().get(entity_id)

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        await self._pause()
        return await super().write(records, create=create)


class DictRepository(Repository[Task]):
    """A user's own repository subclass, over their own store, with an extra async method."""

    store: DictStore

    def __init__(self) -> None:
        super().__init__(Task, DictStore(Task))

    async def names(self, prefix: str = "", *, limit: int = 10) -> list[str]:
        """Names of stored tasks that start with ``prefix``."""
        tasks = await self.find_all(order_by="name")
        return [task.name for task in tasks if task.name.startswith(prefix)][:limit]


@contextlib.contextmanager
def interrupt_when(started: threading.Event) -> Iterator[None]:
    """Send SIGINT to the main thread once ``started`` is set, as a kernel interrupt does."""
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread() is threading.main_thread()

    finished = threading.Event()

    def fire() -> None:
        if started.wait(30) and not finished.is_set():
            signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=fire)
    thread.start()
    try:
        yield
    finally:
        finished.set()
        started.set()  # releases the helper, without a signal, if the operation never started
        thread.join()


# ---------------------------------------------------------------------- every backend


def test_sync_round_trip_in_a_sync_test(sync_repo: Repository[Task]) -> None:
    tasks = [Task(id=f"t{i}", name=f"task {i}", input_data={"n": i}) for i in range(5)]
    assert sync_repo.sync.save_many(tasks) == [f"t{i}" for i in range(5)]
    assert tasks[0].version == 1
    assert sync_repo.sync.count({"input_data.n": {"$gte": 3}}) == 2
    found = sync_repo.sync.find_all({"input_data.n": {"$lt": 2}}, order_by="-id")
    assert [task.id for task in found] == ["t1", "t0"]
    tasks[2].status = TaskStatus.COMPLETED
    assert sync_repo.sync.update(tasks[2]) is True
    assert sync_repo.sync.get("t2").status is TaskStatus.COMPLETED
    assert [task.id for task in sync_repo.sync.iter_all(batch_size=2)] == [
        f"t{i}" for i in range(5)
    ]
    assert sync_repo.sync.delete("t0") is True
    assert sync_repo.sync.find_by_id("t0") is None


async def test_sync_and_await_mix_inside_an_async_test(sync_repo: Repository[Task]) -> None:
    first = Task(id="a", name="saved without await")
    sync_repo.sync.save(first)
    assert (await sync_repo.get("a")).name == "saved without await"
    await sync_repo.save(Task(id="b", name="saved with await"))
    assert [task.id for task in sync_repo.sync.find_all()] == ["a", "b"]
    first.name = "edited"
    sync_repo.sync.save(first)
    assert (await sync_repo.get("a")).version == 2


# ---------------------------------------------------------------------- errors, timeout, interrupt


def test_sync_call_from_inside_the_private_loop_raises_instead_of_deadlocking() -> None:
    class Reentrant(DictStore):
        async def count(self, conditions: tuple[Condition, ...]) -> Counted:
            assert in_loop_thread()
            return Counted(len(repo.sync.find_all()))

    repo = Repository(Task, Reentrant(Task))
    with pytest.raises(SyncUsageError, match="use 'await'"):
        # The outer timeout turns a deadlock into a failure rather than a hung test.
        repo.sync.count(timeout=10)
    assert repo.sync.count.__name__ == "count"


def test_timeout_cancels_the_operation_before_returning() -> None:
    store = DictStore(Task)
    repo = Repository(Task, store)
    store.slow = True
    with pytest.raises(TimeoutError, match=r"within 0\.2 s and was cancelled"):
        repo.sync.save(Task(id="late", name="late"), timeout=0.2)
    assert store.cancelled.is_set()
    assert store.docs == {}
    store.slow = False
    assert repo.sync.save(Task(id="fast", name="fast"), timeout=5) == "fast"


def test_an_operations_own_timeout_error_is_not_reported_as_ours() -> None:
    class Failing(DictStore):
        async def get(self, entity_id: str) -> str | None:
            raise TimeoutError("the backend's own timeout")

    with pytest.raises(TimeoutError, match="the backend's own timeout"):
        Repository(Task, Failing(Task)).sync.find_by_id("x", timeout=30)


def test_interrupt_cancels_a_slow_save_and_stores_nothing() -> None:
    store = DictStore(Task)
    repo = Repository(Task, store)
    task = Task(id="t", name="interrupted")
    store.slow = True
    with interrupt_when(store.started), pytest.raises(KeyboardInterrupt):
        repo.sync.save(task)
    assert store.cancelled.is_set()
    assert store.docs == {}
    assert task.version == 0
    store.slow = False
    assert repo.sync.save(task) == "t"
    assert repo.sync.get("t").version == 1


def test_interrupt_during_execute_task_leaves_the_task_cancelled() -> None:
    started = threading.Event()

    async def slow_model(messages: Any, settings: Any) -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    tasks = InMemoryRepository(Task)
    configs = InMemoryRepository(AgentConfig)
    manager = TaskManager(tasks)
    config_id = configs.sync.save(AgentConfig(name="Slow", instruction_template="Be {name}."))
    agent = AgentFactory(configs, llm=slow_model).sync.create_agent(config_id)
    task = manager.sync.create_task("long", input_data={"query": "wait"})
    with interrupt_when(started), pytest.raises(KeyboardInterrupt):
        manager.sync.execute_task(task.id, agent)
    # Read right away: the interrupt returned only after the task was stored as cancelled.
    stored = tasks.sync.get(task.id)
    assert stored.status is TaskStatus.CANCELLED
    assert stored.error == "execution was cancelled"
    assert stored.completed_at is not None


def test_interrupt_while_the_running_state_is_written(tmp_path: Path) -> None:
    writing = threading.Event()

    class SlowDisk(StoreLayer):
        async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
            if any('"status":"running"' in record.json for record in records):
                writing.set()
                # A slow disk: a write under way cannot be cancelled; it lands a second later.
                return await asyncio.shield(self.slowly(records, create))
            return await self.inner.write(records, create=create)

        async def slowly(self, records: Sequence[Record], create: bool) -> list[bool]:
            await asyncio.to_thread(time.sleep, 1)
            return await self.inner.write(records, create=create)

    tasks = Repository(Task, SlowDisk(FileStore(Task, tmp_path)))
    configs = InMemoryRepository(AgentConfig)
    config_id = configs.sync.save(AgentConfig(name="Quick", instruction_template="Hi."))
    agent = AgentFactory(configs).sync.create_agent(config_id)
    manager = TaskManager(tasks)
    task = manager.sync.create_task("interrupted while starting")
    with interrupt_when(writing), pytest.raises(KeyboardInterrupt):
        manager.sync.execute_task(task.id, agent)
    # Wait for the write under way to land, through the writer lock it holds.
    FileSystemRepository(Task, tmp_path).sync.save(Task(id="after", name="after"))
    assert tasks.sync.get(task.id).status is TaskStatus.CANCELLED


def test_concurrent_sync_calls_from_threads() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)

    def work(worker: int) -> None:
        for i in range(20):
            repo.sync.save(Task(id=f"w{worker}-{i}", name="x"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert repo.sync.count() == 120


def test_context_variables_travel_with_a_sync_call() -> None:
    import contextvars

    user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="nobody")

    class Auditing(DictRepository):
        async def whoami(self) -> str:
            return user.get()

    token = user.set("alice")
    try:
        assert Auditing().sync.whoami() == "alice"
    finally:
        user.reset(token)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="'thread' or 'nested'"):
        set_sync_mode("greenlet")  # type: ignore[arg-type]
    assert get_sync_mode() == "thread"


# ---------------------------------------------------------------------- what help() shows


def test_signatures_and_docstrings_are_the_real_ones() -> None:
    repo: InMemoryRepository[Task] = InMemoryRepository(Task)
    for name in ("save", "find_all", "find_by_id", "update", "delete", "count", "iter_all"):
        method = getattr(repo, name)
        facade = getattr(repo.sync, name)
        real = list(inspect.signature(method).parameters)
        assert list(inspect.signature(facade).parameters) == [*real, "timeout"]
        assert facade.__doc__ == method.__doc__
    find_all = inspect.signature(repo.sync.find_all)
    assert find_all.parameters["order_by"].kind is inspect.Parameter.KEYWORD_ONLY
    assert find_all.parameters["timeout"].default is None
    assert str(inspect.signature(repo.sync.iter_all).return_annotation) == "Iterator[T]"
    page = pydoc.render_doc(repo.sync.find_all, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
    assert "find_all(filter_criteria: 'Filter | None' = None, *, order_by" in page
    assert "timeout: 'float | None' = None" in page
    assert "``limit`` and ``offset`` page the result" in page
    assert {"find_all", "save", "model", "iter_all"} <= set(dir(repo.sync))
    assert repo.sync.model is Task


def test_services_and_user_subclasses_have_sync_faces() -> None:
    repo = DictRepository()
    repo.sync.save_many([Task(id="a", name="alpha"), Task(id="b", name="beta")])
    assert repo.sync.names("al") == ["alpha"]
    assert list(inspect.signature(repo.sync.names).parameters) == ["prefix", "limit", "timeout"]
    assert repo.sync.names.__doc__ == "Names of stored tasks that start with ``prefix``."

    configs = InMemoryRepository(AgentConfig)
    config_id = configs.sync.save(AgentConfig(name="Echo", instruction_template="I am {name}."))
    factory = AgentFactory(configs)
    agent = factory.sync.create_agent(config_id)
    assert isinstance(agent, Agent)
    assert agent.sync.run({"query": "hi"})["agent"] == "Echo"
    manager = TaskManager(repo)
    task = manager.sync.create_task("greet", input_data={"query": "hello"})
    done = manager.sync.execute_task(task.id, agent)
    assert done.status is TaskStatus.COMPLETED
    assert done.output_data is not None
    assert "You asked: hello" in done.output_data["response"]
    assert "config_id" in inspect.signature(factory.sync.create_agent).parameters
    assert "rerun" in inspect.signature(manager.sync.execute_task).parameters


# ---------------------------------------------------------------------- plain scripts


def run_script(code: str, tmp_path: Path) -> str:
    """Run ``code`` in a fresh interpreter; it must exit by itself, successfully."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_plain_script_with_files_exits_by_itself(tmp_path: Path) -> None:
    out = run_script(
        """
        from symphony_nb import FileSystemRepository, Task, TaskStatus
        repo = FileSystemRepository(Task, "store")
        repo.sync.save(Task(id="one", name="from a script"))
        print(repo.sync.count({"status": TaskStatus.PENDING}), repo.sync.get("one").name)
        """,
        tmp_path,
    )
    assert out.split() == ["1", "from", "a", "script"]
    assert (tmp_path / "store" / "task" / "one.json").exists()


NESTED_SCRIPT = """
import asyncio, signal, threading
import symphony_nb
from symphony_nb import InMemoryRepository, Task, set_sync_mode

assert "nest_asyncio2" not in __import__("sys").modules  # never applied at import
set_sync_mode("nested")

class Probe(InMemoryRepository):
    async def loop_id(self):
        return id(asyncio.get_running_loop())

    async def stall(self, started):
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.unwound = True
            raise

repo = Probe(Task)
repo.sync.save(Task(id="a", name="no loop running"))
# Without a running loop, one loop is kept, so loop-bound resources survive between calls.
assert repo.sync.loop_id() == repo.sync.loop_id()

async def main():
    # Inside a running loop (an async test, a notebook cell) the work runs on that loop.
    assert repo.sync.loop_id() == id(asyncio.get_running_loop())
    repo.sync.save(Task(id="b", name="inside a loop"))
    assert [t.id for t in await repo.find_all()] == ["a", "b"]
    try:
        repo.sync.stall(threading.Event(), timeout=0.2)
    except TimeoutError as exc:
        assert "cancelled" in str(exc)
    else:
        raise AssertionError("no timeout")
    assert repo.unwound
    repo.unwound = False
    started = threading.Event()
    main_id = threading.main_thread().ident
    threading.Thread(
        target=lambda: started.wait(30) and signal.pthread_kill(main_id, signal.SIGINT)
    ).start()
    try:
        repo.sync.stall(started)
    except KeyboardInterrupt:
        assert repo.unwound
    else:
        raise AssertionError("no interrupt")
    return repo.sync.count()

print("count", asyncio.run(main()))
"""


def test_nested_mode_in_a_script_and_inside_a_running_loop(tmp_path: Path) -> None:
    assert run_script(NESTED_SCRIPT, tmp_path).split() == ["count", "2"]


async def test_async_generators_become_plain_iterators() -> None:
    async def numbers() -> AsyncIterator[int]:
        for n in range(3):
            yield n

    class WithStream(DictRepository):
        async def stream(self) -> AsyncIterator[int]:
            async for n in numbers():
                yield n

    assert list(WithStream().sync.stream()) == [0, 1, 2]


def test_a_sync_iterator_left_early_closes_its_async_generator() -> None:
    closed = threading.Event()

    class Endless(DictRepository):
        async def stream(self) -> AsyncIterator[int]:
            try:
                n = 0
                while True:
                    yield n
                    n += 1
            finally:
                closed.set()

    items = Endless().sync.stream()
    assert [next(items), next(items)] == [0, 1]
    items.close()
    assert closed.is_set()
