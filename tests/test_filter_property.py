"""Every backend answers random queries exactly as the reference evaluation does.

Hypothesis draws Task sets (enums, datetimes, None, unicode, nested dicts of mixed JSON
types, integers beyond 64 bits, floats of every magnitude, datetimes in any time zone inside
dicts) and queries (every operator, dotted paths, orderings, paging); each backend in
``BACKENDS`` must return the ids that ``apply_query`` returns over the stored JSON documents,
in the same order, also when paged by ``iter_all``. Examples per run:
``SYMPHONY_NB_PROPERTY_EXAMPLES`` (default 60; 1000 or more for a thorough run);
``SYMPHONY_NB_PROPERTY_BACKENDS=memory,sqlite`` limits the run to some backends.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symphony_nb import FilterError, Task, TaskPriority, TaskStatus
from symphony_nb._filters import (
    OPERATORS,
    Query,
    apply_query,
    parse_document,
    parse_filter,
    parse_order,
)
from tests.backends import BACKENDS, BackendUnavailable

EXAMPLES = int(os.environ.get("SYMPHONY_NB_PROPERTY_EXAMPLES", "60"))
ONLY = os.environ.get("SYMPHONY_NB_PROPERTY_BACKENDS", "")  # e.g. "memory,sqlite"

# SQLite's JSON functions stop at NUL; surrogates are not valid in JSON text.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6)
SHORT = st.sampled_from(["", "a", "ab", "b", "B", "é", "e\u0301", "日本", "a b", "'", "1", "true"])
WORDS = SHORT | TEXT
BASE = datetime(2026, 1, 1, tzinfo=UTC)
DATES = st.integers(0, 10**6).map(lambda s: BASE + timedelta(seconds=s, microseconds=s % 7))
# Integers near and beyond 64 bits, which some stores read as the nearest double.
WIDE = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 + 5, 2**64 + 6, 10**20, -(10**30)]
INTS = st.integers(-5, 5) | st.integers(-(2**53), 2**53) | st.sampled_from(WIDE)
INTS |= st.integers(-(2**70), 2**70)
FLOATS = st.sampled_from([0.0, -0.0, -0.5, 1.0, 2.5, 1e-9, 1e20, 1.2345678901234567e17, 5e-324])
FLOATS |= st.floats(-1e6, 1e6, allow_nan=False) | st.floats(allow_nan=False, allow_infinity=False)
ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))]
)
ZONED = st.tuples(DATES, ZONES).map(lambda pair: pair[0].astimezone(pair[1]))
TRICKY = [0, 1, 1.0, True, False, "1", "true", None]  # equal in Python, not in JSON
SCALARS = st.sampled_from(TRICKY) | INTS | FLOATS | WORDS | ZONED
KEYS = st.sampled_from(["a", "b", "c", "é", "k 1", "it's"])
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)

TASKS = st.builds(
    Task,
    name=st.sampled_from(["alpha", "beta", "Gamma", "ä", "x y"]) | TEXT.filter(str.strip),
    description=WORDS,
    status=st.sampled_from(TaskStatus),
    priority=st.sampled_from(TaskPriority),
    input_data=st.dictionaries(KEYS, JSON, max_size=4),
    output_data=st.none() | st.dictionaries(KEYS, JSON, max_size=2),
    tags=st.lists(SHORT, max_size=3),
    agent_id=st.none() | SHORT,
    created_at=DATES,
    started_at=st.none() | DATES,
)
ENTITY_SETS = st.lists(TASKS, max_size=12).map(
    lambda tasks: [t.model_copy(update={"id": f"t{i:02d}"}) for i, t in enumerate(tasks)]
)

# field path -> strategy of operands that fit it
OPERANDS: dict[str, st.SearchStrategy[Any]] = {
    "status": st.sampled_from(TaskStatus),
    "priority": st.sampled_from([p.value for p in TaskPriority]),
    "name": WORDS,
    "description": WORDS,
    "agent_id": st.none() | SHORT,
    "created_at": DATES,
    "started_at": st.none() | DATES,
    "version": st.integers(0, 3) | st.sampled_from(WIDE),
    "id": st.sampled_from(["t00", "t03", "t1", "u"]),
    "tags": SHORT,
    "input_data.a": SCALARS,
    "input_data.é": SCALARS,
    "input_data.k 1": SCALARS,
    "input_data.it's": SCALARS,
    "input_data.a.b": SCALARS,
    "output_data.c": SCALARS,
    "metadata.a": SCALARS,
}
OPS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains"]
ORDERABLE = [
    "status",
    "priority",
    "name",
    "description",
    "agent_id",
    "created_at",
    "started_at",
    "version",
    "id",
]


@st.composite
def conditions(draw: st.DrawFn) -> tuple[str, Any]:
    key = draw(st.sampled_from(sorted(OPERANDS)))
    values = OPERANDS[key]
    op = draw(st.sampled_from([*OPS, "plain"]))
    if op == "plain":
        return key, draw(values)
    if op in ("$in", "$nin"):
        mixed = st.lists(st.sampled_from(TRICKY), min_size=2, max_size=4)
        return key, {op: draw(st.lists(values, max_size=3) | mixed)}
    if op == "$exists":
        return key, {op: draw(st.booleans())}
    return key, {op: draw(values)}


@st.composite
def queries(draw: st.DrawFn) -> tuple[dict[str, Any], list[str], int | None, int]:
    criteria = dict(draw(st.lists(conditions(), max_size=3)))
    order = draw(st.lists(st.sampled_from(ORDERABLE), max_size=2, unique=True))
    order = [("-" if draw(st.booleans()) else "") + key for key in order]
    limit = draw(st.none() | st.integers(0, 5))
    offset = draw(st.integers(0, 3)) if draw(st.booleans()) else 0
    return criteria, order, limit, offset


def _parse(criteria: dict[str, Any], order: list[str]) -> Any:
    try:
        return parse_filter(Task, criteria), parse_order(Task, order)
    except FilterError:
        return None


async def agrees(
    name: str,
    repo: Any,
    asked: tuple[dict[str, Any], list[str], int | None, int],
    parsed: Query,
    docs: list[tuple[str, Any]],
) -> None:
    """``repo`` answers ``asked`` (find_all, count, iter_all) as ``apply_query`` over ``docs``."""
    criteria, order, limit, offset = asked
    expected = apply_query(Query(parsed.conditions, parsed.order, limit, offset), docs)
    found = await repo.find_all(criteria, order_by=order, limit=limit, offset=offset)
    assert [t.id for t in found] == expected, (name, criteria, order, limit, offset)
    everything = apply_query(parsed, docs)
    assert await repo.count(criteria) == len(everything), (name, criteria)
    paged = [t.id async for t in repo.iter_all(criteria, order_by=order, batch_size=2)]
    assert paged == everything, (name, criteria, order, "iter_all")


async def _check(tasks: list[Task], asked: list[Any], where: Path) -> None:
    valid = [(q, parsed) for q in asked if (parsed := _parse(q[0], q[1])) is not None]
    docs: list[tuple[str, Any]] | None = None
    for name, factory in sorted(BACKENDS.items()):
        if ONLY and name not in ONLY.split(","):
            continue
        try:
            async with factory(Task, where / name) as repo:
                await repo.save_many([t.model_copy() for t in tasks])
                if docs is None:
                    stored = await repo.find_all()
                    docs = [(t.id, parse_document(t.model_dump_json(), exact=True)) for t in stored]
                for asked_query, (conds, keys) in valid:
                    await agrees(name, repo, asked_query, Query(conds, keys), docs)
        except BackendUnavailable:
            continue


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tasks=ENTITY_SETS, asked=st.lists(queries(), min_size=1, max_size=4))
def test_backends_agree_with_the_reference(tasks: list[Task], asked: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_check(tasks, asked, Path(folder)))


def test_every_operator_is_drawn() -> None:
    assert sorted(OPS) == sorted(OPERATORS)
