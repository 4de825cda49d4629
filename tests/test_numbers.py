"""Numbers, datetimes and unstorable values inside documents, on every backend."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from symphony_nb import FilterError, Repository, Task, UnstorableEntityError
from symphony_nb._filters import MAX_DIGITS
from tests.backends import base

INTS = [0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64 + 5, 2**64 + 6, 10**20, -(10**30)]
INTS += [-(2**63) - 1, int(1.2345678901234567e17), 10**400]
FLOATS = [1e20, 1e-300, 1.2345678901234567e17, float(2**53 + 1), 0.1, 5e-324]
FLOATS += [1.7976931348623157e308, -1.7976931348623157e308, -0.0, 2.5, -1e16, 1.5e-7]
NUMBERS = INTS + FLOATS
# Thresholds for the ranges: every number, and the neighbours that only exact arithmetic sees.
EDGES = [*NUMBERS, 2**64 + 4, 2**64, 2**64 + 5.0, -(2**63) - 2, 10**400 + 1, 1e308, -1e-300]


def same(got: Any, expected: Any, backend: str) -> bool:
    """Equal and of the same type; negative zero keeps its sign except on PostgreSQL."""
    if type(got) is not type(expected) or got != expected:
        return False
    if isinstance(expected, float) and expected == 0 and base(backend) != "postgres":
        return math.copysign(1, got) == math.copysign(1, expected)
    return True


def number_tasks() -> list[Task]:
    return [Task(id=f"n{index:02d}", name="n", input_data={"v": value, "l": [value]})
            for index, value in enumerate(NUMBERS)]  # fmt: skip


def ids_where(test: Callable[[Any], bool]) -> list[str]:
    return [f"n{index:02d}" for index, value in enumerate(NUMBERS) if test(value)]


async def test_numbers_round_trip_exactly(repo: Repository[Task], backend_name: str) -> None:
    data = {f"k{index}": value for index, value in enumerate(NUMBERS)}
    task = Task(id="nums", name="n", input_data={**data, "deep": {"list": NUMBERS}})
    await repo.save(task)
    for stored in (await repo.get("nums"), (await repo.find_all())[0]):
        for key, value in data.items():
            assert same(stored.input_data[key], value, backend_name), (key, value)
        for got, value in zip(stored.input_data["deep"]["list"], NUMBERS, strict=True):
            assert same(got, value, backend_name), value


async def test_negative_zero_is_zero_on_postgres(repo: Repository[Task], backend_name: str) -> None:
    await repo.save(Task(id="z", name="z", input_data={"z": -0.0}))
    sign = math.copysign(1, (await repo.get("z")).input_data["z"])
    assert sign == (1 if base(backend_name) == "postgres" else -1)


class Measured(BaseModel):
    id: str
    count: int = 0
    weight: float = 0.0


async def test_typed_number_fields_round_trip(
    make_repo: Callable[[type[Any]], Any], backend_name: str
) -> None:
    repo: Repository[Measured] = await make_repo(Measured)
    values = [(2**64 + 5, 1e20), (-(10**30), 1.2345678901234567e17), (10**20, 5e-324)]
    for index, (count, weight) in enumerate(values):
        await repo.save(Measured(id=f"m{index}", count=count, weight=weight))
    for index, (count, weight) in enumerate(values):
        stored = await repo.get(f"m{index}")
        assert same(stored.count, count, backend_name)
        assert same(stored.weight, weight, backend_name)
    found = await repo.find_all({"weight": 1e20})
    assert [m.id for m in found] == ["m0"]
    assert [m.id for m in await repo.find_all({"count": {"$gt": 2**64}})] == ["m0", "m2"]


async def test_equal_finds_each_number_exactly(repo: Repository[Task]) -> None:
    await repo.save_many(number_tasks())
    for operand in NUMBERS:
        expected = ids_where(lambda value, x=operand: value == x)
        assert [t.id for t in await repo.find_all({"input_data.v": operand})] == expected, operand
        assert await repo.count({"input_data.v": {"$ne": operand}}) == len(NUMBERS) - len(expected)
        contained = await repo.find_all({"input_data.l": {"$contains": operand}})
        assert [t.id for t in contained] == expected, operand
    wide = [2**64 + 5, 1e20, -(10**30), 7]
    expected = ids_where(lambda value: value in wide)
    assert [t.id for t in await repo.find_all({"input_data.v": {"$in": wide}})] == expected
    assert await repo.count({"input_data.v": {"$nin": wide}}) == len(NUMBERS) - len(expected)


@pytest.mark.parametrize("op", ["$gt", "$gte", "$lt", "$lte"])
async def test_ranges_compare_numbers_exactly(repo: Repository[Task], op: str) -> None:
    await repo.save_many(number_tasks())
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "$gt": lambda a, b: a > b,
        "$gte": lambda a, b: a >= b,
        "$lt": lambda a, b: a < b,
        "$lte": lambda a, b: a <= b,
    }
    for operand in EDGES:
        expected = ids_where(lambda value, x=operand: compare[op](value, x))
        found = await repo.find_all({"input_data.v": {op: operand}})
        assert [t.id for t in found] == expected, (op, operand)
        assert await repo.count({"input_data.v": {op: operand}}) == len(expected), (op, operand)


async def test_ordering_by_wide_integers_is_exact(
    make_repo: Callable[[type[Any]], Any],
) -> None:
    repo: Repository[Measured] = await make_repo(Measured)
    counts = [2**64 + 6, 2**64 + 5, -(2**63) - 2, -(2**63) - 1, -(2**63), 2**64, 10**30, 3]
    await repo.save_many([Measured(id=f"m{i}", count=c) for i, c in enumerate(counts)])
    by_count = [f"m{i}" for i, _ in sorted(enumerate(counts), key=lambda pair: pair[1])]
    assert [m.id for m in await repo.find_all(order_by="count")] == by_count
    assert [m.id for m in await repo.find_all(order_by="-count")] == by_count[::-1]
    paged = [m.id async for m in repo.iter_all(order_by="count", batch_size=3)]
    assert paged == by_count


# ---------------------------------------------------------------- datetimes inside dicts

DUE = datetime(2024, 1, 1, tzinfo=UTC)


async def test_datetimes_in_dicts_are_stored_as_fixed_width_utc(repo: Repository[Task]) -> None:
    plus_two = timezone(timedelta(hours=2))
    task = Task(
        id="d",
        name="d",
        input_data={"due": DUE, "local": datetime(2024, 1, 1, 1, 30, tzinfo=plus_two)},
        metadata={"when": [DUE + timedelta(microseconds=5)], "deep": {"at": DUE}},
    )
    await repo.save(task)
    assert task.input_data["due"] is DUE  # the object saved is left as it was
    stored = await repo.get("d")
    assert stored.input_data == {
        "due": "2024-01-01T00:00:00.000000Z",
        "local": "2023-12-31T23:30:00.000000Z",
    }
    assert stored.metadata == {
        "when": ["2024-01-01T00:00:00.000005Z"],
        "deep": {"at": "2024-01-01T00:00:00.000000Z"},
    }


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({"input_data.due": DUE}, ["a"]),
        ({"input_data.due": {"$lte": DUE}}, ["a", "c"]),
        ({"input_data.due": {"$gte": DUE}}, ["a", "b"]),
        ({"input_data.due": {"$lt": DUE}}, ["c"]),
        ({"input_data.due": DUE.astimezone(timezone(timedelta(hours=-5)))}, ["a"]),
        ({"input_data.due": {"$in": [DUE + timedelta(hours=1), DUE]}}, ["a", "b"]),
        ({"input_data.due": {"$gt": datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))}},
         ["b"]),
        ({"input_data.all": {"$contains": DUE}}, ["a"]),
    ],
)  # fmt: skip
async def test_datetime_operands_compare_as_instants(
    repo: Repository[Task], criteria: dict[str, Any], expected: list[str]
) -> None:
    plus_two = timezone(timedelta(hours=2))
    await repo.save_many(
        [
            Task(id="a", name="a", input_data={"due": DUE, "all": [DUE]}),
            # 01:00 UTC, written in +02:00; as text it would sort before midnight UTC
            Task(id="b", name="b", input_data={"due": datetime(2024, 1, 1, 3, tzinfo=plus_two)}),
            Task(id="c", name="c", input_data={"due": DUE - timedelta(microseconds=1)}),
        ]
    )
    assert [t.id for t in await repo.find_all(criteria)] == expected
    assert await repo.count(criteria) == len(expected)


# ---------------------------------------------------------------- refused values


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"input_data": {"x": float("nan")}}, "input_data.x"),
        ({"input_data": {"x": float("inf")}}, "input_data.x"),
        ({"output_data": {"a": {"b": [1, float("-inf")]}}}, "output_data.a.b[1]"),
        ({"metadata": {"l": [(1, float("nan"))]}}, "metadata.l[0][1]"),
        ({"input_data": {"due": datetime(2024, 1, 1)}}, "input_data.due"),
        ({"input_data": {"n": 10**MAX_DIGITS}}, "input_data.n"),
    ],
)
async def test_unstorable_values_are_refused(
    repo: Repository[Task], data: dict[str, Any], where: str
) -> None:
    with pytest.raises(UnstorableEntityError, match=rf"Task 'u': {re.escape(where)} "):
        await repo.save(Task(id="u", name="u", **data))
    with pytest.raises(UnstorableEntityError):
        await repo.save_many([Task(id="ok", name="ok"), Task(id="u", name="u", **data)])
    assert await repo.find_all() == []


async def test_nan_in_float_field_is_refused(make_repo: Callable[[type[Any]], Any]) -> None:
    repo: Repository[Measured] = await make_repo(Measured)
    with pytest.raises(UnstorableEntityError, match="weight is nan"):
        await repo.save(Measured(id="m", weight=float("nan")))
    assert await repo.count() == 0


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ({"input_data.x": float("nan")}, "finite"),
        ({"input_data.x": {"$gt": float("inf")}}, "finite"),
        ({"input_data.x": {"$in": [1, float("-inf")]}}, "finite"),
        ({"input_data.x": {"$contains": float("nan")}}, "finite"),
        ({"version": {"$lt": float("inf")}}, "finite|valid"),
        ({"input_data.x": datetime(2024, 1, 1)}, "naive datetime"),
        ({"input_data.x": 10**MAX_DIGITS}, "more than 4300 digits"),
    ],
)
async def test_unrepresentable_operands_are_filter_errors(
    repo: Repository[Task], criteria: dict[str, Any], message: str
) -> None:
    with pytest.raises(FilterError, match=message):
        await repo.find_all(criteria)
    with pytest.raises(FilterError, match=message):
        await repo.count(criteria)


# ---------------------------------------------------------------- file layout


async def test_files_keep_wide_integers_as_written(tmp_path: Path) -> None:
    from symphony_nb import FileSystemRepository

    async with FileSystemRepository(Task, tmp_path) as repo:
        await repo.save(Task(id="w", name="w", input_data={"n": 10**20, "f": 1e20, "é": "é"}))
        text = (repo.path / "w.json").read_text()
    assert '"n": 100000000000000000000' in text
    assert '"é": "é"' in text
    assert text.startswith('{\n  "id": "w",')
