"""The file backend never follows a planted symbolic link and keeps its files private."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from symphony_nb import (
    CorruptEntityError,
    CorruptEntityWarning,
    FileSystemRepository,
    StorageError,
    SymphonyError,
    Task,
)
from tests.reliability.conftest import Figures


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the store, where nothing may ever be written through the store."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """No umask, so the modes checked are the ones the backend asks for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


async def test_symlink_at_entity_path_is_not_followed(
    tmp_path: Path, outside: Path, figures: Figures
) -> None:
    target = outside / "secret.json"
    target.write_text(Task(id="victim", name="outside the store").model_dump_json())
    before = target.read_bytes()
    async with FileSystemRepository(Task, tmp_path / "store") as repo:
        await repo.save(Task(id="bystander", name="fine"))
        os.symlink(target, repo.path / "victim.json")
        os.symlink(outside / "created.json", repo.path / "dangling.json")
        with pytest.raises(CorruptEntityError, match="symbolic link") as caught:
            await repo.find_by_id("victim")
        assert str(repo.path / "victim.json") in str(caught.value)
        with pytest.warns(CorruptEntityWarning):
            assert [t.id for t in await repo.find_all(on_corrupt="warn")] == ["bystander"]
        for entity_id in ("victim", "dangling"):
            with pytest.raises(SymphonyError):
                await repo.save(Task(id=entity_id, name="through the link"))
        assert await repo.delete("victim")  # removes the link, not its target
        await repo.save(Task(id="victim", name="a real file now"))
        assert not (repo.path / "victim.json").is_symlink()
    assert target.read_bytes() == before
    assert sorted(os.listdir(outside)) == ["secret.json"]
    figures.record(
        "symlink planted at an entity file",
        "files",
        2,
        faults=2,
        detail="read: CorruptEntityError naming the file; write: refused; target untouched",
    )


async def test_symlink_in_place_of_collection_folder_is_refused(
    tmp_path: Path, outside: Path, figures: Figures
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    os.symlink(outside, store / "task", target_is_directory=True)
    async with FileSystemRepository(Task, store) as repo:
        with pytest.raises(StorageError, match="not a real folder"):
            await repo.save(Task(id="t", name="t"))
        with pytest.raises(StorageError, match="not a real folder"):
            await repo.find_all()
    assert os.listdir(outside) == []
    figures.record(
        "symlink planted in place of the collection folder",
        "files",
        2,
        faults=1,
        detail="StorageError 'not a real folder'; nothing written to the link target",
    )


async def test_symlink_in_place_of_lock_file_is_refused(
    tmp_path: Path, outside: Path, figures: Figures
) -> None:
    async with FileSystemRepository(Task, tmp_path / "store") as repo:
        await repo.save(Task(id="t", name="t"))
        (repo.path / ".lock").unlink()
        os.symlink(outside / "lock", repo.path / ".lock")
        with pytest.raises(StorageError):
            await repo.save(Task(id="u", name="u"))
    assert os.listdir(outside) == []
    figures.record(
        "symlink planted in place of the lock file",
        "files",
        1,
        faults=1,
        detail="StorageError; the link target is not created",
    )


async def test_symlink_in_place_of_change_marker_is_refused(
    tmp_path: Path, outside: Path, figures: Figures
) -> None:
    async with FileSystemRepository(Task, tmp_path / "store", cache=True) as repo:
        await repo.save(Task(id="t", name="t"))
        (repo.path / ".changes").unlink()
        os.symlink(outside / "changes", repo.path / ".changes")
        with pytest.raises(StorageError, match="change marker"):
            await repo.save(Task(id="u", name="u"))
        assert await repo.find_by_id("u") is None  # refused before any file was written
    assert os.listdir(outside) == []
    figures.record(
        "symlink planted in place of the change marker",
        "files",
        1,
        faults=1,
        detail="StorageError before anything is written; the link target is not created",
    )


@pytest.mark.usefixtures("umask_zero")
async def test_store_is_private(tmp_path: Path, figures: Figures) -> None:
    store = tmp_path / "store"
    async with FileSystemRepository(Task, store) as repo:
        await repo.save(Task(id="a", name="a"))
        await repo.save_many([Task(id="b", name="b"), Task(id="c", name="c")])
        entries = [store, repo.path, *(repo.path / n for n in os.listdir(repo.path))]
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(os.stat(p).st_mode) for p in entries}
    expected = {name: 0o700 if (tmp_path / name).is_dir() else 0o600 for name in modes}
    assert modes == expected, {k: oct(v) for k, v in modes.items()}
    figures.record(
        "permissions with umask 0: folders 0700, files 0600",
        "files",
        len(modes),
        detail=", ".join(f"{name} {oct(mode)}" for name, mode in sorted(modes.items())),
    )
