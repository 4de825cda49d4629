"""Concurrency worker: run by ``test_concurrency`` in several processes at once.

Usage: ``python -m tests.reliability._worker increment URL ID N [cache] [history]`` adds 1
to ``input_data["count"]`` of Task ``ID`` N times by read-modify-write, retrying on
ConflictError (through a read cache with ``cache``, keeping history with ``history``);
``... create URL ID`` opens a fresh
store and saves Task ``ID``. Both print
``ready``, wait for a line on stdin (so every process starts together), do their work and
print one JSON line: ``{"done": ..., "retries": ..., "errors": [...]}`` (``done``: writes
acknowledged).
"""

from __future__ import annotations

import asyncio
import json
import sys

from symphony_nb import ConflictError, Repository, Task, open_repository


async def increment(repo: Repository[Task], entity_id: str) -> int:
    """Add 1 to the task's count, retrying on conflicts; return the number of retries."""
    retries = 0
    while True:
        task = await repo.get(entity_id)
        task.input_data["count"] = task.input_data.get("count", 0) + 1
        try:
            await repo.save(task)
        except ConflictError:
            retries += 1
        else:
            return retries


async def main(
    action: str, url: str, entity_id: str, times: int, cache: bool = False, history: bool = False
) -> dict[str, object]:
    print("ready", flush=True)
    sys.stdin.readline()
    retries = done = 0
    errors: list[str] = []
    async with open_repository(Task, url, cache=cache, history=history) as repo:
        try:
            if action == "create":
                await repo.save(Task(id=entity_id, name="created in a race"))
                done += 1
            else:
                for _ in range(times):
                    retries += await increment(repo, entity_id)
                    done += 1
        except Exception as exc:  # reported to the test, which fails on any
            errors.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
    return {"done": done, "retries": retries, "errors": errors}


if __name__ == "__main__":
    args = sys.argv[1:]
    count = int(args[3]) if len(args) > 3 else 0
    cache, history = "cache" in args[4:], "history" in args[4:]
    report = asyncio.run(main(args[0], args[1], args[2], count, cache, history))
    print(json.dumps(report), flush=True)
