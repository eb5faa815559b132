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


async def test_a_lagging_follower_never_shortens_a_history(nats_cluster_factory: Callable[..., NatsCluster]) -> None:
    """A direct get may be answered by a follower that has not applied the latest writes yet
    (it was paused here while they were committed by the other two servers): the history read
    through it still holds every acknowledged event (the store completes it from the leader).
    Without that, the read right after SIGCONT returns a short prefix (docs/reliability.md)."""
    cluster = nats_cluster_factory(3)
    admin = await nats.connect(servers=cluster.urls)
    try:
        probe = await _create(admin, "LAG")
        leader_name = (await probe.stream_info())["cluster"]["leader"]
        follower = next(s for s in cluster.servers if s.server_name != leader_name)
        others = [s.url for s in cluster.servers if s is not follower]
        writer_nc = await nats.connect(servers=others, max_reconnect_attempts=-1)
        reader_nc = await nats.connect(servers=[follower.url], max_reconnect_attempts=-1)
        writer = await _create(writer_nc, "LAG")
        reader = await _create(reader_nc, "LAG")  # a reader that never wrote: no cache to go by
        version = 0
        for _ in range(5):
            await follower.pause()
            try:
                for _ in range(4):
                    batch = [Event("E", "acc", version + i + 1) for i in range(50)]
                    await writer.save_events(batch)
                    version += 50
            finally:
                await follower.resume()
            events = await reader.get_events("acc")  # right away: the follower is still catching up
            assert [e.version for e in events] == list(range(1, version + 1))
        await writer_nc.close()
        await reader_nc.close()
    finally:
        await admin.close()
