"""A conformance suite every :class:`~aether.bus.EventBroadcaster` implementation must pass.

Subclass :class:`EventBusConformance` in a test module and provide a ``bus`` fixture; for a
bus spanning nodes also a ``peer`` fixture (another node of the same bus system, e.g. a bus on
another connection) and override :meth:`~EventBusConformance.settle` (wait until everything
published so far has reached every subscription) and
:meth:`~EventBusConformance.io_operations` (a counter of the I/O the bus did, to prove that
invalid input is refused before any). Every test is async and runs under the anyio pytest
plugin::

    class TestMyBus(EventBusConformance):
        @pytest.fixture
        async def bus(self):
            async with MyBus() as bus:
                yield bus

The suite checks the contract of ``docs/bus.md``: exact namespaces and whole-token wildcards
(``*`` one token, ``>`` one or more), ``event_types`` / ``actor_prefix`` filters, a
synchronous idempotent ``close()`` that ends the iteration, ``async with``, bounded buffers
that drop (counted) instead of blocking the publisher, invalid names refused with
:class:`~aether.errors.InvalidInputError` before any I/O, no echo duplicates, and the order of
each publisher's events.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from aether.bus import EventBroadcaster, Subscription
from aether.errors import BusClosedError, InvalidInputError, InvalidNameError
from aether.event import Event
from aether.testing.waiting import wait_for

__all__ = ["PATTERN_CASES", "EventBusConformance"]

#: (pattern, namespaces it matches, namespaces it does not match)
PATTERN_CASES: list[tuple[str, list[str], list[str]]] = [
    ("tenant-a", ["tenant-a"], ["tenant-a.orders", "tenant-ab", "tenant-b"]),
    ("tenant-a.*", ["tenant-a.orders", "tenant-a.billing"], ["tenant-a", "tenant-a.orders.eu", "tenant-b.orders"]),
    ("tenant-a.>", ["tenant-a.orders", "tenant-a.orders.eu"], ["tenant-a", "tenant-ab.orders", "tenant-b.x"]),
    ("*.orders", ["tenant-a.orders", "tenant-b.orders"], ["tenant-a.orders.eu", "orders", "tenant-a.billing"]),
    ("*.*.eu", ["tenant-a.orders.eu"], ["tenant-a.orders", "tenant-a.orders.us"]),
    (">", ["tenant-a", "tenant-b.orders", "x.y.z"], []),
]

_BAD_PATTERNS: list[object] = ["tenant*", "a.>.b", "", "a..b", "a.or*", "a b", ".a", "a.", None, 3]
_BAD_NAMESPACES: list[object] = ["a.*", ">", "a.>", "", "a..b", "a b", "tenant*", None, 3]


def _event(event_type: str = "Tick", actor_id: str = "actor-1", version: int = 1, **data: Any) -> Event:
    return Event(event_type, actor_id, version, data=data)


def _take(sub: Subscription) -> list[Event]:
    """The events buffered in ``sub`` now, without waiting (reads through the public iterator)."""
    out: list[Event] = []
    for _ in range(sub.pending):
        out.append(_next_now(sub))
    return out


def _next_now(sub: Subscription) -> Event:
    coro = sub.__anext__()
    try:
        coro.send(None)
    except StopIteration as done:
        event: Event = done.value
        return event
    coro.close()
    raise AssertionError("a buffered event was expected")


class EventBusConformance:
    """The bus contract as tests. Provide a ``bus`` fixture (and ``peer`` for a multi-node bus).

    Besides :class:`~aether.bus.EventBroadcaster` the suite uses the members both Aether buses
    have: ``stats()``, ``subscriptions``, ``closed`` and ``async with``.
    """

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def peer(self, bus: Any) -> Any:
        """Another node of the same bus system; by default the same instance (an in-process bus)."""
        return bus

    async def settle(self, *buses: Any) -> None:
        """Wait until everything published on ``buses`` so far is in the subscriptions' buffers.

        An in-process bus delivers inside ``publish``: nothing to wait for.
        """

    def io_operations(self, bus: Any) -> int:
        """A count of the I/O ``bus`` has done (messages sent…); an in-process bus does none."""
        return 0

    async def _ready(self, *subs: Subscription) -> None:
        for sub in subs:
            await sub.ready()

    async def _expect(self, sub: Subscription, count: int, *buses: Any) -> list[Event]:
        """Wait until ``sub`` holds ``count`` events, settle (anything extra would now show) and take them."""
        await wait_for(lambda: sub.pending >= count, timeout=30, interval=0.005,
                       message=f"{count} events in {sub!r}")
        await self.settle(*buses)
        return _take(sub)

    # ---- protocol and namespaces -----------------------------------------------------------
    async def test_implements_the_protocol(self, bus: Any) -> None:
        assert isinstance(bus, EventBroadcaster)

    async def test_exact_namespaces_are_isolated(self, bus: Any, peer: Any) -> None:
        a = bus.subscribe("tenant-a")
        a_orders = bus.subscribe("tenant-a.orders")
        await self._ready(a, a_orders)
        for ns in ("tenant-b", "tenant-ab", "tenant-a.orders", "tenant-a", "tenant-a-b"):
            await peer.publish(ns, _event(ns=ns))
        got = await self._expect(a, 1, peer, bus)
        assert [e.data["ns"] for e in got] == ["tenant-a"]
        assert [e.data["ns"] for e in _take(a_orders)] == ["tenant-a.orders"]

    @pytest.mark.parametrize(("pattern", "matching", "other"), PATTERN_CASES)
    async def test_wildcards_match_whole_tokens(self, bus: Any, peer: Any, pattern: str, matching: list[str],
                                                other: list[str]) -> None:
        sub = bus.subscribe(pattern)
        await self._ready(sub)
        for ns in other + matching:
            await peer.publish(ns, _event(ns=ns))
        got = await self._expect(sub, len(matching), peer, bus)
        assert sorted(e.data["ns"] for e in got) == sorted(matching)

    # ---- filters -------------------------------------------------------------------------------
    async def test_event_type_and_actor_prefix_filters(self, bus: Any, peer: Any) -> None:
        by_type = bus.subscribe("t", event_types=["Placed", "a.b"])
        by_actor = bus.subscribe("t", actor_prefix="cust-1")
        both = bus.subscribe("t", event_types=["Placed"], actor_prefix="cust-2")
        everything = bus.subscribe("t")
        await self._ready(by_type, by_actor, both, everything)
        sent = []
        for i, (etype, actor) in enumerate([("Placed", "cust-1"), ("Shipped", "cust-1"), ("a.b", "cust-2"),
                                            ("Placed", "cust-2"), ("Shipped", "cust-20"), ("Placed", "cust-10")]):
            event = _event(etype, actor, i + 1)
            sent.append(event)
            await peer.publish("t", event)
        assert [e.id for e in await self._expect(everything, len(sent), peer, bus)] == [e.id for e in sent]
        assert [e.id for e in _take(by_type)] == [e.id for e in sent if e.event_type in ("Placed", "a.b")]
        assert [e.id for e in _take(by_actor)] == [e.id for e in sent if e.actor_id.startswith("cust-1")]
        assert [e.id for e in _take(both)] == [e.id for e in sent
                                               if e.event_type == "Placed" and e.actor_id.startswith("cust-2")]
        assert by_type.event_types == frozenset({"Placed", "a.b"}) and by_actor.actor_prefix == "cust-1"

    async def test_invalid_filters_are_refused(self, bus: Any) -> None:
        for bad in ("Placed", [], [3], 5):
            with pytest.raises(InvalidInputError):
                bus.subscribe("t", event_types=bad)
        with pytest.raises(InvalidInputError):
            bus.subscribe("t", actor_prefix=3)
        assert bus.subscriptions == 0

    # ---- invalid names: refused before any I/O -------------------------------------------------
    async def test_invalid_names_are_refused_before_any_io(self, bus: Any) -> None:
        before = self.io_operations(bus)
        for pattern in _BAD_PATTERNS:
            with pytest.raises(InvalidNameError) as refused:
                bus.subscribe(pattern)
            assert isinstance(refused.value, InvalidInputError) and isinstance(refused.value, ValueError)
        for namespace in _BAD_NAMESPACES:
            with pytest.raises(InvalidNameError):
                await bus.publish(namespace, _event())
        for bad_event in ("event", None, lambda: _event(version=0), lambda: _event(actor_id="")):
            with pytest.raises(InvalidInputError):  # refused when built (if Event checks) or when published
                await bus.publish("t", bad_event() if callable(bad_event) else bad_event)
        await asyncio.sleep(0)
        assert self.io_operations(bus) == before, "invalid input caused I/O"
        assert bus.subscriptions == 0
        assert bus.stats().total("published") == 0

    # ---- lifecycle -----------------------------------------------------------------------------
    async def test_close_is_idempotent_and_ends_the_iteration(self, bus: Any, peer: Any) -> None:
        sub = bus.subscribe("t")
        await self._ready(sub)

        async def read_all() -> list[Event]:
            return [event async for event in sub]

        reader = asyncio.create_task(read_all())
        await peer.publish("t", _event())
        await wait_for(lambda: sub.pending == 0 and bus.stats().total("delivered") >= 1, timeout=30,
                       interval=0.005, message="the event read")
        sub.close()
        sub.close()
        async with asyncio.timeout(10):
            got = await reader
        assert len(got) == 1 and sub.closed
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
        assert bus.subscriptions == 0
        await peer.publish("t", _event(version=2))
        await self.settle(peer, bus)
        assert sub.pending == 0

    async def test_async_with_is_ready_inside_and_closed_after(self, bus: Any, peer: Any) -> None:
        async with bus.subscribe("ctx") as sub:
            assert bus.subscriptions == 1
            await peer.publish("ctx", _event())
            async with asyncio.timeout(30):
                event = await sub.__anext__()
            assert event.event_type == "Tick"
        assert sub.closed and bus.subscriptions == 0

    async def test_aclose_ends_iterations_after_buffered_events_and_refuses_use(self, bus: Any) -> None:
        sub = bus.subscribe("t")
        await self._ready(sub)
        await bus.publish("t", _event(version=1))
        await bus.publish("t", _event(version=2))
        await bus.aclose()
        await bus.aclose()
        assert bus.closed
        async with asyncio.timeout(10):
            assert [e.version async for e in sub] == [1, 2]
        with pytest.raises(BusClosedError):
            await bus.publish("t", _event())
        with pytest.raises(BusClosedError):
            bus.subscribe("t")

    async def test_async_with_bus_closes_it(self, bus: Any) -> None:
        async with bus as entered:
            assert entered is bus
        assert bus.closed

    # ---- bounded buffers -------------------------------------------------------------------------
    async def test_full_buffer_drops_and_counts_never_blocks(self, bus: Any, peer: Any) -> None:
        small = bus.subscribe("feed", buffer_size=3)
        roomy = bus.subscribe("feed", buffer_size=10_000)
        await self._ready(small, roomy)
        total = 500
        async with asyncio.timeout(30):  # nobody reads: the publisher must not wait for readers
            for v in range(1, total + 1):
                await peer.publish("feed", _event(version=v))
        got = await self._expect(roomy, total, peer, bus)
        assert [e.version for e in got] == list(range(1, total + 1))
        assert [e.version for e in _take(small)] == [1, 2, 3]
        assert small.dropped == total - 3 and roomy.dropped == 0
        assert bus.stats().namespaces["feed"].dropped == total - 3
        with pytest.raises(InvalidInputError):
            bus.subscribe("feed", buffer_size=0)

    # ---- delivery ----------------------------------------------------------------------------------
    async def test_each_subscription_gets_each_event_once_no_echo(self, bus: Any, peer: Any) -> None:
        patterns = ["t.x", "t.*", "t.>", ">", "t.x"]  # overlapping patterns, one of them twice
        here = [bus.subscribe(p) for p in patterns]
        there = [peer.subscribe(p) for p in patterns] if peer is not bus else []
        await self._ready(*here, *there)
        sent = []
        for origin, publisher in (("bus", bus), ("peer", peer)):
            for v in range(1, 31):
                event = _event("Tick", f"{origin}-actor", v, origin=origin)
                sent.append(event.id)
                await publisher.publish("t.x", event)
        for sub in here + there:
            got = await self._expect(sub, len(sent), bus, peer)
            assert Counter(e.id for e in got) == Counter(sent), sub.pattern

    async def test_order_per_publisher_is_kept(self, bus: Any, peer: Any) -> None:
        sub = bus.subscribe("ordered.>", buffer_size=100_000)
        await self._ready(sub)
        namespaces = ["ordered.a", "ordered.b", "ordered.a.c"]
        types = ["Placed", "Placed", "Shipped"]
        total = 3000
        for v in range(1, total + 1):  # runs of one subject (namespace and type), and changes of both
            await peer.publish(namespaces[v // 50 % 3], _event(types[v // 20 % 3], "clock", v))
            if v % 250 == 0:
                await asyncio.sleep(0)
        got = await self._expect(sub, total, peer, bus)
        assert [e.version for e in got] == list(range(1, total + 1))
        assert sub.dropped == 0 and sub.missed == 0
