"""Run code as a user who may read a store but not write it.

As root (as on CI), the code runs as ``nobody`` through ``setpriv``, on a store shared the way
a colleague's store is: folders 0755, files 0644, owned by someone else. As any other user,
the store is made read-only with chmod and the code runs as that user. Either way, only a
fresh process sees the store as its reader would.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import symphony_nb

_AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


# What ``import symphony_nb`` needs, copied beside it (the environment may be private too).
_READER_NEEDS = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
    "orjson",
    "cryptography",  # imported when a Keyring is built (secret fields)
    "_cffi_backend",
)


@functools.cache
def _import_root() -> str:
    """A folder the reader can import symphony_nb from.

    The checkout may sit in a folder only we may enter (a ``mktemp -d`` clone), so as root the
    package and what it imports are copied once into a folder anyone may read.
    """
    package = Path(symphony_nb.__file__).resolve().parent
    if os.geteuid() != 0:
        return str(package.parent)
    root = Path(tempfile.mkdtemp(prefix="symphony-package-"))
    atexit.register(shutil.rmtree, root, True)
    for name in ("symphony_nb", *_READER_NEEDS):
        module = importlib.import_module(name)
        source = Path(module.__file__ or "").resolve()
        if source.name == "__init__.py":
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(source.parent, root / name, ignore=ignore)
        else:
            shutil.copy2(source, root / source.name)
    share_for_reading(root)
    return str(root)


def _prefix() -> list[str]:
    return _AS_NOBODY if os.geteuid() == 0 else []


@contextlib.contextmanager
def shared_folder() -> Iterator[Path]:
    """A fresh folder that another user can enter (pytest's tmp_path is private to us)."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot run code as an unprivileged user")
    path = Path(tempfile.mkdtemp(prefix="symphony-shared-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for folder, _, _ in os.walk(path):
            os.chmod(folder, 0o755)  # written back, so that we can remove what is inside
        shutil.rmtree(path)


def share_for_reading(path: Path) -> None:
    """Let others read ``path`` (a file or a folder tree) but not write it."""
    for folder, _, files in os.walk(path):
        os.chmod(folder, 0o755 if os.geteuid() == 0 else 0o555)
        for name in files:
            target = os.path.join(folder, name)
            if not os.path.islink(target):
                os.chmod(target, 0o644 if os.geteuid() == 0 else 0o444)
    if path.is_file():
        path.chmod(0o644 if os.geteuid() == 0 else 0o444)


def writable_by_reader(path: Path) -> bool:
    """Whether the reader could write ``path`` after all (then the test proves nothing)."""
    mode = path.stat().st_mode
    if os.geteuid() == 0:
        return bool(mode & stat.S_IWOTH)
    return bool(mode & stat.S_IWUSR)


def may_write_as_owner() -> bool:
    """Whether this process can still write what it shared (only root: others chmod a-w)."""
    return os.geteuid() == 0


@contextlib.contextmanager
def reader_process(code: str, cwd: Path) -> Iterator[Callable[[], Any]]:
    """Start ``code`` as the reader, to be asked again and again.

    ``code`` must print one JSON line for each line it reads on stdin; the function yielded
    sends a line and returns the JSON that comes back.
    """
    process = subprocess.Popen(
        [*_prefix(), sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": _import_root(), "HOME": str(cwd)},
    )
    assert process.stdin is not None and process.stdout is not None

    def ask() -> Any:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("again\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if not line:
            process.wait(10)
            raise AssertionError(f"reader failed:\n{process.stderr.read()}")  # type: ignore[union-attr]
        return json.loads(line)

    try:
        yield ask
    finally:
        process.stdin.close()
        try:
            process.wait(30)
        finally:
            process.stdout.close()
            process.stderr.close()  # type: ignore[union-attr]


def run_as_reader(code: str, cwd: Path) -> Any:
    """Run ``code`` in a new interpreter as the reader; return the JSON it prints last."""
    result = subprocess.run(
        [*_prefix(), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": _import_root(), "HOME": str(cwd)},
        check=False,
    )
    if result.returncode != 0:
        if "setpriv" in result.stderr and not result.stdout:
            pytest.skip(f"cannot run code as nobody here: {result.stderr.strip()}")
        raise AssertionError(f"reader failed ({result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])
