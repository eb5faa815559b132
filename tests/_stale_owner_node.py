"""A cluster node for the stale-ownership test: ``python tests/_stale_owner_node.py URL NODE CLUSTER STREAM DIR``.

Requests append one event to the actor (event id = request id). A request with payload ``hold``
checks ownership, reads the actor's version, writes ``DIR/<node>.holding`` and waits until
``DIR/release`` exists before appending: when the process was SIGSTOPped in between and another
node took the actor over meanwhile, that append is stale. The outcome is written to
``DIR/<node>.result``: ``appended`` or ``rejected:<error class>``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import nats

from aether import Event
from aether.cluster import ClusterManager
from aether.cluster.types import ActorRequest
from aether.errors import AetherError, NotOwnerError
from aether.store import JetStreamEventStore


async def main(url: str, node_id: str, cluster: str, stream: str, folder: str) -> None:
    out = Path(folder)
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    store = await JetStreamEventStore.create(nc, stream)
    node: ClusterManager | None = None

    async def handle(request: ActorRequest) -> bytes:
        assert node is not None
        actor = request.actor_id
        if not node.is_local(actor):
            raise NotOwnerError(f"{node_id} does not own {actor!r}")
        latest = await store.get_latest_version(actor)
        if request.payload == b"hold":
            (out / f"{node_id}.holding").write_text(str(latest))
            while not (out / "release").exists():  # noqa: ASYNC110 - released by another process
                await asyncio.sleep(0.02)
            try:
                await store.save_event(Event("Held", actor, latest + 1, id=request.request_id))
                (out / f"{node_id}.result").write_text("appended")
            except AetherError as exc:
                (out / f"{node_id}.result").write_text(f"rejected:{type(exc).__name__}")
                raise
            return str(latest + 1).encode()
        events = await store.get_events(actor, max(latest, 1))
        if events and events[-1].id == request.request_id:
            return str(latest).encode()
        await store.save_event(Event("Requested", actor, latest + 1, id=request.request_id))
        return str(latest + 1).encode()

    node = ClusterManager(nc, node_id=node_id, cluster=cluster, handler=handle)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await node.stop()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
