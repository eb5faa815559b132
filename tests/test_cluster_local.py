"""Cluster components in one process against a real nats-server: election, fencing, discovery,
partitions (through a freezable TCP proxy), handoff ordering, routing, metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client

from _tcp_proxy import FreezableProxy
from aether.cluster import (
    ActorRequest,
    ClusterClient,
    ClusterManager,
    LeaderElection,
    NodeDiscovery,
    NodeInfo,
    ShardManager,
)
from aether.cluster._kv import ClusterBucket, KvConflict
from aether.cluster.leader import LeaseRecord
from aether.errors import (
    AetherTimeoutError,
    ClusterError,
    FencedError,
    InvalidInputError,
    NotOwnerError,
    RequestFailedError,
)
from aether.testing import NatsServer, wait_for

pytestmark = pytest.mark.anyio




@pytest.fixture
async def connect(nats_url: str) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    clients: list[Client] = []

    async def factory(url: str = nats_url) -> Client:
        client = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


def cluster_name(unique_name: str) -> str:
    return unique_name.replace(".", "-")[:40]


# ---- leader election -----------------------------------------------------------------------------


async def test_one_leader_and_stop_releases_the_lease_at_once(connect: Callable[..., Awaitable[Client]],
                                                            unique_name: str) -> None:
    cluster = cluster_name(unique_name)
    elections = [LeaderElection(await connect(), cluster=cluster, node_id=f"e{i}") for i in range(3)]
    for e in elections:
        await e.start()
    try:
        leader_id = await elections[0].wait_for_leader()
        await wait_for(lambda: all(e.leader_id == leader_id for e in elections), message="agreement on the leader")
        leaders = [e for e in elections if e.is_leader]
        assert len(leaders) == 1 and leaders[0].node_id == leader_id
        old_term = leaders[0].term
        assert all(e.term == old_term for e in elections)

        bucket = ClusterBucket(await connect(), cluster)
        await leaders[0].stop()
        entry = await bucket.get("leader", linearizable=True)
        # released before stop() returned: a tombstone, or already a new leader's lease
        assert entry is None or entry.deleted \
            or msgspec.msgpack.decode(entry.value, type=LeaseRecord).node_id != leader_id
        await bucket.aclose()
        rest = [e for e in elections if e is not leaders[0]]
        await wait_for(lambda: any(e.is_leader for e in rest), message="a new leader")
        new = next(e for e in rest if e.is_leader)
        assert new.term > old_term
    finally:
        for e in elections:
            await e.stop()


async def test_fenced_write_is_refused_once_the_lease_changed_hands(connect: Callable[..., Awaitable[Client]],
                                                                   unique_name: str) -> None:
    cluster = cluster_name(unique_name)
    election = LeaderElection(await connect(), cluster=cluster, node_id="old")
    deposed: list[int] = []
    election.on_deposed(deposed.append)
    await election.start()
    bucket = ClusterBucket(await connect(), cluster)
    try:
        await election.wait_for_leader()
        async with election.fenced() as fence:
            await bucket.write("map", b"v1", headers=fence.headers)  # accepted while the lease is ours
        with pytest.raises(KvConflict):
            async with election.fenced() as fence:  # renewals wait while we hold the fence
                entry = await bucket.get("leader", linearizable=True)
                assert entry is not None
                await bucket.write("leader", b"usurper", last=entry.revision)  # the lease changes hands
                await bucket.write("map", b"v2", headers=fence.headers)  # refused by the server
        await wait_for(lambda: not election.is_leader and deposed == [fence.term], message="the step-down")
        with pytest.raises(FencedError):
            async with election.fenced():
                pass
        stored = await bucket.get("map", linearizable=True)
        assert stored is not None and stored.value == b"v1"
    finally:
        await election.stop()
        await bucket.aclose()


async def test_partitioned_leader_and_member_stop_before_anyone_takes_over(
        connect: Callable[..., Awaitable[Client]], nats_server: NatsServer, unique_name: str) -> None:
    """A leader and a member cut off from NATS (frozen proxy) give up by their local deadlines,
    strictly before another node takes the lease or evicts the member."""
    cluster = cluster_name(unique_name)
    moments: dict[str, float] = {}

    def mark(name: str, when: object = None) -> Callable[[Any], None]:
        def record(value: object) -> None:
            if when is None or value == when:
                moments.setdefault(name, time.monotonic())
        return record

    async with FreezableProxy(nats_server.port) as proxy:
        cut_nc = await connect(proxy.url)
        cut_election = LeaderElection(cut_nc, cluster=cluster, node_id="cut")
        cut_member = NodeDiscovery(cut_nc, NodeInfo(id="cut"), cluster=cluster)
        await cut_election.start()
        await cut_election.wait_for_leader()
        assert cut_election.is_leader
        await cut_member.start()
        other_nc = await connect()
        other_election = LeaderElection(other_nc, cluster=cluster, node_id="other")
        other_member = NodeDiscovery(other_nc, NodeInfo(id="other"), cluster=cluster)
        cut_election.on_deposed(mark("leader stepped down"))
        cut_member.on_liveness(mark("member gave up", when=False))
        other_election.on_elected(mark("other elected"))
        other_member.on_failure(mark("member evicted"))
        try:
            await other_election.start()
            await other_member.start()
            await wait_for(lambda: other_member.member("cut") is not None, message="the member to be seen")
            proxy.freeze()
            await wait_for(lambda: "other elected" in moments and "member evicted" in moments, timeout=20,
                           message="takeover and eviction")
            assert moments["leader stepped down"] < moments["other elected"]
            assert moments["member gave up"] < moments["member evicted"]
            assert other_election.term > cut_election.term or not cut_election.is_leader
            proxy.thaw()
            # once reconnected, the cut node learns it was evicted and rejoins as a new incarnation
            old_incarnation = cut_member.incarnation
            await wait_for(lambda: cut_member.is_alive and cut_member.incarnation != old_incarnation,
                           message="the rejoin")
            await wait_for(lambda: (m := other_member.member("cut")) is not None
                           and m.incarnation == cut_member.incarnation, message="the new incarnation to be seen")
            assert not cut_election.is_leader and other_election.is_leader
        finally:
            proxy.thaw()
            for closer in (cut_election.stop, cut_member.stop, other_election.stop, other_member.stop):
                await closer()


# ---- discovery -----------------------------------------------------------------------------------------


async def test_discovery_join_update_and_graceful_leave(connect: Callable[..., Awaitable[Client]],
                                                       unique_name: str) -> None:
    cluster = cluster_name(unique_name)
    seen: list[tuple[str, str]] = []
    a = NodeDiscovery(await connect(), NodeInfo(id="a", address="host-a:1", metadata={"zone": "z1"}), cluster=cluster)
    b = NodeDiscovery(await connect(), NodeInfo(id="b", weight=2), cluster=cluster)
    a.on_join(lambda info: seen.append(("join", info.id)))
    a.on_leave(lambda info: seen.append(("leave", info.id)))
    a.on_failure(lambda info: seen.append(("failure", info.id)))
    a.on_update(lambda info: seen.append(("update", info.id)))
    await a.start()
    try:
        assert [m.id for m in a.members()] == ["a"]
        await b.start()
        await wait_for(lambda: ("join", "b") in seen, message="the join")
        info = a.member("b")
        assert info is not None and info.weight == 2 and info.status == "up" and info.incarnation
        await wait_for(lambda: (m := b.member("a")) is not None and m.metadata == {"zone": "z1"},
                       message="b to see a")
        await b.announce(metadata={"role": "worker"})
        await wait_for(lambda: ("update", "b") in seen, message="the update")
        assert (m := a.member("b")) is not None and m.metadata == {"role": "worker"}
        await wait_for(lambda: (m := a.member("b")) is not None and m.load.cpu_seconds > 0, message="load figures")
        await b.stop()
        await wait_for(lambda: ("leave", "b") in seen, message="the leave")
        assert ("failure", "b") not in seen
        assert [m.id for m in a.members()] == ["a"]
        with pytest.raises(InvalidInputError):
            await a.announce(id="x")
    finally:
        await b.stop()
        await a.stop()


async def test_node_id_in_use_is_refused(connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    cluster = cluster_name(unique_name)
    first = NodeDiscovery(await connect(), NodeInfo(id="same"), cluster=cluster, heartbeat_interval=0.1,
                          failure_timeout=0.5, liveness_margin=0.1)
    await first.start()
    try:
        second = NodeDiscovery(await connect(), NodeInfo(id="same"), cluster=cluster, heartbeat_interval=0.1,
                               failure_timeout=0.5, liveness_margin=0.1)
        with pytest.raises(ClusterError, match="in use"):
            await second.start()
        assert first.is_alive
    finally:
        await first.stop()


# ---- cluster manager -----------------------------------------------------------------------------------


async def test_routing_ownership_and_graceful_leave(connect: Callable[..., Awaitable[Client]],
                                                   unique_name: str) -> None:
    cluster = cluster_name(unique_name)
    left: list[str] = []

    def handler_for(node_id: str) -> Callable[[ActorRequest], Awaitable[bytes]]:
        async def handle(req: ActorRequest) -> bytes:
            if req.payload == b"boom":
                raise RuntimeError("handler exploded")
            if req.payload == b"text":
                return "not bytes"  # type: ignore[return-value]  # a handler bug the node reports
            return f"{node_id}|{req.actor_id}|{req.shard}".encode()
        return handle

    nodes = [ClusterManager(await connect(), node_id=f"m{i}", cluster=cluster, handler=handler_for(f"m{i}"))
             for i in range(3)]
    nodes[0].on_member_leave(lambda info: left.append(info.id))
    for node in nodes:
        await node.start()
    try:
        await wait_for(lambda: sorted(s for n in nodes for s in n.owned_shards()) == list(range(64)),
                       message="all shards owned once")
        async with ClusterClient(await connect(), cluster=cluster) as client:
            await client.wait_ready()
            for i in range(40):
                actor = f"user-{i}@example.com"
                reply = (await client.request(actor, b"hi")).decode().split("|")
                owner, shard = reply[0], int(reply[2])
                assert owner == client.owner_of(actor) == nodes[0].owner_of(actor)
                assert shard == nodes[1].shard_for(actor)
                local = next(n for n in nodes if n.node_id == owner)
                assert local.is_local(actor) and all(not n.is_local(actor) for n in nodes if n is not local)
                assert (await nodes[2].request(actor, b"x")).startswith(owner.encode())
            actor = "a.b *>"
            stranger = next(n for n in nodes if not n.is_local(actor))
            with pytest.raises(NotOwnerError):
                async with stranger.ownership(actor):
                    pass
            owner_node = next(n for n in nodes if n.is_local(actor))
            async with owner_node.ownership(actor) as shard:
                assert shard == owner_node.shard_for(actor)
            with pytest.raises(RequestFailedError, match="handler exploded") as failed:
                await client.request(actor, b"boom")
            assert failed.value.error_type == "RuntimeError"
            with pytest.raises(RequestFailedError, match="must return bytes, got str") as failed:
                await client.request(actor, b"text")
            assert failed.value.error_type == "InvalidInputError"  # an Aether error, not a bare TypeError

            gone = nodes[1]
            gone_actors = [f"user-{i}@example.com" for i in range(40) if gone.is_local(f"user-{i}@example.com")]
            await gone.stop()
            await wait_for(lambda: left == ["m1"], message="the leave notification")
            rest = [nodes[0], nodes[2]]
            await wait_for(lambda: sorted(s for n in rest for s in n.owned_shards()) == list(range(64)),
                           message="the survivors to own every shard")
            for actor in gone_actors:
                assert (await client.request(actor, b"again")).decode().split("|")[0] in ("m0", "m2")
        assert [m.id for m in nodes[0].members()] == ["m0", "m2"]
    finally:
        for node in nodes:
            await node.stop()


async def test_handoff_finishes_in_flight_work_and_releases_before_the_new_owner_acquires(
        connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    cluster = cluster_name(unique_name)
    log: list[tuple[str, str, frozenset[int]]] = []
    entered, gate = asyncio.Event(), asyncio.Event()
    # an actor whose shard belongs to m0 or m1 now and moves to m2 when it joins
    sm = ShardManager(64)
    before = sm.placement({"m0": 1, "m1": 1})
    after = sm.placement({"m0": 1, "m1": 1, "m2": 1}, before)
    actor = next(f"slow-{i}" for i in range(10_000) if after[sm.shard_for(f"slow-{i}")] == "m2")
    shard = sm.shard_for(actor)
    old_owner = before[shard]

    async def handle(req: ActorRequest) -> bytes:
        if req.actor_id == actor and req.payload == b"slow":
            entered.set()
            await gate.wait()
            log.append(("finished", "handler", frozenset({req.shard})))
        return b"done"

    def track(node_id: str, node: ClusterManager) -> ClusterManager:
        node.on_shards_acquired(lambda shards: log.append(("acquired", node_id, shards)))
        node.on_shards_released(lambda shards: log.append(("released", node_id, shards)))
        return node

    def make(node_id: str) -> Awaitable[ClusterManager]:
        async def build() -> ClusterManager:  # a generous bound: the test holds the work for a while
            return track(node_id, ClusterManager(await connect(), node_id=node_id, cluster=cluster, handler=handle,
                                                 handoff_timeout=30.0))
        return build()

    nodes = [await make("m0"), await make("m1")]
    for node in nodes:
        await node.start()
    newcomer = await make("m2")
    try:
        holder = next(n for n in nodes if n.node_id == old_owner)
        await wait_for(lambda: shard in holder.owned_shards(), message="the old owner to hold the shard")
        slow = asyncio.create_task(nodes[0].request(actor, b"slow", timeout=20))
        await entered.wait()
        mark = len(log)
        await newcomer.start()
        await wait_for(lambda: (m := holder.shard_map) is not None and shard in m.handoffs,
                       message="the handoff to start")
        await asyncio.sleep(0.3)  # give a wrong implementation time to release or acquire early
        early = [(kind, who) for kind, who, shards in log[mark:] if shard in shards]
        assert not early, f"released or acquired while a request was in flight: {early}"
        gate.set()
        assert await slow == b"done", "the in-flight request finished on the old owner"
        await wait_for(lambda: shard in newcomer.owned_shards(), message="the new owner to serve the shard")
        order = [(kind, who) for kind, who, shards in log[mark:] if shard in shards]
        finished = order.index(("finished", "handler"))
        released = order.index(("released", old_owner))
        acquired = order.index(("acquired", "m2"))
        assert finished < released < acquired, order
        assert await newcomer.request(actor, b"fast") == b"done"
    finally:
        gate.set()
        for node in [*nodes, newcomer]:
            await node.stop()


async def test_client_waits_for_a_cluster_that_does_not_exist_yet(connect: Callable[..., Awaitable[Client]],
                                                                  unique_name: str) -> None:
    cluster = cluster_name(unique_name)
    async with ClusterClient(await connect(), cluster=cluster) as client:
        with pytest.raises(AetherTimeoutError):
            await client.wait_ready(timeout=0.3)
        with pytest.raises(AetherTimeoutError):
            await client.request("a", b"x", timeout=0.3)

        async def echo(req: ActorRequest) -> bytes:
            return req.payload

        async with ClusterManager(await connect(), node_id="solo", cluster=cluster, handler=echo) as node:
            shard_map = await client.wait_ready()
            assert shard_map.shard_count == 64
            assert await client.request("a", b"x") == b"x"
            assert node.owned_shards() == frozenset(range(64))


async def test_shard_count_mismatch_is_refused(connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    cluster = cluster_name(unique_name)
    first = ClusterManager(await connect(), node_id="a", cluster=cluster, shard_count=16)
    await first.start()
    try:
        await first.wait_ready()
        other = ClusterManager(await connect(), node_id="b", cluster=cluster, shard_count=32)
        with pytest.raises(ClusterError, match="16 shards"):
            await other.start()
    finally:
        await first.stop()


async def test_cluster_metrics(connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    from prometheus_client import CollectorRegistry

    from aether.metrics.cluster import ClusterMetrics

    cluster = cluster_name(unique_name)
    registry = CollectorRegistry()
    metrics = ClusterMetrics(registry)
    with pytest.raises(InvalidInputError):
        ClusterMetrics(registry)
    nodes = [ClusterManager(await connect(), node_id=f"p{i}", cluster=cluster, observer=metrics) for i in range(2)]
    await nodes[0].start()
    await nodes[0].wait_ready()  # p0 owns everything first, so p1's join moves shards (handoffs)
    await nodes[1].start()

    def value(name: str, node: str) -> float:
        return registry.get_sample_value(name, {"cluster": cluster, "node": node}) or 0.0

    try:
        await wait_for(lambda: sum(value("aether_cluster_shards_owned", n.node_id) for n in nodes) == 64
                       and all(value("aether_cluster_shards_owned", n.node_id) == 32 for n in nodes)
                       and all(value("aether_cluster_members", n.node_id) == 2 for n in nodes),
                       message="member and shard gauges")
        leader = next(n for n in nodes if n.is_leader)
        assert value("aether_cluster_is_leader", leader.node_id) == 1
        assert value("aether_cluster_leader_term", leader.node_id) == leader.term
        assert value("aether_cluster_leader_changes_total", leader.node_id) >= 1
        assert value("aether_cluster_shard_moves_total", leader.node_id) >= 1
        assert sum(value("aether_cluster_handoff_seconds_count", n.node_id) for n in nodes) >= 1
        await wait_for(lambda: value("aether_cluster_lease_renew_seconds_count", leader.node_id) >= 1,
                       message="a lease renewal")
    finally:
        for node in nodes:
            await node.stop()
    assert value("aether_cluster_is_leader", leader.node_id) == 0
    metrics.unregister()
