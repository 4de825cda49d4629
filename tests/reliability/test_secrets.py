"""Secrets under stress: SIGKILL during rotate_keys, edits during rotation, hostile ciphertexts."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symphony_nb import (
    AgentConfig,
    ConflictError,
    DecryptionError,
    InMemoryRepository,
    Keyring,
    KeyringError,
    open_repository,
)
from symphony_nb._keyring import ENV
from symphony_nb._sync import run_sync
from symphony_nb.stores import Record
from tests.backends import backend_store, having, store_url
from tests.reliability._procs import start
from tests.reliability.conftest import Figures

RUNS = int(os.environ.get("SYMPHONY_NB_CRASH_RUNS", "30"))
KEYS = {"k1": Keyring.generate(), "k2": Keyring.generate()}
ENTITIES = 160


def _env(primary: str) -> str:
    order = [primary, *(k for k in KEYS if k != primary)]
    return ",".join(f"{kid}:{KEYS[kid]}" for kid in order)


def _config(i: int) -> AgentConfig:
    return AgentConfig(
        id=f"c{i:03d}",
        name=f"agent {i}",
        instruction_template="You are {name}.",
        secrets={"api_key": f"sk-{i:03d}-{os.urandom(8).hex()}", "org": f"org-{i}"},
    )


def _kill_rotator(
    url: str,
    batch: int,
    rng: random.Random,
    *,
    entities: int = ENTITIES,
    pages: int = 0,
    history: int | None = None,
) -> tuple[int, bool]:
    """Start a rotation, SIGKILL it after a random number of batches (of ``entities``, then
    of ``pages`` pages of revisions with ``history``); (batches seen, finished)."""
    seen = 0
    line = ""
    wanted = rng.randint(1, entities // batch - 2 + pages)
    extra = () if history is None else (str(history),)
    with start("_rotator", url, str(batch), *extra) as proc:
        assert proc.stdout is not None
        while seen < wanted:
            line = proc.stdout.readline()
            if not line or line.startswith("done"):
                break
            seen += 1
        time.sleep(rng.uniform(0, 0.002))  # the kill lands anywhere in the next batches
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Read through the text streams: what readline buffered is there, not in the pipe.
        assert proc.stderr is not None
        rest, errors = proc.stdout.read(), proc.stderr.read()
    finished = "done" in rest or line.startswith("done")
    assert proc.returncode in (-signal.SIGKILL, 0), f"rotator died on its own: {errors}"
    return seen, finished


@pytest.mark.parametrize("backend", having("url", "on_disk"))
async def test_sigkill_during_rotate_keys_then_resume(
    backend: str, tmp_path: Path, figures: Figures, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(os.environ.get("SYMPHONY_NB_CRASH_SEED", "11"))
    async with store_url(backend, tmp_path) as url:
        monkeypatch.setenv(ENV, _env("k1"))
        originals = {c.id: c.secrets for c in (_config(i) for i in range(ENTITIES))}
        async with open_repository(AgentConfig, url) as repo:
            await repo.save_many(
                _config(i).model_copy(update={"secrets": originals[f"c{i:03d}"]})
                for i in range(ENTITIES)
            )
        kills = mixed = lost = 0
        for run in range(RUNS):
            primary = "k2" if run % 2 == 0 else "k1"
            monkeypatch.setenv(ENV, _env(primary))
            _, finished = _kill_rotator(url, 8, rng)
            kills += not finished
            async with open_repository(AgentConfig, url) as repo:
                stored = {c.id: c.secrets for c in await repo.find_all()}  # every value decrypts
                lost += sum(stored.get(k) != v for k, v in originals.items())
                report = await repo.key_report()
                mixed += len(report) > 1
                await repo.rotate_keys(progress=False, batch_size=8)
                assert await repo.key_report() == {primary: 2 * ENTITIES}
                assert await repo.rotate_keys(progress=False) == 0
    figures.record(
        "secrets: SIGKILL during rotate_keys, then resume",
        backend,
        RUNS,
        kills=kills,
        faults=kills,
        acknowledged=ENTITIES,
        lost=lost,
        detail=f"{ENTITIES} configs x 2 secrets; after each kill every value decrypted "
        f"({mixed} kills left values under both keys) and a rerun put all under the primary",
    )
    assert lost == 0 and kills >= RUNS - 2


HISTORY_RUNS = max(10, RUNS // 3)
KEEP = 3


@pytest.mark.parametrize("backend", having("url", "on_disk"))
async def test_sigkill_during_rotate_keys_with_history_then_resume(
    backend: str, tmp_path: Path, figures: Figures, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kills land in either pass: the entities' or the kept revisions' (sealed again in place)."""
    rng = random.Random(os.environ.get("SYMPHONY_NB_CRASH_SEED", "12"))
    count = ENTITIES // 4
    async with store_url(backend, tmp_path) as url:
        monkeypatch.setenv(ENV, _env("k1"))
        originals = {c.id: c.secrets for c in (_config(i) for i in range(count))}
        async with open_repository(AgentConfig, url, history=KEEP) as repo:
            await repo.save_many(
                _config(i).model_copy(update={"secrets": originals[f"c{i:03d}"]})
                for i in range(count)
            )
            edited = await repo.find_all()
            for config in edited:
                config.description = "edited"  # two revisions each to begin with
            await repo.save_many(edited)
        kills = mixed = lost = checked = in_revisions = 0
        for run in range(HISTORY_RUNS):
            primary = "k2" if run % 2 == 0 else "k1"
            monkeypatch.setenv(ENV, _env(primary))
            # Entity batches of 4, then revision pages of 4 (KEEP revisions per entity).
            seen, finished = _kill_rotator(
                url, 4, rng, entities=count, pages=count * KEEP // 4 - 2, history=KEEP
            )
            kills += not finished
            in_revisions += not finished and seen > count // 4  # past the entities' batches
            async with open_repository(AgentConfig, url, history=KEEP) as repo:
                for key, secrets in originals.items():  # every value and revision decrypts
                    live = await repo.get(key)
                    revisions = await repo.history(key)
                    checked += len(revisions)
                    lost += live.secrets != secrets
                    lost += sum(r.entity is None or r.entity.secrets != secrets for r in revisions)
                    assert revisions[-1].entity == live  # the current version has its revision
                mixed += len(await repo.key_report()) > 1
                await repo.rotate_keys(progress=False, batch_size=4)
                kept = sum([len(await repo.history(key)) for key in originals])
                assert await repo.key_report() == {primary: 2 * (count + kept)}
                assert await repo.rotate_keys(progress=False) == 0
    figures.record(
        "secrets: SIGKILL during rotate_keys with history, then resume",
        backend,
        HISTORY_RUNS,
        kills=kills,
        faults=kills,
        acknowledged=count,
        lost=lost,
        detail=f"{count} configs x 2 secrets, history={KEEP}; {in_revisions} kills landed while "
        f"revisions were sealed again; after each kill every value and every kept revision "
        f"decrypted ({checked} revisions read, {mixed} kills left values under both keys) and "
        "a rerun put all under the primary",
    )
    assert lost == 0 and kills >= HISTORY_RUNS - 2 and in_revisions >= 2


@pytest.mark.parametrize("history", [None, True], ids=["", "history"])
@pytest.mark.parametrize("backend", having("url", "shared"))
async def test_edits_during_rotation_win_and_everything_ends_under_the_primary(
    backend: str,
    history: bool | None,
    tmp_path: Path,
    figures: Figures,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with store_url(backend, tmp_path) as url:
        monkeypatch.setenv(ENV, _env("k1"))
        async with open_repository(AgentConfig, url, history=history) as repo:
            await repo.save_many(_config(i) for i in range(ENTITIES))
        monkeypatch.setenv(ENV, _env("k2"))
        rotator = open_repository(AgentConfig, url, history=history)
        editor = open_repository(AgentConfig, url, history=history)
        # The value of each entity's highest acknowledged version: two editors' saves of one
        # entity may report back in either order, so the order they report in proves nothing.
        expected: dict[str, tuple[int, str]] = {}
        edits = retries = 0
        stop = False

        async def edit(worker: int) -> None:
            nonlocal edits, retries
            rng = random.Random(worker)
            while not stop:
                entity_id = f"c{rng.randrange(ENTITIES):03d}"
                while True:
                    config = await editor.get(entity_id)
                    new = f"sk-edited-{os.urandom(6).hex()}"
                    config.secrets = {**config.secrets, "api_key": new}  # type: ignore[dict-item]
                    try:
                        await editor.save(config)
                    except ConflictError:
                        retries += 1
                        continue
                    if config.version > expected.get(entity_id, (-1, ""))[0]:
                        expected[entity_id] = (config.version, new)
                    edits += 1
                    break

        try:
            workers = [asyncio.create_task(edit(w)) for w in range(3)]
            rewritten = await rotator.rotate_keys(progress=False, batch_size=5)
            stop = True
            await asyncio.gather(*workers)
            await rotator.rotate_keys(progress=False)
            stored = {c.id: c for c in await rotator.find_all()}
            lost = sum(
                stored[k].secrets["api_key"].get_secret_value() != v
                for k, (_, v) in expected.items()
            )
            kept = 0
            if history:  # every revision under the new primary: the old key can go
                monkeypatch.setenv(ENV, f"k2:{KEYS['k2']}")
                async with open_repository(AgentConfig, url, history=True) as retired:
                    for key in stored:
                        revisions = await retired.history(key)
                        kept += len(revisions)
                        assert revisions[-1].entity == stored[key]
            assert await rotator.key_report() == {"k2": 2 * (ENTITIES + kept)}
        finally:
            await rotator.close()
            await editor.close()
    figures.record(
        "secrets: edits while rotate_keys runs" + (" with history" if history else ""),
        backend,
        1,
        acknowledged=edits,
        lost=lost,
        detail=f"3 editors, {edits} edits ({retries} ConflictError retries); rotation rewrote "
        f"{rewritten} of {ENTITIES}; every edit kept, all values under the new primary"
        + (f", and all {kept} kept revisions read with the old key retired" if history else ""),
    )
    assert lost == 0 and edits > 0


# ---------------------------------------------------------------------- hostile ciphertexts


def _flip(text: str, bit: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
    return base64.b64encode(bytes(raw)).decode()


MUTATIONS = ["flip-ct", "flip-nonce", "swap-entity", "swap-field", "relabel-kid", "truncate",
             "alg", "version", "plaintext", "extra-member", "bad-base64", "unknown-kid"]  # fmt: skip


def test_tampered_or_swapped_ciphertexts_never_decrypt(figures: Figures) -> None:
    ring = Keyring(KEYS)
    repo = InMemoryRepository(AgentConfig, keyring=ring)
    configs = [_config(i) for i in range(3)]
    repo.sync.save_many(configs)
    inner = backend_store(repo)
    docs = {c.id: orjson.loads(run_sync(inner.get(c.id))) for c in configs}
    tried: dict[str, int] = dict.fromkeys(MUTATIONS, 0)

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.sampled_from(MUTATIONS),
        st.sampled_from([c.id for c in configs]),
        st.sampled_from(["api_key", "org"]),
        st.integers(0, 10_000),
        st.sampled_from([c.id for c in configs]),
    )
    def attack(mutation: str, target: str, field: str, bit: int, other: str) -> None:
        doc = orjson.loads(orjson.dumps(docs[target]))
        sealed: dict[str, Any] = doc["secrets"][field]
        if mutation == "flip-ct":
            sealed["ct"] = _flip(sealed["ct"], bit)
        elif mutation == "flip-nonce":
            sealed["nonce"] = _flip(sealed["nonce"], bit)
        elif mutation == "swap-entity":
            if other == target:
                return
            doc["secrets"][field] = docs[other]["secrets"][field]
        elif mutation == "swap-field":
            doc["secrets"][field] = docs[other]["secrets"][
                "org" if field == "api_key" else "api_key"
            ]
        elif mutation == "relabel-kid":
            sealed["kid"] = "k2" if sealed["kid"] == "k1" else "k1"
        elif mutation == "truncate":
            sealed["ct"] = base64.b64encode(base64.b64decode(sealed["ct"])[: bit % 20]).decode()
        elif mutation == "alg":
            sealed["alg"] = "AES-128-GCM"
        elif mutation == "version":
            sealed["$secret"] = 1 + 1 + bit % 5
        elif mutation == "plaintext":
            doc["secrets"][field] = f"planted-{bit}"
        elif mutation == "extra-member":
            sealed["extra"] = bit
        elif mutation == "bad-base64":
            sealed["ct"] = sealed["ct"][:-2] + "!!"
        else:
            sealed["kid"] = f"k{3 + bit % 7}"
        tried[mutation] += 1
        record = Record(target, orjson.dumps(doc).decode(), doc["version"], None)
        run_sync(inner.write([record], create=True))
        try:
            with pytest.raises(DecryptionError) as info:
                repo.sync.get(target)
            assert info.value.field == f"secrets.{field}"
            assert target in str(info.value)
        finally:
            good = Record(target, orjson.dumps(docs[target]).decode(), doc["version"], None)
            run_sync(inner.write([good], create=True))

    attack()
    assert repo.sync.get(configs[0].id).secrets == configs[0].secrets
    figures.record(
        "secrets: tampered, swapped or relabelled ciphertexts",
        "memory",
        sum(tried.values()),
        faults=sum(tried.values()),
        detail="always DecryptionError naming entity and field, never a plaintext; "
        + ", ".join(f"{k} {v}" for k, v in tried.items()),
    )


def test_wrong_keys_and_bad_key_formats_are_refused(figures: Figures) -> None:
    repo = InMemoryRepository(AgentConfig, keyring=Keyring(KEYS, primary="k1"))
    config = _config(0)
    repo.sync.save(config)
    inner = backend_store(repo)
    wrong = 0
    for _ in range(50):  # the same key ids, other keys
        other = InMemoryRepository(AgentConfig, keyring=Keyring({"k1": os.urandom(32)}))
        run_sync(
            backend_store(other).write(
                [Record(config.id, run_sync(inner.get(config.id)), 1, None)], create=True
            )
        )
        with pytest.raises(DecryptionError, match="authentication failed"):
            other.sync.get(config.id)
        wrong += 1
    rng = random.Random(5)
    bad = 0
    for _ in range(200):
        length = rng.choice([n for n in range(0, 65) if n != 32])
        key: Any = os.urandom(length)
        form = rng.choice(["bytes", "b64", "junk", "type"])
        if form == "b64":
            key = base64.b64encode(key).decode()
        elif form == "junk":
            key = "".join(rng.choice("!@#%^&* \t") for _ in range(rng.randint(1, 40)))
        elif form == "type":
            key = rng.choice([None, 42, 3.5, ["k"], {"k": 1}])
        with pytest.raises(KeyringError) as info:
            Keyring({"k1": key})
        assert not isinstance(key, str) or not key.strip() or key.strip() not in str(info.value)
        bad += 1
    for text in ("k1", "k1:", ":k", f"k1:{KEYS['k1']},k1:{KEYS['k2']}", "bad id:" + KEYS["k1"]):
        with pytest.raises(KeyringError):
            Keyring.from_env({ENV: text})
        bad += 1
    figures.record(
        "secrets: wrong keys, bad key formats",
        "memory",
        wrong + bad,
        faults=wrong + bad,
        detail=f"{wrong} wrong keys under the right id: DecryptionError; {bad} malformed keys "
        "or $SYMPHONY_NB_KEYS values: KeyringError when the keyring is built, no key in the text",
    )
