"""Secret fields encrypted at rest, on every backend: round trips, raw storage, keys, rotation."""

from __future__ import annotations

import base64
import json
import logging
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretBytes, SecretStr

from symphony_nb import (
    AgentConfig,
    DecryptionError,
    EncryptionError,
    FileSystemRepository,
    FilterError,
    InMemoryRepository,
    Keyring,
    KeyringError,
    Repository,
    SQLiteRepository,
    SymphonyError,
    open_repository,
)
from symphony_nb._keyring import ENV
from symphony_nb.stores import Record
from tests.backends import (
    BACKENDS,
    HISTORY,
    BackendUnavailable,
    backend_store,
    having,
    store_url,
    with_history,
)

KEY1 = Keyring.generate()
KEY2 = Keyring.generate()


def needle() -> str:
    return f"sk-live-{uuid.uuid4().hex}"


def forms(secret: str) -> list[bytes]:
    """The plaintext and the encodings a careless store might write it in."""
    raw = secret.encode()
    return [
        raw,
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
        raw.hex().encode(),
        raw.hex().upper().encode(),
    ]


def assert_absent(blob: bytes | str, secret: str, where: str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for form in forms(secret):
        assert form not in data, f"the secret ({form[:12]!r}...) is in {where}"


def config(secret: str, **extra: Any) -> AgentConfig:
    return AgentConfig(
        name="bot",
        instruction_template="You are {name}.",
        secrets={"api_key": secret, "org": "org-" + secret[-6:], "empty": ""},
        **extra,
    )


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> str:
    """SYMPHONY_NB_KEYS set for the test: every repository made without keyring= uses it."""
    monkeypatch.setenv(ENV, f"k1:{KEY1}")
    return KEY1


@pytest.fixture(params=sorted(BACKENDS))
async def repo(
    request: pytest.FixtureRequest, tmp_path: Path, keys: str
) -> AsyncIterator[Repository[AgentConfig]]:
    try:
        async with BACKENDS[request.param](AgentConfig, tmp_path) as made:
            yield made
    except BackendUnavailable as exc:
        pytest.skip(f"{request.param} backend unavailable: {exc}")


async def raw_storage(repo: Repository[Any], where: Path) -> bytes:
    """Everything the backend under ``repo`` holds, read behind its back."""
    store = backend_store(repo)
    kind = type(store).__name__
    if kind == "PostgresStore":
        from tests import pg

        conn = await pg.connect()
        try:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                store.schema,
            )
            rows: list[str] = []
            for table in tables:
                name = f'"{store.schema}"."{table["table_name"]}"'
                rows += [r[0] for r in await conn.fetch(f"SELECT t::text FROM {name} t")]
        finally:
            await conn.close()
        return "\n".join(rows).encode()
    if kind in ("MemoryStore", "DictStore"):
        rows_attr = getattr(store, "_rows", None) or getattr(store, "docs", {})
        return (repr(rows_attr) + repr(getattr(store, "_revisions", {}))).encode()
    blobs = [p.read_bytes() for p in sorted(where.rglob("*")) if p.is_file()]
    assert blobs, f"no files under {where}"
    return b"\n".join(blobs)


# ---------------------------------------------------------------------- every backend


async def test_secrets_round_trip_and_are_ciphertext_at_rest(
    repo: Repository[AgentConfig], tmp_path: Path
) -> None:
    secret = needle()
    saved = config(secret)
    await repo.save(saved)
    got = await repo.get(saved.id)
    assert got.secrets["api_key"].get_secret_value() == secret
    assert got.secrets["org"].get_secret_value() == "org-" + secret[-6:]
    assert got.secrets["empty"].get_secret_value() == ""
    assert [c.id for c in await repo.find_all({"name": "bot"})] == [saved.id]
    listed = [c async for c in repo.iter_all(batch_size=1)]
    assert listed[0].secrets == got.secrets
    got.description = "edited"
    assert await repo.update(got)
    assert (await repo.get(saved.id)).secrets["api_key"].get_secret_value() == secret
    # Two values stored; with history on, two more in each of the two revisions.
    assert await repo.key_report() == {"k1": 2 if repo.store.kept() is False else 6}
    assert_absent(await raw_storage(repo, tmp_path), secret, f"the {type(repo).__name__} storage")
    assert_absent(repr(got) + str(got) + got._repr_html_(), secret, "repr and HTML")


@pytest.mark.parametrize("name", having("url"))
async def test_secrets_work_through_the_sync_face_and_open_repository(
    name: str, tmp_path: Path
) -> None:
    secret = needle()
    ring = Keyring({"k1": KEY1})
    async with store_url(name, tmp_path) as url:
        repo = open_repository(AgentConfig, url, keyring=ring)
        try:
            saved = config(secret)
            await repo.save(saved)
            got = await repo.get(saved.id)
            assert got.secrets["api_key"].get_secret_value() == secret
        finally:
            await repo.close()


def test_sync_face_saves_and_reads_secrets(tmp_path: Path) -> None:
    secret = needle()
    repo = SQLiteRepository(AgentConfig, tmp_path / "s.db", keyring=Keyring({"k1": KEY1}))
    try:
        saved = config(secret)
        repo.sync.save(saved)
        assert repo.sync.get(saved.id).secrets["api_key"].get_secret_value() == secret
        assert repo.sync.key_report() == {"k1": 2}
        assert repo.sync.rotate_keys(progress=False) == 0
    finally:
        repo.sync.close()
    for path in tmp_path.iterdir():
        assert_absent(path.read_bytes(), secret, path.name)


@pytest.mark.parametrize("name", HISTORY)
async def test_history_revisions_hold_no_plaintext(name: str, tmp_path: Path, keys: str) -> None:
    from symphony_nb import diff

    first, second = needle(), needle()
    try:
        async with with_history(name, AgentConfig, tmp_path) as repo:
            saved = config(first)
            await repo.save(saved)
            saved.secrets = {"api_key": SecretStr(second)}
            saved.description = "rotated the key"
            await repo.save(saved)
            await repo.delete(saved.id)
            revisions = await repo.history(saved.id)
            assert revisions[0].entity is not None
            assert revisions[0].entity.secrets["api_key"].get_secret_value() == first
            frame = await repo.history_dataframe(saved.id)
            shown = (
                repr(revisions)
                + "".join(r._repr_html_() for r in revisions)
                + repr(diff(revisions[0], revisions[1]))
                + diff(revisions[0], revisions[1])._repr_html_()
                + frame.to_string()
                + frame.to_json(date_format="iso")
            )
            stored = await raw_storage(repo, tmp_path)
            raw = "".join(str(r.json) for r in await backend_store(repo).revisions(saved.id))
    except BackendUnavailable as exc:
        pytest.skip(f"{name} backend unavailable: {exc}")
    for secret in (first, second):
        assert_absent(stored, secret, f"the {name} storage with its history")
        assert_absent(raw, secret, "the stored revisions")
        assert_absent(shown, secret, "revisions, their HTML, diffs and the history frame")


async def test_sqlite_database_wal_and_shared_memory_hold_no_plaintext(tmp_path: Path) -> None:
    secret = needle()
    repo = SQLiteRepository(AgentConfig, tmp_path / "s.db", keyring=Keyring({"k1": KEY1}))
    try:
        await repo.save_many([config(secret) for _ in range(20)])
        files = sorted(tmp_path.iterdir())
        assert {p.name for p in files} >= {"s.db", "s.db-wal", "s.db-shm"}
        for path in files:  # read while open: the WAL still holds the new pages
            assert_absent(path.read_bytes(), secret, path.name)
    finally:
        await repo.close()


async def test_saving_a_secret_without_a_keyring_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    secret = needle()
    async with FileSystemRepository(AgentConfig, tmp_path / "store") as repo:
        with pytest.raises(EncryptionError, match=r"secrets\.api_key.*keyring=Keyring") as info:
            await repo.save(config(secret))
        assert_absent(str(info.value), secret, "the error")
        assert await repo.count() == 0
        empty = AgentConfig(name="a", instruction_template="x", secrets={"api_key": ""})
        await repo.save(empty)  # an empty secret needs no key
        assert (await repo.get(empty.id)).secrets["api_key"].get_secret_value() == ""
        assert await repo.key_report() == {}


@pytest.mark.parametrize(
    "criteria",
    [
        {"secrets.api_key": "x"},
        {"secrets": {"$exists": True}},
        {"token": "x"},
        {"inner.token": "x"},
    ],
)
def test_filters_and_orderings_on_secret_fields_are_refused(criteria: dict[str, Any]) -> None:
    class Inner(BaseModel):
        token: SecretStr
        label: str = ""

    class Holder(BaseModel):
        id: str
        secrets: dict[str, SecretStr] = {}
        token: SecretStr = SecretStr("")
        inner: Inner | None = None

    repo = InMemoryRepository(Holder, keyring=Keyring({"k1": KEY1}))
    with pytest.raises(FilterError, match="secret fields cannot be queried"):
        repo.sync.find_all(criteria)
    with pytest.raises(FilterError, match="secret fields cannot be queried"):
        repo.sync.find_all(order_by="-token")
    assert repo.sync.find_all({"inner.label": "x"}) == []  # the rest of the model still works


# ---------------------------------------------------------------------- user models


class Credential(BaseModel):
    name: str
    token: SecretStr
    blob: SecretBytes | None = None


class Vault(BaseModel):
    id: str
    password: SecretStr
    optional: SecretStr | None = None
    many: list[SecretStr] = []
    by_host: dict[str, SecretStr] = {}
    nested: Credential | None = None
    creds: list[Credential] = []
    note: str = ""


async def test_secrets_in_lists_dicts_and_nested_models(tmp_path: Path) -> None:
    secrets = [needle() for _ in range(7)]
    vault = Vault(
        id="v",
        password=secrets[0],
        many=[secrets[1], secrets[2]],
        by_host={"a.example": secrets[3]},
        nested=Credential(name="n", token=secrets[4], blob=secrets[5].encode()),
        creds=[Credential(name="c", token=secrets[6])],
        note="plain text stays plain",
    )
    async with SQLiteRepository(Vault, tmp_path / "v.db", keyring=Keyring({"k1": KEY1})) as repo:
        await repo.save(vault)
        got = await repo.get("v")
        assert got == vault
        assert got.nested is not None and got.nested.blob == SecretBytes(secrets[5].encode())
        assert await repo.key_report() == {"k1": 7}
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for secret in secrets:
        assert_absent(stored, secret, "the database")
    assert b"plain text stays plain" in stored


def test_a_model_mixing_secrets_in_a_union_is_refused_when_the_repository_is_built() -> None:
    class Mixed(BaseModel):
        id: str
        value: SecretStr | int

    with pytest.raises(TypeError, match="cannot be told apart"):
        InMemoryRepository(Mixed)


# ---------------------------------------------------------------------- keys


def test_keyring_refuses_bad_keys_and_never_shows_them() -> None:
    ring = Keyring({"k2": KEY2, "k1": base64.urlsafe_b64decode(KEY1 + "=")}, primary="k2")
    assert ring.key_ids == ["k2", "k1"] and ring.primary == "k2"
    assert KEY1 not in repr(ring) and KEY2 not in repr(ring)
    with pytest.raises(KeyringError, match="is 16 bytes; AES-256 needs 32"):
        Keyring({"k1": b"x" * 16})
    with pytest.raises(KeyringError, match="not base64"):
        Keyring({"k1": "not a key!"})
    with pytest.raises(KeyringError, match="primary key 'k3' is not in the keyring"):
        Keyring({"k1": KEY1}, primary="k3")
    with pytest.raises(KeyringError, match="key ids are"):
        Keyring({"bad id": KEY1})
    with pytest.raises(KeyringError, match="at least one key"):
        Keyring({})
    with pytest.raises(TypeError, match="not pickled"):
        import pickle

        pickle.dumps(ring)
    assert isinstance(KeyringError("x"), SymphonyError | ValueError)


def test_keyring_from_env_format() -> None:
    assert Keyring.from_env({}) is None
    assert Keyring.from_env({ENV: "  "}) is None
    ring = Keyring.from_env({ENV: f"k2:{KEY2}, k1:{KEY1}"})
    assert ring is not None and ring.key_ids == ["k2", "k1"]
    for bad in ("k1", f"k1:{KEY1},k1:{KEY2}", ":abc", f"k1:{KEY1[:10]}"):
        with pytest.raises(KeyringError) as info:
            Keyring.from_env({ENV: bad})
        assert KEY1 not in str(info.value) and KEY2 not in str(info.value)


async def test_the_environment_is_read_when_the_repository_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    secret = needle()
    monkeypatch.setenv(ENV, f"k1:{KEY1}")
    async with FileSystemRepository(AgentConfig, tmp_path) as repo:
        await repo.save(saved := config(secret))
    monkeypatch.setenv(ENV, f"k9:{KEY2}")
    async with FileSystemRepository(AgentConfig, tmp_path) as repo:
        with pytest.raises(DecryptionError, match=r"key 'k1'.*has no key 'k1'") as info:
            await repo.get(saved.id)
    assert info.value.key_id == "k1" and info.value.field == "secrets.api_key"
    assert saved.id in str(info.value)


async def test_a_wrong_key_under_the_same_id_is_a_decryption_error(tmp_path: Path) -> None:
    async with FileSystemRepository(AgentConfig, tmp_path, keyring=Keyring({"k1": KEY1})) as repo:
        await repo.save(saved := config(needle()))
    async with FileSystemRepository(AgentConfig, tmp_path, keyring=Keyring({"k1": KEY2})) as repo:
        with pytest.raises(DecryptionError, match="authentication failed"):
            await repo.get(saved.id)
        with pytest.raises(DecryptionError):
            await repo.find_all()
    async with FileSystemRepository(AgentConfig, tmp_path) as repo:
        with pytest.raises(DecryptionError, match="no keyring"):
            await repo.get(saved.id)


async def test_moved_relabelled_or_plaintext_values_do_not_decrypt() -> None:
    repo = InMemoryRepository(AgentConfig, keyring=Keyring({"k1": KEY1, "k2": KEY2}))
    a, b = config(needle()), config(needle())
    await repo.save_many([a, b])
    inner = backend_store(repo)
    doc_a = json.loads(await inner.get(a.id))
    doc_b = json.loads(await inner.get(b.id))

    async def plant(entity_id: str, doc: dict[str, Any]) -> None:
        await inner.write([Record(entity_id, json.dumps(doc), doc["version"], None)], create=True)

    moved = dict(doc_b, secrets=dict(doc_b["secrets"], api_key=doc_a["secrets"]["api_key"]))
    await plant(b.id, moved)  # another entity's ciphertext
    with pytest.raises(DecryptionError, match="moved from another entity or field"):
        await repo.get(b.id)
    swapped = dict(doc_a, secrets=dict(doc_a["secrets"], org=doc_a["secrets"]["api_key"]))
    await plant(a.id, swapped)  # another field's ciphertext
    with pytest.raises(DecryptionError, match=r"'secrets.org'"):
        await repo.get(a.id)
    relabelled = dict(doc_b, secrets=dict(doc_b["secrets"]))
    relabelled["secrets"]["api_key"] = dict(doc_b["secrets"]["api_key"], kid="k2")
    await plant(b.id, relabelled)
    with pytest.raises(DecryptionError, match="authentication failed"):
        await repo.get(b.id)
    plain = dict(doc_b, secrets={"api_key": "sk-planted"})
    await plant(b.id, plain)
    with pytest.raises(DecryptionError, match="stored unencrypted"):
        await repo.get(b.id)


# ---------------------------------------------------------------------- rotation


async def test_rotation_reencrypts_under_the_primary_and_a_rerun_does_nothing(
    repo: Repository[AgentConfig],
) -> None:
    originals = [config(needle(), id=f"c{i:02}") for i in range(25)]
    await repo.save_many(originals)
    kept = repo.store.kept() is not False
    # With history on, key_report counts the values in the revisions too: one each so far.
    assert await repo.key_report() == {"k1": 100 if kept else 50}
    from symphony_nb._encryption import secret_layer

    layer = secret_layer(repo.store)
    assert layer is not None
    layer.keyring = Keyring({"k2": KEY2, "k1": KEY1})
    versions = {c.id: c.version for c in originals}
    assert await repo.rotate_keys(progress=False, batch_size=7) == 25
    # A rotation is no edit; with history on it is one more version, with its revision, and
    # the revisions kept before it are sealed again in place.
    assert await repo.key_report() == {"k2": 150 if kept else 50}
    assert await repo.rotate_keys(progress=False) == 0
    bump = 1 if kept else 0
    for original in originals:
        got = await repo.get(original.id)
        assert got.secrets == original.secrets
        assert got.version == versions[original.id] + bump
        assert got.updated_at == original.updated_at
    layer.keyring = Keyring({"k2": KEY2})  # the old key retired
    assert len(await repo.find_all()) == 25
    if kept:  # nor does the history need it
        for original in originals:
            revisions = await repo.history(original.id)
            assert [r.entity.secrets for r in revisions if r.entity] == [original.secrets] * 2


@pytest.mark.parametrize("name", HISTORY)
async def test_rotation_reseals_every_kept_revision_and_changes_nothing_else(
    name: str, tmp_path: Path
) -> None:
    from symphony_nb._encryption import secret_layer

    first, second, third = needle(), needle(), needle()
    try:
        async with with_history(name, AgentConfig, tmp_path, keyring=Keyring({"k1": KEY1})) as repo:
            saved = config(first)
            await repo.save(saved)
            saved.secrets = {"api_key": SecretStr(second)}
            await repo.save(saved)
            gone = config(third)
            await repo.save(gone)
            await repo.delete(gone.id)  # the history of a deleted entity is rotated too
            before = {key: await repo.history(key) for key in (saved.id, gone.id)}
            layer = secret_layer(repo.store)
            assert layer is not None
            layer.keyring = Keyring({"k2": KEY2, "k1": KEY1})
            assert await repo.rotate_keys(progress=False, batch_size=1) == 1
            assert set(await repo.key_report()) == {"k2"}
            layer.keyring = Keyring({"k2": KEY2})  # the old key retired
            after = {key: await repo.history(key) for key in (saved.id, gone.id)}
            stored = [r for key in after for r in await backend_store(repo).revisions(key)]
    except BackendUnavailable as exc:
        pytest.skip(f"{name} backend unavailable: {exc}")
    # The revisions read as before, with their numbers, times, actors and reasons; the
    # rotation added one revision (its own version) and rewrote none of the others.
    assert after[gone.id] == before[gone.id]
    assert after[saved.id][:-1] == before[saved.id]
    assert after[saved.id][-1].reason == "rotate keys"
    assert after[saved.id][0].entity.secrets["api_key"].get_secret_value() == first
    sealed = [json.loads(r.json) for r in stored if r.json is not None]
    kids = [v["kid"] for doc in sealed for v in doc["secrets"].values() if isinstance(v, dict)]
    assert kids and set(kids) == {"k2"}


@pytest.mark.parametrize("name", HISTORY)
async def test_a_key_missing_for_a_revision_names_it_and_its_page_is_not_written(
    name: str, tmp_path: Path
) -> None:
    from symphony_nb._encryption import secret_layer

    old = Keyring.generate()
    try:
        async with with_history(name, AgentConfig, tmp_path, keyring=Keyring({"k1": KEY1})) as repo:
            layer = secret_layer(repo.store)
            assert layer is not None
            await repo.save(config(needle(), id="b"))
            await repo.delete("b")  # only its history holds its secrets now, under k1
            layer.keyring = Keyring({"k0": old})
            await repo.save(config(needle(), id="a"))  # under k0, read before b's in the page
            layer.keyring = Keyring({"k2": KEY2, "k0": old})  # k1 dropped before rotating
            with pytest.raises(
                DecryptionError, match="revision 1: the keyring has no key 'k1'"
            ) as info:
                await repo.rotate_keys(progress=False)
            message = str(info.value)
            assert "id 'b'" in message or "/b.json" in message  # where, as each backend says
            assert "'secrets.api_key'" in message or "'secrets.org'" in message
            layer.keyring = Keyring({"k2": KEY2, "k1": KEY1, "k0": old})
            # a's entity was rotated (one more revision, under k2); the page holding a's first
            # revision and b's was not written, though a's could be sealed again.
            assert await repo.key_report() == {"k0": 2, "k1": 2, "k2": 4}
            await repo.rotate_keys(progress=False)
            assert await repo.key_report() == {"k2": 8}
    except BackendUnavailable as exc:
        pytest.skip(f"{name} backend unavailable: {exc}")


async def test_layers_that_change_revisions_refuse_to_pass_rewrites_down(tmp_path: Path) -> None:
    from symphony_nb import HistoryError

    repo = InMemoryRepository(AgentConfig, keyring=Keyring({"k1": KEY1}), history=True)
    saved = config(needle())
    await repo.save(saved)
    (revision,) = await repo.store.revision_page(None, 10)  # as the repository reads it
    planted = revision.json.replace("org-", "planted-")
    with pytest.raises(HistoryError, match="rewrite them through the store beneath it"):
        await repo.store.rewrite_revisions([(revision, planted)])
    assert (await repo.history(saved.id))[0].entity == await repo.get(saved.id)


async def test_rotation_without_a_keyring_and_on_models_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    from symphony_nb import Task

    async with InMemoryRepository(Task) as tasks:
        assert await tasks.rotate_keys(progress=False) == 0
        assert await tasks.key_report() == {}
    async with InMemoryRepository(AgentConfig) as configs:
        with pytest.raises(EncryptionError, match="no keyring"):
            await configs.rotate_keys(progress=False)
        with pytest.raises(ValueError, match="batch_size"):
            await configs.rotate_keys(batch_size=0)


# ---------------------------------------------------------------------- where secrets surface


async def test_logs_warnings_and_errors_never_hold_the_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = needle()
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ring = Keyring({"k1": KEY1})
        async with FileSystemRepository(AgentConfig, tmp_path, keyring=ring) as repo:
            saved = config(secret)
            await repo.save(saved)
            stale = saved.model_copy()
            await repo.save(saved)
            for attempt in (
                lambda: repo.save(stale),
                lambda: repo.find_all({"secrets.api_key": secret}),
            ):
                try:
                    await attempt()
                except SymphonyError as exc:
                    texts.append(repr(exc) + str(exc))
            (tmp_path / "agentconfig" / "junk.json").write_text("{not json")
            await repo.find_all(on_corrupt="warn")
        async with FileSystemRepository(AgentConfig, tmp_path, keyring=Keyring({"k1": KEY2})) as r:
            try:
                await r.get(saved.id)
            except DecryptionError as exc:
                texts.append(repr(exc) + str(exc))
    assert len(texts) == 3
    texts += [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert caught, "the corrupt file should have been warned about"
    for text in texts:
        assert_absent(text, secret, "an error, warning or log")
        assert_absent(text, KEY1, "an error, warning or log")


async def test_copy_repository_carries_secrets_to_the_other_backend(tmp_path: Path) -> None:
    from symphony_nb import copy_repository

    secret = needle()
    ring = Keyring({"k1": KEY1})
    async with (
        FileSystemRepository(AgentConfig, tmp_path / "f", keyring=ring) as source,
        SQLiteRepository(AgentConfig, tmp_path / "c.db", keyring=ring) as target,
    ):
        await source.save(saved := config(secret))
        assert await copy_repository(source, target, progress=False) == 1
        got = await target.get(saved.id)
        assert got.secrets == saved.secrets
        assert await target.key_report() == {"k1": 2}
    assert_absent((tmp_path / "c.db").read_bytes(), secret, "the copy")


def test_the_readme_example_runs() -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("### Secrets: encrypted at rest", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(example, "README.md", "exec"), {})


def test_configure_passes_the_keyring_to_both_repositories(tmp_path: Path) -> None:
    from symphony_nb import ServiceRegistry
    from symphony_nb._encryption import secret_layer

    ring = Keyring({"k1": KEY1})
    registry = ServiceRegistry().configure(f"sqlite:///{tmp_path / 'r.db'}", keyring=ring)
    configs = registry.get_repository("agent_config")
    layer = secret_layer(configs.store)
    assert layer is not None and layer.keyring is ring
    assert secret_layer(registry.get_repository("task").store) is None  # Task has no secrets
    secret = needle()
    configs.sync.save(saved := config(secret))
    agent = registry.get_agent_factory().sync.create_agent(saved.id)
    assert agent.config.secrets["api_key"].get_secret_value() == secret
    for repo in registry.repositories.values():
        repo.sync.close()


def test_importing_the_package_does_not_load_cryptography() -> None:
    import subprocess
    import sys

    code = "import sys, symphony_nb; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_index_on_a_secret_field_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FilterError, match="secret"):
        SQLiteRepository(AgentConfig, tmp_path / "i.db", indexes=["secrets.api_key"])


def test_a_reader_with_the_key_reads_secrets_from_a_store_it_may_not_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.unprivileged import run_as_reader, share_for_reading, shared_folder

    secret = needle()
    monkeypatch.setenv(ENV, f"k1:{KEY1}")
    with shared_folder() as where:
        store = where / "store"
        repo = FileSystemRepository(AgentConfig, store)
        repo.sync.save(saved := config(secret))
        repo.sync.close()
        share_for_reading(store)
        code = (
            "import json\n"
            "from symphony_nb import AgentConfig, FileSystemRepository\n"
            f"repo = FileSystemRepository(AgentConfig, {str(store)!r})\n"
            f"found = repo.sync.get({saved.id!r})\n"
            "print(json.dumps(found.secrets['api_key'].get_secret_value()))\n"
        )
        assert run_as_reader(code, where) == secret


def test_secret_bytes_that_are_not_utf8_are_refused_not_garbled() -> None:
    from symphony_nb import UnstorableEntityError

    class Blob(BaseModel):
        id: str
        data: SecretBytes

    repo = InMemoryRepository(Blob, keyring=Keyring({"k1": KEY1}))
    with pytest.raises(UnstorableEntityError, match="SecretBytes at data are not UTF-8") as info:
        repo.sync.save(Blob(id="b", data=b"\xff\xfe-secret"))
    assert "-secret" not in str(info.value)  # the value is never echoed
    assert repo.sync.count() == 0
    repo.sync.save(Blob(id="ok", data="päss".encode()))
    assert repo.sync.get("ok").data.get_secret_value() == "päss".encode()


async def test_a_mask_written_before_secrets_were_sealed_reads_back_with_a_warning() -> None:
    from symphony_nb import CorruptEntityWarning

    repo = InMemoryRepository(AgentConfig, keyring=Keyring({"k1": KEY1}))
    old = config(needle())
    legacy = json.loads(old.model_dump_json(by_alias=True))  # how a secret was stored before
    assert legacy["secrets"]["api_key"] == "**********"
    record = Record(old.id, json.dumps(legacy), old.version, None)
    await backend_store(repo).write([record], create=True)
    with pytest.warns(
        CorruptEntityWarning, match=r"\['secrets.api_key', 'secrets.org'\].*values were lost"
    ):
        got = await repo.get(old.id)
    assert got.secrets["api_key"].get_secret_value() == "**********"
