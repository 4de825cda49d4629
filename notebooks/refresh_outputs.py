"""Re-run the example notebooks and store their outputs, ready to commit.

    .venv/bin/python notebooks/refresh_outputs.py [NAME.ipynb ...]

CI compares these stored outputs with a fresh run (nbval, uuids and timestamps sanitised by
``sanitize.cfg``). Widget state (``metadata.widgets``) and run timings are stripped: they
change on every run and would only make diffs noisy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def strip(book: nbformat.NotebookNode) -> None:
    """Remove widget state and per-run metadata from ``book`` in place."""
    book.metadata.pop("widgets", None)
    for cell in book.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            output.get("metadata", {}).pop("execution", None)


def refresh(path: Path) -> None:
    """Execute the notebook at ``path`` in its folder and write it back with its outputs."""
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(
        book,
        timeout=300,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    strip(book)
    nbformat.write(book, path)


def main(names: list[str]) -> None:
    """Refresh the named notebooks, or all of them."""
    paths = [HERE / name for name in names] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        print(f"running {path.name}", flush=True)
        refresh(path)


if __name__ == "__main__":
    main(sys.argv[1:])
