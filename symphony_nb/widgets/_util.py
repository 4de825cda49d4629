"""Small helpers shared by the widgets: status messages and callbacks that never raise."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any, Literal

import ipywidgets as widgets

Kind = Literal["info", "ok", "error"]
_COLOURS: dict[Kind, str] = {"info": "#555", "ok": "#1a7f37", "error": "#b3261e"}


def message(kind: Kind, text: str) -> str:
    """``text`` as escaped HTML in the colour of ``kind``."""
    return f'<span style="color:{_COLOURS[kind]}">{html.escape(text)}</span>'


def show(target: widgets.HTML, kind: Kind, text: str) -> None:
    """Put a message into an HTML widget."""
    target.value = message(kind, text)


def guarded(action: Callable[[], Any], status: widgets.HTML) -> Callable[..., None]:
    """A widget callback that runs ``action()`` and shows any error in ``status``.

    An exception raised in a callback would vanish into the kernel log, leaving a widget
    that silently did nothing; here it becomes a visible message instead.
    """

    def call(*_: Any) -> None:
        try:
            action()
        except Exception as exc:
            show(status, "error", f"{type(exc).__name__}: {exc}")

    return call


def hide(widget: widgets.Widget, hidden: bool = True) -> None:
    """Hide (or show again) a widget."""
    widget.layout.display = "none" if hidden else None


def close_tree(root: widgets.Widget) -> None:
    """Close every widget below ``root`` (a Box's ``close`` leaves its children open)."""
    for child in getattr(root, "children", ()):
        close_tree(child)
        child.close()
