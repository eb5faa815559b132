"""Least privilege for the bus, the cluster and projections.

Every test runs a real nats-server whose users hold EXACTLY the allow lists of
:mod:`aether.permissions`; each component must work under them without a single permission
violation, and a user limited to ``tenant-a`` must get a clear PermissionDeniedError — and no
data — when it reaches for ``tenant-b``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client

from aether import Event
from aether._nats import consume as consumer_module
from aether.bus import NATSEventBus, Subscription
from aether.cluster import ActorRequest, ClusterClient, ClusterManager
from aether.connect import connect as aether_connect
from aether.errors import PermissionDeniedError
from aether.permissions import (
    Permissions,
    authorization_config,
    bus_permissions,
    catch_up_permissions,
    cluster_client_permissions,
    cluster_node_permissions,
    merge,
    projection_permissions,
    store_permissions,
)
from aether.projection import (
    CatchUpSubscription,
    Checkpoint,
    CheckpointStore,
    DeadLetterQueue,
    EventSource,
    Projection,
    ProjectionLease,
    ProjectionOptions,
    ProjectionRunner,
    RetryPolicy,
)
from aether.projection.checkpoint import checkpoint_key
from aether.store import JetStreamEventStore
from aether.testing import NatsServer
from aether.testing.waiting import wait_for

pytestmark = pytest.mark.anyio

Connect = Callable[..., Awaitable[Client]]


class Violations:
    """Collects the permission violations the server reports on one connection."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            self.seen.append(str(exc))


def user(name: str, permissions: Permissions) -> dict[str, Any]:
    return {"user": name, "password": f"{name}-pw", "permissions": permissions}


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[tuple[Client, Violations]]]]:
    clients: list[Client] = []

    async def factory(server: NatsServer, name: str, inbox_prefix: str = "_INBOX") -> tuple[Client, Violations]:
        violations = Violations()
        # through aether.connect: it composes Aether's permission watch with error_cb (a client from
        # plain nats.connect would see refusals only as timeouts)
        client = await aether_connect(server.url, user=name, password=f"{name}-pw", inbox_prefix=inbox_prefix,
                                      error_cb=violations.record, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        clients.append(client)
        return client, violations

    yield factory
    for client in clients:
        await client.close()


async def next_event(sub: Subscription, timeout: float = 10.0) -> Event:
    async with asyncio.timeout(timeout):
        return await anext(sub)


# ---- the event bus ---------------------------------------------------------------------------------


async def test_bus_works_under_its_permissions_and_keeps_tenants_apart(
        nats_server_factory: Callable[..., NatsServer],
        connect: Callable[..., Awaitable[tuple[Client, Violations]]]) -> None:
    a_perms = bus_permissions(["tenant-a", "tenant-a.>"], publish_namespaces=["tenant-a", "tenant-a.>"],
                              inbox_prefix="_INBOX_tenant_a")
    b_perms = bus_permissions(["tenant-b"], publish_namespaces=["tenant-b"], inbox_prefix="_INBOX_tenant_b")
    server = nats_server_factory(extra_config=authorization_config([
        user("alice", a_perms), user("alice2", a_perms), user("bob", b_perms)]))
    a1_nc, a1_violations = await connect(server, "alice", "_INBOX_tenant_a")
    a2_nc, a2_violations = await connect(server, "alice2", "_INBOX_tenant_a")
    b_nc, b_violations = await connect(server, "bob", "_INBOX_tenant_b")
    # everything alice and bob are allowed to do works, end to end, across connections
    async with (await NATSEventBus.create(a1_nc) as a1, await NATSEventBus.create(a2_nc) as a2,
                await NATSEventBus.create(b_nc) as b, a2.subscribe("tenant-a") as a_sub,
                a2.subscribe("tenant-a.>") as a_below, a2.subscribe("tenant-a.orders") as a_narrow,
                b.subscribe("tenant-b") as b_sub):
        await a1.publish("tenant-a", Event("Opened", "acc-1", 1))
        await a1.publish("tenant-a.orders", Event("Placed", "o-1", 1))
        await b.publish("tenant-b", Event("Secret", "s-1", 1, {"owner": "b"}))
        assert (await next_event(a_sub)).actor_id == "acc-1"
        assert (await next_event(a_below)).actor_id == "o-1"
        assert (await next_event(a_narrow)).actor_id == "o-1"
        received_b = await next_event(b_sub)
        assert received_b.data == {"owner": "b"}
        await a1.flush()
        await b.flush()
        await a2.flush()
        assert a1_violations.seen == [] and a2_violations.seen == [] and b_violations.seen == []

        # ---- reading tenant-b: the server refuses, the subscription says so, no event arrives
        for pattern in ("tenant-b", "tenant-b.>", "*", ">"):
            sneaky = a2.subscribe(pattern)
            with pytest.raises(PermissionDeniedError, match="refused"):
                await sneaky.ready()
            with pytest.raises(PermissionDeniedError):
                await next_event(sneaky)
            assert sneaky.closed
            with pytest.raises(PermissionDeniedError):
                async with a2.subscribe(pattern):
                    pass  # pragma: no cover - entering fails
        await b.publish("tenant-b", Event("Secret", "s-1", 2, {"owner": "b"}))
        await b.flush()
        await a2.flush()
        assert a_sub.pending == 0 and a_below.pending == 0 and a_narrow.pending == 0

        # ---- writing tenant-b: the server drops it, flush() and the next publish say so
        await a1.publish("tenant-b", Event("Forged", "s-1", 3, {"owner": "alice"}))
        with pytest.raises(PermissionDeniedError, match="refused"):
            await a1.flush()
        with pytest.raises(PermissionDeniedError, match="refused"):
            await a1.publish("tenant-b", Event("Forged", "s-1", 3, {"owner": "alice"}))
        await a1.flush()  # reported once: the bus is usable again
        await b.flush()
        assert (await next_event(b_sub)).version == 2  # bob's own second event (local delivery) ...
        assert b_sub.pending == 0  # ... and nothing forged by alice
        await a1.publish("tenant-a", Event("Opened", "acc-2", 1))  # alice's own namespace still works
        assert (await next_event(a_sub)).actor_id == "acc-2"
    assert a1_nc.is_connected and a2_nc.is_connected and b_nc.is_connected
    # the only refusals were the attempts on tenant-b (and on the wildcards covering it)
    refused = {v.rpartition(" to ")[2].strip('"') for v in a1_violations.seen + a2_violations.seen}
    assert refused == {"aetherbus.tenant-b.*", "aetherbus.tenant-b.*.>", "aetherbus.*.*", "aetherbus.*.>",
                       "aetherbus.tenant-b.forged"}
    assert b_violations.seen == []


async def test_bus_without_its_inbox_permission_fails_clearly(
        nats_server_factory: Callable[..., NatsServer],
        connect: Callable[..., Awaitable[tuple[Client, Violations]]]) -> None:
    """The bus confirms subscriptions through its own inbox: without that permission a subscription
    fails with PermissionDeniedError instead of waiting forever."""
    perms = bus_permissions(["tenant-a"], publish_namespaces=["tenant-a"], inbox_prefix="_INBOX_a")
    perms["publish"]["allow"].remove("_INBOX_a.>")
    server = nats_server_factory(extra_config=authorization_config([user("alice", perms)]))
    nc, _ = await connect(server, "alice", "_INBOX_a")
    async with await NATSEventBus.create(nc, timeout=30) as bus:
        sub = bus.subscribe("tenant-a")
        with pytest.raises(PermissionDeniedError, match="probe"):
            await sub.ready()
        with pytest.raises(PermissionDeniedError, match="probe"):
            await bus.flush()


# ---- a cluster node ----------------------------------------------------------------------------------


def _node_handler(node_id: str) -> Callable[[ActorRequest], Awaitable[bytes]]:
    async def handler(request: ActorRequest) -> bytes:
        return f"{node_id}:{request.actor_id}:{request.payload.decode()}".encode()

    return handler


async def test_cluster_works_under_its_permissions_and_other_clusters_are_refused(
        nats_server_factory: Callable[..., NatsServer],
        connect: Callable[..., Awaitable[tuple[Client, Violations]]]) -> None:
    cluster = "tenant-a"
    server = nats_server_factory(extra_config=authorization_config([
        # each node has its own inbox prefix: answering the other's requests needs allow_responses
        user("n1", cluster_node_permissions(cluster, "n1", inbox_prefix="_INBOX_n1")),
        user("n2", cluster_node_permissions(cluster, "n2", inbox_prefix="_INBOX_n2")),
        user("gateway", cluster_client_permissions(cluster, inbox_prefix="_INBOX_gw")),
    ]))
    n1_nc, n1_violations = await connect(server, "n1", "_INBOX_n1")
    n2_nc, n2_violations = await connect(server, "n2", "_INBOX_n2")
    gw_nc, gw_violations = await connect(server, "gateway", "_INBOX_gw")
    options: dict[str, Any] = {"shard_count": 16, "storage": "memory"}
    async with ClusterManager(n1_nc, node_id="n1", cluster=cluster, handler=_node_handler("n1"), **options) as n1, \
            ClusterManager(n2_nc, node_id="n2", cluster=cluster, handler=_node_handler("n2"), **options) as n2, \
            ClusterClient(gw_nc, cluster=cluster) as gateway:
        await wait_for(lambda: n1.leader_id is not None and n1.leader_id == n2.leader_id
                       and len(n1.members()) == 2 and len(n2.members()) == 2
                       and bool(n1.owned_shards()) and bool(n2.owned_shards())
                       and len(n1.owned_shards() | n2.owned_shards()) == 16,
                       timeout=30, message="a leader and both nodes owning shards")
        await n1.wait_ready()
        await n2.wait_ready()
        await gateway.wait_ready()
        actors = [f"acc-{i}" for i in range(40)]
        remote_of_n1 = next(a for a in actors if n1.owner_of(a) == "n2")
        remote_of_n2 = next(a for a in actors if n2.owner_of(a) == "n1")
        assert await n1.request(remote_of_n1, b"x", timeout=10) == f"n2:{remote_of_n1}:x".encode()
        assert await n2.request(remote_of_n2, b"y", timeout=10) == f"n1:{remote_of_n2}:y".encode()
        for actor in actors[:8]:
            owner = n1.owner_of(actor)
            assert await gateway.request(actor, b"z", timeout=10) == f"{owner}:{actor}:z".encode()
        assert n1_violations.seen == [] and n2_violations.seen == [] and gw_violations.seen == []

        # a member of tenant-a cannot join, watch or call another cluster
        with pytest.raises(PermissionDeniedError):
            await ClusterManager(n1_nc, node_id="n1", cluster="tenant-b", **options).start()
        outsider = ClusterClient(gw_nc, cluster="tenant-b")
        with pytest.raises(PermissionDeniedError):
            await outsider.start()
        await outsider.aclose()
        assert n1_nc.is_connected and gw_nc.is_connected
    assert n2_violations.seen == []  # a graceful stop (tombstones, lease release) needs nothing more
    assert n1_violations.seen and all("tenant-b" in v for v in n1_violations.seen + gw_violations.seen)


# ---- a projection --------------------------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.n = 0


async def test_projection_works_under_its_permissions_and_tenant_b_is_refused(
        nats_server_factory: Callable[..., NatsServer],
        connect: Callable[..., Awaitable[tuple[Client, Violations]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = "_INBOX_tenant_a"
    options = ProjectionOptions(retry=RetryPolicy(max_attempts=1), checkpoint_interval=0.05, lease_ttl=5)
    alice_perms = merge(
        store_permissions("EV", "tenant-a", inbox_prefix=inbox, may_create=True),
        projection_permissions("EV", "tenant-a", "balances", inbox_prefix=inbox, clustered=True, options=options),
        catch_up_permissions("EV", "tenant-a", inbox_prefix=inbox),
    )
    server = nats_server_factory(extra_config=authorization_config([
        {"user": "admin", "password": "admin-pw"}, user("alice", alice_perms)]))
    admin, _ = await connect(server, "admin")
    alice, violations = await connect(server, "alice", inbox)

    # instrument (not replace) flow-control answers, to show that path ran under the permissions
    flow_control = _Counter()
    respond = consumer_module.OrderedConsumer.respond

    async def counting_respond(self: consumer_module.OrderedConsumer, subject: str) -> None:
        flow_control.n += 1
        await respond(self, subject)

    monkeypatch.setattr(consumer_module.OrderedConsumer, "respond", counting_respond)

    # tenant-b's data, and a projection of it, set up by the administrator
    store_b = await JetStreamEventStore.create(admin, "EV", namespace="tenant-b", storage="memory")
    await store_b.save_event(Event("Deposited", "secret", 1, {"amount": 1}))
    async with ProjectionRunner(admin, Projection("balances", {"Deposited": _noop}), store_b) as runner_b:
        await runner_b.catch_up(timeout=10)

    # alice's own tenant: ~4 MB of events, enough for the server to ask for flow control
    store = await JetStreamEventStore.create(alice, "EV", namespace="tenant-a", storage="memory")
    blob = "x" * 1000
    for actor in range(40):
        await store.save_events([Event("Deposited", f"acc-{actor}", v, {"amount": 1, "memo": blob})
                                 for v in range(1, 101)])
    await store.save_event(Event("Poison", "bad", 1))

    handled: list[int] = []
    projection = Projection("balances")

    @projection.on("Deposited")
    async def deposited(event: Event, position: int) -> None:
        handled.append(position)

    @projection.on("Poison")
    async def poison(event: Event, position: int) -> None:
        raise RuntimeError("cannot apply")

    async with ProjectionRunner(alice, projection, store, node_id="node-1", options=options) as runner:
        head = await runner.catch_up(timeout=30)
        assert head == 4001 and len(handled) == 4000
        assert runner.term > 0 and await runner.holder() == "node-1"
        letters = await runner.dead_letters()
        assert [(d.sequence, d.event_type) for d in letters] == [(4001, "Poison")]
    checkpoints = CheckpointStore(alice)
    await checkpoints.open()
    saved = await checkpoints.load(checkpoint_key(store.stream, "balances"))
    assert saved is not None and saved.position == 4001

    async with CatchUpSubscription(alice, EventSource.of(store), after=3990) as sub:
        assert await sub.head() == 4001
        positions = []
        async for stored in sub:
            positions.append(stored.position)
            if stored.position == 4001:
                break
        assert positions == list(range(3991, 4002))
    assert flow_control.n > 0
    assert violations.seen == []

    # alice against tenant-b: every projection entry point is refused, nothing is delivered
    source_b = EventSource("EV", "tenant-b")
    with pytest.raises(PermissionDeniedError):
        await ProjectionRunner(alice, Projection("balances", {"Deposited": _noop}), source_b).start()
    sneaky = CatchUpSubscription(alice, source_b)
    with pytest.raises(PermissionDeniedError):
        await sneaky.start()
    await sneaky.aclose()
    with pytest.raises(PermissionDeniedError):
        await CatchUpSubscription(alice, source_b).head()
    with pytest.raises(PermissionDeniedError):
        await DeadLetterQueue(alice, source_b).read()
    key_b = checkpoint_key(source_b.stream, "balances")
    with pytest.raises(PermissionDeniedError):  # a clear refusal, not a nats-py timeout
        await checkpoints.load(key_b)
    with pytest.raises(PermissionDeniedError):
        await checkpoints.save(key_b, Checkpoint(0))
    lease_b = ProjectionLease(alice, bucket=options.lease_bucket_name(), key=key_b, node_id="node-1", ttl=5)
    await lease_b.open()
    with pytest.raises(PermissionDeniedError):
        await lease_b.try_acquire()
    # a projection left out of alice's permissions is refused too (its checkpoint key is not hers)
    with pytest.raises(PermissionDeniedError):
        await ProjectionRunner(alice, Projection("other", {"Deposited": _noop}), store).start()
    assert alice.is_connected
    assert all("tenant-b" in v or "tenant-a.other" in v for v in violations.seen)


async def _noop(event: Event, position: int) -> None:
    return None


async def test_forgetting_the_inbox_prefix_is_a_clear_error(
        nats_server_factory: Callable[..., NatsServer],
        connect: Callable[..., Awaitable[tuple[Client, Violations]]]) -> None:
    """The most common mistake: permissions for ``_INBOX_a`` but a client on the default ``_INBOX``."""
    inbox = "_INBOX_a"
    server = nats_server_factory(extra_config=authorization_config([user("alice", merge(
        store_permissions("EV", "tenant-a", inbox_prefix=inbox, may_create=True),
        bus_permissions(["tenant-a"], publish_namespaces=["tenant-a"], inbox_prefix=inbox)))]))
    nc, _ = await connect(server, "alice")  # default inbox prefix
    with pytest.raises(PermissionDeniedError, match="subscription to \"_inbox"):
        await JetStreamEventStore.create(nc, "EV", namespace="tenant-a", timeout=30)
    async with await NATSEventBus.create(nc, timeout=30) as bus:
        with pytest.raises(PermissionDeniedError, match="probe"):
            await bus.subscribe("tenant-a").ready()


async def test_a_shared_checkpoint_bucket_reveals_no_other_key(
        nats_server_factory: Callable[..., NatsServer],
        connect: Callable[..., Awaitable[tuple[Client, Violations]]]) -> None:
    """Even asked directly (raw NATS, any request body), the key-named direct get that a projection
    is allowed returns its own checkpoint only: another tenant's key in the same bucket stays out of reach."""
    inbox = "_INBOX_a"
    server = nats_server_factory(extra_config=authorization_config([
        {"user": "admin", "password": "admin-pw"},
        user("alice", projection_permissions("EV", "tenant-a", "balances", inbox_prefix=inbox))]))
    admin, _ = await connect(server, "admin")
    alice, _ = await connect(server, "alice", inbox)
    checkpoints = CheckpointStore(admin)
    await checkpoints.open()
    await checkpoints.save(checkpoint_key("EV__tenant-b", "balances"), Checkpoint(42, "b-node"))
    await checkpoints.save(checkpoint_key("EV__tenant-a", "balances"), Checkpoint(7, "a-node"))
    own = "$JS.API.DIRECT.GET.KV_aether-projections.$KV.aether-projections.EV__tenant-a.balances"
    assert b'"position":7' in (await alice.request(own, b"", timeout=10)).data
    for body in ({"last_by_subj": "$KV.aether-projections.EV__tenant-b.balances"}, {"seq": 1},
                 {"seq": 1, "next_by_subj": ">"}, {"multi_last": [">"], "batch": 10}):
        reply = await alice.request(own, json.dumps(body).encode(), timeout=10)
        assert (reply.headers or {}).get("Status") == "408" and b"42" not in reply.data
    alice_store = CheckpointStore(alice)
    await alice_store.open()
    with pytest.raises(PermissionDeniedError):
        await alice_store.load(checkpoint_key("EV__tenant-b", "balances"))
    saved = await alice_store.load(checkpoint_key("EV__tenant-a", "balances"))
    assert saved is not None and saved.position == 7


async def test_a_standby_follows_the_lease_key_under_projection_permissions(
        nats_server_factory: Callable[..., NatsServer],
        connect: Callable[..., Awaitable[tuple[Client, Violations]]]) -> None:
    """A standby's watch subscribes to its lease key (granted with ``clustered``): it sees a release
    at once, long before the lease's 30 s TTL, and the server reports no violation."""
    inbox = "_INBOX_a"
    options = ProjectionOptions(lease_ttl=30)
    server = nats_server_factory(extra_config=authorization_config([
        {"user": "admin", "password": "admin-pw"},
        user("alice", projection_permissions("EV", "tenant-a", "balances", inbox_prefix=inbox, clustered=True,
                                             options=options))]))
    admin, _ = await connect(server, "admin")
    alice, violations = await connect(server, "alice", inbox)
    key = checkpoint_key("EV__tenant-a", "balances")
    holder = ProjectionLease(admin, bucket=options.lease_bucket_name(), key=key, node_id="node-1", ttl=30)
    await holder.open()
    assert await holder.try_acquire()
    standby = ProjectionLease(alice, bucket=options.lease_bucket_name(), key=key, node_id="node-2", ttl=30)
    await standby.open()
    assert not await standby.try_acquire() and await standby.holder() == "node-1"
    waiting = asyncio.create_task(standby.wait_for_turn())
    await wait_for(lambda: standby.watching, timeout=15, message="the standby's watch")
    await holder.release()
    async with asyncio.timeout(15):  # the TTL is 30 s: only the watch can end the wait this soon
        await waiting
    assert await standby.try_acquire() and standby.term > holder.term
    await standby.release()
    await standby.close()
    assert violations.seen == []
