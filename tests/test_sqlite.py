"""What is specific to the SQLite backend: plans, pragmas, schema, corrupt rows, processes."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from pydantic import BaseModel

from symphony_nb import (
    AgentConfig,
    ConflictError,
    CorruptEntityError,
    CorruptEntityWarning,
    FilterError,
    ServiceRegistry,
    SQLiteRepository,
    StorageError,
    Task,
    TaskStatus,
    open_repository,
)
from symphony_nb._filters import Query, parse_filter, parse_order
from symphony_nb.backends._sqlite_history import PastStore
from symphony_nb.stores import BASELINE, Provenance, Record, baseline
from tests.backends import backend_store
from tests.unprivileged import (
    may_write_as_owner,
    reader_process,
    share_for_reading,
    shared_folder,
    writable_by_reader,
)


class Note(BaseModel):
    """A model with no default index, so nothing computed from ``doc`` guards its JSON."""

    id: str
    text: str = ""


@pytest.fixture
async def repo(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with SQLiteRepository(Task, tmp_path / "s.db", indexes=["agent_id"]) as repo:
        yield repo


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def plan(repo: SQLiteRepository[Task], criteria: dict[str, object], order: object = None) -> str:
    query = Query(parse_filter(Task, criteria), parse_order(Task, order))  # type: ignore[arg-type]
    sql, params = backend_store(repo)._sql.select(query)
    conn = raw(Path(repo.path))
    try:
        return " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    finally:
        conn.close()


# ---------------------------------------------------------------------- layout and plans


async def test_one_table_per_model_in_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SQLiteRepository(Task, path) as tasks, SQLiteRepository(AgentConfig, path) as agents:
        await tasks.save(Task(id="t", name="job"))
        await agents.save(AgentConfig(id="a", name="bot", instruction_template="Hi {name}"))
        assert [t.id for t in await tasks.find_all()] == ["t"]
        assert [a.id for a in await agents.find_all()] == ["a"]
    conn = raw(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    doc = conn.execute("SELECT doc FROM agentconfig WHERE id = 'a'").fetchone()[0]
    conn.close()
    assert tables == {"task", "agentconfig"}
    assert '"model_config":{}' in doc


async def test_indexed_filters_use_their_index(repo: SQLiteRepository[Task]) -> None:
    await repo.save(Task(name="warm up"))
    status = plan(repo, {"status": "pending"})
    assert "USING INDEX" in status and "task:status" in status and "TEMP B-TREE" not in status
    assert "task:priority" in plan(repo, {"priority": {"$in": ["high", "critical"]}})
    assert "task:created_at" in plan(repo, {"created_at": {"$gte": "2026-01-01T00:00:00Z"}})
    assert "task:agent_id" in plan(repo, {"agent_id": "a-1"})
    unindexed = plan(repo, {"workflow_id": "w"})
    assert unindexed.startswith("SCAN task") and "task:" not in unindexed  # full scan


async def test_declared_indexes_on_dict_keys_and_composites(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteRepository(Task, path) as first:
        await first.save(Task(id="k", name="n", input_data={"kind": "summary"}))
    specs = ["input_data.kind", ("status", "agent_id")]
    async with SQLiteRepository(Task, path, indexes=specs) as again:
        assert [t.id for t in await again.find_all({"input_data.kind": "summary"})] == ["k"]
        assert "USING INDEX" in plan(again, {"input_data.kind": "summary"})
        both = plan(again, {"status": "pending", "agent_id": "x"})
        assert "task:status+agent_id" in both


@pytest.mark.parametrize("spec", ["nope", "tags", "input_data", ["status", 5], ()])
def test_bad_index_declarations_are_refused(tmp_path: Path, spec: object) -> None:
    with pytest.raises(FilterError):
        SQLiteRepository(Task, tmp_path / "s.db", indexes=[spec])  # type: ignore[list-item]


def test_dict_keys_never_become_sql_text(tmp_path: Path) -> None:
    repo = SQLiteRepository(Task, tmp_path / "s.db")
    key = "input_data.x') OR 1=1 --"
    sql, params = backend_store(repo)._sql.select(Query(parse_filter(Task, {key: 1})))
    assert "OR 1=1" not in sql and any("OR 1=1" in str(v) for v in params.values())


async def test_injection_shaped_keys_and_values_match_literally(
    repo: SQLiteRepository[Task],
) -> None:
    await repo.save(Task(id="q", name="x", input_data={"it's": "a' OR '1'='1"}))
    await repo.save(Task(id="r", name="y", input_data={"it's": "other"}))
    found = await repo.find_all({"input_data.it's": "a' OR '1'='1"})
    assert [t.id for t in found] == ["q"]


# ---------------------------------------------------------------------- pragmas and schema


async def test_wal_full_sync_and_busy_timeout(tmp_path: Path) -> None:
    async with SQLiteRepository(Task, tmp_path / "s.db", timeout=2.5) as repo:
        await repo.save(Task(id="t", name="n"))
        assert await repo.find_by_id("t") is not None  # opens this thread's reader
        conn, _ = backend_store(repo)._session.reader()  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
        assert conn.execute("PRAGMA query_only").fetchone()[0] == 1


async def test_schema_version_is_recorded_and_newer_schemas_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteRepository(Task, path) as repo:
        await repo.save(Task(id="t", name="n"))
    conn = raw(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    async with SQLiteRepository(Task, path) as newer:
        with pytest.raises(StorageError, match=r"schema 7.*upgrade symphony_nb"):
            await newer.find_by_id("t")


async def test_foreign_table_of_the_same_name_is_refused(tmp_path: Path) -> None:
    conn = raw(tmp_path / "s.db")
    conn.execute("CREATE TABLE task (name TEXT)")
    conn.close()
    async with SQLiteRepository(Task, tmp_path / "s.db") as repo:
        with pytest.raises(StorageError, match="not made by symphony_nb"):
            await repo.count()


@pytest.mark.parametrize("kind", ["directory", "not a database", "parent is a file"])
async def test_unopenable_database_raises_storage_error_with_path(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "db"
    if kind == "directory":
        path.mkdir()
    elif kind == "not a database":
        path.write_bytes(b"this is not SQLite at all" * 100)
    else:
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "db"
    async with SQLiteRepository(Task, path) as repo:
        with pytest.raises(StorageError, match=str(path)) as caught:
            await repo.save(Task(name="n"))
        assert not isinstance(caught.value, sqlite3.Error)
        with pytest.raises(StorageError, match=str(path)):
            await repo.find_by_id("x")


# ---------------------------------------------------------------------- corrupt rows


async def test_row_that_does_not_validate_names_table_and_id(
    repo: SQLiteRepository[Task], tmp_path: Path
) -> None:
    await repo.save_many([Task(id="good", name="ok"), Task(id="bad", name="ok")])
    conn = raw(tmp_path / "s.db")
    conn.execute("""UPDATE task SET doc = '{"id": "bad", "name": 5}' WHERE id = 'bad'""")
    conn.close()
    with pytest.raises(CorruptEntityError, match=r"s\.db table 'task' id 'bad'.*name"):
        await repo.find_by_id("bad")
    with pytest.raises(CorruptEntityError, match="'bad'"):
        await repo.find_all()
    with pytest.warns(CorruptEntityWarning, match="'bad'"):
        assert [t.id for t in await repo.find_all(on_corrupt="warn")] == ["good"]


async def test_unparsable_json_is_refused_on_write(
    repo: SQLiteRepository[Task], tmp_path: Path
) -> None:
    await repo.save(Task(id="t", name="n"))
    conn = raw(tmp_path / "s.db")
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("UPDATE task SET doc = '{\"id\": \"t\", ' WHERE id = 't'")
    conn.close()
    assert (await repo.get("t")).name == "n"


async def test_unparsable_json_written_around_the_check_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteRepository(Note, path) as notes:
        await notes.save_many([Note(id="a", text="x"), Note(id="b", text="y")])
    # Such a doc lands only where the CHECK is ignored and no index reads the doc: an older
    # layout, without the generated column of the schema key every table has now.
    conn = raw(path)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("""UPDATE note SET doc = '{"id": "b", "te' WHERE id = 'b'""")
    for (index,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ).fetchall():
        conn.execute(f'DROP INDEX "{index}"')
    (column,) = [r[1] for r in conn.execute("PRAGMA table_xinfo(note)") if r[1].startswith("j_")]
    conn.execute(f'ALTER TABLE note DROP COLUMN "{column}"')
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.execute("""UPDATE note SET doc = '{"id": "b", "te' WHERE id = 'b'""")
    conn.commit()
    conn.close()
    async with SQLiteRepository(Note, path) as notes:
        with pytest.raises(CorruptEntityError, match=r"table 'note' id 'b'.*not valid JSON"):
            await notes.find_all({"text": "x"})
        with pytest.raises(CorruptEntityError, match="'b'"):
            await notes.count({"text": "x"})
        with pytest.warns(CorruptEntityWarning, match="'b'"):
            found = await notes.find_all({"text": {"$ne": "zzz"}}, on_corrupt="warn")
        assert [n.id for n in found] == ["a"]
        with pytest.raises(CorruptEntityError, match="'b'"):
            await notes.find_by_id("b")
        with pytest.warns(CorruptEntityWarning, match="'b'"):
            assert await notes.count({"text": "x"}, on_corrupt="warn") == 1
        with pytest.warns(CorruptEntityWarning, match="'b'"):
            assert await notes.count({"text": "q"}, on_corrupt="warn") == 0


# ---------------------------------------------------------------------- threads and loops


async def test_close_leaves_no_thread_or_open_file(tmp_path: Path) -> None:
    me = psutil.Process()
    threads = set(threading.enumerate())
    path = tmp_path / "s.db"
    repo = SQLiteRepository(Task, path)
    await repo.save(Task(id="t", name="n"))
    assert await repo.find_by_id("t") is not None
    assert await asyncio.to_thread(repo.sync.count) == 1  # a reader on another thread too
    assert any(f.path.startswith(str(path)) for f in me.open_files())
    await repo.close()
    await repo.close()
    assert not any(f.path.startswith(str(path)) for f in me.open_files())
    assert set(threading.enumerate()) - threads <= {
        t for t in threading.enumerate() if t.name.startswith(("asyncio_", "symphony_nb-loop"))
    }
    assert not [t for t in threading.enumerate() if t.name.startswith("symphony_nb-sqlite")]
    # A closed repository opens again on its next use.
    assert await repo.count() == 1
    await repo.close()


async def test_await_and_sync_facade_alternate_on_one_repository(
    repo: SQLiteRepository[Task],
) -> None:
    for i in range(3):
        await repo.save(Task(id=f"a{i}", name="async"))
        repo.sync.save(Task(id=f"s{i}", name="sync"))
        assert (await repo.get(f"s{i}")).name == "sync"
        assert repo.sync.get(f"a{i}").name == "async"
        assert repo.sync.count() == await repo.count() == 2 * (i + 1)
    other = await asyncio.to_thread(lambda: asyncio.run(repo.find_all({"name": "sync"})))
    assert [t.id for t in other] == ["s0", "s1", "s2"]


async def test_reads_on_many_threads_during_writes(repo: SQLiteRepository[Task]) -> None:
    await repo.save(Task(id="c", name="0"))

    def reader() -> int:
        seen = 0
        for _ in range(200):
            task = repo.sync.get("c")
            assert int(task.name) >= seen  # never goes back in time
            seen = int(task.name)
        return seen

    readers = [asyncio.to_thread(reader) for _ in range(3)]

    async def writer() -> None:
        task = await repo.get("c")
        for i in range(1, 100):
            task.name = str(i)
            await repo.save(task)

    await asyncio.gather(writer(), *readers)
    assert (await repo.get("c")).name == "99"


def test_program_that_never_closes_exits_promptly(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from symphony_nb import SQLiteRepository, Task
        repo = SQLiteRepository(Task, {str(tmp_path / "s.db")!r})
        async def main():
            await repo.save(Task(id="t", name="n"))
            assert await repo.find_by_id("t")
        asyncio.run(main())
        repo.sync.save(Task(id="u", name="n"))
        assert repo.sync.count() == 2
        print(time.monotonic(), flush=True)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    ended = time.monotonic()
    assert proc.returncode == 0, proc.stderr
    assert ended - float(proc.stdout.strip()) < 1.0


# ---------------------------------------------------------------------- URLs and memory


async def test_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_repository(Task, "sqlite:///data/rel.db")
    absolute = open_repository(Task, f"sqlite:///{tmp_path / 'abs.db'}")
    memory = open_repository(Task, "sqlite://:memory:")
    for repo in (relative, absolute, memory):
        assert isinstance(repo, SQLiteRepository)
        await repo.save(Task(id="t", name="n", status=TaskStatus.RUNNING))
        assert [t.id for t in await repo.find_all({"status": "running"})] == ["t"]
        await repo.close()
    assert (tmp_path / "data" / "rel.db").is_file() and (tmp_path / "abs.db").is_file()
    with pytest.raises(StorageError, match="names no file"):
        open_repository(Task, "sqlite://host.db")


async def test_memory_database_lives_until_close() -> None:
    repo = SQLiteRepository(Task, ":memory:")
    await repo.save(Task(id="t", name="n"))
    assert repo.sync.get("t").name == "n"
    await repo.close()
    assert await repo.count() == 0
    await repo.close()


async def test_failed_batch_writes_nothing(repo: SQLiteRepository[Task]) -> None:
    first = Task(id="a", name="1")
    await repo.save(first)
    stale = first.model_copy(update={"version": 0})
    with pytest.raises(ConflictError):
        await repo.save_many([Task(id="new", name="x"), stale])
    assert await repo.find_by_id("new") is None
    assert (await repo.get("a")).version == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
async def test_forked_child_opens_its_own_connections(repo: SQLiteRepository[Task]) -> None:
    await repo.save(Task(id="t", name="parent"))
    assert await repo.find_by_id("t") is not None
    pid = os.fork()
    if pid == 0:  # child: use the inherited object; exit without running pytest's teardown
        code = 1
        try:
            task = repo.sync.get("t")
            task.name = "child"
            repo.sync.save(task)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (await repo.get("t")).name == "child"


async def test_embedded_default_is_a_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SYMPHONY_NB_URL", raising=False)
    registry = ServiceRegistry.get_instance().configure()
    tasks, configs = registry.get_repository("task"), registry.get_repository("agent_config")
    try:
        assert isinstance(tasks, SQLiteRepository) and isinstance(configs, SQLiteRepository)
        await tasks.save(Task(id="t", name="n"))
        await configs.save(AgentConfig(id="a", name="b", instruction_template="x"))
    finally:
        await tasks.close()
        await configs.close()
    assert (tmp_path / "symphony_data" / "symphony.db").is_file()


async def test_close_from_another_thread_while_reading(repo: SQLiteRepository[Task]) -> None:
    await repo.save(Task(id="t", name="n"))
    stop = threading.Event()

    def read() -> int:
        done = 0
        while not stop.is_set():
            assert repo.sync.get("t").name == "n"
            done += 1
        return done

    reading = asyncio.ensure_future(asyncio.to_thread(read))
    for _ in range(20):
        await repo.close()
        assert (await repo.get("t")).name == "n"
    stop.set()
    assert await reading > 0


async def test_an_escaped_backslash_before_u0000_is_plain_text(
    repo: SQLiteRepository[Task],
) -> None:
    await repo.save(Task(id="b", name="back\\u0000slash"))
    assert [t.id for t in await repo.find_all({"name": "back\\u0000slash"})] == ["b"]
    assert [t.id for t in await repo.find_all({"name": {"$contains": "\\u0"}})] == ["b"]


async def test_in_list_mixing_numbers_and_booleans(repo: SQLiteRepository[Task]) -> None:
    values = {"one": 1, "true": True, "float": 1.0, "text": "1", "false": False}
    await repo.save_many([Task(id=k, name="n", input_data={"v": v}) for k, v in values.items()])
    found = await repo.find_all({"input_data.v": {"$in": [1, True]}})
    assert [t.id for t in found] == ["float", "one", "true"]
    rest = await repo.find_all({"input_data.v": {"$nin": [True, 1]}})
    assert [t.id for t in rest] == ["false", "text"]


# ---------------------------------------------------------------------- read-only databases

_READER = """
import json, sys
from symphony_nb import AgentConfig, SQLiteRepository, StorageError, Task

repo = SQLiteRepository(Task, {path!r}, indexes=["input_data.kind"])
other = SQLiteRepository(AgentConfig, {path!r})
for _ in sys.stdin:
    found = {{
        "ids": [t.id for t in repo.sync.find_all()],
        "get": repo.sync.get("a").name,
        "missing": repo.sync.find_by_id("zz"),
        "count": repo.sync.count(),
        "kind": [t.id for t in repo.sync.find_all({{"input_data.kind": "k"}})],
        "running": repo.sync.count({{"status": "running"}}),
        "other": [other.sync.find_all(), other.sync.count(), other.sync.find_by_id("x")],
    }}
    for name, write in {{
        "save": lambda: repo.sync.save(Task(id="w", name="w")),
        "delete": lambda: repo.sync.delete("a"),
        "other_save": lambda: other.sync.save(
            AgentConfig(id="x", name="x", instruction_template="t")
        ),
    }}.items():
        try:
            write()
            found[name] = "written"
        except StorageError as exc:
            found[name] = str(exc)
    print(json.dumps(found), flush=True)
"""


def test_a_database_that_may_be_read_but_not_written() -> None:
    with shared_folder() as where:
        path = where / "db" / "s.db"
        owner = SQLiteRepository(Task, path)
        owner.sync.save_many(
            [Task(id="a", name="a", input_data={"kind": "k"}), Task(id="b", name="b")]
        )
        owner.sync.close()
        share_for_reading(where / "db")
        assert not writable_by_reader(path)
        with reader_process(_READER.format(path=str(path)), where) as ask:
            first = ask()
            assert first["ids"] == ["a", "b"] and first["kind"] == ["a"]
            assert (first["get"], first["missing"], first["count"]) == ("a", None, 2)
            assert first["running"] == 0
            assert first["other"] == [[], 0, None]  # no table, and none is made
            for write in ("save", "delete", "other_save"):
                assert f"SQLite database {path} is read-only" in first[write], first[write]
            if not may_write_as_owner():
                return
            # The owner writes and closes: the reader's snapshot is replaced by the new file.
            owner.sync.save(Task(id="c", name="c", status="running"))
            owner.sync.close()
            assert ask()["ids"] == ["a", "b", "c"]
            # The owner keeps the database open (its log not yet merged): still seen.
            owner.sync.save(Task(id="d", name="d", status="running"))
            assert os.path.exists(f"{path}-wal")
            again = ask()
            assert again["ids"] == ["a", "b", "c", "d"] and again["running"] == 2
            owner.sync.close()
        assert [t.id for t in SQLiteRepository(AgentConfig, path).sync.find_all()] == []


# ---------------------------------------------------------------------- worker claims


async def test_a_claim_takes_tasks_in_order_from_the_composite_index(
    repo: SQLiteRepository[Task],
) -> None:
    from symphony_nb.backends.sqlite import _by_leading_enum
    from symphony_nb.stores import Record
    from tests.backends import backend_store

    store = backend_store(repo)

    priorities = ["low", "critical", "medium", "high", "medium", "low", "critical"]
    for n, priority in enumerate(priorities):
        await repo.save(Task(id=f"t{n}", name="t", priority=priority))
    query = Query(parse_filter(Task, {"status": "pending"}), parse_order(Task, ["-priority", "created_at"]), limit=4)  # fmt: skip
    expected = [t.id for t in await repo.find_all({"status": "pending"}, order_by=["-priority", "created_at"])]  # fmt: skip
    taken = []
    while True:

        def run(entity_id: str, document: str | bytes) -> Record:
            task = repo.decode(entity_id, document)
            task.status = TaskStatus.RUNNING
            return Record(entity_id, task.model_dump_json(), task.version + 1, task.version)

        claimed = await store.claim(query, run)
        if claimed.record is None:
            break
        taken.append(claimed.record.id)
    assert taken == expected == ["t1", "t6", "t3", "t2", "t4", "t0", "t5"]
    conn = raw(Path(repo.path))
    try:
        for part in _by_leading_enum(query):
            sql, params = store._sql.select(part)
            steps = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            if any(c.op == "$eq" and c.path == ("priority",) for c in part.conditions):
                assert steps == [
                    "SEARCH task USING INDEX task:status+priority+created_at (status=? AND priority=?)"
                ]
    finally:
        conn.close()


# ---------------------------------------------------------------------- history


def history_rows(path: Path, entity_id: str) -> list[tuple[object, ...]]:
    conn = raw(path)
    try:
        return conn.execute(
            'SELECT version, op, reason, entity_version FROM "task::history" WHERE id = ? '
            "ORDER BY version",
            (entity_id,),
        ).fetchall()
    finally:
        conn.close()


def statements(repo: SQLiteRepository[Task]) -> list[str]:
    """The statements the worker's connection runs from now on (appended as they run)."""
    store = backend_store(repo)
    seen: list[str] = []
    store._session.writer().set_trace_callback(seen.append)  # type: ignore[union-attr]
    return seen


async def test_history_off_makes_no_table_and_runs_no_extra_statement(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteRepository(Task, path) as repo:
        task = Task(id="t", name="n")
        await repo.save(task)
        seen = statements(repo)
        task.name = "m"
        await repo.save(task)
        await repo.save_many([Task(id="u", name="u"), task])
        await repo.delete("u")
        assert [sql.split(" ", 1)[0] for sql in seen] == [
            *("BEGIN", "INSERT", "COMMIT"),
            *("BEGIN", "INSERT", "INSERT", "COMMIT"),  # one per row of an executemany
            "DELETE",
        ]
    conn = raw(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"task"}


async def test_a_write_refused_after_its_revision_leaves_neither(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteRepository(Task, path, history=True) as repo:
        store = backend_store(repo)
        await repo.save(Task(id="t", name="n"))
        # The revision goes in first; then the table refuses the document (not JSON).
        for create in (True, False):
            with pytest.raises(StorageError, match="malformed JSON|CHECK"):
                await store.write([Record("t", "{not json", 2, 1)], create=create)
            with pytest.raises(StorageError, match="malformed JSON|CHECK"):
                await store.write([Record("new", "{not json", 1, None)], create=True)
        conn = raw(path)
        conn.execute("CREATE TRIGGER no_delete BEFORE DELETE ON task BEGIN SELECT RAISE(ABORT, 'kept'); END")  # fmt: skip
        conn.close()
        with pytest.raises(StorageError, match="kept"):
            await repo.delete("t")
        assert history_rows(path, "t") == [(1, "create", None, 1)]
        assert history_rows(path, "new") == []
        assert (await repo.get("t")).version == 1


async def test_history_queries_search_its_indexes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteRepository(Task, path, history=True) as repo:
        await repo.save(Task(id="t", name="n"))
        history = backend_store(repo).history
    conn = raw(path)
    try:

        def steps(sql: str, params: object) -> str:
            return " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))  # type: ignore[arg-type]

        one = ("t",)
        for sql, params in (
            (history._revisions_sql, one),
            (history._revision_sql, ("t", 1)),
            (history._at_sql, ("t", "x")),
            (history._state_sql, one),
            (history._heads_sql, ('["t"]',)),
            (history._trim_sql, ("t", 2)),
        ):
            plan = steps(sql, params)
            assert not re.search(r"SCAN (task|t|h)\b", plan) and "TEMP B-TREE" not in plan, sql
        # As of an instant: one pass over the covering index, then only the documents found.
        past = steps(f"SELECT id, doc FROM ({history.past})", {"when": "x"})
        assert "SCAN task::history USING COVERING INDEX task::history:time" in past
        assert "SEARCH h USING INTEGER PRIMARY KEY (rowid=?)" in past
        assert "TEMP B-TREE" not in past
        marks = steps(history._marks_sql, {"when": "x"})
        assert "SCAN task::history USING INDEX task::history:$" in marks
    finally:
        conn.close()


async def test_the_first_baselines_are_numbered_as_baseline_numbers_them(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteRepository(Note, path) as plain:
        store = backend_store(plain)
        for key, version in (("none", None), ("zero", 0), ("five", 5)):
            await store.write([Record(key, f'{{"id":"{key}"}}', version, None)], create=True)
    async with SQLiteRepository(Note, path, history=True) as kept:
        for key, version in (("none", None), ("zero", 0), ("five", 5)):
            (found,) = await backend_store(kept).revisions(key)
            expected = baseline(key, version, f'{{"id":"{key}"}}', None, Provenance(found.at))
            assert found == expected


async def test_a_file_with_history_opens_as_before_without_it(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteRepository(Task, path, history=True) as kept:
        await kept.save(Task(id="t", name="one"))
        await kept.save(Task(id="gone", name="x"))
    async with SQLiteRepository(Task, path) as plain:
        task = await plain.get("t")
        task.name = "two"
        await plain.save(task)
        assert await plain.count() == 2
        # Erasure leaves nothing of it even where this repository keeps no history.
        assert await plain.purge("gone") == 2
    conn = raw(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    assert history_rows(path, "gone") == []
    assert history_rows(path, "t") == [(1, "create", None, 1)]


async def test_as_of_reports_a_revision_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteRepository(Note, path, history=True) as notes:
        await notes.save_many([Note(id="a", text="x"), Note(id="b", text="y")])
        conn = raw(path)
        conn.execute("""UPDATE "note::history" SET doc = '{"id": "b", "te' WHERE id = 'b'""")
        conn.close()
        when = datetime.now(UTC)
        with pytest.raises(CorruptEntityError, match=r"table 'note' id 'b'.*not valid JSON"):
            await notes.find_all({"text": "x"}, as_of=when)
        with pytest.warns(CorruptEntityWarning, match="'b'"):
            found = await notes.find_all({"text": {"$ne": "z"}}, as_of=when, on_corrupt="warn")
        assert [n.id for n in found] == ["a"]
        with pytest.warns(CorruptEntityWarning, match="'b'"):
            assert await notes.count({"text": "x"}, as_of=when, on_corrupt="warn") == 1


async def test_schema_key_probes_of_as_of_reads_match_a_full_count(tmp_path: Path) -> None:
    from symphony_nb._filters import Condition

    path = tmp_path / "s.db"
    async with SQLiteRepository(Note, path, history=True) as notes:
        store = backend_store(notes)
        docs = {"a": '{"$":2,"id":"a"}', "b": '{"$":3,"id":"b"}', "c": '{"id":"c"}'}
        for key, doc in docs.items():
            await store.write([Record(key, doc, None, None)], create=True)
        await store.write([Record("b", '{"id":"b"}', None, None)], create=True)
        await store.remove("c")
        past = PastStore(store, datetime.now(UTC))
        for conditions in (
            (Condition(("$",), "$gt", 1),),
            (Condition(("$",), "$exists", False),),
            (Condition(("$",), "$lt", 3),),
            (Condition(("$",), "$eq", 2),),
        ):
            fast = await past.count(conditions)
            full = await store._run(store._tally, conditions, past._sql)
            assert fast.total == full.total, conditions
        assert (await past.count((Condition(("$",), "$gt", 1),))).total == 1  # b is unmarked now


async def test_writers_on_two_connections_number_one_history(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with (
        SQLiteRepository(Task, path, history=True) as one,
        SQLiteRepository(Task, path, history=True) as two,
    ):
        await one.save(Task(id="t", name="0"))

        async def bump(repo: SQLiteRepository[Task], times: int) -> None:
            for _ in range(times):
                while True:
                    task = await repo.get("t")
                    task.name = str(int(task.name) + 1)
                    try:
                        await repo.save(task)
                        break
                    except ConflictError:
                        continue

        await asyncio.gather(bump(one, 20), bump(two, 20))
        history = await one.history("t")
        assert [r.version for r in history] == list(range(1, 42))
        assert [r.entity.name for r in history if r.entity] == [str(n) for n in range(41)]


async def test_purge_and_history_writes_reach_the_read_cache(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with (
        SQLiteRepository(Task, path, history=True, cache=True) as cached,
        SQLiteRepository(Task, path, history=True) as other,
    ):
        await cached.save(Task(id="t", name="one"))
        assert (await cached.get("t")).name == "one"
        task = await other.get("t")
        task.name = "two"
        await other.save(task)
        assert (await cached.get("t")).name == "two"
        assert await cached.purge("t") == 3
        assert await cached.find_by_id("t") is None


_HISTORY_READER = """
import json, sys
from datetime import UTC, datetime
from symphony_nb import SQLiteRepository, StorageError, Task

repo = SQLiteRepository(Task, {path!r}, history=True)
bare = SQLiteRepository(Task, {bare!r}, history=True)
for _ in sys.stdin:
    now = datetime.now(UTC)
    found = {{
        "history": [(r.version, r.op, r.entity and r.entity.name) for r in repo.sync.history("a")],
        "v1": repo.sync.get("a", version=1).name,
        "as_of": [t.id for t in repo.sync.find_all(as_of=now)],
        "count": repo.sync.count({{"name": "a2"}}, as_of=now),
        "bare": [bare.sync.history("x") == [], bare.sync.find_all(as_of=now)],
    }}
    for name, write in {{
        "save": lambda: repo.sync.save(Task(id="w", name="w")),
        "prune": lambda: repo.sync.prune(keep_last=1),
        "purge": lambda: repo.sync.purge("a"),
    }}.items():
        try:
            write()
            found[name] = "written"
        except StorageError as exc:
            found[name] = str(exc)
    print(json.dumps(found), flush=True)
"""


def test_a_database_with_history_that_may_be_read_but_not_written() -> None:
    with shared_folder() as where:
        path, bare = where / "db" / "s.db", where / "db" / "bare.db"
        owner = SQLiteRepository(Task, path, history=True)
        task = Task(id="a", name="a1")
        owner.sync.save(task)
        task.name = "a2"
        owner.sync.save(task)
        owner.sync.save(Task(id="b", name="b"))
        owner.sync.delete("b")
        owner.sync.close()
        SQLiteRepository(Task, bare).sync.save(Task(id="x", name="x"))  # no history table
        share_for_reading(where / "db")
        assert not writable_by_reader(path)
        code = _HISTORY_READER.format(path=str(path), bare=str(bare))
        with reader_process(code, where) as ask:
            found = ask()
        assert found["history"] == [[1, "create", "a1"], [2, "update", "a2"]]
        assert (found["v1"], found["as_of"], found["count"]) == ("a1", ["a"], 1)
        assert found["bare"] == [True, []]
        for write in ("save", "prune", "purge"):
            assert f"SQLite database {path} is read-only" in found[write], found[write]


async def test_history_turned_on_for_a_store_in_use_keeps_a_baseline(tmp_path: Path) -> None:
    from symphony_nb import Repository
    from symphony_nb.backends.sqlite import SQLiteStore

    store = SQLiteStore(Task, tmp_path / "s.db")
    plain = Repository(Task, store)
    await plain.save(Task(id="old", name="before"))
    assert await plain.find_by_id("old") is not None  # the session is open and ready
    kept = Repository(Task, store, history=True)
    history = await kept.history("old")
    assert [(r.version, r.op, r.reason) for r in history] == [(1, "create", BASELINE)]
    assert [t.id for t in await kept.find_all(as_of=datetime.now(UTC))] == ["old"]
    await store.close()
