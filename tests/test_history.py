"""History: revisions, versions, as-of reads, revert, retention and erasure, on every backend
whose store keeps history (``tests.backends.HISTORY``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, SecretStr

from symphony_nb import (
    AgentConfig,
    ConflictError,
    HistoryError,
    InMemoryRepository,
    Keyring,
    NotFoundError,
    Repository,
    Revision,
    Task,
    TaskStatus,
    change_context,
    diff,
    open_repository,
)
from symphony_nb.backends.memory import MemoryStore
from symphony_nb.stores import Record
from tests.backends import BACKENDS, HISTORY, BackendUnavailable, backend_store, with_history
from tests.test_schema_evolution import Note, stored_as

Make = Callable[..., Any]


@pytest.fixture(params=HISTORY)
def history_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make(history_backend: str, tmp_path: Path) -> AsyncIterator[Make]:
    """``await make(Model, history=True, where=...)``: a repository keeping history."""
    stack = contextlib.AsyncExitStack()
    count = 0

    async def opener(model: type[Any], history: bool | int = True, **options: Any) -> Any:
        nonlocal count
        count += 1
        where = tmp_path / f"r{count}"
        where.mkdir()
        try:
            return await stack.enter_async_context(
                with_history(history_backend, model, where, history=history, **options)
            )
        except BackendUnavailable as exc:
            pytest.skip(f"{history_backend} backend unavailable: {exc}")

    async with stack:
        yield opener


async def tick() -> datetime:
    """An instant strictly between the writes before and after it."""
    await asyncio.sleep(0.002)
    mark = datetime.now(UTC)
    await asyncio.sleep(0.002)
    return mark


def shape(revisions: list[Revision[Any]]) -> list[tuple[int, str]]:
    return [(r.version, r.op) for r in revisions]


# ------------------------------------------------------------------ every change, once


async def test_every_change_appends_exactly_one_revision(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    task = Task(id="t", name="one")
    await repo.save(task)
    task.name = "two"
    await repo.save(task)
    task.status = TaskStatus.RUNNING
    assert await repo.update(task)
    others = [Task(id=f"m{i}", name=f"m{i}") for i in range(3)]
    await repo.save_many([*others, task])
    assert await repo.delete("t")
    history = await repo.history("t")
    assert shape(history) == [
        (1, "create"),
        (2, "update"),
        (3, "update"),
        (4, "update"),
        (5, "delete"),
    ]
    assert [r.entity.name if r.entity else None for r in history] == [
        "one",
        "two",
        "two",
        "two",
        None,
    ]
    assert history[2].entity is not None and history[2].entity.status == TaskStatus.RUNNING
    assert all(r.at.tzinfo is not None and r.at.utcoffset() == timedelta(0) for r in history)
    assert [r.at for r in history] == sorted(r.at for r in history)
    for other in others:
        assert shape(await repo.history(other.id)) == [(1, "create")]
    # The entity each revision holds is the one that was stored, stamp and version included.
    assert history[1].entity is not None and history[1].entity.version == 2
    assert history[1].at == history[1].entity.updated_at


async def test_a_refused_or_empty_write_leaves_no_revision(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    task = Task(id="t", name="one")
    await repo.save(task)
    stale = task.model_copy(update={"version": 0})
    with pytest.raises(ConflictError):
        await repo.save(stale)
    with pytest.raises(ConflictError):
        await repo.save_many([Task(id="new", name="n"), stale])
    assert not await repo.update(Task(id="absent", name="x"))
    assert not await repo.delete("absent")
    assert shape(await repo.history("t")) == [(1, "create")]
    for missing in ("new", "absent"):
        with pytest.raises(NotFoundError, match=repr(missing)):
            await repo.history(missing)


async def test_a_model_without_versions_numbers_its_revisions(make: Make) -> None:
    class Plain(BaseModel):
        id: str
        text: str = ""

    repo: Repository[Plain] = await make(Plain)
    for text in ("a", "b", "c"):
        await repo.save(Plain(id="p", text=text))
    await repo.delete("p")
    await repo.save(Plain(id="p", text="again"))
    history = await repo.history("p")
    assert shape(history) == [
        (1, "create"),
        (2, "update"),
        (3, "update"),
        (4, "delete"),
        (5, "create"),
    ]
    assert (await repo.get("p", version=2)).text == "b"


async def test_an_entity_created_again_continues_its_numbers(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    await repo.save(Task(id="t", name="first"))
    await repo.delete("t")
    again = Task(id="t", name="second")
    await repo.save(again)
    assert again.version == 1
    assert shape(await repo.history("t")) == [(1, "create"), (2, "delete"), (3, "create")]
    assert (await repo.get("t", version=3)).name == "second"
    assert (await repo.get("t", version=1)).name == "first"


# ------------------------------------------------------------------ versions


async def test_get_returns_any_kept_version(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    task = Task(id="t", name="v1")
    await repo.save(task)
    for n in range(2, 5):
        task.name = f"v{n}"
        await repo.save(task)
    for n in range(1, 5):
        old = await repo.get("t", version=n)
        assert (old.name, old.version) == (f"v{n}", n)
    assert (await repo.get("t")).name == "v4"
    with pytest.raises(NotFoundError, match=r"'t'.*version 9"):
        await repo.get("t", version=9)
    with pytest.raises(NotFoundError, match=r"'nope'.*version 1"):
        await repo.get("nope", version=1)
    await repo.delete("t")
    with pytest.raises(NotFoundError, match=r"version 5 .*'t' is its deletion"):
        await repo.get("t", version=5)
    assert (await repo.history("t"))[-1].entity is None
    with pytest.raises(ValueError, match="version must be an int"):
        await repo.get("t", version="1")  # type: ignore[arg-type]


# ------------------------------------------------------------------ as of


async def test_as_of_reads_answer_as_the_repository_stood(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    before = await tick()
    a, b, c = (Task(id=i, name=i, priority="low") for i in "abc")
    await repo.save_many([a, b, c])
    first = await tick()
    a.priority = "high"
    await repo.save(a)
    await repo.delete("b")
    d = Task(id="d", name="d", priority="high")
    await repo.save(d)
    second = await tick()
    c.name = "c2"
    await repo.save(c)

    assert await repo.find_all(as_of=before) == []
    assert await repo.count(as_of=before) == 0
    then = await repo.find_all(as_of=first)
    assert [(t.id, t.priority.value, t.version) for t in then] == [
        ("a", "low", 1),
        ("b", "low", 1),
        ("c", "low", 1),
    ]
    assert await repo.count({"priority": "low"}, as_of=first) == 3
    assert await repo.find_by_id("b", as_of=first) == then[1]
    assert await repo.find_by_id("b", as_of=second) is None
    assert await repo.find_by_id("d", as_of=first) is None
    at_second = await repo.find_all({"priority": "high"}, order_by="-name", as_of=second)
    assert [t.id for t in at_second] == ["d", "a"]
    assert [t.id for t in await repo.find_all(as_of=second, limit=1, offset=1)] == ["c"]
    assert (await repo.find_by_id("c", as_of=second)).name == "c"  # type: ignore[union-attr]
    assert await repo.count(as_of=second) == 3
    # The future is now.
    later = datetime.now(UTC) + timedelta(days=365)
    assert await repo.find_all(as_of=later) == await repo.find_all()
    assert await repo.count({"name": "c2"}, as_of=later) == 1


async def test_as_of_refuses_naive_and_non_datetimes(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    with pytest.raises(ValueError, match="naive"):
        await repo.find_all(as_of=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="as_of must be a datetime"):
        await repo.count(as_of="2026-01-01")  # type: ignore[arg-type]


async def test_as_of_reads_through_sync(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    await repo.save(Task(id="t", name="old"))
    mark = await tick()
    await repo.save((await repo.get("t")).model_copy(update={"name": "new"}))
    task = await asyncio.to_thread(repo.sync.find_by_id, "t", as_of=mark)
    assert task is not None and task.name == "old"
    assert await asyncio.to_thread(repo.sync.count, {"name": "old"}, as_of=mark) == 1


# ------------------------------------------------------------------ revert


async def test_revert_writes_a_new_version_with_old_content(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    task = Task(id="t", name="good", tags=["a"])
    await repo.save(task)
    task.name, task.tags = "bad", []
    await repo.save(task)
    back = await repo.revert("t", 1)
    assert (back.name, back.tags, back.version) == ("good", ["a"], 3)
    stored = await repo.get("t")
    assert (stored.name, stored.version) == ("good", 3)
    history = await repo.history("t")
    assert shape(history) == [(1, "create"), (2, "update"), (3, "update")]
    assert history[-1].reason == "revert to version 1"
    with pytest.raises(ConflictError):
        await repo.revert("t", 2, expected_version=2)
    assert (await repo.get("t")).name == "good"
    await repo.revert("t", 2, expected_version=3)
    assert (await repo.get("t")).name == "bad"


async def test_revert_brings_a_deleted_entity_back(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    await repo.save(Task(id="t", name="kept"))
    await repo.delete("t")
    with change_context(actor="ana", reason="undo the delete"):
        back = await repo.revert("t", 1)
    assert back.name == "kept"
    assert (await repo.get("t")).name == "kept"
    history = await repo.history("t")
    assert shape(history) == [(1, "create"), (2, "delete"), (3, "create")]
    assert (history[-1].actor, history[-1].reason) == ("ana", "undo the delete")
    with pytest.raises(NotFoundError, match="deletion"):
        await repo.revert("t", 2)


# ------------------------------------------------------------------ who and why


async def test_change_context_records_actor_and_reason(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    task = Task(id="t", name="a")
    with change_context(actor="ana", reason="first draft"):
        await repo.save(task)
        with change_context(reason="typo"):
            task.name = "b"
            await repo.save(task)

            async def in_a_task() -> None:
                task.name = "c"
                await repo.save(task)

            await asyncio.create_task(in_a_task())
    task.name = "d"
    await asyncio.to_thread(repo.sync.save, task)  # outside: nothing recorded
    with change_context(actor="bot"):
        await asyncio.to_thread(repo.sync.delete, "t")
    history = await repo.history("t")
    assert [(r.actor, r.reason) for r in history] == [
        ("ana", "first draft"),
        ("ana", "typo"),
        ("ana", "typo"),
        (None, None),
        ("bot", None),
    ]


def test_change_context_refuses_what_is_not_text() -> None:
    with pytest.raises(ValueError, match="actor must be a string"), change_context(actor=3):  # type: ignore[arg-type]
        pass
    with pytest.raises(ValueError, match="at most 1000"), change_context(reason="x" * 1001):
        pass


# ------------------------------------------------------------------ retention and erasure


async def test_history_n_keeps_the_last_n(make: Make) -> None:
    repo: Repository[Task] = await make(Task, history=3)
    task = Task(id="t", name="0")
    for n in range(6):
        task.name = str(n)
        await repo.save(task)
    assert shape(await repo.history("t")) == [(4, "update"), (5, "update"), (6, "update")]
    with pytest.raises(NotFoundError, match="pruned"):
        await repo.get("t", version=1)
    await repo.delete("t")
    assert [r.version for r in await repo.history("t")] == [5, 6, 7]


async def test_prune_removes_old_revisions_never_the_latest(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    a, b = Task(id="a", name="a"), Task(id="b", name="b")
    for n in range(4):
        a.name = f"a{n}"
        await repo.save(a)
    await repo.save(b)
    mark = await tick()
    a.name = "late"
    await repo.save(a)
    assert await repo.prune(older_than=mark) == 4  # a's v1..v4; b's only one stays
    assert [r.version for r in await repo.history("a")] == [5]
    assert [r.version for r in await repo.history("b")] == [1]
    for name in ("x", "y"):
        a.name = name
        await repo.save(a)
    assert await repo.prune(keep_last=1) == 2
    assert [r.version for r in await repo.history("a")] == [7]
    assert await repo.prune(keep_last=1) == 0
    with pytest.raises(ValueError, match="keep_last must be an int >= 1"):
        await repo.prune(keep_last=0)
    with pytest.raises(ValueError, match="aware datetime"):
        await repo.prune(older_than=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="keep_last=N or older_than"):
        await repo.prune()


async def test_prune_with_both_removes_only_what_both_name(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    task = Task(id="t", name="0")
    for n in range(5):
        task.name = str(n)
        await repo.save(task)
    mark = await tick()
    for n in range(5, 7):
        task.name = str(n)
        await repo.save(task)
    # 7 revisions: beyond the last 4 are 1..3, older than the mark 1..5; both: 1..3.
    assert await repo.prune(keep_last=4, older_than=mark) == 3
    assert [r.version for r in await repo.history("t")] == [4, 5, 6, 7]


async def test_purge_erases_an_entity_and_its_history(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    task = Task(id="t", name="secret person")
    await repo.save(task)
    task.name = "again"
    await repo.save(task)
    await repo.save(Task(id="other", name="stays"))
    assert await repo.purge("t") == 3  # the document and two revisions
    assert await repo.find_by_id("t") is None
    with pytest.raises(NotFoundError):
        await repo.history("t")
    assert await repo.find_all(as_of=datetime.now(UTC)) == [await repo.get("other")]
    await repo.delete("other")
    assert await repo.purge("other") == 2  # no document; create and delete revisions
    assert await repo.purge("other") == 0


async def test_revision_pages_list_every_ids_history_and_rewrites_replace_in_place(
    make: Make,
) -> None:
    repo = await make(Task)
    tasks = [Task(id=key, name=key) for key in ("b", "a", "c")]
    for task in tasks:
        await repo.save(task)
        task.description = "edited"
        await repo.save(task)
    await repo.delete("c")
    store = backend_store(repo)
    every = [r for key in ("a", "b", "c") for r in await store.revisions(key)]
    assert [(r.id, r.version) for r in every] == [(k, v) for k in "abc" for v in (1, 2)] + [
        ("c", 3)
    ]
    for size in (1, 2, 7):
        paged: list[Any] = []
        after = None
        while True:
            page = await store.revision_page(after, size)
            assert len(page) <= size
            paged += page
            if len(page) < size:
                break
            after = (page[-1].id, page[-1].version)
        assert paged == every
    assert await store.revision_page(("b", 1), 2) == every[3:5]

    old = every[2]  # b's first revision
    new = orjson.dumps({**orjson.loads(old.json), "description": "sealed again"}).decode()
    assert await store.rewrite_revisions([(old, new)]) == 1
    (kept,) = await store.revisions("b", 1)
    assert orjson.loads(kept.json)["description"] == "sealed again"
    assert (kept.version, kept.op, kept.at, kept.actor, kept.reason, kept.entity_version) == (
        old.version,
        old.op,
        old.at,
        old.actor,
        old.reason,
        old.entity_version,
    )
    assert await store.rewrite_revisions([(old, new)]) == 0  # no longer what it holds
    assert await repo.prune(keep_last=1) == 4
    assert await store.rewrite_revisions([(every[0], new)]) == 0  # pruned meanwhile
    assert [r.version for r in await store.revision_page(None, 10)] == [2, 2, 3]
    (gone,) = await store.revisions("c")
    assert gone.op == "delete" and gone.json is None
    assert await store.rewrite_revisions([(gone, new)]) == 0  # a delete holds no document
    assert await store.revisions("c") == [gone]
    assert (await repo.get("b")).description == "edited"  # the live documents untouched


async def test_revision_pages_and_rewrites_need_history(tmp_path: Path) -> None:
    store = MemoryStore(Task)
    with pytest.raises(HistoryError, match="keeps no history"):
        await store.revision_page(None, 10)
    with pytest.raises(HistoryError, match="keeps no history"):
        await store.rewrite_revisions([])


# ------------------------------------------------------------------ bad input


async def test_history_option_refuses_bad_values(tmp_path: Path) -> None:
    for bad in ("yes", -1, 0, 1.5, [1]):
        with pytest.raises(ValueError, match="history"):
            InMemoryRepository(Task, history=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="history"):
            open_repository(Task, f"sqlite:///{tmp_path / 'x.db'}", history=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "x.db").exists()


async def test_history_calls_without_history_say_how_to_turn_it_on() -> None:
    repo = InMemoryRepository(Task)
    await repo.save(Task(id="t", name="t"))
    for call in (
        repo.history("t"),
        repo.get("t", version=1),
        repo.find_all(as_of=datetime.now(UTC)),
        repo.revert("t", 1),
        repo.prune(keep_last=1),
    ):
        with pytest.raises(HistoryError, match="history=True"):
            await call
    assert await repo.purge("t") == 1


# ------------------------------------------------------------------ turning it on later


@pytest.mark.parametrize("name", [n for n in HISTORY if BACKENDS[n].shared])
async def test_history_turned_on_later_keeps_a_baseline(name: str, tmp_path: Path) -> None:
    try:
        async with BACKENDS[name].url(tmp_path) as url:  # type: ignore[misc]
            async with open_repository(Task, url) as plain:
                await plain.save(Task(id="old", name="before"))
                await plain.save((await plain.get("old")).model_copy(update={"name": "b2"}))
            async with open_repository(Task, url, history=True) as kept:
                baseline = await kept.history("old")
                assert shape(baseline) == [(2, "create")]
                assert baseline[0].reason == "baseline: stored before history was kept"
                assert baseline[0].entity is not None and baseline[0].entity.name == "b2"
                task = await kept.get("old")
                task.name = "after"
                await kept.save(task)
            async with open_repository(Task, url) as plain:  # a write history does not see
                task = await plain.get("old")
                task.name = "unseen"
                await plain.save(task)
            async with open_repository(Task, url, history=True) as kept:
                task = await kept.get("old")
                task.name = "seen"
                await kept.save(task)
                history = await kept.history("old")
                assert shape(history) == [
                    (2, "create"),
                    (3, "update"),
                    (4, "update"),
                    (5, "update"),
                ]
                assert history[2].reason == "baseline: stored before history was kept"
                assert history[2].entity is not None and history[2].entity.name == "unseen"
    except BackendUnavailable as exc:
        pytest.skip(f"{name} backend unavailable: {exc}")


async def test_memory_history_turned_on_later_keeps_a_baseline() -> None:
    store = MemoryStore(Task)
    plain = Repository(Task, store)
    await plain.save(Task(id="old", name="before"))
    kept = Repository(Task, store, history=True)
    assert shape(await kept.history("old")) == [(1, "create")]


# ------------------------------------------------------------------ layers


async def test_revisions_stored_at_an_older_schema_version_are_upgraded(make: Make) -> None:
    repo: Repository[Note] = await make(Note)
    note = Note(id="n", title="t", tags=["x"], rank=4, version=1)
    await backend_store(repo).write([Record("n", stored_as(note, 1), 1, None)], create=True)
    note.title = "t2"
    await repo.save(note)
    history = await repo.history("n")
    assert [r.entity for r in history] == [
        Note(id="n", title="t", tags=["x"], rank=4, version=1),
        Note(id="n", title="t2", tags=["x"], rank=4, version=2),
    ]
    assert (await repo.get("n", version=1)).tags == ["x"]
    old = await repo.find_all({"tags": {"$contains": "x"}}, as_of=datetime.now(UTC))
    assert [n.title for n in old] == ["t2"]


async def test_secrets_in_revisions_are_encrypted_and_masked(make: Make) -> None:
    keyring = Keyring({"k1": Keyring.generate()}, primary="k1")
    repo: Repository[AgentConfig] = await make(AgentConfig, keyring=keyring)
    config = AgentConfig(
        id="c", name="c", instruction_template="hi", secrets={"api_key": SecretStr("sk-first-9f8e")}
    )
    await repo.save(config)
    config.secrets = {"api_key": SecretStr("sk-second-7a6b")}
    await repo.save(config)
    stored = await backend_store(repo).revisions("c")
    for revision in stored:
        assert revision.json is not None
        text = revision.json if isinstance(revision.json, str) else revision.json.decode()
        assert "sk-first" not in text and "sk-second" not in text
        assert orjson.loads(text)["secrets"]["api_key"]["kid"] == "k1"
    history = await repo.history("c")
    assert history[0].entity is not None
    assert history[0].entity.secrets["api_key"].get_secret_value() == "sk-first-9f8e"
    changes = diff(history[0], history[1])
    assert changes.paths() == ["secrets.api_key"]
    assert (changes["secrets.api_key"].old, changes["secrets.api_key"].new) == (
        "(secret)",
        "(secret)",
    )
    shown = repr(changes) + changes._repr_html_() + repr(history) + history[1]._repr_html_()
    assert "sk-" not in shown


async def test_claims_append_revisions(make: Make) -> None:
    from symphony_nb._filters import Query, parse_filter

    repo: Repository[Task] = await make(Task)
    await repo.save(Task(id="t", name="queued"))

    def change(entity_id: str, document: Any) -> Record:
        doc = orjson.loads(document)
        doc["status"], doc["version"] = "running", doc["version"] + 1
        return Record(entity_id, orjson.dumps(doc).decode(), doc["version"], doc["version"] - 1)

    query = Query(parse_filter(Task, {"status": "pending"}), limit=5)
    with change_context(actor="worker-1"):
        claimed = await repo.store.claim(query, change)
    assert claimed.record is not None
    history = await repo.history("t")
    assert shape(history) == [(1, "create"), (2, "update")]
    assert history[1].actor == "worker-1"
    assert history[1].entity is not None and history[1].entity.status == TaskStatus.RUNNING


async def test_history_as_a_dataframe(make: Make) -> None:
    repo: Repository[Task] = await make(Task)
    task = Task(id="t", name="a")
    with change_context(actor="ana"):
        await repo.save(task)
    task.name = "b"
    await repo.save(task)
    await repo.delete("t")
    df = await repo.history_dataframe("t")
    assert list(df.index) == [1, 2, 3]
    assert list(df["op"]) == ["create", "update", "delete"]
    assert list(df.columns[:4]) == ["op", "at", "actor", "reason"]
    assert df["actor"].iloc[0] == "ana"
    assert list(df["name"].iloc[:2]) == ["a", "b"]
    assert str(df["at"].dtype) == "datetime64[us, UTC]"


# ------------------------------------------------------------------ diff


def test_diff_lists_changed_dotted_paths() -> None:
    a = Task(id="t", name="a", input_data={"q": 1, "keep": [1]}, tags=["x"])
    b = a.model_copy(update={"name": "b", "input_data": {"q": 2, "keep": [1], "new": True}})
    changes = diff(a, b)
    assert changes.paths() == ["name", "input_data.q", "input_data.new"]
    assert (changes["input_data.q"].old, changes["input_data.q"].new) == (1, 2)
    assert changes["input_data.new"].added
    assert not diff(a, a.model_copy())
    assert len(diff(None, a)) > 0
    html = diff(a, b.model_copy(update={"name": "<img src=x onerror=alert(1)>"}))._repr_html_()
    assert "<img" not in html and "&lt;img" in html
    with pytest.raises(TypeError, match="one model"):
        diff(a, AgentConfig(name="c", instruction_template="hi"))


# ------------------------------------------------------------------ the other writers


async def test_services_frames_and_migrations_write_revisions(make: Make) -> None:
    from symphony_nb import AgentFactory, TaskManager, offline_model

    configs: Repository[AgentConfig] = await make(AgentConfig)
    tasks: Repository[Task] = await make(Task)
    config = AgentConfig(name="helper", instruction_template="Help.")
    await configs.save(config)
    agent = await AgentFactory(configs, llm=offline_model).create_agent(config.id)
    manager = TaskManager(tasks)
    task = await manager.create_task("job")
    await manager.execute_task(task.id, agent)
    history = await tasks.history(task.id)
    assert [r.op for r in history] == ["create", "update", "update"]
    assert [r.actor for r in history] == [None, agent.config.id, agent.config.id]
    assert history[-1].entity is not None and history[-1].entity.status == TaskStatus.COMPLETED

    df = await tasks.to_dataframe()
    df.loc[task.id, "name"] = "renamed in a frame"
    assert await tasks.save_dataframe(df) == [task.id]
    assert await tasks.save_dataframe(await tasks.to_dataframe()) == []  # unedited: nothing
    history = await tasks.history(task.id)
    assert len(history) == 4
    assert history[-1].entity is not None and history[-1].entity.name == "renamed in a frame"


async def test_a_migration_writes_one_revision_per_upgraded_entity(make: Make) -> None:
    repo: Repository[Note] = await make(Note)
    notes = [Note(id=f"n{i}", title=f"t{i}", version=1) for i in range(3)]
    await backend_store(repo).write(
        [Record(n.id, stored_as(n, 1), 1, None) for n in notes], create=True
    )
    report = await repo.migrate(progress=False)
    assert report.upgraded == 3
    for note in notes:
        history = await repo.history(note.id)
        assert shape(history) == [(1, "create"), (2, "update")]
        assert history[-1].reason == "migrate to schema version 3"
    assert (await repo.migrate(progress=False)).upgraded == 0
    assert len(await repo.history("n0")) == 2


def test_a_repository_shows_that_it_keeps_history() -> None:
    assert "every revision" in InMemoryRepository(Task, history=True)._repr_html_()
    assert "last 3 revisions" in InMemoryRepository(Task, history=3)._repr_html_()
    assert "revisions" not in InMemoryRepository(Task)._repr_html_()


async def test_key_rotation_is_a_version_with_its_revision(make: Make) -> None:
    old, new = Keyring.generate(), Keyring.generate()
    repo: Repository[AgentConfig] = await make(
        AgentConfig, keyring=Keyring({"k0": old}, primary="k0")
    )
    config = AgentConfig(id="c", name="c", instruction_template="hi", secrets={"k": "v1"})
    await repo.save(config)
    layer = backend_store(repo)
    rotated = Repository(
        AgentConfig, layer, keyring=Keyring({"k1": new, "k0": old}, primary="k1"), history=True
    )
    assert await rotated.rotate_keys(progress=False) == 1
    history = await rotated.history("c")
    assert shape(history) == [(1, "create"), (2, "update")]
    assert history[-1].reason == "rotate keys"
    assert (await rotated.get("c")).version == 2
    assert (
        history[0].entity is not None and history[0].entity.secrets["k"].get_secret_value() == "v1"
    )
    assert await rotated.rotate_keys(progress=False) == 0


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("### History: every change kept", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(compile(example, "README.md", "exec"), scope)
    tasks = scope["tasks"]
    try:
        assert [r.op for r in tasks.sync.history(scope["task"].id)] == [
            "create",
            "update",
            "update",
        ]
        assert tasks.sync.get(scope["task"].id).name == "draft"
    finally:
        tasks.sync.close()
