"""The adapter's ordered consumer (aether/_nats/consume.py) against a real nats-server, and a
contract test pinning the public nats-py API it is built on."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from aether._nats import JsApi
from aether._nats import consume as consume_module
from aether._nats.consume import OrderedConsumer, head_sequence
from aether.errors import AetherTimeoutError
from aether.testing import NatsServer, wait_for

pytestmark = pytest.mark.anyio


def test_the_nats_py_api_the_consumer_relies_on() -> None:
    """Only public nats-py API: a coroutine-callback subscription with pending limits, inboxes,
    publish, unsubscribe, and the public fields of a message."""
    params = inspect.signature(Client.subscribe).parameters
    for name in ("cb", "pending_msgs_limit", "pending_bytes_limit"):
        assert name in params, name
    for name in ("new_inbox", "publish", "is_connected"):
        assert hasattr(Client, name), name
    assert inspect.iscoroutinefunction(Subscription.unsubscribe)
    msg = Msg(None, subject="s", reply="r", data=b"d", headers={"Status": "100"})  # type: ignore[arg-type]
    assert (msg.subject, msg.reply, msg.data, msg.headers) == ("s", "r", b"d", {"Status": "100"})


@pytest.fixture
async def stream(nc: Client, unique_name: str) -> AsyncIterator[str]:
    js = nc.jetstream()
    await js.add_stream(name=unique_name, subjects=[f"{unique_name}.>"], storage="memory")
    yield unique_name
    await js.delete_stream(unique_name)


@pytest.fixture
async def api(nc: Client) -> AsyncIterator[JsApi]:
    api = JsApi(nc, timeout=5.0)
    yield api
    await api.aclose()


async def publish(nc: Client, stream: str, first: int, last: int, size: int = 8) -> None:
    js = nc.jetstream()
    for i in range(first, last + 1):
        await js.publish(f"{stream}.a", str(i).encode().ljust(size, b" "))


async def take_until(consumer: OrderedConsumer, last: int) -> list[int]:
    got: list[int] = []
    while not got or got[-1] < last:
        batch = await consumer.take()
        got.extend(seq for seq, _ in batch)
    return got


async def test_every_message_once_in_order_then_live_with_lag(nc: Client, api: JsApi, stream: str) -> None:
    await publish(nc, stream, 1, 300)
    assert await head_sequence(api, stream, f"{stream}.>") == 300
    consumer = OrderedConsumer(nc, api, stream, f"{stream}.>", start_after=100, heartbeat=0.5)
    await consumer.start()
    try:
        await wait_for(lambda: consumer.received == 300, timeout=30)
        assert consumer.lag(100) == 200  # all buffered, nothing handled
        got = await take_until(consumer, 300)
        assert consumer.lag(300) == 0
        await publish(nc, stream, 301, 310)  # live messages after the stored ones
        got += await take_until(consumer, 310)
        assert got == list(range(101, 311))
    finally:
        await consumer.aclose()
    assert await consumer.take() == []  # closed: always empty
    assert not [info for info in await nc.jetstream().consumers_info(stream)]  # the server side is gone


async def test_head_sequence_of_an_empty_subject_is_zero(nc: Client, api: JsApi, stream: str) -> None:
    assert await head_sequence(api, stream, f"{stream}.>") == 0


async def test_interrupt_wakes_a_waiting_owner(nc: Client, api: JsApi, stream: str) -> None:
    consumer = OrderedConsumer(nc, api, stream, f"{stream}.>", heartbeat=0.5)
    await consumer.start()
    try:
        consumer.interrupt()
        assert await consumer.take() == []
        await publish(nc, stream, 1, 3)
        assert await take_until(consumer, 3) == [1, 2, 3]
    finally:
        await consumer.aclose()


async def test_a_heartbeat_reporting_lost_messages_recreates_the_consumer_without_loss_or_duplicate(
        nc: Client, api: JsApi, stream: str) -> None:
    await publish(nc, stream, 1, 20)
    consumer = OrderedConsumer(nc, api, stream, f"{stream}.>", heartbeat=0.5)
    await consumer.start()
    try:
        got = await take_until(consumer, 20)
        # a heartbeat saying the server delivered more than arrived (messages lost on the way),
        # on the consumer's own deliver subject (a client may not forge a $JS.ACK reply)
        (info,) = await nc.jetstream().consumers_info(stream)
        assert info.config.deliver_subject
        await nc.publish(info.config.deliver_subject, b"",
                         headers={"Status": "100", "Description": "Idle Heartbeat", "Nats-Last-Consumer": "25"})
        await wait_for(lambda: consumer.resets == 1, timeout=30)
        await publish(nc, stream, 21, 40)
        got += await take_until(consumer, 40)
        assert got == list(range(1, 41))
        (after,) = await nc.jetstream().consumers_info(stream)
        assert after.name != info.name  # the old server-side consumer was deleted
    finally:
        await consumer.aclose()


async def test_flow_control_is_answered_after_the_owner_takes_again(
        nc: Client, api: JsApi, stream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    answered: list[str] = []
    respond = OrderedConsumer.respond

    async def counting(self: OrderedConsumer, subject: str) -> None:
        answered.append(subject)
        await respond(self, subject)

    monkeypatch.setattr(consume_module.OrderedConsumer, "respond", counting)
    await publish(nc, stream, 1, 1500, size=4000)  # ~6 MB: the server asks for flow control
    consumer = OrderedConsumer(nc, api, stream, f"{stream}.>", heartbeat=1.0)
    await consumer.start()
    try:
        first = await consumer.take()
        assert first and not answered  # nothing answered while the owner holds its first batch
        got = [seq for seq, _ in first] + await take_until(consumer, 1500)
        assert got == list(range(1, 1501))
        assert answered  # the server stopped to ask, and was answered
        assert consumer.resets == 0
    finally:
        await consumer.aclose()


class FirstCreatesUnanswered(Client):
    """A nats-py client that drops its first ``drop`` CONSUMER.CREATE requests, as a cluster that is
    still settling after a server died may leave them unanswered (only the public ``publish``,
    through which every request goes, is overridden)."""

    def __init__(self, drop: int) -> None:
        super().__init__()
        self.drop = drop
        self.dropped = 0

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "",
                      headers: dict[str, str] | None = None) -> None:
        if subject.startswith("$JS.API.CONSUMER.CREATE.") and self.dropped < self.drop:
            self.dropped += 1
            return
        await super().publish(subject, payload, reply, headers)


@pytest.mark.parametrize("drop", [2, 3])
async def test_start_asks_again_when_a_consumer_creation_goes_unanswered(
        nc: Client, nats_server: NatsServer, stream: str, drop: int) -> None:
    """Up to three creation requests: two unanswered ones are retried (every message then arrives
    once); three are an AetherTimeoutError, and no consumer is left behind by the client."""
    await publish(nc, stream, 1, 20)
    dropping = FirstCreatesUnanswered(drop)
    await dropping.connect(nats_server.url)
    api = JsApi(dropping, timeout=0.5)
    consumer = OrderedConsumer(dropping, api, stream, f"{stream}.>", heartbeat=0.5)
    try:
        if drop < 3:
            await consumer.start()
            assert await take_until(consumer, 20) == list(range(1, 21))
        else:
            with pytest.raises(AetherTimeoutError):
                await consumer.start()
        assert dropping.dropped == drop
    finally:
        await consumer.aclose()
        await api.aclose()
        await dropping.close()
