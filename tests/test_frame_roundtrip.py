"""The DataFrame round trip on every backend: an unedited frame writes nothing, an edited cell
changes exactly its value, empty cells of stored rows are refused, corrupt entities are
reported as ``find_all`` reports them, and rows without an id get a fresh one."""

from __future__ import annotations

import itertools
import os
import sqlite3
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from symphony_nb import (
    CorruptEntityError,
    CorruptEntityWarning,
    FileSystemRepository,
    Repository,
    RowValidationError,
    Task,
    TaskPriority,
    TaskStatus,
)
from symphony_nb._ids import id_to_filename
from symphony_nb.backends.filesystem import FileStore
from symphony_nb.dataframes import from_dataframe, to_dataframe
from symphony_nb.stores import StoreLayer
from tests.backends import opened


async def _store(repo: Repository[Task], *inputs: dict[str, Any] | None) -> list[Task]:
    await repo.save_many(
        [Task(id=f"t{i}", name=f"task {i}", input_data=data or {}) for i, data in enumerate(inputs)]
    )
    return await repo.find_all()


async def _snapshot(repo: Repository[Task]) -> list[str]:
    """Every stored entity exactly, versions and timestamps included."""
    return [task.model_dump_json() for task in await repo.find_all()]


async def _plant(repo: Any, key: str, doc: dict[str, Any]) -> None:
    """Store ``doc`` as the raw document of ``key``, behind the repository's back."""
    raw = orjson.dumps(doc).decode()
    store = repo.store
    while isinstance(store, StoreLayer):
        store = store.inner
    repo = store
    if hasattr(repo, "_rows"):  # memory
        repo._rows[key] = (doc.get("version"), raw, doc)
    elif hasattr(repo, "docs"):  # the dict store of tests/test_store_seam.py
        repo.docs[key] = (doc.get("version"), raw)
    elif isinstance(repo, FileStore):
        (repo.path / id_to_filename(key)).write_text(raw)
    elif hasattr(repo, "schema"):  # postgres
        from tests import pg

        conn = await pg.connect()
        try:
            await conn.execute(
                f'INSERT INTO "{repo.schema}"."{repo.table}" (id, version, doc) '
                "VALUES ($1, 1, $2::jsonb) ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc",
                key,
                raw,
            )
        finally:
            await conn.close()
    else:  # sqlite
        conn = sqlite3.connect(repo.path, timeout=30)
        try:
            with conn:
                conn.execute(
                    f'INSERT OR REPLACE INTO "{repo.table}" (id, version, doc) VALUES (?, 1, ?)',
                    (key, raw),
                )
        finally:
            conn.close()


# --------------------------------------------------------------------------- 1. flattening

UNEDITED = {
    "nested-beside-empty-dict": [{"e": {"x": 1}}, {"e": {}}],
    "nested-beside-none": [{"e": {"x": 1}}, {"e": None}],
    "empty-dict-first": [{"e": {}}, {"e": {"x": 1}}],
    "dotted-key": [{"a.b": 1}],
    "dotted-key-beside-nested": [{"a.b": 1, "a": {"b": 2}}],
    "backslash-keys": [{"a\\b": 1, "a\\.b": 2, "a\\": {".": 3}}],
    "big-int-beside-float": [{"n": 2**53 + 1}, {"n": 1.5}],
    "int-beside-bool": [{"n": 1}, {"n": True}, {"n": 1.0}],
    "mixed-types": [{"v": "1"}, {"v": 1}, {"v": [1]}, {"v": None}, {}],
    "empty-dicts-only": [{}, {"e": {}}],
}


@pytest.mark.parametrize("inputs", list(UNEDITED.values()), ids=list(UNEDITED))
async def test_unedited_flat_frame_writes_and_changes_nothing(
    repo: Repository[Task], inputs: list[dict[str, Any]]
) -> None:
    await _store(repo, *inputs)
    before = await _snapshot(repo)
    df = await repo.to_dataframe(flatten=True)
    assert await repo.save_dataframe(df) == []
    assert await _snapshot(repo) == before


async def test_edited_flat_cells_change_exactly_their_values(repo: Repository[Task]) -> None:
    await _store(
        repo,
        {"e": {"x": 1}, "k": [1, 2], "deep": {"a": {"b": None}}},
        {"e": {}},
        {"e": None, "n": 2**53 + 1},
        {"n": 1.5, "a.b": "dot"},
        {"e": {"x": 2}},
    )
    df = await repo.to_dataframe(flatten=True)
    df.loc["t0", "input_data.e.x"] = 10
    df.loc["t1", "input_data.e.x"] = 11  # inside the empty dict
    df.loc["t2", "input_data.n"] = 2**53 + 3
    df.loc["t3", "input_data.a\\.b"] = "edited"
    assert sorted(await repo.save_dataframe(df)) == ["t0", "t1", "t2", "t3"]
    stored = {task.id: task for task in await repo.find_all()}
    assert stored["t0"].input_data == {"e": {"x": 10}, "k": [1, 2], "deep": {"a": {"b": None}}}
    assert stored["t1"].input_data == {"e": {"x": 11}}
    assert stored["t2"].input_data == {"e": None, "n": 2**53 + 3}
    assert type(stored["t2"].input_data["n"]) is int
    assert stored["t3"].input_data == {"n": 1.5, "a.b": "edited"}
    assert stored["t4"].version == 1


async def test_a_cleared_flat_cell_removes_its_key(repo: Repository[Task]) -> None:
    await _store(repo, {"e": {"x": 1, "y": 2}})
    df = await repo.to_dataframe(flatten=True)
    df.loc["t0", "input_data.e.x"] = np.nan
    assert await repo.save_dataframe(df) == ["t0"]
    assert (await repo.get("t0")).input_data == {"e": {"y": 2}}


def test_dotted_and_backslash_keys_are_escaped_in_column_names() -> None:
    task = Task(id="t0", name="n", input_data={"a.b": 1, "a": {"b": 2}, "c\\d": 3})
    df = to_dataframe([task], flatten=True)
    assert {"input_data.a\\.b", "input_data.a.b", "input_data.c\\\\d"} <= set(df.columns)
    assert df.loc["t0", "input_data.a\\.b"] == 1
    assert df.loc["t0", "input_data.a.b"] == 2
    assert from_dataframe(Task, df)[0].input_data == task.input_data


def test_flat_number_columns_keep_integers() -> None:
    tasks = [
        Task(id="t0", name="n", input_data={"big": 2**53 + 1, "i": 1, "f": 0.5, "huge": 2**64}),
        Task(id="t1", name="n", input_data={"big": 1.5, "i": 2, "f": 2.0, "huge": 1}),
        Task(id="t2", name="n", input_data={}),
    ]
    df = to_dataframe(tasks, flatten=True)
    assert str(df["input_data.i"].dtype) == "Int64"
    assert str(df["input_data.f"].dtype) == "Float64"
    assert df["input_data.big"].dtype == object
    assert df["input_data.huge"].dtype == object
    assert df.loc["t0", "input_data.big"] == 2**53 + 1
    assert type(df.loc["t0", "input_data.big"]) is int
    back = from_dataframe(Task, df)
    assert [task.input_data for task in back] == [task.input_data for task in tasks]
    assert type(back[1].input_data["f"]) is float and type(back[0].input_data["i"]) is int


async def test_setting_a_key_inside_a_value_that_is_not_a_dict_is_refused(
    repo: Repository[Task],
) -> None:
    await _store(repo, {"e": 3}, {"e": {"x": 1}})
    df = await repo.to_dataframe(flatten=True)
    df.loc["t0", "input_data.e.x"] = 5
    with pytest.raises(RowValidationError) as info:
        await repo.save_dataframe(df)
    assert [field for field, _ in info.value.problems["t0"]] == ["input_data.e.x"]
    assert "input_data.e" in info.value.problems["t0"][0][1]
    assert (await repo.get("t0")).input_data == {"e": 3}


# --------------------------------------------------------------------------- 4. empty cells


def _empty_status(df: pd.DataFrame) -> None:
    # An incomplete mapping: statuses it does not name become NaN.
    df["status"] = df["status"].map({"pending": "pending"})


def _empty_input(df: pd.DataFrame) -> None:
    df.loc["t2", "input_data"] = np.nan


def _empty_created(df: pd.DataFrame) -> None:
    df.loc["t2", "created_at"] = pd.NaT


@pytest.mark.parametrize(
    ("empty", "field"),
    [(_empty_status, "status"), (_empty_input, "input_data"), (_empty_created, "created_at")],
    ids=["status-by-map", "input_data-nan", "created_at-nat"],
)
async def test_empty_required_cell_of_a_stored_row_is_refused(
    repo: Repository[Task], empty: Any, field: str
) -> None:
    await repo.save_many(
        [
            Task(id="t1", name="waiting"),
            Task(id="t2", name="done", status=TaskStatus.COMPLETED, input_data={"q": 1}),
        ]
    )
    before = await _snapshot(repo)
    df = await repo.to_dataframe()
    empty(df)
    df.loc["t1", "name"] = "an edit beside it"
    with pytest.raises(RowValidationError) as info:
        await repo.save_dataframe(df)
    assert list(info.value.problems) == ["t2"]
    assert [name for name, _ in info.value.problems["t2"]] == [field]
    assert "empty" in info.value.problems["t2"][0][1]
    assert f"t2: {field}" in str(info.value)
    assert await _snapshot(repo) == before


async def test_empty_optional_cell_of_a_stored_row_clears_it(repo: Repository[Task]) -> None:
    await repo.save(Task(id="t1", name="n", error="boom", output_data={"a": 1}))
    df = await repo.to_dataframe()
    df.loc["t1", "error"] = np.nan
    df.loc["t1", "output_data"] = np.nan
    assert await repo.save_dataframe(df) == ["t1"]
    stored = await repo.get("t1")
    assert (stored.error, stored.output_data) == (None, None)


# --------------------------------------------------------------------------- 5. corrupt entities

CORRUPT = {
    "unknown-status-and-extra-field": {"status": "paused", "added_by_a_newer_app": 1},
    "unparsable-created-at": {"created_at": "yesterday"},
}


def _corrupt_doc(entity_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(Task(id=entity_id, name="bad", version=1).model_dump_json())
    doc.update(changes)
    return doc


@pytest.mark.parametrize("changes", list(CORRUPT.values()), ids=list(CORRUPT))
async def test_frames_report_corrupt_entities_as_find_all_does(
    repo: Repository[Task], changes: dict[str, Any]
) -> None:
    await _store(repo, {"q": 1}, {"q": 2})
    await _plant(repo, "bad", _corrupt_doc("bad", changes))
    with pytest.raises(CorruptEntityError) as from_find:
        await repo.find_all()
    for flatten in (False, True):
        with pytest.raises(CorruptEntityError) as from_frame:
            await repo.to_dataframe(flatten=flatten)
        assert str(from_frame.value) == str(from_find.value)
        assert "'bad'" in str(from_frame.value) or "bad.json" in str(from_frame.value)
    with pytest.raises(CorruptEntityError):
        await repo.to_dataframe(columns=["name"])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = await repo.to_dataframe(on_corrupt="warn")
        found = await repo.find_all(on_corrupt="warn")
    reported = [str(w.message) for w in caught if issubclass(w.category, CorruptEntityWarning)]
    assert reported == [str(from_find.value)] * 2
    assert list(df.index) == [task.id for task in found] == ["t0", "t1"]

    # The frame never held the corrupt entity, so saving it leaves it as it was.
    df.loc["t0", "name"] = "edited"
    assert await repo.save_dataframe(df) == ["t0"]
    with pytest.raises(CorruptEntityError):
        await repo.find_by_id("bad")


async def test_a_row_over_a_corrupt_entity_is_refused(repo: Repository[Task]) -> None:
    await _store(repo, {"q": 1})
    await _plant(repo, "bad", _corrupt_doc("bad", CORRUPT["unknown-status-and-extra-field"]))
    df = to_dataframe([Task(id="bad", name="typed over it", version=1)])
    with pytest.raises(CorruptEntityError, match="bad"):
        await repo.save_dataframe(df)
    with pytest.raises(CorruptEntityError):
        await repo.find_by_id("bad")


@pytest.mark.parametrize("stray", ["Notes.json", "bad name!.json"])
async def test_stray_files_fail_the_frame_or_are_skipped_with_a_warning(
    tmp_path: Any, stray: str
) -> None:
    async with FileSystemRepository(Task, tmp_path) as files:
        await files.save(Task(id="ok", name="ok"))
        (files.path / stray).write_text('{"some": "notes"}')
        with pytest.raises(CorruptEntityError, match=stray.replace("!", ".")):
            await files.to_dataframe()
        with pytest.warns(CorruptEntityWarning, match=stray.replace("!", ".")):
            df = await files.to_dataframe(on_corrupt="warn")
        assert list(df.index) == ["ok"]


async def test_on_corrupt_takes_raise_or_warn(repo: Repository[Task]) -> None:
    with pytest.raises(ValueError, match="on_corrupt"):
        await repo.to_dataframe(on_corrupt="ignore")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- 6. ids


def _is_fresh_id(value: str) -> bool:
    return str(uuid.UUID(value)) == value


# pandas warns that the new row's empty cells turn all-empty text columns into floats.
@pytest.mark.filterwarnings("ignore:Setting an item of incompatible dtype")
async def test_a_row_without_an_id_gets_a_fresh_one(repo: Repository[Task]) -> None:
    await _store(repo, {"q": 1})
    df = (await repo.to_dataframe()).reset_index()
    df.loc[len(df)] = {"name": "typed in pandas"}
    written = await repo.save_dataframe(df)
    assert len(written) == 1 and _is_fresh_id(written[0]), written
    assert (await repo.get(written[0])).name == "typed in pandas"
    assert await repo.find_by_id("nan") is None
    # The frame now holds the new id and version, so saving it again writes nothing.
    assert df.loc[1, "id"] == written[0] and df.loc[1, "version"] == 1
    assert await repo.save_dataframe(df) == []
    assert await repo.count() == 2


async def test_a_row_with_a_positional_label_gets_a_fresh_id(repo: Repository[Task]) -> None:
    await _store(repo, {"q": 1})
    df = pd.concat([await repo.to_dataframe(), pd.DataFrame([{"name": "from concat"}])])
    written = await repo.save_dataframe(df)
    assert len(written) == 1 and _is_fresh_id(written[0]), written
    assert await repo.find_by_id("0") is None
    assert (await repo.get(written[0])).name == "from concat"
    assert list(df.index) == ["t0", written[0]] and df.index.name == "id"
    assert await repo.save_dataframe(df) == []


async def test_stored_rows_that_lost_their_ids_are_refused(repo: Repository[Task]) -> None:
    await _store(repo, {"q": 1}, {"q": 2})
    df = (await repo.to_dataframe()).reset_index(drop=True)
    with pytest.raises(RowValidationError, match="id") as info:
        await repo.save_dataframe(df)
    assert len(info.value.problems) == 2
    assert await repo.count() == 2


# --------------------------------------------------------------------------- the property

EXAMPLES = int(os.environ.get("SYMPHONY_NB_PROPERTY_EXAMPLES", "30"))
BASE = datetime(2026, 1, 1, tzinfo=UTC)
DATES = st.integers(0, 10**8).map(lambda s: BASE + timedelta(seconds=s, microseconds=s % 999983))
WIDE_INTS = [2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, 2**64 + 1]
BIG_FLOATS = [1e20, -1.5e300, 2.0**70, 1e16]
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=5)
KEYS = st.sampled_from(["a", "b", "a.b", "x\\y", "x\\", ".", "", "é", "k 1"])
NAMES = st.sampled_from(["alpha", "beta", "x y"]) | TEXT.filter(str.strip)
_SKIP = {"version", "updated_at"}


@dataclass(frozen=True)
class Draws:
    """What the property draws on one backend."""

    ints: st.SearchStrategy[int]
    floats: st.SearchStrategy[float]
    json: st.SearchStrategy[Any]
    tasks: st.SearchStrategy[Task]
    fields: dict[str, st.SearchStrategy[Any]]  # values an edit puts in a field's own column


@cache
def _draws(backend: str) -> Draws:
    wide, big = WIDE_INTS, BIG_FLOATS
    ints = st.integers(-3, 3) | st.integers(-(2**62), 2**62) | st.sampled_from(wide)
    floats = st.sampled_from([0.0, 1.0, -2.5, 1e-9, 0.1, *big]) | st.floats(
        -1e12, 1e12, allow_nan=False
    )
    scalars = st.none() | st.booleans() | ints | floats | TEXT
    json = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=2) | st.dictionaries(KEYS, inner, max_size=3),
        max_leaves=8,
    )
    dicts = st.dictionaries(KEYS, json | st.just({}) | DATES, max_size=4)
    fields: dict[str, st.SearchStrategy[Any]] = {
        "name": NAMES,
        "description": TEXT,
        "status": st.sampled_from([s.value for s in TaskStatus]),
        "priority": st.sampled_from([p.value for p in TaskPriority]),
        "tags": st.lists(TEXT, max_size=3),
        "error": st.none() | TEXT,
        "started_at": st.none() | DATES,
        "input_data": dicts,
        "output_data": st.none() | dicts,
        "metadata": dicts,
    }
    tasks = st.builds(
        Task,
        name=NAMES,
        description=TEXT,
        status=st.sampled_from(TaskStatus),
        priority=st.sampled_from(TaskPriority),
        input_data=dicts,
        output_data=st.none() | dicts,
        metadata=dicts,
        tags=st.lists(TEXT, max_size=3),
        error=st.none() | TEXT,
        created_at=DATES,
        started_at=st.none() | DATES,
        completed_at=st.none() | DATES,
    )
    return Draws(ints, floats, json, tasks, fields)


def _cell_values(draws: Draws, dtype: Any) -> st.SearchStrategy[Any]:
    """Values a dotted column of ``dtype`` accepts; None clears the cell."""
    kind = str(dtype)
    if kind == "Int64":
        return st.none() | draws.ints.filter(lambda n: -(2**63) <= n < 2**63)
    if kind == "Float64":
        return st.none() | draws.floats
    if kind == "boolean":
        return st.none() | st.booleans()
    if kind == "str":
        return st.none() | TEXT
    return draws.json | st.just({})


def _same(a: Any, b: Any) -> bool:
    """JSON values equal in value and type (``1``, ``1.0`` and ``True`` all differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _split(column: str) -> list[str]:
    """A dotted column name's parts: ``\\`` escapes the next character."""
    parts, current, escaped = [], "", False
    for char in column:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts, current = [*parts, current], ""
        else:
            current += char
    return [*parts, current]


def _cell(value: Any) -> Any:
    """A cell as a plain value: None for NaN/NA/NaT, Python scalars and datetimes."""
    if isinstance(value, (list, dict)):
        return value
    if pd.isna(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if isinstance(value, np.generic) else value


def _set_path(doc: dict[str, Any], path: list[str], value: Any) -> bool:
    """The frame's edit of a dotted cell, done by hand; False where it must be refused."""
    *parents, last = path
    for part in parents:
        inner = doc.get(part)
        if inner is None:
            if value is None:
                return True
            inner = doc[part] = {}
        if not isinstance(inner, dict):
            return value is None
        doc = inner
    if value is None:
        doc.pop(last, None)
    else:
        doc[last] = value
    return True


def _leaf(doc: Any, path: list[str]) -> Any:
    """What the dotted cell of ``path`` shows for ``doc``: a value, ``{}``, or None."""
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return None if isinstance(doc, dict) and doc else doc


def _as_stored(dumped: Any, given: Any) -> Any:
    """``dumped`` with each datetime inside a dict in the fixed-width UTC form stores write."""
    if isinstance(given, datetime):
        return given.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(given, dict) and isinstance(dumped, dict):
        return {key: _as_stored(dumped[key], given[key]) for key in dumped}
    if isinstance(given, list | tuple) and isinstance(dumped, list):
        return [_as_stored(d, g) for d, g in zip(dumped, given, strict=True)]
    return dumped


def _plain(task: Task) -> dict[str, Any]:
    return task.model_dump(mode="json", by_alias=True, exclude=_SKIP)


def _round_trip(
    repo: Repository[Task], draws: Draws, tasks: list[Task], data: st.DataObject
) -> None:
    store = repo.sync
    store.save_many(tasks)
    ids = [task.id for task in tasks]
    mine = {"id": {"$in": ids}}
    before = {task.id: task for task in store.find_all(mine)}
    flatten = data.draw(st.booleans(), label="flatten")
    df = store.to_dataframe(mine, flatten=flatten)
    assert sorted(df.index) == sorted(ids)

    # An unedited frame writes nothing.
    assert store.save_dataframe(df.copy()) == []
    assert {t.id: t.version for t in store.find_all(mine)} == {
        t.id: t.version for t in before.values()
    }

    expected = {entity_id: _plain(task) for entity_id, task in before.items()}
    fields = [c for c in df.columns if c in draws.fields]
    dotted = [c for c in df.columns if "." in c]
    columns = fields + dotted * 3  # dotted columns are where the round trip is subtle
    edited: dict[str, list[list[str]]] = {}
    refused = False
    for _ in range(data.draw(st.integers(1, 5), label="edits") if columns else 0):
        row = data.draw(st.sampled_from(ids), label="row")
        column = data.draw(st.sampled_from(columns), label="column")
        head, *path = _split(column)
        if any(p[: len(path)] == path or path[: len(p)] == p for p in edited.get(row, [])):
            continue  # one edit per path and row: overlapping edits have no single expected value
        strategy = draws.fields[head] if not path else _cell_values(draws, df[column].dtype)
        value = data.draw(strategy, label=f"{row} {column}")
        df.at[row, column] = value
        cell = _cell(df.at[row, column])  # the edit as pandas holds it
        if path:
            if _same(cell, _leaf(_plain(before[row])[head], path)):
                continue  # the cell shows what it showed: no edit
            target = expected[row][head]
            if target is None and cell is not None:  # a null dict field given a key
                target = expected[row][head] = {}
            if target is not None and not _set_path(target, path, cell):
                refused = True
            edited.setdefault(row, []).append(path)
        else:
            update = Task.model_validate({**before[row].model_dump(), head: cell})
            expected[row][head] = _as_stored(_plain(update)[head], cell)
            edited.setdefault(row, []).append([])

    changed = sorted(r for r in ids if not _same(expected[r], _plain(before[r])))
    if refused:
        with pytest.raises(RowValidationError) as info:
            store.save_dataframe(df)
        problems = [msg for errors in info.value.problems.values() for _, msg in errors]
        assert all("not a dict" in msg for msg in problems), problems
        event("refused: a key set inside a value that is not a dict")
        return
    written = store.save_dataframe(df)
    assert sorted(written) == changed
    event(
        f"flatten={flatten}, rows written: {min(len(written), 2)}{'+' if len(written) > 2 else ''}"
    )
    if any(path for paths in edited.values() for path in paths):
        event("a dotted cell edited")
    after = {task.id: task for task in store.find_all(mine)}
    for entity_id in ids:
        assert _same(_plain(after[entity_id]), expected[entity_id]), entity_id
        bump = 1 if entity_id in changed else 0
        assert after[entity_id].version == before[entity_id].version + bump
        assert df.at[entity_id, "version"] == after[entity_id].version
    # Saved once more, the frame writes nothing.
    assert store.save_dataframe(df) == []


_examples = itertools.count()


def test_frame_round_trip_changes_exactly_the_edited_values(
    backend_name: str, tmp_path: Path
) -> None:
    draws = _draws(backend_name)
    with opened(backend_name, Task, tmp_path) as repo:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(tasks=st.lists(draws.tasks, min_size=1, max_size=6), data=st.data())
        def check(tasks: list[Task], data: st.DataObject) -> None:
            run = next(_examples)
            tasks = [t.model_copy(update={"id": f"r{run}-{i}"}) for i, t in enumerate(tasks)]
            _round_trip(repo, draws, tasks, data)

        check()
