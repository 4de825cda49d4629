"""Which thread runs the private event loop of the sync facades.

Kept apart from the sync facades themselves so that backends can ask (a pool must not wait
for a loop that is blocked until it returns) without depending on them.
"""

from __future__ import annotations

import threading

_thread: threading.Thread | None = None


def set_loop_thread(thread: threading.Thread | None) -> None:
    """Record the thread that now runs the private loop (None: no loop)."""
    global _thread
    _thread = thread


def in_loop_thread() -> bool:
    """Whether the caller runs on the private loop of the sync facades."""
    return _thread is not None and threading.current_thread() is _thread
