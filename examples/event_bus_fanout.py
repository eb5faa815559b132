"""Event-bus fan-out: every subscriber on every node gets each event once, filters apply.

Run it as-is (an embedded NATS server is started when no URL is given)::

    python examples/event_bus_fanout.py [nats://127.0.0.1:4222]

What it shows:

1. Three :class:`~aether.bus.NATSEventBus` instances on three connections stand for three
   service nodes. Two of them publish; subscribers on all three receive every event exactly
   once — a node's own events are delivered locally, never echoed back through NATS.
2. Subscriptions filter by namespace pattern, event type and actor-id prefix.
3. A slow subscriber with a small buffer drops (and counts) what it cannot keep, while the
   publisher and the other subscribers are never slowed down.
"""

from __future__ import annotations

import asyncio
import os
import sys

from aether.bus import NATSEventBus, Subscription
from aether.connect import connect
from aether.event import Event
from aether.testing import nats_url_or_embedded

N = 100


async def take(sub: Subscription, count: int, timeout: float = 10.0) -> list[Event]:
    """The next ``count`` events of ``sub``."""
    async with asyncio.timeout(timeout):
        return [await anext(sub) for _ in range(count)]


async def main() -> None:
    async with nats_url_or_embedded(sys.argv[1] if len(sys.argv) > 1 else None) as url:
        connections = [await connect(url, name=f"node-{i}") for i in range(3)]
        buses = [await NATSEventBus.create(nc) for nc in connections]
        namespace = f"shop-{os.getpid()}"

        everything = [bus.subscribe(namespace) for bus in buses]           # one per node
        orders_only = buses[2].subscribe(namespace, event_types=["OrderPlaced"])
        vip_only = buses[2].subscribe(namespace, actor_prefix="vip-")
        slow = buses[1].subscribe(namespace, buffer_size=10)                # never read until the end
        for sub in (*everything, orders_only, vip_only, slow):
            await sub.ready()

        async def publish(bus: NATSEventBus, node: int) -> None:
            for i in range(N):
                kind = "OrderPlaced" if i % 2 == 0 else "OrderShipped"
                actor = f"vip-{i}" if i % 10 == 0 else f"customer-{i}"
                await bus.publish(namespace, Event(kind, actor, 1, {"node": node, "i": i}))

        await asyncio.gather(publish(buses[0], 0), publish(buses[1], 1))

        for node, sub in enumerate(everything):
            got = await take(sub, 2 * N)
            keys = {(e.data["node"], e.data["i"]) for e in got}
            assert len(keys) == 2 * N, f"node {node}: duplicates or losses"
            print(f"node {node}: received all {len(got)} events once each")
        orders = await take(orders_only, N)
        vips = await take(vip_only, 2 * N // 10)
        assert all(e.event_type == "OrderPlaced" for e in orders)
        assert all(e.actor_id.startswith("vip-") for e in vips)
        print(f"filters: event type 'OrderPlaced' -> {len(orders)}, actor prefix 'vip-' -> {len(vips)}")
        await asyncio.sleep(0.2)
        print(f"slow subscriber (buffer 10): kept {slow.pending}, dropped {slow.dropped} — nobody waited for it")
        assert slow.pending + slow.dropped == 2 * N

        for bus in buses:
            await bus.aclose()
        for nc in connections:
            await nc.close()
    print("event bus fan-out example: OK")


if __name__ == "__main__":
    asyncio.run(main())
