"""What is specific to PostgreSQL: SQL plans, schema setup, loops, processes, driver errors.

The behaviour every backend shares is in ``test_contract.py``; here the server on this machine
is used directly, each test in its own schema (dropped afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from typing import Any

import asyncpg
import pytest

from symphony_nb import (
    ConflictError,
    CorruptEntityError,
    InMemoryRepository,
    StorageError,
    Task,
    TaskPriority,
    TaskStatus,
    open_repository,
)
from symphony_nb.backends.postgres import BULK_THRESHOLD, SCHEMA_VERSION, PostgresRepository
from tests import pg
from tests.backends import backend_store

pytestmark = pytest.mark.postgres
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def _no_stale_schemas() -> None:
    """Drop schemas left behind by killed test runs (their process is gone)."""
    with contextlib.suppress(pg.ServerUnavailable):
        asyncio.run(pg.drop_stale_schemas())


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh schema name on the test server, dropped afterwards."""
    try:
        async with pg.schema() as name:
            yield name
    except pg.ServerUnavailable as exc:
        pytest.skip(f"postgres: {exc}")


@pytest.fixture
async def repo(schema: str) -> AsyncIterator[PostgresRepository[Task]]:
    async with PostgresRepository(Task, pg.dsn(), schema=schema) as repository:
        yield repository


async def fetch(sql: str, *args: Any) -> list[Any]:
    conn = await pg.connect()
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def tasks(count: int) -> list[Task]:
    statuses = list(TaskStatus)
    priorities = list(TaskPriority)
    return [
        Task(
            id=f"task-{i:05d}",
            name=f"task {i}",
            status=statuses[i % len(statuses)],
            priority=priorities[i % len(priorities)],
            created_at=T0 + timedelta(minutes=i),
            input_data={"n": i % 7, "tag": "odd" if i % 2 else "even", "it's": i % 3},
        )
        for i in range(count)
    ]


# ---------------------------------------------------------------- queries in the database


FILTERS: list[dict[str, Any]] = [
    {"status": "pending"},
    {"status": {"$ne": "pending"}, "priority": {"$in": ["high", "critical"]}},
    {"created_at": {"$gte": T0 + timedelta(minutes=10), "$lt": T0 + timedelta(minutes=50)}},
    {"input_data.n": {"$gt": 3}},
    {"input_data.n": {"$in": [1, 2.0, None]}},
    {"input_data.tag": {"$contains": "dd"}},
    {"input_data.it's": 2},
    {"input_data.missing": None},
    {"input_data.missing": {"$exists": False}, "output_data": {"$exists": False}},
    {"name": {"$lte": "task 5"}},
    {"input_data.tag": {"$in": []}},
    {"input_data.tag": {"$nin": []}, "input_data.n": {"$ne": 3}},
]


@pytest.mark.parametrize("criteria", FILTERS)
async def test_filters_match_the_in_memory_reference(
    repo: PostgresRepository[Task], criteria: dict[str, Any]
) -> None:
    data = tasks(60)
    reference = InMemoryRepository(Task)
    await reference.save_many([t.model_copy() for t in data])
    await repo.save_many(data)
    for order in (None, "-priority", ["status", "-created_at"]):
        expected = [t.id for t in await reference.find_all(criteria, order_by=order)]
        found = [t.id for t in await repo.find_all(criteria, order_by=order, limit=1000)]
        assert found == expected, (criteria, order)
    assert await repo.count(criteria) == await reference.count(criteria)


async def test_dict_sub_keys_are_bound_parameters_not_sql(repo: PostgresRepository[Task]) -> None:
    await repo.save_many(tasks(9))
    hostile = "x') OR true OR ('1"
    assert await repo.find_all({f"input_data.{hostile}": 1}) == []
    assert await repo.count({"input_data.it's": 0}) == 3
    assert await repo.count() == 9


async def explain(repo: PostgresRepository[Task], criteria: dict[str, Any]) -> str:
    from symphony_nb._filters import Query, parse_filter
    from symphony_nb.backends._pg_sql import select_sql

    sql, params = select_sql(
        Task, backend_store(repo)._qualified, Query(parse_filter(Task, criteria))
    )
    conn = await pg.connect()
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            rows = await conn.fetch("EXPLAIN " + sql, *params)
    finally:
        await conn.close()
    return "\n".join(row[0] for row in rows)


async def test_indexed_filters_use_the_default_indexes(repo: PostgresRepository[Task]) -> None:
    await repo.save_many(tasks(50))
    plan = await explain(repo, {"status": TaskStatus.RUNNING})
    assert "task_status_idx" in plan, plan
    plan = await explain(repo, {"priority": {"$in": ["high", "low"]}})
    assert "task_priority_idx" in plan, plan
    plan = await explain(repo, {"created_at": {"$gte": T0 + timedelta(minutes=40)}})
    assert "task_created_at_idx" in plan, plan
    plan = await explain(repo, {"agent_id": "a1"})
    assert "agent_id" in plan.split("Filter:")[1], plan  # not indexed unless asked for


async def test_more_indexes_can_be_declared(schema: str) -> None:
    async with PostgresRepository(Task, pg.dsn(), schema=schema, indexes=["agent_id"]) as repo:
        await repo.save(Task(name="a", agent_id="a1"))
        assert "task_agent_id_idx" in await explain(repo, {"agent_id": "a1"})


async def test_dict_keys_can_be_indexed_as_on_sqlite(schema: str) -> None:
    hostile = "kind); DROP TABLE task; --"
    indexes = ["input_data.kind", f"input_data.{hostile}", "input_data.a_b", "input_data.a.b"]
    async with PostgresRepository(Task, pg.dsn(), schema=schema, indexes=indexes) as repo:
        await repo.save_many(
            [
                Task(id="s", name="s", input_data={"kind": "summary", hostile: "x"}),
                Task(id="o", name="o", input_data={"kind": "other", "a_b": "1", "a": {"b": "2"}}),
            ]
        )
        assert [t.id for t in await repo.find_all({"input_data.kind": "summary"})] == ["s"]
        assert [t.id for t in await repo.find_all({f"input_data.{hostile}": "x"})] == ["s"]
        assert [t.id for t in await repo.find_all({"input_data.a.b": "2"})] == ["o"]
        names = {
            row[0]
            for row in await fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'task'",
                schema,
            )
        }
        assert len(names) == 3 + len(indexes) + 2  # defaults, declared, schema version, key
        for key in ("kind", hostile):
            plan_text = await explain(repo, {f"input_data.{key}": "summary"})
            assert "Index Scan" in plan_text and "task_" in plan_text, plan_text


# ---------------------------------------------------------------- writes


@pytest.mark.parametrize("fresh_count", [3, BULK_THRESHOLD + 500])
async def test_save_many_is_all_or_nothing(
    repo: PostgresRepository[Task], fresh_count: int
) -> None:
    first = tasks(3)
    await repo.save_many(first)
    stale = first[1].model_copy(update={"version": 0})
    fresh = tasks(3 + fresh_count)[3:]
    with pytest.raises(ConflictError) as info:
        await repo.save_many([*fresh, stale])
    assert info.value.entity_id == first[1].id
    assert (info.value.given, info.value.stored) == (0, 1)
    assert await repo.count() == 3
    assert {t.version for t in fresh} == {0}
    await repo.save_many([*fresh, first[1]])  # the bulk path writes and bumps versions too
    assert await repo.count() == 3 + fresh_count
    assert (await repo.get(first[1].id)).version == 2
    assert {t.version for t in fresh} == {1}


async def test_bulk_insert_racing_another_insert_falls_back_to_version_checks(
    schema: str,
) -> None:
    application = f"bulkrace_{schema[-10:]}"
    repo = PostgresRepository(Task, f"{pg.dsn()}?application_name={application}", schema=schema)
    await repo.count()
    batch = tasks(BULK_THRESHOLD + 10)
    other = await pg.connect()
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.execute(
            f'INSERT INTO "{schema}".task (id, version, doc) VALUES ($1, 1, $2::jsonb)',
            batch[-1].id,
            batch[-1].model_copy(update={"version": 1}).model_dump_json(),
        )
        saving = asyncio.ensure_future(repo.save_many(batch))
        waiting = (
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE NOT l.granted AND a.application_name = $1"
        )
        while not saving.done() and (await other.fetchval(waiting, application)) == 0:
            await asyncio.sleep(0.01)  # until the COPY waits for the uncommitted row
        assert not saving.done()
        await transaction.commit()
        with pytest.raises(ConflictError) as info:
            await saving
    finally:
        await other.close()
        await repo.close()
    assert info.value.entity_id == batch[-1].id
    assert (info.value.given, info.value.stored) == (0, 1)
    assert (await fetch(f'SELECT count(*) FROM "{schema}".task'))[0][0] == 1


async def test_racing_inserts_of_one_id_do_not_both_win(schema: str) -> None:
    async with (
        PostgresRepository(Task, pg.dsn(), schema=schema) as one,
        PostgresRepository(Task, pg.dsn(), schema=schema) as two,
    ):
        await one.count()
        for round_ in range(10):
            entity_id = f"race-{round_}"
            results = await asyncio.gather(
                one.save(Task(id=entity_id, name="one")),
                two.save(Task(id=entity_id, name="two")),
                return_exceptions=True,
            )
            assert sorted(type(r).__name__ for r in results) == ["ConflictError", "str"]
            assert (await one.get(entity_id)).version == 1


async def test_driver_errors_become_storage_errors(
    repo: PostgresRepository[Task], schema: str
) -> None:
    await repo.save(Task(id="a", name="a"))
    await fetch(f'DROP TABLE "{schema}".task')
    with pytest.raises(StorageError, match="failed") as info:
        await repo.save(Task(name="after the table vanished"))
    assert not isinstance(info.value, asyncpg.PostgresError)
    assert "task" in str(info.value)


async def test_a_killed_connection_is_a_storage_error_then_the_pool_recovers(
    schema: str,
) -> None:
    application = f"killed_{schema[-10:]}"
    url = f"{pg.dsn()}?application_name={application}"
    waiting = (
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE NOT l.granted AND a.application_name = $1"
    )
    async with PostgresRepository(Task, url, schema=schema) as repo:
        await repo.save(Task(id="a", name="a"))
        locker = await pg.connect()
        try:
            async with locker.transaction():
                await locker.execute(f'LOCK TABLE "{schema}".task IN ACCESS EXCLUSIVE MODE')
                counting = asyncio.ensure_future(repo.count())
                pids: list[Any] = []
                while not counting.done() and not pids:
                    await asyncio.sleep(0.01)  # until the count waits for the lock
                    pids = list(await locker.fetch(waiting, application))
                await locker.execute("SELECT pg_terminate_backend($1)", pids[0][0])
                with pytest.raises(StorageError, match="(counting|querying) failed") as info:
                    await counting
        finally:
            await locker.close()
        assert repo.url in str(info.value)
        assert await repo.count() == 1


# ---------------------------------------------------------------- schema


async def test_corrupt_row_names_schema_table_and_id(
    repo: PostgresRepository[Task], schema: str
) -> None:
    await repo.save(Task(id="bad", name="fine"))
    await fetch(f"UPDATE \"{schema}\".task SET doc = jsonb_set(doc, '{{status}}', '\"bogus\"')")
    with pytest.raises(CorruptEntityError, match=rf"{schema}\.task id 'bad'.*status"):
        await repo.find_by_id("bad")
    with pytest.raises(CorruptEntityError, match=rf"{schema}\.task id 'bad'"):
        await repo.find_all()


async def test_newer_schema_version_is_refused(schema: str) -> None:
    async with PostgresRepository(Task, pg.dsn(), schema=schema) as repo:
        await repo.count()
    await fetch(
        f"UPDATE \"{schema}\"._symphony_meta SET value = $1 WHERE key = 'schema_version'",
        str(SCHEMA_VERSION + 1),
    )
    async with PostgresRepository(Task, pg.dsn(), schema=schema) as repo:
        with pytest.raises(StorageError, match=r"layout version 2, newer .* upgrade symphony_nb"):
            await repo.count()


async def test_schema_url_parameter_and_open_repository(schema: str) -> None:
    repo = open_repository(Task, f"{pg.dsn()}?schema={schema}")
    assert isinstance(repo, PostgresRepository)
    async with repo:
        assert repo.schema == schema
        await repo.save(Task(id="via-url", name="x"))
    tables = await fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
        schema,
    )
    assert [row[0] for row in tables] == ["_symphony_meta", "task"]


def test_several_processes_create_the_schema_at_once() -> None:
    name = pg.unique_schema()
    try:
        with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(pg.open_worker, pg.dsn(), name, f"p{i}") for i in range(4)]
            counts = [future.result(timeout=120) for future in futures]
    except pg.ServerUnavailable as exc:
        pytest.skip(f"postgres: {exc}")
    finally:
        asyncio.run(pg.drop_schema(name))
    assert all(1 <= count <= 4 for count in counts)
    assert max(counts) == 4


# ---------------------------------------------------------------- event loops


async def connections(application: str) -> int:
    rows = await fetch(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application
    )
    return int(rows[0][0])


async def test_same_object_with_await_and_sync_in_any_order(schema: str) -> None:
    application = f"loops_{schema[-10:]}"
    url = f"{pg.dsn()}?application_name={application}"
    repo = PostgresRepository(Task, url, schema=schema)
    try:
        for round_ in range(3):
            await repo.save(Task(id=f"a{round_}", name="awaited"))
            repo.sync.save(Task(id=f"s{round_}", name="sync"))
            assert await repo.count() == 2 * round_ + 2
            assert len(repo.sync.find_all()) == 2 * round_ + 2
        assert len(backend_store(repo)._pools._entries) == 2
        assert await connections(application) >= 2
    finally:
        await repo.close()
    assert backend_store(repo)._pools._entries == {}
    assert await connections(application) == 0
    await repo.close()  # twice is fine


async def test_sync_close_closes_the_callers_pool_once_it_is_free(schema: str) -> None:
    application = f"syncclose_{schema[-10:]}"
    repo = PostgresRepository(Task, f"{pg.dsn()}?application_name={application}", schema=schema)
    await repo.save(Task(id="a", name="awaited"))
    assert repo.sync.count() == 1
    repo.sync.close()  # this loop is blocked meanwhile: its pool closes when it is free
    for _ in range(100):
        if not backend_store(repo)._pools._entries:
            break
        await asyncio.sleep(0.05)
    assert backend_store(repo)._pools._entries == {}
    assert await connections(application) == 0


def test_pools_close_when_their_loop_shuts_down() -> None:
    async def use(repo: PostgresRepository[Task], entity_id: str) -> int:
        await repo.save(Task(id=entity_id, name=entity_id))
        return await repo.count()

    try:
        name = pg.unique_schema()
        asyncio.run(pg.ping())
    except pg.ServerUnavailable as exc:
        pytest.skip(f"postgres: {exc}")
    application = f"runs_{name[-10:]}"
    repo = PostgresRepository(Task, f"{pg.dsn()}?application_name={application}", schema=name)
    try:
        assert asyncio.run(use(repo, "one")) == 1
        assert asyncio.run(use(repo, "two")) == 2  # a new loop: a new pool, the old one closed
        assert repo.sync.count() == 2
        assert asyncio.run(connections(application)) == 1  # only the sync facade's pool
        repo.sync.close()
        assert asyncio.run(connections(application)) == 0
    finally:
        asyncio.run(pg.drop_schema(name))


# ---------------------------------------------------------------- bad input


async def test_unreachable_server_is_a_storage_error_with_masked_url() -> None:
    repo = PostgresRepository(Task, "postgresql://alice:s3cret@127.0.0.1:1/test", schema="x")
    with pytest.raises(StorageError) as info:
        await repo.count()
    message = str(info.value)
    assert "postgresql://alice:***@127.0.0.1:1/test" in message
    assert "s3cret" not in message
    assert "connecting failed" in message
    await repo.close()


async def test_bad_database_and_bad_urls_are_storage_errors() -> None:
    repo = PostgresRepository(Task, "postgresql://postgres@127.0.0.1:5432/no_such_db_here")
    with pytest.raises(StorageError, match="no_such_db_here"):
        await repo.find_all()
    await repo.close()
    with pytest.raises(StorageError, match="not a PostgreSQL URL"):
        PostgresRepository(Task, "mysql://u@h/db")
    with pytest.raises(StorageError, match="invalid PostgreSQL schema name"):
        PostgresRepository(Task, pg.dsn(), schema='x"; DROP TABLE y; --')


def test_package_imports_without_asyncpg_and_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "import symphony_nb\n"
        "try:\n"
        "    symphony_nb.PostgresRepository(symphony_nb.Task, 'postgresql://h/db')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'symphony_nb[postgres]'" in result.stdout


# A password whose pieces (Zq9x, Wk7v) are each distinctive, joined by every delimiter a URL
# can get wrong. ``None`` as the parsed password: the URL must be refused as malformed.
HOSTILE_URLS: list[tuple[str, str | None]] = [
    ("postgresql://app@127.0.0.1:1/test?password=Zq9xWk7v", "Zq9xWk7v"),
    ("postgresql://app@127.0.0.1:1/test?sslmode=disable&password=Zq9x%26Wk7v", "Zq9x&Wk7v"),
    ("postgresql://app@127.0.0.1:1/test?PASSWORD=Zq9xWk7v", "Zq9xWk7v"),
    ("postgresql://app:Zq9x/Wk7v@127.0.0.1:1/test", None),
    ("postgresql://app:1234/Zq9xWk7v@127.0.0.1:1/test", None),
    ("postgresql://app:Zq9x@Wk7v@127.0.0.1:1/test", "Zq9x@Wk7v"),
    ("postgresql://app:Zq9x:Wk7v@127.0.0.1:1/test", "Zq9x:Wk7v"),
    ("postgresql://app:Zq9x%40Wk7v@127.0.0.1:1/test", "Zq9x@Wk7v"),
    ("postgresql://app:Zq9x%2FWk7v@127.0.0.1:1/test", "Zq9x/Wk7v"),
    ("postgresql://app:Zq9x#Wk7v@127.0.0.1:1/test", None),
    ("postgresql://app:Zq9x?Wk7v@127.0.0.1:1/test", None),
    ("postgresql://app:Zq9x?a=Wk7v@127.0.0.1:1/test", None),
    ("postgresql://app:Zq9xWk7v", None),
    ("postgresql://app:Zq9xWk7v/test", None),
    ("postgresql://app:Zq9x@127.0.0.1:1/test?password=Wk7v", "Zq9x"),
    ("postgresql://app@127.0.0.1:1/test?password=Zq9x&Wk7v&sslmode=disable", None),
]


def _assert_hidden(text: str) -> None:
    for piece in ("Zq9x", "Wk7v", "1234"):
        assert piece not in text, text


@pytest.mark.parametrize(("url", "password"), HOSTILE_URLS)
async def test_no_form_of_a_password_appears_in_repr_or_errors(
    url: str, password: str | None
) -> None:
    import traceback

    from symphony_nb import InvalidUrlError, SymphonyError
    from symphony_nb._storage import mask_url
    from symphony_nb.backends._pg_schema import split_url

    _assert_hidden(mask_url(url))
    if password is None:
        with pytest.raises(InvalidUrlError) as refused:
            PostgresRepository(Task, url)
        assert isinstance(refused.value, ValueError) and isinstance(refused.value, SymphonyError)
        _assert_hidden(str(refused.value))
        with pytest.raises(InvalidUrlError) as opened:
            open_repository(Task, url)
        _assert_hidden(str(opened.value))
        return
    parsed = split_url(url)
    assert parsed.password == password
    _assert_hidden(parsed.dsn + repr(parsed))  # the driver gets the password on its own
    repo = PostgresRepository(Task, url, schema="x")
    _assert_hidden(repr(repo) + repo.url)
    with pytest.raises(StorageError) as failed:
        await repo.count()
    _assert_hidden("".join(traceback.format_exception(failed.value)))
    await repo.close()


def test_an_ssl_key_password_is_masked_though_the_driver_needs_it_in_the_dsn() -> None:
    from symphony_nb.backends._pg_schema import split_url

    parsed = split_url("postgresql://app@127.0.0.1:1/test?sslpassword=Zq9xWk7v")
    assert "sslpassword=Zq9xWk7v" in parsed.dsn
    _assert_hidden(repr(parsed) + parsed.masked + parsed.scrub("bad key: Zq9xWk7v"))
    _assert_hidden(repr(PostgresRepository(Task, parsed.dsn)))


async def test_a_password_in_the_query_reaches_the_server(schema: str) -> None:
    url = pg.dsn() + f"?password=Zq9xWk7v&schema={schema}"
    async with PostgresRepository(Task, url) as repo:
        await repo.save(Task(id="a", name="a"))
        assert repo.schema == schema and await repo.count() == 1
        _assert_hidden(repr(repo))
