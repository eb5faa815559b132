"""Metrics overhead benchmarks (issue 3).

* Sequential ``JetStreamEventStore.save_event`` with :class:`~aether.metrics.StoreMetrics`
  attached (``observer=``) against the same store without an observer, on its own
  ``aether.testing.NatsServer`` with memory storage (the fastest appends, so the largest
  relative overhead). Target: overhead <= 5%, i.e. ratio enabled/disabled >= 0.95.
* The cost of the observer calls one append makes (``on_cache`` + ``on_append``), alone.
* ``EventBus`` publish → 1 subscriber with :class:`~aether.metrics.BusMetrics` attached
  against without (bus metrics are read at scrape time, so the hot path is unchanged).

Runs alternate enabled and disabled (the machine is shared and noisy). The store row reports the
median ratio of adjacent on/off pairs; the bus row the best of each side.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from dataclasses import dataclass
from typing import Any

import nats
from prometheus_client import CollectorRegistry

from aether.bus import EventBus
from aether.event import Event
from aether.metrics import BusMetrics, StoreMetrics
from aether.store import JetStreamEventStore
from aether.store.observer import StoreObserver
from aether.testing import NatsServer
from benchmarks._harness import Report

__all__ = ["run"]

GROUP = "metrics"
DATA: dict[str, Any] = {"amount": 125, "currency": "EUR", "account": "ACC-000123"}
_actors = itertools.count(1)


@dataclass(frozen=True)
class Sizes:
    rounds: int
    pairs: int
    appends: int
    observer_calls: int
    bus_events: int


FULL = Sizes(rounds=8, pairs=24, appends=800, observer_calls=200_000, bus_events=200_000)
QUICK = Sizes(rounds=3, pairs=6, appends=300, observer_calls=50_000, bus_events=30_000)


async def _appends(store: JetStreamEventStore, n: int) -> float:
    actor = f"acct-{next(_actors)}"
    events = [Event("Deposited", actor, v, data=DATA) for v in range(1, n + 1)]
    save = store.save_event
    started = time.perf_counter()
    for event in events:
        await save(event)
    return n / (time.perf_counter() - started)


async def bench_store_overhead(report: Report, sizes: Sizes) -> None:
    async with NatsServer() as server:
        nc = await nats.connect(server.url)
        try:
            metrics = StoreMetrics(CollectorRegistry())
            plain = await JetStreamEventStore.create(nc, "bench-metrics-off", storage="memory")
            observed = await JetStreamEventStore.create(nc, "bench-metrics-on", storage="memory", observer=metrics)
            await _appends(plain, sizes.appends // 5)  # warm-up
            await _appends(observed, sizes.appends // 5)
            # short runs in adjacent on/off pairs (alternating which goes first): a pair shares the
            # machine's momentary load, so the median of the per-pair ratios is robust to the noise
            # of a shared machine, where a best-of over long runs swings by +-10%.
            ratios: list[float] = []
            rates_off: list[float] = []
            rates_on: list[float] = []
            for i in range(sizes.pairs):
                pair: dict[bool, float] = {}
                for store in (plain, observed) if i % 2 == 0 else (observed, plain):
                    pair[store is observed] = await _appends(store, sizes.appends)
                rates_off.append(pair[False])
                rates_on.append(pair[True])
                ratios.append(pair[True] / pair[False])
            ratio = statistics.median(ratios)
            off = statistics.median(rates_off)
            appended = metrics.registry.get_sample_value("aether_store_appended_events_total", {"namespace": ""})
            report.add(GROUP, "sequential save_event, StoreMetrics on vs off", aether=off * ratio, baseline=off,
                       unit="events/s", min_ratio=0.95,
                       notes=f"memory storage; median of {sizes.pairs} adjacent on/off pairs of {sizes.appends:,} "
                             f"appends (Aether column = median off-rate x median pair ratio; median on-rate "
                             f"{statistics.median(rates_on):,.0f}/s); counted {appended:,.0f} appends")
            await plain.aclose()
            await observed.aclose()
        finally:
            await nc.close()


def bench_observer_calls(report: Report, sizes: Sizes) -> None:
    observer: StoreObserver = StoreMetrics(CollectorRegistry())
    n = sizes.observer_calls
    best = float("inf")
    for _ in range(sizes.rounds):
        started = time.perf_counter()
        for _ in range(n):
            observer.on_cache("tenant-a", True)
            observer.on_append("tenant-a", 1, 0.0004)
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    report.add(GROUP, "StoreMetrics calls per save_event (on_cache + on_append)", aether=best, baseline=None,
               unit="µs", notes="two counters and one histogram observation; per append")


async def _bus_run(metrics: BusMetrics | None, events: int) -> float:
    bus = EventBus(metrics=metrics, buffer_size=400)
    sub = bus.subscribe("tenant-a.>")

    async def read() -> None:
        n = 0
        async for _ in sub:
            n += 1
            if n == events:
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)
    event = Event("Deposited", "acct-1", 1, data=DATA)
    started = time.perf_counter()
    for _ in range(events // 100):
        for _ in range(100):
            await bus.publish("tenant-a.orders", event)
        await asyncio.sleep(0)
    await reader
    elapsed = time.perf_counter() - started
    await bus.aclose()
    return events / elapsed


async def bench_bus_overhead(report: Report, sizes: Sizes) -> None:
    metrics = BusMetrics(CollectorRegistry())
    events = sizes.bus_events // 100 * 100
    best_off = best_on = 0.0
    for _ in range(sizes.rounds):
        best_off = max(best_off, await _bus_run(None, events))
        best_on = max(best_on, await _bus_run(metrics, events))
    report.add(GROUP, "EventBus publish → 1 subscriber, BusMetrics on vs off", aether=best_on, baseline=best_off,
               unit="events/s", min_ratio=0.95, notes=f"{events:,} events per run, best of {sizes.rounds}")


async def run(report: Report, quick: bool) -> None:
    """Run every metrics benchmark (see the module docstring) and add the rows to ``report``."""
    sizes = QUICK if quick else FULL
    await bench_store_overhead(report, sizes)
    bench_observer_calls(report, sizes)
    await bench_bus_overhead(report, sizes)
