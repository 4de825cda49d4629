"""Sync facades in a real Jupyter kernel, in both sync modes, over every backend.

One kernel per mode is shared by the tests of this module (startup costs about a second).
Cells are sent through jupyter_client as a frontend sends them: one at a time, or all at
once as "Run All" does (nbval would not notice a Run All hang: it waits for each reply
before sending the next cell).
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from symphony_nb import FileSystemRepository, Task, TaskStatus
from tests.backends import having, store_url_sync
from tests.kernel import Kernel

MODES = ["thread", "nested"]

PRELUDE = """
import asyncio, pathlib
import ipywidgets as widgets
from symphony_nb import *
from symphony_nb import set_sync_mode, get_sync_mode
set_sync_mode({mode!r})
STORE = pathlib.Path({store!r})

from symphony_nb.backends.filesystem import FileStore
from symphony_nb.stores import StoreLayer

class SlowWrites(StoreLayer):
    '''A user's own store layer whose writes hang until cancelled.'''

    async def write(self, records, *, create):
        self.inner.directory.mkdir(parents=True, exist_ok=True)
        (self.inner.directory / "write-started").touch()
        await asyncio.sleep(60)
        return await self.inner.write(records, create=create)

class SlowFiles(Repository):
    '''A user's own subclass: files in ``directory`` behind the slow layer.'''

    def __init__(self, model, directory):
        files = FileStore(model, directory)
        super().__init__(model, SlowWrites(files))
        self.directory = files.directory

async def slow_model(messages, settings):
    (STORE / settings["mark"]).touch()
    await asyncio.sleep(60)
    return "never"

print(get_sync_mode())
"""


@dataclass
class ModeKernel:
    """A kernel whose sync facades run in ``mode``; ``store`` is a folder it may write."""

    kernel: Kernel
    mode: str
    store: Path

    def run(self, code: str, timeout: float = 60) -> str:
        """Run a cell (dedented) and return what it printed."""
        return self.kernel.run(textwrap.dedent(code), timeout).stdout


@pytest.fixture(scope="module", params=MODES)
def mk(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModeKernel]:
    mode = str(request.param)
    where = tmp_path_factory.mktemp(f"kernel-{mode}")
    store = where / "store"
    store.mkdir()
    with Kernel(where) as kernel:
        started = ModeKernel(kernel, mode, store)
        assert started.run(PRELUDE.format(mode=mode, store=str(store))).strip() == mode
        yield started


def wait_until(
    mk: ModeKernel, cell: str, condition: Callable[[], bool], timeout: float, what: str
) -> None:
    """Poll ``condition`` (state written by the kernel process) while ``cell`` runs."""
    deadline = time.monotonic() + timeout
    reply = mk.kernel.replies[cell]
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        mk.kernel.pump(0.02)
        if reply.done:
            raise AssertionError(f"the cell ended before {what}:\n{reply.describe()}")


# ---------------------------------------------------------------------- backends


@dataclass
class Backend:
    """How a kernel opens a fresh Task repository of one backend as ``repo``."""

    name: str
    open_code: str


@pytest.fixture(params=having("url"))
def backend(request: pytest.FixtureRequest, mk: ModeKernel) -> Iterator[Backend]:
    name = str(request.param)
    where = mk.store / f"{name}-{time.monotonic_ns()}"
    where.mkdir()
    with store_url_sync(name, where) as url:
        yield Backend(name, f"repo = open_repository(Task, {url!r})")


def mixed_cells(backend: Backend) -> list[str]:
    """Cells that alternate sync calls and ``await`` on one repository object."""
    return [
        backend.open_code,
        "repo.sync.save(Task(id='s1', name='saved with sync'))",
        "await repo.save(Task(id='a1', name='saved with await'))",
        "print('count', repo.sync.count(), len(await repo.find_all()))",
        "first = await repo.get('s1'); first.name = 'edited'; repo.sync.save(first)",
        "print('version', repo.sync.get('s1').version, (await repo.get('s1')).version)",
        # A widget callback run in the cell, then the TaskManager and AgentFactory faces.
        "button = widgets.Button(description='add')\n"
        "button.on_click(lambda _: repo.sync.save(Task(id='b1', name='from a button')))\n"
        "button.click()",
        "configs = InMemoryRepository(AgentConfig)\n"
        "cid = await configs.save(AgentConfig(name='Echo', instruction_template='I am {name}.'))\n"
        "agent = AgentFactory(configs).sync.create_agent(cid)\n"
        "manager = TaskManager(repo)\n"
        "done = manager.sync.execute_task('a1', agent)",
        "print('status', done.status.value, (await repo.get('a1')).status.value)",
        "print('ids', [t.id for t in repo.sync.find_all(order_by='id')])",
        "await repo.close(); repo.sync.close()",
    ]


EXPECTED = [
    "count 2 2",
    "version 2 2",
    "status completed completed",
    "ids ['a1', 'b1', 's1']",
]


def printed(stdouts: list[str]) -> list[str]:
    return [line for out in stdouts for line in out.splitlines()]


def test_cells_mix_sync_and_await(mk: ModeKernel, backend: Backend) -> None:
    outputs = [mk.kernel.run(cell).stdout for cell in mixed_cells(backend)]
    assert printed(outputs) == EXPECTED


def test_run_all_queues_every_cell_at_once(mk: ModeKernel, backend: Backend) -> None:
    replies = mk.kernel.run_all(mixed_cells(backend))
    failed = [reply.describe() for reply in replies if reply.status != "ok"]
    assert not failed, failed
    assert printed([reply.stdout for reply in replies]) == EXPECTED


# ---------------------------------------------------------------------- widget callbacks


def test_button_clicked_through_its_comm_runs_the_sync_call(mk: ModeKernel) -> None:
    """The callback runs as the browser triggers it: a comm message, outside any cell."""
    folder = mk.store / f"clicks-{time.monotonic_ns()}"
    comm_id = mk.run(
        f"""
        clicks = FileSystemRepository(Task, {str(folder)!r})
        problems = []

        def on_click(_):
            try:
                n = clicks.sync.count()
                clicks.sync.save(Task(id=f"click{{n}}", name="clicked"))
            except BaseException as exc:
                problems.append(repr(exc))

        save_button = widgets.Button(description="Save")
        save_button.on_click(on_click)
        print(save_button.model_id)
        """
    ).strip()
    mk.kernel.click(comm_id)
    mk.kernel.click(comm_id)
    # Shell messages are handled in order, so this cell runs after both clicks.
    assert mk.run("print(clicks.sync.count(), problems)").strip() == "2 []"
    stored = FileSystemRepository(Task, folder).sync.find_all()
    assert [task.id for task in stored] == ["click0", "click1"]


# ---------------------------------------------------------------------- interrupt, timeout


def test_interrupt_during_execute_task_stores_it_cancelled(mk: ModeKernel) -> None:
    folder = mk.store / f"interrupt-{time.monotonic_ns()}"
    task_id = mk.run(
        f"""
        tasks = FileSystemRepository(Task, {str(folder)!r})
        slow_configs = InMemoryRepository(AgentConfig)
        slow_id = slow_configs.sync.save(
            AgentConfig(name="Slow", instruction_template="Wait.", model_config={{"mark": "first"}})
        )
        slow_agent = AgentFactory(slow_configs, llm=slow_model).sync.create_agent(slow_id)
        slow_manager = TaskManager(tasks)
        long_task = slow_manager.sync.create_task("long", input_data={{"query": "wait"}})
        print(long_task.id)
        """
    ).strip()
    ours = FileSystemRepository(Task, folder)
    cell = mk.kernel.submit("slow_manager.sync.execute_task(long_task.id, slow_agent)")
    wait_until(mk, cell, (mk.store / "first").exists, 30, "the language model to start")
    assert ours.sync.get(task_id).status is TaskStatus.RUNNING
    started = time.monotonic()
    mk.kernel.interrupt()
    reply = mk.kernel.wait(cell, 30)
    assert reply.status == "error" and reply.ename == "KeyboardInterrupt", reply.describe()
    assert time.monotonic() - started < 10
    # The reply came only after the cancellation had been stored.
    stored = ours.sync.get(task_id)
    assert stored.status is TaskStatus.CANCELLED
    assert stored.error == "execution was cancelled"
    assert mk.run("print(tasks.sync.get(long_task.id).status.value)").strip() == "cancelled"


def test_interrupt_leaves_the_task_cancelled_on_every_backend(
    mk: ModeKernel, backend: Backend
) -> None:
    mark = f"{backend.name}-{time.monotonic_ns()}"
    mk.run(backend.open_code)
    mk.run(
        f"""
        configs = InMemoryRepository(AgentConfig)
        config = AgentConfig(name="Slow", instruction_template="Wait.", model_config={{"mark": {mark!r}}})
        agent = AgentFactory(configs, llm=slow_model).sync.create_agent(configs.sync.save(config))
        manager = TaskManager(repo)
        task = await manager.create_task("long")
        """
    )
    cell = mk.kernel.submit("manager.sync.execute_task(task.id, agent)")
    wait_until(mk, cell, (mk.store / mark).exists, 30, "the language model to start")
    mk.kernel.interrupt()
    reply = mk.kernel.wait(cell, 30)
    assert reply.ename == "KeyboardInterrupt", reply.describe()
    out = mk.run(
        """
        print(repo.sync.get(task.id).status.value, (await repo.get(task.id)).status.value)
        await repo.close(); repo.sync.close()
        """
    )
    assert out.split() == ["cancelled", "cancelled"]


def test_interrupt_during_a_slow_save_of_a_user_subclass(mk: ModeKernel) -> None:
    folder = mk.store / f"slow-{time.monotonic_ns()}"
    mk.run(
        f"""
        slow = SlowFiles(Task, {str(folder)!r})
        pending = Task(id="p1", name="never written")
        """
    )
    cell = mk.kernel.submit("slow.sync.save(pending)")
    wait_until(mk, cell, (folder / "write-started").exists, 30, "the slow write to start")
    mk.kernel.interrupt()
    reply = mk.kernel.wait(cell, 30)
    assert reply.ename == "KeyboardInterrupt", reply.describe()
    assert not (folder / "task" / "p1.json").exists()
    out = mk.run(
        """
        print(pending.version, slow.sync.find_by_id("p1"))
        plain = FileSystemRepository(Task, slow.directory)
        print(plain.sync.save(pending), pending.version)
        """
    )
    assert out.split() == ["0", "None", "p1", "1"]


def test_timeout_cancels_in_a_cell(mk: ModeKernel) -> None:
    folder = mk.store / f"timeout-{time.monotonic_ns()}"
    reply = mk.kernel.wait(
        mk.kernel.submit(
            f"SlowFiles(Task, {str(folder)!r}).sync.save(Task(id='t', name='t'), timeout=0.3)"
        )
    )
    assert reply.ename == "TimeoutError", reply.describe()
    assert "within 0.3 s and was cancelled" in reply.evalue
    assert mk.run("print(InMemoryRepository(Task).sync.count(timeout=5))").strip() == "0"


# ---------------------------------------------------------------------- help and completion


def test_help_and_tab_completion_show_the_real_methods(mk: ModeKernel) -> None:
    mk.run("shown = InMemoryRepository(Task); factory = AgentFactory()")
    help_text = mk.kernel.inspect("shown.sync.find_all")
    assert "order_by: 'OrderBy | None' = None" in help_text
    assert "timeout: 'float | None' = None" in help_text
    assert "page the result" in help_text
    matches = mk.kernel.complete("shown.sync.find_")
    assert {"find_all", "find_by_id"} <= {match.rsplit(".", 1)[-1] for match in matches}
    factory_help = mk.kernel.inspect("factory.sync.create_agent")
    assert "config_id: 'str'" in factory_help


def test_no_task_is_left_on_the_private_loop(mk: ModeKernel) -> None:
    """After everything above, nothing still runs in the background."""
    out = mk.run(
        """
        import symphony_nb._sync as s
        loop = s._loop
        if loop is None or get_sync_mode() == "nested":
            print(0)
        else:
            async def others():
                return len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])
            print(asyncio.run_coroutine_threadsafe(others(), loop).result(10))
        """
    )
    assert out.strip() == "0"
