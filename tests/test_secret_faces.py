"""Where a secret could surface in a notebook: frames, forms, the explorer, HTML, an agent."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import comm
import pytest

from symphony_nb import (
    Agent,
    AgentConfig,
    AgentFactory,
    InMemoryRepository,
    Keyring,
    Repository,
    ServiceRegistry,
    open_repository,
)
from tests.backends import having, store_url_sync
from tests.test_secrets import KEY1, assert_absent, config, needle

pytest.importorskip("pandas")
widgets_module = pytest.importorskip("symphony_nb.widgets")


@pytest.fixture(params=having("url"))
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository[AgentConfig]]:
    """A repository of every backend with a URL, opened with a keyring."""
    with store_url_sync(request.param, tmp_path) as url:
        made = open_repository(AgentConfig, url, keyring=Keyring({"k1": KEY1}))
        yield made
        made.sync.close()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every comm message a browser would receive from the widgets made during the test."""
    messages: list[Any] = []

    def publish(self: Any, msg_type: str, data: Any = None, metadata: Any = None, **_: Any) -> None:
        messages.append((msg_type, data, metadata))

    monkeypatch.setattr(comm.DummyComm, "publish_msg", publish)
    return messages


def wire(messages: list[Any]) -> str:
    return json.dumps(messages, default=repr)


# ---------------------------------------------------------------------- frames


def test_frames_show_a_mask_and_saving_them_keeps_the_stored_secrets(
    repo: Repository[AgentConfig],
) -> None:
    secret, other = needle(), needle()
    saved = config(secret)
    saved.secrets["second"] = other  # type: ignore[assignment]
    saved = AgentConfig.model_validate(saved.model_dump())
    repo.sync.save(saved)
    for flatten in (False, True):
        df = repo.sync.to_dataframe(flatten=flatten)
        for text in (
            df.to_json(date_format="iso"),
            df.to_csv(),
            repr(df),
            df.to_html(),
            str(df.to_dict()),
        ):
            assert_absent(text, secret, "the frame")
            assert_absent(text, other, "the frame")
        assert "**********" in df.to_json(date_format="iso")
        assert repo.sync.save_dataframe(df) == []  # masked cells are no edit
    df = repo.sync.to_dataframe()
    df.loc[saved.id, "name"] = "renamed"
    df.at[saved.id, "secrets"] = {
        "api_key": "**********",
        "second": "sk-typed-over",
        "org": "**********",
        "empty": "",
    }
    assert repo.sync.save_dataframe(df) == [saved.id]
    got = repo.sync.get(saved.id)
    assert got.name == "renamed"
    assert got.secrets["api_key"].get_secret_value() == secret
    assert got.secrets["second"].get_secret_value() == "sk-typed-over"
    assert got.secrets["org"] == saved.secrets["org"]


# ---------------------------------------------------------------------- forms


def test_forms_send_no_plaintext_and_an_empty_box_keeps_the_secret(
    repo: Repository[AgentConfig], sent: list[Any]
) -> None:
    secret = needle()
    saved = config(secret)
    repo.sync.save(saved)
    form = widgets_module.AgentConfigForm(repo, repo.sync.get(saved.id))
    field = form.inputs["secrets"]
    assert set(field.names()) == {"api_key", "org", "empty"}  # PostgreSQL's jsonb reorders keys
    assert all(box.value == "" for box in field.boxes.values())
    assert field.boxes["api_key"].placeholder.startswith("stored")
    assert field.boxes["empty"].placeholder == ""
    form.fields["name"].value = "renamed"
    assert form.save() == saved.id
    got = repo.sync.get(saved.id)
    assert got.name == "renamed" and got.secrets == saved.secrets
    field.boxes["api_key"].value = "sk-typed"
    form.fields["secrets"].value = "api_key, added"
    field.boxes["added"].value = "sk-added"
    assert form.save() == saved.id
    got = repo.sync.get(saved.id)
    assert {k: v.get_secret_value() for k, v in got.secrets.items()} == {
        "api_key": "sk-typed",
        "added": "sk-added",
    }
    assert sent, "no comm message was recorded"
    assert_absent(wire(sent), secret, "the widget state sent to the browser")
    form.close()


def test_a_secret_field_is_a_password_box(sent: list[Any]) -> None:
    from pydantic import BaseModel, SecretStr

    class Login(BaseModel):
        id: str
        user: str
        password: SecretStr

    repo = InMemoryRepository(Login, keyring=Keyring({"k1": KEY1}))
    secret = needle()
    repo.sync.save(Login(id="a", user="ann", password=secret))
    form = widgets_module.ModelForm(repo, repo.sync.get("a"))
    import ipywidgets

    assert isinstance(form.fields["password"], ipywidgets.Password)
    assert form.fields["password"].value == ""
    form.fields["user"].value = "anne"
    assert form.save() == "a"
    assert repo.sync.get("a").password.get_secret_value() == secret
    form.fields["password"].value = "new-password"
    assert form.save() == "a"
    assert repo.sync.get("a").password.get_secret_value() == "new-password"
    assert_absent(wire(sent), secret, "the widget state")
    form.close()


def test_the_explorer_and_html_show_no_plaintext(
    repo: Repository[AgentConfig], sent: list[Any]
) -> None:
    secret = needle()
    saved = config(secret)
    repo.sync.save(saved)
    registry = ServiceRegistry()
    registry.register_repository("agent_config", repo)
    explorer = widgets_module.RegistryExplorer(registry)
    explorer.entity_list.value = saved.id
    assert_absent(wire(sent), secret, "the explorer's widget state")
    got = repo.sync.get(saved.id)
    for text in (got._repr_html_(), repr(got), str(got), repo._repr_html_(), repr(got.secrets)):
        assert_absent(text, secret, "a repr")
    explorer.close()


# ---------------------------------------------------------------------- agents


def test_the_agent_reveals_secrets_only_to_its_language_model(
    repo: Repository[AgentConfig],
) -> None:
    secret = needle()
    saved = config(secret)
    repo.sync.save(saved)
    seen: dict[str, Any] = {}

    def model(messages: list[dict[str, str]], settings: Mapping[str, Any], *, secrets: Any) -> str:
        seen.update(messages=messages, settings=settings, secrets=secrets)
        return "ok"

    agent = AgentFactory(repo).sync.create_agent(saved.id, llm=model)
    output = agent.sync.run({"query": "hello"})
    assert seen["secrets"] == {"api_key": secret, "org": "org-" + secret[-6:], "empty": ""}
    assert_absent(json.dumps(seen["messages"]) + repr(seen["settings"]), secret, "the prompt")
    assert_absent(json.dumps(output) + repr(agent) + agent.instructions, secret, "the output")

    def plain(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
        return repr((messages, settings))

    reply = Agent(saved, plain).sync.run({"query": "hi"})  # no secrets parameter: none given
    assert_absent(json.dumps(reply), secret, "a model that takes no secrets")


def test_a_template_cannot_print_a_secret() -> None:
    secret = needle()
    template = "{name} {secrets} {secrets!r}"
    rendered = config(secret).model_copy(update={"instruction_template": template})
    assert_absent(rendered.render_instructions(), secret, "rendered instructions")


# ---------------------------------------------------------------------- a saved notebook


def test_a_notebook_saved_with_outputs_holds_no_plaintext(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    secret = needle()
    cells = [
        "import os\nfrom symphony_nb import AgentConfig, Keyring, SQLiteRepository\n"
        "from symphony_nb.widgets import AgentConfigForm",
        f"repo = SQLiteRepository(AgentConfig, 'nb.db', keyring=Keyring({{'k1': {KEY1!r}}}))\n"
        "config = AgentConfig(name='bot', instruction_template='x', "
        f"secrets={{'api_key': os.environ['PLANTED']}})\nrepo.sync.save(config)",
        "repo.sync.get(config.id)",
        "repo.sync.find_all()",
        "config.secrets",
        "repo.sync.to_dataframe()",
        "AgentConfigForm(repo, repo.sync.get(config.id))",
        "print(config, repr(config))",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    import os

    os.environ["PLANTED"] = secret
    try:
        client = nbclient.NotebookClient(
            notebook,
            timeout=120,
            resources={"metadata": {"path": str(tmp_path)}},
            store_widget_state=True,
        )
        client.execute()
    finally:
        del os.environ["PLANTED"]
    path = tmp_path / "saved.ipynb"
    nbformat.write(notebook, path)
    text = path.read_text()
    assert "text/html" in text and "application/vnd.jupyter.widget-view+json" in text
    assert_absent(text.replace("os.environ['PLANTED']", ""), secret, "the saved notebook")
