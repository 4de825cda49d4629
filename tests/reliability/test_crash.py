"""SIGKILL a writer mid-stream, reopen the store, and check that nothing acknowledged is lost."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from symphony_nb import Task, open_repository
from tests.backends import having, store_url
from tests.reliability._procs import start
from tests.reliability._writer import POOL
from tests.reliability.conftest import Figures

RUNS = int(os.environ.get("SYMPHONY_NB_CRASH_RUNS", "30"))
TEMP_PREFIX = ".tmp-"


def _kill_writer(
    url: str, seed: int, rng: random.Random, *options: str
) -> tuple[list[tuple[str, int]], int]:
    """Run the writer, SIGKILL it after a random number of writes; its acks and exit code."""
    lines: list[str] = []
    with start("_writer", url, str(seed), *options) as proc:
        assert proc.stdout is not None
        for _ in range(rng.randint(1, 120)):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        time.sleep(rng.uniform(0, 0.004))  # the kill lands anywhere in the next writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Read through the text streams: what readline buffered is there, not in the pipe.
        assert proc.stderr is not None
        rest, errors = proc.stdout.read(), proc.stderr.read()
    lines.extend(rest.splitlines(keepends=True))
    assert proc.returncode == -signal.SIGKILL, f"writer died on its own: {errors}"
    # A line cut short by the kill was never fully reported, so it is not an acknowledgement.
    acks = [line.split() for line in lines if line.endswith("\n")]
    return [(entity_id, int(version)) for entity_id, version in acks], proc.returncode


def _temp_files(url: str) -> list[str]:
    folder = Path(url) / "task"
    return [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)] if folder.exists() else []


async def _check_store(url: str, acked: dict[str, int], run: int, *, folder: bool) -> int:
    """Reopen the store; assert it is sound and writable; return the acknowledged writes lost."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
    async with open_repository(Task, url) as repo:
        stored = {task.id: task for task in await repo.find_all()}  # every entity validates
        assert set(stored) <= set(POOL), f"unexpected entities: {set(stored) - set(POOL)}"
        lost = sum(
            1
            for entity_id, version in acked.items()
            if entity_id not in stored or stored[entity_id].version < version
        )
        if folder:
            assert _temp_files(url) == [], "temp files survived reopening the store"
        probe = Task(id=f"probe-{run}", name="probe")
        await repo.save(probe)
        survivor = next(iter(stored.values()), None)
        if survivor is not None:
            survivor.description = "updated after the crash"
            assert await repo.update(survivor)
        assert (await repo.get(probe.id)).version == 1
        assert await repo.delete(probe.id)
        if survivor is not None:
            acked[survivor.id] = survivor.version
    return lost


# Backends whose store is files on this machine, reopened by URL after each kill.
@pytest.mark.parametrize("backend", having("url", "on_disk"))
async def test_sigkill_mid_write_loses_nothing(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    async with store_url(backend, tmp_path) as url:
        await _crash_runs(backend, url, figures)


async def _crash_runs(backend: str, url: str, figures: Figures) -> None:
    rng = random.Random(os.environ.get("SYMPHONY_NB_CRASH_SEED", "4"))
    acked: dict[str, int] = {}
    kills = acknowledged = lost = temps_left = 0
    for run in range(RUNS):
        acks, _ = _kill_writer(url, rng.randrange(2**31), rng)
        kills += 1
        acknowledged += len(acks)
        for entity_id, version in acks:
            acked[entity_id] = max(version, acked.get(entity_id, 0))
        if backend == "files":
            temps_left += len(_temp_files(url))
        lost += await _check_store(url, acked, run, folder=backend == "files")
    detail = f"{len(acked)} entities; every reopen validated all of them and accepted writes"
    if backend == "sqlite":
        detail += "; PRAGMA integrity_check ok after every kill"
    if backend == "files":
        detail += f"; temp files left by kills: {temps_left}, all removed on reopen"
    figures.record(
        "crash: SIGKILL mid-write",
        backend,
        RUNS,
        kills=kills,
        faults=kills,
        acknowledged=acknowledged,
        lost=lost,
        detail=detail,
    )
    assert lost == 0
