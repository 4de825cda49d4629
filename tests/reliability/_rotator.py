"""Crash-test rotator: rotate the keys of a store of AgentConfigs until killed or done.

Usage: ``python -m tests.reliability._rotator URL BATCH`` with ``SYMPHONY_NB_KEYS`` naming the
keys, the new primary first. It prints ``batch <seen> <rewritten>`` after every batch written
and ``done <rewritten>`` at the end, flushing each line.
"""

from __future__ import annotations

import asyncio
import sys

from symphony_nb import AgentConfig, open_repository
from symphony_nb._encryption import secret_layer


async def main(url: str, batch_size: int) -> None:
    repo = open_repository(AgentConfig, url)
    layer = secret_layer(repo.store)
    assert layer is not None
    out = sys.stdout

    def report(seen: int, rewritten: int) -> None:
        out.write(f"batch {seen} {rewritten}\n")
        out.flush()

    rewritten = await layer.rotate(batch_size=batch_size, on_batch=report)
    out.write(f"done {rewritten}\n")
    out.flush()
    await repo.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
