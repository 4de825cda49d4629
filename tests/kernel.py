"""A real IPython kernel for tests, driven through jupyter_client the way a frontend does.

``Kernel`` starts a kernel of this interpreter in a scratch folder (no history, no files
outside it), sends cells one at a time or all at once ("Run All": every execute_request is
queued before any reply is read), clicks widgets through their comm, interrupts, and shuts
everything down so no process, socket or file is left behind.
"""

from __future__ import annotations

import contextlib
import os
import queue
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.manager import KernelManager


@dataclass
class Reply:
    """What one executed cell produced."""

    status: str = "pending"
    """``ok``, ``error`` or ``aborted`` once the execute_reply came."""
    stdout: str = ""
    stderr: str = ""
    results: list[str] = field(default_factory=list)
    """The ``text/plain`` of execute_result and display_data outputs."""
    ename: str = ""
    evalue: str = ""
    traceback: str = ""
    idle: bool = False

    @property
    def done(self) -> bool:
        """The reply came and the kernel went idle for this cell (all output is in)."""
        return self.status != "pending" and self.idle

    def describe(self) -> str:
        """A readable summary for assertion messages."""
        return (
            f"status={self.status} {self.ename}: {self.evalue}\n{self.traceback}\n"
            f"stdout={self.stdout!r}\nstderr={self.stderr!r}"
        )


class KernelError(AssertionError):
    """A cell failed or the kernel did not answer in time."""


class Kernel:
    """One running kernel; use as a context manager or call :meth:`stop`."""

    def __init__(
        self, cwd: Path, env: Mapping[str, str] | None = None, scratch: Path | None = None
    ) -> None:
        """Start a kernel in ``cwd``; its own files go to ``scratch`` (default ``cwd/.kernel``)."""
        scratch = scratch or cwd / ".kernel"
        scratch.mkdir(parents=True, exist_ok=True)
        kernel_env = {
            **os.environ,
            "IPYTHONDIR": str(scratch / "ipython"),
            "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"),
            "MPLBACKEND": "agg",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            **(env or {}),
        }
        # IPC sockets in the scratch folder: nothing listens on the network.
        self.manager = KernelManager(
            kernel_name="python3", transport="ipc", ip=str(scratch / "ipc")
        )
        self.manager.connection_file = str(scratch / "connection.json")
        self.manager.start_kernel(
            cwd=str(cwd),
            env=kernel_env,
            extra_arguments=["--HistoryManager.enabled=False", "--colors=NoColor"],
        )
        self.client = self.manager.blocking_client()
        self.client.start_channels()
        self.replies: dict[str, Reply] = {}
        try:
            self.client.wait_for_ready(timeout=60)
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Shut the kernel down and release every socket and file it used."""
        self.client.stop_channels()
        if self.manager.has_kernel:
            self.manager.shutdown_kernel(now=True)
        self.manager.cleanup_resources()

    # ------------------------------------------------------------------ sending

    def submit(self, code: str) -> str:
        """Queue ``code`` for execution without waiting; return the request's id."""
        msg_id: str = self.client.execute(code, store_history=False, allow_stdin=False)
        self.replies[msg_id] = Reply()
        return msg_id

    def run(self, code: str, timeout: float = 60) -> Reply:
        """Execute one cell; raise :class:`KernelError` unless it ends ``ok``."""
        reply = self.wait(self.submit(code), timeout)
        if reply.status != "ok":
            raise KernelError(f"cell failed:\n{code}\n{reply.describe()}")
        return reply

    def run_all(self, cells: Sequence[str], timeout: float = 120) -> list[Reply]:
        """Queue every cell at once, as JupyterLab's Run All does, then collect each reply."""
        ids = [self.submit(code) for code in cells]
        deadline = time.monotonic() + timeout
        return [self.wait(msg_id, max(deadline - time.monotonic(), 0.1)) for msg_id in ids]

    def interrupt(self) -> None:
        """Interrupt the kernel (SIGINT), as the frontend's stop button does."""
        self.manager.interrupt_kernel()

    def click(self, comm_id: str) -> None:
        """Click an ipywidgets Button through its comm, as the browser does."""
        data = {"method": "custom", "content": {"event": "click"}}
        msg = self.client.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.client.shell_channel.send(msg)

    def complete(self, code: str, timeout: float = 30) -> list[str]:
        """Tab-completion matches at the end of ``code``."""
        msg_id = self.client.complete(code, len(code))
        return list(self._shell_reply(msg_id, timeout)["content"]["matches"])

    def inspect(self, code: str, timeout: float = 30) -> str:
        """What ``code?`` shows (help text) for the name at the end of ``code``."""
        msg_id = self.client.inspect(code, len(code), detail_level=0)
        content = self._shell_reply(msg_id, timeout)["content"]
        return str(content.get("data", {}).get("text/plain", ""))

    # ------------------------------------------------------------------ receiving

    def wait(self, msg_id: str, timeout: float = 60) -> Reply:
        """Pump messages until cell ``msg_id`` has replied and gone idle."""
        reply = self.replies[msg_id]
        self._pump_until(lambda: reply.done, timeout, f"cell {msg_id}")
        return reply

    def wait_for_output(self, msg_id: str, text: str, timeout: float = 60) -> Reply:
        """Pump messages until cell ``msg_id`` has printed ``text`` (it may still be running)."""
        reply = self.replies[msg_id]
        self._pump_until(lambda: text in reply.stdout or reply.done, timeout, repr(text))
        if text not in reply.stdout:
            raise KernelError(f"cell ended without printing {text!r}:\n{reply.describe()}")
        return reply

    def _pump_until(self, condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                pending = {key: r.status for key, r in self.replies.items() if not r.done}
                raise KernelError(f"timed out after {timeout:.0f} s waiting for {what}: {pending}")
            self.pump(min(left, 0.2))

    def pump(self, timeout: float) -> None:
        """Route the messages that arrive within ``timeout`` seconds to their cells."""
        channels = (self.client.iopub_channel, self.client.shell_channel)
        poller = zmq.Poller()
        for channel in channels:
            poller.register(channel.socket, zmq.POLLIN)
        ready = dict(poller.poll(int(timeout * 1000)))
        for channel in channels:
            if channel.socket in ready:
                with contextlib.suppress(queue.Empty):
                    self._route(channel.get_msg(timeout=0))

    def _route(self, msg: dict[str, Any]) -> None:
        reply = self.replies.get(msg.get("parent_header", {}).get("msg_id", ""))
        if reply is None:
            return
        kind, content = msg["msg_type"], msg["content"]
        if kind == "execute_reply":
            reply.status = content["status"]
            if content["status"] == "error":
                reply.ename, reply.evalue = content["ename"], content["evalue"]
                reply.traceback = "\n".join(content["traceback"])
        elif kind == "stream":
            if content["name"] == "stdout":
                reply.stdout += content["text"]
            else:
                reply.stderr += content["text"]
        elif kind in ("execute_result", "display_data"):
            reply.results.append(str(content["data"].get("text/plain", "")))
        elif kind == "error" and not reply.ename:
            reply.ename, reply.evalue = content["ename"], content["evalue"]
        elif kind == "status" and content["execution_state"] == "idle":
            reply.idle = True

    def _shell_reply(self, msg_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg: dict[str, Any] = self.client.shell_channel.get_msg(timeout=0.2)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg
            self._route(msg)
        raise KernelError(f"no reply to {msg_id} within {timeout} s")


@contextlib.contextmanager
def kernel(
    cwd: Path, env: Mapping[str, str] | None = None, scratch: Path | None = None
) -> Iterator[Kernel]:
    """A started :class:`Kernel` in ``cwd``, stopped on exit."""
    started = Kernel(cwd, env, scratch)
    try:
        yield started
    finally:
        started.stop()


def notebook_cells(path: Path) -> list[str]:
    """The source of every code cell of the notebook at ``path``, in order."""
    import nbformat

    book = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    return [cell.source for cell in book.cells if cell.cell_type == "code"]
