"""NATSEventBus against real nats-server processes: exactly once across nodes, wildcards, filters,
tenant isolation, overflow, gap detection, server restart, lifecycle and bad input."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from aether import BusClosedError, Event, EventBroadcaster, NATSEventBus, Subscription
from aether.bus.wire import MAGIC, pack_header
from aether.codec import encode_event
from aether.errors import (
    AetherTimeoutError,
    EventTooLargeError,
    InvalidInputError,
    InvalidNameError,
    NatsConnectionError,
)
from aether.testing import NatsServer, wait_for

pytestmark = pytest.mark.anyio

_prefixes = itertools.count(1)


async def connect(url: str) -> Client:
    return await nats.connect(url, connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.1)


@pytest.fixture
def prefix() -> str:
    """A subject prefix per test, so tests sharing the session server never see each other."""
    return f"bus-test-{next(_prefixes)}"


@pytest.fixture
async def nodes(nats_url: str, prefix: str) -> AsyncIterator[list[NATSEventBus]]:
    """Three buses, each on its own connection (three nodes)."""
    clients = [await connect(nats_url) for _ in range(3)]
    buses = [await NATSEventBus.create(nc, subject_prefix=prefix) for nc in clients]
    try:
        yield buses
    finally:
        for bus in buses:
            await bus.aclose()
        for nc in clients:
            await nc.close()


async def settle(buses: list[NATSEventBus]) -> None:
    """Every node's publishes are handled by the server, then every node has received them."""
    for bus in buses:
        await bus.flush()
    for bus in buses:
        await bus.flush()


def ev(event_type: str, actor_id: str, version: int = 1, **data: Any) -> Event:
    return Event(event_type, actor_id, version, data=data)


def matches(pattern: str, namespace: str) -> bool:
    p, n = pattern.split("."), namespace.split(".")
    if p[-1] == ">":
        return len(n) >= len(p) and all(a in ("*", b) for a, b in zip(p[:-1], n, strict=False))
    return len(p) == len(n) and all(a in ("*", b) for a, b in zip(p, n, strict=True))


SPECS: list[tuple[str, dict[str, Any]]] = [
    ("tenant-a.orders", {}),
    ("tenant-a.*", {}),
    ("tenant-a.>", {}),
    ("*.orders", {}),
    (">", {}),
    ("tenant-a.>", {"event_types": ["Shipped"]}),
    (">", {"actor_prefix": "cust-1"}),
    ("tenant-a", {"event_types": ["Placed"], "actor_prefix": "cust-2"}),
]
NAMESPACES = ["tenant-a", "tenant-a.orders", "tenant-a.orders.eu", "tenant-b", "tenant-b.orders"]


def wanted(pattern: str, opts: dict[str, Any], namespace: str, event: Event) -> bool:
    if not matches(pattern, namespace):
        return False
    if "event_types" in opts and event.event_type not in opts["event_types"]:
        return False
    return "actor_prefix" not in opts or event.actor_id.startswith(opts["actor_prefix"])


async def test_three_nodes_every_subscriber_gets_each_matching_event_once(nodes: list[NATSEventBus]) -> None:
    assert all(isinstance(bus, EventBroadcaster) for bus in nodes)
    subs = {(i, j): bus.subscribe(pattern, buffer_size=10_000, **opts)
            for i, bus in enumerate(nodes) for j, (pattern, opts) in enumerate(SPECS)}
    for sub in subs.values():
        await sub.ready()
    published: list[tuple[str, Event]] = []
    for round_ in range(3):
        for i, bus in enumerate(nodes):
            for ns in NAMESPACES:
                for etype in ("Placed", "Shipped"):
                    for actor in ("cust-1", "cust-2"):
                        event = ev(etype, f"{actor}-{ns}", origin=i, n=round_)
                        await bus.publish(ns, event)
                        published.append((ns, event))
    for (i, j), sub in subs.items():
        pattern, opts = SPECS[j]
        expected = [e.id for ns, e in published if wanted(pattern, opts, ns, e)]
        await wait_for(lambda sub=sub, expected=expected: sub.pending >= len(expected),  # type: ignore[misc]
                       message=f"node {i} {pattern} {opts}")
    await settle(nodes)  # anything late (an echo, a duplicate) is now in the buffers
    for (i, j), sub in subs.items():
        pattern, opts = SPECS[j]
        expected = [e.id for ns, e in published if wanted(pattern, opts, ns, e)]
        got = sub.drain()
        assert Counter(e.id for e in got) == Counter(expected), f"node {i} {pattern} {opts}"
        for origin in range(3):  # per-publisher order is kept
            mine = [e.id for e in got if e.data["origin"] == origin]
            assert mine == [x for x in expected if x in set(mine)]
        assert sub.dropped == 0 and sub.missed == 0
    stats = nodes[0].stats()
    assert stats.kind == "nats" and stats.subscriptions == len(SPECS)
    assert stats.total("published") == len(published) // 3
    assert stats.total("missed") == 0 and stats.invalid_messages == 0


async def test_own_events_are_delivered_locally_not_echoed(nodes: list[NATSEventBus]) -> None:
    solo = nodes[0]
    sub = solo.subscribe("t")
    await sub.ready()
    for v in range(1, 21):
        await solo.publish("t", ev("X", "a", v))
    assert [e.version for e in sub.drain()] == list(range(1, 21))  # synchronously, before any round trip
    await settle([solo])
    assert sub.drain() == []
    assert solo.stats().namespaces["t"].delivered == 20


async def test_tenant_isolation_whatever_the_pattern(nodes: list[NATSEventBus]) -> None:
    a_node, b_node, _ = nodes
    patterns = ["tenant-a", "tenant-a.*", "tenant-a.>", "tenant-a.orders", "tenant-a.*.eu"]
    subs = [a_node.subscribe(p) for p in patterns]
    for sub in subs:
        await sub.ready()
    for ns in ("tenant-b", "tenant-b.orders", "tenant-ab", "tenant-ab.orders", "tenant-a-b", "tenant-a_b.orders"):
        for v in range(1, 4):
            await b_node.publish(ns, ev("Placed", "x", v, ns=ns))
    for ns in ("tenant-a", "tenant-a.orders", "tenant-a.orders.eu", "tenant-a.x"):
        await b_node.publish(ns, ev("Placed", "x", 1, ns=ns))
    await wait_for(lambda: subs[2].pending >= 3)
    await settle(nodes)
    for sub in subs:
        got = sub.drain()
        assert got, sub.pattern
        assert {e.data["ns"].split(".")[0] for e in got} == {"tenant-a"}, sub.pattern
        assert all(matches(sub.pattern, e.data["ns"]) for e in got)
    for bad in ("tenant-a*", "tenant-*", "tenant-a.>.x", "tenant-a.or*"):
        with pytest.raises(InvalidNameError):
            a_node.subscribe(bad)
    for bad in ("tenant-a.*", "tenant-a.>", ">", "tenant-a b"):
        with pytest.raises(InvalidNameError):
            await b_node.publish(bad, ev("Placed", "x"))


async def test_odd_event_types_are_carried_and_filtered(nodes: list[NATSEventBus]) -> None:
    types = ["a.b", "*", ">", "_", "über type", "x" * 200]  # "" is not an event type (Event refuses it)
    sub = nodes[1].subscribe("t", event_types=types[:4])
    everything = nodes[2].subscribe("t")
    await sub.ready()
    await everything.ready()
    for i, etype in enumerate(types):
        await nodes[0].publish("t", ev(etype, "a", i + 1))
    await wait_for(lambda: everything.pending == len(types))
    await settle(nodes)
    assert [e.event_type for e in sub.drain()] == types[:4]
    assert [e.event_type for e in everything.drain()] == types


async def test_slow_subscriber_overflows_fast_one_loses_nothing(nodes: list[NATSEventBus]) -> None:
    publisher, receiver, _ = nodes
    slow = receiver.subscribe("feed", buffer_size=10)
    fast = receiver.subscribe("feed", buffer_size=100_000)
    await slow.ready()
    await fast.ready()
    got: list[int] = []

    async def read_fast() -> None:
        async for event in fast:
            got.append(event.version)
            if len(got) == 2000:
                return

    reader = asyncio.create_task(read_fast())
    for v in range(1, 2001):
        await publisher.publish("feed", ev("Tick", "clock", v))
    async with asyncio.timeout(30):
        await reader
    await settle(nodes)
    assert got == list(range(1, 2001))
    assert fast.dropped == 0 and fast.missed == 0
    assert slow.pending == 10 and slow.dropped == 1990
    assert [e.version for e in slow.drain()] == list(range(1, 11))
    assert receiver.stats().namespaces["feed"].dropped == 1990


async def test_gaps_duplicates_and_invalid_messages_are_reported(nats_url: str, prefix: str) -> None:
    nc = await connect(nats_url)
    raw = await connect(nats_url)
    try:
        async with await NATSEventBus.create(nc, subject_prefix=prefix) as bus:
            sub = bus.subscribe("t")
            other = bus.subscribe("t", buffer_size=5)
            await sub.ready()
            head = MAGIC + b"forged!!"
            subject = f"{prefix}.t.X"
            for seq in (1, 2, 6, 6, 4, 7):  # 3..5 lost, one duplicate, one stale
                await raw.publish(subject, pack_header(head, seq) + encode_event(ev("X", "a", seq)))
            await raw.publish(subject, b"not a bus message")
            await raw.publish(subject, MAGIC + b"12345678" + b"\x00" * 8 + b"garbage")
            await raw.publish(f"{prefix}.t", pack_header(head, 8) + encode_event(ev("X", "a", 8)))  # no type token
            # nats-py's flush() PING can overtake queued publishes; the bus's probe cannot
            await NATSEventBus(raw, subject_prefix=prefix).flush()
            await bus.flush()
            assert [e.version for e in sub.drain()] == [1, 2, 6, 7]
            assert sub.missed == 3 and other.missed == 3
            stats = bus.stats()
            assert stats.namespaces["t"].gaps == 1
            assert stats.namespaces["t"].missed == 6  # 3 per subscription
            assert bus.gaps == 1 and bus.missed == 6
            assert stats.invalid_messages == 2  # the subject without a type token never matches "t"
    finally:
        await nc.close()
        await raw.close()


async def test_subscriptions_resume_after_server_restart(nats_server_factory: Callable[..., NatsServer],
                                                         prefix: str) -> None:
    server = nats_server_factory()
    pub_nc = await connect(server.url)
    sub_nc = await connect(server.url)
    publisher = await NATSEventBus.create(pub_nc, subject_prefix=prefix)
    receiver = await NATSEventBus.create(sub_nc, subject_prefix=prefix)
    try:
        sub = receiver.subscribe("stream", buffer_size=100_000)
        await sub.ready()
        sent = 0

        async def publish_one() -> None:
            nonlocal sent
            try:
                await publisher.publish("stream", ev("Tick", "clock", sent + 1))
            except NatsConnectionError:
                return  # the reconnect buffer was full: not published, not numbered
            sent += 1

        for _ in range(50):
            await publish_one()
        await wait_for(lambda: sub.pending == 50)
        await server.restart()
        received = sub.drain()
        async with asyncio.timeout(60):  # keep publishing until events flow again
            while True:
                await publish_one()
                received += sub.drain()
                if received and received[-1].version > 50 and sub_nc.is_connected and pub_nc.is_connected:
                    break
                await asyncio.sleep(0.05)
        for _ in range(20):
            await publish_one()
        def got_the_last() -> bool:
            received.extend(sub.drain())
            return received[-1].version == sent

        await wait_for(got_the_last, message="the last event")
        versions = [e.version for e in received]
        assert versions == sorted(set(versions)), "order kept, no duplicates"
        assert versions[-1] == sent
        assert len(versions) + sub.missed == sent, "every lost event is reported"
        assert receiver.stats().reconnects >= 1
    finally:
        await publisher.aclose()
        await receiver.aclose()
        await pub_nc.close()
        await sub_nc.close()


async def test_close_and_resubscribe_same_pattern(nodes: list[NATSEventBus]) -> None:
    a, b, _ = nodes
    first = b.subscribe("p")
    await first.ready()
    first.close()
    first.close()
    second = b.subscribe("p")
    await second.ready()
    await a.publish("p", ev("X", "a"))
    await wait_for(lambda: second.pending == 1)
    await settle(nodes)
    assert first.pending == 0 and second.pending == 1
    assert b.subscriptions == 1


async def test_async_with_waits_until_ready_and_closes(nodes: list[NATSEventBus]) -> None:
    a, b, _ = nodes
    async with b.subscribe("ctx") as sub:
        await a.publish("ctx", ev("X", "a"))  # ready: the remote event cannot be missed
        async with asyncio.timeout(10):
            event = await sub.__anext__()
        assert event.actor_id == "a"
    assert sub.closed and b.subscriptions == 0


async def test_aclose_ends_iterations_and_rejects_use(nats_url: str, prefix: str) -> None:
    nc = await connect(nats_url)
    try:
        bus = await NATSEventBus.create(nc, subject_prefix=prefix)
        sub = bus.subscribe("t")
        idle = bus.subscribe(">")
        await sub.ready()
        event = ev("X", "a")
        await bus.publish("t", event)
        reader = asyncio.create_task(anext_or_none(idle, skip=1))  # reads the event, then waits
        await asyncio.sleep(0)
        await bus.aclose()
        await bus.aclose()
        assert [e.id async for e in sub] == [event.id]
        assert await reader is None
        with pytest.raises(BusClosedError):
            await bus.publish("t", ev("X", "a"))
        with pytest.raises(BusClosedError):
            bus.subscribe("t")
        assert "closed" in repr(bus)
        assert nc.is_connected  # the client is not the bus's to close
    finally:
        await nc.close()


async def anext_or_none(sub: Subscription, skip: int = 0) -> Event | None:
    count = 0
    async for event in sub:
        count += 1
        if count > skip:
            return event
    return None


async def test_iteration_after_aclose_yields_buffered_then_ends(nats_url: str, prefix: str) -> None:
    nc = await connect(nats_url)
    try:
        bus = await NATSEventBus.create(nc, subject_prefix=prefix)
        sub = bus.subscribe("t")
        await bus.publish("t", ev("X", "a", 1))
        await bus.publish("t", ev("X", "a", 2))
        await bus.aclose()
        assert [e.version async for e in sub] == [1, 2]
    finally:
        await nc.close()


async def test_bad_input(nats_url: str, prefix: str) -> None:
    nc = await connect(nats_url)
    try:
        for bad in ("aether", "a.*", "a.>", "", "a b", 3):
            with pytest.raises(InvalidNameError):
                NATSEventBus(nc, subject_prefix=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            NATSEventBus(nc, buffer_size=0)
        with pytest.raises(InvalidInputError):
            NATSEventBus(nc, timeout=0)
        bus = await NATSEventBus.create(nc, subject_prefix=prefix)
        assert len(bus.node_id) == 16 and bus.subject_prefix == prefix
        for pattern in ("tenant*", "a.>.b", "", "a..b", None):
            with pytest.raises(InvalidNameError):
                bus.subscribe(pattern)  # type: ignore[arg-type]
        for namespace in ("a.*", ">", "", "a..b", None):
            with pytest.raises(InvalidNameError):
                await bus.publish(namespace, ev("X", "a"))  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            await bus.publish("t", "event")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            await bus.publish("t", ev(5, "a"))  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            bus.subscribe("t", event_types="X")
        with pytest.raises(InvalidInputError):
            await bus.publish("t", Event("X", "a", 1, data={"bad": object()}))
        with pytest.raises(EventTooLargeError):
            await bus.publish("t", ev("X", "a", blob="x" * (nc.max_payload + 1)))
        sub = bus.subscribe("t")
        await bus.publish("t", ev("X", "a", 1))
        assert [e.version for e in sub.drain()] == [1]  # the failed publishes left no trace
        assert bus.stats().namespaces["t"].published == 1
        await bus.aclose()
    finally:
        await nc.close()


async def test_closed_connection(nats_url: str, prefix: str) -> None:
    nc = await connect(nats_url)
    bus = await NATSEventBus.create(nc, subject_prefix=prefix)
    await nc.close()
    with pytest.raises(NatsConnectionError):
        await NATSEventBus.create(nc, subject_prefix=prefix)
    with pytest.raises(NatsConnectionError):
        await bus.publish("t", ev("X", "a"))
    sub = bus.subscribe("t")
    with pytest.raises(NatsConnectionError):
        await sub.ready()
    with pytest.raises(NatsConnectionError):
        await sub.__anext__()
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()
    with pytest.raises(NatsConnectionError):
        await bus.flush()
    await bus.aclose()


async def test_ready_waits_while_the_server_is_away(nats_server_factory: Callable[..., NatsServer],
                                                   prefix: str) -> None:
    server = nats_server_factory()
    nc = await connect(server.url)
    try:
        bus = await NATSEventBus.create(nc, subject_prefix=prefix, timeout=0.5)
        await server.pause()
        try:
            sub = bus.subscribe("t")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.5):
                    await sub.ready()  # not ready: the server has not registered the interest
            with pytest.raises(AetherTimeoutError):
                await bus.flush(timeout=0.5)
        finally:
            await server.resume()
        async with asyncio.timeout(30):
            await sub.ready()
        await bus.aclose()
    finally:
        await nc.close()
