"""Least privilege on partitioned namespaces: the allow lists cover every partition, and nothing of
another tenant's partitions is reachable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client

from aether import ActorSnapshot, Event
from aether.errors import PermissionDeniedError
from aether.permissions import (
    authorization_config,
    catch_up_permissions,
    merge,
    projection_permissions,
    store_permissions,
)
from aether.projection import (
    CatchUpSubscription,
    CheckpointStore,
    EventSource,
    Projection,
    ProjectionOptions,
    ProjectionRunner,
    RetryPolicy,
)
from aether.projection.checkpoint import checkpoint_key
from aether.store import JetStreamEventStore
from aether.testing import NatsServer
from test_permissions_components import Violations, connect, user  # noqa: F401  (connect is a fixture)

pytestmark = pytest.mark.anyio


def test_allow_lists_cover_every_partition() -> None:
    perms = store_permissions("EV", "tenant-a", inbox_prefix="_INBOX_a", may_create=True, partitions=3)
    publish = perms["publish"]["allow"]
    for i in range(3):
        name = f"EV__tenant-a___p{i}"
        for subject in (f"aether.{name}.e.*", f"aether.{name}.s.*", f"$JS.API.DIRECT.GET.{name}",
                        f"$JS.API.STREAM.MSG.GET.{name}", f"$JS.API.STREAM.INFO.{name}",
                        f"$JS.API.STREAM.PURGE.{name}", f"$JS.API.STREAM.CREATE.{name}",
                        f"$JS.API.STREAM.LEADER.STEPDOWN.{name}"):
            assert subject in publish, subject
    assert "$JS.API.STREAM.INFO.EV__tenant-a" in publish
    assert not any(s.startswith("aether.EV__tenant-a.") for s in publish)  # no unpartitioned subject
    assert not any("p3" in s for s in publish)
    reader = store_permissions("EV", "tenant-a", inbox_prefix="_INBOX_a", read_only=True, partitions=2)
    assert not any(".e." in s or ".s." in s or "PURGE" in s or "CREATE" in s for s in reader["publish"]["allow"])
    follow = catch_up_permissions("EV", "tenant-a", inbox_prefix="_INBOX_a", partitions=2)["publish"]["allow"]
    assert {f"$JS.API.CONSUMER.CREATE.EV__tenant-a___p{i}.*" for i in range(2)} <= set(follow)
    proj = projection_permissions("EV", "tenant-a", "view", inbox_prefix="_INBOX_a", partitions=2)
    assert "$KV.aether-projections.EV__tenant-a.view" in proj["publish"]["allow"]  # one key for all partitions
    assert "aether.__dlq.EV__tenant-a.view" in proj["publish"]["allow"]
    single = store_permissions("EV", "tenant-a", inbox_prefix="_INBOX_a")
    assert single == store_permissions("EV", "tenant-a", inbox_prefix="_INBOX_a", partitions=1)
    with pytest.raises(ValueError):
        store_permissions("EV", "tenant-a", inbox_prefix="_INBOX_a", partitions=0)


async def test_partitioned_tenants_are_isolated_under_least_privilege(
        nats_server_factory: Callable[..., NatsServer],
        connect: Callable[..., Awaitable[tuple[Client, Violations]]]) -> None:  # noqa: F811
    inbox = "_INBOX_tenant_a"
    options = ProjectionOptions(retry=RetryPolicy(max_attempts=1), checkpoint_interval=0.05, lease_ttl=5)
    alice_perms = merge(
        store_permissions("EV", "tenant-a", inbox_prefix=inbox, may_create=True, partitions=3),
        projection_permissions("EV", "tenant-a", "balances", inbox_prefix=inbox, clustered=True, options=options,
                               partitions=3),
        catch_up_permissions("EV", "tenant-a", inbox_prefix=inbox, partitions=3),
    )
    bob_perms = store_permissions("EV", "tenant-b", inbox_prefix="_INBOX_tenant_b", partitions=3)
    server = nats_server_factory(extra_config=authorization_config([
        {"user": "admin", "password": "admin-pw"}, user("alice", alice_perms), user("bob", bob_perms)]))
    admin, _ = await connect(server, "admin")
    alice, violations = await connect(server, "alice", inbox)
    bob, bob_violations = await connect(server, "bob", "_INBOX_tenant_b")

    store_b = await JetStreamEventStore.create(admin, "EV", namespace="tenant-b", storage="memory", partitions=3)
    for i in range(6):
        await store_b.save_event(Event("Deposited", f"secret-{i}", 1, {"amount": 1}))

    store = await JetStreamEventStore.create(alice, "EV", namespace="tenant-a", storage="memory", partitions=3,
                                             timeout=2.0)
    actors = [f"acc-{i}" for i in range(12)]
    for actor in actors:
        await store.save_events([Event("Deposited", actor, v, {"amount": 1}) for v in (1, 2)])
        await store.save_snapshot(ActorSnapshot(actor, 2, {"n": 2}))
        assert await store.get_latest_snapshot(actor) is not None
        assert [e.version for e in await store.get_events(actor)] == [1, 2]
    assert len({store.partition_of(a) for a in actors}) == 3
    assert sorted(await store.actor_ids()) == sorted(actors)
    reopened = await JetStreamEventStore.create(alice, "EV", namespace="tenant-a", timeout=2.0)
    assert reopened.partitions == 3

    handled: list[tuple[str, int]] = []
    projection = Projection("balances")

    @projection.on("Deposited")
    async def deposited(event: Event, position: int) -> None:
        handled.append((event.actor_id, event.version))

    async with ProjectionRunner(alice, projection, store, node_id="node-1", options=options) as runner:
        await runner.catch_up(timeout=30)
        assert sorted(handled) == sorted((a, v) for a in actors for v in (1, 2))
    checkpoints = CheckpointStore(alice)
    await checkpoints.open()
    saved = await checkpoints.load(checkpoint_key(store.stream, "balances"))
    async with CatchUpSubscription(alice, EventSource.of(store)) as sub:
        heads = await sub.heads()
        assert saved is not None and saved.positions == heads and saved.position == await sub.head()
        seen = [await anext(sub) for _ in range(24)]
        assert {(s.event.actor_id, s.event.version) for s in seen} == {(a, v) for a in actors for v in (1, 2)}
    assert violations.seen == []

    # bob reads and writes his own partitions with his own list
    mine = await JetStreamEventStore.create(bob, "EV", namespace="tenant-b", create_stream=False, timeout=2.0)
    assert mine.partitions == 3
    await mine.save_event(Event("Deposited", "secret-0", 2, {"amount": 1}))
    assert bob_violations.seen == []

    # alice against tenant-b's partitions: refused everywhere
    with pytest.raises(PermissionDeniedError):
        await JetStreamEventStore.create(alice, "EV", namespace="tenant-b", timeout=2.0)
    sneaky = JetStreamEventStore(alice, "EV", namespace="tenant-b")
    with pytest.raises(PermissionDeniedError):
        await sneaky.get_events("secret-1")
    with pytest.raises(PermissionDeniedError):
        await sneaky.save_event(Event("Deposited", "secret-1", 2))
    source_b = EventSource("EV", "tenant-b", partitions=3)
    for part in source_b.parts:
        with pytest.raises(PermissionDeniedError):
            await JetStreamEventStore(alice, "EV", namespace="tenant-b").get_latest_version("secret-1")
        follow = CatchUpSubscription(alice, part)
        with pytest.raises(PermissionDeniedError):
            await follow.start()
        await follow.aclose()
    whole = CatchUpSubscription(alice, source_b)
    with pytest.raises(PermissionDeniedError):
        await whole.start()
    await whole.aclose()
    with pytest.raises(PermissionDeniedError):
        await ProjectionRunner(alice, Projection("balances", {"Deposited": deposited}), source_b).start()
    assert [e.version for e in await store_b.get_events("secret-1")] == [1]
    assert all("tenant-b" in v for v in violations.seen)
