"""Event bus benchmarks (issue 3): Aether's buses against the raw mechanism they are built on.

* ``EventBus`` publish → 1 and → 10 subscribers (deliveries/s) against a plain
  ``asyncio.Queue`` fan-out doing the same work (one queue per subscriber, ``put_nowait`` per
  event, one reader task per queue). The publisher yields to the loop every ``BURST`` events
  on both sides, so readers drain while the publisher runs.
* ``NATSEventBus`` publish → a subscriber on another connection (another node; events/s)
  against nats-py core publish → subscribe (callback) of the same bytes (the event encoded
  once with :mod:`aether.codec`), one NATS message per event. The publisher is a burst
  publisher (``await publish`` in a loop), so the bus coalesces the events of each loop
  iteration into few NATS messages; the Aether side also encodes on publish and decodes on
  receipt, the baseline does neither. Target: 1.5 times the raw per-message rate.
* ``NATSEventBus`` latency of an idle publisher: publish one event, wait until the remote
  subscriber's ``async for`` yields it, repeat; p50 and p99 against nats-py publish → the
  subscription callback, in the same run (alternating blocks of samples).

Each row alternates Aether and baseline runs (the machine is shared and noisy) and reports
the best run of each side; the NATS row starts its own ``aether.testing.NatsServer``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from aether.bus import EventBus, NATSEventBus, Subscription
from aether.codec import decode_event, encode_event
from aether.event import Event
from aether.testing import NatsServer
from benchmarks._harness import Report

__all__ = ["run"]

GROUP = "bus"
BURST = 100
DATA: dict[str, Any] = {"amount": 125, "currency": "EUR", "account": "ACC-000123"}
META: dict[str, str] = {"correlation_id": "c0ffee00-0000-4000-8000-000000000001"}


@dataclass(frozen=True)
class Sizes:
    rounds: int
    local_events: int
    nats_events: int
    latency_samples: int


FULL = Sizes(rounds=5, local_events=200_000, nats_events=50_000, latency_samples=4000)
QUICK = Sizes(rounds=3, local_events=30_000, nats_events=10_000, latency_samples=1000)


def _event() -> Event:
    return Event("Deposited", "acct-1", 1, data=DATA, metadata=META)


# ---- in-process ------------------------------------------------------------------------------
async def _local_aether(events: int, subscribers: int) -> tuple[float, int]:
    bus = EventBus(buffer_size=BURST * 4)
    subs = [bus.subscribe("tenant-a.>") for _ in range(subscribers)]

    async def read(sub: Subscription) -> None:
        n = 0
        async for _ in sub:
            n += 1
            if n == events:
                return

    readers = [asyncio.create_task(read(sub)) for sub in subs]
    await asyncio.sleep(0)
    event = _event()
    publish = bus.publish
    started = time.perf_counter()
    for _ in range(events // BURST):
        for _ in range(BURST):
            await publish("tenant-a.orders", event)
        await asyncio.sleep(0)
    await asyncio.gather(*readers)
    elapsed = time.perf_counter() - started
    dropped = sum(sub.dropped for sub in subs)
    await bus.aclose()
    return events * subscribers / elapsed, dropped


async def _local_baseline(events: int, subscribers: int) -> float:
    queues: list[asyncio.Queue[Event]] = [asyncio.Queue(BURST * 4) for _ in range(subscribers)]

    async def read(queue: asyncio.Queue[Event]) -> None:
        n = 0
        while True:
            await queue.get()
            n += 1
            if n == events:
                return

    readers = [asyncio.create_task(read(q)) for q in queues]
    await asyncio.sleep(0)
    event = _event()
    started = time.perf_counter()
    for _ in range(events // BURST):
        for _ in range(BURST):
            for queue in queues:
                queue.put_nowait(event)
        await asyncio.sleep(0)
    await asyncio.gather(*readers)
    return events * subscribers / (time.perf_counter() - started)


async def bench_local(report: Report, sizes: Sizes, subscribers: int) -> None:
    events = sizes.local_events // BURST * BURST
    await _local_aether(events // 10, subscribers)  # warm-up
    await _local_baseline(events // 10, subscribers)
    best_aether = best_base = 0.0
    drops = 0
    for _ in range(sizes.rounds):
        rate, dropped = await _local_aether(events, subscribers)
        best_aether = max(best_aether, rate)
        drops += dropped
        best_base = max(best_base, await _local_baseline(events, subscribers))
    noun = "subscriber" if subscribers == 1 else "subscribers"
    report.add(GROUP, f"EventBus publish → {subscribers} {noun}", aether=best_aether, baseline=best_base,
               unit="deliveries/s", min_ratio=0.7,
               notes=f"baseline: asyncio.Queue fan-out; {events:,} events, best of {sizes.rounds}; drops {drops}")


# ---- across nodes ----------------------------------------------------------------------------
async def _nats_aether(pub: NATSEventBus, sub_bus: NATSEventBus, events: int, namespace: str) -> tuple[float, int]:
    sub = sub_bus.subscribe(namespace, buffer_size=events)
    await sub.ready()
    done = asyncio.get_running_loop().create_future()

    async def read() -> None:
        n = 0
        async for _ in sub:
            n += 1
            if n == events:
                done.set_result(None)
                return

    reader = asyncio.create_task(read())
    event = _event()
    publish = pub.publish
    started = time.perf_counter()
    for _ in range(events):
        await publish(namespace, event)
    await asyncio.wait_for(done, 120)
    elapsed = time.perf_counter() - started
    await reader
    lost = sub.dropped + sub.missed
    sub.close()
    return events / elapsed, lost


async def _registered(nc: Client) -> None:
    """Wait until the server has handled the SUBs queued on ``nc``: a probe through the connection and
    back (nats-py's ``flush()`` PING can overtake commands still queued in the client)."""
    await NATSEventBus(nc, subject_prefix="bench-probe").flush()


async def _nats_baseline(pub: Client, sub_nc: Client, events: int, subject: str, *, decode: bool = False) -> float:
    payload = encode_event(_event())
    done = asyncio.get_running_loop().create_future()
    count = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        if decode:
            decode_event(msg.data)
        count += 1
        if count == events:
            done.set_result(None)

    sub = await sub_nc.subscribe(subject, cb=on_msg)
    await _registered(sub_nc)
    publish = pub.publish
    started = time.perf_counter()
    for _ in range(events):
        await publish(subject, payload)
    await asyncio.wait_for(done, 120)
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    return events / elapsed


async def bench_nats(report: Report, sizes: Sizes) -> None:
    async with NatsServer() as server:
        pub_nc = await nats.connect(server.url)
        sub_nc = await nats.connect(server.url)
        try:
            pub = await NATSEventBus.create(pub_nc)
            receiver = await NATSEventBus.create(sub_nc)
            events = sizes.nats_events
            await _nats_aether(pub, receiver, events // 10, "warm-up")
            await _nats_baseline(pub_nc, sub_nc, events // 10, "raw.warm-up")
            best_aether = best_base = best_decoding = 0.0
            lost = 0
            for i in range(sizes.rounds):
                rate, missing = await _nats_aether(pub, receiver, events, f"bench{i}")
                best_aether = max(best_aether, rate)
                lost += missing
                best_base = max(best_base, await _nats_baseline(pub_nc, sub_nc, events, f"raw.bench{i}"))
                best_decoding = max(best_decoding, await _nats_baseline(pub_nc, sub_nc, events, f"raw.dec{i}",
                                                                        decode=True))
            report.add(GROUP, "NATSEventBus publish → remote subscriber", aether=best_aether, baseline=best_base,
                       unit="events/s", min_ratio=1.5,
                       notes=f"baseline: nats-py core pub → sub (callback) of the same bytes; {events:,} events, "
                             f"best of {sizes.rounds}; dropped+missed {lost}")
            report.add(GROUP, "NATSEventBus publish → remote subscriber, vs a decoding baseline", aether=best_aether,
                       baseline=best_decoding, unit="events/s",
                       notes="informational: the baseline subscriber also decodes each message with aether.codec, "
                             "so the ratio shows the bus's own routing (encode, sequence check, fan-out, reader)")
            await bench_latency(report, sizes, pub, receiver, pub_nc, sub_nc)
            await pub.aclose()
            await receiver.aclose()
        finally:
            await pub_nc.close()
            await sub_nc.close()


# ---- latency of an idle publisher ------------------------------------------------------------
async def _latency_aether(pub: NATSEventBus, receiver: NATSEventBus, samples: int, namespace: str) -> list[float]:
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future[None] = loop.create_future()
    sub = receiver.subscribe(namespace)
    await sub.ready()

    async def read() -> None:
        nonlocal arrived
        async for _ in sub:
            arrived.set_result(None)

    reader = asyncio.create_task(read())
    event = _event()
    out = []
    for _ in range(samples):
        arrived = loop.create_future()
        started = time.perf_counter()
        await pub.publish(namespace, event)
        await asyncio.wait_for(arrived, 60)
        out.append(time.perf_counter() - started)
    sub.close()
    await reader
    return out


async def _latency_baseline(pub: Client, sub_nc: Client, samples: int, subject: str) -> list[float]:
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future[None] = loop.create_future()

    async def on_msg(msg: Msg) -> None:
        arrived.set_result(None)

    sub = await sub_nc.subscribe(subject, cb=on_msg)
    await _registered(sub_nc)
    payload = encode_event(_event())
    out = []
    for _ in range(samples):
        arrived = loop.create_future()
        started = time.perf_counter()
        await pub.publish(subject, payload)
        await asyncio.wait_for(arrived, 60)
        out.append(time.perf_counter() - started)
    await sub.unsubscribe()
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_latency(report: Report, sizes: Sizes, pub: NATSEventBus, receiver: NATSEventBus, pub_nc: Client,
                        sub_nc: Client) -> None:
    block = max(sizes.latency_samples // 10, 50)
    await _latency_aether(pub, receiver, block, "lat.warm-up")
    await _latency_baseline(pub_nc, sub_nc, block, "raw.lat.warm-up")
    ours: list[float] = []
    raw: list[float] = []
    for i in range(sizes.latency_samples // block):  # alternate blocks: both sides see the same noise
        ours += await _latency_aether(pub, receiver, block, f"lat{i}")
        raw += await _latency_baseline(pub_nc, sub_nc, block, f"raw.lat{i}")
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        report.add(GROUP, f"NATSEventBus idle publisher latency {name}", aether=_percentile(ours, q) * 1e6,
                   baseline=_percentile(raw, q) * 1e6, unit="µs",
                   notes=f"publish → remote subscriber's async for, one event at a time; baseline: nats-py "
                         f"publish → subscription callback; {len(ours):,} samples each, alternating blocks")


async def run(report: Report, quick: bool) -> None:
    """Run every bus benchmark (see the module docstring) and add the rows to ``report``."""
    sizes = QUICK if quick else FULL
    await bench_local(report, sizes, 1)
    await bench_local(report, sizes, 10)
    await bench_nats(report, sizes)
