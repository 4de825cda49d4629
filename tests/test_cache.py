"""The read cache: options, copies, late fills, shared misses, errors, bounds, stats, feeds.

The whole contract suite also runs through it on every backend (the ``cached:<backend>``
backends of ``tests/backends.py``); this file checks what only a cache can get wrong.
Writes by other processes are checked in ``tests/reliability/test_cache_coherence.py``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, SecretStr

from symphony_nb import (
    Cache,
    CacheStats,
    FileSystemRepository,
    InMemoryRepository,
    InvalidArgumentError,
    Repository,
    ServiceRegistry,
    SQLiteRepository,
    StorageError,
    Task,
    open_repository,
)
from symphony_nb._cache import CacheLayer, query_key
from symphony_nb._schema import SchemaLayer
from symphony_nb.backends._file_changes import MARKER_NAME
from symphony_nb.stores import (
    Changed,
    ChangeFeed,
    Condition,
    Counted,
    Document,
    Query,
    Record,
    Selection,
    Store,
    StoreLayer,
)
from tests.backends import BACKENDS, backend_store, base, written_behind
from tests.test_store_seam import DictStore

CACHED = sorted(name for name in BACKENDS if name.startswith("cached:"))


class Quiet(ChangeFeed):
    """A feed for a store written only through its cache: nothing ever changes elsewhere."""

    def poll(self) -> Changed:
        return Changed.NOTHING


class QuietStore(DictStore):
    def change_feed(self) -> ChangeFeed:
        return Quiet()


class Gate(StoreLayer):
    """Counts reads; a read can be held after it has read, until ``release`` is set."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.gets = self.selects = self.counts = 0
        self.hold = False
        self.reading = asyncio.Event()
        self.release = asyncio.Event()
        self.fail: BaseException | None = None

    async def _held(self) -> None:
        if self.hold:
            self.reading.set()
            await self.release.wait()
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error

    async def get(self, entity_id: str) -> Document | None:
        self.gets += 1
        document = await self.inner.get(entity_id)
        await self._held()
        return document

    async def select(self, query: Query) -> Selection:
        self.selects += 1
        found = await self.inner.select(query)
        await self._held()
        return found

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        self.counts += 1
        counted = await self.inner.count(conditions)
        await self._held()
        return counted


def gated(store: Store | None = None, **options: Any) -> tuple[Repository[Task], Gate]:
    """A cached repository whose cache reads through a Gate (above the schema layer)."""
    gate = Gate(SchemaLayer(store or QuietStore(Task)))
    return Repository(Task, gate, cache=Cache(**options)), gate


# ---------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options",
    [
        {"max_entries": 0},
        {"max_entries": -1},
        {"max_entries": 1.5},
        {"max_entries": True},
        {"max_entries": "10"},
        {"max_entries": None},
        {"strict": "yes"},
        {"strict": 1},
        {"max_entris": 3},
    ],
)
def test_bad_options_are_refused_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options)).rstrip("s")):
        Cache(**options)


@pytest.mark.parametrize("value", [5, "yes", 1.0, Cache, object()])
def test_a_cache_argument_other_than_bool_none_or_cache_is_refused(
    value: object, tmp_path: Path
) -> None:
    makers = [
        lambda: InMemoryRepository(Task, cache=value),  # type: ignore[arg-type]
        lambda: FileSystemRepository(Task, tmp_path / "f", cache=value),  # type: ignore[arg-type]
        lambda: SQLiteRepository(Task, tmp_path / "x.db", cache=value),  # type: ignore[arg-type]
        lambda: open_repository(Task, "memory://", cache=value),  # type: ignore[arg-type]
        lambda: ServiceRegistry().configure("memory://", cache=value),  # type: ignore[arg-type]
        lambda: Repository(Task, DictStore(Task), cache=value),  # type: ignore[arg-type]
    ]
    for make in makers:
        with pytest.raises(InvalidArgumentError, match="cache must be"):
            make()


def test_options_are_values() -> None:
    assert Cache() == Cache(max_entries=10_000, strict=False)
    assert Cache(max_entries=5) != Cache(max_entries=6)
    assert repr(Cache(max_entries=5, strict=True)) == "Cache(max_entries=5, strict=True)"
    with pytest.raises(AttributeError):
        Cache().max_entries = 3  # type: ignore[misc]


def test_a_store_that_cannot_tell_about_changes_gets_no_cache() -> None:
    with pytest.raises(InvalidArgumentError, match="change_feed"):
        Repository(Task, DictStore(Task), cache=True)
    assert Repository(Task, DictStore(Task)).cache_stats() is None


async def test_every_way_of_opening_takes_the_option(tmp_path: Path) -> None:
    from symphony_nb.backends.postgres import PostgresRepository
    from tests import pg

    repos: list[Repository[Any]] = [
        InMemoryRepository(Task, cache=True),
        FileSystemRepository(Task, tmp_path / "files", cache=Cache(max_entries=7)),
        SQLiteRepository(Task, tmp_path / "a.db", cache=True),
        open_repository(Task, "memory://", cache=True),
        open_repository(Task, tmp_path / "files2", cache=True),
        open_repository(Task, f"sqlite:///{tmp_path / 'b.db'}", cache=True),
        ServiceRegistry()
        .configure(f"sqlite:///{tmp_path / 'c.db'}", cache=True)
        .get_repository("agent_config"),
        PostgresRepository(Task, pg.dsn(), schema=pg.unique_schema(), cache=True),
        open_repository(Task, f"{pg.dsn()}?schema={pg.unique_schema()}", cache=True),
    ]
    try:
        for repo in repos:
            assert isinstance(repo.store, CacheLayer), repo
            assert isinstance(repo.cache_stats(), CacheStats)
        assert repos[1].cache_stats().max_entries == 7  # type: ignore[union-attr]
        assert InMemoryRepository(Task).cache_stats() is None
        assert open_repository(Task, "memory://", cache=False).cache_stats() is None
    finally:
        for repo in repos:
            await repo.close()


async def test_a_registered_scheme_gets_the_cache_too() -> None:
    from symphony_nb._storage import _OPENERS, register_scheme

    register_scheme("cachetest", lambda model, url: InMemoryRepository(model))
    try:
        repo = open_repository(Task, "cachetest://x", cache=True)
        await repo.save(Task(id="a", name="a"))
        await repo.get("a")
        assert (await repo.get("a")).name == "a"
        stats = repo.cache_stats()
        assert stats is not None and stats.hits == 1
    finally:
        del _OPENERS["cachetest"]


# ---------------------------------------------------------------------- what is kept


@pytest.mark.parametrize("backend", CACHED)
async def test_hot_reads_are_answered_from_memory(backend: str, tmp_path: Path) -> None:
    async with BACKENDS[backend](Task, tmp_path) as repo:
        await repo.save_many([Task(id=f"t{i}", name=f"n{i % 2}") for i in range(6)])
        await written_behind(repo)  # PostgreSQL: our own notification, once it is in
        first = await repo.get("t1")
        before = repo.cache_stats()
        assert before is not None
        for _ in range(5):
            assert await repo.get("t1") == first
            assert [t.id for t in await repo.find_all({"name": "n1"})] == ["t1", "t3", "t5"]
            assert await repo.count({"name": "n0"}) == 3
            assert await repo.find_by_id("missing") is None
        after = repo.cache_stats()
        assert after is not None
        assert after.hits - before.hits >= 4 * 4
        assert after.bypassed == before.bypassed


@pytest.mark.parametrize("backend", CACHED)
async def test_reads_return_copies(backend: str, tmp_path: Path) -> None:
    async with BACKENDS[backend](Task, tmp_path) as repo:
        await repo.save(Task(id="a", name="stored", input_data={"list": [1]}))
        one = await repo.get("a")
        one.name = "changed"
        one.input_data["list"].append(2)
        (listed,) = await repo.find_all()
        listed.tags.append("x")
        two = await repo.get("a")
        assert two.name == "stored" and two.input_data == {"list": [1]} and two.tags == []
        assert two is not one
        assert (await repo.find_all())[0].tags == []
        assert (await repo.find_all())[0] is not listed


async def test_selections_handed_out_are_copies() -> None:
    repo, _ = gated()
    await repo.save_many([Task(id="a", name="a"), Task(id="b", name="b")])
    query = Query()
    found = await repo.store.select(query)
    found.rows.clear()
    found.corrupt.append(("x", None))  # type: ignore[arg-type]
    again = await repo.store.select(query)
    assert [key for key, _ in again.rows] == ["a", "b"] and again.corrupt == []


async def test_own_writes_are_visible_at_once() -> None:
    repo, _gate = gated()
    task = Task(id="a", name="one")
    await repo.save(task)
    assert (await repo.get("a")).name == "one"
    assert await repo.count({"name": "one"}) == 1
    task.name = "two"
    assert await repo.update(task)
    assert (await repo.get("a")).name == "two"
    assert await repo.count({"name": "one"}) == 0
    await repo.save_many([Task(id="b", name="two")])
    assert [t.id for t in await repo.find_all({"name": "two"})] == ["a", "b"]
    assert await repo.delete("a")
    assert await repo.find_by_id("a") is None
    assert [t.id for t in await repo.find_all({"name": "two"})] == ["b"]


async def test_a_fill_that_began_before_a_write_never_keeps_the_older_value() -> None:
    repo, gate = gated()
    task = Task(id="a", name="old")
    await repo.save(task)
    gate.hold = True
    late = asyncio.create_task(repo.find_by_id("a"))
    late_list = asyncio.create_task(repo.find_all({"name": "old"}))
    late_count = asyncio.create_task(repo.count({"name": "old"}))
    await gate.reading.wait()  # the store has answered "old"; the cache has not kept it yet
    task.name = "new"
    gate.hold = False
    await repo.save(task)
    gate.release.set()
    assert (await late).name == "old"  # began before the write: either answer is right
    assert len(await late_list) == 1 and await late_count == 1
    assert (await repo.get("a")).name == "new"
    assert await repo.find_all({"name": "old"}) == []
    assert await repo.count({"name": "old"}) == 0


async def test_a_reader_after_a_write_never_shares_a_read_begun_before_it() -> None:
    repo, gate = gated()
    task = Task(id="a", name="old")
    await repo.save(task)
    gate.hold = True
    late = asyncio.create_task(repo.find_by_id("a"))
    await gate.reading.wait()
    task.name = "new"
    gate.hold = False
    await repo.save(task)
    after = asyncio.create_task(repo.find_by_id("a"))
    await asyncio.sleep(0.01)
    gate.release.set()
    assert (await late).name == "old"
    assert (await after).name == "new"


@pytest.mark.parametrize("backend", [name for name in CACHED if base(name) != "memory"])
async def test_a_late_fill_is_dropped_on_real_backends(backend: str, tmp_path: Path) -> None:
    async with BACKENDS[backend](Task, tmp_path) as plain:
        repo, gate = gated(backend_store(plain))
        task = Task(id="a", name="old")
        await repo.save(task)
        gate.hold = True
        late = asyncio.create_task(repo.find_by_id("a"))
        await gate.reading.wait()
        task.name = "new"
        gate.hold = False
        await repo.save(task)
        gate.release.set()
        await late
        assert (await repo.get("a")).name == "new"
        await repo.close()


async def test_concurrent_misses_for_one_key_make_one_store_read() -> None:
    repo, gate = gated()
    await repo.save(Task(id="a", name="a"))
    gate.hold = True
    readers = [asyncio.create_task(repo.find_by_id("a")) for _ in range(50)]
    lists = [asyncio.create_task(repo.find_all({"name": "a"})) for _ in range(20)]
    counts = [asyncio.create_task(repo.count()) for _ in range(20)]
    await gate.reading.wait()
    await asyncio.sleep(0.01)
    gate.release.set()
    found = await asyncio.gather(*readers)
    assert {task.name for task in found if task} == {"a"}
    assert len({id(task) for task in found}) == 50  # each reader its own copy
    assert [len(x) for x in await asyncio.gather(*lists)] == [1] * 20
    assert await asyncio.gather(*counts) == [1] * 20
    assert (gate.gets, gate.selects, gate.counts) == (1, 1, 1)


async def test_a_cancelled_reader_does_not_fail_the_others_sharing_its_read() -> None:
    repo, gate = gated()
    await repo.save(Task(id="a", name="a"))
    gate.hold = True
    first = asyncio.create_task(repo.find_by_id("a"))
    await gate.reading.wait()
    others = [asyncio.create_task(repo.find_by_id("a")) for _ in range(5)]
    await asyncio.sleep(0)
    first.cancel()
    gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert [task.name for task in await asyncio.gather(*others) if task] == ["a"] * 5


async def test_an_error_from_the_store_is_not_kept() -> None:
    repo, gate = gated()
    await repo.save(Task(id="a", name="a"))
    gate.hold = True
    gate.fail = StorageError("the disk is on fire")
    readers = [asyncio.create_task(repo.find_by_id("a")) for _ in range(5)]
    await gate.reading.wait()
    gate.release.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results), results
    assert gate.gets == 1  # shared, error and all
    assert (await repo.get("a")).name == "a"  # the next read asks the store again
    assert gate.gets == 2
    gate.fail = StorageError("again")
    gate.hold = False
    with pytest.raises(StorageError):
        await repo.count()
    assert await repo.count() == 1


async def test_memory_is_bounded_least_recently_used_first() -> None:
    repo, gate = gated(max_entries=3)
    await repo.save_many([Task(id=f"t{i}", name="n") for i in range(5)])
    for key in ("t0", "t1", "t2", "t0", "t3", "t4"):
        await repo.get(key)
    stats = repo.cache_stats()
    assert stats is not None and (stats.entries, stats.size, stats.evictions) == (3, 3, 2)
    reads = gate.gets
    await repo.get("t0")  # used most recently before t3 and t4: still there
    assert gate.gets == reads
    await repo.get("t1")  # the least recently used: gone
    assert gate.gets == reads + 1
    await repo.find_all()  # five rows: more than the cache may hold, never kept
    await repo.find_all()
    assert gate.selects == 2
    assert (await repo.find_all({"id": {"$in": ["t0", "t1"]}}))[0].id == "t0"
    stats = repo.cache_stats()
    assert stats is not None and stats.size <= 3


async def test_queries_that_differ_only_in_type_are_different_keys() -> None:
    repo = InMemoryRepository(Task, cache=True)
    await repo.save_many(
        [
            Task(id="bool", name="b", input_data={"flag": True}),
            Task(id="int", name="i", input_data={"flag": 1}),
            Task(id="float", name="f", input_data={"flag": 1.5}),
        ]
    )
    for _ in range(2):
        assert [t.id for t in await repo.find_all({"input_data.flag": True})] == ["bool"]
        assert [t.id for t in await repo.find_all({"input_data.flag": 1})] == ["int"]
        assert await repo.count({"input_data.flag": True}) == 1
        assert await repo.count({"input_data.flag": {"$gt": 1}}) == 1


async def test_an_uncacheable_query_runs_uncached() -> None:
    repo, _gate = gated()
    await repo.save(Task(id="a", name="a"))
    odd = Query((Condition(("name",), "$eq", ["a"]),))  # type: ignore[arg-type]
    assert query_key(odd) is not None
    strange = Query((Condition(("name",), "$eq", object()),))
    assert query_key(strange) is None
    found = await repo.store.select(Query((Condition(("name",), "$eq", "a"),)))
    assert len(found.rows) == 1
    before = repo.cache_stats()
    assert before is not None
    await repo.store.select(strange)
    await repo.store.select(strange)
    await repo.store.count(strange.conditions)
    after = repo.cache_stats()
    assert after is not None
    assert after.bypassed == before.bypassed + 3 and after.entries == before.entries


# ---------------------------------------------------------------------- stats and display


async def test_cache_stats_count_hits_misses_invalidations_and_evictions() -> None:
    repo, _ = gated(max_entries=2)
    task = Task(id="a", name="a")
    await repo.save_many([task, Task(id="b", name="b"), Task(id="c", name="c")])
    await repo.get("a")  # miss
    await repo.get("a")  # hit
    await repo.get("b")  # miss
    b = await repo.get("c")  # miss, evicts a
    b = await repo.get("b")  # hit
    b.name = "bb"
    await repo.save(b)  # invalidates b
    stats = repo.cache_stats()
    assert stats == CacheStats(
        hits=2,
        misses=3,
        bypassed=0,
        invalidations=1,
        evictions=1,
        entries=1,
        size=1,
        max_entries=2,
        strict=False,
    )
    assert stats.hit_rate == 0.4
    assert repo.sync.cache_stats() == stats


class Account(BaseModel):
    id: str
    owner: str
    token: SecretStr


async def test_nothing_the_cache_holds_is_shown() -> None:
    from symphony_nb import Keyring

    repo = InMemoryRepository(Account, keyring=Keyring({"k1": Keyring.generate()}), cache=True)
    await repo.save(Account(id="acct", owner="Ana", token=SecretStr("s3cret-token")))
    assert (await repo.get("acct")).owner == "Ana"
    stats = repo.cache_stats()
    assert stats is not None
    for shown in (repr(stats), stats._repr_html_(), repr(repo.store), repo._repr_html_()):
        assert "s3cret" not in shown and "Ana" not in shown, shown
    # What it keeps is above the secrets layer, yet every face still masks the secret.
    assert (await repo.get("acct")).token.get_secret_value() == "s3cret-token"
    assert "s3cret" not in repr(await repo.get("acct"))
    assert "s3cret" not in repr((await repo.to_dataframe()).to_dict())
    assert "hit rate" in stats._repr_html_()


# ---------------------------------------------------------------------- change feeds


async def test_a_writer_outside_the_cache_is_seen_by_the_next_read_on_sqlite(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.db"
    async with SQLiteRepository(Task, path, cache=True) as repo:
        await repo.save(Task(id="a", name="one"))
        assert (await repo.get("a")).name == "one"
        assert [t.name for t in await repo.find_all()] == ["one"]
        other = sqlite3.connect(path)
        with other:
            other.execute("UPDATE task SET doc = json_set(doc, '$.name', 'two')")
        other.close()
        assert (await repo.get("a")).name == "two"
        assert [t.name for t in await repo.find_all()] == ["two"]
        assert repo.sync.get("a").name == "two"  # the sync face's thread, its own reader


async def test_sqlite_in_memory_has_no_other_writers(tmp_path: Path) -> None:
    async with SQLiteRepository(Task, ":memory:", cache=True) as repo:
        await repo.save(Task(id="a", name="one"))
        await repo.get("a")
        await repo.get("a")
        stats = repo.cache_stats()
        assert stats is not None and stats.hits == 1


async def test_another_file_store_writer_is_seen_by_the_next_read(tmp_path: Path) -> None:
    async with (
        FileSystemRepository(Task, tmp_path, cache=True) as cached,
        FileSystemRepository(Task, tmp_path) as other,
    ):
        await cached.save(Task(id="a", name="one"))
        for _ in range(2):
            assert (await cached.get("a")).name == "one"
        changed = await other.get("a")
        changed.name = "two"
        await other.save(changed)
        assert (await cached.get("a")).name == "two"
        await other.save(Task(id="b", name="new"))
        assert await cached.count() == 2
        assert await other.delete("b")
        assert await cached.count() == 1
        marker = tmp_path / "task" / MARKER_NAME
        assert int(marker.read_text()) % 2 == 0


async def test_a_marker_left_odd_by_a_killed_writer_turns_the_cache_off_until_repaired(
    tmp_path: Path,
) -> None:
    async with FileSystemRepository(Task, tmp_path, cache=True) as repo:
        await repo.save(Task(id="a", name="one"))
        marker = tmp_path / "task" / MARKER_NAME
        value = int(marker.read_text())
        marker.write_text(f"{value + 1:020d}\n")  # a writer killed between its renames
        (tmp_path / "task" / "a.json").write_text(
            (tmp_path / "task" / "a.json").read_text().replace('"one"', '"two"')
        )
        before = repo.cache_stats()
        assert (await repo.get("a")).name == "two"
        assert (await repo.get("a")).name == "two"
        after = repo.cache_stats()
        assert before is not None and after is not None
        assert after.bypassed == before.bypassed + 2
    async with FileSystemRepository(Task, tmp_path, cache=True) as reopened:
        await reopened.count()  # opening repairs it
        assert int(marker.read_text()) % 2 == 0
        await reopened.get("a")
        await reopened.get("a")
        stats = reopened.cache_stats()
        assert stats is not None and stats.hits >= 1


async def test_files_replaced_by_other_programs_are_noticed(tmp_path: Path) -> None:
    async with FileSystemRepository(Task, tmp_path, cache=True) as repo:
        await repo.save(Task(id="a", name="one"))
        assert (await repo.get("a")).name == "one"
        folder = tmp_path / "task"
        text = (folder / "a.json").read_text().replace('"one"', '"edited"')
        (folder / "edit.tmp").write_text(text)
        os.replace(folder / "edit.tmp", folder / "a.json")  # as an editor saves
        assert (await repo.get("a")).name == "edited"


async def test_a_feed_is_polled_from_the_thread_that_reads(tmp_path: Path) -> None:
    calls: list[str] = []

    class Watching(StoreLayer):
        def change_feed(self) -> ChangeFeed:
            feed = self.inner.change_feed()
            assert feed is not None

            class Spy(ChangeFeed):
                exact = feed.exact

                def poll(self) -> Changed | frozenset[str]:
                    calls.append("poll")
                    return feed.poll()

            return Spy()

    async with SQLiteRepository(Task, tmp_path / "x.db") as plain:
        repo = Repository(Task, Watching(plain.store), cache=True)
        await repo.save(Task(id="a", name="a"))
        await repo.get("a")
        await repo.find_all()
        await repo.count()
        assert calls == ["poll"] * 3


class Failing(Store):
    """A store whose every read fails: what a cache over it must pass on."""

    async def get(self, entity_id: str) -> Document | None:
        raise StorageError("down")

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        raise StorageError("down")

    async def remove(self, entity_id: str) -> bool:
        raise StorageError("down")

    async def select(self, query: Query) -> Selection:
        raise StorageError("down")

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        raise StorageError("down")

    def change_feed(self) -> ChangeFeed:
        return Quiet()


async def test_failing_writes_still_invalidate() -> None:
    repo = Repository(Task, Failing(Task), cache=True)
    with pytest.raises(StorageError):
        await repo.save(Task(id="a", name="a"))
    with pytest.raises(StorageError):
        await repo.get("a")
    stats = repo.cache_stats()
    assert stats is not None and stats.entries == 0


def test_the_readme_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    repo = SQLiteRepository(Task, "symphony_data/symphony.db", cache=Cache(max_entries=50_000))
    task_id = repo.sync.save(Task(name="Summarise"))
    task = repo.sync.get(task_id)
    task = repo.sync.get(task_id)
    task = repo.sync.get(task_id)
    stats = repo.cache_stats()
    assert task.name == "Summarise"
    assert stats is not None and (stats.hits, stats.misses, stats.bypassed) == (2, 1, 0)
    repo.sync.close()


async def test_a_forked_child_listens_afresh(tmp_path: Path) -> None:
    from tests import pg
    from tests.backends import postgres_schema

    async with postgres_schema() as schema:
        url = f"{pg.dsn()}?schema={schema}"
        repo = open_repository(Task, url, cache=True)
        await repo.save(Task(id="a", name="before"))
        await written_behind(repo)
        assert (await repo.get("a")).name == "before"
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child reports through its exit code)
            code = 1
            try:

                async def child() -> bool:
                    other = open_repository(Task, url)
                    task = await other.get("a")
                    task.name = "after"
                    await other.save(task)
                    await other.close()
                    for _ in range(500):
                        if (await repo.get("a")).name == "after":
                            return True
                        await asyncio.sleep(0.01)
                    return False

                code = 0 if asyncio.run(child()) else 2
            finally:
                os._exit(code)
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        await repo.close()


async def test_a_file_store_removed_and_made_again_is_noticed(tmp_path: Path) -> None:
    import shutil

    async with FileSystemRepository(Task, tmp_path, cache=True) as repo:
        await repo.save(Task(id="a", name="one"))
        assert (await repo.get("a")).name == "one"
        assert (await repo.get("a")).name == "one"
        shutil.rmtree(tmp_path / "task")
        async with FileSystemRepository(Task, tmp_path) as other:
            await other.save(Task(id="a", name="two"))
        assert (await repo.get("a")).name == "two"
        shutil.rmtree(tmp_path / "task")
        assert await repo.find_by_id("a") is None


async def test_pages_of_iter_all_are_not_kept() -> None:
    repo, gate = gated(max_entries=5)
    await repo.save_many([Task(id=f"t{i}", name="n") for i in range(9)])
    await repo.get("t0")
    assert [t.id async for t in repo.iter_all(batch_size=2)] == [f"t{i}" for i in range(9)]
    reads = gate.gets
    await repo.get("t0")  # still kept: the pages pushed nothing out
    assert gate.gets == reads
    stats = repo.cache_stats()
    assert stats is not None and stats.bypassed >= 4 and stats.evictions == 0


async def test_notifications_arrive_while_the_readers_loop_is_blocked() -> None:
    import time

    from symphony_nb.backends.postgres import PostgresRepository
    from tests import pg
    from tests.backends import postgres_schema

    async with postgres_schema() as schema:
        repo = PostgresRepository(Task, pg.dsn(), schema=schema, cache=True)
        other = PostgresRepository(Task, pg.dsn(), schema=schema)
        try:
            await repo.save(Task(id="a", name="one"))
            await written_behind(repo)
            assert repo.sync.get("a").name == "one"
            # From here this loop is blocked, as a notebook kernel's is during a cell that
            # calls .sync: nothing may depend on it running.
            changed = other.sync.get("a")
            changed.name = "two"
            other.sync.save(changed)
            deadline = time.monotonic() + 5
            while repo.sync.get("a").name != "two":
                assert time.monotonic() < deadline
                time.sleep(0.001)
            assert repo.sync.get("a").name == "two"
            stats = repo.cache_stats()
            assert stats is not None and stats.hits >= 1 and stats.invalidations >= 1
        finally:
            await other.close()
            await repo.close()


async def test_own_writes_on_files_drop_only_what_they_wrote(tmp_path: Path) -> None:
    async with FileSystemRepository(Task, tmp_path, cache=True) as repo:
        await repo.save_many([Task(id=f"t{i}", name="n") for i in range(3)])
        for key in ("t0", "t1"):
            await repo.get(key)
        t2 = await repo.get("t2")
        t2.name = "changed"
        await repo.save(t2)
        assert await repo.delete("t1")
        before = repo.cache_stats()
        assert (await repo.get("t0")).name == "n"  # still kept
        assert (await repo.get("t2")).name == "changed"
        assert await repo.find_by_id("t1") is None
        after = repo.cache_stats()
        assert before is not None and after is not None
        assert after.hits == before.hits + 1 and after.misses == before.misses + 2
        # A write to the same store that does not go through this cache is someone else's.
        plain = Repository(Task, backend_store(repo))
        t0 = await plain.get("t0")
        t0.name = "behind the cache"
        await plain.save(t0)
        assert (await repo.get("t0")).name == "behind the cache"


@pytest.mark.parametrize("backend", CACHED)
async def test_the_cache_holds_upgraded_documents(backend: str, tmp_path: Path) -> None:
    from tests.test_schema_evolution import Note, old_notes

    async with BACKENDS[backend](Note, tmp_path) as repo:
        notes = await old_notes(repo, 6)  # stored at schema versions 1, 2 and 3
        await written_behind(repo)
        for _ in range(3):
            assert await repo.find_all() == notes
            assert [await repo.get(note.id) for note in notes] == notes
        stats = repo.cache_stats()
        assert stats is not None and stats.hits >= 2 * 7
        layer: Any = repo.store
        kept = [entry for key, (entry, _) in layer._entries.items() if key[0] == "get"]
        docs = [orjson.loads(doc if isinstance(doc, bytes) else str(doc)) for doc in kept]
        assert len(docs) == 6 and all("rank" in doc and "score" not in doc for doc in docs)
