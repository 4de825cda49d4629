"""Schema evolution: versioned documents, upgraders, exact queries over mixed versions, migrate.

Older documents are written straight into the backend's store (as code of that version would
have written them), under the repository of the current model, on every backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

import symphony_nb
from symphony_nb import (
    ConflictError,
    CorruptEntityError,
    CorruptEntityWarning,
    MigrationReport,
    Repository,
    SchemaError,
    SchemaVersionError,
    copy_repository,
    upgrader,
)
from symphony_nb._filters import Query, parse_document, parse_filter, parse_order
from symphony_nb.stores import Record
from tests.backends import BACKENDS, BackendUnavailable, backend_store
from tests.test_filter_property import agrees

EXAMPLES = int(os.environ.get("SYMPHONY_NB_PROPERTY_EXAMPLES", "60")) // 3 or 1


class Note(BaseModel):
    """Version 3: ``tag`` (v1) became ``tags`` (v2), ``score`` became ``rank`` (v3)."""

    model_config = ConfigDict(extra="forbid")
    __schema_version__ = 3

    id: str
    title: str
    tags: list[str] = []
    rank: int = 0
    version: int = 0


@upgrader(Note, from_version=1)
def split_tag(doc: dict[str, Any]) -> dict[str, Any]:
    tag = doc.pop("tag", None)
    return {**doc, "tags": [tag] if tag else []}


@upgrader(Note, from_version=2)
def rename_score(doc: dict[str, Any]) -> dict[str, Any]:
    doc["rank"] = doc.pop("score", 0)
    return doc


def stored_as(note: Note, version: int) -> str:
    """The JSON that the model at ``version`` would have stored for ``note``."""
    doc: dict[str, Any] = {"id": note.id, "title": note.title, "version": note.version}
    if version == 1:
        doc["tag"] = note.tags[0] if note.tags else None
        doc["score"] = note.rank
    elif version == 2:
        doc = {"$": 2, **doc, "tags": note.tags, "score": note.rank}
    else:
        doc = {"$": 3, **doc, "tags": note.tags, "rank": note.rank}
    return json.dumps(doc, separators=(",", ":"))


async def plant(repo: Repository[Any], *docs: tuple[str, str, int | None]) -> None:
    """Store raw ``(id, json, version)`` documents behind every layer of ``repo``."""
    await backend_store(repo).write(
        [Record(entity_id, text, version, None) for entity_id, text, version in docs], create=True
    )


async def old_notes(repo: Repository[Note], n: int = 6) -> list[Note]:
    """``n`` notes stored at versions 1, 2, 3, 1, 2, 3, ...; returns them as of now."""
    notes = [
        Note(id=f"n{i}", title=f"note {i}", tags=[f"t{i % 3}"] if i % 2 else [], rank=i, version=1)
        for i in range(n)
    ]
    await plant(repo, *[(note.id, stored_as(note, 1 + i % 3), 1) for i, note in enumerate(notes)])
    return notes


# ------------------------------------------------------------------ reads and writes


async def test_every_read_returns_current_entities(make_repo: Any) -> None:
    repo: Repository[Note] = await make_repo(Note)
    notes = await old_notes(repo)
    assert await repo.find_all() == notes
    assert await repo.get("n1") == notes[1]
    assert await repo.find_by_id("n3") == notes[3]
    assert [n async for n in repo.iter_all(batch_size=2)] == notes
    assert await repo.count() == 6
    assert repo.sync.find_all({"rank": {"$gte": 4}}) == notes[4:]


async def test_writes_store_the_schema_version_and_model_dump_is_unchanged(make_repo: Any) -> None:
    repo: Repository[Note] = await make_repo(Note)
    note = Note(id="a", title="x", tags=["q"], rank=2)
    await repo.save(note)
    raw = await backend_store(repo).get("a")
    stored = orjson.loads(raw)
    assert stored["$"] == 3
    assert note.model_dump() == {"id": "a", "title": "x", "tags": ["q"], "rank": 2, "version": 1}
    assert (await repo.get("a")).model_dump() == note.model_dump()
    assert await repo.schema_versions() == {3: 1}


async def test_a_model_without_a_version_writes_documents_as_before(make_repo: Any) -> None:
    class Plain(BaseModel):
        id: str
        text: str

    repo: Repository[Plain] = await make_repo(Plain)
    await repo.save(Plain(id="p", text="t"))
    assert "$" not in orjson.loads(await backend_store(repo).get("p"))
    assert await repo.schema_versions() == {1: 1}


async def test_queries_on_renamed_fields_are_exact_over_mixed_versions(make_repo: Any) -> None:
    repo: Repository[Note] = await make_repo(Note)
    notes = await old_notes(repo, 9)
    assert [n.id for n in await repo.find_all({"tags": {"$contains": "t1"}})] == ["n1", "n7"]
    assert [n.id for n in await repo.find_all(order_by="-rank", limit=3, offset=1)] == [
        "n7",
        "n6",
        "n5",
    ]
    assert await repo.count({"rank": {"$lt": 4}}) == 4
    assert [n.id for n in await repo.find_all({"rank": {"$gt": 2}}, limit=2, offset=1)] == [
        "n4",
        "n5",
    ]
    paged = [n.id async for n in repo.iter_all({"rank": {"$ne": 0}}, batch_size=2)]
    assert paged == [n.id for n in notes[1:]]


async def test_schema_versions_counts_each_version(make_repo: Any) -> None:
    repo: Repository[Note] = await make_repo(Note)
    await old_notes(repo, 7)
    assert await repo.schema_versions() == {1: 3, 2: 2, 3: 2}
    assert repo.sync.schema_versions() == {1: 3, 2: 2, 3: 2}


# ------------------------------------------------------------------ migrate


async def test_migrate_rewrites_older_documents_once(make_repo: Any) -> None:
    repo: Repository[Note] = await make_repo(Note)
    notes = await old_notes(repo, 8)
    report = await repo.migrate(batch_size=2, progress=False)
    assert isinstance(report, MigrationReport)
    assert report.found == {1: 3, 2: 3, 3: 2}
    assert (report.upgraded, report.already_current, report.failed) == (6, 2, [])
    assert await repo.schema_versions() == {3: 8}
    migrated = await repo.find_all()
    assert [n.model_copy(update={"version": 1}) for n in migrated] == notes
    assert [n.version for n in migrated] == [2, 2, 1, 2, 2, 1, 2, 2]  # +1 where rewritten
    for note in notes:
        assert orjson.loads(await backend_store(repo).get(note.id))["$"] == 3
    again = repo.sync.migrate(progress=False)
    assert (again.upgraded, again.already_current, again.batches) == (0, 8, 0)


async def test_migrate_reports_documents_it_cannot_upgrade_and_keeps_them(make_repo: Any) -> None:
    repo: Repository[Note] = await make_repo(Note)
    await old_notes(repo, 3)
    bad = orjson.dumps({"id": "bad", "title": 5, "tag": None, "score": 1, "version": 1}).decode()
    newer = orjson.dumps({"$": 9, "id": "new", "title": "x", "version": 1}).decode()
    await plant(repo, ("bad", bad, 1), ("new", newer, 1))
    report = await repo.migrate(progress=False)
    assert report.upgraded == 2
    assert sorted(entity_id for entity_id, _ in report.failed) == ["bad", "new"]
    errors = dict(report.failed)
    assert "schema version 1" in errors["bad"] and "split_tag" in errors["bad"]
    assert "schema version 9" in errors["new"]
    assert await backend_store(repo).get("bad") is not None
    assert "migrated to schema version 3" in str(report)
    assert "bad" in report._repr_html_()


async def test_migrate_never_overwrites_a_concurrent_edit(make_repo: Any) -> None:
    repo: Repository[Note] = await make_repo(Note)
    await old_notes(repo, 4)
    store = backend_store(repo)
    real_write = store.write
    edited = False

    async def edit_first(records: Any, *, create: bool) -> Any:
        nonlocal edited
        if not edited:  # another writer edits n0 between migrate's read and its write
            edited = True
            note = await repo.get("n0")
            note.title = "edited meanwhile"
            await repo.save(note)
        return await real_write(records, create=create)

    store.write = edit_first  # type: ignore[method-assign]
    try:
        report = await repo.migrate(progress=False)
    finally:
        del store.write
    assert report.retried == 1
    assert (await repo.get("n0")).title == "edited meanwhile"
    assert await repo.schema_versions() == {3: 4}


async def test_migrate_rejects_a_bad_batch_size(make_repo: Any) -> None:
    repo: Repository[Note] = await make_repo(Note)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            await repo.migrate(batch_size=bad, progress=False)  # type: ignore[arg-type]


# ------------------------------------------------------------------ bad input


async def test_a_newer_document_is_refused_never_read_with_fields_dropped(make_repo: Any) -> None:
    repo: Repository[Note] = await make_repo(Note)
    await old_notes(repo, 2)
    newer = orjson.dumps({"$": 4, "id": "z", "title": "new", "extra": 1, "version": 3}).decode()
    await plant(repo, ("z", newer, 3))
    with pytest.raises(SchemaVersionError, match=r"'z' has schema version 4.*supports") as info:
        await repo.get("z")
    assert (info.value.entity_id, info.value.stored, info.value.supported) == ("z", 4, 3)
    assert isinstance(info.value, CorruptEntityError)
    with pytest.raises(SchemaVersionError):
        await repo.find_all()
    with pytest.raises(SchemaVersionError):
        await repo.count()
    with pytest.warns(CorruptEntityWarning, match="'z'"):
        assert [n.id for n in await repo.find_all(on_corrupt="warn")] == ["n0", "n1"]
    # A save over it: the version check refuses it, and so does the layer without one.
    with pytest.raises(ConflictError):
        await repo.save(Note(id="z", title="over"))
    assert orjson.loads(await backend_store(repo).get("z"))["extra"] == 1


async def test_a_save_over_a_newer_document_is_refused_without_versions(make_repo: Any) -> None:
    class Loose(BaseModel):
        __schema_version__ = 2
        id: str
        text: str = ""

    upgrader(Loose, from_version=1)(dict)
    repo: Repository[Loose] = await make_repo(Loose)
    await plant(repo, ("x", '{"$":3,"id":"x","text":"t","more":[1]}', None))
    with pytest.raises(SchemaVersionError, match="'x' has schema version 3"):
        await repo.save(Loose(id="x", text="over"))
    assert orjson.loads(await backend_store(repo).get("x"))["more"] == [1]


async def test_a_failing_upgrader_is_a_corrupt_entity_naming_it(make_repo: Any) -> None:
    class Fragile(BaseModel):
        __schema_version__ = 2
        id: str
        n: int

    @upgrader(Fragile, from_version=1)
    def halve(doc: dict[str, Any]) -> dict[str, Any]:
        doc["n"] = 10 // doc["n"]
        return doc

    repo: Repository[Fragile] = await make_repo(Fragile)
    await plant(repo, ("ok", '{"id":"ok","n":5}', None), ("zero", '{"id":"zero","n":0}', None))
    with pytest.raises(CorruptEntityError, match=r"zero.*halve.*schema version 1.*Zero"):
        await repo.get("zero")
    assert (await repo.get("ok")).n == 2
    with pytest.warns(CorruptEntityWarning, match="halve"):
        assert [f.id for f in await repo.find_all(on_corrupt="warn")] == ["ok"]
    with pytest.raises(CorruptEntityError, match="halve"):
        await repo.count()


async def test_an_upgrade_that_does_not_validate_names_the_upgrader(make_repo: Any) -> None:
    class Strict(BaseModel):
        __schema_version__ = 2
        id: str
        n: int

    @upgrader(Strict, from_version=1)
    def stringify(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "n": "not a number"}

    repo: Repository[Strict] = await make_repo(Strict)
    await plant(repo, ("s", '{"id":"s","n":1}', None))
    with pytest.raises(CorruptEntityError, match=r"s.*n:.*from schema version 1 with .*stringify"):
        await repo.get("s")


async def test_a_gap_in_the_chain_names_the_missing_step(make_repo: Any) -> None:
    class Gappy(BaseModel):
        __schema_version__ = 3
        id: str

    @upgrader(Gappy, from_version=1)
    def first(doc: dict[str, Any]) -> dict[str, Any]:
        return doc

    repo: Repository[Gappy] = await make_repo(Gappy)
    with pytest.raises(SchemaError, match=r"no upgrader .* from version 2 to 3.*from_version=2"):
        await repo.find_all()
    with pytest.raises(SchemaError, match="from version 2 to 3"):
        await repo.save(Gappy(id="g"))


def test_bad_declarations_are_refused_when_declared() -> None:
    for bad in (0, -1, "2", 1.0, True, None):

        class Bad(BaseModel):
            __schema_version__ = bad
            id: str

        with pytest.raises(SchemaError, match="positive int"):
            upgrader(Bad, from_version=1)
        with pytest.raises(SchemaError, match="positive int"):
            symphony_nb.InMemoryRepository(Bad)

    class Two(BaseModel):
        __schema_version__ = 2
        id: str

    for step in (0, 2, 3, "1", None):
        with pytest.raises(SchemaError, match="from_version"):
            upgrader(Two, from_version=step)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="callable"):
        upgrader(Two, from_version=1)("not a function")  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="pydantic model"):
        upgrader(dict, from_version=1)  # type: ignore[arg-type]

    @upgrader(Two, from_version=1)
    def one(doc: dict[str, Any]) -> dict[str, Any]:
        return doc

    with pytest.raises(SchemaError, match=r"already has an upgrader from schema version 1: .*one"):

        @upgrader(Two, from_version=1)
        def another(doc: dict[str, Any]) -> dict[str, Any]:
            return doc

    class Dollar(BaseModel):
        id: str
        x: int = 0

        model_config = ConfigDict(populate_by_name=True)

    class Clash(BaseModel):
        id: str
        money: str = ""

        model_config = ConfigDict(alias_generator=lambda name: "$" if name == "money" else name)

    symphony_nb.InMemoryRepository(Dollar)
    with pytest.raises(SchemaError, match="stored as '\\$'"):
        symphony_nb.InMemoryRepository(Clash)


async def test_running_a_cell_again_replaces_its_upgraders() -> None:
    def cell(result: str) -> type[BaseModel]:
        class Cell(BaseModel):
            __schema_version__ = 2
            id: str
            value: str

        Cell.__qualname__ = "Cell"  # as a notebook cell defines it, run after run

        @upgrader(Cell, from_version=1)
        def fill(doc: dict[str, Any]) -> dict[str, Any]:
            return {**doc, "value": result}

        # The same function again (the cell run twice in a row) is not a second upgrader.
        upgrader(Cell, from_version=1)(fill)
        return Cell

    cell("first")
    newest = cell("second")
    repo = symphony_nb.InMemoryRepository(newest)
    await plant(repo, ("c", '{"id":"c"}', None))
    assert (await repo.get("c")).value == "second"  # type: ignore[attr-defined]


# ------------------------------------------------------------------ around the repository


async def test_copy_and_dataframes_see_current_entities(make_repo: Any, tmp_path: Path) -> None:
    repo: Repository[Note] = await make_repo(Note)
    notes = await old_notes(repo, 5)
    target = symphony_nb.InMemoryRepository(Note)
    assert await copy_repository(repo, target, progress=False) == 5
    assert await target.find_all() == notes
    assert await target.schema_versions() == {3: 5}
    frame = await repo.to_dataframe()
    assert list(frame.columns) == ["title", "tags", "rank", "version"]
    assert frame.loc["n2", "rank"] == 2 and frame.loc["n1", "tags"] == ["t1"]
    frame.loc["n0", "title"] = "edited"
    assert await repo.save_dataframe(frame) == ["n0"]
    assert (await repo.get("n0")).title == "edited"
    assert await repo.schema_versions() == {1: 1, 2: 2, 3: 2}  # n0 rewritten at 3


# ------------------------------------------------------------------ the property


NOTES = st.builds(
    Note,
    id=st.just("x"),
    title=st.sampled_from(["a", "b", "B", "é", ""]),
    tags=st.lists(st.sampled_from(["p", "q", "r"]), max_size=1),
    rank=st.integers(-3, 3) | st.sampled_from([2**63, -(2**63) - 1]),
)
MIXED = st.lists(st.tuples(NOTES, st.sampled_from([1, 2, 3, 3])), max_size=10)
OPERANDS: dict[str, st.SearchStrategy[Any]] = {
    "title": st.sampled_from(["a", "b", "B", "é", "", "z"]),
    "tags": st.sampled_from(["p", "q", "r", "s"]),
    "rank": st.integers(-4, 4) | st.sampled_from([2**63]),
    "id": st.sampled_from(["m0", "m3", "m7", "z"]),
}


@st.composite
def note_queries(draw: st.DrawFn) -> tuple[dict[str, Any], list[str], int | None, int]:
    criteria: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(sorted(OPERANDS)), max_size=2, unique=True)):
        op = draw(st.sampled_from(["$eq", "$ne", "$gt", "$lte", "$in", "$contains", "$exists"]))
        if key == "tags" and op != "$exists":
            op = "$contains"
        if op == "$in":
            criteria[key] = {op: draw(st.lists(OPERANDS[key], max_size=3))}
        elif op == "$exists":
            criteria[key] = {op: draw(st.booleans())}
        elif op == "$contains" and key != "tags":
            criteria[key] = draw(OPERANDS[key])
        else:
            criteria[key] = {op: draw(OPERANDS[key])}
    order = draw(st.lists(st.sampled_from(["title", "rank", "id", "-rank", "-title"]), max_size=2))
    fields = [key.lstrip("-") for key in order]
    order = [key for i, key in enumerate(order) if fields.index(fields[i]) == i]
    limit = draw(st.none() | st.integers(0, 4))
    offset = draw(st.integers(0, 3))
    return criteria, order, limit, offset


async def _agree(mixed: list[tuple[Note, int]], asked: list[Any], where: Path) -> None:
    notes = [note.model_copy(update={"id": f"m{i}"}) for i, (note, _) in enumerate(mixed)]
    # The reference: every document upgraded first, then the query evaluated.
    docs = [(note.id, parse_document(note.model_dump_json(), exact=True)) for note in notes]
    for name, factory in sorted(BACKENDS.items()):
        try:
            async with factory(Note, where / name.replace(":", "_")) as repo:
                await plant(
                    repo,
                    *[
                        (note.id, stored_as(note, version), note.version)
                        for note, (_, version) in zip(notes, mixed, strict=True)
                    ],
                )
                for query in asked:
                    parsed = Query(parse_filter(Note, query[0]), parse_order(Note, query[1]))
                    await agrees(name, repo, query, parsed, docs)
        except BackendUnavailable:
            continue


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mixed=MIXED, asked=st.lists(note_queries(), min_size=1, max_size=3))
def test_mixed_versions_answer_as_if_everything_were_upgraded(
    mixed: list[tuple[Note, int]], asked: list[Any]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_agree(mixed, asked, Path(folder)))
