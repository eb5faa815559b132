"""Failover at scale (issue 12): the first request to each actor of a SIGKILLed node, on its new owners.

One ``NatsServer`` holds a stream of ``events`` events over ``actors`` interleaved actors, built
with pipelined raw publishes carrying the headers Aether's appends store
(``benchmarks/_scale_data.py``): with ``AETHER_BENCH_FAILOVER_FULL=1`` the issue's size, 1,000,000
events over 16,000 actors (62-63 events each, spread over the whole stream), so that each of three
nodes owns about 5,300 actors (about 25 minutes on the shared 2-core machine, mostly the stream
build and the first reads of the warm-up); by default (``make bench``) 100,000 events over 3,000
actors; ``--quick`` 20,000 over 600. Then, per **mode**, a fresh three-node cluster of node
processes (default :class:`~aether.cluster.ClusterOptions`, 64 shards) on that stream:

1. wait until it has settled (every shard owned, one leader, balanced), pick a non-leader as the
   victim and list the actors it owns;
2. **warm** them: one request to each through a :class:`~aether.cluster.ClusterClient`, so they
   are active on the victim;
3. **SIGKILL** the victim and at once send the first request to each of its actors again (through
   the same client, ``CONCURRENCY`` in flight: the router retries until the survivors own the
   shards); per actor, record when its reply arrived;
4. read the survivors' event logs: when each shard was acquired.

Reported per mode: the takeover (SIGKILL -> the last of the victim's shards acquired) and the
distribution over the victim's actors of the time until its first request was served, measured
from the SIGKILL and from the moment its shard was acquired (p50 / p90 / p99 / max, and the share
within 2 s); for the ``load`` modes also where the time went (the node's activation: history read
and fold; the wait before the handler started).

Modes (``AETHER_BENCH_FAILOVER_MODES``, default all five):

* ``echo`` — ``NODE_MODULE`` without a stream: the node replies with its id; no store is touched, so
  this is the floor set by failure detection, takeover and routing the requests;
* ``append`` — ``NODE_MODULE`` (``aether.testing.node_process --stream``): a request appends one event
  after reading the actor's latest version and its last event (no history read);
* ``load`` — ``benchmarks._failover_node``: a request activates the actor (reads its whole history
  with ``get_events`` and folds it) and then appends; active actors stay in memory;
* ``snapshots`` — the same with ``--snapshots``: the warm-up saves a snapshot of every actor, and an
  activation reads the snapshot and the events after it;
* ``query`` — the same with ``--snapshots --queries``: the first request after the failover
  activates the actor and answers with its state, without appending.

The ``load`` node serves requests through an :class:`~aether.aggregate.Repository`: concurrent
activations share batched head reads (``get_heads``).

The stream's events are shared by the modes (each mode appends two events to each victim actor).
There is no raw baseline: the row is a time to recover, compared with the issue's 2 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from aether.cluster import ClusterClient, ClusterOptions, ShardManager
from aether.testing import NatsServer
from benchmarks import bench_cluster
from benchmarks._harness import Report
from benchmarks._scale_data import build_stream

__all__ = ["run"]

GROUP = "failover_scale"
# The cluster node process (a request appends with ``--stream``, echoes without). It moved once
# (from aether.cluster): this constant is the one place to re-point.
NODE_MODULE = "aether.testing.node_process"
LOAD_NODE_MODULE = "benchmarks._failover_node"
NODES = ["n1", "n2", "n3"]
CONCURRENCY = int(os.environ.get("AETHER_BENCH_FAILOVER_CONCURRENCY", "200"))  # first requests in flight
# The warm-up is not measured: gentle, because first reads of never-read actors (subject scans of the
# stream) at 32 in flight saturated this 2-core machine's nats-server at 1M events: the nodes' lease
# writes timed out and shards flapped for minutes (docs/benchmarks.md, failover at scale).
WARM_CONCURRENCY = int(os.environ.get("AETHER_BENCH_FAILOVER_WARM_CONCURRENCY", "4"))
# ClusterOptions of the nodes, "field=value,field=value" (default: ClusterOptions(), failure_timeout 1.5 s)
CLUSTER_OPTS = [x for x in os.environ.get("AETHER_BENCH_FAILOVER_OPTS", "").split(",") if x.strip()]
TARGET_S = 2.0
STREAM = "failover"


@dataclass(frozen=True)
class Sizes:
    events: int
    actors: int


FULL = Sizes(1_000_000, 16_000)  # AETHER_BENCH_FAILOVER_FULL=1: the size (~25 min here)
DEFAULT = Sizes(100_000, 3_000)  # what `make bench` runs (a few minutes)
QUICK = Sizes(20_000, 600)  # --quick


class _Node(bench_cluster._Node):
    """A node process of this benchmark (start, SIGKILL, stop as in bench_cluster; its own command)."""

    def __init__(self, node_id: str, cmd: list[str], events_file: Path, log: Path) -> None:
        self.node_id = node_id
        self.cmd = cmd
        self.events_file = events_file
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def lines(self) -> list[dict[str, Any]]:
        if not self.events_file.exists():
            return []
        return [json.loads(x) for x in self.events_file.read_text().splitlines() if x.strip()]


_FLAPS = {"evicted": "rejoining as a new incarnation", "lapsed": "liveness lease lapsed",
          "deposed": "stepped down as leader"}


def _flaps(nodes: dict[str, _Node]) -> str:
    """Signs of nodes starved by the load in their logs (as in bench_cluster_scale.py)."""
    counts = dict.fromkeys(_FLAPS, 0)
    for node in nodes.values():
        text = node.log.read_text(errors="replace") if node.log.exists() else ""
        for line in text.splitlines():
            for name, needle in _FLAPS.items():
                if needle in line:
                    counts[name] += 1
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def _node_cmd(mode: str, url: str, node_id: str, cluster: str, events_file: Path) -> list[str]:
    opts = [arg for item in CLUSTER_OPTS for arg in ("--opt", item)]
    common = ["--nats-url", url, "--node-id", node_id, "--cluster", cluster, "--stream", STREAM,
              "--events-file", str(events_file), *opts]
    if mode == "echo":
        return [sys.executable, "-m", NODE_MODULE, *common[:6], "--events-file", str(events_file), *opts]
    if mode == "append":
        return [sys.executable, "-m", NODE_MODULE, *common]
    flags = {"load": [], "snapshots": ["--snapshots"], "query": ["--snapshots", "--queries"]}[mode]
    return [sys.executable, "-m", LOAD_NODE_MODULE, *common, *flags]


async def _status(nc: Client, cluster: str, node_id: str) -> dict[str, Any] | None:
    return await bench_cluster._status(nc, cluster, node_id, timeout=1)


async def _settled(nc: Client, cluster: str, shard_count: int, timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    # balanced to within one shard: rebalancing is over
    return await bench_cluster._settled(nc, cluster, shard_count, timeout, slack=0, status_timeout=1, interval=0.1)


async def _stable(nc: Client, cluster: str, shard_count: int) -> dict[str, dict[str, Any]]:
    """Settled, and the same map for 2 s: no move is still under way."""
    found = await _settled(nc, cluster, shard_count)
    while True:
        await asyncio.sleep(2)
        again = await _settled(nc, cluster, shard_count)
        if {s["map_version"] for s in again.values()} == {s["map_version"] for s in found.values()}:
            return again
        found = again


def _first_error(failed: dict[str, str]) -> str:
    if not failed:
        return ""
    kinds = sorted({e.split(":")[0] for e in failed.values()})
    return f" ({', '.join(kinds)}; first: {next(iter(failed.values()))[:240]})"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _dist(values: list[float]) -> str:
    return (f"p50 {_pct(values, 0.5):.2f} / p90 {_pct(values, 0.9):.2f} / p99 {_pct(values, 0.99):.2f} / "
            f"max {max(values):.2f} s")


async def _requests(client: ClusterClient, actors: list[str], payload: bytes,
                    done: dict[str, float], failed: dict[str, str], concurrency: int) -> None:
    room = asyncio.Semaphore(concurrency)

    async def one(actor: str) -> None:
        async with room:
            try:
                await client.request(actor, payload, timeout=120)
            except Exception as exc:  # reported, never hidden
                failed[actor] = f"{type(exc).__name__}: {exc}"
                return
            done[actor] = time.time()

    await asyncio.gather(*(one(a) for a in actors))


async def _mode(report: Report, url: str, mode: str, all_actors: list[str], events: int, work: Path) -> None:
    cluster = f"fo-{mode}-{os.getpid()}"
    shard_count = ClusterOptions().shard_count
    shards = ShardManager(shard_count)
    nodes = {n: _Node(n, _node_cmd(mode, url, n, cluster, work / f"{mode}-{n}.jsonl"), work / f"{mode}-{n}.jsonl",
                      work / f"{mode}-{n}.log") for n in NODES}
    nc = await nats.connect(url, connect_timeout=10)
    try:
        for node in nodes.values():
            node.start()
        async with ClusterClient(nc, cluster=cluster, request_timeout=120) as client:
            await client.wait_ready(timeout=120)
            warm_s = 0.0
            for attempt in range(4):  # a warm-up that starves a node's heartbeats can move shards: again
                found = await _stable(nc, cluster, shard_count)
                victim = max((n for n, s in found.items() if not s["is_leader"]),
                             key=lambda n: len(found[n]["owned"]))
                victim_shards = set(found[victim]["owned"])
                actors = [a for a in all_actors if shards.shard_for(a) in victim_shards]
                warm_done: dict[str, float] = {}
                warm_failed: dict[str, str] = {}
                warm_start = time.time()
                await _requests(client, actors, b"warm", warm_done, warm_failed, WARM_CONCURRENCY)
                warm_s += time.time() - warm_start
                if warm_failed:
                    example = next(iter(warm_failed.values()))
                    raise RuntimeError(f"{len(warm_failed)} warm-up requests failed, e.g. {example}")
                now = await _status(nc, cluster, victim)
                if now is not None and set(now["owned"]) == victim_shards and not now["is_leader"]:
                    break
                if attempt == 3:
                    raise RuntimeError("the victim's shards kept moving during the warm-up")
            done: dict[str, float] = {}
            failed: dict[str, str] = {}
            killed = time.time()
            nodes[victim].kill()
            await _requests(client, actors, b"first", done, failed, CONCURRENCY)
            all_done = time.time() - killed
    finally:
        for node in nodes.values():
            node.stop()
        await nc.close()

    acquired: dict[int, float] = {}
    served: dict[str, dict[str, Any]] = {}
    for n, node in nodes.items():
        if n == victim:
            continue
        for line in node.lines():
            if line["t"] < killed:
                continue
            if line["event"] == "acquired":
                for s in line["shards"]:
                    acquired.setdefault(s, line["t"])
            elif line["event"] == "served" and line["actor"] in done:
                served.setdefault(line["actor"], line)
    missing = victim_shards - set(acquired)
    if missing:
        raise RuntimeError(f"shards {sorted(missing)} were served but their acquisition was not logged")
    takeover = max(acquired[s] for s in victim_shards) - killed
    first_takeover = min(acquired[s] for s in victim_shards) - killed
    from_kill = [done[a] - killed for a in actors if a in done]
    from_takeover = [done[a] - acquired[shards.shard_for(a)] for a in actors if a in done]
    within_kill = sum(1 for x in from_kill if x <= TARGET_S) / len(actors)
    within_takeover = sum(1 for x in from_takeover if x <= TARGET_S) / len(actors)
    what = {"echo": f"{NODE_MODULE} without --stream: reply with the node id (no store: routing only)",
            "append": f"{NODE_MODULE} --stream: read the latest version and the last event, append one",
            "load": "Repository: activate (whole history) then append one",
            "snapshots": "Repository: activate (newest snapshot + events after it) then append one",
            "query": "Repository: activate (newest snapshot + events after it), answer with the state"}[mode]
    label = f"{mode}: {len(actors):,} actors of the SIGKILLed node ({events:,}-event stream)"
    report.add(GROUP, f"{label}: takeover (SIGKILL -> last of its {len(victim_shards)} shards acquired)",
               aether=takeover, baseline=None, unit="s",
               notes=f"first shard acquired after {first_takeover:.2f} s; warm-up of the {len(actors):,} actors "
                     f"on the victim took {warm_s:.1f} s ({WARM_CONCURRENCY} in flight); request = {what}; "
                     f"node flaps over warm-up and failover: {_flaps(nodes)}; cluster options: "
                     f"{', '.join(CLUSTER_OPTS) or 'defaults (failure_timeout 1.5 s)'}")
    report.add(GROUP, f"{label}: first request served, from SIGKILL (p99)", aether=_pct(from_kill, 0.99),
               baseline=None, unit="s",
               notes=f"{_dist(from_kill)}; {within_kill:.1%} within {TARGET_S:g} s; all served after "
                     f"{all_done:.2f} s; failed {len(failed)}{_first_error(failed)}; {CONCURRENCY} requests in flight")
    report.add(GROUP, f"{label}: first request served, from its shard's takeover (max)",
               aether=max(from_takeover), baseline=None, unit="s", max_value=TARGET_S,
               notes=f"{_dist(from_takeover)}; {within_takeover:.1%} within {TARGET_S:g} s")
    if mode != "append" and served:
        loaded = [x for x in served.values() if x["loaded"]]
        load_s = [x["load_s"] for x in loaded]
        handler = [x["end"] - x["start"] for x in served.values()]
        waited = [x["start"] - acquired[shards.shard_for(x["actor"])] for x in served.values()]
        reads = [x["read"] for x in loaded]
        report.add(GROUP, f"{label}: where the time went (activation = history read + fold, median)",
                   aether=statistics.median(load_s) if load_s else 0.0, baseline=None, unit="s",
                   notes=f"activation {_dist(load_s) if load_s else '-'}; events read per activation: median "
                         f"{statistics.median(reads) if reads else 0:g}, max {max(reads) if reads else 0}; whole "
                         f"handler {_dist(handler)}; shard acquired -> handler started {_dist(waited)}; "
                         f"{len(loaded):,} of {len(served):,} requests activated the actor")


async def run(report: Report, quick: bool) -> None:
    sizes = QUICK if quick else FULL if os.environ.get("AETHER_BENCH_FAILOVER_FULL") else DEFAULT
    events = int(os.environ.get("AETHER_BENCH_FAILOVER_EVENTS", sizes.events))
    actors = int(os.environ.get("AETHER_BENCH_FAILOVER_ACTORS", sizes.actors))
    modes = [m.strip() for m in os.environ.get("AETHER_BENCH_FAILOVER_MODES",
                                               "echo,append,load,snapshots,query").split(",")]
    keep = os.environ.get("AETHER_BENCH_FAILOVER_DIR")  # keep the node logs there (else a temporary folder)
    if keep:
        os.makedirs(keep, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aether-bench-failover-") as tmp:
        async with NatsServer(startup_timeout=600) as server:
            nc = await nats.connect(server.url, connect_timeout=10)
            try:
                started = time.perf_counter()
                await build_stream(nc, STREAM, events, [], actors=actors)
                built = time.perf_counter() - started
            finally:
                await nc.close()
            report.add(GROUP, f"stream built: {events:,} events over {actors:,} actors", aether=built,
                       baseline=None, unit="s", notes="pipelined raw publishes with the headers Aether stores")
            all_actors = [f"actor-{i}" for i in range(actors)]
            for mode in modes:
                await _mode(report, server.url, mode, all_actors, events, Path(keep or tmp))
