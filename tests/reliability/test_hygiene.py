"""After close() nothing of ours is left; a script that closes nothing still exits at once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.backends import having, store_url
from tests.reliability._procs import run, start
from tests.reliability.conftest import Figures

# Backends a subprocess opens by URL.
BY_URL = having("url")
EXIT_LIMIT = 1.0


@pytest.mark.parametrize("cache", [False, True], ids=["", "cached"])
@pytest.mark.parametrize("mode", ["async", "sync"])
@pytest.mark.parametrize("backend", BY_URL)
async def test_close_releases_threads_files_and_connections(
    backend: str, mode: str, cache: bool, tmp_path: Path, figures: Figures
) -> None:
    async with store_url(backend, tmp_path) as url:
        done = run("_hygiene", mode, url, str(tmp_path), *(["cache"] if cache else []))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    after_close, after_loop = dict(report), report.pop("after_exit_of_loop")
    after_close.pop("after_exit_of_loop")
    # The sync facades' loop thread (and its asyncio workers) serve every repository for the
    # life of the process by design; anything else is a leak.
    stray = [
        name
        for name in after_close["threads"]
        if name != "symphony_nb-loop" and not name.startswith("asyncio_")
    ]
    figures.record(
        f"resources after close() ({mode} face{', read cache on' if cache else ''})",
        backend,
        5 if mode == "sync" else 1,
        detail=f"stray threads {len(stray)}, open store files {len(after_close['files'])}, "
        f"PostgreSQL sockets {after_close['sockets']}",
    )
    assert stray == []
    assert after_close["files"] == [] and after_close["sockets"] == 0
    if mode == "async":
        assert after_loop == {"threads": [], "files": [], "sockets": 0}


@pytest.mark.parametrize("cache", [False, True], ids=["", "cached"])
@pytest.mark.parametrize("backend", BY_URL)
async def test_script_that_never_closes_exits_promptly(
    backend: str, cache: bool, tmp_path: Path, figures: Figures
) -> None:
    async with store_url(backend, tmp_path) as url:
        with start("_hygiene", "leak", url, str(tmp_path), *(["cache"] if cache else [])) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "done\n", proc.communicate()[1]
            finished = time.monotonic()
            _, errors = proc.communicate(timeout=30)
            took = time.monotonic() - finished
    figures.record(
        f"unclosed repositories{', read cache on' if cache else ''}: interpreter exit time",
        backend,
        1,
        detail=f"exit took {took:.2f} s after the script's last line (limit {EXIT_LIMIT} s)",
    )
    assert proc.returncode == 0, errors
    assert "Traceback" not in errors, errors
    assert took < EXIT_LIMIT
