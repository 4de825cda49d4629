"""Moving data between backends keeps ids, versions and every field."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pytest

from symphony_nb import AgentConfig, InMemoryRepository, Task, copy_repository
from symphony_nb.backends.postgres import BULK_THRESHOLD
from tests.backends import BACKENDS, BackendUnavailable, base

# Every ordered pair of real backends, and a ring over all of them (layered and test stores
# included): each is copied from and into.
NAMES = sorted(BACKENDS)
REAL = [name for name in NAMES if name == base(name) and name != "dict"]
RING = list(zip(NAMES, NAMES[1:] + NAMES[:1], strict=True))
PAIRS = sorted({*itertools.permutations(REAL, 2), *RING})


@pytest.mark.parametrize(("source_name", "target_name"), PAIRS)
async def test_copy_keeps_ids_versions_and_fields(
    source_name: str, target_name: str, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        try:
            source = await stack.enter_async_context(BACKENDS[source_name](Task, tmp_path / "a"))
            target = await stack.enter_async_context(BACKENDS[target_name](Task, tmp_path / "b"))
        except BackendUnavailable as exc:
            pytest.skip(f"postgres backend unavailable: {exc}")
        tasks = [Task(id=f"t{i:04d}", name=f"task {i}", input_data={"i": i}) for i in range(250)]
        await source.save_many(tasks)
        for task in tasks[:10]:
            task.status = "completed"
            await source.save(task)
        await target.save(Task(id="t0000", name="replaced by the copy"))

        copied = await copy_repository(source, target, batch_size=64, progress=False)

        assert copied == 250
        assert await target.find_all() == await source.find_all()
        assert (await target.get("t0000")).version == 2
        assert (await target.get("t0100")).version == 1
        moved = await target.get("t0001")
        moved.name = "edited after the move"
        await target.save(moved)  # versions carried over: the next write just works
        assert (await target.get("t0001")).version == 3


async def test_copy_refuses_mismatched_models() -> None:
    with pytest.raises(TypeError, match="cannot copy Task entities into a AgentConfig"):
        await copy_repository(InMemoryRepository(Task), InMemoryRepository(AgentConfig))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target_name", "count"),
    [(name, 40) for name in sorted(BACKENDS)] + [("postgres", BULK_THRESHOLD + 20)],
)
async def test_copying_twice_replaces_what_the_first_copy_wrote(
    target_name: str, count: int, tmp_path: Path
) -> None:
    source = InMemoryRepository(Task)
    tasks = [Task(id=f"t{i:05d}", name=f"task {i}") for i in range(count)]
    await source.save_many(tasks)
    async with contextlib.AsyncExitStack() as stack:
        try:
            target = await stack.enter_async_context(BACKENDS[target_name](Task, tmp_path))
        except BackendUnavailable as exc:
            pytest.skip(f"postgres backend unavailable: {exc}")
        assert await copy_repository(source, target, batch_size=count, progress=False) == count
        tasks[0].name = "changed between the copies"
        await source.save(tasks[0])
        assert await copy_repository(source, target, batch_size=count, progress=False) == count
        assert await target.find_all() == await source.find_all()
        assert (await target.get("t00000")).version == 2
