"""The public API type-checks: wrong uses are errors (each marked ignore must be needed).

The samples in ``tests/typing`` are checked by mypy and by basedpyright (the checker behind
VS Code's Pylance, configured in ``[tool.basedpyright]`` of pyproject.toml).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "tests" / "typing").glob("*.py"))


def test_samples_type_check_with_mypy() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--warn-unused-ignores",
            "--no-incremental",
            "--follow-imports=silent",
            *map(str, SAMPLES),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_samples_type_check_with_pyright() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "basedpyright", "--pythonpath", sys.executable, "--outputjson"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    report = json.loads(result.stdout)
    problems = [
        f"{Path(d['file']).name}:{d['range']['start']['line'] + 1}: {d['message']}"
        for d in report["generalDiagnostics"]
    ]
    assert problems == [], "\n".join(problems)
    assert report["summary"]["filesAnalyzed"] == len(SAMPLES)
    assert result.returncode == 0, result.stderr
