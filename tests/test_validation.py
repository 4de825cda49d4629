"""Refusals of the Repository core: bad filters, orderings, pages and ids never reach a backend.

Checked once, on an in-memory repository over a store layer that records every call it gets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from symphony_nb import FilterError, InvalidIdError, Repository, Task
from symphony_nb.backends.memory import MemoryStore
from tests.test_store_seam import Recording


@pytest.fixture
async def recording() -> Repository[Task]:
    """A Task repository holding two tasks, over a :class:`Recording` whose calls start empty."""
    repo = Repository(Task, Recording(MemoryStore(Task)))
    await repo.save_many([Task(id="t1", name="alpha"), Task(id="t2", name="beta")])
    calls_of(repo).clear()
    return repo


def calls_of(repo: Repository[Task]) -> list[str]:
    """The store methods ``repo`` has run since the fixture made it."""
    assert isinstance(repo.store.inner, Recording)
    return repo.store.inner.calls


async def test_the_recording_sees_every_backend_call(recording: Repository[Task]) -> None:
    task = await recording.get("t1")
    task.description = "changed"
    await recording.update(task)
    await recording.find_all({"status": "pending"})
    await recording.count()
    await recording.delete("t1")
    # Each query first asks for documents of another schema version (an indexed probe).
    assert calls_of(recording) == ["get", "write", "select", "select", "select", "count", "remove"]


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
    recording: Repository[Task], criteria: dict[str, Any], message: str
) -> None:
    with pytest.raises(FilterError, match=message):
        await recording.find_all(criteria)
    with pytest.raises(FilterError):
        await recording.count(criteria)
    assert calls_of(recording) == []


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
    recording: Repository[Task], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(FilterError, match=message):
        await recording.find_all(**kwargs)
    assert calls_of(recording) == []


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
async def test_invalid_ids_rejected_everywhere(recording: Repository[Task], bad: str) -> None:
    with pytest.raises(InvalidIdError):
        await recording.find_by_id(bad)
    with pytest.raises(InvalidIdError):
        await recording.delete(bad)
    task = Task.model_construct(**{**Task(name="x").model_dump(), "id": bad})
    with pytest.raises(InvalidIdError):
        await recording.save(task)
    with pytest.raises(InvalidIdError):
        await recording.update(task)
    assert calls_of(recording) == []
