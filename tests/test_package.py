"""How the package is put together: what importing it loads, and which way imports go."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "symphony_nb"
HEAVY = ("pandas", "numpy", "ipywidgets", "IPython", "matplotlib")
# The two calls that reach from the core into the notebook layer, imported on first use so
# that they stay where users look for them: repo.to_dataframe() and registry.explore().
NOTEBOOK_DOORS = {
    ("symphony_nb._repository", "symphony_nb.dataframes"),
    ("symphony_nb.services.registry", "symphony_nb.widgets"),
}


def test_import_loads_no_notebook_library() -> None:
    code = (
        "import sys, symphony_nb\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
        "symphony_nb.to_dataframe\n"  # the pandas face is one attribute away
        "print('pandas' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split("\n")[:2] == ["[]", "True"], result.stdout + result.stderr


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """Package modules ``path`` imports at import time, and inside functions."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top: set[str] = set()
    later: set[str] = set()

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            names: list[str] = []
            if isinstance(child, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - child.level + 1]
                parts = [*base, *([child.module] if child.module else [])]
                origin = ".".join(parts if child.level else [child.module or ""])
                names = [origin, *(f"{origin}.{alias.name}" for alias in child.names)]
            elif isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            (later if nested else top).update(
                name for name in names if name.startswith("symphony_nb.")
            )
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return top, later


def _graph(lazy: bool) -> dict[str, set[str]]:
    modules = {_module(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        top, later = _imports(path)
        edges = top | later if lazy else top
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles() -> None:
    assert _cycle(_graph(lazy=False)) is None
    graph = _graph(lazy=True)
    for source, target in NOTEBOOK_DOORS:
        assert any(t == target or t.startswith(target + ".") for t in graph[source])
        graph[source] = {t for t in graph[source] if not t.startswith(target)}
    assert _cycle(graph) is None


def test_the_core_reaches_the_notebook_layer_only_through_its_two_doors() -> None:
    notebook = (
        "symphony_nb.dataframes",
        "symphony_nb._frames",
        "symphony_nb.charts",
        "symphony_nb.widgets",
    )
    for module, targets in _graph(lazy=True).items():
        if module == "symphony_nb" or module.startswith(notebook):
            continue
        for target in targets:
            door = next((t for t in notebook if target.startswith(t)), None)
            assert door is None or (module, door) in NOTEBOOK_DOORS, (module, target)


def test_no_backend_imports_the_sync_face() -> None:
    for path in (PACKAGE / "backends").glob("*.py"):
        top, later = _imports(path)
        assert not any(m.startswith("symphony_nb._sync") for m in top | later), path.name


def test_every_error_lives_in_the_one_tree() -> None:
    import importlib

    import symphony_nb
    from symphony_nb import _errors

    defined = {
        name
        for name, value in vars(_errors).items()
        if isinstance(value, type)
        and issubclass(value, Exception | Warning)
        and value.__module__ == _errors.__name__
    }
    assert defined <= set(symphony_nb.__all__), defined - set(symphony_nb.__all__)
    for path in PACKAGE.rglob("*.py"):
        module = importlib.import_module(_module(path))
        for value in vars(module).values():
            ours = isinstance(value, type) and value.__module__.startswith("symphony_nb")
            if ours and issubclass(value, symphony_nb.SymphonyError | Warning):
                assert value.__module__ == _errors.__name__, value
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "SymphonyError":
                raise AssertionError(f"{path.name}:{node.lineno} raises a bare SymphonyError")
