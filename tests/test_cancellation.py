"""Stopping a component while the caller is cancelled: the cancellation propagates (issue 11).

Each stop path cancels a background task of its own and waits for it. The old pattern
``task.cancel(); with suppress(CancelledError): await task`` also swallowed the *caller's*
cancellation: these tests fail with it (``stop()`` returned normally from a cancelled task).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client

from aether._nats import JsApi
from aether._nats.consume import OrderedConsumer
from aether.dashboard.collector import Collector
from aether.projection.lease import ProjectionLease
from aether.testing import wait_for

pytestmark = pytest.mark.anyio


async def stop_while_cancelled(stop: Callable[[], Awaitable[None]]) -> None:
    """Run ``stop()`` in a task whose cancellation is already pending (the first wait inside
    ``stop()`` receives it) and assert that the task ends cancelled."""

    async def cancelled_caller() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await stop()

    caller = asyncio.ensure_future(cancelled_caller())
    await asyncio.wait({caller})
    assert caller.cancelled(), "stop() swallowed the caller's cancellation"


async def test_a_lease_watch_stops_and_the_callers_cancellation_propagates(nc: Client, unique_name: str) -> None:
    bucket = f"{unique_name}-leases"
    holder = ProjectionLease(nc, bucket=bucket, key="p", node_id="holder", ttl=5)
    standby = ProjectionLease(nc, bucket=bucket, key="p", node_id="standby", ttl=5)
    await holder.open()
    await standby.open()
    assert await holder.try_acquire()
    assert not await standby.try_acquire()
    turn = asyncio.ensure_future(standby.wait_for_turn())  # follows the key with a KV watch
    try:
        await wait_for(lambda: standby.watching, message="the standby to watch the lease key")
        await stop_while_cancelled(standby.close)
        assert not standby.watching
    finally:
        turn.cancel()
        await asyncio.wait({turn})
        await holder.release()


async def test_an_ordered_consumer_closes_and_the_callers_cancellation_propagates(nc: Client,
                                                                                   unique_name: str) -> None:
    js = nc.jetstream()
    await js.add_stream(name=unique_name, subjects=[f"{unique_name}.>"])
    api = JsApi(nc)
    consumer = OrderedConsumer(nc, api, unique_name, f"{unique_name}.>", heartbeat=1.0)
    try:
        await consumer.start()
        assert (await js.consumers_info(unique_name)) != []
        await stop_while_cancelled(consumer.aclose)
        assert consumer.closed
        # the clean-up still ran: the server-side consumer is gone
        assert await js.consumers_info(unique_name) == []
    finally:
        await consumer.aclose()
        await api.aclose()
        await js.delete_stream(unique_name)


async def test_a_dashboard_collector_stops_and_the_callers_cancellation_propagates(nc: Client) -> None:
    collector = Collector(nc, "no-such-cluster-here", interval=0.05)
    try:
        await collector.start()
        await wait_for(lambda: collector.version >= 2, message="a background read")
        await stop_while_cancelled(collector.aclose)
    finally:
        await collector.aclose()
