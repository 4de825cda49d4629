"""The file backend's syscalls, traced: data is synced before the rename, the folder after.

A SIGKILL test cannot notice a missing fsync (the page cache survives the process); a power
loss would. This checks the order that makes a write durable, on a real save traced by strace.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from symphony_nb import FileSystemRepository, Task
from tests.reliability._procs import run
from tests.reliability.conftest import Figures

STRACE = shutil.which("strace")
SYSCALLS = "openat,fsync,fdatasync,rename,renameat,renameat2"
_FSYNC = re.compile(r"^\d+\s+f(?:data)?sync\(\d+<(?P<path>[^>]*)>\)\s+= 0")
_RENAME = re.compile(r'^\d+\s+rename(?:at2?)?\(.*"(?P<src>[^"]+)",.*"(?P<dst>[^"]+)".*\)\s+= 0')
_OPEN = re.compile(r'^\d+\s+openat\(.*"(?P<path>[^"]+)", (?P<flags>[A-Z_|]+).*\)\s+= \d+')


def _events(trace: str, folder: Path) -> list[tuple[str, str]]:
    events = []
    for line in trace.splitlines():
        if match := _FSYNC.match(line):
            events.append(("fsync", match["path"]))
        elif match := _RENAME.match(line):
            events.append(("rename", f"{match['src']}->{match['dst']}"))
        elif (match := _OPEN.match(line)) and (
            str(folder) in match["path"] or not match["path"].startswith("/")
        ):
            events.append(("open " + match["flags"], match["path"]))
    return events


@pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install -y strace)")
@pytest.mark.parametrize("ids", [("a",), ("a", "b", "c")], ids=["save", "save_many"])
async def test_save_syncs_data_before_rename_and_folder_after(
    ids: tuple[str, ...], tmp_path: Path, figures: Figures
) -> None:
    store = tmp_path / "store"
    async with FileSystemRepository(Task, store) as repo:
        await repo.save_many([Task(id=i, name=i) for i in "abc"])
    folder = store / "task"
    trace = tmp_path / "trace"
    prefix = (str(STRACE), "-f", "-qq", "-y", "-o", str(trace), "-e", f"trace={SYSCALLS}")
    done = run("_fault_save", str(store), *ids, prefix=prefix)
    assert done.returncode == 0 and '"error": null' in done.stdout, done.stdout + done.stderr
    events = _events(trace.read_text(), folder)

    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    assert len(renames) == len(ids), events
    for index in renames:
        temp = events[index][1].split("->")[0]
        synced = [i for i, e in enumerate(events) if e == ("fsync", str(folder / temp))]
        assert synced and synced[0] < index, f"{temp} renamed before it was synced: {events}"
    folder_syncs = [i for i, e in enumerate(events) if e == ("fsync", str(folder))]
    assert folder_syncs and folder_syncs[-1] > renames[-1], (
        f"folder not synced after rename: {events}"
    )
    in_place = [
        path
        for kind, path in events
        if kind.startswith("open")
        and path.endswith(".json")
        and re.search("WRONLY|RDWR|TRUNC", kind)
    ]
    assert in_place == [], f"entity files opened for writing in place: {in_place}"
    figures.record(
        f"durability order of {'save' if len(ids) == 1 else 'save_many'} (strace)",
        "files",
        1,
        acknowledged=len(ids),
        detail=f"{len(ids)} temp file(s) fsynced before rename, folder fsynced after the last "
        "rename, no entity file written in place",
    )
