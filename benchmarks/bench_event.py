"""Event model benchmarks (issue 10): what the checks in ``Event.__post_init__`` cost.

The baseline is the same msgspec Struct without ``__post_init__`` (the ``Event`` of before the
value model was enforced), built with the same arguments in the same run, alternating rounds,
best of each. Rows:

* **build** — ``Event(...)`` with a flat payload (5 scalars), an empty one, and a nested one
  (lists and dicts, 13 values); the id and timestamp are generated in both.
* **decode** — a stored event decoded by :func:`aether.codec.decode_event` (no checks: stored
  events are trusted) against a plain msgspec decoder of the baseline Struct.

Figures are CPU ns per event of this thread (lower is better; wall time on a shared machine
mostly measures the other processes), so the ratio is the cost factor of the checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from aether._ids import new_id
from aether.codec import decode_event, encode_event
from aether.event import Event, utc_now
from benchmarks._harness import Report

__all__ = ["run"]

GROUP = "event"


class PlainEvent(msgspec.Struct, frozen=True):
    """The baseline: Event's fields and defaults, no checks."""

    event_type: str
    actor_id: str
    version: int
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    id: str = msgspec.field(default_factory=new_id)
    timestamp: datetime = msgspec.field(default_factory=utc_now)


FLAT = {"amount": 100, "currency": "EUR", "ok": True, "rate": 1.5, "note": None}
NESTED = {"items": [{"sku": "a", "qty": 1, "price": 9.5}, {"sku": "b", "qty": 2, "price": 3.25}],
          "customer": {"id": "c1", "tags": ["x", "y"], "vip": False}}
META = {"correlation_id": "c-1", "causation_id": "c-0"}


def _best_ns(fn: Callable[[], object], n: int) -> float:
    # CPU time of this thread: on a shared, loaded machine wall time mostly measures the others
    start = time.thread_time_ns()
    for _ in range(n):
        fn()
    return (time.thread_time_ns() - start) / n


def _compare(aether: Callable[[], object], baseline: Callable[[], object], n: int, rounds: int) -> tuple[float, float]:
    best_a = best_b = float("inf")
    for _ in range(rounds):  # alternate: the machine's load changes under both alike
        best_b = min(best_b, _best_ns(baseline, n))
        best_a = min(best_a, _best_ns(aether, n))
    return best_a, best_b


async def run(report: Report, quick: bool) -> None:
    n, rounds = (20_000, 3) if quick else (100_000, 7)
    cases: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("build, flat data (5 scalars) + metadata", FLAT, META),
        ("build, empty data", {}, {}),
        ("build, nested data (13 values) + metadata", NESTED, META),
    ]
    for name, data, meta in cases:
        a, b = _compare(lambda d=data, m=meta: Event("Deposited", "acc-1", 7, d, m),  # type: ignore[misc]
                        lambda d=data, m=meta: PlainEvent("Deposited", "acc-1", 7, d, m),  # type: ignore[misc]
                        n, rounds)
        report.add(GROUP, name, aether=a, baseline=b, unit="ns/event", notes="cost of the checks")
    payload = encode_event(Event("Deposited", "acc-1", 7, FLAT, META))
    plain_decode = msgspec.msgpack.Decoder(PlainEvent).decode
    body = payload[2:]
    a, b = _compare(lambda: decode_event(payload), lambda: plain_decode(body), n, rounds)
    report.add(GROUP, "decode a stored event (flat data)", aether=a, baseline=b, unit="ns/event",
               notes="no checks on decode; header, version check, trusted-decoding guard")
