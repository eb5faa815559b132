"""Projections under faults: a deleted server-side consumer, a restarted server, a frozen server."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from _projection_helpers import populate_accounts
from aether.errors import AetherError
from aether.event import Event
from aether.projection import CatchUpSubscription, EventSource, Projection, ProjectionOptions, ProjectionRunner
from aether.store import JetStreamEventStore
from aether.testing import NatsServer, wait_for

pytestmark = pytest.mark.anyio


async def delete_consumers(nc: Any, stream: str) -> int:
    js = nc.jetstream()
    names = [info.name for info in await js.consumers_info(stream)]
    for name in names:
        await js.delete_consumer(stream, name)
    return len(names)


async def test_subscription_recovers_when_its_consumer_is_deleted(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name, storage="memory")
    for v in range(1, 51):
        await store.save_event(Event("Deposited", "a", v))
    got: list[int] = []
    async with CatchUpSubscription(nc, EventSource.of(store), heartbeat=0.2) as sub:
        for _ in range(25):
            got.append((await sub.__anext__()).position)
        assert await delete_consumers(nc, sub.source.stream) == 1
        for v in range(51, 101):
            await store.save_event(Event("Deposited", "a", v))
        for _ in range(75):
            got.append((await asyncio.wait_for(sub.__anext__(), 30)).position)
    assert got == list(range(1, 101))  # no gap, no duplicate across the recreation


async def test_runner_continues_exactly_once_across_a_server_restart(
        nats_server_factory: Callable[..., NatsServer], tmp_path: Path, unique_name: str) -> None:
    server = nats_server_factory(store_dir=tmp_path / "nats")
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        store = await JetStreamEventStore.create(nc, unique_name)
        await populate_accounts(store, accounts=10, per_account=30)
        seen: Counter[str] = Counter()
        projection = Projection("restart")

        @projection.on_any
        async def record(event: Event, position: int) -> None:
            seen[event.id] += 1

        options = ProjectionOptions(heartbeat=0.3, checkpoint_interval=0.1)
        async with ProjectionRunner(nc, projection, store, options=options) as runner:
            await runner.catch_up(timeout=60)
            await server.restart()

            async def appended() -> bool:
                try:
                    await populate_accounts(store, accounts=10, per_account=20, first_version=31, seed=4)
                except AetherError:
                    return False  # still reconnecting; the batches are atomic, retrying is safe
                return True

            await wait_for(appended, timeout=60, interval=0.2, message="appends after the restart")
            # the server may restore the consumer or the runner recreates it: either way, exactly once
            await runner.catch_up(timeout=60)
        assert len(seen) == 500 and max(seen.values()) == 1
    finally:
        await nc.close()


async def test_holder_steps_down_on_its_local_deadline_when_the_server_freezes(
        nats_server_factory: Callable[..., NatsServer], unique_name: str) -> None:
    server = nats_server_factory()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        store = await JetStreamEventStore.create(nc, unique_name)
        await store.save_event(Event("Deposited", "a", 1))
        projection = Projection("frozen")

        @projection.on_any
        async def ignore(event: Event, position: int) -> None:
            pass

        options = ProjectionOptions(lease_ttl=2, heartbeat=0.5, timeout=0.5)
        runner = ProjectionRunner(nc, projection, store, options=options, node_id="n1")
        await runner.start()
        try:
            async def active() -> bool:
                return runner.is_active

            async def inactive() -> bool:
                return not runner.is_active

            await wait_for(active, message="the runner to acquire the lease", timeout=60.0)
            await server.pause()  # renewals now get no answer
            try:
                await wait_for(inactive, timeout=30, message="a step-down while the server is frozen")
            finally:
                await server.resume()
            await wait_for(active, timeout=60, message="the lease to be acquired again after the freeze")
        finally:
            await runner.stop()
    finally:
        await nc.close()
