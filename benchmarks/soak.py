"""Soak test (issue 7): a bounded mixed workload for a few minutes, then a 1,000,000-event replay.

    python -m benchmarks.soak [--minutes 3] [--events 1000000] [--out benchmarks/results/soak.json]

Workload, all at once against one embedded nats-server (file storage): optimistic appends to
random actors, history reads, NATSEventBus publish → a subscriber on another connection, and
requests routed through a 3-node in-process cluster whose handler appends to the store. Every
``--sample`` seconds it prints throughput per kind and the process's resident memory (RSS).

Memory verdict: RSS "settles" when its growth over the last half of the run is under 10% of the
RSS at the half-way point (a leak grows steadily instead).

Then it writes one actor with ``--events`` events (atomic batches of 1000) and streams it back
with ``iter_events``, sampling RSS every 100,000 events: bounded memory means the RSS increase
during the replay stays far below what holding the events would take.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import psutil

from aether import AetherError, Event, VersionConflictError
from aether.bus import NATSEventBus
from aether.cluster import ClusterManager
from aether.cluster.client import ClusterClient
from aether.cluster.types import ActorRequest
from aether.store import JetStreamEventStore
from aether.testing import NatsServer

ACTORS = 5000


def rss_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 1024 / 1024


async def _appender(store: JetStreamEventStore, counts: Counter[str], stop: asyncio.Event, rng: random.Random) -> None:
    while not stop.is_set():
        actor = f"acc-{rng.randrange(ACTORS)}"
        version = await store.get_latest_version(actor) + 1
        try:
            await store.save_event(Event("Deposited", actor, version, {"amount": rng.randrange(1, 100)}))
            counts["append"] += 1
        except VersionConflictError:
            counts["conflict"] += 1
        except AetherError:
            counts["error"] += 1


async def _reader(store: JetStreamEventStore, counts: Counter[str], stop: asyncio.Event, rng: random.Random) -> None:
    while not stop.is_set():
        events = await store.get_events(f"acc-{rng.randrange(ACTORS)}")
        counts["read"] += 1
        counts["events_read"] += len(events)


async def _bus(pub: NATSEventBus, sub_bus: NATSEventBus, counts: Counter[str], stop: asyncio.Event) -> None:
    sub = sub_bus.subscribe("soak.>", buffer_size=10_000)
    await sub.ready()

    async def consume() -> None:
        async for _ in sub:
            counts["bus_received"] += 1

    consumer = asyncio.create_task(consume())
    event = Event("Tick", "bus-actor", 1, {"n": 1})
    while not stop.is_set():
        for _ in range(100):
            await pub.publish("soak.ticks", event)
        counts["bus_published"] += 100
        await asyncio.sleep(0.005)
    sub.close()
    await consumer
    counts["bus_dropped"] = sub.dropped
    counts["bus_missed"] = sub.missed


async def _requests(client: ClusterClient, counts: Counter[str], stop: asyncio.Event, rng: random.Random) -> None:
    while not stop.is_set():
        try:
            await client.request(f"cl-{rng.randrange(ACTORS)}", b"+1", timeout=10)
            counts["request"] += 1
        except AetherError:
            counts["request_error"] += 1


def _handler(store: JetStreamEventStore) -> Any:
    async def handle(request: ActorRequest) -> bytes:
        while True:
            version = await store.get_latest_version(request.actor_id) + 1
            try:
                await store.save_event(Event("Requested", request.actor_id, version, id=request.request_id))
                return str(version).encode()
            except VersionConflictError:
                events = await store.get_events(request.actor_id, version)
                if any(e.id == request.request_id for e in events):
                    return str(version).encode()

    return handle


async def mixed(url: str, minutes: float, sample: float) -> dict[str, Any]:
    clients = [await nats.connect(url) for _ in range(7)]
    store = await JetStreamEventStore.create(clients[0], "SOAK")
    node_store = await JetStreamEventStore.create(clients[1], "SOAK")
    pub, sub_bus = await NATSEventBus.create(clients[2]), await NATSEventBus.create(clients[3])
    nodes = [ClusterManager(clients[4 + i], node_id=f"n{i}", cluster="soak", handler=_handler(node_store))
             for i in range(3)]
    for node in nodes:
        await node.start()
    for node in nodes:
        await node.wait_ready(timeout=30)
    client = ClusterClient(clients[0], cluster="soak")
    await client.start()
    await client.wait_ready(timeout=30)

    counts: Counter[str] = Counter()
    stop = asyncio.Event()
    rng = random.Random(1)
    tasks = [asyncio.create_task(_appender(store, counts, stop, rng)) for _ in range(8)]
    tasks += [asyncio.create_task(_reader(store, counts, stop, rng)) for _ in range(2)]
    tasks += [asyncio.create_task(_requests(client, counts, stop, rng)) for _ in range(8)]
    tasks.append(asyncio.create_task(_bus(pub, sub_bus, counts, stop)))

    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    last = Counter(counts)
    print(f"{'t (s)':>6} {'append/s':>9} {'read/s':>7} {'bus/s':>8} {'request/s':>9} {'RSS MiB':>8}")
    while time.monotonic() - started < minutes * 60:
        await asyncio.sleep(sample)
        now = Counter(counts)
        rates = {k: (now[k] - last[k]) / sample for k in ("append", "read", "bus_received", "request")}
        row = {"t": round(time.monotonic() - started, 1), **{k: round(v, 1) for k, v in rates.items()},
               "rss_mib": round(rss_mib(), 1)}
        samples.append(row)
        print(f"{row['t']:>6} {rates['append']:>9.0f} {rates['read']:>7.0f} {rates['bus_received']:>8.0f} "
              f"{rates['request']:>9.0f} {row['rss_mib']:>8.1f}", flush=True)
        last = now
    stop.set()
    await asyncio.gather(*tasks)
    await client.aclose()
    for node in nodes:
        await node.stop()
    await pub.aclose()
    await sub_bus.aclose()
    for nc in clients:
        await nc.close()
    half = samples[len(samples) // 2]["rss_mib"] if samples else 0.0
    end = samples[-1]["rss_mib"] if samples else 0.0
    growth = (end - half) / half if half else 0.0
    return {"samples": samples, "totals": dict(counts), "rss_half_mib": half, "rss_end_mib": end,
            "rss_growth_second_half": round(growth, 4), "memory_settles": growth < 0.10}


async def replay(url: str, total: int) -> dict[str, Any]:
    nc = await nats.connect(url)
    store = await JetStreamEventStore.create(nc, "SOAKBIG", timeout=30)
    started = time.monotonic()
    for first in range(1, total + 1, 1000):
        await store.save_events([Event("Tick", "big", v, {"n": v}) for v in range(first, min(first + 1000, total + 1))])
    write_s = time.monotonic() - started
    await store.aclose()
    store = await JetStreamEventStore.create(nc, "SOAKBIG", timeout=30)  # fresh caches
    gc.collect()
    base = rss_mib()
    peak = base
    n = 0
    started = time.monotonic()
    async for event in store.iter_events("big"):
        n += 1
        if event.version != n:
            raise AssertionError(f"version {event.version} at position {n}")
        if n % 100_000 == 0:
            peak = max(peak, rss_mib())
            print(f"  replayed {n:>9,} events, RSS {rss_mib():.1f} MiB", flush=True)
    read_s = time.monotonic() - started
    await nc.close()
    return {"events": n, "write_events_per_s": round(total / write_s), "replay_events_per_s": round(n / read_s),
            "rss_before_mib": round(base, 1), "rss_peak_during_replay_mib": round(peak, 1),
            "rss_increase_mib": round(peak - base, 1)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    async with NatsServer() as server:
        print(f"mixed workload for {args.minutes} min (sample every {args.sample}s)")
        result = {"mixed": await mixed(server.url, args.minutes, args.sample)}
        print(f"writing and replaying one actor of {args.events:,} events")
        result["replay"] = await replay(server.url, args.events)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--sample", type=float, default=10.0)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", default="benchmarks/results/soak.json")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    mixed_result, replay_result = result["mixed"], result["replay"]
    print(f"\ntotals: {mixed_result['totals']}")
    print(f"RSS half-way {mixed_result['rss_half_mib']} MiB → end {mixed_result['rss_end_mib']} MiB "
          f"(growth {mixed_result['rss_growth_second_half']:.1%}; settles: {mixed_result['memory_settles']})")
    print(f"replay of {replay_result['events']:,} events: {replay_result['replay_events_per_s']:,}/s, "
          f"RSS increase {replay_result['rss_increase_mib']} MiB")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
