"""Server faults: SIGKILL between and during writes, calls while the server is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import nats
import pytest

from aether import Event
from aether.connect import close
from aether.errors import AetherError, AetherTimeoutError, StoreUnavailableError, VersionConflictError
from aether.store import JetStreamEventStore
from aether.testing import NatsServer, wait_for

pytestmark = pytest.mark.anyio


async def _connect(url: str) -> Any:
    return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, connect_timeout=2)


async def test_sigkill_between_writes_loses_nothing(nats_server_factory: Callable[..., NatsServer]) -> None:
    server = nats_server_factory()
    nc = await _connect(server.url)
    try:
        store = await JetStreamEventStore.create(nc, "FAULTS", timeout=1.0)
        for v in range(1, 51):
            await store.save_event(Event("E", "acc", v, {"v": v}))
        await store.save_events([Event("E", "acc", v) for v in range(51, 61)])

        await server.kill()
        started = time.monotonic()
        with pytest.raises((StoreUnavailableError, AetherTimeoutError)):
            await store.save_event(Event("E", "acc", 61))
        with pytest.raises(AetherError):
            await store.get_events("acc")
        with pytest.raises(AetherError):
            await store.get_latest_version("acc")
        assert time.monotonic() - started < 30, "calls while the server is down must fail, not hang"

        await server.start()
        await wait_for(lambda: nc.is_connected, timeout=30, message="client reconnect")
        events = await store.get_events("acc")
        assert [e.version for e in events] == list(range(1, 61))
        assert len({e.id for e in events}) == 60
        await store.save_event(Event("E", "acc", 61))
        assert await store.get_latest_version("acc") == 61
    finally:
        await close(nc)


async def test_sigkill_during_concurrent_writes(nats_server_factory: Callable[..., NatsServer]) -> None:
    """Writers keep retrying the SAME event across a SIGKILL + restart: every acknowledged event is
    stored exactly once, histories stay gapless, and nothing is duplicated."""
    server = nats_server_factory()
    nc = await _connect(server.url)
    acked: dict[str, set[str]] = {f"w{i}": set() for i in range(4)}
    stop = asyncio.Event()
    progress = {"n": 0}

    async def writer(store: JetStreamEventStore, actor: str) -> None:
        version = 1
        while not stop.is_set():
            event = Event("E", actor, version, {"v": version})
            while True:  # retry the same event (same id) until it is known stored or superseded
                try:
                    await store.save_event(event)
                    acked[actor].add(event.id)
                    progress["n"] += 1
                    version += 1
                    break
                except VersionConflictError:
                    version = await store.get_latest_version(actor) + 1
                    break
                except AetherError:
                    await asyncio.sleep(0.05)
                    if stop.is_set():
                        return

    try:
        store = await JetStreamEventStore.create(nc, "FAULTS2", timeout=1.0)
        tasks = [asyncio.create_task(writer(store, actor)) for actor in acked]
        await wait_for(lambda: progress["n"] >= 100, timeout=60, message="writes before the kill")
        await server.kill()
        await asyncio.sleep(0.3)  # let writers hit the outage (verdicts do not depend on it)
        await server.start()
        await wait_for(lambda: nc.is_connected, timeout=30, message="reconnect")
        mark = progress["n"]
        await wait_for(lambda: progress["n"] >= mark + 100, timeout=60, message="writes after the restart")
        stop.set()
        await asyncio.gather(*tasks)
        for actor, ids in acked.items():
            events = await store.get_events(actor)
            assert [e.version for e in events] == list(range(1, len(events) + 1)), actor
            stored_ids = [e.id for e in events]
            assert len(set(stored_ids)) == len(stored_ids)
            assert ids <= set(stored_ids), f"{actor}: acknowledged events missing"
    finally:
        stop.set()
        await close(nc)


async def test_unreachable_server_is_a_clear_error(nats_server_factory: Callable[..., NatsServer]) -> None:
    from aether.errors import NatsConnectionError

    server = nats_server_factory()
    nc = await _connect(server.url)
    try:
        store = await JetStreamEventStore.create(nc, "DOWN", timeout=0.5)
        await server.kill()
        await wait_for(lambda: not nc.is_connected, timeout=10, message="disconnect noticed")
        with pytest.raises(NatsConnectionError, match="NATS connection is"):
            await store.save_event(Event("E", "a", 1))
    finally:
        await close(nc)
