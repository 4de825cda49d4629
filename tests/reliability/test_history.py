"""History under crashes and concurrency: every acknowledged write has its revision, no
revision outlives a write that did not land, and concurrent writers leave no gaps."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from symphony_nb import Task, open_repository
from tests.backends import HISTORY, having, store_url
from tests.reliability._writer import POOL
from tests.reliability.conftest import Figures
from tests.reliability.test_concurrency import INCREMENTS, PROCESSES, _race
from tests.reliability.test_crash import RUNS, _kill_writer

CRASH = [name for name in having("url", "on_disk") if name in HISTORY]
SHARED = [name for name in having("url", "shared") if name in HISTORY]


async def _check_history(url: str, acked: dict[str, int]) -> tuple[int, int, int]:
    """Reopen with history; assert every entity's history is whole; return (lost writes,
    acknowledged versions without a revision, revisions beyond the stored version)."""
    lost = missing = beyond = 0
    async with open_repository(Task, url, history=True) as repo:
        stored = {task.id: task for task in await repo.find_all()}
        for entity_id in POOL:
            current = stored.get(entity_id)
            if current is None:
                lost += entity_id in acked
                continue
            history = await repo.history(entity_id)  # reads without error
            versions = [revision.version for revision in history]
            beyond += sum(1 for version in versions if version > current.version)
            assert history[-1].op != "delete"
            assert history[-1].entity == current, f"{entity_id}: latest revision != document"
            # Never pruned, never deleted: one revision per version, consecutive from 1.
            assert versions == list(range(1, current.version + 1)), f"{entity_id}: {versions}"
            version = acked.get(entity_id)
            if version is not None:
                lost += current.version < version
                missing += version not in versions
    return lost, missing, beyond


@pytest.mark.parametrize("backend", CRASH)
async def test_sigkill_mid_write_with_history_keeps_it_whole(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    rng = random.Random(os.environ.get("SYMPHONY_NB_CRASH_SEED", "10"))
    acked: dict[str, int] = {}
    acknowledged = lost = missing = beyond = 0
    async with store_url(backend, tmp_path) as url:
        for _ in range(RUNS):
            acks, _ = _kill_writer(url, rng.randrange(2**31), rng, "history")
            acknowledged += len(acks)
            for entity_id, version in acks:
                acked[entity_id] = max(version, acked.get(entity_id, 0))
            run_lost, run_missing, run_beyond = await _check_history(url, acked)
            lost, missing, beyond = lost + run_lost, missing + run_missing, beyond + run_beyond
    figures.record(
        "history: SIGKILL mid-write with history on",
        backend,
        RUNS,
        kills=RUNS,
        faults=RUNS,
        acknowledged=acknowledged,
        lost=lost,
        detail=(
            f"after every kill each entity's revisions were 1..its version with the latest "
            f"equal to the document; acknowledged versions without a revision: {missing}; "
            f"revisions beyond the stored version: {beyond}"
        ),
    )
    assert (lost, missing, beyond) == (0, 0, 0)


@pytest.mark.parametrize("backend", SHARED)
async def test_processes_increment_with_history_leave_no_gaps(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    async with store_url(backend, tmp_path) as url:
        async with open_repository(Task, url, history=True) as repo:
            await repo.save(Task(id="counter", name="counter", input_data={"count": 0}))
        reports = _race([("increment", url, "counter", str(INCREMENTS), "history")] * PROCESSES)
        async with open_repository(Task, url, history=True) as repo:
            final = await repo.get("counter")
            history = await repo.history("counter")
    errors = [error for report in reports for error in report["errors"]]
    total = PROCESSES * INCREMENTS
    updates = [revision for revision in history if revision.op == "update"]
    counts = [r.entity.input_data["count"] for r in history if r.entity is not None]
    figures.record(
        f"history: {PROCESSES} processes x {INCREMENTS} read-modify-write, history on",
        backend,
        total,
        acknowledged=sum(report["done"] for report in reports),
        lost=max(0, total - final.input_data["count"]),
        detail=(
            f"{len(updates)} update revisions, versions 1..{history[-1].version} without a gap, "
            f"each holding the count it wrote; errors escaping: {len(errors)}"
        ),
    )
    assert errors == []
    assert final.input_data["count"] == total
    assert len(updates) == total
    assert [r.version for r in history] == list(range(1, total + 2))
    assert counts == list(range(total + 1))
