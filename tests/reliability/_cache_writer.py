"""Writer for the cache coherence checks: one save per line read, its commit time printed.

Usage: ``python -m tests.reliability._cache_writer URL``. It saves Task ``probe`` (version
1), prints ``ready``, then for every line read from stdin saves it once more and prints
``<version> <time.monotonic() after save returned>``; ``burst N`` saves it N times as fast as
it can and prints ``done <version>``. It exits at the end of its input.
"""

from __future__ import annotations

import asyncio
import sys
import time

from symphony_nb import Task, open_repository


async def main(url: str) -> None:
    async with open_repository(Task, url) as repo:
        task = Task(id="probe", name="probe", input_data={"n": 0})
        await repo.save(task)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            times = int(line.split()[1]) if line.startswith("burst") else 1
            for _ in range(times):
                task.input_data["n"] += 1
                await repo.save(task)
            if line.startswith("burst"):
                print(f"done {task.version}", flush=True)
            else:
                print(f"{task.version} {time.monotonic()}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
