"""Stored data is only ever parsed as JSON: no pickle, marshal, eval or exec in the package."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.reliability.conftest import Figures

PACKAGE = Path(__file__).resolve().parents[2] / "symphony_nb"
UNSAFE_MODULES = {"pickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
UNSAFE_METHODS = {"read_pickle", "to_pickle", "unsafe_load", "load_module"}


def _is_unsafe(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] in UNSAFE_MODULES for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] in UNSAFE_MODULES
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            return func.id in UNSAFE_CALLS
        if isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else ""
            return func.attr in UNSAFE_METHODS or (owner == "yaml" and func.attr == "load")
    return False


def findings(source: str, name: str) -> list[str]:
    """``name:line code`` of every unsafe import or call in ``source``."""
    return [
        f"{name}:{node.lineno} {ast.unparse(node)}"
        for node in ast.walk(ast.parse(source, filename=name))
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Call) and _is_unsafe(node)
    ]


def test_package_never_unpickles_or_evaluates(figures: Figures) -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    found = [
        finding
        for path in files
        for finding in findings(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE)))
    ]
    figures.record(
        "no pickle / marshal / eval / exec in the package",
        "all",
        len(files),
        detail=f"AST scan of {len(files)} modules: {len(found)} findings",
    )
    assert found == []


def test_the_scan_notices_each_unsafe_form() -> None:
    source = (
        "import pickle\nfrom marshal import loads\nx = eval('1')\nexec('y = 2')\n"
        "pd.read_pickle(p)\nyaml.load(s)\n__import__('os')\n"
        "import json\njson.loads(s)\nast.literal_eval(s)\nconn.execute(sql)\n"
    )
    assert len(findings(source, "probe.py")) == 7
