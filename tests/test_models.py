from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from symphony_nb import AgentConfig, Task, TaskPriority, TaskStatus, TemplateError


def test_task_defaults() -> None:
    task = Task(name="n")
    assert len(task.id) == 36 and task.id != Task(name="n").id
    assert task.status is TaskStatus.PENDING and task.priority is TaskPriority.MEDIUM
    assert task.input_data == {} and task.output_data is None and task.tags == []
    assert task.version == 0
    assert task.created_at.tzinfo is not None


def test_enums_are_str_enums() -> None:
    assert [s.value for s in TaskStatus] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert [p.value for p in TaskPriority] == ["low", "medium", "high", "critical"]
    assert TaskStatus.PENDING == "pending"


@pytest.mark.parametrize("name", ["", "   ", "\n"])
def test_blank_names_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        Task(name=name)


def test_unknown_fields_rejected() -> None:
    with pytest.raises(ValidationError, match="nme"):
        Task(name="x", nme="typo")  # type: ignore[call-arg]


def test_assignment_is_validated() -> None:
    task = Task(name="x")
    with pytest.raises(ValidationError):
        task.status = "bogus"  # type: ignore[assignment]


def test_naive_datetimes_rejected_aware_normalised_to_utc() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Task(name="x", created_at=datetime(2026, 1, 1))
    task = Task(name="x", created_at=datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))))
    assert task.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert task.created_at.utcoffset() == timedelta(0)
    assert '"created_at":"2026-01-01T00:00:00.000000Z"' in task.model_dump_json()


def test_json_round_trip_is_exact() -> None:
    task = Task(
        name="x", input_data={"a": [1, 2.5, None, {"b": "ü"}]}, started_at=datetime.now(UTC)
    )
    assert Task.model_validate_json(task.model_dump_json()) == task


def test_agent_config_model_config_alias() -> None:
    config = AgentConfig(name="A", instruction_template="t", model_config={"temperature": 0.3})
    assert config.llm_config == {"temperature": 0.3}
    data = config.model_dump(mode="json")
    assert data["model_config"] == {"temperature": 0.3} and "llm_config" not in data
    again = AgentConfig.model_validate_json(config.model_dump_json())
    assert again.llm_config == {"temperature": 0.3}
    assert AgentConfig(name="A", instruction_template="t", llm_config={"x": 1}).llm_config == {
        "x": 1
    }


def test_agent_config_requires_name_and_template() -> None:
    with pytest.raises(ValidationError, match="instruction_template"):
        AgentConfig(name="A")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="name"):
        AgentConfig(instruction_template="t")  # type: ignore[call-arg]


def test_render_instructions() -> None:
    config = AgentConfig(
        name="Ada", role="Analyst", instruction_template="I am {name}, an {role}. {extra}"
    )
    assert config.render_instructions(extra="Hi.") == "I am Ada, an Analyst. Hi."
    assert config.render_instructions(extra="", name="Bob").startswith("I am Bob")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Hello {nobody}", r"unknown placeholder\(s\) \['nobody'\]"),
        ("Hello {}", "plain names"),
        ("Hello {0}", "plain names"),
        ("{name.__class__}", "plain names"),
        ("{name[0]}", "plain names"),
        ("Hello {name", "malformed"),
    ],
)
def test_render_errors_name_the_problem(template: str, message: str) -> None:
    config = AgentConfig(name="Ada", instruction_template=template)
    with pytest.raises(TemplateError, match=message):
        config.render_instructions()


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{name:>99999999999}", r"placeholder \{name:>99999999999\} asks for a width"),
        ("{name:.99999999999}", r"placeholder \{name:.99999999999\} asks for a width"),
        ("{name:099999999999}", "asks for a width or precision over 1000"),
        ("{name:>{role}}", r"placeholder \{name:>\{role\}\} has a format spec that is not"),
        ("{name:{name.__class__}}", "not simple"),
        ("{created_at:%99999999Y}", "not simple"),
        ("{name:d}", r"cannot render instruction_template placeholder \{name:d\}: ValueError"),
        ("{name!x}", r"placeholder \{name!x\} has an unknown conversion"),
    ],
)
def test_render_refuses_format_specs_that_are_huge_or_not_simple(
    template: str, message: str
) -> None:
    config = AgentConfig(name="Ada", role="r", instruction_template=template)
    with pytest.raises(TemplateError, match=message):
        config.render_instructions()


def test_render_names_the_placeholder_whose_value_fails_to_format() -> None:
    class Unprintable:
        def __format__(self, spec: str) -> str:
            raise MemoryError("no room")

    config = AgentConfig(name="Ada", instruction_template="Hi {name}, {odd:>3}")
    with pytest.raises(TemplateError, match=r"\{odd:>3\}: MemoryError: no room"):
        config.render_instructions(odd=Unprintable())


def test_render_keeps_simple_format_specs() -> None:
    config = AgentConfig(
        name="Ada",
        instruction_template="[{name:>5}] [{name!r}] v{version:03d} {share:.1%} {day:%Y-%m-%d}",
    )
    rendered = config.render_instructions(share=0.25, day=datetime(2026, 1, 31, tzinfo=UTC))
    assert rendered == "[  Ada] ['Ada'] v000 25.0% 2026-01-31"
