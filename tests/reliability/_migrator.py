"""Crash-test migrator and editor for the schema-evolution tests.

``python -m tests.reliability._migrator migrate URL BATCH`` prints ``ready`` and migrates the
``Card`` store at URL in batches of BATCH, printing ``done <upgraded>`` at the end.
``... edit URL N SEED`` prints ``ready``, waits for a line on stdin, then adds 1 to
``data["count"]`` of N random cards by read-modify-write (retrying on ConflictError) and
prints one JSON line ``{"edits": {id: times}, "retries": ..., "errors": [...]}``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from symphony_nb import ConflictError, open_repository
from tests.reliability._schema_models import Card


async def migrate(url: str, batch: int) -> None:
    async with open_repository(Card, url) as repo:
        print("ready", flush=True)
        report = await repo.migrate(batch_size=batch, progress=False)
        print(f"done {report.upgraded}", flush=True)


async def edit(url: str, times: int, seed: int) -> dict[str, object]:
    print("ready", flush=True)
    sys.stdin.readline()
    rng = random.Random(seed)
    edits: dict[str, int] = {}
    retries = 0
    errors: list[str] = []
    async with open_repository(Card, url) as repo:
        ids = sorted(card.id for card in await repo.find_all())
        try:
            for _ in range(times):
                entity_id = rng.choice(ids)
                while True:
                    card = await repo.get(entity_id)
                    card.data["count"] = card.data.get("count", 0) + 1
                    try:
                        await repo.save(card)
                    except ConflictError:
                        retries += 1
                    else:
                        break
                edits[entity_id] = edits.get(entity_id, 0) + 1
        except Exception as exc:  # reported to the test, which fails on any
            errors.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
    return {"edits": edits, "retries": retries, "errors": errors}


if __name__ == "__main__":
    if sys.argv[1] == "migrate":
        asyncio.run(migrate(sys.argv[2], int(sys.argv[3])))
    else:
        result = asyncio.run(edit(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        print(json.dumps(result), flush=True)
