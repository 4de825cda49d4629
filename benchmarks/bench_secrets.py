"""The cost of secrets encrypted at rest, on SQLite and PostgreSQL, in one process.

Run: ``.venv/bin/python benchmarks/bench_secrets.py [--n 2000] [--dsn postgresql://...]``.
``save`` and ``find_by_id`` of an AgentConfig with two secrets (sealed with AES-256-GCM by the
SecretLayer) against the same config without secrets in the same kind of repository; and
``rotate_keys`` of N such configs against ``save_many`` of the same N. Samples are
interleaved, so load changes hit both sides alike. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import Row, print_table

from symphony_nb import AgentConfig, Keyring, PostgresRepository, Repository, SQLiteRepository
from symphony_nb._encryption import secret_layer

DEFAULT_DSN = os.environ.get(
    "SYMPHONY_NB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
KEYS = {"k1": Keyring.generate(), "k0": Keyring.generate()}
KEYRING = Keyring(KEYS, primary="k1")


def configs(n: int, secrets: bool, prefix: str) -> list[AgentConfig]:
    return [
        AgentConfig(
            id=f"{prefix}{i:06d}",
            name=f"agent {i}",
            role="researcher",
            description="Finds and summarises sources on a topic.",
            instruction_template="You are {name}, a {role}. {description}",
            model_config={"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 1024},
            metadata={"team": "research", "owner": "ana"},
            secrets=(
                {"api_key": f"sk-proj-{uuid.uuid4().hex}{uuid.uuid4().hex}", "org": "org-1234567"}
                if secrets
                else {}
            ),
        )
        for i in range(n)
    ]


async def per_op(fn: Callable[[Any], Awaitable[Any]], items: list[Any]) -> float:
    start = time.perf_counter()
    for item in items:
        await fn(item)
    return (time.perf_counter() - start) / len(items)


async def compare(sides: list[Callable[[], Awaitable[float]]], repeat: int) -> list[float]:
    samples: list[list[float]] = [[] for _ in sides]
    for _ in range(repeat):
        for side, out in zip(sides, samples, strict=True):
            gc.collect()
            out.append(await side())
    return [statistics.median(out) for out in samples]


async def bench(
    name: str, make: Callable[[str], Repository[AgentConfig]], n: int, repeat: int
) -> list[Row]:
    secret_repo, plain_repo = make("with"), make("without")
    with_secrets, without = configs(n, True, "s"), configs(n, False, "p")
    try:
        await secret_repo.save_many(with_secrets)
        await plain_repo.save_many(without)
        ids_s = [c.id for c in with_secrets]
        ids_p = [c.id for c in without]
        save_s, save_p = await compare(
            [
                lambda: per_op(secret_repo.save, with_secrets),
                lambda: per_op(plain_repo.save, without),
            ],
            repeat,
        )
        get_s, get_p = await compare(
            [
                lambda: per_op(secret_repo.find_by_id, ids_s),
                lambda: per_op(plain_repo.find_by_id, ids_p),
            ],
            repeat,
        )
        layer = secret_layer(secret_repo.store)
        assert layer is not None
        rotations: list[float] = []
        bulk: list[float] = []
        for turn in range(repeat):
            before, after = ("k0", "k1") if turn % 2 == 0 else ("k1", "k0")
            layer.keyring = Keyring(KEYS, primary=before)
            fresh = configs(n, True, f"r{turn}-")
            await secret_repo.save_many(fresh)
            layer.keyring = Keyring(KEYS, primary=after)  # the new primary: rotate to it
            gc.collect()
            start = time.perf_counter()
            rewritten = await secret_repo.rotate_keys(progress=False, batch_size=500)
            rotations.append((time.perf_counter() - start) / rewritten)
            gc.collect()
            start = time.perf_counter()
            await secret_repo.save_many(fresh)
            bulk.append((time.perf_counter() - start) / len(fresh))
            for config in fresh:
                await secret_repo.delete(config.id)
    finally:
        await secret_repo.close()
        await plain_repo.close()
    rot, sm = statistics.median(rotations), statistics.median(bulk)
    return [
        Row(f"{name} save, 2 secrets", save_s, save_p, "same config without secrets", 1.3),
        Row(f"{name} find_by_id, 2 secrets", get_s, get_p, "same config without secrets", 1.3),
        Row(f"{name} rotate_keys per entity", rot, sm, "save_many per entity"),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    args = parser.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        rows += await bench(
            "SQLite",
            lambda kind: SQLiteRepository(
                AgentConfig, Path(folder) / f"{kind}.db", keyring=KEYRING
            ),
            args.n,
            args.repeat,
        )
    schema = f"bench_secrets_{uuid.uuid4().hex[:8]}"
    try:
        rows += await bench(
            "PostgreSQL",
            lambda kind: PostgresRepository(
                AgentConfig, args.dsn, schema=f"{schema}_{kind}", keyring=KEYRING
            ),
            args.n,
            args.repeat,
        )
    finally:
        import asyncpg

        conn = await asyncpg.connect(args.dsn)
        for kind in ("with", "without"):
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_{kind}" CASCADE')
        await conn.close()
    print_table(rows, f"Secrets at rest, N = {args.n} AgentConfigs, median of {args.repeat}")


if __name__ == "__main__":
    asyncio.run(main())
