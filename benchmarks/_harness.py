"""Shared benchmark plumbing: the result table, the JSON file, timing helpers.

A benchmark module is ``benchmarks/bench_<area>.py`` exposing::

    async def run(report: Report, quick: bool) -> None

It measures Aether and its raw baseline in the same run (the machine is shared and noisy, so
only ratios measured together mean anything) and calls :meth:`Report.add` per row.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Report", "Row", "Timer", "peak_rss_mib"]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


@dataclass
class Row:
    group: str
    name: str
    aether: float | None
    baseline: float | None
    unit: str
    target: str = ""
    ratio: float | None = None
    passed: bool | None = None
    notes: str = ""


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, group: str, name: str, *, aether: float | None, baseline: float | None, unit: str,
            min_ratio: float | None = None, max_ratio: float | None = None, min_value: float | None = None,
            max_value: float | None = None, notes: str = "") -> Row:
        """Record a row; the ratio is aether / baseline. Targets are reported, never asserted."""
        ratio = aether / baseline if aether is not None and baseline else None
        target, passed = "", None
        if min_ratio is not None and ratio is not None:
            target, passed = f"ratio >= {min_ratio:g}", ratio >= min_ratio
        elif max_ratio is not None and ratio is not None:
            target, passed = f"ratio <= {max_ratio:g}", ratio <= max_ratio
        elif min_value is not None and aether is not None:
            target, passed = f">= {min_value:,g} {unit}", aether >= min_value
        elif max_value is not None and aether is not None:
            target, passed = f"<= {max_value:,g} {unit}", aether <= max_value
        row = Row(group, name, aether, baseline, unit, target, ratio, passed, notes)
        self.rows.append(row)
        print(self._format_row(row), flush=True)
        return row

    @staticmethod
    def _fmt(value: float | None) -> str:
        if value is None:
            return "—"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"

    def _format_row(self, row: Row) -> str:
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "—"
        verdict = "" if row.passed is None else ("PASS" if row.passed else "MISS")
        return (f"| {row.group} | {row.name} | {self._fmt(row.aether)} | {self._fmt(row.baseline)} | {row.unit} "
                f"| {ratio} | {row.target} {verdict} | {row.notes} |")

    def table(self) -> str:
        head = ("| area | benchmark | Aether | baseline | unit | ratio | target | notes |\n"
                "|---|---|---|---|---|---|---|---|")
        return "\n".join([head, *(self._format_row(r) for r in self.rows)])

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "rows": [asdict(r) for r in self.rows],
            **self.extra,
        }
        path.write_text(json.dumps(data, indent=2))
        path.with_suffix(".md").write_text(self.table() + "\n")
