"""``Repository[Task]`` type-checks: wrong uses are errors (each marked ignore must be needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_repository_generics_type_check() -> None:
    sample = Path(__file__).parent / "typing" / "repository_usage.py"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--warn-unused-ignores",
            "--no-incremental",
            "--follow-imports=silent",
            str(sample),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
