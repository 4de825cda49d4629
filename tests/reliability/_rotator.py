"""Crash-test rotator: rotate the keys of a store of AgentConfigs until killed or done.

Usage: ``python -m tests.reliability._rotator URL BATCH [HISTORY]`` with ``SYMPHONY_NB_KEYS``
naming the keys, the new primary first (``HISTORY``: the ``history=`` to open with, keeping
that many revisions). It prints ``batch <seen> <rewritten>`` after every batch written,
``revisions <seen> <rewritten>`` after every page of revisions, and ``done <rewritten>`` at the
end, flushing each line.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from symphony_nb import AgentConfig, open_repository
from symphony_nb._encryption import secret_layer


async def main(url: str, batch_size: int, history: int | None) -> None:
    repo = open_repository(AgentConfig, url, history=history)
    layer = secret_layer(repo.store)
    assert layer is not None
    out = sys.stdout

    def reporting(what: str) -> Callable[[int, int], None]:
        def report(seen: int, rewritten: int) -> None:
            out.write(f"{what} {seen} {rewritten}\n")
            out.flush()

        return report

    rewritten = await layer.rotate(
        batch_size=batch_size, on_batch=reporting("batch"), on_revisions=reporting("revisions")
    )
    out.write(f"done {rewritten}\n")
    out.flush()
    await repo.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if sys.argv[3:] else None))
