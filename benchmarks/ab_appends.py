"""Interleaved A/B of the store's append rows between source trees (issue 12: append ratios).

    python -m benchmarks.ab_appends --tree old=/tmp/x/old/src --tree new=src [--rounds 5] [--quick]

Each run is a fresh subprocess whose ``aether`` is imported from the named tree (``PYTHONPATH``),
while the benchmark code (``benchmarks/bench_store.py``: its sequential, concurrent and
``save_events`` rows, each with its raw nats-py baseline in the same run) is this checkout's, so
every tree is measured by the same code against the same baseline. The trees run in turn, the
order rotated every round (A B C, B C A, ...), and the median of each tree's same-run ratios is
printed with its spread. Not a ``bench_*`` area: it is run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

_MARK = "AB-ROWS:"
_ROOT = Path(__file__).resolve().parent.parent


async def _child(quick: bool) -> None:
    import aether
    from benchmarks import bench_store
    from benchmarks._harness import Report

    sizes = bench_store.QUICK if quick else bench_store.FULL
    report = Report()
    await bench_store.bench_sequential(report, sizes)
    await bench_store.bench_concurrent(report, sizes)
    await bench_store.bench_batch(report, sizes)
    rows = [{"name": r.name, "aether": r.aether, "baseline": r.baseline, "ratio": r.ratio, "notes": r.notes}
            for r in report.rows]
    print(_MARK + json.dumps({"aether_file": aether.__file__, "rows": rows}), flush=True)


def _run_tree(src: str, quick: bool) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{Path(src).resolve()}{os.pathsep}{_ROOT}")
    cmd = [sys.executable, "-m", "benchmarks.ab_appends", "--child"] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, env=env, cwd=_ROOT, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith(_MARK))
    result: dict[str, Any] = json.loads(line[len(_MARK):])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab_appends")
    parser.add_argument("--tree", action="append", default=[], help="label=path/to/src (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help="JSON file for every run's rows")
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(_child(args.quick))
        return 0
    trees = [t.split("=", 1) for t in args.tree]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
    for r in range(args.rounds):
        order = trees[r % len(trees):] + trees[:r % len(trees)]
        for label, src in order:
            result = _run_tree(src, args.quick)
            runs[label].append(result)
            ratios = ", ".join(f"{row['ratio']:.3f}" for row in result["rows"])
            print(f"round {r + 1} {label} ({result['aether_file']}): ratios {ratios}", flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(runs, indent=1))
    print("\n| row | " + " | ".join(f"{label}: median ratio (min-max)" for label, _ in trees) + " |")
    print("|---|" + "---|" * len(trees))
    names = [row["name"] for row in runs[trees[0][0]][0]["rows"]]
    for i, name in enumerate(names):
        cells = []
        for label, _ in trees:
            values = [run["rows"][i]["ratio"] for run in runs[label]]
            cells.append(f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
