"""Corrupt stored data: a clear CorruptEntityError naming where, or a warning and the rest."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from symphony_nb import CorruptEntityError, CorruptEntityWarning, Repository, Task
from tests.backends import BACKENDS, having, plant_file
from tests.reliability.conftest import Figures

MakeRepo = Callable[[type[Any]], Any]
GOOD = ["good-1", "good-2"]


def _doc(entity_id: str, **changes: Any) -> dict[str, Any]:
    doc = orjson.loads(Task(id=entity_id, name="was fine").model_dump_json())
    doc.update(changes)
    return doc


def _cases() -> dict[str, bytes]:
    whole = orjson.dumps(_doc("truncated"))
    return {
        "truncated": whole[: len(whole) // 2],
        "invalid-utf8": orjson.dumps(_doc("invalid-utf8", name="NAME")).replace(
            b"NAME", b"\xff\xfe"
        ),
        "wrong-types": orjson.dumps(_doc("wrong-types", name=5, status="bogus", version="x")),
        "id-mismatch": orjson.dumps(_doc("someone-else")),
        "future-schema": orjson.dumps(_doc("future-schema", added_in_v2={"x": 1})),
        "not-an-object": b"[1, 2, 3]",
    }


def _where(repo: Any) -> str:
    """Text every error about ``repo`` must contain to say where the data is."""
    if hasattr(repo, "schema"):
        return f"{repo.schema}.{repo.table}"
    return str(repo.path)


# Backends whose stored documents can be written behind the repository's back; the memory
# backend holds only documents it serialised itself: nothing can corrupt them.
@pytest.mark.parametrize("backend_name", having("plant"))
async def test_corrupt_entities_are_reported_and_contained(
    backend_name: str, make_repo: MakeRepo, figures: Figures
) -> None:
    repo: Repository[Task] = await make_repo(Task)
    await repo.save_many([Task(id=key, name=key) for key in GOOD])
    plant = BACKENDS[backend_name].plant
    assert plant is not None
    planted = [key for key, raw in _cases().items() if await plant(repo, key, raw)]
    assert {"wrong-types", "id-mismatch", "future-schema"} <= set(planted)

    for key in planted:
        with pytest.raises(CorruptEntityError) as caught:
            await repo.find_by_id(key)
        assert _where(repo) in str(caught.value) and key in str(caught.value), str(caught.value)
    with pytest.raises(CorruptEntityError):
        await repo.find_all()
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        survivors = [t.id for t in await repo.find_all(on_corrupt="warn")]
        streamed = [t.id async for t in repo.iter_all(on_corrupt="warn", batch_size=3)]
    reported = [w for w in caught_warnings if issubclass(w.category, CorruptEntityWarning)]
    assert survivors == streamed == GOOD
    assert len(reported) == 2 * len(planted), [str(w.message) for w in reported]

    good = await repo.get("good-1")  # nothing else is affected
    good.description = "still writable"
    assert await repo.update(good)
    for key in planted:
        assert await repo.delete(key)  # a corrupt entity can always be removed
    assert [t.id for t in await repo.find_all()] == GOOD
    refused = sorted(set(_cases()) - set(planted))
    figures.record(
        "corrupt stored data: error naming where; warn-and-continue scan",
        backend_name,
        len(planted),
        faults=len(planted),
        detail=f"cases: {', '.join(planted)}"
        + (f"; refused by the database itself: {', '.join(refused)}" if refused else ""),
    )


async def test_paged_scan_reports_each_unparsable_file_once(
    tmp_path: Any, figures: Figures
) -> None:
    import asyncio

    from symphony_nb import FileSystemRepository

    async with FileSystemRepository(Task, tmp_path / "store") as repo:
        await repo.save_many([Task(id=f"ok-{i}", name="ok") for i in range(5)])
        broken = [f"bad-{i}" for i in range(5)] + [f"zz-{i}" for i in range(3)]
        for key in broken:
            await plant_file(repo, key, b'{"id": "')
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            async def scan() -> list[str]:
                return [t.id async for t in repo.iter_all(on_corrupt="warn", batch_size=2)]

            # More unparsable files than a page once made this loop forever; bound the wait.
            found = await asyncio.wait_for(scan(), timeout=60)
        reported = sorted(str(w.message).split("/")[-1].split(".json")[0] for w in caught)
    assert found == [f"ok-{i}" for i in range(5)]
    assert reported == sorted(broken)
    figures.record(
        "corrupt files in a paged scan (iter_all)",
        "files",
        1,
        faults=len(broken),
        detail=f"{len(broken)} unparsable files, pages of 2: each reported exactly once, scan ends",
    )
