"""A model of the user's own, not an Entity, works on every backend (the contract suite's model zoo)."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from symphony_nb import ConflictError


class Tone(Enum):
    CALM = "calm"
    TERSE = "terse"


class Sampling(BaseModel):
    temperature: float = 0.7
    stop: list[str] = Field(default_factory=list)


class Prompt(BaseModel):
    id: str
    version: str = "1.0.0"  # a prompt's own version: text, so not a concurrency counter
    text: str
    tone: Tone = Tone.CALM
    stage: Literal["draft", "live"] = "draft"
    sampling: Sampling = Field(default_factory=Sampling)
    tags: list[str] = Field(default_factory=list)
    owner: str | None = None


class Counter(BaseModel):
    id: str
    version: int = 0
    hits: int = 0


async def test_a_user_model_with_a_text_version_round_trips(
    make_repo: Callable[[type[Any]], Any],
) -> None:
    repo = await make_repo(Prompt)
    prompt = Prompt(
        id="greet",
        text="Hello {name}",
        tone=Tone.TERSE,
        stage="live",
        sampling=Sampling(temperature=0.1, stop=["\n"]),
        tags=["a", "b"],
    )
    await repo.save(prompt)
    assert prompt.version == "1.0.0"  # untouched: it is the user's field, not a counter
    assert await repo.get("greet") == prompt
    prompt.version = "1.1.0"
    await repo.save(Prompt(**{**prompt.model_dump(), "version": "0.9"}))  # no conflict check
    assert (await repo.get("greet")).version == "0.9"
    assert [p.id for p in await repo.find_all({"sampling.temperature": {"$lt": 0.5}})] == ["greet"]
    assert await repo.count({"stage": "live", "tone": Tone.TERSE, "owner": None}) == 1
    assert await repo.find_all({"tags": {"$contains": "c"}}) == []
    assert [p.id for p in await repo.find_all(order_by=["-tone", "version"])] == ["greet"]
    assert await repo.delete("greet")


async def test_an_integer_version_is_the_concurrency_counter(
    make_repo: Callable[[type[Any]], Any],
) -> None:
    repo = await make_repo(Counter)
    counter = Counter(id="c")
    await repo.save(counter)
    assert counter.version == 1
    stale = Counter(id="c", version=0, hits=5)
    with pytest.raises(ConflictError):
        await repo.save(stale)
    counter.hits = 2
    await repo.save(counter)
    assert (await repo.get("c")).model_dump() == {"id": "c", "version": 2, "hits": 2}


class Revised(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    version: int = Field(0, alias="rev")  # stored under its JSON name
    note: str = ""


async def test_an_aliased_version_field_is_checked_under_its_json_name(
    make_repo: Callable[[type[Any]], Any],
) -> None:
    repo = await make_repo(Revised)
    item = Revised(id="r")
    await repo.save(item)
    await repo.save(item)  # the stored version is found, so saving again just works
    assert item.version == 2
    with pytest.raises(ConflictError):
        await repo.save(Revised(id="r", rev=1))
    assert (await repo.get("r")).version == 2
