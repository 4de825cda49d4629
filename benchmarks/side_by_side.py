"""Run one benchmark against two source trees, alternately, and print both outputs.

Run: ``.venv/bin/python benchmarks/side_by_side.py OTHER_TREE bench_sqlite.py [args...]``.
``OTHER_TREE`` is a checkout of another revision (``git worktree add /tmp/prev <rev>``);
this tree is the other side. Each side runs ``--rounds`` times (default 2), alternating, so
both see the same machine state; compare the figures of the same row across the runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="a checkout of the revision to compare with")
    parser.add_argument("script", help="a script in benchmarks/, e.g. bench_sqlite.py")
    parser.add_argument("--rounds", type=int, default=2)
    args, rest = parser.parse_known_args()
    sides = {"this": HERE, "other": args.other.resolve()}
    for round_ in range(1, args.rounds + 1):
        for name, tree in sides.items():
            env = {**os.environ, "PYTHONPATH": str(tree)}
            script = tree / "benchmarks" / args.script
            print(f"===== {name} ({tree}), round {round_}", flush=True)
            subprocess.run([sys.executable, str(script), *rest], env=env, cwd=tree, check=True)


if __name__ == "__main__":
    main()
