"""Least privilege: a store works under exactly the documented permissions, and a user limited to
`tenant-a` can neither read nor write `tenant-b` through any store API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import nats
import pytest

from aether import ActorSnapshot, Event
from aether.errors import PermissionDeniedError
from aether.names import stream_name
from aether.store import JetStreamEventStore
from aether.testing import NatsServer

pytestmark = pytest.mark.anyio


def store_permissions(base: str, namespace: str, inbox_prefix: str, *, may_create: bool) -> dict[str, Any]:
    """The permissions a JetStreamEventStore needs for one namespace (as in docs/security.md)."""
    stream = stream_name(base, namespace)
    publish = [f"aether.{stream}.>", f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.STREAM.INFO.{stream}",
               f"$JS.API.STREAM.PURGE.{stream}"]
    if may_create:
        publish += [f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.UPDATE.{stream}"]
    return {"publish": {"allow": publish}, "subscribe": {"allow": [f"{inbox_prefix}.>"]}}


def _config() -> str:
    users = [
        {"user": "admin", "password": "admin-pw"},
        {"user": "alice", "password": "alice-pw",
         "permissions": store_permissions("EV", "tenant-a", "_INBOX_tenant_a", may_create=True)},
        {"user": "bob", "password": "bob-pw",
         "permissions": store_permissions("EV", "tenant-b", "_INBOX_tenant_b", may_create=False)},
    ]
    return f"authorization {{ users = {json.dumps(users)} }}"


async def test_tenant_isolation_under_least_privilege(nats_server_factory: Callable[..., NatsServer]) -> None:
    server = nats_server_factory(extra_config=_config())
    admin = await nats.connect(server.url, user="admin", password="admin-pw")
    alice = await nats.connect(server.url, user="alice", password="alice-pw", inbox_prefix="_INBOX_tenant_a")
    bob = await nats.connect(server.url, user="bob", password="bob-pw", inbox_prefix="_INBOX_tenant_b")
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
        # bob may not create streams at all
        with pytest.raises(PermissionDeniedError):
            await JetStreamEventStore.create(bob, "EV", namespace="tenant-c", timeout=2.0)

        assert [e.version for e in await admin_b.get_events("secret")] == [1, 2]
        assert alice.is_connected and bob.is_connected
    finally:
        for client in (admin, alice, bob):
            await client.close()
