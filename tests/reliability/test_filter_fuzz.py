"""Fuzzed filter keys, values and orderings: FilterError or the in-memory answer, everywhere."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symphony_nb import (
    FilterError,
    Repository,
    Task,
    TaskPriority,
    TaskStatus,
    UnstorableEntityError,
)
from symphony_nb._filters import OPERATORS, Query, apply_query, parse_filter
from tests.reliability._open_all import every_backend
from tests.reliability.conftest import Figures

EXAMPLES = int(os.environ.get("SYMPHONY_NB_FUZZ_EXAMPLES", "1000"))
# The same examples every run unless asked (a CI run must not fail at random on a known bug).
RANDOM = os.environ.get("SYMPHONY_NB_FUZZ_RANDOM") == "1"
HOSTILE = "'\"-;$[]().*\\%_ /@#{}:,=<>!?`~\u00e9\u2603\U0001d11e\u200b\u0301"
NASTY = [
    "' OR '1'='1", "1; DROP TABLE task; --", "$.input_data", "$[0]", "input_data->>'q'",
    "%", "_", "\\", "\\'", "Symphony", "pending", "critical", "{}", "[]", "null", "true",
    "1", "*", "') OR 1=1 --", '" OR ""="', "\u2603", "caf\u00e9", "cafe\u0301",
]  # fmt: skip
FIELDS = [
    "id", "name", "description", "status", "priority", "version", "error", "tags",
    "created_at", "input_data", "input_data.q", "input_data.n", "input_data.x.y",
    "input_data.a'b", "metadata.k", "output_data.q", "model_config",
]  # fmt: skip
SEED = [
    Task(id="t00", name="plain", input_data={"q": "Symphony", "n": 1}, tags=["a", "b"],
         metadata={"k": "v"}),
    Task(id="t01", name="quote ' \" --; DROP TABLE task", input_data={"q": "' OR '1'='1", "n": 1.0},
         tags=["' OR 1=1 --"], status=TaskStatus.RUNNING),
    Task(id="t02", name="$where", input_data={"q": None, "n": "1", "x": {"y": [1, "2", None]}},
         priority=TaskPriority.CRITICAL, error="%"),
    Task(id="t03", name="\u2603 \U0001d11e", input_data={"n": True, "q": "caf\u00e9"},
         description="cafe\u0301", status=TaskStatus.FAILED),
    Task(id="t04", name="lists", input_data={"n": [1, 2], "q": ["Symphony"], "x": {"y": "1"}},
         tags=["Symphony", "%"], priority=TaskPriority.LOW),
    Task(id="t05", name="empty", output_data={"q": "done"}),
    Task(id="t06", name="%_\\", description="\\'", input_data={"q": "%", "n": -(2**63)},
         metadata={"k": ["v"]}, created_at=datetime(2020, 1, 1, tzinfo=UTC)),
    Task(id="t07", name="big", input_data={"q": "", "n": 2.5e300, "x": {"y": {"z": 1}}},
         status=TaskStatus.COMPLETED, error=""),
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(alphabet=HOSTILE + "abcSymphony01", max_size=12),
    st.sampled_from(NASTY),
    st.datetimes(timezones=st.just(UTC)),
    st.sampled_from(list(TaskStatus) + list(TaskPriority)),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(
        st.sampled_from([*OPERATORS, "$where", "$regex", "$or", "$", "$in'", "eq"]),
        st.one_of(scalars, st.lists(scalars, max_size=3)),
        min_size=1,
        max_size=2,
    ),
)
keys = st.one_of(
    st.sampled_from(FIELDS),
    st.text(alphabet=HOSTILE + "ab", min_size=1, max_size=10).map(lambda s: f"input_data.{s}"),
    st.sampled_from(NASTY).map(lambda s: f"input_data.{s}"),
    st.text(max_size=15),
)
orders = st.one_of(
    st.none(),
    st.sampled_from(
        ["priority", "-priority", "status", "-name", "error", "-version", "created_at"]
    ),
    st.sampled_from([*FIELDS, *(f"-{f}" for f in FIELDS)]),
    st.lists(
        st.sampled_from(["-priority", "status", "name", "-created_at", "error", "x'"]), max_size=3
    ),
)
# Sub-keys of dict fields that the filter layer accepts, so they reach the SQL compilers.
SUBKEY = "'-;()%_ /@#{}:,=<>!?`~\u00e9\u2603\U0001d11e\u200b\u0301ab"
dict_keys = st.tuples(
    st.sampled_from(["input_data", "metadata", "output_data", "model_config"]),
    st.lists(st.text(alphabet=SUBKEY, min_size=1, max_size=8), min_size=1, max_size=2),
).map(lambda t: ".".join([t[0], *t[1]]))
operations = st.dictionaries(
    st.sampled_from(OPERATORS), st.one_of(scalars, st.lists(scalars, max_size=3)), min_size=1
)
filters = st.one_of(
    st.dictionaries(keys, values, max_size=3),
    st.dictionaries(
        st.one_of(dict_keys, st.sampled_from(FIELDS)), st.one_of(scalars, operations), max_size=3
    ),
)


def _outcome(repo: Repository[Task], criteria: Any, order_by: Any) -> tuple[str, Any]:
    try:
        found = repo.sync.find_all(criteria, order_by=order_by)
        count = repo.sync.count(criteria)
    except FilterError:
        return ("FilterError", None)
    assert count == len(found), f"count {count} but find_all returned {len(found)}"
    return ("rows", [task.id for task in found])


def test_fuzzed_filters_match_in_memory_evaluation(tmp_path: Path, figures: Figures) -> None:
    tally = {"examples": 0, "refused": 0, "rows": 0}
    with every_backend(Task, tmp_path) as repos:
        for repo in repos.values():
            repo.sync.save_many([task.model_copy(deep=True) for task in SEED])
        reference = repos["memory"]

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            derandomize=not RANDOM,
        )
        @given(filters, orders)
        def check(criteria: dict[str, Any], order_by: Any) -> None:
            expected = _outcome(reference, criteria, order_by)
            tally["examples"] += 1
            tally["refused"] += expected[0] == "FilterError"
            tally["rows"] += len(expected[1] or ())
            for name, repo in repos.items():
                assert _outcome(repo, criteria, order_by) == expected, (name, criteria, order_by)

        check()
        names = sorted(repos)
    figures.record(
        "hostile filters: only FilterError, same rows as in memory",
        ", ".join(names),
        tally["examples"],
        faults=tally["examples"],
        detail=f"hypothesis filters+orderings: {tally['refused']} refused with FilterError, "
        f"{tally['examples'] - tally['refused']} evaluated ({tally['rows']} rows) "
        "identically on every backend",
    )


CRAFTED: list[dict[str, Any]] = [
    {"name": "' OR '1'='1"},
    {"name": "x' OR 1=1 --"},
    {"name": {"$in": ["plain", "') OR ('1'='1"]}},
    {"input_data.q') OR 1=1 --": 1},
    {"input_data.q' || '": "x"},
    {"input_data.q;DROP TABLE task": 1},
    {"input_data.q/**/OR/**/1=1": 1},
    {"input_data.$.q": 1},
    {"input_data.q[0]": 1},
    {"input_data.*": 1},
    {"input_data.q\\": 1},
    {'input_data."q"': 1},
    {"input_data.q": {"$contains": "%"}},
    {"input_data.q": {"$contains": "_"}},
    {"name": {"$contains": "%_\\"}},
    {"error": {"$contains": "%"}},
    {"input_data.q": {"$gt": "' OR 1=1"}},
    {"input_data.n": {"$in": ["1", True, 2.5e300]}},
    {"input_data.n": 1},
    {"input_data.n": True},
    {"input_data.x.y": {"$contains": "2"}},
    {"tags": {"$contains": "' OR 1=1 --"}},
    {"$where": "1"},
    {"name": {"$where": "this.name"}},
    {"name": {"$regex": ".*"}},
    {"id": {"$gte": ""}},
]


def test_crafted_filters_are_refused_or_exact(tmp_path: Path, figures: Figures) -> None:
    refused = 0
    with every_backend(Task, tmp_path) as repos:
        for repo in repos.values():
            repo.sync.save_many([task.model_copy(deep=True) for task in SEED])
        for criteria in CRAFTED:
            expected = _outcome(repos["memory"], criteria, None)
            refused += expected[0] == "FilterError"
            for name, repo in repos.items():
                assert _outcome(repo, criteria, None) == expected, (name, criteria)
        names = sorted(repos)
    figures.record(
        "crafted injection filters: refused or exact",
        ", ".join(names),
        len(CRAFTED),
        faults=len(CRAFTED),
        detail=f"{refused} refused with FilterError, {len(CRAFTED) - refused} answered exactly "
        "as in memory",
    )


async def test_text_with_nul_is_refused_alike_everywhere(
    backend_name: str, make_repo: Any, figures: Figures
) -> None:
    # SQLite's JSON functions end text at NUL and PostgreSQL's jsonb cannot hold it, so no
    # backend accepts it: data that saves on one backend can always move to the others.
    repo: Repository[Task] = await make_repo(Task)
    await repo.save(Task(id="plain", name="a"))
    refused = 0
    for entity in (
        Task(id="nul-name", name="a\x00b"),
        Task(id="nul-value", name="x", input_data={"q": "x\x00y"}),
        Task(id="nul-key", name="x", metadata={"k\x00": 1}),
    ):
        with pytest.raises(UnstorableEntityError, match="NUL"):
            await repo.save_many([entity, Task(id="bystander", name="b")])
        refused += 1
    with pytest.raises(FilterError, match="NUL"):
        await repo.find_all({"name": "a\x00b"})
    await repo.save(Task(id="escaped", name="a\\u0000b"))  # a backslash, not a NUL
    assert [t.id for t in await repo.find_all({"name": "a\\u0000b"})] == ["escaped"]
    assert sorted(t.id for t in await repo.find_all()) == ["escaped", "plain"]
    figures.record(
        "text containing NUL (U+0000): refused on every backend",
        backend_name,
        1,
        faults=refused + 1,
        detail=f"{refused} entities refused with UnstorableEntityError, 1 filter with "
        "FilterError; store unchanged",
    )


async def test_in_list_mixing_numbers_and_booleans(
    backend_name: str, make_repo: Any, figures: Figures
) -> None:
    repo: Repository[Task] = await make_repo(Task)
    await repo.save_many([task.model_copy(deep=True) for task in SEED])
    docs = [(task.id, orjson.loads(task.model_dump_json())) for task in SEED]
    wrong = {}
    cases = [[1, True], [True, 1], [1.0, False, True], ["1", 1, True]]
    for items in cases:
        for op in ("$in", "$nin"):
            criteria = {"input_data.n": {op: items}}
            expected = apply_query(Query(parse_filter(Task, criteria)), docs)
            got = [task.id for task in await repo.find_all(criteria)]
            if got != expected:
                wrong[f"{op} {items}"] = got
    figures.record(
        "`$in` / `$nin` mixing numbers and booleans",
        backend_name,
        2 * len(cases),
        faults=2 * len(cases),
        detail=f"answers differing from the reference evaluation: {wrong or 'none'}",
    )
    assert wrong == {}
