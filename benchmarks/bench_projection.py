"""Projection benchmarks (issue 6): catch-up throughput against a raw nats-py consumer.

One ``aether.testing.NatsServer`` (file storage) holds a stream of stored events (1,000
actors, written with ``save_events``). Each round reads the whole stream once with the raw
baseline and once with each Aether variant, alternating (the machine is shared and noisy);
each row reports the best round of each side.

* Baseline: nats-py's ordered push consumer (``js.subscribe(..., ordered_consumer=True)``) with
  a callback that only counts messages — no decoding. It is the fastest way nats-py offers to
  read a stream (a pull consumer's ``fetch`` was about 4x slower on this machine).
* Aether ``ProjectionRunner``: from ``start()`` (checkpoint lookup, buckets, consumer) until
  every event has been decoded, dispatched to its handler by event type and the position
  advanced (a fresh projection name per round, so each starts at position 0).
* ``CatchUpSubscription`` (``async for``) and an 8-lane parallel runner, for information.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from aether.event import Event
from aether.projection import CatchUpSubscription, EventSource, Projection, ProjectionOptions, ProjectionRunner
from aether.store import JetStreamEventStore
from aether.testing import NatsServer
from benchmarks._harness import Report

__all__ = ["run"]

GROUP = "projection"
DATA: dict[str, Any] = {"amount": 125, "currency": "EUR", "account": "ACC-000123"}
META: dict[str, str] = {"correlation_id": "c0ffee00-0000-4000-8000-000000000001"}


async def populate(store: JetStreamEventStore, events: int, actors: int = 1000) -> None:
    per_actor = events // actors
    gate = asyncio.Semaphore(32)

    async def write(actor: int) -> None:
        async with gate:
            for start in range(1, per_actor + 1, 100):
                end = min(per_actor, start + 99)
                await store.save_events([Event("Deposited", f"acct-{actor}", v, DATA, META)
                                         for v in range(start, end + 1)])

    await asyncio.gather(*(write(a) for a in range(actors)))


async def raw_consumer(nc: Client, source: EventSource, n: int) -> float:
    """Events per second plain nats-py ordered consumers deliver ``n`` events of ``source``."""
    js = nc.jetstream()
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    count = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        count += 1
        if count == n and not done.done():
            done.set_result(None)

    started = time.perf_counter()
    subs = [await js.subscribe(part.event_filter, stream=part.stream, cb=on_msg, ordered_consumer=True)
            for part in source.parts]  # one ordered consumer per partition stream
    await asyncio.wait_for(done, 300)
    seconds = time.perf_counter() - started
    for sub in subs:
        await sub.unsubscribe()
    return n / seconds


async def runner_catch_up(nc: Client, source: EventSource, n: int, head: int, name: str, concurrency: int = 1) -> float:
    handled = 0
    projection = Projection(name)

    @projection.on("Deposited")
    async def deposited(event: Event, position: int) -> None:
        nonlocal handled
        handled += 1

    options = ProjectionOptions(concurrency=concurrency, max_in_flight=max(1000, concurrency))
    started = time.perf_counter()
    async with ProjectionRunner(nc, projection, source, options=options) as runner:
        await runner.wait_until(head, timeout=300)
        seconds = time.perf_counter() - started
    if handled != n:
        raise RuntimeError(f"the projection handled {handled} events, expected {n}")
    return n / seconds


async def subscription_catch_up(nc: Client, source: EventSource, n: int) -> float:
    count = 0
    started = time.perf_counter()
    async with CatchUpSubscription(nc, source) as sub:
        async for _ in sub:
            count += 1
            if count == n:
                break
        seconds = time.perf_counter() - started
    return n / seconds


async def run(report: Report, quick: bool) -> None:
    n = 20_000 if quick else 100_000
    rounds = 3 if quick else 5
    async with NatsServer() as server:
        nc = await nats.connect(server.url)
        try:
            store = await JetStreamEventStore.create(nc, "bench-projection")
            await populate(store, n)
            source = EventSource.of(store)
            head = int((await store.stream_info())["state"]["last_seq"])
            best: dict[str, float] = {"raw": 0.0, "runner": 0.0, "subscription": 0.0, "parallel": 0.0}
            await raw_consumer(nc, source, n)  # warm-up: page cache, server-side stream state
            for i in range(rounds):
                best["raw"] = max(best["raw"], await raw_consumer(nc, source, n))
                best["runner"] = max(best["runner"], await runner_catch_up(nc, source, n, head, f"bench-{i}"))
                best["subscription"] = max(best["subscription"], await subscription_catch_up(nc, source, n))
                best["parallel"] = max(best["parallel"],
                                       await runner_catch_up(nc, source, n, head, f"bench-par-{i}", concurrency=8))
            notes = f"best of {rounds} alternating rounds; baseline: nats-py ordered push consumer, count only"
            report.add(GROUP, f"ProjectionRunner catch-up, {n:,} stored events", aether=best["runner"],
                       baseline=best["raw"], unit="events/s", min_ratio=0.8, notes=notes)
            report.add(GROUP, f"CatchUpSubscription (async for), {n:,} events", aether=best["subscription"],
                       baseline=best["raw"], unit="events/s", notes="for information")
            report.add(GROUP, f"ProjectionRunner, 8 parallel lanes, {n:,} events", aether=best["parallel"],
                       baseline=best["raw"], unit="events/s", notes="for information (no-op handler)")
        finally:
            await nc.close()
