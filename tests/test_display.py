"""Rich display in notebooks: the HTML of entities, lists, repositories and the registry."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import BaseModel, SecretStr

from symphony_nb import (
    AgentConfig,
    FileSystemRepository,
    InMemoryRepository,
    Repository,
    ServiceRegistry,
    SQLiteRepository,
    Task,
    TaskPriority,
    TaskStatus,
)
from symphony_nb import _display as display
from symphony_nb._sync import run_sync
from symphony_nb.backends.memory import MemoryStore
from symphony_nb.backends.postgres import PostgresRepository
from symphony_nb.stores import Condition, Counted, StoreLayer

HOSTILE = "<img src=x onerror=alert(1)>"


def assert_escaped(html: str) -> None:
    assert "<img" not in html
    assert "onerror=alert(1)>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


class Point(BaseModel):
    """A pydantic model that no repository stores."""

    x: int


class Note(BaseModel):
    """A plain user model, not an Entity."""

    id: str
    text: str
    stars: int = 0


# ---------------------------------------------------------------- entities


def test_task_card_escapes_hostile_name_and_output() -> None:
    task = Task(
        name=HOSTILE,
        description=HOSTILE,
        output_data={"response": HOSTILE},
        error=HOSTILE,
        tags=[HOSTILE],
    )
    html = task._repr_html_()
    assert_escaped(html)
    assert html.count("&lt;img") == 6  # the name twice: as text and as its tooltip


def test_task_shows_status_and_priority_as_distinct_badges() -> None:
    task = Task(name="t", status=TaskStatus.FAILED, priority=TaskPriority.CRITICAL)
    html = task._repr_html_()
    assert 'class="snb-entity snb-task"' in html
    assert 'class="snb-badge snb-status snb-status-failed"' in html
    assert 'class="snb-badge snb-priority snb-priority-critical"' in html
    assert "background:#cf222e" in html  # status: filled
    assert "border:1px solid #cf222e" in html  # priority: outlined


def test_timestamps_are_utc_to_the_second_with_the_full_value_as_title() -> None:
    when = datetime(2026, 3, 4, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    task = Task(name="t", created_at=when, started_at=when)
    html = task._repr_html_()
    assert ">2026-03-04 05:08:09 UTC</time>" in html
    assert 'title="2026-03-04T05:08:09.123456+00:00"' in html
    naive = display.timestamp(datetime(2026, 3, 4, 7, 8, 9))
    assert ">2026-03-04 07:08:09</time>" in naive


def test_plain_repr_is_unchanged() -> None:
    task = Task(name="t")
    assert repr(task) == BaseModel.__repr__(task)
    repo = InMemoryRepository(Task)
    assert repr(repo) == "InMemoryRepository(Task)"
    assert repr(ServiceRegistry()) == "ServiceRegistry([])"


def test_long_text_is_collapsed_short_text_is_not() -> None:
    task = Task(name="t", description="word " * 100, error="short error")
    html = task._repr_html_()
    assert '<details class="snb-more"><summary>word word' in html
    assert "(500 characters)</summary>" in html
    assert '<span class="snb-text" style="white-space:pre-wrap">short error</span>' in html
    lines = Task(name="t", description="a\nb\nc\nd")._repr_html_()
    assert "<details" in lines


def test_huge_text_is_cut_in_the_page() -> None:
    html = Task(name="t", description="x" * (display.MAX_TEXT + 5000))._repr_html_()
    assert "5,000 more characters not shown" in html
    assert len(html) < display.MAX_TEXT + 5000


def test_json_is_collapsed_unless_tiny() -> None:
    big = {"response": "a long answer " * 10, "tokens": 140}
    html = Task(name="t", input_data={"q": 1}, output_data=big)._repr_html_()
    assert '<code class="snb-json">{&quot;q&quot;: 1}</code>' in html
    assert "<details" in html
    assert "&quot;tokens&quot;: 140" in html  # pretty-printed inside


def test_empty_fields_are_listed_once() -> None:
    html = Task(name="t")._repr_html_()
    assert "not set: description, input_data, output_data, error, tags" in html
    assert ">description</th>" not in html


def test_agent_config_card() -> None:
    config = AgentConfig(
        name="Helper",
        instruction_template=f"You are {{name}}. {HOSTILE}",
        model_config={"model": "gpt", "temperature": 0.2},
    )
    html = config._repr_html_()
    assert 'class="snb-entity snb-agentconfig"' in html
    assert "<b>AgentConfig</b>" in html
    assert "Helper" in html
    assert ">llm_config</th>" in html
    assert "&quot;temperature&quot;: 0.2" in html
    assert_escaped(html)


def test_secrets_stay_masked() -> None:
    class Account(BaseModel):
        id: str
        token: SecretStr
        extra: dict[str, SecretStr]

    html = display.entity_html(Account(id="a", token="s3cret", extra={"k": "s3cret"}))
    assert "s3cret" not in html
    assert "**********" in html


def test_a_failing_value_shows_the_repr_and_the_reason() -> None:
    class Weird:
        def __str__(self) -> str:
            raise RuntimeError("no text")

        def __repr__(self) -> str:
            return HOSTILE

    class Holder(BaseModel, arbitrary_types_allowed=True):
        id: str
        value: Weird

    html = display.entity_html(Holder(id="h", value=Weird()))
    assert "rich display failed: RuntimeError: no text" in html
    assert_escaped(html)


# ---------------------------------------------------------------- lists


def test_list_of_tasks_is_a_table() -> None:
    tasks = [
        Task(name=HOSTILE, status=TaskStatus.COMPLETED),
        Task(name="b", priority=TaskPriority.HIGH),
    ]
    html = display.list_html(tasks)
    assert html is not None
    assert '<div class="snb-caption">2 Tasks</div>' in html
    headers = [h.split(">")[-1] for h in html.split("</th>")[:-1]]
    assert headers == ["id", "name", "status", "priority", "updated_at"]
    assert html.count("<tr>") == 3
    assert "snb-status-completed" in html
    assert "snb-priority-high" in html
    assert_escaped(html)


def test_list_rows_are_capped() -> None:
    tasks = [Task(name=f"t{i}") for i in range(display.MAX_ROWS + 7)]
    html = display.list_html(tasks)
    assert html is not None
    assert html.count("<tr>") == 1 + display.MAX_ROWS + 1
    assert "… and 7 more</td>" in html
    assert f"{display.MAX_ROWS + 7} Tasks" in html


def test_long_cells_are_cut_with_the_full_text_as_title() -> None:
    html = display.list_html([Task(name="n" * 100)])
    assert html is not None
    assert f'title="{"n" * 100}"' in html
    assert f">{'n' * (display.CELL_TEXT - 1)}…</span>" in html


def test_mixed_entities_get_a_model_column() -> None:
    items = [Task(name="t"), AgentConfig(name="a", instruction_template="x")]
    html = display.list_html(items)
    assert html is not None
    assert "2 entities: Task, AgentConfig" in html
    assert ">model</th>" in html


@pytest.mark.parametrize(
    "items",
    [
        [],
        [1, 2, 3],
        [HOSTILE],
        [Task(name="t"), "not a model"],
        [Point(x=1), Point(x=2)],
    ],
)
def test_list_formatter_falls_back_for_other_lists(items: list[Any]) -> None:
    assert display.list_html(items) is None


def test_stored_plain_models_get_the_rich_display() -> None:
    class Unstored(BaseModel):
        id: str

    InMemoryRepository(Note)
    html = display.list_html([Note(id="n1", text=HOSTILE, stars=3)])
    assert html is not None
    assert_escaped(html)
    headers = [h.split(">")[-1] for h in html.split("</th>")[:-1]]
    assert headers == ["id", "text", "stars"]
    assert display.list_html([Unstored(id="u")]) is None


# ---------------------------------------------------------------- IPython formatters


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A stand-in for the running IPython shell, with IPython's real HTML formatter."""
    from IPython.core.formatters import HTMLFormatter

    formatter = HTMLFormatter()
    fake = types.SimpleNamespace(
        display_formatter=types.SimpleNamespace(formatters={"text/html": formatter})
    )
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", module)
    return formatter


def test_formatters_are_registered_when_a_repository_is_created(shell: Any) -> None:
    class Own(BaseModel):
        id: str

        def _repr_html_(self) -> str:
            return "<i>own</i>"

    assert shell([Task(name="t")]) is None  # nothing registered yet
    InMemoryRepository(Note)
    InMemoryRepository(Own)
    InMemoryRepository(Note)  # idempotent
    note = Note(id="n", text="hello")
    assert 'class="snb-entity snb-note"' in shell(note)
    assert 'class="snb-list"' in shell([note, Task(name="t")])
    assert shell([1, 2]) is None
    assert shell(Own(id="o")) == "<i>own</i>"  # a model's own display is kept
    assert 'class="snb-entity snb-task"' in shell(Task(name="t"))  # Entity._repr_html_


def test_a_list_printer_registered_before_still_serves_other_lists(shell: Any) -> None:
    shell.for_type(list, lambda items: f"<b>{len(items)} items</b>")
    display.register_model()
    assert shell([1, 2]) == "<b>2 items</b>"
    assert 'class="snb-list"' in shell([Task(name="t")])
    display.register_model()
    assert shell([1, 2, 3]) == "<b>3 items</b>"  # not wrapped twice


def test_import_does_not_load_ipython() -> None:
    code = "import symphony_nb, sys; assert 'IPython' not in sys.modules, 'IPython loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------- repositories


def test_memory_repository() -> None:
    repo = InMemoryRepository(Task)
    repo.sync.save_many([Task(name="a"), Task(name="b")])
    html = repo._repr_html_()
    assert 'class="snb-repository"' in html
    assert ">InMemoryRepository</td>" in html
    assert ">memory of this process</td>" in html
    assert '<span class="snb-count" style="">2</span>' in html


def test_file_and_sqlite_locations(tmp_path: Path) -> None:
    files = FileSystemRepository(Task, tmp_path / "store")
    assert f">{tmp_path / 'store' / 'task'}</td>" in files._repr_html_()
    db = SQLiteRepository(Task, tmp_path / "s.db")
    try:
        db.sync.save(Task(name="x"))
        html = db._repr_html_()
        assert f">{tmp_path / 's.db'} (table task)</td>" in html
        assert '<span class="snb-count" style="">1</span>' in html
    finally:
        db.sync.close()


def test_postgres_password_is_masked_and_a_failed_count_is_shown() -> None:
    repo = PostgresRepository(Task, "postgresql://alice:s3cret@127.0.0.1:1/db?schema=ops")
    started = time.monotonic()
    html = repo._repr_html_()
    assert time.monotonic() - started < display.COUNT_TIMEOUT + 5
    assert "s3cret" not in html
    assert ">postgresql://alice:***@127.0.0.1:1/db?schema=ops (table ops.task)</td>" in html
    assert "count unavailable: StorageError: PostgreSQL at postgresql://alice:***@" in html
    run_sync(repo.close())


@contextlib.contextmanager
def postgres_with_password() -> Iterator[tuple[PostgresRepository[Task], str]]:
    """A repository on the test server whose URL carries a password (trust auth ignores it)."""
    from tests import pg

    parts = urlsplit(pg.dsn())
    password = parts.password or "hunter2"
    if parts.password is None:
        user, _, host = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{user or 'postgres'}:{password}@{host}")
    stack = contextlib.AsyncExitStack()

    async def enter() -> PostgresRepository[Task]:
        name = await stack.enter_async_context(pg.schema())
        repo = PostgresRepository(Task, urlunsplit(parts), schema=name)
        return await stack.enter_async_context(repo)

    try:
        repo = run_sync(enter())
    except pg.ServerUnavailable as exc:
        pytest.skip(f"postgres backend unavailable: {exc}")
    try:
        yield repo, password
    finally:
        run_sync(stack.aclose())


@pytest.mark.postgres
def test_postgres_count_with_a_password_in_the_url() -> None:
    with postgres_with_password() as (repo, password):
        repo.sync.save_many([Task(name="a"), Task(name="b"), Task(name="c")])
        html = repo._repr_html_()
        assert password not in html
        assert ":***@" in html
        assert f"(table {repo.schema}.task)" in html
        assert '<span class="snb-count" style="">3</span>' in html


class SlowCount(StoreLayer):
    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        await asyncio.sleep(30)
        return Counted(0)


class BrokenCount(StoreLayer):
    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        raise OSError(f"disk on fire {HOSTILE}")


def slow_count() -> Repository[Task]:
    """Tasks in memory whose count never answers in time."""
    return Repository(Task, SlowCount(MemoryStore(Task)))


def broken_count() -> Repository[Task]:
    """Tasks in memory whose count fails."""
    return Repository(Task, BrokenCount(MemoryStore(Task)))


def test_a_slow_count_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(display, "COUNT_TIMEOUT", 0.2)
    started = time.monotonic()
    html = slow_count()._repr_html_()
    assert time.monotonic() - started < 5
    assert "count unavailable: no answer within 0.2 s" in html


def test_registry_counts_are_read_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(display, "COUNT_TIMEOUT", 0.3)
    registry = ServiceRegistry()
    for name in ("a", "b", "c", "d"):
        registry.register_repository(name, slow_count())
    registry.register_repository("e", InMemoryRepository(Task))
    started = time.monotonic()
    html = registry._repr_html_()
    assert time.monotonic() - started < 4 * 0.3
    assert html.count("count unavailable: no answer within 0.3 s") == 4
    assert '<span class="snb-count" style="">0</span>' in html


def test_a_failing_count_is_shown_not_raised() -> None:
    html = broken_count()._repr_html_()
    assert "count unavailable: OSError: disk on fire" in html
    assert_escaped(html)


def test_display_on_the_private_loop_does_not_deadlock() -> None:
    repo = InMemoryRepository(Task)

    async def shown_on_the_loop() -> str:
        return repo._repr_html_()

    html = run_sync(shown_on_the_loop(), timeout=10)
    assert "count unavailable: shown from inside symphony_nb&#x27;s event loop" in html


_NESTED_CELL = """
import asyncio
from symphony_nb import InMemoryRepository, Task, set_sync_mode

repo = InMemoryRepository(Task)
repo.sync.save(Task(name="a"))

async def cell():  # a notebook cell: display runs while the kernel's loop runs
    return repo._repr_html_()

set_sync_mode("nested")
print(asyncio.run(cell()))
"""


def test_display_inside_a_running_loop_in_nested_mode() -> None:
    # A fresh process: nested mode patches the loops it runs on for good.
    pytest.importorskip("nest_asyncio2")
    result = subprocess.run(
        [sys.executable, "-c", _NESTED_CELL], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert '<span class="snb-count" style="">1</span>' in result.stdout


# ---------------------------------------------------------------- registry


def test_registry() -> None:
    registry = ServiceRegistry()
    assert "no repositories registered" in registry._repr_html_()
    tasks = InMemoryRepository(Task)
    tasks.sync.save(Task(name="a"))
    registry.register_repository("task", tasks)
    registry.register_repository(HOSTILE, broken_count())
    html = registry._repr_html_()
    assert 'class="snb-registry"' in html
    assert "<td" in html and ">task</td>" in html
    assert '<span class="snb-count" style="">1</span>' in html
    assert "count unavailable: OSError" in html
    assert "language model: offline_model (default)" in html
    assert_escaped(html)
    registry.llm = lambda messages, settings: "hi"
    assert "language model: &lt;lambda&gt;" in registry._repr_html_()


def test_naive_datetimes_are_not_called_utc() -> None:
    # A model with a naive datetime field (not an Entity) shows it without "UTC".
    class Event(BaseModel):
        id: str
        at: datetime

    html = display.entity_html(Event(id="e", at=datetime(2026, 1, 2, 3, 4, 5)))
    assert ">2026-01-02 03:04:05</time>" in html
    aware = display.entity_html(Event(id="e", at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)))
    assert ">2026-01-02 03:04:05 UTC</time>" in aware
