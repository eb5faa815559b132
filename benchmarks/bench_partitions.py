"""Partitioned namespaces (issue 13): scale-out of appends, fault isolation, catch-up over partitions.

* **Concurrent appends, 3-server cluster, R3, P = 1, 3, 6** — one task per actor appending
  ``save_event`` after ``save_event``; the baseline is raw nats-py doing the same over P raw
  streams with the same subjects and headers (``js.publish_async`` with ``Nats-Msg-Id`` and
  ``Nats-Expected-Last-Subject-Sequence``, one task per actor, its own ack awaited), leaders
  spread the same way. Alternating rounds, best of each. The notes give the CPU seconds each
  nats-server process used during the best Aether run and how many partitions each leads.
* **Fault isolation** — 60 actors append in a loop (store ``timeout=1.0``; a failed append is
  retried with the same event) on a fresh 3-server R3 cluster; the server leading the most
  partitions is SIGKILLed. Per actor: the longest time between two acknowledged appends
  around the kill. Reported: the fraction of actors that never paused more than 1 s and the
  longest pause, with P = 6 against the same loop on one stream (P = 1). The writers are
  connected to the surviving servers only (a client connected to the victim reconnects, which
  pauses every actor alike whatever the partitioning). Every acknowledged event is checked to
  be stored afterwards.
* **Projection catch-up over 6 partitions** — one server, the same events written to a 6-partition
  namespace and to a one-stream namespace; a ``ProjectionRunner`` catch-up over each (target:
  6 partitions >= 0.8 of one stream), and raw nats-py ordered consumers over the 6 streams for
  information.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from aether._nats import JsApi
from aether.codec import encode_event
from aether.errors import AetherError
from aether.event import Event
from aether.names import encode_token, stream_name
from aether.projection import EventSource, Projection, ProjectionOptions, ProjectionRunner
from aether.store import JetStreamEventStore
from aether.store.partitioning import partition_for, partition_stream_name
from aether.store.placement import rebalance
from aether.testing import NatsCluster, NatsServer
from benchmarks._harness import Report, Timer
from benchmarks.bench_projection import raw_consumer

__all__ = ["run"]

GROUP = "partitions"
DATA: dict[str, Any] = {"amount": 125, "currency": "EUR", "account": "ACC-000123"}
META: dict[str, str] = {"correlation_id": "c0ffee00-0000-4000-8000-000000000001"}
_names = itertools.count(1)
_TICK = os.sysconf("SC_CLK_TCK")


def _event(actor: str, version: int) -> Event:
    return Event("Deposited", actor, version, data=DATA, metadata=META)


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


async def _retry(make: Any, attempts: int = 150) -> Any:
    """Right after a cluster starts, its meta leader may still be settling."""
    for _ in range(attempts - 1):
        try:
            return await make()
        except AetherError:
            await asyncio.sleep(0.2)
    return await make()


# ---- 1. concurrent appends on a cluster -----------------------------------------------------------------
async def _aether_appends(nc: Client, partitions: int, actors: int, per_actor: int,
                          servers: list[NatsServer]) -> tuple[float, dict[str, float], Counter[str]]:
    base = f"bench_part_{os.getpid()}_{next(_names)}"
    store = await _retry(lambda: JetStreamEventStore.create(nc, base, replicas=3, partitions=partitions,
                                                            timeout=10.0))
    try:
        leaders = Counter(p.leader for p in await store.placement() if p.leader)
        histories = [[_event(f"actor-{a}", v) for v in range(1, per_actor + 1)] for a in range(actors)]

        async def writer(events: list[Event]) -> None:
            for e in events:
                await store.save_event(e)

        before = {s.server_name or "": _cpu_seconds(s.pid) for s in servers}
        with Timer() as t:
            await asyncio.gather(*(writer(h) for h in histories))
        cpu = {s.server_name or "": _cpu_seconds(s.pid) - before[s.server_name or ""] for s in servers}
        return actors * per_actor / t.seconds, cpu, leaders
    finally:
        api = JsApi(nc)
        for name in store.streams:
            with contextlib.suppress(AetherError):
                await api.api(f"STREAM.DELETE.{name}")
        await api.aclose()
        await store.aclose()


async def _raw_appends(nc: Client, partitions: int, actors: int, per_actor: int) -> float:
    stream = stream_name(f"bench_raw_{os.getpid()}_{next(_names)}")
    names = [stream] if partitions == 1 else [partition_stream_name(stream, i) for i in range(partitions)]
    api = JsApi(nc, timeout=10.0)
    try:
        for name in names:
            config = {"name": name, "subjects": [f"aether.{name}.>"], "storage": "file", "num_replicas": 3,
                      "duplicate_window": 120 * 1_000_000_000, "allow_direct": True, "allow_atomic": True}
            await _retry(lambda config=config: api.api(f"STREAM.CREATE.{config['name']}", config))
        await rebalance(api, names)  # leaders spread as Aether spreads its partitions
        js = nc.jetstream(publish_async_max_pending=max(4000, 2 * actors))
        payload = encode_event(_event("actor-0", 1))
        base = f"raw-{os.getpid()}-{time.monotonic_ns():x}-"
        ids = (f"{base}{i}" for i in itertools.count())
        subjects = [f"aether.{names[partition_for(f'actor-{a}', partitions)]}.e.{encode_token(f'actor-{a}')}"
                    for a in range(actors)]
        stored: list[int] = []

        async def writer(subject: str) -> None:
            seq = 0
            for _ in range(per_actor):
                future = await js.publish_async(subject, payload, headers={
                    "Nats-Msg-Id": next(ids), "Nats-Expected-Last-Subject-Sequence": str(seq)})
                seq = (await future).seq
            stored.append(seq)

        await js.publish_async_completed()
        with Timer() as t:
            await asyncio.gather(*(writer(s) for s in subjects))
        assert len(stored) == actors
        return actors * per_actor / t.seconds
    finally:
        for name in names:
            with contextlib.suppress(AetherError):
                await api.api(f"STREAM.DELETE.{name}")
        await api.aclose()


async def bench_appends(report: Report, quick: bool) -> None:
    actors, per_actor, rounds = (120, 5, 2) if quick else (300, 20, 3)
    results: dict[int, dict[str, float]] = {}
    details: dict[int, tuple[dict[str, float], Counter[str]]] = {}
    async with NatsCluster(3) as cluster:
        nc = await nats.connect(servers=cluster.urls, connect_timeout=10)
        try:
            for p in (1, 3, 6):  # warm-up
                await _aether_appends(nc, p, 30, 2, cluster.servers)
                await _raw_appends(nc, p, 30, 2)
            for p in (1, 3, 6):
                best = {"aether": 0.0, "raw": 0.0}
                for r in range(rounds):
                    order = ("aether", "raw") if r % 2 == 0 else ("raw", "aether")
                    for side in order:
                        if side == "aether":
                            rate, cpu, leaders = await _aether_appends(nc, p, actors, per_actor, cluster.servers)
                            if rate > best["aether"]:
                                best["aether"] = rate
                                details[p] = (cpu, leaders)
                        else:
                            best["raw"] = max(best["raw"], await _raw_appends(nc, p, actors, per_actor))
                results[p] = best
        finally:
            await nc.close()
    for p in (1, 3, 6):
        cpu, leaders = details[p]
        total = sum(cpu.values()) or 1.0
        shares = ", ".join(f"{name}: {seconds:.2f} CPU-s ({seconds / total:.0%}), leads {leaders.get(name, 0)}"
                           for name, seconds in sorted(cpu.items()))
        report.add(GROUP, f"concurrent save_event, 3 servers R3, P={p}, {actors} actors x {per_actor}",
                   aether=results[p]["aether"], baseline=results[p]["raw"], unit="events/s", min_ratio=0.8,
                   notes=f"best of {rounds} alternating rounds; baseline: js.publish_async over {p} raw "
                         f"stream(s), one task per actor; nats-server CPU in the best Aether run: {shares}")
    report.add(GROUP, "scale-out of appends: P=6 / P=1 (Aether, same run)", aether=results[6]["aether"],
               baseline=results[1]["aether"], unit="events/s",
               notes="for information: 3 servers on 2 shared cores cannot add CPU; see docs/scaling.md")


# ---- 2. fault isolation -----------------------------------------------------------------------------
async def _fault_run(partitions: int, actors: int, warm: float) -> tuple[float, float, int, int]:
    """(fraction of actors never paused > 1 s, longest pause, leaders on the victim, acked events)."""
    async with NatsCluster(3) as cluster:
        setup = await nats.connect(servers=cluster.urls, connect_timeout=10)
        try:
            store = await _retry(lambda: JetStreamEventStore.create(setup, "faults", replicas=3, partitions=partitions,
                                                                    timeout=2.0))
            placements = await store.rebalance_leaders(timeout=60)
            await store.aclose()
        finally:
            await setup.close()
        leaders = Counter(p.leader for p in placements if p.leader)
        victim_name, on_victim = leaders.most_common(1)[0]
        victim = next(s for s in cluster.servers if s.server_name == victim_name)
        survivors = [s.url for s in cluster.servers if s is not victim]
        nc = await nats.connect(servers=survivors, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        try:
            store = await JetStreamEventStore.create(nc, "faults", timeout=1.0)
            acked: dict[str, list[tuple[int, str, float]]] = {f"a-{i}": [] for i in range(actors)}
            stop = asyncio.Event()

            async def writer(actor: str) -> None:
                version = 1
                while not stop.is_set():
                    event = _event(actor, version)
                    while True:
                        try:
                            await store.save_event(event)
                            break
                        except AetherError:
                            if stop.is_set():
                                return
                            await asyncio.sleep(0.05)
                    acked[actor].append((version, event.id, time.monotonic()))
                    version += 1

            tasks = [asyncio.ensure_future(writer(a)) for a in acked]
            await asyncio.sleep(warm)
            killed = time.monotonic()
            await victim.kill()
            deadline = killed + 120
            while time.monotonic() < deadline:  # every actor writes again, then a while longer
                if all(any(t > killed + 0.1 for _, _, t in acked[a]) for a in acked):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(warm)
            stop.set()
            await asyncio.gather(*tasks)
            pauses = []
            for history in acked.values():
                times = [t for _, _, t in history]
                before = [t for t in times if t <= killed]
                after = [t for t in times if t > killed]
                around = before[-1:] + after
                pauses.append(max((b - a for a, b in itertools.pairwise(around)), default=float("inf")))
            for actor, history in acked.items():  # nothing acknowledged is lost
                ids = {e.version: e.id for e in await store.get_events(actor)}
                lost = [v for v, event_id, _ in history if ids.get(v) != event_id]
                if lost:
                    raise RuntimeError(f"acknowledged versions {lost[:5]} of {actor} are not stored")
            unaffected = sum(1 for p in pauses if p <= 1.0) / len(pauses)
            return unaffected, max(pauses), on_victim, sum(len(h) for h in acked.values())
        finally:
            await nc.close()


async def bench_faults(report: Report, quick: bool) -> None:
    warm = 2.0 if quick else 4.0
    p6 = await _fault_run(6, 60, warm)
    p1 = await _fault_run(1, 60, warm)
    target = (6 - p6[2]) / 6
    report.add(GROUP, "actors never paused > 1 s when the server leading most partitions is SIGKILLed, P=6",
               aether=p6[0], baseline=p1[0], unit="fraction", min_value=target,
               notes=f"baseline: the same loop on one stream (P=1); victim led {p6[2]} of 6 partitions, target "
                     f"(6 - {p6[2]})/6; {p6[3]:,} (P=6) and {p1[3]:,} (P=1) acknowledged events, none lost")
    report.add(GROUP, "longest append pause around the kill, P=6", aether=p6[1], baseline=p1[1], unit="s",
               notes="baseline: one stream (P=1); store timeout 1 s, failed appends retried with the same event")


# ---- 3. catch-up over partitions ---------------------------------------------------------------------------
async def _populate(store: JetStreamEventStore, events: int, actors: int = 1000) -> None:
    per_actor = events // actors
    gate = asyncio.Semaphore(32)

    async def write(actor: int) -> None:
        async with gate:
            for start in range(1, per_actor + 1, 100):
                end = min(per_actor, start + 99)
                await store.save_events([_event(f"acct-{actor}", v) for v in range(start, end + 1)])

    await asyncio.gather(*(write(a) for a in range(actors)))


async def _runner_rate(nc: Client, store: JetStreamEventStore, n: int, name: str) -> float:
    handled = 0
    projection = Projection(name)

    @projection.on("Deposited")
    async def deposited(event: Event, position: int) -> None:
        nonlocal handled
        handled += 1

    started = time.perf_counter()
    async with ProjectionRunner(nc, projection, store, options=ProjectionOptions()) as runner:
        await runner.catch_up(timeout=300)
        seconds = time.perf_counter() - started
    if handled != n:
        raise RuntimeError(f"the projection handled {handled} events, expected {n}")
    return n / seconds


async def bench_catch_up(report: Report, quick: bool) -> None:
    n = 20_000 if quick else 100_000
    rounds = 3 if quick else 5
    async with NatsServer() as server:
        nc = await nats.connect(server.url)
        try:
            six = await JetStreamEventStore.create(nc, "bench-catchup", namespace="six", partitions=6)
            one = await JetStreamEventStore.create(nc, "bench-catchup", namespace="one")
            await _populate(six, n)
            await _populate(one, n)
            best = {"six": 0.0, "one": 0.0, "raw": 0.0}
            await raw_consumer(nc, EventSource.of(six), n)  # warm-up
            await raw_consumer(nc, EventSource.of(one), n)
            for i in range(rounds):
                order = ("six", "one") if i % 2 == 0 else ("one", "six")
                for side in order:
                    store = six if side == "six" else one
                    best[side] = max(best[side], await _runner_rate(nc, store, n, f"bench-{side}-{i}"))
                best["raw"] = max(best["raw"], await raw_consumer(nc, EventSource.of(six), n))
        finally:
            await nc.close()
    report.add(GROUP, f"ProjectionRunner catch-up over 6 partitions vs one stream, {n:,} events",
               aether=best["six"], baseline=best["one"], unit="events/s", min_ratio=0.8,
               notes=f"best of {rounds} alternating rounds; baseline: the same runner over the same events in one "
                     f"stream; raw nats-py ordered consumers over the 6 streams (count only): {best['raw']:,.0f}/s")


async def run(report: Report, quick: bool) -> None:
    await bench_catch_up(report, quick)
    await bench_appends(report, quick)
    await bench_faults(report, quick)
