"""The Store seam: a new backend from public names only, and a layer that sees every call.

``DictStore`` below is a complete backend written the way a user would write one, importing
nothing private; ``tests/backends.py`` registers it as the ``dict`` backend, so the whole
contract suite and the filter property test run on it. ``Recording`` is a test-only layer;
the ``recorded:<backend>`` backends wrap every real backend's store in it, so the contract
suite also runs through a layer on every backend, and the tests here check what it saw.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import BaseModel

from symphony_nb import Repository, Task
from symphony_nb.stores import (
    Condition,
    Counted,
    Document,
    Query,
    Record,
    Selection,
    Store,
    StoreLayer,
    apply_query,
    matches,
    needs_exact,
    parse_document,
    plan_writes,
)
from tests.backends import BACKENDS


class DictStore(Store):
    """Documents in a dict: the smallest complete store, from public names only."""

    def __init__(self, model: type[BaseModel]) -> None:
        super().__init__(model)
        self.docs: dict[str, tuple[int | None, str]] = {}
        self.lock = threading.Lock()

    async def get(self, entity_id: str) -> Document | None:
        row = self.docs.get(entity_id)
        return None if row is None else row[1]

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        with self.lock:
            stored = {r.id: self.docs[r.id][0] for r in records if r.id in self.docs}
            written = plan_writes(records, stored, create=create)
            for record, ok in zip(records, written, strict=True):
                if ok:
                    self.docs[record.id] = (record.version, record.json)
        return written

    async def remove(self, entity_id: str) -> bool:
        with self.lock:
            return self.docs.pop(entity_id, None) is not None

    async def select(self, query: Query) -> Selection:
        exact = needs_exact(query.conditions, query.order)
        with self.lock:
            rows = dict(self.docs)
        parsed = ((key, parse_document(text, exact=exact)) for key, (_, text) in rows.items())
        return Selection([(key, rows[key][1]) for key in apply_query(query, parsed)])

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        exact = needs_exact(conditions)
        with self.lock:
            texts = [text for _, text in self.docs.values()]
        return Counted(sum(matches(conditions, parse_document(t, exact=exact)) for t in texts))


class Recording(StoreLayer):
    """Passes every call through to ``inner`` and records its name."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.calls: list[str] = []

    async def get(self, entity_id: str) -> Document | None:
        self.calls.append("get")
        return await self.inner.get(entity_id)

    async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
        self.calls.append("write")
        return await self.inner.write(records, create=create)

    async def remove(self, entity_id: str) -> bool:
        self.calls.append("remove")
        return await self.inner.remove(entity_id)

    async def select(self, query: Query) -> Selection:
        self.calls.append("select")
        return await self.inner.select(query)

    async def count(self, conditions: tuple[Condition, ...]) -> Counted:
        self.calls.append("count")
        return await self.inner.count(conditions)


RECORDED = sorted(name for name in BACKENDS if name.startswith("recorded:"))


def test_every_real_backend_is_also_run_through_a_layer() -> None:
    real = {name for name in BACKENDS if ":" not in name and name != "dict"}
    assert real == {"memory", "files", "sqlite", "postgres"}
    assert sorted(f"recorded:{name}" for name in real) == RECORDED


@pytest.mark.parametrize("backend", RECORDED)
async def test_the_layer_sees_every_read_and_write(backend: str, tmp_path: Path) -> None:
    async with BACKENDS[backend](Task, tmp_path) as repo:
        layer = repo.store.inner
        assert isinstance(layer, Recording)
        layer.calls.clear()
        task = Task(id="a", name="one")
        await repo.save(task)
        await repo.save_many([Task(id="b", name="two"), Task(id="c", name="three")])
        assert (await repo.get("a")).name == "one"
        assert await repo.find_by_id("zz") is None
        await repo.update(task)
        assert [t.id for t in await repo.find_all({"name": {"$ne": "x"}})] == ["a", "b", "c"]
        assert await repo.count() == 3
        assert [t.id async for t in repo.iter_all(batch_size=2)] == ["a", "b", "c"]
        assert await repo.delete("b")
        assert layer.calls == [
            "write",
            "write",
            "get",
            "get",
            "write",
            *("select", "select"),  # each query: the schema layer's probe for older documents
            *("select", "count"),
            *("select", "select", "select", "select"),
            "remove",
        ]
        # Backend attributes stay reachable through the layer.
        assert layer.describe() == layer.inner.describe()


async def test_a_layer_can_change_documents_on_their_way(tmp_path: Path) -> None:
    class Upper(StoreLayer):
        async def write(self, records: Sequence[Record], *, create: bool) -> list[bool]:
            changed = [
                Record(r.id, r.json.replace('"name":"one"', '"name":"ONE"'), r.version, r.expected)
                for r in records
            ]
            return await self.inner.write(changed, create=create)

    inner = DictStore(Task)
    repo = Repository(Task, Upper(inner))
    await repo.save(Task(id="a", name="one"))
    assert (await repo.get("a")).name == "ONE"
    assert (await Repository(Task, inner).get("a")).name == "ONE"


def test_a_repository_refuses_what_is_not_a_store_of_its_model() -> None:
    with pytest.raises(TypeError, match="needs a symphony_nb.stores.Store"):
        Repository(Task, {})  # type: ignore[arg-type]

    class Other(BaseModel):
        id: str

    with pytest.raises(TypeError, match="holds Other documents, not Task"):
        Repository(Task, DictStore(Other))


def test_the_dict_store_imports_only_public_names() -> None:
    import ast

    tree = ast.parse(Path(__file__).read_text())
    imported = [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and "symphony_nb" in node.module
    ]
    assert imported and all(
        not part.startswith("_") for module in imported for part in module.split(".")
    ), imported
