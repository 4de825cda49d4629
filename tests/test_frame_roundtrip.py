"""The DataFrame round trip on every backend: an unedited frame writes nothing, an edited cell
changes exactly its value, empty cells of stored rows are refused, corrupt entities are
reported as ``find_all`` reports them, and rows without an id get a fresh one."""

from __future__ import annotations

import sqlite3
import uuid
import warnings
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from symphony_nb import (
    CorruptEntityError,
    CorruptEntityWarning,
    FileSystemRepository,
    Repository,
    RowValidationError,
    Task,
    TaskStatus,
)
from symphony_nb._ids import id_to_filename
from symphony_nb.dataframes import from_dataframe, to_dataframe


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
    if hasattr(repo, "_rows"):  # memory
        repo._rows[key] = (doc.get("version"), raw, doc)
    elif isinstance(repo, FileSystemRepository):
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
