"""EventBus (in-process): routing, wildcards, filters, isolation, overflow, lifecycle, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aether
from aether import BusClosedError, Event, EventBroadcaster, EventBus, InvalidInputError, Subscription
from aether.errors import InvalidNameError, InvalidVersionError

pytestmark = pytest.mark.anyio

NAMESPACES = ["tenant-a", "tenant-a.orders", "tenant-a.orders.eu", "tenant-a.billing", "tenant-b",
              "tenant-b.orders", "tenant-ab", "tenant-ab.orders", "other.orders"]


def ev(event_type: str = "Placed", actor_id: str = "order-1", version: int = 1, **data: Any) -> Event:
    return Event(event_type, actor_id, version, data=data)


async def collect(sub: Subscription, n: int, timeout: float = 10.0) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in sub:
            out.append(event)
            if len(out) == n:
                break
    return out


async def test_top_level_exports_and_protocol() -> None:
    assert aether.EventBus is EventBus
    assert "NATSEventBus" in aether.__all__ and "Subscription" in aether.__all__
    async with EventBus() as bus:
        assert isinstance(bus, EventBroadcaster)


async def test_publish_reaches_subscriber_in_order() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("tenant-a")
        events = [ev(actor_id="a", version=i, i=i) for i in range(1, 51)]
        for e in events:
            await bus.publish("tenant-a", e)
        got = await collect(sub, 50)
        assert got == events
        assert sub.dropped == 0


async def test_consumer_waiting_is_woken() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("x")
        reader = asyncio.create_task(collect(sub, 3))
        await asyncio.sleep(0)  # the reader is now waiting on an empty buffer
        for i in range(1, 4):
            await bus.publish("x", ev(version=i))
            await asyncio.sleep(0)
        assert [e.version for e in await reader] == [1, 2, 3]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("tenant-a", {"tenant-a"}),
        ("tenant-a.orders", {"tenant-a.orders"}),
        ("tenant-a.*", {"tenant-a.orders", "tenant-a.billing"}),
        ("tenant-a.>", {"tenant-a.orders", "tenant-a.orders.eu", "tenant-a.billing"}),
        ("*.orders", {"tenant-a.orders", "tenant-b.orders", "tenant-ab.orders", "other.orders"}),
        ("*.orders.*", {"tenant-a.orders.eu"}),
        ("*", {"tenant-a", "tenant-b", "tenant-ab"}),
        (">", set(NAMESPACES)),
        ("*.>", {ns for ns in NAMESPACES if "." in ns}),
        ("tenant-b.>", {"tenant-b.orders"}),
    ],
)
async def test_wildcards(pattern: str, expected: set[str]) -> None:
    async with EventBus() as bus:
        sub = bus.subscribe(pattern)
        for ns in NAMESPACES:
            await bus.publish(ns, ev(ns=ns))
        assert {e.data["ns"] for e in sub.drain()} == expected


async def test_routes_follow_subscriptions_added_later_and_closed() -> None:
    async with EventBus() as bus:
        await bus.publish("tenant-a.orders", ev())  # route exists before any subscription
        late = bus.subscribe("tenant-a.*")
        other = bus.subscribe("tenant-a.>")
        await bus.publish("tenant-a.orders", ev(version=2))
        assert [e.version for e in late.drain()] == [2]
        late.close()
        await bus.publish("tenant-a.orders", ev(version=3))
        assert late.drain() == []
        assert [e.version for e in other.drain()] == [2, 3]
        assert bus.subscriptions == 1


async def test_filters() -> None:
    async with EventBus() as bus:
        by_type = bus.subscribe(">", event_types=["Shipped", "Cancelled"])
        by_actor = bus.subscribe(">", actor_prefix="cust-1")
        both = bus.subscribe("tenant-a.>", event_types={"Shipped"}, actor_prefix="cust-1")
        empty_prefix = bus.subscribe(">", actor_prefix="")
        assert empty_prefix.actor_prefix is None
        assert by_type.event_types == frozenset({"Shipped", "Cancelled"})
        published = []
        for ns in ("tenant-a.orders", "tenant-b"):
            for etype in ("Placed", "Shipped", "Cancelled"):
                for actor in ("cust-1", "cust-12", "cust-2"):
                    e = ev(etype, actor, ns=ns)
                    published.append(e)
                    await bus.publish(ns, e)
        assert by_type.drain() == [e for e in published if e.event_type in ("Shipped", "Cancelled")]
        assert by_actor.drain() == [e for e in published if e.actor_id.startswith("cust-1")]
        assert both.drain() == [e for e in published if e.event_type == "Shipped"
                               and e.actor_id.startswith("cust-1") and e.data["ns"] == "tenant-a.orders"]
        assert empty_prefix.drain() == published


async def test_tenant_isolation_whatever_the_pattern() -> None:
    async with EventBus() as bus:
        patterns = ["tenant-a", "tenant-a.*", "tenant-a.>", "tenant-a.orders", "tenant-a.*.eu"]
        subs = [bus.subscribe(p) for p in patterns]
        for ns in ("tenant-b", "tenant-b.orders", "tenant-ab", "tenant-ab.orders", "tenant-a-b", "tenant-a_b.orders"):
            for i in range(1, 4):
                await bus.publish(ns, ev(version=i, ns=ns))
        await bus.publish("tenant-a.orders.eu", ev(ns="tenant-a.orders.eu"))
        for sub in subs:
            assert all(e.data["ns"].split(".")[0] == "tenant-a" for e in sub.drain()), sub.pattern
        for bad in ("tenant-a*", "tenant-*", "tenant-a.>.x", "*tenant", "tenant-a.or*"):
            with pytest.raises(InvalidNameError):
                bus.subscribe(bad)


async def test_slow_subscriber_drops_without_blocking_others() -> None:
    async with EventBus() as bus:
        slow = bus.subscribe("t", buffer_size=5)
        fast = bus.subscribe("t", buffer_size=1000)
        reader = asyncio.create_task(collect(fast, 500))
        for i in range(1, 501):
            await bus.publish("t", ev(version=i))  # never waits for a reader
            if i % 50 == 0:
                await asyncio.sleep(0)
        got = await reader
        assert [e.version for e in got] == list(range(1, 501))
        assert fast.dropped == 0
        assert slow.pending == 5 and slow.dropped == 495
        assert [e.version for e in slow.drain()] == [1, 2, 3, 4, 5]  # the newest are dropped
        stats = bus.stats()
        assert stats.namespaces["t"].dropped == 495
        assert stats.namespaces["t"].delivered == 505
        assert stats.namespaces["t"].published == 500


async def test_publisher_never_awaits_a_full_subscriber() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("t", buffer_size=1)
        for i in range(1, 10_001):  # would hang if publish waited for space
            await bus.publish("t", ev(version=i))
        assert sub.dropped == 9_999


async def test_close_ends_iteration_and_is_idempotent() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("t")
        reader = asyncio.create_task(collect(sub, 10))
        await asyncio.sleep(0)
        await bus.publish("t", ev())
        await asyncio.sleep(0)
        sub.close()
        sub.close()
        assert [e.version for e in await reader] == [1]
        await bus.publish("t", ev(version=2))
        assert sub.pending == 0 and sub.closed
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
        assert bus.subscriptions == 0


async def test_close_discards_buffered_events() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("t")
        await bus.publish("t", ev())
        sub.close()
        assert [e async for e in sub] == []


async def test_async_with_subscription() -> None:
    async with EventBus() as bus:
        async with bus.subscribe("t") as sub:
            await bus.publish("t", ev())
            assert sub.pending == 1
        assert sub.closed and bus.subscriptions == 0


async def test_bus_aclose_ends_every_iteration_after_buffered_events() -> None:
    bus = EventBus()
    subs = [bus.subscribe("t"), bus.subscribe(">"), bus.subscribe("u")]
    await bus.publish("t", ev())
    waiting = asyncio.create_task(collect(subs[2], 5))
    await asyncio.sleep(0)
    await bus.aclose()
    await bus.aclose()  # idempotent
    assert [e.version for e in await collect(subs[0], 5)] == [1]
    assert [e.version for e in await collect(subs[1], 5)] == [1]
    assert await waiting == []
    assert all(s.closed for s in subs)
    subs[0].close()  # still fine after the bus is closed


async def test_closed_bus_rejects_publish_and_subscribe() -> None:
    bus = EventBus()
    await bus.aclose()
    assert bus.closed
    with pytest.raises(BusClosedError):
        await bus.publish("t", ev())
    with pytest.raises(BusClosedError):
        bus.subscribe("t")


async def test_cancelled_reader_does_not_break_publishers() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("t")
        reader = asyncio.create_task(collect(sub, 1))
        await asyncio.sleep(0)
        reader.cancel()
        await bus.publish("t", ev())  # the cancelled waiter must not be resolved
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert [e.version for e in await collect(sub, 1)] == [1]


@pytest.mark.parametrize("namespace", ["", "a.*", "a.>", "*", ">", "a..b", ".a", "a.", "a b", "ü", "a" * 129,
                                       None, 5, b"a", ["a"]])
async def test_publish_rejects_invalid_namespaces(namespace: Any) -> None:
    async with EventBus() as bus:
        sub = bus.subscribe(">")
        with pytest.raises(InvalidNameError):
            await bus.publish(namespace, ev())
        assert sub.pending == 0


@pytest.mark.parametrize("pattern", ["", "a*", "*a", "a.>.b", ">.a", "a..b", "a b", "a.b*", ">>", None, 3])
async def test_subscribe_rejects_invalid_patterns(pattern: Any) -> None:
    async with EventBus() as bus:
        with pytest.raises(InvalidNameError):
            bus.subscribe(pattern)
        assert bus.subscriptions == 0


async def test_bad_filters_events_and_sizes() -> None:
    async with EventBus() as bus:
        with pytest.raises(InvalidInputError):
            bus.subscribe("t", event_types="Placed")
        with pytest.raises(InvalidInputError):
            bus.subscribe("t", event_types=[])
        with pytest.raises(InvalidInputError):
            bus.subscribe("t", event_types=[1])  # type: ignore[list-item]
        with pytest.raises(InvalidInputError):
            bus.subscribe("t", actor_prefix=5)  # type: ignore[arg-type]
        for size in (0, -1, 1.5, "3", True):
            with pytest.raises(InvalidInputError):
                bus.subscribe("t", buffer_size=size)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            EventBus(buffer_size=0)
        with pytest.raises(InvalidInputError):
            await bus.publish("t", {"event_type": "x"})  # type: ignore[arg-type]
        with pytest.raises(InvalidVersionError):
            await bus.publish("t", ev(version=0))
        with pytest.raises(InvalidVersionError):
            await bus.publish("t", ev(version="1"))  # type: ignore[arg-type]
        assert bus.subscriptions == 0


async def test_event_subclass_is_accepted() -> None:
    class MyEvent(Event, frozen=True):
        pass

    async with EventBus() as bus:
        sub = bus.subscribe("t")
        await bus.publish("t", MyEvent("X", "a", 1))
        assert isinstance(sub.drain()[0], MyEvent)


async def test_stats_count_per_namespace() -> None:
    async with EventBus() as bus:
        a = bus.subscribe("tenant-a.>")
        b = bus.subscribe(">", event_types=["B"])
        for i in range(3):
            await bus.publish("tenant-a.x", ev("A", version=i + 1))
        await bus.publish("tenant-b", ev("B"))
        stats = bus.stats()
        assert stats.kind == "local" and stats.subscriptions == 2
        assert stats.namespaces["tenant-a.x"].published == 3
        assert stats.namespaces["tenant-a.x"].delivered == 3
        assert stats.namespaces["tenant-b"].delivered == 1
        assert stats.total("published") == 4
        assert len(a.drain()) == 3 and len(b.drain()) == 1
        assert "EventBus open" in repr(bus) and "tenant-a.>" in repr(a)
