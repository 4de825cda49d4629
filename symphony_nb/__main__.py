"""``python -m symphony_nb worker``: a worker process for a store's task queue.

::

    python -m symphony_nb worker --url postgresql://host/db --agent CONFIG_ID --concurrency 8

It runs :meth:`TaskManager.work` against the tasks at ``--url`` with the agent built from the
stored AgentConfig ``--agent`` (same URL), until stopped. The first SIGTERM or Ctrl-C stops
claiming and gives the running tasks ``--grace`` seconds to finish; what is still running
then (or at a second signal) is handed back as pending for other workers. The exit status
is 0 after a clean stop, 1 after an error, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from ._errors import SymphonyError
from ._models import AgentConfig, Task
from ._storage import default_url, open_repository
from .services._worker import Worker
from .services.agent import AgentFactory, LanguageModel


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m symphony_nb")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser(
        "worker", help="run a store's pending tasks until stopped (SIGTERM or Ctrl-C)"
    )
    worker.add_argument("--url", default=None, help="storage URL (default: $SYMPHONY_NB_URL)")
    worker.add_argument("--agent", required=True, help="id of the stored AgentConfig to run")
    worker.add_argument("--concurrency", type=int, default=4, help="tasks at once (default 4)")
    worker.add_argument("--lease", type=float, default=30.0, help="lease in seconds (30)")
    worker.add_argument("--renew-every", type=float, default=None, help="default: lease / 3")
    worker.add_argument("--max-attempts", type=int, default=3, help="runs per task (3)")
    worker.add_argument("--poll", type=float, default=1.0, help="idle poll, seconds (1)")
    worker.add_argument("--grace", type=float, default=10.0, help="seconds to finish at stop")
    worker.add_argument("--filter", default=None, help='JSON filter, e.g. {"tags": ...}')
    worker.add_argument("--name", default=None, help="worker name (default pid<pid>@<host>#<hex>)")
    worker.add_argument("--llm", default=None, help="language model as module:function")
    worker.add_argument("--stop-when-idle", action="store_true", help="exit when none pending")
    worker.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _language_model(spec: str | None) -> LanguageModel | None:
    if spec is None:
        return None
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"--llm must be module:function, got {spec!r}")
    model: Any = getattr(importlib.import_module(module), attr)
    if not callable(model):
        raise ValueError(f"--llm {spec!r} is not callable")
    return model  # type: ignore[no-any-return]


async def _work(args: argparse.Namespace) -> int:
    url = args.url or default_url()
    criteria = json.loads(args.filter) if args.filter else None
    if criteria is not None and not isinstance(criteria, dict):
        raise ValueError(f"--filter must be a JSON object, got {args.filter!r}")
    llm = _language_model(args.llm)
    async with open_repository(AgentConfig, url) as configs, open_repository(Task, url) as tasks:
        agent = await AgentFactory(configs, llm=llm).create_agent(args.agent)
        worker = Worker(
            tasks,
            agent,
            criteria,
            concurrency=args.concurrency,
            lease=args.lease,
            renew_every=args.renew_every,
            max_attempts=args.max_attempts,
            stop_when_idle=args.stop_when_idle,
            poll=args.poll,
            name=args.name,
            progress=False,
        )
        running = asyncio.ensure_future(worker.run())
        loop = asyncio.get_running_loop()
        signals = 0

        def stop() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                print(f"worker {worker.name}: stopping", file=sys.stderr, flush=True)
                worker.stop()
                loop.call_later(args.grace, running.cancel)
            else:
                running.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        print(f"worker {worker.name}: started on {tasks!r}", file=sys.stderr, flush=True)
        try:
            await running
        except asyncio.CancelledError:
            if signals == 0:
                raise
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    report = worker.report
    print(str(report), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(asdict(report)), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_work(args))
    except (ValueError, SymphonyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1


if __name__ == "__main__":
    sys.exit(main())
