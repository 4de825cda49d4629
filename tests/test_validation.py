"""Refusals of the Repository core: bad filters, orderings, pages and ids never reach a backend.

Checked once, on an in-memory repository that records every backend hook it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest

from symphony_nb import FilterError, InMemoryRepository, InvalidIdError, Task
from symphony_nb._filters import Condition, Query
from symphony_nb._repository import Data, Record


class Recording(InMemoryRepository[Task]):
    """An in-memory repository that lists, in ``calls``, each backend hook it runs."""

    def __init__(self) -> None:
        super().__init__(Task)
        self.calls: list[str] = []

    async def _get(self, entity_id: str) -> str | None:
        self.calls.append("get")
        return await super()._get(entity_id)

    async def _write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        self.calls.append("write")
        return await super()._write(records, create=create)

    async def _remove(self, entity_id: str) -> bool:
        self.calls.append("remove")
        return await super()._remove(entity_id)

    async def _select(self, query: Query) -> list[tuple[str, Data]]:
        self.calls.append("select")
        return await super()._select(query)

    async def _count(self, conditions: tuple[Condition, ...]) -> int:
        self.calls.append("count")
        return await super()._count(conditions)


@pytest.fixture
async def recording() -> Recording:
    """A Task repository holding two tasks, whose record of backend calls starts empty."""
    repo = Recording()
    await repo.save_many([Task(id="t1", name="alpha"), Task(id="t2", name="beta")])
    repo.calls.clear()
    return repo


async def test_the_recording_sees_every_backend_call(recording: Recording) -> None:
    task = await recording.get("t1")
    task.description = "changed"
    await recording.update(task)
    await recording.find_all({"status": "pending"})
    await recording.count()
    await recording.delete("t1")
    assert recording.calls == ["get", "write", "select", "count", "remove"]


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ({"nope": 1}, r"unknown field 'nope'.*valid fields: \[.*'status'"),
        ({"status.x": 1}, "has no sub-fields"),
        ({"status": "bogus"}, "not a valid value"),
        ({"status": {"$regex": "p"}}, "unknown operator"),
        ({"status": {"$in": "pending"}}, "takes a list"),
        ({"status": {"eq": "pending"}}, "only operators"),
        ({"status": {}}, "empty operator"),
        ({"input_data": {"query": "x"}}, "only operators"),
        ({"input_data": "x"}, "dotted keys"),
        ({"tags": "x"}, r"\$contains"),
        ({'input_data.a"b': 1}, "invalid key segment"),
        ({"input_data.": 1}, "invalid key segment"),
        ({"input_data.q": {"$gt": None}}, "compares numbers or strings"),
        ({"input_data.q": {"$exists": 1}}, "True or False"),
        ({"input_data.q": [1]}, "cannot compare"),
        ({"created_at": datetime(2026, 1, 1)}, "valid value"),
        ({"input_data.q": float("nan")}, "finite"),
        ({"input_data.q": {"$in": [float("inf")]}}, "finite"),
        ({"input_data.q": -(10**4300)}, "more than 4300 digits"),
        ({"": 1}, "non-empty"),
    ],
)
async def test_bad_filters_raise_filter_error(
    recording: Recording, criteria: dict[str, Any], message: str
) -> None:
    with pytest.raises(FilterError, match=message):
        await recording.find_all(criteria)
    with pytest.raises(FilterError):
        await recording.count(criteria)
    assert recording.calls == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"order_by": "nope"}, "unknown field 'nope'"),
        ({"order_by": "input_data"}, "not a single value"),
        ({"order_by": "-"}, "field names"),
        ({"limit": -1}, "limit"),
        ({"offset": -1}, "offset"),
        ({"limit": "3"}, "limit"),
    ],
)
async def test_bad_ordering_and_paging(
    recording: Recording, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(FilterError, match=message):
        await recording.find_all(**kwargs)
    assert recording.calls == []


BAD_IDS = [
    "../x",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "..",
    ".",
    ".hidden",
    "",
    "a\x00b",
    "a\nb",
    "CON",
    "nul.txt",
    "café",
    "cafe\u0301",
    "x" * 121,
    "trailing.",
    " lead",
    "tab\t",
]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_invalid_ids_rejected_everywhere(recording: Recording, bad: str) -> None:
    with pytest.raises(InvalidIdError):
        await recording.find_by_id(bad)
    with pytest.raises(InvalidIdError):
        await recording.delete(bad)
    task = Task.model_construct(**{**Task(name="x").model_dump(), "id": bad})
    with pytest.raises(InvalidIdError):
        await recording.save(task)
    with pytest.raises(InvalidIdError):
        await recording.update(task)
    assert recording.calls == []
