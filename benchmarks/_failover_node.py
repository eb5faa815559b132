"""A cluster node whose actors are event-sourced: the failover-at-scale benchmark's "load" node.

    python -m benchmarks._failover_node --nats-url URL --node-id n1 --cluster C --stream S \\
        --events-file n1.jsonl [--snapshots] [--queries]

Unlike ``aether.testing.node_process`` (whose request appends after reading only the actor's
last event), a request here goes through an :class:`aether.aggregate.Repository` (its cache holds
every actor this node has served): the first request to an actor **activates** it — the
repository loads it (with ``--snapshots`` from its newest snapshot, then the events after it;
without, its whole history) — and later requests read nothing. A request then either appends one
``Requested`` event (command id = the request id: a request retried by the router is answered
with the version it was stored at) or, with ``--queries``, for the requests after the warm-up,
answers with the actor's state without appending. The warm-up request (payload ``warm``) always
appends, and with ``--snapshots`` saves a snapshot afterwards, so the next owner reads the
snapshot and no events.

Concurrent activations share their head reads (the repository batches them through the store's
``get_heads``: one server request per 512 actors instead of two per actor).

The node writes JSON lines to ``--events-file``: ``acquired`` / ``released`` shards and, per
request, ``served`` with the wall-clock start and end, whether it activated the actor, the
seconds until the actor was loaded and the events replayed. SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import signal
import sys
import time
from typing import Any, TextIO

import nats

from aether.aggregate import Aggregate, Repository, applies
from aether.cluster import ClusterManager, ClusterOptions, ShardManager
from aether.cluster.types import ActorRequest
from aether.event import ActorSnapshot, Event
from aether.store import JetStreamEventStore
from aether.testing.node_process import parse_cluster_options

__all__ = ["main"]


class Account(Aggregate):
    """The benchmark's actor: the stream's ``Deposited`` events and the requests it served."""

    balance: int
    requests: int

    def __init__(self, actor_id: str) -> None:
        super().__init__(actor_id)
        self.balance = 0
        self.requests = 0

    @applies("Deposited")
    def _deposited(self, event: Event) -> None:
        self.balance += int(event.data.get("amount", 0))

    @applies("Requested")
    def _requested(self, event: Event) -> None:
        self.requests += 1


class WholeHistoryAccount(Account):
    """The same actor under another snapshot type: snapshots of :class:`Account` are ignored,
    so every activation reads the whole history (the ``load`` mode)."""


class _Node:
    def __init__(self, store: JetStreamEventStore, out: TextIO, snapshots: bool, queries: bool) -> None:
        self.store = store
        self.out = out
        self.snapshots = snapshots
        self.queries = queries
        kind = Account if snapshots else WholeHistoryAccount
        self.repo: Repository[Account] = Repository(store, kind, cache_size=1_000_000)
        self.active: set[str] = set()
        self.shards = ShardManager(ClusterOptions().shard_count)

    def release(self, shards: frozenset[int]) -> None:
        """A shard that moves away deactivates its actors: their next owner appends to them."""
        moved = self.repo.forget_if(lambda actor: self.shards.shard_for(actor) in shards)
        self.active = {a for a in self.active if self.shards.shard_for(a) not in shards}
        self.log("released", shards=sorted(shards), deactivated=moved)

    def log(self, event: str, **fields: Any) -> None:
        self.out.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")
        self.out.flush()

    async def handle(self, request: ActorRequest) -> bytes:
        actor = request.actor_id
        started = time.time()
        loaded = actor not in self.active
        warm = request.payload == b"warm"
        seen: dict[str, float] = {}

        def record(account: Account) -> str:
            seen["loaded_at"] = time.time()
            seen["replayed"] = account.version - account._snapshot_base
            if self.queries and not warm:
                return json.dumps({"balance": account.balance, "requests": account.requests, "v": account.version})
            account.record("Requested", {"payload": request.payload.decode(errors="replace")})
            return ""

        result = await self.repo.execute(actor, record, command_id=request.request_id)
        self.active.add(actor)
        account = result.aggregate
        if warm and self.snapshots and result.events:
            await self.store.save_snapshot(ActorSnapshot(actor, account.version, account.to_snapshot()))
        replayed = int(seen.get("replayed", 0)) if loaded else 0
        self.log("served", actor=actor, start=started, end=time.time(), loaded=loaded,
                 load_s=seen.get("loaded_at", started) - started, read=replayed)
        if result.value:
            return str(result.value).encode()
        return str(account.processed_version(request.request_id) or account.version).encode()


async def _run(args: argparse.Namespace, out: TextIO) -> None:
    nc = await nats.connect(args.nats_url, connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    store = await JetStreamEventStore.create(nc, args.stream, timeout=args.store_timeout)
    node = _Node(store, out, args.snapshots, args.queries)
    options = ClusterOptions(**parse_cluster_options(args.opt))
    manager = ClusterManager(nc, node_id=args.node_id, cluster=args.cluster, options=options,
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
    parser.add_argument("--opt", action="append", default=[], help="ClusterOptions field=value (repeatable)")
    parser.add_argument("--queries", action="store_true", help="requests after the warm-up answer without appending")
    parser.add_argument("--store-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    profile_dir = os.environ.get("AETHER_BENCH_PROFILE_DIR")  # diagnostics: cProfile of the node's life
    with open(args.events_file, "a", encoding="utf-8") as out:
        if not profile_dir:
            asyncio.run(_run(args, out))
            return 0
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            asyncio.run(_run(args, out))
        finally:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"{args.node_id}-{os.getpid()}.prof"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
