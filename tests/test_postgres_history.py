"""What is specific to PostgreSQL's history: one statement per change, races, plans, layout.

The behaviour every store with history shares is in ``test_history.py``; here the server on
this machine is used directly, each test in its own schema (dropped afterwards).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from symphony_nb import ConflictError, StorageError, Task
from symphony_nb._filters import Condition, Query, parse_filter
from symphony_nb.backends._pg_sql import count_sql, select_sql
from symphony_nb.backends.postgres import BULK_THRESHOLD, PostgresRepository
from symphony_nb.stores import SCHEMA_KEY
from tests import pg
from tests.backends import backend_store, written_behind
from tests.test_schema_evolution import Note

pytestmark = pytest.mark.postgres


class Plain(BaseModel):
    """A model without versions: no version check orders its concurrent writers."""

    id: str
    n: int = 0


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh schema name on the test server, dropped afterwards."""
    try:
        async with pg.schema() as name:
            yield name
    except pg.ServerUnavailable as exc:
        pytest.skip(f"postgres: {exc}")


async def fetch(sql: str, *args: Any) -> list[Any]:
    conn = await pg.connect()
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def execute(*statements: str) -> None:
    conn = await pg.connect()
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def kept(schema: str, table: str = "task") -> str:
    return f'"{schema}"."{table}:history"'


def refuse(schema: str, table: str, when: str) -> list[str]:
    """Statements making every ``when`` (``AFTER INSERT``...) on ``table`` fail."""
    return [
        f'CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS '
        "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
        f'CREATE TRIGGER refuse {when} ON {table} FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".refuse()',
    ]


def many(count: int, name: str = "n") -> list[Task]:
    return [Task(id=f"t{i:05d}", name=name) for i in range(count)]


# ---------------------------------------------------------------- one statement, or none


@pytest.mark.parametrize("count", [1, BULK_THRESHOLD + 10])
async def test_a_refused_revision_undoes_the_write(schema: str, count: int) -> None:
    async with PostgresRepository(Task, pg.dsn(), schema=schema, history=True) as repo:
        tasks = many(count)
        await repo.save_many(tasks)
        await execute(*refuse(schema, kept(schema), "AFTER INSERT"))
        with pytest.raises(StorageError, match="refused by the test"):
            await repo.save_many([task.model_copy(update={"name": "changed"}) for task in tasks])
        assert {task.name for task in await repo.find_all()} == {"n"}
        rows = await fetch(f"SELECT count(*), max(version) FROM {kept(schema)}")
        assert tuple(rows[0]) == (count, 1)


@pytest.mark.parametrize("count", [1, BULK_THRESHOLD + 10])
async def test_a_refused_write_keeps_no_revision_and_trims_nothing(schema: str, count: int) -> None:
    async with PostgresRepository(Task, pg.dsn(), schema=schema, history=2) as repo:
        tasks = many(count)
        for name in ("a", "b", "c"):
            for task in tasks:
                task.name = name
            await repo.save_many(tasks)
        before = await fetch(f"SELECT id, version FROM {kept(schema)} ORDER BY id, version")
        assert [version for _, version in before[:2]] == [2, 3]
        await execute(*refuse(schema, f'"{schema}".task', "BEFORE UPDATE OR DELETE"))
        for task in tasks:
            task.name = "d"
        with pytest.raises(StorageError, match="refused by the test"):
            await repo.save_many(tasks)
        with pytest.raises(StorageError, match="refused by the test"):
            await repo.delete(tasks[0].id) if count == 1 else await repo.update(tasks[0])
        after = await fetch(f"SELECT id, version FROM {kept(schema)} ORDER BY id, version")
        assert after == before


async def test_without_history_no_history_table_is_made(schema: str) -> None:
    async with PostgresRepository(Task, pg.dsn(), schema=schema) as repo:
        await repo.save_many(many(3))
        await repo.delete("t00000")
        assert await repo.purge("t00001") == 1
    (row,) = await fetch("SELECT to_regclass($1)", kept(schema))
    assert row[0] is None


async def test_purge_without_history_erases_the_revisions_others_kept(schema: str) -> None:
    async with (
        PostgresRepository(Task, pg.dsn(), schema=schema, history=True) as keeping,
        PostgresRepository(Task, pg.dsn(), schema=schema) as plain,
    ):
        task = Task(id="p", name="secret")
        await keeping.save(task)
        await keeping.save(task)
        assert await plain.purge("p") == 3
        assert await fetch(f"SELECT * FROM {kept(schema)}") == []


# ---------------------------------------------------------------- races


async def test_concurrent_writers_of_one_id_number_every_revision_once(schema: str) -> None:
    async with (
        PostgresRepository(Plain, pg.dsn(), schema=schema, history=True) as one,
        PostgresRepository(Plain, pg.dsn(), schema=schema, history=True) as two,
    ):
        await one.count()
        saves = [(one if n % 2 else two).save(Plain(id="x", n=n)) for n in range(30)]
        await asyncio.gather(*saves)
        history = await one.history("x")
        assert [r.version for r in history] == list(range(1, 31))
        assert [r.op for r in history] == ["create"] + ["update"] * 29
        assert sorted(r.entity.n for r in history if r.entity) == list(range(30))
        assert history[-1].entity == await one.get("x")


async def test_a_write_planned_from_a_stale_state_plans_again(schema: str) -> None:
    async with (
        PostgresRepository(Plain, pg.dsn(), schema=schema, history=True) as one,
        PostgresRepository(Plain, pg.dsn(), schema=schema, history=True) as other,
    ):
        await one.save(Plain(id="x", n=1))
        history = backend_store(one)._history
        read = history.state
        calls = 0

        async def stale(conn: Any, ids: list[str]) -> Any:
            nonlocal calls
            calls += 1
            found = await read(conn, ids)
            if calls == 1:  # another writer commits between the read and the write
                await other.save(Plain(id="x", n=2))
            return found

        history.state = stale
        await one.save(Plain(id="x", n=3))
        assert calls == 2
        assert [(r.version, r.entity.n) for r in await one.history("x") if r.entity] == [
            (1, 1),
            (2, 2),
            (3, 3),
        ]
        assert (await one.get("x")).n == 3


async def test_a_stale_version_found_on_the_second_read_is_a_conflict(schema: str) -> None:
    async with (
        PostgresRepository(Task, pg.dsn(), schema=schema, history=True) as one,
        PostgresRepository(Task, pg.dsn(), schema=schema, history=True) as other,
    ):
        task = Task(id="t", name="a")
        await one.save(task)
        history = backend_store(one)._history
        read = history.state

        async def stale(conn: Any, ids: list[str]) -> Any:
            found = await read(conn, ids)
            history.state = read
            await other.save(await other.get("t"))
            return found

        history.state = stale
        with pytest.raises(ConflictError):
            await one.save(task)
        assert [r.version for r in await one.history("t")] == [1, 2]


async def test_history_turned_on_by_several_at_once_keeps_one_baseline(schema: str) -> None:
    async with PostgresRepository(Task, pg.dsn(), schema=schema) as plain:
        await plain.save_many(many(50))
    repos = [PostgresRepository(Task, pg.dsn(), schema=schema, history=True) for _ in range(4)]
    try:
        await asyncio.gather(*(repo.count() for repo in repos))
    finally:
        for repo in repos:
            await repo.close()
    (row,) = await fetch(f"SELECT count(*), count(DISTINCT id), min(reason) FROM {kept(schema)}")
    assert tuple(row) == (50, 50, "baseline: stored before history was kept")


async def test_bulk_writes_keep_baselines_of_what_others_wrote_and_trim(schema: str) -> None:
    count = BULK_THRESHOLD + 10
    async with (
        PostgresRepository(Task, pg.dsn(), schema=schema, history=2) as keeping,
        PostgresRepository(Task, pg.dsn(), schema=schema) as plain,
    ):
        tasks = many(count, "kept")
        await keeping.save_many(tasks)
        unseen = await plain.find_all()
        for task in unseen:
            task.name = "unseen"
        await plain.save_many(unseen)
        for task in unseen:
            task.name = "seen"
        await keeping.save_many(unseen)
        rows = await fetch(
            f"SELECT version, op, reason, doc->>'name' FROM {kept(schema)} "
            "WHERE id = $1 ORDER BY version",
            tasks[-1].id,
        )
        baseline = "baseline: stored before history was kept"
        assert [tuple(row) for row in rows] == [
            (2, "update", baseline, "unseen"),
            (3, "update", None, "seen"),
        ]
        (total,) = await fetch(f"SELECT count(*) FROM {kept(schema)}")
        assert total[0] == 2 * count


# ---------------------------------------------------------------- plans


async def explain(sql: str, params: list[Any]) -> str:
    conn = await pg.connect()
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            rows = await conn.fetch("EXPLAIN " + sql, *params)
    finally:
        await conn.close()
    return "\n".join(row[0] for row in rows)


async def test_as_of_pages_stream_from_the_key_and_probes_use_the_schema_index(
    schema: str,
) -> None:
    async with PostgresRepository(Task, pg.dsn(), schema=schema, history=True) as repo:
        tasks = many(200)
        for name in ("a", "b", "c"):
            for task in tasks:
                task.name = name
            await repo.save_many(tasks)
        when = datetime.now(UTC)
        stood = backend_store(repo)._history.stood
        sql, params = select_sql(Task, stood, Query(limit=10), [when])
        plan = await explain(sql, params)
        assert "task:history_pkey" in plan and "Sort" not in plan, plan
        sql, params = select_sql(Task, stood, Query(parse_filter(Task, {"name": "b"})), [when])
        assert "Sort" not in await explain(sql, params)
        probe = (Condition((SCHEMA_KEY,), "$gt", 1),)
        sql, params = count_sql(Task, stood, probe, [when])
        plan = await explain(sql, params)
        assert "task:history_schema_idx" in plan, plan
        page = await repo.find_all(as_of=when, limit=3, offset=1)
        assert [(t.id, t.name) for t in page] == [("t00001", "c"), ("t00002", "c"), ("t00003", "c")]


async def test_as_of_probes_of_a_versioned_schema_use_the_history_indexes(schema: str) -> None:
    async with PostgresRepository(Note, pg.dsn(), schema=schema, history=True) as repo:
        await repo.save_many([Note(id=f"n{i}", title="t") for i in range(50)])
        stood = backend_store(repo)._history.stood
        key = (SCHEMA_KEY,)
        for probe, index in (
            (Condition(key, "$exists", False), "note:history_schema_none_idx"),
            (Condition(key, "$lt", 3), "note:history_schema_idx"),
        ):
            sql, params = count_sql(Note, stood, (probe,), [datetime.now(UTC)])
            plan = await explain(sql, params)
            assert index in plan, (probe, plan)
        assert len(await repo.find_all(as_of=datetime.now(UTC))) == 50


# ---------------------------------------------------------------- caches


async def test_a_purge_reaches_the_caches_of_other_repositories(schema: str) -> None:
    async with (
        PostgresRepository(Task, pg.dsn(), schema=schema, history=True) as keeping,
        PostgresRepository(Task, pg.dsn(), schema=schema, cache=True) as cached,
    ):
        await keeping.save(Task(id="c", name="cached"))
        await written_behind(cached)
        assert await cached.find_by_id("c") is not None
        assert await cached.find_by_id("c") is not None  # from the cache now
        assert await keeping.purge("c") == 2
        await written_behind(cached)
        assert await cached.find_by_id("c") is None
