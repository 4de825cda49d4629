"""Resource probe: use a repository, then report threads, files and sockets still held.

Usage: ``python -m tests.reliability._hygiene MODE URL STORE [cache]`` (``cache``: with
the read cache on). ``async``: use and close it with
``await`` inside ``asyncio.run``; ``sync``: use and close it through ``repo.sync``. Both print
one JSON line of what this process still holds after ``close()``. ``leak``: use it through
both faces, close nothing, print ``done`` and return; the test times how long exit takes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

import psutil

from symphony_nb import Repository, Task, open_repository

POSTGRES_PORT = 5432


def held(store: str) -> dict[str, Any]:
    """Threads besides the main one, open files under ``store``, sockets to PostgreSQL."""
    me = psutil.Process()
    return {
        "threads": sorted(
            t.name for t in threading.enumerate() if t is not threading.main_thread()
        ),
        "files": sorted(f.path for f in me.open_files() if store in f.path),
        "sockets": sum(
            1 for c in me.net_connections("inet") if c.raddr and c.raddr.port == POSTGRES_PORT
        ),
    }


async def use(repo: Repository[Task]) -> None:
    """Every kind of operation once, so every resource a backend has gets made."""
    await repo.save_many([Task(id=f"t{i}", name="t", input_data={"n": i}) for i in range(20)])
    await repo.find_all({"input_data.n": {"$gte": 5}}, order_by="-name", limit=5)
    assert len([t async for t in repo.iter_all(batch_size=7)]) == 20
    await repo.count({"status": "pending"})
    task = await repo.get("t1")
    task.description = "updated"
    await repo.update(task)
    await repo.delete("t2")


CACHE = sys.argv[4:] == ["cache"]


async def main_async(url: str, store: str) -> dict[str, Any]:
    repo = open_repository(Task, url, cache=CACHE)
    await use(repo)
    await repo.close()
    report = held(store)
    # asyncio's own worker threads (asyncio.to_thread) belong to the loop, not to us.
    report["threads"] = [t for t in report["threads"] if not t.startswith("asyncio_")]
    return report


def main_sync(url: str, store: str) -> dict[str, Any]:
    for round_ in range(5):
        repo = open_repository(Task, url, cache=CACHE)
        repo.sync.save_many([Task(id=f"s{round_}-{i}", name="s") for i in range(5)])
        repo.sync.find_all({"name": "s"}, limit=3)
        assert len(list(repo.sync.iter_all(batch_size=2))) == repo.sync.count() >= 5
        repo.sync.close()
    return held(store)


def leak(url: str) -> None:
    repo = open_repository(Task, url, cache=CACHE)
    repo.sync.save(Task(id="sync", name="never closed"))
    repo.sync.get("sync")
    other = open_repository(Task, url, cache=CACHE)
    asyncio.run(other.save(Task(id="async", name="never closed")))
    print("done", flush=True)


if __name__ == "__main__":
    mode, url, store = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "leak":
        leak(url)
    else:
        result = asyncio.run(main_async(url, store)) if mode == "async" else main_sync(url, store)
        result["after_exit_of_loop"] = held(store)
        print(json.dumps(result), flush=True)
