"""Least privilege: a store works under exactly the documented permissions (aether.permissions),
and a user limited to `tenant-a` can neither read nor write `tenant-b` through any store API."""

from __future__ import annotations

from collections.abc import Callable

import nats
import pytest

from aether import ActorSnapshot, Event
from aether.connect import connect
from aether.errors import InvalidInputError, InvalidNameError, PermissionDeniedError
from aether.permissions import (
    authorization_config,
    bus_permissions,
    cluster_node_permissions,
    inbox_permissions,
    merge,
    projection_permissions,
    store_permissions,
)
from aether.store import JetStreamEventStore
from aether.testing import NatsServer

pytestmark = pytest.mark.anyio


def _config() -> str:
    return authorization_config([
        {"user": "admin", "password": "admin-pw"},
        {"user": "alice", "password": "alice-pw",
         "permissions": store_permissions("EV", "tenant-a", inbox_prefix="_INBOX_tenant_a", may_create=True)},
        {"user": "bob", "password": "bob-pw",
         "permissions": store_permissions("EV", "tenant-b", inbox_prefix="_INBOX_tenant_b")},
        {"user": "auditor", "password": "auditor-pw",
         "permissions": store_permissions("EV", "tenant-a", inbox_prefix="_INBOX_audit", read_only=True)},
    ])


class _Violations:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            self.seen.append(str(exc))


async def test_tenant_isolation_under_least_privilege(nats_server_factory: Callable[..., NatsServer]) -> None:
    server = nats_server_factory(extra_config=_config())
    admin = await nats.connect(server.url, user="admin", password="admin-pw")
    alice_violations, bob_violations = _Violations(), _Violations()
    # through aether.connect, as services do (it passes the inbox prefix and the error callback on)
    alice = await connect(server.url, user="alice", password="alice-pw", inbox_prefix="_INBOX_tenant_a",
                          error_cb=alice_violations.record)
    bob = await connect(server.url, user="bob", password="bob-pw", inbox_prefix="_INBOX_tenant_b",
                        error_cb=bob_violations.record)
    auditor = await connect(server.url, user="auditor", password="auditor-pw", inbox_prefix="_INBOX_audit")
    try:
        # the admin provisions tenant-b's stream; alice may create her own
        admin_b = await JetStreamEventStore.create(admin, "EV", namespace="tenant-b")
        await admin_b.save_event(Event("E", "secret", 1, {"owner": "b"}))

        a = await JetStreamEventStore.create(alice, "EV", namespace="tenant-a", timeout=2.0)
        await a.save_event(Event("E", "acc", 1))
        await a.save_events([Event("E", "acc", 2), Event("E", "acc", 3)])
        await a.save_snapshot(ActorSnapshot("acc", 3, {"n": 3}))
        assert (await a.get_latest_snapshot("acc")) is not None
        assert [e.version for e in await a.get_events("acc")] == [1, 2, 3]
        assert await a.get_latest_version("acc") == 3
        assert await a.actor_ids() == ["acc"]

        b = await JetStreamEventStore.create(bob, "EV", namespace="tenant-b", create_stream=False, timeout=2.0)
        assert [e.data for e in await b.get_events("secret")] == [{"owner": "b"}]
        await b.save_event(Event("E", "secret", 2))

        assert alice_violations.seen == [] and bob_violations.seen == []  # exactly enough, nothing missing

        # a read-only user reads tenant-a but cannot write it
        reader = await JetStreamEventStore.create(auditor, "EV", namespace="tenant-a", create_stream=False,
                                                  timeout=2.0)
        assert [e.version for e in await reader.get_events("acc")] == [1, 2, 3]
        assert await reader.actor_ids() == ["acc"]
        with pytest.raises(PermissionDeniedError):
            await reader.save_event(Event("E", "acc", 4))
        with pytest.raises(PermissionDeniedError):
            await reader.save_snapshot(ActorSnapshot("acc", 3, {"n": 0}))

        # alice against tenant-b: every API is refused with a clear permission error
        with pytest.raises(PermissionDeniedError):
            await JetStreamEventStore.create(alice, "EV", namespace="tenant-b", timeout=2.0)
        sneaky = JetStreamEventStore(alice, "EV", namespace="tenant-b")
        with pytest.raises(PermissionDeniedError):
            await sneaky.get_events("secret")
        with pytest.raises(PermissionDeniedError):
            await sneaky.get_latest_version("secret")
        with pytest.raises(PermissionDeniedError):
            await sneaky.save_event(Event("E", "secret", 3, {"owner": "alice"}))
        with pytest.raises(PermissionDeniedError):
            await sneaky.get_latest_snapshot("secret")
        with pytest.raises(PermissionDeniedError):
            await sneaky.save_events([Event("E", "secret", 3), Event("E", "secret", 4)])
        with pytest.raises(PermissionDeniedError):
            await sneaky.save_snapshot(ActorSnapshot("secret", 2, {"owner": "alice"}))
        with pytest.raises(PermissionDeniedError):
            await sneaky.actor_ids()
        # bob may not create streams at all
        with pytest.raises(PermissionDeniedError):
            await JetStreamEventStore.create(bob, "EV", namespace="tenant-c", timeout=2.0)

        assert [e.version for e in await admin_b.get_events("secret")] == [1, 2]
        assert alice.is_connected and bob.is_connected
    finally:
        for client in (admin, alice, bob, auditor):
            await client.close()
    with pytest.raises(InvalidInputError):
        await connect(server.url, user="alice", password="alice-pw", inbox_prefix="_INBOX.>")


def test_permission_lists_name_exact_subjects() -> None:
    store = store_permissions("EV", "tenant-a", inbox_prefix="_INBOX_a")
    assert store["publish"]["allow"] == [
        "$JS.API.DIRECT.GET.EV__tenant-a", "$JS.API.STREAM.MSG.GET.EV__tenant-a", "$JS.API.STREAM.INFO.EV__tenant-a",
        "aether.EV__tenant-a.e.*", "aether.EV__tenant-a.x.*",
        "aether.EV__tenant-a.s.*", "$JS.API.STREAM.PURGE.EV__tenant-a"]
    assert store["subscribe"]["allow"] == ["_INBOX_a.>"]
    assert "allow_responses" not in store
    no_snapshots = store_permissions("EV", None, inbox_prefix="_INBOX_a", snapshots=False)
    assert not any(".s." in s or "PURGE" in s for s in no_snapshots["publish"]["allow"])

    bus = bus_permissions(["tenant-a", "tenant-a.>"], publish_namespaces=["tenant-a"], inbox_prefix="_INBOX_a")
    assert bus["subscribe"]["allow"] == ["aetherbus.tenant-a.*", "aetherbus.tenant-a.*.>", "_INBOX_a.>"]
    assert bus["publish"]["allow"] == ["aetherbus.tenant-a.*", "_INBOX_a.>"]

    node = cluster_node_permissions("c1", "node@1", inbox_prefix="_INBOX_n")
    assert node["allow_responses"] is True
    assert "_aether.cluster.c1.node.node_401.rpc" in node["subscribe"]["allow"]
    assert "_aether.cluster.c1.node.*.rpc" in node["publish"]["allow"]
    assert "$KV.aether-cluster-c1.>" in node["publish"]["allow"]

    proj = projection_permissions("EV", "tenant-a", "my view", inbox_prefix="_INBOX_a", may_create=False)
    publish = proj["publish"]["allow"]
    assert "$KV.aether-projections.EV__tenant-a.my_20view" in publish
    assert "$JS.API.DIRECT.GET.KV_aether-projections.$KV.aether-projections.EV__tenant-a.my_20view" in publish
    assert "aether.__dlq.EV__tenant-a.my_20view" in publish
    assert not any("CREATE.KV_" in s or "leases" in s for s in publish)

    inbox = inbox_permissions(inbox_prefix="_INBOX_a")
    assert inbox["publish"] == {"deny": [">"]}  # never an empty allow list: nats-server reads it as "all"
    merged = merge(store, inbox, node)
    assert merged["subscribe"]["allow"].count("_INBOX_a.>") == 1 and merged.get("allow_responses") is True


def test_permission_functions_reject_bad_names() -> None:
    with pytest.raises(InvalidNameError):
        store_permissions("EV", "tenant.*", inbox_prefix="_INBOX_a")
    with pytest.raises(InvalidNameError):
        store_permissions("EV", "tenant-a", inbox_prefix="_INBOX.>")
    with pytest.raises(InvalidNameError):
        bus_permissions(["tenant*"], inbox_prefix="_INBOX_a")
    with pytest.raises(InvalidInputError):
        bus_permissions("tenant-a", inbox_prefix="_INBOX_a")
    with pytest.raises(InvalidNameError):
        cluster_node_permissions("bad.cluster", "n1", inbox_prefix="_INBOX_a")
