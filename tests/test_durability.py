"""Durability under faults (issue 7): fsync-always servers SIGKILLed at random moments, and an R3
stream whose leader is killed during writes. Verdicts: every acknowledged event is present, nothing
duplicated, versions gapless."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import nats
import pytest

from _fault_artifacts import write_json
from aether import Event
from aether.connect import close
from aether.errors import AetherError, VersionConflictError
from aether.store import JetStreamEventStore
from aether.testing import NatsCluster, NatsServer, wait_for

pytestmark = pytest.mark.anyio


class _Writers:
    """Concurrent writers that retry the same event (same id) until it is known stored or superseded."""

    def __init__(self, actors: list[str]) -> None:
        self.acked: dict[str, dict[int, str]] = {a: {} for a in actors}
        self.ack_times: list[float] = []
        self.stop = asyncio.Event()

    async def run(self, store: JetStreamEventStore, actor: str) -> None:
        version = max(self.acked[actor], default=0) + 1
        while not self.stop.is_set():
            event = Event("E", actor, version, {"v": version})
            while not self.stop.is_set():
                try:
                    await store.save_event(event)
                    self.acked[actor][version] = event.id
                    self.ack_times.append(time.monotonic())
                    version += 1
                    break
                except VersionConflictError:
                    version = await store.get_latest_version(actor) + 1
                    break
                except AetherError:
                    await asyncio.sleep(0.02)

    def verify(self, actor: str, events: list[Event]) -> None:
        versions = [e.version for e in events]
        assert versions == list(range(1, len(events) + 1)), f"{actor}: gap or duplicate in {versions[:20]}…"
        stored = {e.version: e.id for e in events}
        for version, event_id in self.acked[actor].items():
            assert stored.get(version) == event_id, f"{actor}: acknowledged version {version} lost"


async def _read_when_available(store: JetStreamEventStore, actor: str) -> list[Event]:
    """The actor's history; an R3 read needs the stream leader, which may be mid-election."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await store.get_events(actor)
        except AetherError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _safe_store(nc: Any, name: str, **options: Any) -> JetStreamEventStore:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await JetStreamEventStore.create(nc, name, **options)
        except AetherError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_sync_always_sigkill_rounds(nats_server_factory: Callable[..., NatsServer]) -> None:
    rounds = 20
    server = nats_server_factory(sync_interval="always")
    actors = [f"acc-{i}" for i in range(4)]
    writers = _Writers(actors)
    rng = random.Random(7)
    for _ in range(rounds):
        if not server.running:
            await server.start()
        nc = await nats.connect(server.url, max_reconnect_attempts=0, connect_timeout=5)
        store = await _safe_store(nc, "DURABLE", timeout=0.5, publish_retries=0)
        writers.stop.clear()
        tasks = [asyncio.create_task(writers.run(store, a)) for a in actors]
        before = len(writers.ack_times)
        await wait_for(lambda before=before: len(writers.ack_times) > before + 5, timeout=60,  # type: ignore[misc]
                       message="writes in this round")
        await asyncio.sleep(rng.uniform(0.0, 0.3))  # a random moment to inject the fault
        await server.kill()
        writers.stop.set()
        await asyncio.gather(*tasks)
        await close(nc)
    await server.start()
    nc = await nats.connect(server.url)
    try:
        store = await _safe_store(nc, "DURABLE")
        total = 0
        for actor in actors:
            events = await store.get_events(actor)
            writers.verify(actor, events)
            total += len(writers.acked[actor])
        assert total > rounds * 5
    finally:
        await close(nc)


async def test_r3_stream_leader_killed_during_writes(nats_cluster_factory: Callable[..., NatsCluster],
                                                     request: pytest.FixtureRequest) -> None:
    cluster = nats_cluster_factory(3)
    nc = await nats.connect(servers=cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        store = await _safe_store(nc, "R3FAULT", replicas=3, timeout=1.0)
        actors = [f"acc-{i}" for i in range(4)]
        writers = _Writers(actors)
        tasks = [asyncio.create_task(writers.run(store, a)) for a in actors]
        await wait_for(lambda: len(writers.ack_times) >= 50, timeout=60, message="writes before the kill")
        info = await store.stream_info()
        leader_name = info["cluster"]["leader"]
        leader = next(s for s in cluster.servers if s.server_name == leader_name)
        killed_at = time.monotonic()
        await leader.kill()
        await wait_for(lambda: any(t > killed_at for t in writers.ack_times) and
                       len([t for t in writers.ack_times if t > killed_at]) >= 50,
                       timeout=90, message="writes after the leader was killed")
        writers.stop.set()
        await asyncio.gather(*tasks)
        times = sorted(writers.ack_times)
        stall = max(b - a for a, b in itertools.pairwise(times) if b > killed_at)
        print(f"\nR3 stream leader {leader_name} killed: longest pause between acknowledged writes {stall:.2f}s")
        read = {actor: await _read_when_available(store, actor) for actor in actors}
        try:
            for actor in actors:
                writers.verify(actor, read[actor])
        except AssertionError:
            write_json(request.node.nodeid, "writer-view.json", {
                "killed": leader_name, "acked": writers.acked,
                "read": {a: [[e.version, e.id] for e in events] for a, events in read.items()}})
            raise
    finally:
        await close(nc)


async def test_server_paused_then_resumed(nats_server_factory: Callable[..., NatsServer]) -> None:
    """SIGSTOP the NATS server for a few seconds during writes: calls time out with an Aether
    error instead of hanging, and after SIGCONT the writers recover with nothing lost."""
    server = nats_server_factory()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        store = await _safe_store(nc, "PAUSED", timeout=0.5)
        actors = [f"acc-{i}" for i in range(4)]
        writers = _Writers(actors)
        tasks = [asyncio.create_task(writers.run(store, a)) for a in actors]
        await wait_for(lambda: len(writers.ack_times) >= 50, timeout=60, message="writes before the pause")
        await server.pause()
        paused_at = time.monotonic()
        await asyncio.sleep(3)  # the fault lasts 3 s; verdicts below do not depend on timing
        await server.resume()
        await wait_for(lambda: len([t for t in writers.ack_times if t > paused_at + 3]) >= 50, timeout=60,
                       message="writes after the resume")
        writers.stop.set()
        await asyncio.gather(*tasks)
        for actor in actors:
            writers.verify(actor, await store.get_events(actor))
    finally:
        await server.resume()
        await close(nc)
