"""The JetStream store on a 3-server NATS cluster with R3 streams."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import nats
import pytest

from aether import Event
from aether.errors import AetherError, VersionConflictError
from aether.store import JetStreamEventStore
from aether.testing import NatsCluster
from aether.testing.conformance import append_with_retry

pytestmark = pytest.mark.anyio


async def _create(nc: Any, name: str) -> JetStreamEventStore:
    # the meta leader may still be settling right after the cluster starts
    for _ in range(100):
        try:
            return await JetStreamEventStore.create(nc, name, replicas=3, timeout=2.0)
        except AetherError:
            await asyncio.sleep(0.2)
    raise AssertionError("could not create an R3 stream")


async def test_r3_store_semantics_and_idempotent_retries(nats_cluster_factory: Callable[..., NatsCluster]) -> None:
    cluster = nats_cluster_factory(3)
    nc1 = await nats.connect(servers=[cluster.urls[0]])
    nc2 = await nats.connect(servers=[cluster.urls[1]])
    try:
        a = await _create(nc1, "R3")
        b = await _create(nc2, "R3")
        assert (await a.stream_info())["config"]["num_replicas"] == 3
        assert await b.get_latest_version("acc") == 0
        event = Event("E", "acc", 1)
        await a.save_event(event)
        await b.save_event(event)  # retry of a stored event through another server: no duplicate
        batch = [Event("E", "acc", v) for v in (2, 3, 4)]
        await a.save_events(batch)
        await b.save_events(batch)  # retried batch: de-duplication runs first on a cluster
        with pytest.raises(VersionConflictError):
            await b.save_event(Event("E", "acc", 3))
        assert [e.version for e in await b.get_events("acc")] == [1, 2, 3, 4]

        await asyncio.gather(*(append_with_retry(s, "hot") for s in [a, b] * 50))
        events = await a.get_events("hot")
        assert [e.version for e in events] == list(range(1, 101))
    finally:
        await nc1.close()
        await nc2.close()
