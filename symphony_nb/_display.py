"""Rich HTML display in notebooks: entities, lists of entities, repositories, the registry.

IPython calls ``_repr_html_`` on :class:`~symphony_nb._models.Entity`,
:class:`~symphony_nb.Repository` and :class:`~symphony_nb.ServiceRegistry`; each delegates
here. Two more cases need a formatter registered on the running IPython shell. IPython is
never imported for that: only a shell already running in this process is used, when this
module is imported and whenever a repository is created.

* A plain pydantic model (not an ``Entity``) gets the entity card once a repository stores
  it, unless it has its own ``_repr_html_``; other pydantic models keep their usual display.
* A ``list`` whose every element is an ``Entity`` or a stored model (what ``find_all``
  returns) shows as a table of at most :data:`MAX_ROWS` rows; any other list, and an empty
  one, keeps its normal repr (a formatter registered for lists before is still used for them).

Plain ``repr`` is unchanged. Every piece of text is escaped with :func:`html.escape`: task
outputs and names are written by language models, and HTML rendered in a notebook runs
scripts. Building a display never raises: a count that cannot be read says why, and an
unexpected failure shows the plain repr with the reason.
"""

from __future__ import annotations

import asyncio
import html
import inspect
import json
import os
import re
import sys
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from ._loopthread import in_loop_thread
from ._sync import run_sync
from ._urls import mask_url

if TYPE_CHECKING:
    from ._repository import Repository
    from .services.registry import ServiceRegistry

MAX_ROWS = 50
"""Rows shown for a list of entities; a last line says how many more there are."""
COUNT_TIMEOUT = 2.0
"""Seconds a repository's display waits for its count."""
LONG_TEXT = 200
MAX_LINES = 3
INLINE_JSON = 60
MAX_TEXT = 20_000
CELL_TEXT = 60

# Badge colours by kind (an enum class's ``__badge__``) and member value.
_COLOURS = {
    "status": {
        "pending": "#6e7781",
        "running": "#0969da",
        "completed": "#1a7f37",
        "failed": "#cf222e",
        "cancelled": "#9a6700",
    },
    "priority": {"low": "#6e7781", "medium": "#0969da", "high": "#bc4c00", "critical": "#cf222e"},
}
_GREY = "#6e7781"
# Inline styles, not a <style> block: JupyterLab strips <style> from untrusted outputs, and
# classes alone would look the same as plain text wherever no stylesheet knows them.
_BADGE = "display:inline-block;padding:0 .5em;margin-left:.4em;border-radius:1em;font-size:85%;"
_BOX = "font-family:var(--jp-ui-font-family,sans-serif);font-size:var(--jp-ui-font-size1,13px);"
_TABLE = "border-collapse:collapse;margin-top:.3em;"
_CELL = "text-align:left;vertical-align:top;padding:.15em .8em .15em 0;"
_LINE = "border-bottom:1px solid var(--jp-border-color2,#e0e0e0);"
_PRE = "margin:.2em 0;white-space:pre-wrap;max-height:24em;overflow:auto;"
_DIM = "opacity:.6;"
_NOT_CLASS = re.compile(r"[^a-z0-9_-]+")
_SCALARS = (str, int, float, datetime, Enum)

_stored: weakref.WeakSet[type[BaseModel]] = weakref.WeakSet()
_MARK = "_symphony_nb_display"


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _css(name: str) -> str:
    return _NOT_CLASS.sub("-", name.lower())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _plain_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return object.__repr__(value)


def _guarded(value: object, build: Callable[[], str]) -> str:
    try:
        return build()
    except Exception as exc:
        reason = _clip(f"{type(exc).__name__}: {exc}", 300)
        return (
            f'<pre class="snb-display-error">{_esc(_clip(_plain_repr(value), MAX_TEXT))}\n'
            f"(rich display failed: {_esc(reason)})</pre>"
        )


# ---------------------------------------------------------------------- values


def badge(value: Enum, field: str = "") -> str:
    """An enum member as a badge: statuses filled, priorities outlined, others grey.

    An enum class says which it is with ``__badge__ = "status"`` or ``"priority"``
    (``TaskStatus`` and ``TaskPriority`` do). ``field`` (the field's name) becomes the tooltip.
    """
    text = str(value.value)
    kind = getattr(type(value), "__badge__", "enum")
    if kind == "status":
        colours = f"background:{_COLOURS[kind].get(text, _GREY)};color:#fff;"
        colours += "border:1px solid transparent;"
    elif kind == "priority":
        colour = _COLOURS[kind].get(text, _GREY)
        colours = f"color:{colour};border:1px solid {colour};"
    else:
        kind, colours = "enum", "border:1px solid rgba(128,128,128,.6);"
    css = f"snb-badge snb-{kind}" + ("" if kind == "enum" else f" snb-{kind}-{_css(text)}")
    tip = f' title="{_esc(field)}"' if field else ""
    return f'<span class="{css}"{tip} style="{_BADGE}{colours}">{_esc(text)}</span>'


def timestamp(value: datetime) -> str:
    """``value`` to the second (in UTC when it has a time zone), the full value as a tooltip."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    full = value.isoformat()
    shown = value.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
    if value.tzinfo is not None:
        shown += " UTC"
    return f'<time class="snb-time" datetime="{_esc(full)}" title="{_esc(full)}">{shown}</time>'


def _details(summary: str, body: str) -> str:
    if len(body) > MAX_TEXT:
        body = f"{body[:MAX_TEXT]}\n… ({len(body) - MAX_TEXT:,} more characters not shown)"
    return (
        f'<details class="snb-more"><summary>{_esc(summary)}</summary>'
        f'<pre style="{_PRE}">{_esc(body)}</pre></details>'
    )


def _text(text: str) -> str:
    if len(text) <= LONG_TEXT and text.count("\n") < MAX_LINES:
        return f'<span class="snb-text" style="white-space:pre-wrap">{_esc(text)}</span>'
    first = text.strip().split("\n", 1)[0]
    return _details(f"{_clip(first, 80)} ({len(text):,} characters)", text)


def _json(value: Any) -> str:
    data = to_jsonable_python(value, fallback=str)  # secrets stay masked
    compact = json.dumps(data, ensure_ascii=False, default=str)
    if len(compact) <= INLINE_JSON:
        return f'<code class="snb-json">{_esc(compact)}</code>'
    pretty = json.dumps(data, ensure_ascii=False, default=str, indent=2)
    return _details(_clip(compact, 80), pretty)


def value_html(value: Any) -> str:
    """One field's value: a badge, a timestamp, text or JSON (long ones collapsed)."""
    if value is None:
        return f'<span style="{_DIM}">None</span>'
    if isinstance(value, Enum):
        return badge(value)
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, bool | int | float):
        return _esc(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset | BaseModel):
        return _json(value)
    return _text(str(value))


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | Mapping | list | tuple | set) and not value)


# ---------------------------------------------------------------------- entities


def _fields(entity: BaseModel) -> dict[str, Any]:
    values = {name: getattr(entity, name, None) for name in type(entity).model_fields}
    values.update(entity.model_extra or {})
    return values


def _tr(cells: Sequence[str]) -> str:
    return "<tr>" + "".join(f'<td style="{_CELL}{_LINE}">{c}</td>' for c in cells) + "</tr>"


def _row(name: str, cell: str) -> str:
    style = f"{_CELL}{_LINE}"
    return f'<tr><th style="{style}">{_esc(name)}</th><td style="{style}">{cell}</td></tr>'


def entity_html(entity: BaseModel) -> str:
    """An entity (any pydantic model) as an HTML card: title, badges, then every field."""
    return _guarded(entity, lambda: _card(entity))


def _card(entity: BaseModel) -> str:
    name = type(entity).__name__
    values = _fields(entity)
    title = values.get("name")
    if isinstance(title, str) and title:
        del values["name"]
    else:
        title = None
    head = f"<b>{_esc(name)}</b>"
    if title:
        head += f' <span class="snb-title" title="{_esc(_clip(title, 1000))}">'
        head += f"{_esc(_clip(title, 120))}</span>"
    head += "".join(badge(v, field) for field, v in values.items() if isinstance(v, Enum))
    rows = [
        _row(field, value_html(value))
        for field, value in values.items()
        if not isinstance(value, Enum) and not _is_empty(value)
    ]
    empty = [field for field, value in values.items() if _is_empty(value)]
    unset = f'<div style="{_DIM}">not set: {_esc(", ".join(empty))}</div>' if empty else ""
    return (
        f'<div class="snb-entity snb-{_css(name)}" style="{_BOX}">{head}'
        f'<table class="snb-fields" style="{_TABLE}">{"".join(rows)}</table>{unset}</div>'
    )


def _columns(items: Sequence[BaseModel]) -> list[str]:
    first, *others = items
    shared = [f for f in _fields(first) if all(f in type(o).model_fields for o in others)]
    columns: list[str] = [f for f in ("id", "name") if f in shared]
    columns += [f for f in shared if any(isinstance(getattr(i, f, None), Enum) for i in items)]
    for field in shared:
        if len(columns) >= 4:
            break
        value = getattr(first, field, None)
        if (
            field not in columns
            and field not in ("version", "created_at", "updated_at")
            and isinstance(value, _SCALARS)
            and not _is_empty(value)
        ):
            columns.append(field)
    return [*columns, "updated_at"] if "updated_at" in shared else columns


def _cell(field: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Enum):
        return badge(value, field)
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset | BaseModel):
        text = json.dumps(to_jsonable_python(value, fallback=str), ensure_ascii=False, default=str)
    else:
        text = str(value)
    if len(text) <= CELL_TEXT:
        return _esc(text)
    return f'<span title="{_esc(_clip(text, 1000))}">{_esc(_clip(text, CELL_TEXT))}</span>'


def entities_html(items: Sequence[BaseModel], limit: int = MAX_ROWS) -> str:
    """A table of ``items`` (pydantic models), at most ``limit`` rows, then "… and N more"."""
    return _guarded(items, lambda: _table(items, limit))


def _table(items: Sequence[BaseModel], limit: int) -> str:
    shown = list(items[:limit])
    names = list(dict.fromkeys(type(item).__name__ for item in items))
    mixed = len(names) > 1
    columns = _columns(shown) if shown else []
    head = (["model"] if mixed else []) + columns
    count = f"{len(items):,}"
    if mixed:
        caption = f"{count} entities: {', '.join(names)}"
    else:
        caption = f"{count} {names[0]}{'' if len(items) == 1 else 's'}" if items else "empty"
    rows = []
    for item in shown:
        cells = [_esc(type(item).__name__)] if mixed else []
        cells += [_cell(field, getattr(item, field, None)) for field in columns]
        rows.append(_tr(cells))
    if len(items) > len(shown):
        rows.append(
            f'<tr><td class="snb-more-rows" colspan="{len(head)}" style="{_CELL}{_DIM}">'
            f"… and {len(items) - len(shown):,} more</td></tr>"
        )
    header = "".join(f'<th style="{_CELL}{_LINE}">{_esc(h)}</th>' for h in head)
    return (
        f'<div class="snb-list" style="{_BOX}"><div class="snb-caption">{_esc(caption)}</div>'
        f'<table class="snb-table" style="{_TABLE}"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def list_html(items: list[Any]) -> str | None:
    """A table if every item is an ``Entity`` or a stored model, else None (the normal repr)."""
    models = tuple(_stored)
    if not items or not all(isinstance(item, models) for item in items):
        return None
    return entities_html(items)


# ---------------------------------------------------------------------- repositories


def location(repository: Repository[Any]) -> str:
    """Where ``repository`` keeps its data: a path, or a URL with any password masked."""
    table = getattr(repository, "table", None)
    url = getattr(repository, "url", None)  # PostgresRepository keeps it masked already
    path = getattr(repository, "path", None)
    if isinstance(url, str) and url:
        where = mask_url(url)
        schema = getattr(repository, "schema", None)
        table = f"{schema}.{table}" if schema and table else table
    elif isinstance(path, str | os.PathLike):
        where = os.fspath(path)
    else:
        return str(repository.store.describe())
    return f"{where} (table {table})" if isinstance(table, str) else where


def _unavailable(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return f"count unavailable: no answer within {COUNT_TIMEOUT} s"
    return f"count unavailable: {_clip(mask_url(f'{type(exc).__name__}: {exc}'), 300)}"


async def _count(repository: Repository[Any]) -> str:
    try:
        async with asyncio.timeout(COUNT_TIMEOUT):
            text = f"{await repository.count():,}"
            current = getattr(
                repository.model, "__schema_version__", 1
            )  # checked by the repository
            if current > 1:
                stored = await repository.schema_versions()
                older = sum(n for version, n in stored.items() if version < current)
                text += f" (schema version {current}"
                text += (
                    f"; {older:,} stored at older versions, migrate() rewrites them)"
                    if older
                    else ")"
                )
            return text
    except Exception as exc:
        return _unavailable(exc)


async def _count_all(repositories: Sequence[Repository[Any]]) -> list[str]:
    return list(await asyncio.gather(*map(_count, repositories)))


def count_texts(repositories: Sequence[Repository[Any]]) -> list[str]:
    """Each repository's number of entities, or ``"count unavailable: <reason>"``; never raises.

    The counts are read together through the sync machinery, each within
    :data:`COUNT_TIMEOUT` seconds. Code that runs on the private loop of the sync facades
    cannot wait for that loop, so there they are not even tried.
    """
    if in_loop_thread():
        reason = "count unavailable: shown from inside symphony_nb's event loop (await count())"
        return [reason] * len(repositories)
    coro = _count_all(repositories)
    try:
        return run_sync(coro, timeout=COUNT_TIMEOUT + 1)
    except Exception as exc:
        return [_unavailable(exc)] * len(repositories)
    finally:
        if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            coro.close()  # never started: close it, so it is not reported as never awaited


def _summary(repository: Repository[Any], count: str) -> list[str]:
    style = _DIM if count.startswith("count unavailable") else ""
    return [
        _esc(type(repository).__name__),
        _esc(repository.model.__name__),
        _esc(location(repository)),
        f'<span class="snb-count" style="{style}">{_esc(count)}</span>',
    ]


def repository_html(repository: Repository[Any]) -> str:
    """A repository's backend, model, location (password masked) and count of entities."""

    def build() -> str:
        labels = ("backend", "model", "location", "entities")
        (count,) = count_texts([repository])
        cells = _summary(repository, count)
        rows = "".join(_row(k, v) for k, v in zip(labels, cells, strict=True))
        kept = repository.store.kept()
        if kept is not False:
            rows += _row("history", "every revision" if kept is None else f"last {kept} revisions")
        return (
            f'<div class="snb-repository" style="{_BOX}">'
            f'<table class="snb-fields" style="{_TABLE}">{rows}</table></div>'
        )

    return _guarded(repository, build)


def registry_html(registry: ServiceRegistry) -> str:
    """The registered repositories (one row each, with their counts) and the language model."""

    def build() -> str:
        head = ("name", "backend", "model", "location", "entities")
        header = "".join(f'<th style="{_CELL}{_LINE}">{h}</th>' for h in head)
        registered = sorted(registry.repositories.items())
        counts = count_texts([repository for _, repository in registered])
        rows = [
            _tr([_esc(name), *_summary(repository, count)])
            for (name, repository), count in zip(registered, counts, strict=True)
        ]
        llm = registry.llm
        model = "offline_model (default)" if llm is None else getattr(llm, "__name__", None)
        model = model if isinstance(model, str) else _plain_repr(llm)
        body = (
            f'<table class="snb-table" style="{_TABLE}"><thead><tr>{header}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
            if rows
            else f'<div style="{_DIM}">no repositories registered</div>'
        )
        return (
            f'<div class="snb-registry" style="{_BOX}"><b>ServiceRegistry</b>{body}'
            f'<div style="{_DIM}">language model: {_esc(_clip(str(model), 200))}</div></div>'
        )

    return _guarded(registry, build)


# ---------------------------------------------------------------------- IPython formatters


def _html_formatter() -> Any:
    """The text/html formatter of the IPython shell running this process, or None."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)()
    formatter = getattr(shell, "display_formatter", None)
    return None if formatter is None else formatter.formatters.get("text/html")


def _printer_for(formatter: Any, kind: type) -> Any:
    try:
        return formatter.lookup_by_type(kind)
    except KeyError:
        return None


def _install_list_printer(formatter: Any) -> None:
    previous = _printer_for(formatter, list)
    if getattr(previous, _MARK, False):
        return

    def list_printer(items: list[Any]) -> str | None:
        shown = list_html(items)
        return previous(items) if shown is None and previous is not None else shown

    setattr(list_printer, _MARK, True)
    formatter.for_type(list, list_printer)


def register_model(model: type[BaseModel] | None = None) -> None:
    """Give ``model`` and lists of it the rich display, inside a running IPython only.

    Without ``model``, only the list formatter is registered (for lists of entities).
    """
    if model is not None:
        _stored.add(model)
    try:
        formatter = _html_formatter()
        if formatter is None:
            return
        _install_list_printer(formatter)
        if model is None or hasattr(model, "_repr_html_"):
            return  # a model's own _repr_html_ is used as it is
        if _printer_for(formatter, model) is None:
            formatter.for_type(model, entity_html)
    except Exception as exc:
        # A convenience for notebooks must never stop a repository from being created.
        warnings.warn(f"rich display not registered: {exc!r}", RuntimeWarning, stacklevel=3)


register_model()
