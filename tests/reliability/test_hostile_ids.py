"""Hostile entity ids: never a file outside the store, never two ids on one file, one rule set."""

from __future__ import annotations

import os
import string
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symphony_nb import InvalidIdError, Repository, Task
from symphony_nb._ids import check_id, filename_to_id, id_to_filename
from tests.reliability._open_all import every_backend
from tests.reliability.conftest import Figures

KNOWN_BAD = [
    "../x", "/etc/passwd", "a/b", "..", ".", "a\x00b", "\x00", "CON", "con.txt", "NUL", "com1",
    "aux.json", "caf\u00e9", "cafe\u0301", "a" * 300, "\u00e9" * 150, "", " ", "a b", "a\\b",
    "C:\\x", "a\nb", ".hidden", "-x", "x.", "x\u2215y", "\uff0e\uff0e", "a" * 121,
]  # fmt: skip
NOT_TEXT: list[Any] = [5, None, b"x", 1.5, ("a",)]
KNOWN_GOOD = ["Alice", "alice", "ALICE", "a" * 120, "x.json", "_", "a-b.c_d", "0"]
NEAR_VALID = string.ascii_letters + string.digits + "_-./\\^:\x00 \u00e9"
ids = st.one_of(
    st.text(max_size=130),
    st.text(alphabet=NEAR_VALID, min_size=1, max_size=125),
    st.sampled_from(KNOWN_BAD + KNOWN_GOOD),
)


def _accepted(entity_id: Any) -> bool:
    try:
        check_id(entity_id)
    except InvalidIdError:
        return False
    return True


def _task(entity_id: Any) -> Task:
    # model_construct: ids that the model itself would refuse still reach the repository.
    return Task.model_construct(id=entity_id, name="hostile")


def _tree(root: Path) -> set[str]:
    return {str(Path(d, f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs}


def _try(repo: Repository[Any], entity_id: Any) -> bool:
    """Save, read back and delete ``entity_id``: True if all worked, False if all were refused."""
    try:
        repo.sync.save(_task(entity_id))
    except InvalidIdError as exc:
        assert str(exc), "InvalidIdError without a message"
        for call in (repo.sync.find_by_id, repo.sync.delete):
            with pytest.raises(InvalidIdError):
                call(entity_id)
        return False
    found = repo.sync.find_by_id(entity_id)
    assert found is not None and found.id == entity_id
    assert repo.sync.delete(entity_id) is True
    return True


def test_filename_mapping_is_safe_and_injective(figures: Figures) -> None:
    seen: dict[str, str] = {}
    counts = {"accepted": 0, "rejected": 0}

    @settings(max_examples=1500, deadline=None)
    @given(ids)
    def check(entity_id: str) -> None:
        if not _accepted(entity_id):
            counts["rejected"] += 1
            return
        counts["accepted"] += 1
        name = id_to_filename(entity_id)
        assert "/" not in name and "\x00" not in name and not name.startswith(".")
        assert len(name.encode()) <= 255
        # Already lower-case ASCII in NFC: no case-insensitive or normalising file system
        # can fold two of these names into one.
        assert name.isascii() and name == name.lower() == unicodedata.normalize("NFC", name)
        assert filename_to_id(name) == entity_id
        assert seen.setdefault(name.casefold(), entity_id) == entity_id

    check()
    for bad in KNOWN_BAD + NOT_TEXT:
        assert not _accepted(bad), bad
    names = {id_to_filename(good).casefold() for good in KNOWN_GOOD}
    assert len(names) == len(KNOWN_GOOD)
    figures.record(
        "hostile ids: id -> file name is safe and one-to-one",
        "all",
        counts["accepted"] + counts["rejected"],
        faults=counts["rejected"],
        detail=f"hypothesis: {counts['accepted']} accepted, {counts['rejected']} rejected; "
        "no collisions, even case-folded",
    )


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_every_backend_applies_the_same_id_rules(tmp_path: Path, figures: Figures) -> None:
    outside_before = _tree(tmp_path.parent)
    verdicts: dict[Any, dict[str, bool]] = {}
    with every_backend(Task, tmp_path) as repos:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(ids)
        def check(entity_id: str) -> None:
            verdicts[entity_id] = {name: _try(repo, entity_id) for name, repo in repos.items()}

        check()
        for entity_id in KNOWN_BAD + KNOWN_GOOD + NOT_TEXT:
            verdicts[entity_id] = {name: _try(repo, entity_id) for name, repo in repos.items()}
        stored = {name: len(repo.sync.find_all()) for name, repo in repos.items()}
    for entity_id, by_backend in verdicts.items():
        assert set(by_backend.values()) == {_accepted(entity_id)}, (entity_id, by_backend)
    assert set(stored.values()) == {0}  # every accepted id was deleted again
    store = tmp_path / "files" / "store"
    assert [p for p in _tree(tmp_path / "files") if not p.startswith("store/task/")] == []
    assert _tree(tmp_path.parent) - outside_before <= {
        str((tmp_path / p).relative_to(tmp_path.parent)) for p in _tree(tmp_path)
    }
    assert not os.path.exists("/etc/passwd.json") and not (store.parent / "x.json").exists()
    rejected = sum(1 for v in verdicts.values() if not any(v.values()))
    figures.record(
        "hostile ids: same acceptance on every backend",
        ", ".join(sorted(repos)),
        len(verdicts) * len(repos),
        faults=rejected * len(repos),
        acknowledged=(len(verdicts) - rejected) * len(repos),
        detail=f"{len(verdicts)} ids ({len(KNOWN_BAD)} known-bad) x {len(repos)} backends; "
        f"{rejected} refused by all with InvalidIdError, the rest accepted by all",
    )


async def test_case_and_normalisation_variants_are_distinct_files(tmp_path: Path) -> None:
    from symphony_nb import FileSystemRepository

    async with FileSystemRepository(Task, tmp_path / "store") as repo:
        for entity_id in ("Alice", "alice", "ALICE"):
            await repo.save(Task(id=entity_id, name=entity_id))
        assert {t.name for t in await repo.find_all()} == {"Alice", "alice", "ALICE"}
        assert sorted(os.listdir(repo.path)) == [
            ".changes",
            ".lock",
            "^a^l^i^c^e.json",
            "^alice.json",
            "alice.json",
        ]
        for variant in ("caf\u00e9", "cafe\u0301"):
            with pytest.raises(InvalidIdError, match="invalid id"):
                await repo.save(Task(id=variant, name=variant))
