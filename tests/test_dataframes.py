"""pandas round-trip over every backend: dtypes, pushdown, flattening, writing edited rows back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, NaiveDatetime

from symphony_nb import (
    AgentConfig,
    ConflictError,
    CorruptEntityError,
    FileSystemRepository,
    FilterError,
    Repository,
    RowValidationError,
    Task,
    TaskPriority,
    TaskStatus,
)
from symphony_nb.dataframes import from_dataframe, to_dataframe

T0 = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def _tasks() -> list[Task]:
    return [
        Task(
            id=f"t{i}",
            name=f"task {i}",
            status=list(TaskStatus)[i % 4],
            priority=list(TaskPriority)[i % 4],
            input_data={"query": f"q{i}", "opts": {"depth": i}},
            tags=["x", str(i)],
            started_at=T0 + timedelta(hours=i) if i % 2 else None,
            error="boom" if i == 3 else None,
        )
        for i in range(6)
    ]


@pytest.fixture
async def filled(repo: Repository[Task]) -> Repository[Task]:
    await repo.save_many(_tasks())
    return repo


async def test_frame_has_id_index_and_typed_columns(filled: Repository[Task]) -> None:
    df = await filled.to_dataframe()
    assert df.index.name == "id"
    assert sorted(df.index) == [f"t{i}" for i in range(6)]
    assert "id" not in df.columns
    assert list(df.columns) == [name for name in Task.model_fields if name != "id"]
    assert isinstance(df["status"].dtype, pd.CategoricalDtype)
    assert list(df["status"].cat.categories) == [s.value for s in TaskStatus]
    assert list(df["priority"].cat.categories) == ["low", "medium", "high", "critical"]
    assert str(df["started_at"].dtype) == "datetime64[us, UTC]"
    assert df.loc["t1", "started_at"] == pd.Timestamp(T0 + timedelta(hours=1))
    assert df.loc["t1", "started_at"].microsecond == 123456
    assert pd.isna(df.loc["t0", "started_at"])
    assert df["version"].dtype == np.int64
    assert df.loc["t2", "input_data"] == {"query": "q2", "opts": {"depth": 2}}
    assert df.loc["t2", "tags"] == ["x", "2"]
    assert df.loc["t3", "error"] == "boom"
    assert df.loc["t2", "status"] == TaskStatus.COMPLETED


async def test_each_document_is_validated_once(
    filled: Repository[Task], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    decode = filled.decode

    def counting(entity_id: str, data: Any) -> Task:
        decoded.append(entity_id)
        return decode(entity_id, data)

    monkeypatch.setattr(filled, "decode", counting)
    df = await filled.to_dataframe(flatten=True)
    assert len(df) == 6
    assert sorted(decoded) == sorted(df.index)


async def test_empty_result_keeps_columns_and_dtypes(filled: Repository[Task]) -> None:
    full = await filled.to_dataframe()
    empty = await filled.to_dataframe({"name": "nobody"})
    assert empty.shape == (0, full.shape[1])
    assert empty.dtypes.equals(full.dtypes)
    assert list(empty["status"].cat.categories) == [s.value for s in TaskStatus]


async def test_filter_order_limit_and_columns_match_find_all(filled: Repository[Task]) -> None:
    criteria = {"status": {"$in": ["pending", "running"]}}
    df = await filled.to_dataframe(
        criteria, columns=["name", "priority"], order_by="-priority", limit=3
    )
    expected = await filled.find_all(criteria, order_by="-priority", limit=3)
    assert list(df.index) == [task.id for task in expected]
    assert list(df.columns) == ["name", "priority"]
    assert list(df["name"]) == [task.name for task in expected]
    with pytest.raises(FilterError):
        await filled.to_dataframe(columns=["nope"])


async def test_invalid_categorical_edit_is_refused_by_pandas(filled: Repository[Task]) -> None:
    df = await filled.to_dataframe()
    with pytest.raises(TypeError):
        df.loc["t0", "status"] = "bogus"


async def test_flatten_gives_dotted_columns_and_saves_back(filled: Repository[Task]) -> None:
    df = await filled.to_dataframe(flatten=True)
    assert "input_data" not in df.columns
    assert {"input_data.query", "input_data.opts.depth"} <= set(df.columns)
    assert df.loc["t4", "input_data.opts.depth"] == 4
    df.loc["t4", "input_data.query"] = "edited"
    assert await filled.save_dataframe(df) == ["t4"]
    stored = await filled.get("t4")
    assert stored.input_data == {"query": "edited", "opts": {"depth": 4}}
    assert stored.metadata == {}


async def test_unedited_flat_frame_saves_nothing(repo: Repository[Task]) -> None:
    await repo.save_many(
        [
            Task(id="a", name="a", input_data={"x": None, "y": 1}, output_data={}),
            Task(id="b", name="b", input_data={"y": 2}, output_data=None),
            Task(id="c", name="c", output_data={"r": {"deep": None}}),
        ]
    )
    df = await repo.to_dataframe(flatten=True)
    assert str(df["input_data.y"].dtype) == "Int64"  # not float because "c" lacks the key
    assert await repo.save_dataframe(df) == []
    df.loc["b", "input_data.y"] = 3
    assert await repo.save_dataframe(df) == ["b"]
    assert (await repo.get("b")).input_data == {"y": 3}
    assert type((await repo.get("b")).input_data["y"]) is int
    assert (await repo.get("a")).input_data == {"x": None, "y": 1}


async def test_save_dataframe_writes_only_edited_rows(filled: Repository[Task]) -> None:
    df = await filled.to_dataframe()
    df.loc["t1", "name"] = "renamed"
    df.loc["t2", "priority"] = "critical"
    written = await filled.save_dataframe(df)
    assert sorted(written) == ["t1", "t2"]
    assert (await filled.get("t1")).name == "renamed"
    t2 = await filled.get("t2")
    assert t2.priority is TaskPriority.CRITICAL
    assert t2.version == 2
    # The frame's versions follow the save, so it can be edited and saved again.
    assert df.loc["t2", "version"] == 2
    assert df.loc["t2", "updated_at"] == pd.Timestamp(t2.updated_at)
    assert df.loc["t0", "version"] == 1
    assert await filled.save_dataframe(df) == []
    df.loc["t2", "name"] = "again"
    assert await filled.save_dataframe(df) == ["t2"]
    assert (await filled.get("t2")).version == 3


async def test_nan_nat_and_timestamps_become_python_values(filled: Repository[Task]) -> None:
    df = await filled.to_dataframe()
    df.loc["t3", "error"] = np.nan
    df.loc["t1", "started_at"] = pd.NaT
    df.loc["t0", "completed_at"] = pd.Timestamp("2026-05-01 08:00", tz="Europe/Paris")
    await filled.save_dataframe(df)
    assert (await filled.get("t3")).error is None
    assert (await filled.get("t1")).started_at is None
    done = (await filled.get("t0")).completed_at
    assert type(done) is datetime
    assert done == datetime(2026, 5, 1, 6, 0, tzinfo=UTC)


async def test_invalid_rows_are_all_reported_and_nothing_is_saved(
    filled: Repository[Task],
) -> None:
    before = await filled.to_dataframe()
    df = before.copy()
    df.loc["t1", "name"] = ""
    df.loc["t2", "name"] = "fine edit"
    df.loc["t4", "version"] = -1
    with pytest.raises(RowValidationError) as info:
        await filled.save_dataframe(df)
    assert set(info.value.problems) == {"t1", "t4"}
    assert [field for field, _ in info.value.problems["t1"]] == ["name"]
    assert [field for field, _ in info.value.problems["t4"]] == ["version"]
    assert "t1: name" in str(info.value)
    assert (await filled.get("t2")).name == "task 2"
    after = await filled.to_dataframe()
    pd.testing.assert_frame_equal(after, before)


async def test_stale_row_raises_conflict_and_writes_nothing(filled: Repository[Task]) -> None:
    df = await filled.to_dataframe()
    newer = await filled.get("t2")
    newer.name = "changed elsewhere"
    await filled.save(newer)
    df.loc["t1", "name"] = "edit one"
    df.loc["t2", "name"] = "edit two"
    with pytest.raises(ConflictError):
        await filled.save_dataframe(df)
    assert (await filled.get("t1")).name == "task 1"
    assert (await filled.get("t2")).name == "changed elsewhere"


async def test_selected_columns_keep_other_stored_fields(filled: Repository[Task]) -> None:
    df = await filled.to_dataframe(columns=["name", "version"])
    df.loc["t5", "name"] = "only the name"
    assert await filled.save_dataframe(df) == ["t5"]
    t5 = await filled.get("t5")
    assert t5.name == "only the name"
    assert t5.tags == ["x", "5"]
    assert t5.started_at == T0 + timedelta(hours=5)


async def test_new_rows_are_created(repo: Repository[Task]) -> None:
    df = to_dataframe([Task(id="n1", name="new one", tags=["a"])])
    assert await repo.save_dataframe(df) == ["n1"]
    assert (await repo.get("n1")).tags == ["a"]
    assert df.loc["n1", "version"] == 1


async def test_row_added_in_pandas_gets_defaults_for_empty_cells(
    filled: Repository[Task],
) -> None:
    df = await filled.to_dataframe()
    new_row = pd.DataFrame(
        [{"name": "typed in pandas", "priority": "high"}], index=pd.Index(["added"], name="id")
    )
    df = pd.concat([df, new_row])
    assert pd.isna(df.loc["added", "version"])
    assert await filled.save_dataframe(df) == ["added"]
    added = await filled.get("added")
    assert (added.name, added.priority, added.version) == ("typed in pandas", "high", 1)
    assert added.tags == [] and added.input_data == {}
    assert added.status is TaskStatus.PENDING


async def test_agent_config_uses_json_keys_as_columns(make_repo: Any) -> None:
    configs: Repository[AgentConfig] = await make_repo(AgentConfig)
    await configs.save(
        AgentConfig(id="a1", name="A", instruction_template="Hi {name}", model_config={"t": 1})
    )
    df = await configs.to_dataframe()
    assert df.loc["a1", "model_config"] == {"t": 1}
    df.at["a1", "model_config"] = {"t": 2}
    await configs.save_dataframe(df)
    assert (await configs.get("a1")).llm_config == {"t": 2}


def test_model_list_helpers_round_trip() -> None:
    tasks = _tasks()
    df = to_dataframe(tasks)
    assert list(df.index) == [task.id for task in tasks]
    back = from_dataframe(Task, df)
    assert [task.model_dump() for task in back] == [task.model_dump() for task in tasks]
    assert type(back[1].started_at) is datetime


class Part(BaseModel):
    label: str
    size: int


class Gadget(BaseModel):
    id: str
    enabled: bool = True
    maybe: bool | None = None
    count: int | None = None
    weight: float = 1.0
    local: NaiveDatetime | None = None
    kind: Literal["a", "b"] = "a"
    part: Part | None = None


def test_generic_models_keep_their_types() -> None:
    gadgets = [
        Gadget(id="g1", count=3, local=datetime(2026, 1, 1, 9, 30), part=Part(label="x", size=2)),
        Gadget(id="g2", enabled=False, maybe=True, weight=2.5, kind="b"),
    ]
    df = to_dataframe(gadgets)
    assert df["enabled"].dtype == bool
    assert str(df["maybe"].dtype) == "boolean"
    assert str(df["count"].dtype) == "Int64"
    assert str(df["local"].dtype) == "datetime64[us]"
    assert list(df["kind"].cat.categories) == ["a", "b"]
    assert df.loc["g1", "part"] == {"label": "x", "size": 2}
    assert pd.isna(df.loc["g2", "count"])
    assert from_dataframe(Gadget, df) == gadgets


def test_empty_model_list_needs_the_model() -> None:
    with pytest.raises(TypeError, match="needs the model"):
        to_dataframe([])
    all_missing = to_dataframe([Task(name="a"), Task(name="b")])
    assert all_missing.dtypes.equals(to_dataframe(_tasks()).dtypes)
    assert all_missing["error"].isna().all() and all_missing["started_at"].isna().all()
    empty = to_dataframe([], Task)
    assert empty.shape == (0, len(Task.model_fields) - 1)
    assert str(empty["created_at"].dtype) == "datetime64[us, UTC]"


def test_from_dataframe_reports_each_bad_row() -> None:
    df = to_dataframe(_tasks()[:3])
    df.at["t0", "input_data"] = "not a dict"
    df.loc["t2", "name"] = None
    with pytest.raises(RowValidationError) as info:
        from_dataframe(Task, df)
    assert info.value.problems["t0"][0][0] == "input_data"
    assert info.value.problems["t2"][0][0] == "name"


async def test_older_documents_get_defaults_and_corrupt_ones_raise(tmp_path: Path) -> None:
    async with FileSystemRepository(Task, tmp_path) as files:
        await files.save(Task(id="ok", name="ok"))
        folder = tmp_path / "task"
        (folder / "old.json").write_text('{"id": "old", "name": "from an older schema"}')
        df = await files.to_dataframe()
        assert df.loc["old", "tags"] == []
        assert df.loc["old", "status"] == "pending"
        (folder / "bad.json").write_text("{not json")
        with pytest.raises(CorruptEntityError, match="bad"):
            await files.to_dataframe()


def test_sync_face_returns_frames() -> None:
    from symphony_nb import InMemoryRepository

    repo = InMemoryRepository(Task)
    repo.sync.save(Task(id="s1", name="sync"))
    df = repo.sync.to_dataframe()
    df.loc["s1", "name"] = "edited"
    assert repo.sync.save_dataframe(df) == ["s1"]
    assert repo.sync.get("s1").name == "edited"


# --------------------------------------------------------------------------- charts


def test_chart_counts_match_the_tasks() -> None:
    pytest.importorskip("matplotlib")
    from symphony_nb.charts import status_by_priority, status_over_time, task_summary

    tasks = _tasks()
    df = to_dataframe(tasks)
    by_priority = status_by_priority(df)
    assert list(by_priority.index) == [p.value for p in TaskPriority]
    assert by_priority.loc["low", "pending"] == 2
    assert int(by_priority.to_numpy().sum()) == len(tasks)
    over_time = status_over_time(df, "D")
    assert list(over_time.columns) == [s.value for s in TaskStatus]
    assert int(over_time.to_numpy().sum()) == len(tasks)

    fig = task_summary(tasks)
    time_ax, priority_ax = fig.axes[:2]
    assert "status" in time_ax.get_title()
    heights = sum(patch.get_height() for patch in priority_ax.patches)
    assert heights == len(tasks)
    assert [t.get_text() for t in priority_ax.get_xticklabels()] == [p.value for p in TaskPriority]


def test_chart_of_a_repository_and_of_nothing() -> None:
    pytest.importorskip("matplotlib")
    from symphony_nb import InMemoryRepository
    from symphony_nb.charts import task_summary

    repo = InMemoryRepository(Task)
    empty = task_summary(repo, view="priority")
    assert len(empty.axes) == 1
    assert any(text.get_text() == "no tasks" for text in empty.axes[0].texts)
    repo.sync.save_many(_tasks())
    fig = task_summary(repo, view="time")
    assert sum(patch.get_height() for patch in fig.axes[0].patches) == 6
    with pytest.raises(ValueError, match="view"):
        task_summary(repo, view="pie")  # type: ignore[arg-type]
