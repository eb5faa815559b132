"""NATSEventBus coalescing against a real nats-server: what travels on the wire (v1 for a lone
event, v2 batches for the rest of a loop iteration), the bounds, sequence ranges with gaps and
copies, mixed wire versions, counters per event, and flush/aclose sending the open batch."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from aether import Event, NATSEventBus, Subscription
from aether.bus.wire import BATCH, MAGIC, SINGLE, decode_batch, pack_batch, pack_header
from aether.codec import encode_event
from aether.errors import InvalidInputError, NatsConnectionError
from aether.testing import wait_for

pytestmark = pytest.mark.anyio

_prefixes = itertools.count(1)


@pytest.fixture
def prefix() -> str:
    return f"bus-coalesce-{next(_prefixes)}"


@pytest.fixture
async def clients(nats_url: str) -> AsyncIterator[list[Client]]:
    clients = [await nats.connect(nats_url, connect_timeout=5) for _ in range(3)]
    yield clients
    for nc in clients:
        await nc.close()


class Wire:
    """A raw subscriber recording every bus message: (kind byte, events it carries, size)."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, int, int]] = []

    async def on_msg(self, msg: Msg) -> None:
        data = msg.data
        kind = data[1]
        count = 1 if kind == SINGLE else len(decode_batch(data, kind)[0])
        self.messages.append((kind, count, len(data)))

    @property
    def events(self) -> int:
        return sum(count for _, count, _ in self.messages)


async def wire(nc: Client, prefix: str) -> Wire:
    recorder = Wire()
    await nc.subscribe(f"{prefix}.>", cb=recorder.on_msg)
    await NATSEventBus(nc, subject_prefix=prefix).flush()  # a probe after the SUB: registered (nats-py's
    return recorder                                        # flush() PING can overtake a queued SUB)


def ev(version: int, event_type: str = "Tick", **data: Any) -> Event:
    return Event(event_type, "clock", version, data=data)


def versions(sub: Subscription) -> list[int]:
    out = []
    for _ in range(sub.pending):
        coro = sub.__anext__()
        try:
            coro.send(None)
        except StopIteration as done:
            out.append(done.value.version)
    return out


async def test_a_burst_travels_in_few_messages_an_idle_event_alone(clients: list[Client], prefix: str) -> None:
    pub_nc, sub_nc, raw_nc = clients
    recorder = await wire(raw_nc, prefix)
    async with (await NATSEventBus.create(pub_nc, subject_prefix=prefix, max_batch_events=100) as pub,
                await NATSEventBus.create(sub_nc, subject_prefix=prefix) as receiver,
                receiver.subscribe("t", buffer_size=10_000) as sub):
        sent_before = pub_nc.stats["out_msgs"]
        for v in range(1, 1001):  # one loop iteration: no await suspends
            await pub.publish("t", ev(v))
        await wait_for(lambda: sub.pending == 1000, timeout=30, interval=0.01, message="1000 events")
        await wait_for(lambda: recorder.events == 1000, timeout=30, interval=0.01, message="recorded")
        assert versions(sub) == list(range(1, 1001))
        kinds = [kind for kind, _, _ in recorder.messages]
        assert kinds[0] == SINGLE  # the iteration's first event went out at once
        assert max(count for _, count, _ in recorder.messages) == 100  # bounded by max_batch_events
        assert len(recorder.messages) <= 12 and set(kinds[1:]) == {BATCH}
        assert pub_nc.stats["out_msgs"] - sent_before == len(recorder.messages)
        # counters count events, not messages
        assert pub.stats().namespaces["t"].published == 1000
        assert receiver.stats().namespaces["t"].delivered == 1000
        # an idle publisher: one event per loop iteration, each alone in a v1 message
        recorder.messages.clear()
        for v in range(1001, 1011):
            await pub.publish("t", ev(v))
            await wait_for(lambda v=v: sub.pending == v - 1000, timeout=30, interval=0.005,  # type: ignore[misc]
                           message=f"event {v}")
        await wait_for(lambda: recorder.events == 10, timeout=30, interval=0.01, message="recorded")
        assert [kind for kind, _, _ in recorder.messages] == [SINGLE] * 10
        assert versions(sub) == list(range(1001, 1011))


async def test_batches_respect_the_byte_bound_and_subject_changes(clients: list[Client], prefix: str) -> None:
    pub_nc, sub_nc, raw_nc = clients
    recorder = await wire(raw_nc, prefix)
    async with (await NATSEventBus.create(pub_nc, subject_prefix=prefix, max_batch_bytes=4096) as pub,
                await NATSEventBus.create(sub_nc, subject_prefix=prefix) as receiver,
                receiver.subscribe(">", buffer_size=10_000) as sub):
        sent = []
        for v in range(1, 601):
            namespace = ("a", "b")[v // 100 % 2]
            event_type = ("X", "Y", "Z")[v // 30 % 3]
            await pub.publish(namespace, ev(v, event_type, pad="p" * 200))
            sent.append(v)
        await wait_for(lambda: sub.pending == len(sent), timeout=30, interval=0.01, message="every event")
        assert versions(sub) == sent  # order kept across namespaces and types
        await wait_for(lambda: recorder.events == len(sent), timeout=30, interval=0.01, message="recorded")
        assert all(size <= 4096 for _, _, size in recorder.messages)
        assert len(recorder.messages) < len(sent) // 5
        assert receiver.stats().total("missed") == 0 and receiver.stats().invalid_messages == 0


async def test_flush_and_aclose_send_the_open_batch(clients: list[Client], prefix: str) -> None:
    pub_nc, sub_nc, _ = clients
    async with (await NATSEventBus.create(sub_nc, subject_prefix=prefix) as receiver,
                receiver.subscribe("t", buffer_size=1000) as sub):
        pub = await NATSEventBus.create(pub_nc, subject_prefix=prefix)
        for v in range(1, 51):
            await pub.publish("t", ev(v))
        await pub.flush()  # same iteration as the publishes: flush sends the open batch itself
        await receiver.flush()
        assert versions(sub) == list(range(1, 51))
        for v in range(51, 101):
            await pub.publish("t", ev(v))
        await pub.aclose()
        # aclose() returned once the server had them: nothing is left queued in nats-py (a round
        # trip on the receiver's connection alone does not order after the publisher's bytes; CI
        # saw the receiver's flush come back before them once, beside a CPU hog)
        assert pub_nc.pending_data_size == 0
        await receiver.flush()
        assert versions(sub) == list(range(51, 101))
        assert sub.missed == 0


async def test_batch_ranges_gaps_copies_and_mixed_wire_versions(clients: list[Client], prefix: str) -> None:
    """Forged messages of two publishers, one sending v1 (an older node), one v2 batches."""
    nc, raw, _ = clients
    async with (await NATSEventBus.create(nc, subject_prefix=prefix) as bus,
                bus.subscribe("t") as sub, bus.subscribe("t", buffer_size=4) as small):
        subject = f"{prefix}.t.X"
        old = MAGIC + b"old-node"

        def batch(first: int, last: int) -> bytes:
            return pack_batch(b"new-node", first, [encode_event(ev(v)) for v in range(first, last + 1)], None)

        for data in (pack_header(old, 1), batch(1, 3), batch(4, 6), batch(10, 12), batch(4, 6), batch(11, 14),
                     batch(8, 9), pack_header(old, 3), b"\xae\xb2" + b"new-node" + b"\x00" * 8 + b"junk"):
            if data.startswith(old):
                seq = int.from_bytes(data[10:18], "big")
                data += encode_event(ev(100 + seq))
            await raw.publish(subject, data)
        await NATSEventBus(raw, subject_prefix=prefix).flush()  # the bus's probe cannot overtake publishes
        await bus.flush()
        # new-node: 1-3, 4-6, [7-9 missing: gap of 3], 10-12, copy of 4-6, 11-14 overlaps (13, 14 new),
        # 8-9 stale; old-node: 1, [2 missing], 3; one corrupt batch
        assert versions(sub) == [101, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 103]
        assert sub.missed == 3 + 1 and small.missed == 4
        assert small.dropped == 13 - 4
        stats = bus.stats()
        assert stats.namespaces["t"].gaps == 2 and stats.invalid_messages == 1
        assert stats.namespaces["t"].delivered == 13 + 4


async def test_bad_batch_bounds_are_refused(clients: list[Client]) -> None:
    nc = clients[0]
    for bad in (0, 65_536, 1.5, True, "8"):
        with pytest.raises(InvalidInputError):
            NATSEventBus(nc, max_batch_events=bad)  # type: ignore[arg-type]
    for bad_bytes in (1023, 0, 4096.0, None):
        with pytest.raises(InvalidInputError):
            NATSEventBus(nc, max_batch_bytes=bad_bytes)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        await NATSEventBus.create(nc, max_batch_events=0)


async def test_no_coalescing_with_max_batch_events_1(clients: list[Client], prefix: str) -> None:
    pub_nc, _, raw_nc = clients
    recorder = await wire(raw_nc, prefix)
    async with await NATSEventBus.create(pub_nc, subject_prefix=prefix, max_batch_events=1) as pub:
        for v in range(1, 21):
            await pub.publish("t", ev(v))
        await pub.flush()
    await wait_for(lambda: recorder.events == 20, timeout=30, interval=0.01, message="recorded")
    assert [kind for kind, _, _ in recorder.messages] == [SINGLE] * 20


async def test_a_large_event_goes_alone_between_batches(clients: list[Client], prefix: str) -> None:
    pub_nc, sub_nc, _ = clients
    async with (await NATSEventBus.create(pub_nc, subject_prefix=prefix, max_batch_bytes=2048) as pub,
                await NATSEventBus.create(sub_nc, subject_prefix=prefix) as receiver,
                receiver.subscribe("t") as sub):
        for v in range(1, 31):
            await pub.publish("t", ev(v, blob="x" * (5000 if v == 15 else 10)))
        await asyncio.sleep(0)
        await wait_for(lambda: sub.pending == 30, timeout=30, interval=0.01, message="30 events")
        assert versions(sub) == list(range(1, 31)) and sub.missed == 0


async def test_a_batch_that_cannot_be_sent_is_reported_once(nats_url: str, prefix: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5)
    bus = await NATSEventBus.create(nc, subject_prefix=prefix)
    await bus.publish("t", ev(1))  # goes out at once
    await bus.publish("t", ev(2))  # waits in the open batch for the end of the loop iteration
    await bus.publish("t", ev(3))
    closing = asyncio.create_task(nc.close())  # runs after the batch's sender was started, before it sends
    await closing
    await asyncio.sleep(0)
    with pytest.raises(NatsConnectionError, match="2 coalesced events"):
        await bus.publish("t", ev(4))
    with pytest.raises(NatsConnectionError) as again:  # reported once; now the closed connection itself
        await bus.publish("t", ev(4))
    assert "coalesced" not in str(again.value)
    await bus.aclose()
