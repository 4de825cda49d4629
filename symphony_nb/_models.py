"""Domain models: :class:`Task` and :class:`AgentConfig`, and the types they share."""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    StringConstraints,
)

from ._display import entity_html, register_model
from ._errors import TemplateError


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _format_utc(value: datetime) -> str:
    # Fixed width, always with microseconds: stored timestamps then sort as text in every
    # backend exactly as they sort as instants.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


UTCDateTime = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    PlainSerializer(_format_utc, return_type=str, when_used="json"),
]
"""A timezone-aware datetime, normalised to UTC; naive datetimes are rejected, not guessed."""

NonBlank = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, pattern=r"\S")]


def new_id() -> str:
    """A new random id (a uuid4 string)."""
    return str(uuid.uuid4())


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    __badge__ = "status"

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskPriority(StrEnum):
    """How urgent a task is; ordering by priority follows this declaration order."""

    __badge__ = "priority"

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Entity(BaseModel):
    """Base of the stored models: an id, a version for optimistic concurrency, timestamps.

    Unknown fields are rejected (a typo is an error, and data written by a newer schema is
    noticed instead of silently dropped); assignments are validated.
    """

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        protected_namespaces=(),
        use_enum_values=False,
    )

    id: NonBlank = Field(
        default_factory=new_id, description="Unique id (a uuid4 string by default)."
    )
    version: int = Field(default=0, ge=0, description="Bumped by every successful write.")
    created_at: UTCDateTime = Field(
        default_factory=utc_now, description="When it was created (UTC)."
    )
    updated_at: UTCDateTime = Field(
        default_factory=utc_now, description="When it was last written (UTC)."
    )

    def _repr_html_(self) -> str:
        """This entity as an HTML card in a notebook (see :mod:`symphony_nb._display`)."""
        return entity_html(self)


register_model(Entity)  # entities, and lists of them, show as HTML in a notebook


class Task(Entity):
    """A unit of work that an agent executes."""

    # The composite serves a worker's claim: the oldest pending task of one priority.
    __indexes__: ClassVar[tuple[str | tuple[str, ...], ...]] = (
        "status",
        "priority",
        "created_at",
        ("status", "priority", "created_at"),
    )

    name: NonBlank = Field(description="Short human-readable name.")
    description: str = ""
    status: TaskStatus = TaskStatus.PENDING
    priority: TaskPriority = TaskPriority.MEDIUM
    input_data: dict[str, Any] = Field(default_factory=dict)
    output_data: dict[str, Any] | None = None
    error: str | None = None
    tags: list[str] = Field(default_factory=list)
    agent_id: str | None = None
    parent_task_id: str | None = None
    workflow_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    started_at: UTCDateTime | None = None
    completed_at: UTCDateTime | None = None
    worker: str | None = Field(
        default=None, description="The worker that claimed it last (see TaskManager.work)."
    )
    lease_expires_at: UTCDateTime | None = Field(
        default=None,
        description="While running: when its worker's claim lapses unless the worker renews it.",
    )
    attempts: int = Field(default=0, ge=0, description="How many times a worker started it.")
    cancel_requested: bool = Field(
        default=False, description="Set by TaskManager.cancel; its worker then stops it."
    )


class AgentConfig(Entity):
    """A stored agent configuration.

    The spec names the language-model settings ``model_config``, which pydantic reserves;
    they are the attribute ``llm_config`` and the constructor argument / JSON key
    ``model_config``: ``AgentConfig(name=..., instruction_template=..., model_config={...})``.

    ``secrets`` holds credentials such as ``{"api_key": "sk-..."}``: they are encrypted at
    rest (see :class:`~symphony_nb.Keyring`), masked in every display, and an :class:`Agent`
    hands them, revealed, only to its language model's ``secrets`` argument.
    """

    name: NonBlank = Field(description="The agent's name, available as {name} in the template.")
    role: str = ""
    description: str = ""
    instruction_template: NonBlank = Field(
        description="Instructions; placeholders such as {name} or {role} are filled by render."
    )
    llm_config: dict[str, Any] = Field(
        default_factory=dict,
        alias="model_config",
        description="Language-model settings (model name, temperature, ...).",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="API keys and other credentials of the model it calls; encrypted at rest, "
        "masked everywhere, passed revealed only to the language model (see Agent).",
    )

    def render_instructions(self, **values: Any) -> str:
        """Fill ``instruction_template`` with this config's fields and ``values``.

        ``{name}``, ``{role}``, ``{description}``, ``{id}`` and every other field are
        available; ``values`` add to or override them. Raises :class:`TemplateError`
        naming any placeholder that has no value.
        """
        context: dict[str, Any] = {name: getattr(self, name) for name in type(self).model_fields}
        context["model_config"] = self.llm_config
        context.update(values)
        try:
            parts = list(string.Formatter().parse(self.instruction_template))
        except ValueError as exc:
            raise TemplateError(f"instruction_template is malformed: {exc}") from None
        fields = [field for _, field, _, _ in parts if field is not None]
        unsafe = sorted({f for f in fields if not f.isidentifier()})
        if unsafe:
            raise TemplateError(
                f"instruction_template placeholders must be plain names such as {{name}}; "
                f"got {unsafe}"
            )
        missing = sorted(set(fields) - context.keys())
        if missing:
            raise TemplateError(
                f"instruction_template uses unknown placeholder(s) {missing}; "
                f"known: {sorted(context)} (pass extra values as keyword arguments)"
            )
        text: list[str] = []
        for literal, field, spec, conversion in parts:
            text.append(literal)
            if field is not None:
                text.append(_render_placeholder(field, context[field], spec or "", conversion))
        return "".join(text)


# Python's format mini-language, without nested {fields}:
# [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_SIMPLE_SPEC = re.compile(
    r"(?:[^{}]?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d+))?"
    r"[bcdeEfFgGnosxX%]?"
)
# Dates and times also take strftime directives such as {today:%Y-%m-%d}, without the
# platform's width flags (glibc's %99999999Y is as costly as a huge width).
_STRFTIME_SPEC = re.compile(r"(?:[^%{}]|%[A-Za-z%])*")
MAX_TEMPLATE_WIDTH = 1000
"""The largest width or precision a placeholder's format spec may ask for."""
_CONVERSIONS: dict[str | None, Callable[[Any], Any]] = {
    None: lambda value: value,
    "s": str,
    "r": repr,
    "a": ascii,
}


def _render_placeholder(field: str, value: Any, spec: str, conversion: str | None) -> str:
    """One placeholder's text; any failure is a :class:`TemplateError` naming it."""
    shown = "{" + field + ("" if conversion is None else "!" + conversion)
    shown += ("" if not spec else ":" + spec) + "}"
    match = _SIMPLE_SPEC.fullmatch(spec)
    if match is None and isinstance(value, date | time) and _STRFTIME_SPEC.fullmatch(spec):
        sizes: list[int] = []
    elif match is None:
        raise TemplateError(
            f"instruction_template placeholder {shown} has a format spec that is not simple; "
            "use [[fill]align][sign][width][,][.precision][type], such as {name:>20}, or "
            "strftime directives for a date or time, such as {today:%Y-%m-%d}"
        )
    else:
        sizes = [int(size) for size in match.group("width", "precision") if size]
    if any(size > MAX_TEMPLATE_WIDTH for size in sizes):
        raise TemplateError(
            f"instruction_template placeholder {shown} asks for a width or precision over "
            f"{MAX_TEMPLATE_WIDTH}"
        )
    if conversion not in _CONVERSIONS:
        raise TemplateError(
            f"instruction_template placeholder {shown} has an unknown conversion "
            f"!{conversion}; use !s, !r or !a"
        )
    try:
        return format(_CONVERSIONS[conversion](value), spec)
    except Exception as exc:  # a value's own __format__ or __repr__ may raise anything
        raise TemplateError(
            f"cannot render instruction_template placeholder {shown}: {type(exc).__name__}: {exc}"
        ) from None
