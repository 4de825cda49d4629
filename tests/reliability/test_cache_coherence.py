"""The read cache under other processes' writes: exact counts, monotonic reads, staleness.

Every check runs on each backend several processes share (files, SQLite, PostgreSQL), with
the cache of the reading process on (``cache=True``; PostgreSQL also ``strict=True``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from symphony_nb import (
    Cache,
    FileSystemRepository,
    InMemoryRepository,
    Repository,
    SQLiteRepository,
    Task,
    open_repository,
)
from symphony_nb.stores import Document, Store, StoreLayer
from tests.backends import (
    BACKENDS,
    BackendUnavailable,
    backend_store,
    base,
    having,
    store_url,
    written_behind,
)
from tests.reliability._procs import ROOT, command, environment
from tests.reliability.conftest import Figures
from tests.reliability.test_concurrency import INCREMENTS, PROCESSES, _race

MULTI_PROCESS = having("url", "shared")
# Each shared backend with the default cache, and PostgreSQL also with strict=True.
READERS = [(name, False) for name in MULTI_PROCESS] + [
    (name, True) for name in MULTI_PROCESS if base(name) == "postgres"
]
REAL = sorted(name for name in BACKENDS if ":" not in name and name != "dict")
TRIALS = 200  # of each kind
WRITES = 1000
POLL = 0.00005  # seconds between a reader's reads while it waits for a change


async def _pause() -> None:
    # asyncio.sleep rounds timeouts up to a millisecond; this pause is the given one, and
    # gives the GIL away as a waiting reader would (PostgreSQL's listener thread needs it).
    time.sleep(POLL)
    await asyncio.sleep(0)


def _label(backend: str, strict: bool) -> str:
    return f"{backend} (strict)" if strict else backend


@asynccontextmanager
async def _writer(url: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """The ``_cache_writer`` process on ``url``, once it has saved the probe."""
    proc = await asyncio.create_subprocess_exec(
        *command("_cache_writer", url),
        cwd=ROOT,
        env=environment(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line != b"ready\n":
            raise AssertionError((line, await proc.stderr.read() if proc.stderr else b""))
        yield proc
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _ask(proc: asyncio.subprocess.Process, line: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line.encode() + b"\n")
    await proc.stdin.drain()
    return (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()


async def _listening(repo: Repository[Task]) -> None:
    await written_behind(repo)  # PostgreSQL: the cache listens before the trials start


@pytest.mark.parametrize("backend", MULTI_PROCESS)
async def test_processes_increment_through_caches_exactly(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    async with store_url(backend, tmp_path) as url:
        async with open_repository(Task, url) as repo:
            await repo.save(Task(id="counter", name="counter", input_data={"count": 0}))
        reports = _race([("increment", url, "counter", str(INCREMENTS), "cache")] * PROCESSES)
        async with open_repository(Task, url) as repo:
            final = await repo.get("counter")
    errors = [error for report in reports for error in report["errors"]]
    total = PROCESSES * INCREMENTS
    acknowledged = sum(report["done"] for report in reports)
    figures.record(
        f"cache: {PROCESSES} processes x {INCREMENTS} read-modify-write, each through a cache",
        backend,
        total,
        acknowledged=acknowledged,
        lost=max(0, acknowledged - final.input_data["count"]),
        detail=f"final count {final.input_data['count']}; ConflictError retries: "
        f"{sum(report['retries'] for report in reports)}; errors escaping: {len(errors)}",
    )
    assert errors == []
    assert final.input_data["count"] == total


@pytest.mark.parametrize(("backend", "strict"), READERS)
async def test_reads_through_a_cache_never_go_back_while_another_process_writes(
    backend: str, strict: bool, tmp_path: Path, figures: Figures
) -> None:
    async with (
        store_url(backend, tmp_path) as url,
        _writer(url) as proc,
        open_repository(Task, url, cache=Cache(strict=strict)) as repo,
    ):
        await _listening(repo)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"burst {WRITES}\n".encode())
        await proc.stdin.drain()
        finished = asyncio.ensure_future(proc.stdout.readline())
        high = 0  # the newest version any completed read returned
        backwards = reads = 0
        seen: set[int] = set()

        async def reader() -> None:
            nonlocal high, backwards, reads
            while not finished.done():
                floor = high
                version = (await repo.get("probe")).version
                reads += 1
                seen.add(version)
                backwards += version < floor
                high = max(high, version)
                await asyncio.sleep(0)

        await asyncio.gather(*(reader() for _ in range(4)))
        last = int((await finished).split()[1])
        started = time.monotonic()
        while (await repo.get("probe")).version != last:
            assert time.monotonic() - started < 5, "the last write never became visible"
            await _pause()
        caught_up = time.monotonic() - started
        stats = repo.cache_stats()
    assert stats is not None
    figures.record(
        f"cache: monotonic reads while another process writes {WRITES} times",
        _label(backend, strict),
        reads,
        acknowledged=WRITES,
        detail=f"{reads} reads by 4 tasks saw {len(seen)} versions, none older than one "
        f"already returned: {backwards} went back; last write seen "
        f"{caught_up * 1e6:.0f} us after the writer finished; hits {stats.hits}",
    )
    assert backwards == 0
    assert last == WRITES + 1
    if not strict and base(backend) != "postgres":
        assert caught_up < 0.05


@pytest.mark.parametrize(("backend", "strict"), READERS)
async def test_staleness_after_another_process_commits(
    backend: str, strict: bool, tmp_path: Path, figures: Figures
) -> None:
    exact = strict or base(backend) != "postgres"
    delays: list[float] = []
    stale_after_commit = 0
    async with (
        store_url(backend, tmp_path) as url,
        _writer(url) as proc,
        open_repository(Task, url, cache=Cache(strict=strict)) as repo,
    ):
        await _listening(repo)
        version = (await repo.get("probe")).version
        for trial in range(2 * TRIALS):
            version += 1
            if trial % 2:
                # Told the commit is done, one read: must see it where the cache is exact.
                answer = await _ask(proc, "save")
                assert int(answer.split()[0]) == version
                stale_after_commit += (await repo.get("probe")).version != version
                continue
            # Otherwise read as fast as we can until it shows: when, after its commit?
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"save\n")
            await proc.stdin.drain()
            answer_task = asyncio.ensure_future(proc.stdout.readline())
            deadline = time.monotonic() + 5
            while (await repo.get("probe")).version != version:
                assert time.monotonic() < deadline, "a commit never became visible"
                await _pause()
            seen = time.monotonic()
            committed = float((await answer_task).split()[1])
            delays.append(max(0.0, seen - committed))
    delays_us = sorted(d * 1e6 for d in delays)
    median, worst = statistics.median(delays_us), delays_us[-1]
    figures.record(
        "cache: staleness after another process commits",
        _label(backend, strict),
        2 * TRIALS,
        acknowledged=2 * TRIALS,
        detail=f"writer's save returned to visible here (reading every {POLL * 1e6:.0f} us): median {median:.0f} us, "
        f"max {worst:.0f} us over {len(delays)} trials; a read right after being told of the "
        f"commit was stale {stale_after_commit} of {TRIALS} times",
    )
    if exact:
        assert stale_after_commit == 0


class Counting(StoreLayer):
    """Counts reads by id, each taking a little while, so concurrent misses overlap."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.gets = 0

    async def get(self, entity_id: str) -> Document | None:
        self.gets += 1
        await asyncio.sleep(0.005)
        return await self.inner.get(entity_id)


@pytest.mark.parametrize("backend", REAL)
async def test_concurrent_misses_make_one_store_read(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    try:
        async with BACKENDS[backend](Task, tmp_path) as plain:
            counting = Counting(backend_store(plain))
            repo = Repository(Task, counting, cache=True)
            await repo.save(Task(id="hot", name="hot"))
            await _listening(repo)
            readers = 200
            found = await asyncio.gather(*(repo.find_by_id("hot") for _ in range(readers)))
            await repo.close()
    except BackendUnavailable as exc:
        pytest.skip(f"{backend} backend unavailable: {exc}")
    figures.record(
        "cache: concurrent misses for one id",
        backend,
        readers,
        detail=f"{readers} concurrent find_by_id after a write made {counting.gets} store read(s)",
    )
    assert all(task is not None and task.name == "hot" for task in found)
    assert counting.gets == 1


BAD_OPTIONS: list[dict[str, Any]] = [
    {"max_entries": 0},
    {"max_entries": -5},
    {"max_entries": 2.5},
    {"max_entries": True},
    {"max_entries": "100"},
    {"max_entries": None},
    {"max_entries": 10**3, "strict": "no"},
    {"strict": None},
    {"ttl": 5},
]
BAD_CACHE_VALUES: list[Any] = [1, 0, "true", 1.0, [], {}, Cache]


def test_bad_cache_options_are_refused_at_construction(tmp_path: Path, figures: Figures) -> None:
    refused = 0
    for options in BAD_OPTIONS:
        with pytest.raises(ValueError):
            Cache(**options)
        refused += 1
    for value in BAD_CACHE_VALUES:
        for make in (
            lambda v: InMemoryRepository(Task, cache=v),
            lambda v: FileSystemRepository(Task, tmp_path / "f", cache=v),
            lambda v: SQLiteRepository(Task, tmp_path / "x.db", cache=v),
            lambda v: open_repository(Task, "memory://", cache=v),
        ):
            with pytest.raises(ValueError, match="cache must be"):
                make(value)
            refused += 1
    figures.record(
        "cache: bad options",
        "all",
        refused,
        faults=refused,
        detail=f"{len(BAD_OPTIONS)} bad Cache(...) options and {len(BAD_CACHE_VALUES)} bad "
        "cache= values on 4 constructors: every one a ValueError at construction",
    )


async def test_a_lost_listening_connection_makes_reads_go_to_the_server(
    tmp_path: Path, figures: Figures
) -> None:
    from tests import pg

    async with (
        store_url("postgres", tmp_path) as url,
        _writer(url) as proc,
        open_repository(Task, url, cache=True) as repo,
    ):
        if True:
            await _listening(repo)
            assert (await repo.get("probe")).version == 1
            feed: Any = repo._cache._feed  # type: ignore[attr-defined]
            pid = feed._conn.get_server_pid()
            admin = await pg.connect()
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()
            for _ in range(500):
                if not feed._ready:
                    break
                await asyncio.sleep(0.01)
            outage_reads = 0
            answer = await _ask(proc, "save")  # committed while nobody listens
            if not feed._ready:
                outage_reads += 1
                assert (await repo.get("probe")).version == int(answer.split()[0])
            await _listening(repo)
            assert feed._conn.get_server_pid() != pid
            answer = await _ask(proc, "save")
            await written_behind(repo)
            assert (await repo.get("probe")).version == int(answer.split()[0])
            stats = repo.cache_stats()
    assert stats is not None
    figures.record(
        "cache: listening connection killed (pg_terminate_backend)",
        "postgres",
        1,
        faults=1,
        detail=f"reads went to the server while it reconnected ({outage_reads} checked), a "
        "commit made meanwhile was seen, then caching resumed on a new connection; "
        f"bypassed reads {stats.bypassed}",
    )
