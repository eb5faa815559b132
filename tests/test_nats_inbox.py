"""The adapter's one reply inbox per connection (aether._nats.inbox): shared by every component,
released by the last holder, deadlines, refusals and abandoned requests."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import nats
import pytest

from aether import Event
from aether._nats import Inbox, JsApi, inbox_root
from aether.bus import NATSEventBus
from aether.errors import AetherTimeoutError, StoreUnavailableError
from aether.store import JetStreamEventStore
from aether.testing import NatsServer, wait_for

pytestmark = pytest.mark.anyio


async def test_one_inbox_subscription_per_connection(nc: Any) -> None:
    """Every component's requests share the connection's one reply subscription."""
    inbox = Inbox.of(nc)
    first, second = JsApi(nc), JsApi(nc)
    await first.api("INFO")
    await second.api("INFO")
    assert first.inbox is second.inbox is inbox and inbox.prefix.startswith(inbox_root(nc) + ".")
    await first.aclose()
    await second.api("INFO")  # still held by the second
    await second.aclose()
    assert inbox.prefix == "" and inbox.in_flight == 0  # the last holder released the subscription


async def test_store_history_reads_and_bus_probes_share_the_inbox(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    bus = await NATSEventBus.create(nc)
    try:
        prefix = Inbox.of(nc).prefix
        assert prefix
        await store.save_event(Event(actor_id="a-1", version=1, event_type="Opened", data={}))
        async with bus.subscribe("tenant") as sub:
            await bus.publish("tenant", Event(actor_id="a-1", version=1, event_type="Opened", data={}))
            assert (await anext(sub)).actor_id == "a-1"
        await bus.flush()
        assert [e.version for e in await store.get_events("a-1")] == [1]
        assert Inbox.of(nc).prefix == prefix and Inbox.of(nc).in_flight == 0
    finally:
        await bus.aclose()
        await store.aclose()
    assert Inbox.of(nc).prefix == ""


async def test_a_request_nobody_answers_times_out_by_its_deadline(nc: Any) -> None:
    silent = await nc.subscribe("inbox.test.silent", cb=_ignore)  # a responder that never replies
    api = JsApi(nc)
    try:
        with pytest.raises(AetherTimeoutError, match="waiting for silence"):
            await api.request("inbox.test.silent", b"", timeout=0.3, what="waiting for silence")
        token, future = await api.send("inbox.test.silent", b"")
        assert api.inbox.in_flight == 1
        api.forget(token)
        assert api.inbox.in_flight == 0 and not future.done()
        _, abandoned = await api.send("inbox.test.silent", b"")
    finally:
        await api.aclose()
        await silent.unsubscribe()
    assert abandoned.cancelled()  # aclose cancels what send() left open


async def test_requests_on_a_closed_connection_fail_at_once(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    api = JsApi(nc)
    await api.api("INFO")
    await nc.close()
    with pytest.raises(StoreUnavailableError, match="closed"):
        await api.api("INFO")
    await api.aclose()


async def test_the_inbox_registry_keeps_no_client_alive(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    api = JsApi(nc)
    await api.api("INFO")
    await api.aclose()
    await nc.close()
    gone = weakref.ref(nc)
    del nc, api
    # the inbox's deadline sweeper ends within one interval; then nothing may hold the client
    await wait_for(lambda: gc.collect() >= 0 and gone() is None, timeout=10)


async def _ignore(msg: Any) -> None:
    await asyncio.sleep(0)
