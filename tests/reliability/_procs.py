"""Start the helper scripts of this package as subprocesses of the test interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def command(module: str, *args: str) -> list[str]:
    """The command line that runs ``tests.reliability.<module>`` with ``args``."""
    return [sys.executable, "-m", f"tests.reliability.{module}", *args]


def environment() -> dict[str, str]:
    """The environment of a helper: this one, with the repo importable and output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start(
    module: str, *args: str, prefix: tuple[str, ...] = (), stdin: int = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """Start a helper with piped text stdout/stderr; the caller waits for it and closes pipes."""
    return subprocess.Popen(
        [*prefix, *command(module, *args)],
        cwd=ROOT,
        env=environment(),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(
    module: str, *args: str, timeout: float = 60, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run a helper to completion and return its outcome."""
    return subprocess.run(
        [*prefix, *command(module, *args)],
        cwd=ROOT,
        env=environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
