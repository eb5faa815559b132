"""Suspicion under load (issue 17): eviction and lease takeover wait longer while event loops
lag, never shorter; the eviction clock starts no earlier than the heartbeat was sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import nats
import pytest
from nats.aio.client import Client

from aether.cluster import LeaderElection, NodeDiscovery, NodeInfo, NodeLoad
from aether.cluster._kv import ClusterBucket
from aether.cluster._lag import LagTracker, lag_tracker, suspicion_grace
from aether.cluster.leader import LEADER_KEY, LeaseRecord
from aether.connect import close
from aether.names import encode_token
from aether.testing import wait_for

pytestmark = pytest.mark.anyio


def test_grace_is_the_larger_lag_capped_at_the_timeout() -> None:
    assert suspicion_grace(1.5, local=0.0) == 0.0
    assert suspicion_grace(1.5, local=0.4, remote=0.1) == 0.4
    assert suspicion_grace(1.5, local=0.1, remote=0.7) == 0.7
    assert suspicion_grace(1.5, local=9.0) == 1.5
    assert suspicion_grace(1.5, local=-1.0, remote=-2.0) == 0.0


def test_tracker_remembers_recent_lags_only() -> None:
    tracker = LagTracker()
    tracker.note(0.001)  # noise
    assert tracker.recent(10) == 0.0
    tracker.note(0.5, at=time.monotonic() - 20)  # seen 20 s ago
    tracker.note(0.2)
    assert tracker.recent(10) == 0.2
    assert tracker.recent(30) == 0.5
    tracker.note(0.7)
    assert tracker.recent(10) == 0.7


async def test_one_tracker_per_event_loop() -> None:
    assert lag_tracker() is lag_tracker()


@pytest.fixture
async def connect(nats_url: str) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    clients: list[Client] = []

    async def factory() -> Client:
        client = await nats.connect(nats_url)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await close(client)


@pytest.mark.parametrize("reported_lag", [0.0, 0.8])
async def test_a_silent_member_is_evicted_no_earlier_than_timeout_plus_its_reported_lag(
        reported_lag: float, connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    cluster = unique_name.replace(".", "-")[:40]
    timeout = 1.0
    observer = NodeDiscovery(await connect(), NodeInfo(id="observer"), cluster=cluster, heartbeat_interval=0.2,
                             failure_timeout=timeout, check_interval=0.05)
    failed: list[tuple[str, float]] = []
    observer.on_failure(lambda info: failed.append((info.id, time.monotonic())))
    async with observer:
        bucket = ClusterBucket(await connect(), cluster)
        ghost = NodeInfo(id="ghost", incarnation="g1", beat=1, load=NodeLoad(event_loop_lag=reported_lag))
        sent_at = time.monotonic()
        await bucket.write("node." + encode_token("ghost"), msgspec.msgpack.encode(ghost), last=0, ttl=30.0)
        # one heartbeat, then silence: joins, then is evicted
        await wait_for(lambda: observer.member("ghost") is not None, timeout=10)
        await wait_for(lambda: bool(failed), timeout=20)
        assert failed[0][0] == "ghost" and observer.member("ghost") is None
        silent = failed[0][1] - sent_at
        assert silent >= timeout + reported_lag, f"evicted after {silent:.2f}s of silence"


async def test_lease_takeover_waits_longer_while_the_loop_lags(connect: Callable[..., Awaitable[Client]],
                                                               unique_name: str) -> None:
    """A candidate whose loop lagged 0.8 s waits lease_ttl + 0.8 s on a silent leader's lease."""
    cluster = unique_name.replace(".", "-")[:40]
    lease_ttl = 1.0
    bucket = ClusterBucket(await connect(), cluster)
    await bucket.ensure()
    record = msgspec.msgpack.encode(LeaseRecord(node_id="ghost", term=0, token="t"))
    sent_at = time.monotonic()
    await bucket.write(LEADER_KEY, record, last=0, ttl=30.0)  # a leader that never renews
    candidate = LeaderElection(await connect(), cluster=cluster, node_id="candidate", lease_ttl=lease_ttl,
                               renew_interval=0.3, step_down_margin=0.1, check_interval=0.05)
    elected: list[float] = []
    candidate.on_elected(lambda term: elected.append(time.monotonic()))
    tracker = lag_tracker()
    async with candidate:
        await wait_for(lambda: candidate.leader_id == "ghost", timeout=10)
        for _ in range(20):  # keep reporting lag while the lease goes stale
            tracker.note(0.8)
            if elected:
                break
            await asyncio.sleep(0.1)
        await wait_for(lambda: bool(elected), timeout=20)
        assert elected[0] - sent_at >= lease_ttl + 0.8, f"took over after {elected[0] - sent_at:.2f}s"
        assert candidate.is_leader
