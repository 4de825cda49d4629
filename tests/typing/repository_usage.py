"""Checked by mypy in tests/test_typing.py: Repository[T] carries the model type through."""

from __future__ import annotations

from symphony_nb import FileSystemRepository, InMemoryRepository, Repository, Task


async def usage(repo: Repository[Task]) -> None:
    found = await repo.find_by_id("x")
    if found is not None:
        name: str = found.name
        bad: int = found.name  # type: ignore[assignment]
        print(name, bad)
    listed: list[Task] = await repo.find_all({"status": "pending"}, order_by="-priority", limit=5)
    wrong: list[int] = await repo.find_all()  # type: ignore[assignment]
    await repo.save(Task(name="ok"))
    await repo.save("not a task")  # type: ignore[arg-type]
    async for task in repo.iter_all():
        also: str = task.name
        print(also)
    print(listed, wrong)


memory: Repository[Task] = InMemoryRepository(Task)
files: Repository[Task] = FileSystemRepository(Task, "data")
