"""I/O errors injected with ``strace --inject`` into a subprocess saving to the file backend.

An error before the rename must leave the stored version intact, remove the temp file and
raise StorageError; an error after it (the folder fsync) must say durability is unknown.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from symphony_nb import FileSystemRepository, Task
from tests.reliability._procs import run
from tests.reliability.conftest import Figures

STRACE = shutil.which("strace")
RENAMES = "rename,renameat,renameat2"


@dataclass(frozen=True)
class Fault:
    """One injected fault: the syscall, its error, which call fails, and what must follow."""

    name: str
    syscall: str
    error: str
    when: int
    ids: tuple[str, ...]
    changed: tuple[str, ...]  # ids whose new version must be on disk afterwards
    says: str  # text the StorageError message must contain


# fsync calls of one save: each temp file in turn, then the folder (counted per thread).
FAULTS = [
    Fault(
        "fsync of the temp file fails (EIO)", "fsync", "EIO", 1, ("a",), (), "nothing was changed"
    ),
    Fault(
        "fsync of the temp file fails (ENOSPC)",
        "fsync",
        "ENOSPC",
        1,
        ("a",),
        (),
        "nothing was changed",
    ),
    Fault("rename fails (EIO)", RENAMES, "EIO", 1, ("a",), (), "unchanged"),
    Fault("rename fails (EXDEV)", RENAMES, "EXDEV", 1, ("a",), (), "unchanged"),
    Fault(
        "fsync of the folder fails (EIO)",
        "fsync",
        "EIO",
        2,
        ("a",),
        ("a",),
        "durability after a power loss is unknown",
    ),
    Fault(
        "save_many: 2nd temp fsync fails",
        "fsync",
        "EIO",
        2,
        ("a", "b", "c"),
        (),
        "nothing was changed",
    ),
    Fault(
        "save_many: 2nd rename fails",
        RENAMES,
        "EIO",
        2,
        ("a", "b", "c"),
        ("a",),
        "written before the error: ['a']",
    ),
    Fault(
        "save_many: folder fsync fails",
        "fsync",
        "EIO",
        4,
        ("a", "b", "c"),
        ("a", "b", "c"),
        "durability after a power loss is unknown",
    ),
]


def _stored(folder: Path) -> dict[str, bytes]:
    return {
        name: (folder / name).read_bytes() for name in os.listdir(folder) if name.endswith(".json")
    }


@pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install -y strace)")
@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.name)
async def test_injected_io_error_is_reported_and_contained(
    fault: Fault, tmp_path: Path, figures: Figures
) -> None:
    store = tmp_path / "store"
    async with FileSystemRepository(Task, store) as repo:
        await repo.save_many([Task(id=i, name=f"task {i}") for i in "abc"])
    folder = store / "task"
    before = _stored(folder)
    trace = tmp_path / "trace"
    syscalls = f"{fault.syscall},fsync"
    strace = (
        str(STRACE), "-f", "-qq", "-o", str(trace), "-e", f"trace={syscalls}",
        "-e", f"inject={fault.syscall}:error={fault.error}:when={fault.when}",
    )  # fmt: skip
    done = run("_fault_save", str(store), *fault.ids, prefix=strace)
    assert done.returncode == 0, done.stderr
    injected = trace.read_text().count("(INJECTED)")
    assert injected == 1, (
        f"expected one injected {fault.syscall} error, trace:\n{trace.read_text()}"
    )
    outcome = json.loads(done.stdout.splitlines()[-1])

    assert outcome["error"] == "StorageError" and outcome["is_os_error"], outcome
    assert fault.says in outcome["message"], outcome["message"]
    assert [n for n in os.listdir(folder) if n.startswith(".tmp-")] == [], "temp file left"
    after = _stored(folder)
    assert set(after) == set(before)
    for entity_id in fault.ids:
        name = f"{entity_id}.json"
        if entity_id in fault.changed:
            assert orjson.loads(after[name])["version"] == 2
        else:
            assert after[name] == before[name], f"{name} changed although the write failed"
    # The error is raised either way; an object whose new version did land carries it, so
    # saving it again works instead of conflicting with its own write.
    assert outcome["versions"] == {i: 2 if i in fault.changed else 1 for i in fault.ids}
    async with FileSystemRepository(Task, store) as repo:
        assert len(await repo.find_all()) == 3  # the store stays readable and writable
        await repo.save(Task(id="after-fault", name="ok"))
    figures.record(
        f"I/O fault: {fault.name}",
        "files",
        1,
        faults=injected,
        acknowledged=0,
        lost=0,
        detail=f"strace inject={fault.syscall}:error={fault.error}:when={fault.when}; "
        f"on disk afterwards: new version of {list(fault.changed) or 'nothing'}",
    )
