"""Every example notebook under "Run All": all cells queued at once in a real kernel.

nbval (configured in pyproject) runs the notebooks cell by cell and compares outputs; it
waits for each reply before sending the next cell, so it cannot see a hang that only happens
when cells are queued, which is what JupyterLab's Run All does. This test does that, in both
sync modes, and checks the notebooks leave no files behind and are committed clean.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tests.kernel import Kernel, notebook_cells

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
NESTED = "from symphony_nb import set_sync_mode\nset_sync_mode('nested')"


def test_the_example_notebooks_are_there() -> None:
    expected = {
        "01_quickstart",
        "02_persistence",
        "03_forms",
        "04_dataframes",
        "05_explorer",
        "06_schema_evolution",
        "07_history",
        "08_secrets",
        "09_workers",
    }
    assert {f"{name}.ipynb" for name in expected} <= set(NAMES)


@pytest.mark.parametrize("mode", ["thread", "nested"])
@pytest.mark.parametrize("name", NAMES)
def test_run_all(name: str, mode: str, tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    before = sorted(NOTEBOOKS.rglob("*"))
    cells = notebook_cells(NOTEBOOKS / name)
    if mode == "nested":
        cells = [NESTED, *cells]
    env = {"TMPDIR": str(temp), "SYMPHONY_NB_URL": ""}
    with Kernel(NOTEBOOKS, env, scratch=tmp_path / "kernel") as kernel:
        replies = kernel.run_all(cells, timeout=300)
    failed = [
        f"cell {i}:\n{cells[i]}\n{reply.describe()}"
        for i, reply in enumerate(replies)
        if reply.status != "ok"
    ]
    assert not failed, "\n\n".join(failed)
    assert sorted(NOTEBOOKS.rglob("*")) == before, "the notebook wrote next to itself"
    assert list(temp.iterdir()) == [], "the notebook left temporary files"


@pytest.mark.parametrize("name", NAMES)
def test_committed_clean(name: str) -> None:
    """Stored outputs come from one clean run, without widget state or errors."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]
    assert "widgets" not in book.metadata
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    for cell in code:
        assert "execution" not in cell.metadata
        assert all(output.output_type != "error" for output in cell.outputs), cell.source
