"""Multi-tenant namespaces: one stream per tenant, the same actor ids, no way across.

Run it as-is (an embedded NATS server is started when no URL is given)::

    python examples/multi_tenant.py [nats://127.0.0.1:4222]

What it shows:

1. Three tenants (``acme.eu``, ``acme.us``, ``globex``) write to an actor with the SAME id;
   each namespace is its own JetStream stream, so every tenant sees only its own history.
2. Actor ids may be any string (``user@example.com``, ``a.b``, ``*``): they are encoded, never
   interpreted as NATS wildcards.
3. Live notification on the event bus follows the namespaces: a subscriber of ``acme.>`` gets
   both acme regions and nothing of globex.
"""

from __future__ import annotations

import asyncio
import os
import sys

from aether.bus import NATSEventBus
from aether.connect import connect
from aether.event import Event
from aether.store import JetStreamEventStore
from aether.testing import nats_url_or_embedded

TENANTS = ["acme.eu", "acme.us", "globex"]
ACTORS = ["user@example.com", "a.b", "*"]


async def main() -> None:
    async with nats_url_or_embedded(sys.argv[1] if len(sys.argv) > 1 else None) as url:
        nc = await connect(url)
        base = f"tenants-{os.getpid()}"
        stores = {t: await JetStreamEventStore.create(nc, base, namespace=t) for t in TENANTS}
        async with await NATSEventBus.create(nc) as bus:
            acme = bus.subscribe("acme.>")
            globex = bus.subscribe("globex")
            await acme.ready()
            await globex.ready()

            for i, tenant in enumerate(TENANTS):
                for actor in ACTORS:
                    event = Event("ProfileUpdated", actor, 1, {"tenant": tenant, "n": i})
                    await stores[tenant].save_event(event)
                    await bus.publish(tenant, event)

            for tenant, store in stores.items():
                for actor in ACTORS:
                    history = await store.get_events(actor)
                    assert [e.data["tenant"] for e in history] == [tenant], history
                print(f"{tenant:8} stream {store.stream:32} actors {sorted(await store.actor_ids())}")
            print("every tenant sees exactly its own history of the same actor ids")

            seen_acme = [await anext(acme) for _ in range(2 * len(ACTORS))]
            seen_globex = [await anext(globex) for _ in range(len(ACTORS))]
            assert {e.data["tenant"] for e in seen_acme} == {"acme.eu", "acme.us"}
            assert {e.data["tenant"] for e in seen_globex} == {"globex"}
            print(f"bus: 'acme.>' received {len(seen_acme)} events (acme.eu + acme.us), "
                  f"'globex' received {len(seen_globex)}")
            acme.close()
            globex.close()
        for store in stores.values():
            await store.aclose()
        await nc.close()
    print("multi-tenant example: OK")


if __name__ == "__main__":
    asyncio.run(main())
