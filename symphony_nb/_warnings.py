"""Warnings that point at the caller's line, also through the sync facades.

A warning issued deep inside the package (say, for a corrupt entity skipped by
``find_all``) should point at the line of user code that made the call. With ``await`` that
is the first frame outside the package. Through a sync facade the work runs on another
thread (or inside the event loop's machinery), where no user frame exists: there the warning
is kept and issued again by the facade, in the calling thread, once the call returns.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_Pending = list[tuple[str, type[Warning]]]
_deferred: contextvars.ContextVar[_Pending | None] = contextvars.ContextVar(
    "symphony_nb_deferred_warnings", default=None
)


def warn_caller(message: str, category: type[Warning]) -> None:
    """Issue ``message`` as ``category``, pointing at the first frame outside symphony_nb."""
    pending = _deferred.get()
    if pending is not None:
        pending.append((message, category))
        return
    level = 2  # the frame that called warn_caller
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


class WarningsToCaller:
    """Hold back what ``warn_caller`` issues in the block; issue it from this thread on leaving.

    Held back are the warnings of this context and of tasks started from it, on any thread.
    """

    # A class, not @contextmanager: contextlib's frames would stand between the warning
    # and the caller's line.

    def __enter__(self) -> None:
        self._pending: _Pending = []
        self._token = _deferred.set(self._pending)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        _deferred.reset(self._token)
        for message, category in self._pending:
            if exc_type is None:
                warn_caller(message, category)
            else:
                with contextlib.suppress(Warning):  # a warning made an error must not hide it
                    warn_caller(message, category)
