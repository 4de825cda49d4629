from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from symphony_nb import Repository, ServiceRegistry, Task
from tests.backends import BACKENDS, BackendUnavailable


@pytest.fixture(autouse=True)
def _fresh_registry() -> Any:
    ServiceRegistry.get_instance().reset()
    yield
    ServiceRegistry.get_instance().reset()


@pytest.fixture(params=sorted(BACKENDS))
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_repo(backend_name: str, tmp_path: Path) -> AsyncIterator[Callable[[type[Any]], Any]]:
    """``await make_repo(Model)``: a fresh repository of the current backend."""
    import contextlib

    stack = contextlib.AsyncExitStack()
    factory = BACKENDS[backend_name]

    async def make(model: type[Any]) -> Repository[Any]:
        try:
            return await stack.enter_async_context(factory(model, tmp_path))
        except BackendUnavailable as exc:
            pytest.skip(f"{backend_name} backend unavailable: {exc}")

    async with stack:
        yield make


@pytest.fixture
async def repo(make_repo: Callable[[type[Any]], Any]) -> Repository[Task]:
    """A fresh Task repository of the current backend."""
    return await make_repo(Task)  # type: ignore[no-any-return]


_REQUIRED = {
    "SYMPHONY_NB_REQUIRE_POSTGRES": "postgres",
    "SYMPHONY_NB_REQUIRE_BROWSER": "browser",
    "SYMPHONY_NB_REQUIRE_STRACE": "strace",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Where CI requires a service, a skip for its absence is a failure."""
    import os

    outcome = yield
    report = outcome.get_result()
    if not report.skipped:
        return
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
    for variable, word in _REQUIRED.items():
        if os.environ.get(variable) == "1" and word in reason.lower():
            report.outcome = "failed"
            report.longrepr = f"{variable}=1 but the test was skipped: {reason}"
