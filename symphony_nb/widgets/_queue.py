""":class:`QueueView`: a live view of a task queue while workers, anywhere, run it."""

from __future__ import annotations

import html
import threading
import time
from typing import Any

import ipywidgets as widgets

from .._errors import SymphonyError
from .._models import Task
from .._repository import Repository
from ..services._queue import QueueStatus
from ..services.registry import ServiceRegistry
from ..services.tasks import TaskManager
from ._util import show

_STATES = ("pending", "running", "completed", "failed", "cancelled")


class QueueView(widgets.VBox):  # type: ignore[misc]
    """Pending, running (by worker), completed, failed and cancelled tasks, and throughput.

    ``QueueView(task_manager)`` (or a Task repository; default: the registry's ``"task"``
    repository). :meth:`refresh` reads the queue once; :meth:`start` refreshes it every
    ``interval`` seconds from a background thread until :meth:`stop` (the ``live_button``
    toggles the same). ``counts`` shows each state, ``progress`` the finished share,
    ``workers`` the running tasks of each worker, ``rate`` the tasks completed per second
    (since the previous refresh, and over the last minute); errors appear in ``status``.
    """

    def __init__(
        self,
        tasks: TaskManager | Repository[Task] | None = None,
        *,
        interval: float = 1.0,
    ) -> None:
        super().__init__()
        if tasks is None:
            tasks = ServiceRegistry.get_instance().get_task_manager()
        self.manager = tasks if isinstance(tasks, TaskManager) else TaskManager(tasks)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}")
        self.interval = float(interval)
        self.last: QueueStatus | None = None
        self._last_seen: tuple[float, int] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.counts = widgets.HTML()
        self.progress = widgets.FloatProgress(min=0.0, max=1.0, description="finished")
        self.rate = widgets.HTML()
        self.workers = widgets.HTML()
        self.status = widgets.HTML()
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.live_button = widgets.ToggleButton(description="Live", icon="play", value=False)
        self.refresh_button.on_click(lambda _: self.refresh())
        self.live_button.observe(self._toggle, names="value")
        self.children = [
            widgets.HBox([self.refresh_button, self.live_button]),
            self.counts,
            self.progress,
            self.rate,
            self.workers,
            self.status,
        ]
        self.refresh()

    def refresh(self) -> QueueStatus | None:
        """Read the queue and show it; the status read, or None if it could not be read."""
        try:
            status = self.manager.sync.queue_status(timeout=max(5.0, self.interval))
        except (SymphonyError, OSError, TimeoutError) as exc:
            show(self.status, "error", f"{type(exc).__name__}: {exc}")
            return None
        self.status.value = ""
        self._show(status)
        self.last = status
        return status

    def _show(self, status: QueueStatus) -> None:
        cells = "".join(f"<td>{getattr(status, state)}</td>" for state in _STATES)
        heads = "".join(f"<th>{state}</th>" for state in _STATES)
        self.counts.value = f"<table><tr>{heads}</tr><tr>{cells}</tr></table>"
        finished = status.completed + status.failed + status.cancelled
        self.progress.value = finished / status.total if status.total else 0.0
        self.progress.description = f"{finished}/{status.total}"
        now = time.monotonic()
        recent = ""
        if self._last_seen is not None and now > self._last_seen[0]:
            done = status.completed - self._last_seen[1]
            recent = f"{max(done, 0) / (now - self._last_seen[0]):.1f} tasks/s now, "
        self._last_seen = (now, status.completed)
        self.rate.value = f"{recent}{status.throughput:.2f} tasks/s over the last minute"
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{count}</td></tr>"
            for name, count in sorted(status.running_by_worker.items())
        )
        expired = (
            f"<p>{status.expired} running task(s) whose worker stopped renewing its lease</p>"
            if status.expired
            else ""
        )
        self.workers.value = (
            f"<table><tr><th>worker</th><th>running</th></tr>{rows}</table>{expired}"
            if rows
            else "no task running"
        )

    @property
    def live(self) -> bool:
        """Whether a background thread is refreshing the view."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, interval: float | None = None) -> None:
        """Refresh every ``interval`` seconds (default: the view's) until :meth:`stop`."""
        if interval is not None:
            if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
                raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}")
            self.interval = float(interval)
        if self.live:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="symphony_nb-queue", daemon=True)
        self._thread.start()
        if not self.live_button.value:
            self.live_button.value = True

    def stop(self) -> None:
        """Stop refreshing (waits for a refresh in progress); the last state stays shown."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self.live_button.value:
            self.live_button.value = False

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            self.refresh()

    def _toggle(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.start()
        else:
            self.stop()

    def close(self) -> None:
        """Stop refreshing and close this widget and its parts."""
        self.stop()
        for child in (*self.children, *self.children[0].children):
            child.close()
        super().close()
