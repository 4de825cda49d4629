"""A language model for worker processes that counts its own runs.

``--llm tests.reliability._counting:model``: each call appends its query and the worker's
pid as one line to ``$SYMPHONY_NB_RUNS_FILE`` (one short ``O_APPEND`` write, so lines from
many processes never mix, and a line survives the process being killed right after), then
waits ``$SYMPHONY_NB_AGENT_DELAY`` seconds (default 0) and answers.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RUNS_FILE = "SYMPHONY_NB_RUNS_FILE"
DELAY = "SYMPHONY_NB_AGENT_DELAY"


async def model(messages: list[dict[str, str]], settings: Mapping[str, Any]) -> str:
    """Record this run, wait the configured delay, answer."""
    query = messages[-1]["content"]
    line = f"{query} {os.getpid()}\n".encode()
    fd = os.open(os.environ[RUNS_FILE], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    await asyncio.sleep(float(os.environ.get(DELAY, "0")))
    return f"ran {query}"


def runs(path: Path) -> Counter[str]:
    """How many times each query was run, from the runs file at ``path``."""
    if not path.exists():
        return Counter()
    return Counter(line.split(" ", 1)[0] for line in path.read_text().splitlines() if line)
