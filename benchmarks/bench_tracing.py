"""Tracing overhead benchmarks (issue 15).

Three states of the same process, compared in adjacent pairs (the machine is shared and noisy:
each row is the median of the per-pair ratios):

* **absent** — :func:`aether.tracing.disabled`: every hook sees ``TRACER is None``, exactly what
  happens when ``opentelemetry-api`` is not installed;
* **installed, no exporter** — the API is installed but the application configured no SDK
  (the default for a library user): spans are OpenTelemetry's non-recording no-ops.
  Target: request and append ratios >= 0.95 of absent;
* **SDK + exporter** — an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` into an
  in-memory exporter: every span recorded and exported. The cost is reported, not targeted.

Workloads: sequential ``JetStreamEventStore.save_event`` (memory storage, the fastest appends,
so the largest relative overhead) and sequential ``ClusterClient.request`` to a node in the same
process over NATS (client span, routing hop, owner handler span, context in headers).
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import nats
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aether import tracing
from aether.cluster import ActorRequest, ClusterClient, ClusterManager
from aether.event import Event
from aether.store import JetStreamEventStore
from aether.testing import NatsServer
from benchmarks._harness import Report

__all__ = ["run"]

GROUP = "tracing"
_actors = itertools.count(1)


@dataclass(frozen=True)
class Sizes:
    pairs: int
    appends: int
    requests: int


FULL = Sizes(pairs=20, appends=600, requests=600)
QUICK = Sizes(pairs=6, appends=250, requests=250)

Workload = Callable[[], Awaitable[float]]


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


async def _paired(workload: Workload, pairs: int, mode: Callable[[], contextlib.AbstractContextManager[None]]
                  ) -> tuple[float, float, float]:
    """(median absent rate, median ratio mode/absent, median mode rate) over adjacent pairs."""
    await workload()  # warm-up
    ratios: list[float] = []
    absent: list[float] = []
    traced: list[float] = []
    for i in range(pairs):
        pair: dict[bool, float] = {}
        for on in (False, True) if i % 2 == 0 else (True, False):
            with mode() if on else tracing.disabled():
                pair[on] = await workload()
        absent.append(pair[False])
        traced.append(pair[True])
        ratios.append(pair[True] / pair[False])
    return statistics.median(absent), statistics.median(ratios), statistics.median(traced)


class _Node:
    cluster = "bench"
    node_id = "n1"


async def _hook_cost(report: Report, calls: int, rounds: int) -> None:
    """The hooks alone, without I/O: a traced coroutine vs the same coroutine undecorated."""

    async def plain(self: _Node, actor_id: str, payload: bytes) -> bytes:
        return payload

    traced = tracing.traced_request(plain)
    node = _Node()

    async def loop(function: Callable[[_Node, str, bytes], Awaitable[bytes]]) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await function(node, "acct-1", b"")
        return (time.perf_counter() - started) / calls * 1e6

    best: dict[str, float] = {}
    for _ in range(rounds):
        best["raw"] = min(best.get("raw", 1e9), await loop(plain))
        with tracing.disabled():
            best["absent"] = min(best.get("absent", 1e9), await loop(traced))
        best["installed"] = min(best.get("installed", 1e9), await loop(traced))
    report.add(GROUP, "one hook, otel installed without SDK (µs per call, lower is better)", aether=best["installed"],
               baseline=best["absent"], unit="µs", notes=f"baseline: the same hook with tracing off; undecorated "
                                                         f"call {best['raw']:.2f} µs; best of {rounds} x {calls:,}")


async def run(report: Report, quick: bool) -> None:
    """Run the tracing benchmarks (see the module docstring) and add the rows to ``report``."""
    sizes = QUICK if quick else FULL
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        raise RuntimeError("bench_tracing needs a process without an SDK tracer provider")
    await _hook_cost(report, 20_000 if quick else 100_000, 3 if quick else 5)
    async with NatsServer() as server:
        nc = await nats.connect(server.url)
        try:
            store = await JetStreamEventStore.create(nc, "bench-tracing", storage="memory")

            async def appends() -> float:
                actor = f"acct-{next(_actors)}"
                events = [Event("Deposited", actor, v, data={"amount": v}) for v in range(1, sizes.appends + 1)]
                save = store.save_event
                started = time.perf_counter()
                for event in events:
                    await save(event)
                return sizes.appends / (time.perf_counter() - started)

            async def handle(request: ActorRequest) -> bytes:
                return request.payload

            async with (ClusterManager(nc, node_id="owner", cluster="bench-tracing", handler=handle) as node,
                        ClusterClient(nc, cluster="bench-tracing") as client):
                await node.wait_ready(timeout=30)
                await client.wait_ready(timeout=30)

                async def requests() -> float:
                    request = client.request
                    started = time.perf_counter()
                    for i in range(sizes.requests):
                        await request(f"acct-{i % 97}", b"ping")
                    return sizes.requests / (time.perf_counter() - started)

                for label, workload, unit in (("save_event", appends, "events/s"),
                                              ("ClusterClient.request", requests, "requests/s")):
                    off, ratio, on = await _paired(workload, sizes.pairs * 2, _nothing)
                    report.add(GROUP, f"{label}: otel installed, no SDK/exporter vs tracing absent",
                               aether=off * ratio, baseline=off, unit=unit, min_ratio=0.95,
                               notes=f"median of {sizes.pairs * 2} adjacent pairs of {sizes.appends:,} calls "
                                     f"(median traced rate {on:,.0f}/s)")

                exporter = InMemorySpanExporter()
                provider = TracerProvider()
                processor = BatchSpanProcessor(exporter, max_queue_size=65536, schedule_delay_millis=200)
                provider.add_span_processor(processor)
                trace.set_tracer_provider(provider)
                try:
                    for label, workload, unit in (("save_event", appends, "events/s"),
                                                  ("ClusterClient.request", requests, "requests/s")):
                        off, ratio, on = await _paired(workload, sizes.pairs, _nothing)
                        report.add(GROUP, f"{label}: SDK + batch exporter (in memory) vs tracing absent",
                                   aether=off * ratio, baseline=off, unit=unit,
                                   notes=f"every span recorded and exported; median of {sizes.pairs} pairs "
                                         f"(median traced rate {on:,.0f}/s)")
                    processor.force_flush()
                    report.extra["tracing_spans_exported"] = len(exporter.get_finished_spans())
                finally:
                    provider.shutdown()
            await store.aclose()
        finally:
            await nc.close()
