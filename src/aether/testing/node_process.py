"""Run one cluster node as its own OS process (a harness for tests and benchmarks)::

    python -m aether.testing.node_process --nats-url nats://127.0.0.1:4222 --node-id n1 \\
        [--cluster demo] [--stream events] [--replicas 3] [--events-file n1.jsonl] [--opt lease_ttl=2.0]

The node serves requests for the actors it owns. With ``--stream`` each request appends one
event to the actor's history in a :class:`~aether.store.JetStreamEventStore` (event id = the
request id, so a request retried after a failover is not appended twice) and replies with the
new version; without it the node echoes ``<node id>:<payload>``.

Every cluster event (started, ready, elected, deposed, leader change, shards acquired / released,
each shard-map write attempt with its term, stopping) is appended to ``--events-file`` as one
JSON line with the wall-clock time ``t``. SIGTERM / SIGINT stop the node gracefully.

For a node that serves an application, use ``aether node`` (:mod:`aether.cli.node`) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO, TypeVar

from aether.cluster.leader import LeaderChange
from aether.cluster.manager import ClusterManager
from aether.cluster.options import ClusterOptions
from aether.cluster.types import ActorRequest, ShardMap
from aether.connect import close, connect
from aether.errors import AetherError
from aether.event import Event
from aether.store import JetStreamEventStore

__all__ = ["main", "parse_cluster_options", "run_node"]

T = TypeVar("T")


class _EventLog:
    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": time.time(), "event": event, **fields}, default=str)
        self._out.write(line + "\n")
        self._out.flush()


def parse_cluster_options(items: list[str]) -> dict[str, Any]:
    """``ClusterOptions`` fields from ``field=value`` strings (the ``--opt`` arguments).

    Raises:
        SystemExit: an unknown field.
    """
    fields = {f.name: f.type for f in ClusterOptions.__dataclass_fields__.values()}
    parsed: dict[str, Any] = {}
    for item in items:
        name, _, raw = item.partition("=")
        kind = str(fields.get(name, ""))
        if not kind:
            raise SystemExit(f"unknown option {name!r}")
        parsed[name] = int(raw) if kind == "int" else float(raw) if kind == "float" else raw
    return parsed


def _append_handler(store: JetStreamEventStore) -> Any:
    async def handle(request: ActorRequest) -> bytes:
        # The router re-sends a request (same request id) that got no answer in time, so two
        # attempts may run here at once: the events read below can already hold the other
        # attempt's append, stored after ``latest`` was read. A retry is answered with the version
        # its event was stored at, never with ``latest``.
        actor = request.actor_id
        latest = await store.get_latest_version(actor)
        if latest:
            for stored in reversed(await store.get_events(actor, from_version=latest)):
                if stored.id == request.request_id:
                    return str(stored.version).encode()  # a retry of a request already appended
        event = Event("Requested", actor, latest + 1, data={"payload": request.payload.decode(errors="replace")},
                      id=request.request_id)
        await store.save_event(event)
        return str(event.version).encode()

    return handle


async def run_node(args: argparse.Namespace, log: _EventLog) -> None:
    """Run the node until SIGTERM / SIGINT."""
    servers = [u for u in args.nats_url.split(",") if u]
    nc = await connect(servers, connect_timeout=10.0, reconnect_time_wait=0.1, name=f"aether-node-{args.node_id}")
    store = None
    options = ClusterOptions(**{"replicas": args.replicas, **parse_cluster_options(args.opt)})
    if args.stream:
        store = await _retry(lambda: JetStreamEventStore.create(nc, args.stream, replicas=args.replicas))
        handler = _append_handler(store)
    else:
        async def handler(request: ActorRequest) -> bytes:
            return f"{args.node_id}:".encode() + request.payload

    node = await _retry(lambda: _start_node(nc, args, options, handler, log))
    log.write("started", pid=os.getpid(), incarnation=node.incarnation)
    with contextlib.suppress(AetherError):
        await node.wait_ready(timeout=30)
        log.write("ready", map_version=node.shard_map.version if node.shard_map else 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.write("stopping")
    await node.stop()
    if store is not None:
        await store.aclose()
    await close(nc)
    log.write("stopped")


async def _retry(make: Callable[[], Awaitable[T]], attempts: int = 120) -> T:
    """A fresh NATS cluster may still be electing its JetStream leader: retry for a while."""
    for _ in range(attempts - 1):
        try:
            return await make()
        except AetherError as exc:
            logging.getLogger("aether.cluster").warning("start failed, retrying: %s", exc)
            await asyncio.sleep(0.25)
    return await make()


async def _start_node(nc: Any, args: argparse.Namespace, options: ClusterOptions,
                      handler: Callable[[ActorRequest], Awaitable[bytes]], log: _EventLog) -> ClusterManager:
    node = ClusterManager(nc, node_id=args.node_id, cluster=args.cluster, options=options, handler=handler,
                          metadata={"pid": str(os.getpid())})

    node.election.on_elected(lambda term: log.write("elected", term=term))
    node.election.on_deposed(lambda term: log.write("deposed", term=term))

    def on_change(change: LeaderChange) -> None:
        log.write("leader", leader=change.leader_id, term=change.term)

    def on_publish(shard_map: ShardMap) -> None:
        log.write("map_publish", version=shard_map.version, term=shard_map.term,
                  owners=list(shard_map.owners), handoffs=sorted(shard_map.handoffs))

    node.on_leader_change(on_change)
    node.on_map_published(on_publish)
    node.on_shards_acquired(lambda shards: log.write("acquired", shards=sorted(shards)))
    node.on_shards_released(lambda shards: log.write("released", shards=sorted(shards)))
    node.on_member_join(lambda info: log.write("member_join", node=info.id))
    node.on_member_leave(lambda info: log.write("member_leave", node=info.id))
    node.on_member_failure(lambda info: log.write("member_failure", node=info.id))
    await node.start()
    return node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aether.testing.node_process")
    parser.add_argument("--nats-url", required=True, help="comma-separated NATS URLs")
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--cluster", default="default")
    parser.add_argument("--stream", default="", help="append one event per request to this store stream")
    parser.add_argument("--replicas", type=int, default=1, help="replicas of the KV bucket and the stream")
    parser.add_argument("--events-file", default="", help="JSON-lines event log (default: stdout)")
    parser.add_argument("--opt", action="append", default=[], help="ClusterOptions field=value (repeatable)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s {args.node_id} %(levelname)s %(name)s: %(message)s")
    out: TextIO = open(args.events_file, "a", encoding="utf-8") if args.events_file else sys.stdout  # noqa: SIM115
    try:
        asyncio.run(run_node(args, _EventLog(out)))
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
