"""Crash-test writer: save and update Tasks as fast as possible until killed.

Usage: ``python -m tests.reliability._writer URL SEED [history]`` (``history``: the
repository keeps history). It works on a fixed pool of ids
(``e00``..``e49``), loading whatever the store already holds, and after every write that
returned it prints one line per entity written, ``<id> <version>``, and flushes: each printed
line is a write the repository acknowledged. It never exits on its own.
"""

from __future__ import annotations

import asyncio
import random
import sys

from symphony_nb import Task, open_repository

POOL = [f"e{i:02d}" for i in range(50)]


def _payload(rng: random.Random) -> dict[str, object]:
    # Mostly small documents, sometimes large ones, so a kill lands inside long writes too.
    size = rng.choice([10, 100, 1000, 50_000])
    return {"blob": "x" * size, "n": rng.randrange(1_000_000)}


async def main(url: str, seed: int, history: bool = False) -> None:
    rng = random.Random(seed)
    repo = open_repository(Task, url, history=history)
    known: dict[str, Task] = {}
    for entity_id in POOL:
        stored = await repo.find_by_id(entity_id)
        if stored is not None:
            known[entity_id] = stored
    out = sys.stdout
    while True:
        batch: list[Task] = []
        for entity_id in rng.sample(POOL, rng.choice([1, 1, 1, 1, 3])):
            task = known.get(entity_id) or Task(id=entity_id, name=f"task {entity_id}")
            task.input_data = _payload(rng)
            task.description = f"seed {seed}"
            batch.append(task)
        if len(batch) == 1:
            await repo.save(batch[0])
        else:
            await repo.save_many(batch)
        for task in batch:
            known[task.id] = task
            out.write(f"{task.id} {task.version}\n")
        out.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["history"]))
