"""Run every ``bench_*.py`` module (or those named with --only) and write the results.

    python -m benchmarks [--only store,bus] [--quick] [--out benchmarks/results/latest.json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import pkgutil
import sys
import traceback
from pathlib import Path

from benchmarks._harness import Report, peak_rss_mib


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--only", default="", help="comma-separated areas (bench_<area>.py)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--out", default="benchmarks/results/latest.json")
    args = parser.parse_args()
    here = Path(__file__).parent
    areas = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if args.only:
        wanted = {a.strip().replace("-", "_") for a in args.only.split(",")}  # cluster-scale = cluster_scale
        areas = [a for a in areas if a in wanted]
    report = Report()
    print("| area | benchmark | Aether | baseline | unit | ratio | target | notes |\n|---|---|---|---|---|---|---|---|")
    failed = []
    for area in areas:
        module = importlib.import_module(f"benchmarks.bench_{area}")
        try:
            asyncio.run(module.run(report, args.quick))
        except Exception:
            traceback.print_exc()
            failed.append(area)
    report.extra["peak_rss_mib"] = round(peak_rss_mib(), 1)
    report.extra["failed_areas"] = failed
    out = Path(args.out)
    report.write(out)
    print(f"\npeak RSS of the benchmark process: {peak_rss_mib():.1f} MiB")
    print(f"results: {out} and {out.with_suffix('.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
