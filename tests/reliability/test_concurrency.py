"""Concurrent read-modify-write: processes, asyncio tasks and threads; stale copies; races."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from symphony_nb import ConflictError, Repository, Task, open_repository
from tests.backends import having, opened, store_url
from tests.reliability._procs import start
from tests.reliability._worker import increment
from tests.reliability.conftest import Figures

PROCESSES = 4
INCREMENTS = 200
TASKS = 200
THREADS = 8
RACERS = 6
MakeRepo = Callable[[type[Any]], Any]
# Backends whose store several processes open by URL at once.
MULTI_PROCESS = having("url", "shared")


def _race(jobs: list[tuple[str, ...]]) -> list[dict[str, Any]]:
    """Start one worker per job, release them together, return their JSON reports."""
    procs = [start("_worker", *job, stdin=subprocess.PIPE) for job in jobs]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n", proc.communicate()[1]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            reports.append(json.loads(out.splitlines()[-1]))
        return reports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.parametrize("backend", MULTI_PROCESS)
async def test_processes_increment_one_entity_exactly(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    async with store_url(backend, tmp_path) as url:
        async with open_repository(Task, url) as repo:
            await repo.save(Task(id="counter", name="counter", input_data={"count": 0}))
        reports = _race([("increment", url, "counter", str(INCREMENTS))] * PROCESSES)
        async with open_repository(Task, url) as repo:
            final = await repo.get("counter")
    errors = [error for report in reports for error in report["errors"]]
    total = PROCESSES * INCREMENTS
    retries = sum(report["retries"] for report in reports)
    acknowledged = sum(report["done"] for report in reports)
    figures.record(
        f"concurrency: {PROCESSES} processes x {INCREMENTS} read-modify-write",
        backend,
        total,
        acknowledged=acknowledged,
        lost=max(0, acknowledged - final.input_data["count"]),
        detail=f"ConflictError retries: {retries}; errors escaping: {len(errors)}",
    )
    assert errors == []
    assert final.input_data["count"] == total
    assert final.version == total + 1


async def test_asyncio_tasks_increment_one_entity_exactly(
    backend_name: str, make_repo: MakeRepo, figures: Figures
) -> None:
    repo: Repository[Task] = await make_repo(Task)
    await repo.save(Task(id="counter", name="counter", input_data={"count": 0}))
    retries = await asyncio.gather(*(increment(repo, "counter") for _ in range(TASKS)))
    final = await repo.get("counter")
    figures.record(
        f"concurrency: {TASKS} asyncio tasks, one increment each",
        backend_name,
        TASKS,
        acknowledged=TASKS,
        lost=TASKS - final.input_data["count"],
        detail=f"ConflictError retries: {sum(retries)}",
    )
    assert final.input_data["count"] == TASKS
    assert final.version == TASKS + 1


def test_threads_through_sync_facade_increment_exactly(
    backend_name: str, tmp_path: Path, figures: Figures
) -> None:
    per_thread = TASKS // THREADS
    errors: list[BaseException] = []
    retries: list[int] = []

    def work(repo: Repository[Task]) -> None:
        try:
            for _ in range(per_thread):
                while True:
                    task = repo.sync.get("counter")
                    task.input_data["count"] += 1
                    try:
                        repo.sync.save(task)
                        break
                    except ConflictError:
                        retries.append(1)
        except BaseException as exc:  # re-raised by the test below
            errors.append(exc)

    with opened(backend_name, Task, tmp_path) as repo:
        repo.sync.save(Task(id="counter", name="counter", input_data={"count": 0}))
        threads = [threading.Thread(target=work, args=(repo,)) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        final = repo.sync.get("counter")
    total = THREADS * per_thread
    figures.record(
        f"concurrency: {THREADS} threads x {per_thread} increments via the sync facade",
        backend_name,
        total,
        acknowledged=total,
        lost=total - final.input_data["count"],
        detail=f"ConflictError retries: {len(retries)}; errors escaping: {len(errors)}",
    )
    assert errors == []
    assert final.input_data["count"] == total


# ---------------------------------------------------------------------- stale copies


async def _stale_async(repo: Repository[Task]) -> None:
    first, second = await repo.get("shared"), await repo.get("shared")
    first.description = "first"
    second.description = "second"
    assert await repo.update(first)
    with pytest.raises(ConflictError):
        await repo.update(second)
    with pytest.raises(ConflictError):
        await repo.save(second)


async def _stale_sync(repo: Repository[Task]) -> None:
    def both() -> None:
        first, second = repo.sync.get("shared"), repo.sync.get("shared")
        first.description = "first"
        second.description = "second"
        repo.sync.save(first)
        with pytest.raises(ConflictError):
            repo.sync.save(second)

    await asyncio.to_thread(both)


async def _stale_dataframe(repo: Repository[Task]) -> None:
    first, second = await repo.to_dataframe(), await repo.to_dataframe()
    first.loc["shared", "description"] = "first"
    second.loc["shared", "description"] = "second"
    assert await repo.save_dataframe(first) == ["shared"]
    with pytest.raises(ConflictError):
        await repo.save_dataframe(second)


async def _stale_widget_form(repo: Repository[Task]) -> None:
    from symphony_nb.widgets import ModelForm

    def both() -> None:
        stored = repo.sync.get("shared")
        first, second = ModelForm(repo, stored), ModelForm(repo, stored.model_copy())
        first.fields["description"].value = "first"
        second.fields["description"].value = "second"
        first.save_button.click()
        second.save_button.click()
        assert "someone else changed" in second.status.value, second.status.value
        assert second.reload_button.layout.display != "none"
        for form in (first, second):
            form.close()

    await asyncio.to_thread(both)


STALE_PATHS = {
    "widget form": _stale_widget_form,
    "async API": _stale_async,
    "sync facade": _stale_sync,
    "save_dataframe": _stale_dataframe,
}


@pytest.mark.parametrize("path", sorted(STALE_PATHS))
async def test_two_stale_copies_exactly_one_wins(
    path: str, backend_name: str, make_repo: MakeRepo, figures: Figures
) -> None:
    repo: Repository[Task] = await make_repo(Task)
    await repo.save(Task(id="shared", name="shared"))
    await STALE_PATHS[path](repo)
    stored = await repo.get("shared")
    figures.record(
        f"stale copies: second update refused ({path})",
        backend_name,
        2,
        acknowledged=1,
        lost=0 if stored.description == "first" else 1,
        detail="the second writer got ConflictError; the first write is stored",
    )
    assert stored.description == "first"
    assert stored.version == 2


# ---------------------------------------------------------------------- creation races


@pytest.mark.parametrize("backend", MULTI_PROCESS)
async def test_store_creation_raced_by_processes(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    async with store_url(backend, tmp_path) as url:
        reports = _race([("create", url, f"racer-{i}") for i in range(RACERS)])
        async with open_repository(Task, url) as repo:
            stored = sorted(task.id for task in await repo.find_all())
    errors = [error for report in reports for error in report["errors"]]
    acknowledged = sum(report["done"] for report in reports)
    figures.record(
        f"race: {RACERS} processes create the store at once",
        backend,
        RACERS,
        acknowledged=acknowledged,
        lost=acknowledged - len(stored),
        detail=f"errors: {len(errors)}",
    )
    assert errors == []
    assert stored == sorted(f"racer-{i}" for i in range(RACERS))


async def test_opening_a_store_never_disturbs_a_live_writer(
    tmp_path: Path, figures: Figures
) -> None:
    from symphony_nb import FileSystemRepository

    url = str(tmp_path / "store")
    opens = 300
    acknowledged = 0
    with start("_writer", url, "7") as proc:
        assert proc.stdout is not None
        # After each acknowledged write the writer starts the next one at once, so the open
        # that follows tends to land while its temp file exists.
        while acknowledged < opens and proc.stdout.readline():
            acknowledged += 1
            async with FileSystemRepository(Task, url) as repo:  # cleans leftover temp files
                await repo.find_by_id("e00")
        alive = proc.poll() is None
        proc.kill()
        out, errors = proc.communicate()
    acknowledged += len(out.splitlines())
    figures.record(
        f"race: {opens} stores opened beside a live writer process",
        "files",
        opens,
        acknowledged=acknowledged,
        detail="opening cleans leftover temp files; the writer's own must survive"
        + ("" if alive else f"; the writer died: {errors.strip().splitlines()[-1]}"),
    )
    assert alive, errors
