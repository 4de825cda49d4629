"""What is specific to the file-system backend: layout, permissions, temp files, corrupt files,
and its history files (crash traces, baselines, a writer killed mid-write)."""

from __future__ import annotations

import inspect
import json
import os
import re
import stat
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from symphony_nb import (
    AgentConfig,
    CorruptEntityError,
    CorruptEntityWarning,
    FileSystemRepository,
    NotFoundError,
    StorageError,
    Task,
    change_context,
)
from symphony_nb.stores import BASELINE
from tests.unprivileged import run_as_reader, share_for_reading, shared_folder, writable_by_reader


@pytest.fixture
def repo(tmp_path: Path) -> FileSystemRepository[Task]:
    return FileSystemRepository(Task, tmp_path / "data")


async def test_layout_is_one_readable_file_per_entity(
    repo: FileSystemRepository[Task], tmp_path: Path
) -> None:
    await repo.save(Task(id="t-1", name="Readable", input_data={"q": "ü"}))
    await repo.save(Task(id="Upper", name="Case"))
    folder = tmp_path / "data" / "task"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".changes",
        ".lock",
        "^upper.json",
        "t-1.json",
    ]
    text = (folder / "t-1.json").read_text("utf-8")
    assert text.startswith("{\n  ") and json.loads(text)["input_data"] == {"q": "ü"}
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / "t-1.json").st_mode) == 0o600


async def test_leftover_temp_files_are_removed_and_never_read(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "task"
    folder.mkdir(parents=True)
    (folder / ".tmp-deadbeef").write_text('{"id": "ghost", "name": "half"')
    repo = FileSystemRepository(Task, tmp_path / "data")
    assert await repo.find_all() == []
    assert not (folder / ".tmp-deadbeef").exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"id": "bad", "name": "trunc', "Invalid JSON|not valid JSON|EOF"),
        (b'{"id": "bad", "name": 5}', "name"),
        (b'{"id": "other", "name": "x"}', "differs from its key"),
        (b'{"id": "bad", "name": "\xff\xfe"}', "UTF-8|utf-8|JSON"),
        (b'{"id": "bad", "name": "x", "field_from_the_future": 1}', "field_from_the_future"),
    ],
)
async def test_corrupt_files_are_reported_with_their_path(
    repo: FileSystemRepository[Task], tmp_path: Path, content: bytes, reason: str
) -> None:
    await repo.save(Task(id="good", name="fine"))
    path = tmp_path / "data" / "task" / "bad.json"
    path.write_bytes(content)
    with pytest.raises(CorruptEntityError, match=reason) as info:
        await repo.find_by_id("bad")
    assert str(path) in str(info.value)
    with pytest.raises(CorruptEntityError, match="bad.json"):
        await repo.find_all()
    with pytest.warns(CorruptEntityWarning, match="bad.json"):
        found = await repo.find_all(on_corrupt="warn")
    assert [t.id for t in found] == ["good"]
    assert (await repo.find_by_id("good")).name == "fine"


async def test_json_file_with_invalid_name_is_reported(
    repo: FileSystemRepository[Task], tmp_path: Path
) -> None:
    await repo.save(Task(id="good", name="fine"))
    (tmp_path / "data" / "task" / "Bad Name.json").write_text("{}")
    with pytest.raises(CorruptEntityError, match="not a valid entity id"):
        await repo.find_all()


async def test_symlinks_are_not_followed(repo: FileSystemRepository[Task], tmp_path: Path) -> None:
    await repo.save(Task(id="good", name="fine"))
    secret = tmp_path / "secret.json"
    secret.write_text(Task(id="planted", name="outside").model_dump_json())
    os.symlink(secret, tmp_path / "data" / "task" / "planted.json")
    with pytest.raises(CorruptEntityError, match="symbolic link"):
        await repo.find_by_id("planted")
    with pytest.raises(CorruptEntityError, match="symbolic link"):
        await repo.save(Task(id="planted", name="would write through the link"))
    assert await repo.delete("planted") is True
    assert secret.exists()
    await repo.save(Task(id="planted", name="a real file now"))
    assert json.loads(secret.read_text())["name"] == "outside"
    assert not (tmp_path / "data" / "task" / "planted.json").is_symlink()


async def test_symlinked_collection_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "data").mkdir()
    os.symlink(elsewhere, tmp_path / "data" / "task")
    repo = FileSystemRepository(Task, tmp_path / "data")
    with pytest.raises(StorageError, match="not a real folder"):
        await repo.save(Task(name="x"))
    assert list(elsewhere.iterdir()) == []


async def test_unwritable_folder_raises_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    repo = FileSystemRepository(Task, tmp_path / "file")
    with pytest.raises(StorageError, match="file"):
        await repo.save(Task(name="x"))


@pytest.mark.parametrize("stray", ["Notes.json", "bad name!.json"])
async def test_count_raises_or_skips_a_stray_file_as_find_all_does(
    repo: FileSystemRepository[Task], tmp_path: Path, stray: str
) -> None:
    await repo.save(Task(id="good", name="fine", input_data={"k": 1}))
    (tmp_path / "data" / "task" / stray).write_text("{}")
    with pytest.raises(CorruptEntityError, match="not a valid entity id"):
        await repo.count()
    with pytest.warns(CorruptEntityWarning, match=re.escape(stray)):
        assert await repo.count(on_corrupt="warn") == 1
    with pytest.warns(CorruptEntityWarning, match=re.escape(stray)):
        assert await repo.count({"input_data.k": 2}, on_corrupt="warn") == 0
    with pytest.raises(ValueError, match="on_corrupt must be"):
        await repo.count(on_corrupt="skip")  # type: ignore[arg-type]


@pytest.fixture
def corrupt_repo(tmp_path: Path) -> FileSystemRepository[Task]:
    repo = FileSystemRepository(Task, tmp_path / "data")
    repo.sync.save(Task(id="good", name="fine"))
    (tmp_path / "data" / "task" / "bad.json").write_text('{"id": "bad", "name": 5}')
    (tmp_path / "data" / "task" / "Notes.json").write_text("{}")
    return repo


async def test_corrupt_entity_warnings_point_at_the_awaiting_line(
    corrupt_repo: FileSystemRepository[Task],
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno  # type: ignore[union-attr]
        await corrupt_repo.find_all(on_corrupt="warn")
        await corrupt_repo.count(on_corrupt="warn")
        async for _ in corrupt_repo.iter_all(on_corrupt="warn", batch_size=1):
            pass
    assert len(caught) == 5
    assert {(w.filename, w.lineno) for w in caught} == {
        (__file__, line + 1),
        (__file__, line + 2),
        (__file__, line + 3),
    }, [(w.filename, w.lineno) for w in caught]


_SYNC_CALLS = """
import json, sys, warnings
from symphony_nb import FileSystemRepository, Task, set_sync_mode

set_sync_mode(sys.argv[1])
repo = FileSystemRepository(Task, sys.argv[2])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    found = repo.sync.find_all(on_corrupt="warn")  # line 9
    repo.sync.count(on_corrupt="warn")  # line 10
    for _ in repo.sync.iter_all(on_corrupt="warn", batch_size=1):  # line 11
        pass
print(json.dumps([[w.filename, w.lineno, w.category.__name__] for w in caught]))
"""


# In a fresh process: nested mode patches the event loop it runs on for good.
@pytest.mark.parametrize("mode", ["thread", "nested"])
def test_corrupt_entity_warnings_through_sync_point_at_the_calling_line(
    corrupt_repo: FileSystemRepository[Task], mode: str, tmp_path: Path
) -> None:
    script = tmp_path / "calls.py"
    script.write_text(_SYNC_CALLS)
    result = subprocess.run(
        [sys.executable, str(script), mode, str(corrupt_repo.directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    caught = json.loads(result.stdout)
    assert len(caught) == 5, caught
    assert {(name, line) for name, line, _ in caught} == {
        (str(script), 9),
        (str(script), 10),
        (str(script), 11),
    }, caught
    assert {category for _, _, category in caught} == {"CorruptEntityWarning"}


def test_corrupt_entity_warnings_through_sync_in_this_process(
    corrupt_repo: FileSystemRepository[Task],
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno  # type: ignore[union-attr]
        found = corrupt_repo.sync.find_all(on_corrupt="warn")
    assert [t.id for t in found] == ["good"]
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line + 1)] * 2


_READER = """
import json
from symphony_nb import AgentConfig, FileSystemRepository, StorageError, Task

repo = FileSystemRepository(Task, {store!r})
other = FileSystemRepository(AgentConfig, {store!r})
found = {{
    "ids": [t.id for t in repo.sync.find_all()],
    "get": repo.sync.get("b").name,
    "missing": repo.sync.find_by_id("zz"),
    "count": repo.sync.count(),
    "filtered": repo.sync.count({{"name": "a"}}),
    "paged": [t.id for t in repo.sync.iter_all(batch_size=1)],
    "other": [other.sync.find_all(), other.sync.count()],
}}
writes = {{
    "save": lambda: repo.sync.save(Task(id="c", name="c")),
    "update": lambda: repo.sync.update(repo.sync.get("a")),
    "delete": lambda: repo.sync.delete("a"),
    "other_save": lambda: other.sync.save(
        AgentConfig(id="x", name="x", instruction_template="t")
    ),
}}
for name, write in writes.items():
    try:
        write()
        found[name] = "written"
    except StorageError as exc:
        found[name] = str(exc)
print(json.dumps(found))
"""


@pytest.mark.parametrize("lock_file", ["present", "absent"])
def test_a_store_that_may_be_read_but_not_written(lock_file: str) -> None:
    with shared_folder() as where:
        _check_read_only_store(where, lock_file)


def _check_read_only_store(shared_dir: Path, lock_file: str) -> None:
    store = shared_dir / "store"
    repo = FileSystemRepository(Task, store)
    repo.sync.save_many([Task(id="a", name="a"), Task(id="b", name="b")])
    leftover = repo.path / ".tmp-leftover-of-a-crash"
    leftover.write_text('{"id": "a", "na')
    if lock_file == "absent":
        (repo.path / ".lock").unlink()
    share_for_reading(store)
    assert not writable_by_reader(repo.path)

    found = run_as_reader(_READER.format(store=str(store)), shared_dir)

    assert found["ids"] == found["paged"] == ["a", "b"]
    assert (found["get"], found["missing"], found["count"], found["filtered"]) == ("b", None, 2, 1)
    assert found["other"] == [[], 0]  # its folder does not exist and cannot be made
    for write in ("save", "update", "delete"):
        assert f"the store {repo.path} is read-only" in found[write], found[write]
    assert f"the store {store / 'agentconfig'} is read-only" in found["other_save"]
    assert leftover.exists()  # left for a writer to clean; never read
    assert sorted(t.id for t in repo.sync.find_all()) == ["a", "b"]


def test_a_file_where_a_folder_should_be_is_called_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "task").write_text("not a folder")
    (tmp_path / "plain").write_text("not a folder either")
    for directory, culprit in [
        (tmp_path / "data", tmp_path / "data" / "task"),
        (tmp_path / "plain", tmp_path / "plain"),
        (tmp_path / "plain" / "deeper", tmp_path / "plain"),
    ]:
        repo = FileSystemRepository(Task, directory)
        for call in (repo.sync.find_all, partial(repo.sync.save, Task(name="x"))):
            with pytest.raises(StorageError) as info:
                call()
            assert f"{culprit} is a file, where the store needs a folder" in str(info.value)
            assert "symbolic link" not in str(info.value)


def test_a_store_folder_that_cannot_be_made_is_an_error_not_an_empty_store() -> None:
    with shared_folder() as where:
        share_for_reading(where)
        code = (
            "import json\n"
            "from symphony_nb import FileSystemRepository, StorageError, Task\n"
            f"repo = FileSystemRepository(Task, {str(where / 'typo' / 'store')!r})\n"
            "try:\n"
            "    print(json.dumps(repo.sync.find_all()))\n"
            "except StorageError as exc:\n"
            "    print(json.dumps(str(exc)))\n"
        )
        message = run_as_reader(code, where)
    assert message.startswith(f"cannot create the store folder {where / 'typo' / 'store'}")


async def test_a_model_folder_removed_while_open_reads_empty_and_is_made_again(
    repo: FileSystemRepository[Task],
) -> None:
    await repo.save(Task(id="a", name="a"))
    for name in os.listdir(repo.path):
        os.unlink(repo.path / name)
    repo.path.rmdir()
    assert await repo.find_all() == [] and await repo.count() == 0
    await repo.save(Task(id="b", name="b"))
    assert [t.id for t in await repo.find_all()] == ["b"]


# ---------------------------------------------------------------------- history


@pytest.fixture
def kept(tmp_path: Path) -> FileSystemRepository[Task]:
    return FileSystemRepository(Task, tmp_path / "data", history=True)


def history_file(repo: FileSystemRepository[Task], entity_id: str) -> Path:
    from symphony_nb._ids import id_to_filename

    return repo.path / ".history" / (id_to_filename(entity_id) + "l")


def revision_line(version: int, op: str, doc: str | None) -> bytes:
    """A line as a writer appends it (see symphony_nb.backends._file_revisions)."""
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    row = {"v": version, "op": op, "at": at, "actor": None, "reason": None, "ev": version}
    return json.dumps({**row, "doc": doc}, separators=(",", ":")).encode()


async def test_history_is_one_json_lines_file_per_entity_that_scans_never_see(
    kept: FileSystemRepository[Task],
) -> None:
    task = Task(id="Upper-1", name="one")
    await kept.save(task)
    task.name = "two"
    with change_context(actor="ana"):
        await kept.save(task)
    lines = history_file(kept, "Upper-1").read_bytes().split(b"\n")
    assert lines[-1] == b""  # every line committed
    rows = [json.loads(line) for line in lines[:-1]]
    assert [(r["v"], r["op"], r["ev"], r["actor"]) for r in rows] == [
        (1, "create", 1, None),
        (2, "update", 2, "ana"),
    ]
    assert json.loads(rows[1]["doc"])["name"] == "two"
    assert datetime.fromisoformat(rows[1]["at"]) == task.updated_at
    assert sorted(os.listdir(kept.path)) == [".changes", ".history", ".lock", "^upper-1.json"]
    assert [t.id for t in await kept.find_all()] == ["Upper-1"]
    assert await kept.count() == 1
    assert stat.S_IMODE(os.stat(kept.path / ".history").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(history_file(kept, "Upper-1")).st_mode) == 0o600


async def test_history_n_rewrites_the_file_to_its_last_n_lines(tmp_path: Path) -> None:
    repo = FileSystemRepository(Task, tmp_path / "data", history=2)
    task = Task(id="t", name="0")
    for name in "1234":
        task.name = name
        await repo.save(task)
    lines = history_file(repo, "t").read_bytes().splitlines()
    assert [json.loads(line)["v"] for line in lines] == [3, 4]
    assert os.listdir(repo.path / ".history") == ["t.jsonl"]  # no temp file left


async def test_a_revision_whose_document_never_landed_is_skipped_then_removed(
    kept: FileSystemRepository[Task],
) -> None:
    """A writer killed after syncing its revision, before replacing the document."""
    task = Task(id="t", name="one")
    await kept.save(task)
    task.name = "two"
    await kept.save(task)
    path = history_file(kept, "t")
    ghost = task.model_copy(update={"name": "never stored", "version": 3})
    with path.open("ab") as file:
        file.write(revision_line(3, "update", ghost.model_dump_json()))
    await _sees_two_revisions(kept)
    task.name = "three"
    await kept.save(task)  # the next write cuts the trace off, then appends its own
    assert [(r.version, r.entity and r.entity.name) for r in await kept.history("t")] == [
        (1, "one"),
        (2, "two"),
        (3, "three"),
    ]
    assert path.read_bytes().count(b"\n") == 3 and path.read_bytes().endswith(b"\n")
    assert b"never stored" not in path.read_bytes()


async def test_a_torn_last_line_is_skipped_then_removed(kept: FileSystemRepository[Task]) -> None:
    """A writer killed inside its line."""
    task = Task(id="t", name="one")
    await kept.save(task)
    task.name = "two"
    await kept.save(task)
    path = history_file(kept, "t")
    with path.open("ab") as file:
        file.write(revision_line(3, "update", task.model_dump_json())[:40])
    await _sees_two_revisions(kept)
    await kept.delete("t")
    assert [(r.version, r.op) for r in await kept.history("t")] == [
        (1, "create"),
        (2, "update"),
        (3, "delete"),
    ]
    assert path.read_bytes().count(b"\n") == 3


async def _sees_two_revisions(repo: FileSystemRepository[Task]) -> None:
    assert [r.version for r in await repo.history("t")] == [1, 2]
    with pytest.raises(NotFoundError):
        await repo.get("t", version=3)
    later = datetime.now(UTC) + timedelta(days=1)
    (then,) = await repo.find_all(as_of=later)
    assert (then.name, then.version) == ("two", 2) and then == await repo.get("t")
    assert await repo.find_by_id("t", as_of=later) == then
    assert await repo.count({"name": "two"}, as_of=later) == 1
    fresh = FileSystemRepository(Task, repo.directory, history=True)  # another process
    assert [r.version for r in await fresh.history("t")] == [1, 2]


async def test_a_revision_whose_document_landed_counts_before_its_newline(
    kept: FileSystemRepository[Task],
) -> None:
    """A writer killed after replacing the document, before committing its revision."""
    task = Task(id="t", name="one")
    await kept.save(task)
    task.name = "two"
    await kept.save(task)
    path = history_file(kept, "t")
    path.write_bytes(path.read_bytes()[:-1])  # as left pending
    assert [r.version for r in await kept.history("t")] == [1, 2]
    assert (await kept.get("t", version=2)).name == "two"
    later = datetime.now(UTC) + timedelta(days=1)
    assert [t.name for t in await kept.find_all(as_of=later)] == ["two"]
    task.name = "three"
    await kept.save(task)  # commits it, then appends its own
    assert [r.version for r in await kept.history("t")] == [1, 2, 3]
    assert path.read_bytes().count(b"\n") == 3


async def test_a_delete_that_did_not_land_is_skipped(kept: FileSystemRepository[Task]) -> None:
    await kept.save(Task(id="t", name="one"))
    path = history_file(kept, "t")
    with path.open("ab") as file:
        file.write(revision_line(2, "delete", None))
    assert [r.op for r in await kept.history("t")] == ["create"]
    assert await kept.find_by_id("t", as_of=datetime.now(UTC) + timedelta(days=1)) is not None
    assert await kept.delete("t")
    assert [r.op for r in await kept.history("t")] == ["create", "delete"]
    assert await kept.find_all(as_of=datetime.now(UTC) + timedelta(days=1)) == []


async def test_a_committed_line_that_holds_no_revision_is_corrupt(
    kept: FileSystemRepository[Task],
) -> None:
    await kept.save(Task(id="t", name="one"))
    path = history_file(kept, "t")
    path.write_bytes(b"not a revision\n" + path.read_bytes())
    with pytest.raises(CorruptEntityError, match=r"t\.jsonl: line 1"):
        await kept.history("t")
    with pytest.warns(CorruptEntityWarning, match=r"t\.jsonl"):
        assert await kept.find_all(as_of=datetime.now(UTC), on_corrupt="warn") == []
    assert await kept.purge("t") == 3  # the document and the two lines


async def test_history_turned_on_keeps_a_baseline_of_every_document_at_once(
    tmp_path: Path,
) -> None:
    plain = FileSystemRepository(Task, tmp_path / "data")
    await plain.save_many([Task(id=f"t{i}", name=f"t{i}") for i in range(3)])
    (plain.path / "broken.json").write_text("{")
    mark = datetime.now(UTC)
    kept = FileSystemRepository(Task, tmp_path / "data", history=True)
    assert not (plain.path / ".history").exists()  # nothing happens until history is used
    found = await kept.find_all(as_of=mark + timedelta(seconds=1), on_corrupt="warn")
    assert [t.id for t in found] == ["t0", "t1", "t2"]
    assert sorted(os.listdir(plain.path / ".history")) == ["t0.jsonl", "t1.jsonl", "t2.jsonl"]
    assert [r.reason for r in await kept.history("t1")] == [BASELINE]
    assert await kept.find_all(as_of=mark - timedelta(seconds=1)) == []
    assert not [n for n in os.listdir(plain.path) if n.startswith(".tmp-")]


async def test_leftovers_of_a_killed_history_start_are_removed(tmp_path: Path) -> None:
    plain = FileSystemRepository(Task, tmp_path / "data")
    await plain.save(Task(id="t", name="t"))
    (plain.path / ".tmp-0123").mkdir()
    (plain.path / ".tmp-0123" / "t.jsonl").write_text("{}\n")
    kept = FileSystemRepository(Task, tmp_path / "data", history=True)
    assert [r.op for r in await kept.history("t")] == ["create"]
    (plain.path / ".history" / ".tmp-4567").write_text("half a rewrite")
    again = FileSystemRepository(Task, tmp_path / "data", history=True)
    assert [t.id for t in await again.find_all()] == ["t"]
    assert not (plain.path / ".tmp-0123").exists()
    assert os.listdir(plain.path / ".history") == ["t.jsonl"]


async def test_a_write_that_fails_after_its_revision_leaves_neither(
    kept: FileSystemRepository[Task], monkeypatch: pytest.MonkeyPatch
) -> None:
    task = Task(id="t", name="one")
    await kept.save(task)
    before = history_file(kept, "t").read_bytes()
    real = os.replace

    def failing(src: Any, dst: Any, **kwargs: Any) -> None:
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", failing)
    task.name = "two"
    with pytest.raises(StorageError, match="No space left"):
        await kept.save_many([task, Task(id="new", name="new")])
    monkeypatch.undo()
    assert history_file(kept, "t").read_bytes() == before
    assert not history_file(kept, "new").exists()
    assert [r.version for r in await kept.history("t")] == [1]
    assert (await kept.get("t")).name == "one"


_HISTORY_WRITER = """
import asyncio, random, sys
from symphony_nb import FileSystemRepository, Task

async def main(store, seed):
    rng = random.Random(seed)
    repo = FileSystemRepository(Task, store, history=True)
    while True:
        ids = rng.sample([f"e{i}" for i in range(12)], rng.choice([1, 1, 3]))
        if rng.random() < 0.15:
            await repo.delete(ids[0])
            print("deleted", ids[0], flush=True)
            continue
        batch = []
        for key in ids:
            task = await repo.find_by_id(key) or Task(id=key, name=key)
            task.input_data = {"blob": "x" * rng.choice([10, 1000, 100_000])}
            batch.append(task)
        await repo.save_many(batch)
        for task in batch:
            print("saved", task.id, task.version, flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_sigkill_at_any_point_of_a_write_leaves_history_consistent(tmp_path: Path) -> None:
    import random
    import signal
    import time

    script = tmp_path / "writer.py"
    script.write_text(_HISTORY_WRITER)
    store = tmp_path / "data"
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    acked: set[tuple[str, int]] = set()
    for run in range(int(os.environ.get("SYMPHONY_NB_HISTORY_KILLS", "6"))):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(store), str(run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        lines = [proc.stdout.readline() for _ in range(rng.randint(3, 40))]
        time.sleep(rng.uniform(0, 0.01))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lines += proc.stdout.read().splitlines(keepends=True)
        errors = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL, errors
        for line in lines:
            if line.startswith("saved ") and line.endswith("\n"):
                _, key, version = line.split()
                acked.add((key, int(version)))
        _check_history_after_a_kill(store, acked)


def _check_history_after_a_kill(store: Path, acked: set[tuple[str, int]]) -> None:
    from symphony_nb._sync import run_sync

    async def check() -> None:
        repo = FileSystemRepository(Task, store, history=True)
        live = {task.id: task for task in await repo.find_all()}
        keys = {name[: -len(".jsonl")] for name in os.listdir(repo.path / ".history")}
        for key in sorted(keys | set(live)):
            if not await repo.store.revisions(key):  # reads, whatever the kill left
                assert key not in live, key  # a create killed before it landed: a trace
                continue
            history = await repo.history(key)
            last = history[-1]
            assert last.entity == live.get(key), (key, last)  # no more, no less than stored
            assert [r.version for r in history] == sorted({r.version for r in history})
        kept = {(key, r.version) for key in keys for r in await repo.store.revisions(key)}
        assert {(key, v) for key, v in acked if key in keys} <= kept
        assert await repo.find_all(as_of=datetime.now(UTC)) == list(live.values())
        probe = Task(id="probe", name="after the kill")
        await repo.save(probe)
        assert [r.op for r in await repo.history("probe")] == ["create"]
        await repo.purge("probe")

    run_sync(check())


_HISTORY_READER = """
import json
from datetime import UTC, datetime
from symphony_nb import FileSystemRepository, StorageError, Task

repo = FileSystemRepository(Task, {store!r}, history=True)
found = {{
    "history": [[r.version, r.op] for r in repo.sync.history("a")],
    "version": repo.sync.get("a", version=1).name,
    "as_of": [t.id for t in repo.sync.find_all(as_of=datetime.now(UTC))],
}}
try:
    repo.sync.save(Task(id="c", name="c"))
except StorageError as exc:
    found["save"] = str(exc)
print(json.dumps(found))
"""


def test_history_of_a_store_that_may_be_read_but_not_written() -> None:
    with shared_folder() as where:
        store = where / "store"
        repo = FileSystemRepository(Task, store, history=True)
        repo.sync.save_many([Task(id="a", name="first"), Task(id="b", name="b")])
        task = repo.sync.get("a")
        task.name = "second"
        repo.sync.save(task)
        plain = FileSystemRepository(AgentConfig, store)  # no history folder: none started
        plain.sync.save(AgentConfig(id="x", name="x", instruction_template="t"))
        share_for_reading(store)
        found = run_as_reader(_HISTORY_READER.format(store=str(store)), where)
        reader = (
            "import json\n"
            "from symphony_nb import AgentConfig, FileSystemRepository\n"
            f"repo = FileSystemRepository(AgentConfig, {str(store)!r}, history=True)\n"
            "print(json.dumps(repo.sync.history('x') == [] and len(repo.sync.find_all()) == 1))\n"
        )
        unstarted = run_as_reader(reader, where)
    assert found["history"] == [[1, "create"], [2, "update"]]
    assert found["version"] == "first"
    assert found["as_of"] == ["a", "b"]
    assert "read-only" in found["save"]
    assert unstarted is True
