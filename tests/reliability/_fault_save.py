"""Save under injected I/O faults: run by ``test_io_faults`` beneath ``strace --inject``.

Usage: ``python -m tests.reliability._fault_save FOLDER IDS...``. Loads the given Tasks
(already stored), changes them and saves them (one: ``save``; several: ``save_many``), then
prints one JSON line: the error raised, if any, and the versions the objects carry afterwards.
"""

from __future__ import annotations

import asyncio
import json
import sys

from symphony_nb import FileSystemRepository, SymphonyError, Task


async def main(folder: str, ids: list[str]) -> dict[str, object]:
    repo = FileSystemRepository(Task, folder)
    tasks = [await repo.get(entity_id) for entity_id in ids]
    for task in tasks:
        task.description = "changed under fault injection"
    outcome: dict[str, object] = {"error": None}
    try:
        if len(tasks) == 1:
            await repo.save(tasks[0])
        else:
            await repo.save_many(tasks)
    except SymphonyError as exc:
        outcome = {
            "error": type(exc).__name__,
            "message": str(exc),
            "is_os_error": isinstance(exc, OSError),
        }
    outcome["versions"] = {task.id: task.version for task in tasks}
    return outcome


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2:]))))
