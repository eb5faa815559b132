"""Publish CPU cost per Python version (issue 14): nats-py on 3.12+ spends more CPU per publish.

nats-py queues each ``PUB`` command as its own ``bytes`` and hands the list to the asyncio
transport's ``writelines``. On 3.11 that joins the list and sends one buffer; from 3.12 on, the
selector transport sends the list with ``sendmsg`` (scatter-gather, at most ``IOV_MAX`` buffers
a call, one ``memoryview`` per buffer, the leftover list adjusted after each partial send).

This area measures, under every interpreter it finds (the project's virtualenvs ``.venv`` and
``.venv3*``, or ``$BENCH_PYTHONS``: comma-separated interpreter paths), in a child process each
and against one shared ``NatsServer``:

* baseline: plain nats-py ``publish`` of the bytes of an encoded event (no subscriber), then
  one ``flush``: client CPU time (``time.process_time``) per publish, in microseconds;
* Aether: ``NATSEventBus.publish`` of the event itself (encoding included), then ``flush``.

Rows: per interpreter, Aether against raw nats-py (the same run); a diagnosis row, raw nats-py
against raw nats-py whose pending buffers are joined before ``writelines`` (a patch of nats-py's
private transport, in this benchmark only: it shows where the cost is); and per interpreter
after the first, its cost against the first's (``3.13 vs 3.11``). Each side is the best of
``rounds`` runs.

    python -m benchmarks --only pyversions [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]

GROUP = "pyversions"
ROOT = Path(__file__).resolve().parents[1]


def interpreters() -> list[str]:
    """The interpreters to compare: ``$BENCH_PYTHONS``, else the project's virtualenvs, oldest first."""
    listed = os.environ.get("BENCH_PYTHONS")
    if listed:
        return [p for p in listed.split(",") if p]
    found: list[tuple[tuple[int, int], str]] = []
    for venv in sorted(ROOT.glob(".venv*")):
        python = venv / "bin" / "python"
        if not python.exists():
            continue
        try:
            out = subprocess.run([str(python), "-c", "import sys, aether; print(*sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=60, check=True).stdout.split()
        except (subprocess.SubprocessError, OSError):
            continue
        version = (int(out[0]), int(out[1]))
        if all(v != version for v, _ in found):
            found.append((version, str(python)))
    return [python for _, python in sorted(found)]


async def run(report: Any, quick: bool) -> None:
    from aether.testing import NatsServer

    messages, rounds = (20_000, 3) if quick else (100_000, 5)
    pythons = interpreters()
    if not pythons:
        print("pyversions: no interpreter found (make install, PYTHON=python3.13 VENV=.venv313 make install)")
        return
    async with NatsServer() as server:
        results = []
        for python in pythons:
            out = await asyncio.to_thread(
                subprocess.run, [python, "-m", "benchmarks.bench_pyversions", server.url, str(messages), str(rounds)],
                capture_output=True, text=True, timeout=900, cwd=ROOT, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first = results[0]
    for result in results:
        version = result["python"]
        report.add(GROUP, f"publish CPU per event, Python {version}", aether=result["aether_us"],
                   baseline=result["raw_us"], unit="µs CPU", notes="Aether NATSEventBus.publish vs nats-py publish")
        report.add(GROUP, f"nats-py publish CPU, Python {version}, writelines vs joined", aether=result["raw_us"],
                   baseline=result["joined_us"], unit="µs CPU",
                   notes="diagnosis: 'baseline' joins the pending buffers into one write (private patch)")
    for result in results[1:]:
        report.add(GROUP, f"nats-py publish CPU, Python {result['python']} vs {first['python']}",
                   aether=result["raw_us"], baseline=first["raw_us"], unit="µs CPU",
                   notes=f"the same raw nats-py publishes; 'baseline' is Python {first['python']}")
        report.add(GROUP, f"Aether publish CPU, Python {result['python']} vs {first['python']}",
                   aether=result["aether_us"], baseline=first["aether_us"], unit="µs CPU",
                   notes=f"'baseline' is Python {first['python']}")


# ---- the measurement, in the child interpreter --------------------------------------------------
async def _measure(url: str, messages: int, rounds: int) -> dict[str, Any]:
    import nats

    from aether.bus import NATSEventBus
    from aether.codec import encode_event
    from aether.event import Event

    event = Event("Deposited", "acct-1", 1, data={"amount": 125, "currency": "EUR"},
                  metadata={"correlation_id": "c0ffee00-0000-4000-8000-000000000001"})
    payload = encode_event(event)
    raw_best = aether_best = joined_best = float("inf")
    nc = await nats.connect(url)
    bus = await NATSEventBus.create(nc)
    try:
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(messages):
                await nc.publish("bench.raw", payload)
            await nc.flush(timeout=60)
            raw_best = min(raw_best, time.process_time() - started)

            started = time.process_time()
            for _ in range(messages):
                await bus.publish("bench", event)
            await nc.flush(timeout=60)
            aether_best = min(aether_best, time.process_time() - started)

        # Diagnosis only (private nats-py internals, never in Aether): the same raw publishes with
        # the pending list joined into one buffer before it reaches the transport, as 3.11 does.
        transport: Any = nc._transport
        original = transport.writelines
        transport.writelines = lambda chunks: transport.write(b"".join(chunks))
        try:
            for _ in range(rounds):
                started = time.process_time()
                for _ in range(messages):
                    await nc.publish("bench.raw", payload)
                await nc.flush(timeout=60)
                joined_best = min(joined_best, time.process_time() - started)
        finally:
            transport.writelines = original
    finally:
        await bus.aclose()
        await nc.close()
    return {"python": f"{sys.version_info[0]}.{sys.version_info[1]}", "messages": messages,
            "raw_us": raw_best / messages * 1e6, "aether_us": aether_best / messages * 1e6,
            "joined_us": joined_best / messages * 1e6}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))))
