"""Schema evolution under stress: SIGKILL during migrate, and edits while another process migrates."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from symphony_nb import open_repository
from symphony_nb.stores import Record
from tests.backends import backend_store, having, store_url
from tests.reliability._procs import start
from tests.reliability._schema_models import Card, v1_document
from tests.reliability.conftest import Figures

RUNS = int(os.environ.get("SYMPHONY_NB_CRASH_RUNS", "30"))
CARDS = 240
BATCH = 16
EDITORS = 4
EDITS = 60


async def _plant_v1(url: str, counts: dict[str, int]) -> None:
    """Store every card as version 1 of the model wrote it, replacing what is there."""
    async with open_repository(Card, url) as repo:
        await backend_store(repo).write(
            [Record(key, v1_document(key, count), 1, None) for key, count in counts.items()],
            create=True,
        )


def _kill_migrator(url: str, rng: random.Random, delay: float) -> bool:
    """Start ``migrate``, SIGKILL it after a random time; True if it finished first."""
    with start("_migrator", "migrate", url, str(BATCH)) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", proc.communicate()[1]
        time.sleep(rng.uniform(0, delay))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Read through the text streams: what readline buffered is there, not in the pipe.
        assert proc.stderr is not None
        rest, errors = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode in (-signal.SIGKILL, 0), f"migrator died on its own: {errors}"
    return "done" in rest


@pytest.mark.parametrize("backend", having("url", "on_disk"))
async def test_sigkill_during_migrate_then_rerun(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    rng = random.Random(os.environ.get("SYMPHONY_NB_CRASH_SEED", "9"))
    kills = partial = lost = 0
    async with store_url(backend, tmp_path) as url:
        # How long a whole migration takes here, so the kills land inside one.
        counts = {f"card{i:04d}": rng.randrange(100) for i in range(CARDS)}
        await _plant_v1(url, counts)
        async with open_repository(Card, url) as repo:
            started = time.perf_counter()
            await repo.migrate(batch_size=BATCH, progress=False)
            whole = time.perf_counter() - started
        for _ in range(RUNS):
            counts = {key: rng.randrange(100) for key in counts}
            await _plant_v1(url, counts)
            finished = _kill_migrator(url, rng, whole)
            kills += not finished
            async with open_repository(Card, url) as repo:
                versions = await repo.schema_versions()
                partial += len(versions) > 1
                cards = {card.id: card for card in await repo.find_all()}
                lost += sum(
                    key not in cards or cards[key].data != {"count": count}
                    for key, count in counts.items()
                )
                report = await repo.migrate(batch_size=BATCH, progress=False)
                assert not report.failed, report
                assert await repo.schema_versions() == {2: CARDS}
                after = {card.id: card.data for card in await repo.find_all()}
                lost += sum(after[key] != {"count": count} for key, count in counts.items())
                assert (await repo.migrate(progress=False)).upgraded == 0
    figures.record(
        "schema: SIGKILL during migrate, then rerun",
        backend,
        RUNS,
        kills=kills,
        faults=kills,
        acknowledged=CARDS * RUNS,
        lost=lost,
        detail=f"{CARDS} version-1 documents, batches of {BATCH}; {partial} kills left both "
        "versions stored; after each, every entity read at its content and a rerun made all current",
    )
    assert lost == 0 and kills >= RUNS // 2


@pytest.mark.parametrize("backend", having("url", "shared"))
async def test_edits_while_another_process_migrates(
    backend: str, tmp_path: Path, figures: Figures
) -> None:
    async with store_url(backend, tmp_path) as url:
        await _plant_v1(url, {f"card{i:04d}": 0 for i in range(CARDS)})
        editors = [
            start("_migrator", "edit", url, str(EDITS), str(seed), stdin=subprocess.PIPE)
            for seed in range(EDITORS)
        ]
        migrator = start("_migrator", "migrate", url, "4")
        try:
            for proc in editors:
                assert proc.stdout is not None
                assert proc.stdout.readline() == "ready\n", proc.communicate()[1]
            assert migrator.stdout is not None
            assert migrator.stdout.readline() == "ready\n", migrator.communicate()[1]
            for proc in editors:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            reports = []
            for proc in editors:
                out, err = proc.communicate(timeout=600)
                assert proc.returncode == 0, err
                reports.append(json.loads(out.splitlines()[-1]))
            done = migrator.stdout.readline()  # maybe read ahead with "ready": not in the pipe
            out, err = migrator.communicate(timeout=600)
            assert migrator.returncode == 0, err
        finally:
            for proc in [*editors, migrator]:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        assert all(not report["errors"] for report in reports), reports
        edits: dict[str, int] = {}
        for report in reports:
            for key, times in report["edits"].items():
                edits[key] = edits.get(key, 0) + times
        async with open_repository(Card, url) as repo:
            assert await repo.schema_versions() == {2: CARDS}  # editors write version 2
            cards = {card.id: card for card in await repo.find_all()}
        lost = sum(cards[key].data["count"] != edits.get(key, 0) for key in cards)
        upgraded = int(done.split()[-1])
    figures.record(
        "schema: edits while another process migrates",
        backend,
        1,
        acknowledged=sum(edits.values()),
        lost=lost,
        detail=f"{EDITORS} processes x {EDITS} read-modify-write edits of {CARDS} version-1 "
        f"entities while a fifth migrated ({upgraded} upgraded by it); every count exact, "
        "every document current",
    )
    assert lost == 0
