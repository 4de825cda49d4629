"""Agents: an :class:`AgentConfig` plus a language model, and the factory that builds them."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from .._errors import InvalidArgumentError, LanguageModelError, NotFoundError
from .._models import AgentConfig, Task
from .._repository import Repository

if TYPE_CHECKING:
    from .._sync_faces import SyncAgent, SyncAgentFactory

Message = dict[str, str]


class LanguageModel(Protocol):
    """What an agent calls: chat messages and settings in, reply text out (sync or async).

    Plug a real client with one function, for example::

        async def openai_model(messages, settings):
            reply = await client.chat.completions.create(messages=messages, **settings)
            return reply.choices[0].message.content

    ``settings`` is the config's ``model_config``. A model that declares a keyword
    parameter ``secrets`` (or takes ``**kwargs``) also gets the config's ``secrets``, revealed,
    as ``{name: plaintext}``; this is the only place an agent reveals them::

        def my_model(messages, settings, *, secrets):
            client = OpenAI(api_key=secrets["api_key"])
            ...

    An ``async def`` model (or an object with an ``async def __call__``) runs on the event
    loop. Any other callable may block, so each call runs in a worker thread of its own and
    never holds up other work; if it returns an awaitable, that is awaited on the loop. A
    call that is cancelled or times out cannot be stopped inside its thread: it finishes in
    the background and its late reply is discarded.
    """

    def __call__(
        self, messages: list[Message], settings: Mapping[str, Any]
    ) -> str | Awaitable[str]: ...


def offline_model(messages: list[Message], settings: Mapping[str, Any]) -> str:
    """A deterministic stand-in for a language model, so everything runs without a network.

    It answers with the last user message and a short digest of the whole conversation.
    """
    digest = hashlib.sha256(repr((messages, sorted(settings.items()))).encode()).hexdigest()[:8]
    question = messages[-1]["content"] if messages else ""
    return f"(offline answer {digest}) You asked: {question}"


def _runs_on_loop(llm: Callable[..., Any]) -> bool:
    # offline_model is pure computation of a few microseconds; a thread would cost ~100x that.
    return (
        llm is offline_model
        or inspect.iscoroutinefunction(llm)
        or inspect.iscoroutinefunction(type(llm).__call__)
    )


def takes_secrets(llm: Callable[..., Any]) -> bool:
    """Whether ``llm`` declares a ``secrets`` keyword parameter (or takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(llm).parameters.values()
    except (TypeError, ValueError):  # a builtin or an object without a signature
        return False
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == "secrets" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )


async def ask(
    llm: LanguageModel,
    messages: list[Message],
    settings: Mapping[str, Any],
    secrets: Mapping[str, str] | None = None,
) -> object:
    """Call ``llm`` without blocking the event loop and return its reply (awaited if need be).

    ``secrets`` are passed as the ``secrets`` keyword when given (see :class:`LanguageModel`).
    """
    call: Callable[..., Any] = llm
    if secrets is not None:
        call = functools.partial(call, secrets=secrets)
    if _runs_on_loop(llm):
        reply: object = call(messages, settings)
    else:
        reply = await _in_thread(call, messages, settings)
    if inspect.isawaitable(reply):
        reply = await reply
    return reply


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a new daemon thread, with the caller's context variables.

    Not ``asyncio.to_thread``: its pool is small (6 threads on 2 cores) and shared with the
    storage backends, and its threads are joined at exit, so one hung model call would keep
    the interpreter from exiting. A cancelled wait leaves the thread to finish on its own.
    """
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def deliver(value: Any, error: BaseException | None) -> None:
        if reply.done():  # the caller stopped waiting: the late reply is dropped
            return
        if error is None:
            reply.set_result(value)
        else:
            reply.set_exception(error)

    def work() -> None:
        value, error = None, None
        try:
            value = context.run(function, *args)
        except Exception as exc:  # handed to the waiting coroutine, which re-raises it
            error = exc
        except BaseException as exc:
            # SystemExit or KeyboardInterrupt raised on the loop would stop the loop itself.
            error = LanguageModelError(f"the language model call raised {type(exc).__name__}")
            error.__cause__ = exc
        with contextlib.suppress(RuntimeError):  # the loop closed while the call ran
            loop.call_soon_threadsafe(deliver, value, error)

    threading.Thread(target=work, name="symphony_nb-model", daemon=True).start()
    return await reply


class Agent:
    """A configured agent: renders its instructions and asks its language model."""

    def __init__(self, config: AgentConfig, llm: LanguageModel | None = None) -> None:
        self.config = config
        self.llm: LanguageModel = llm or offline_model
        self.instructions = config.render_instructions()
        self._gives_secrets = takes_secrets(self.llm)

    def __repr__(self) -> str:
        return f"Agent(name={self.config.name!r}, id={self.config.id!r})"

    def messages(self, input_data: Mapping[str, Any]) -> list[Message]:
        """The chat messages sent for ``input_data`` (its ``query``, or the whole dict)."""
        query = input_data.get("query")
        content = query if isinstance(query, str) else repr(dict(input_data))
        return [
            {"role": "system", "content": self.instructions},
            {"role": "user", "content": content},
        ]

    async def run(self, input_data: Mapping[str, Any]) -> dict[str, Any]:
        """Ask the language model about ``input_data``; return the output to store on a task.

        The model gets the config's ``model_config`` as ``settings`` and, if it declares a
        ``secrets`` parameter, the config's secrets revealed (see :class:`LanguageModel`).
        """
        secrets = None
        if self._gives_secrets:
            secrets = {k: v.get_secret_value() for k, v in self.config.secrets.items()}
        reply = await ask(
            self.llm, self.messages(input_data), dict(self.config.llm_config), secrets
        )
        if not isinstance(reply, str):
            raise LanguageModelError(f"the language model returned {type(reply).__name__}, not str")
        return {"response": reply, "agent": self.config.name, "agent_id": self.config.id}

    async def execute(self, task: Task) -> dict[str, Any]:
        """Run this agent on ``task``'s input data."""
        return await self.run(task.input_data)

    @property
    def sync(self) -> SyncAgent:
        """The same methods without ``await``."""
        from .._sync_faces import SyncAgent

        return SyncAgent(self)


class AgentFactory:
    """Creates :class:`Agent` objects from stored :class:`AgentConfig` entries."""

    def __init__(
        self,
        repository: Repository[AgentConfig] | None = None,
        *,
        llm: LanguageModel | None = None,
    ) -> None:
        self.repository = repository
        self.llm = llm

    def __repr__(self) -> str:
        return f"AgentFactory({self.repository!r})"

    async def create_agent(
        self, config_id: str, *, llm: LanguageModel | None = None, **overrides: Any
    ) -> Agent:
        """Load config ``config_id`` and build an agent, with ``overrides`` for its fields.

        ``llm`` replaces the factory's language model for this agent. Raises
        :class:`NotFoundError` for an unknown id.
        """
        if self.repository is None:
            raise NotFoundError(
                "this AgentFactory has no repository: pass one, AgentFactory(repo), or register "
                "'agent_config' in the ServiceRegistry and use registry.get_agent_factory()"
            )
        config = await self.repository.find_by_id(config_id)
        if config is None:
            raise NotFoundError(f"no AgentConfig with id {config_id!r} in {self.repository!r}")
        if overrides:
            config = _override(config, overrides)
        return Agent(config, llm or self.llm)

    @property
    def sync(self) -> SyncAgentFactory:
        """The same methods without ``await``."""
        from .._sync_faces import SyncAgentFactory

        return SyncAgentFactory(self)


def _override(config: AgentConfig, overrides: Mapping[str, Any]) -> AgentConfig:
    fields = type(config).model_fields
    aliases = {name: info.alias or name for name, info in fields.items()}
    known = set(aliases) | set(aliases.values())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InvalidArgumentError(
            f"unknown AgentConfig field(s) {unknown}; fields: {sorted(known)}"
        )
    data = config.model_dump(by_alias=True)
    data.update({aliases.get(key, key): value for key, value in overrides.items()})
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise InvalidArgumentError(
            f"invalid override for AgentConfig {config.id!r}: {exc}"
        ) from None
