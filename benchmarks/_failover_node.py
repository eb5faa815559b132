"""A cluster node whose actors are event-sourced: the failover-at-scale benchmark's "load" node.

    python -m benchmarks._failover_node --nats-url URL --node-id n1 --cluster C --stream S \\
        --events-file n1.jsonl [--snapshots]

Unlike ``aether.testing.node_process`` (whose request appends after reading only the actor's
last event), a request here does what an event-sourced actor does on its first request: it
**activates** the actor — with ``--snapshots`` its newest snapshot first — reads its whole
history after it with ``get_events`` and folds it into the state (kept in memory: later requests
to an active actor read nothing), then appends one ``Requested`` event (event id = the request id:
a request retried by the router is answered with the version it was stored at) and replies with
the new version. With ``--snapshots`` an activation that read any events saves a snapshot of the
state after the append, so the next owner reads the snapshot and no events.

The node writes JSON lines to ``--events-file``: ``acquired`` / ``released`` shards and, per
request, ``served`` with the wall-clock start and end, whether it activated the actor, the
seconds spent loading and the events read. SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import Any, TextIO

import nats

from aether.cluster import ClusterManager, ClusterOptions, ShardManager
from aether.cluster.types import ActorRequest
from aether.errors import DuplicateEventIdError, VersionConflictError
from aether.event import ActorSnapshot, Event
from aether.store import JetStreamEventStore

__all__ = ["main"]


class _Node:
    def __init__(self, store: JetStreamEventStore, out: TextIO, snapshots: bool) -> None:
        self.store = store
        self.out = out
        self.snapshots = snapshots
        self.active: dict[str, tuple[int, dict[str, int]]] = {}  # actor -> (version, state)
        self.shards = ShardManager(ClusterOptions().shard_count)

    def release(self, shards: frozenset[int]) -> None:
        """A shard that moves away deactivates its actors: their next owner appends to them."""
        for actor in [a for a in self.active if self.shards.shard_for(a) in shards]:
            del self.active[actor]
        self.log("released", shards=sorted(shards))

    def log(self, event: str, **fields: Any) -> None:
        self.out.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")
        self.out.flush()

    async def _activate(self, actor: str) -> tuple[int, dict[str, int], int]:
        version, state = 0, {"balance": 0, "requests": 0}
        if self.snapshots:
            snapshot = await self.store.get_latest_snapshot(actor)
            if snapshot is not None:
                version, state = snapshot.version, dict(snapshot.state)
        events = await self.store.get_events(actor, from_version=version + 1)
        for e in events:
            if e.event_type == "Requested":
                state["requests"] += 1
            else:
                state["balance"] += int(e.data.get("amount", 0))
            version = e.version
        return version, state, len(events)

    async def handle(self, request: ActorRequest) -> bytes:
        actor = request.actor_id
        started = time.time()
        loaded = actor not in self.active
        read = 0
        if loaded:
            version, state, read = await self._activate(actor)
        else:
            version, state = self.active[actor]
        load_s = time.time() - started
        event = Event("Requested", actor, version + 1, data={"payload": request.payload.decode(errors="replace")},
                      id=request.request_id)
        try:
            await self.store.save_event(event)
        except DuplicateEventIdError as exc:
            # a retry of a request already appended (the router re-sends one that got no answer in
            # time, and the two attempts may both run here): answer with the version it was stored at
            if exc.stored_actor_id == actor and exc.stored_version:
                self.active.pop(actor, None)
                return str(exc.stored_version).encode()
            raise
        except VersionConflictError:
            # the other attempt of the same request stored it first, at the same version
            self.active.pop(actor, None)
            for e in await self.store.get_events(actor, from_version=version + 1):
                if e.id == request.request_id:
                    return str(e.version).encode()
            raise
        state = {**state, "requests": state["requests"] + 1}
        self.active[actor] = (event.version, state)
        if self.snapshots and loaded and read:
            await self.store.save_snapshot(ActorSnapshot(actor, event.version, state))
        self.log("served", actor=actor, start=started, end=time.time(), loaded=loaded, load_s=load_s, read=read)
        return str(event.version).encode()


async def _run(args: argparse.Namespace, out: TextIO) -> None:
    nc = await nats.connect(args.nats_url, connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    store = await JetStreamEventStore.create(nc, args.stream, timeout=args.store_timeout)
    node = _Node(store, out, args.snapshots)
    manager = ClusterManager(nc, node_id=args.node_id, cluster=args.cluster, options=ClusterOptions(),
                             handler=node.handle)
    manager.on_shards_acquired(lambda shards: node.log("acquired", shards=sorted(shards)))
    manager.on_shards_released(node.release)
    await manager.start()
    node.log("started")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await manager.stop()
    await store.aclose()
    await nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._failover_node")
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--events-file", required=True)
    parser.add_argument("--snapshots", action="store_true")
    parser.add_argument("--store-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    with open(args.events_file, "a", encoding="utf-8") as out:
        asyncio.run(_run(args, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
