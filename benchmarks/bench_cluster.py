"""Cluster benchmarks (issue 4).

* **Ring lookups/s** — :class:`aether.cluster.ConsistentHashRing` against ``uhashring`` with the
  same nodes and the same number of virtual nodes, on distinct keys (no caching helps either
  side); alternating runs, best of each.
* **Failover** — three node processes (``python -m aether.testing.node_process``, default
  :class:`~aether.cluster.ClusterOptions`) on a local nats-server; median of at least 5 runs:

  - SIGKILL of a non-leader node → the moment requests to an actor of EVERY shard it owned
    have succeeded again (a :class:`~aether.cluster.ClusterClient` keeps retrying them);
  - SIGKILL of the leader → the moment a survivor reports that it leads.

  After each run the killed node is restarted and the cluster settles before the next one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from uhashring import HashRing

from aether.cluster import ClusterClient, ClusterOptions, ConsistentHashRing, ShardManager
from aether.cluster._routing import node_subject
from aether.testing import NatsServer
from benchmarks._harness import Report

__all__ = ["run"]

GROUP = "cluster"
NODES = ["n1", "n2", "n3"]
_names = itertools.count(1)


# ---- ring ---------------------------------------------------------------------------------------------
def _ring_rows(report: Report, quick: bool) -> None:
    nodes = [f"node-{i}" for i in range(10)]
    vnodes = 160
    keys = [f"actor-{i:08d}" for i in range(50_000 if quick else 200_000)]
    ours = ConsistentHashRing(vnodes, nodes=nodes)
    theirs = HashRing(nodes=nodes, vnodes=vnodes)
    agree = sum(1 for k in keys[:2000] if ours.get_node(k) in nodes and theirs.get_node(k) in nodes)
    assert agree == 2000

    def lookups_per_second(get: Any) -> float:
        started = time.perf_counter()
        for key in keys:
            get(key)
        return len(keys) / (time.perf_counter() - started)

    best_ours = best_theirs = 0.0
    for _ in range(3 if quick else 5):
        best_theirs = max(best_theirs, lookups_per_second(theirs.get_node))
        best_ours = max(best_ours, lookups_per_second(ours.get_node))
    report.add(GROUP, f"ring get_node, {len(nodes)} nodes x {vnodes} vnodes, distinct keys",
               aether=best_ours, baseline=best_theirs, unit="lookups/s", min_ratio=1.5,
               notes="baseline: uhashring (md5), same nodes and vnodes")

    best_ours = best_theirs = 0.0
    sample = keys[: len(keys) // 4]
    for _ in range(3):
        started = time.perf_counter()
        for key in sample:
            ours.get_nodes(key, 3)
        best_ours = max(best_ours, len(sample) / (time.perf_counter() - started))
        started = time.perf_counter()
        for key in sample:
            list(theirs.range(key, size=3))
        best_theirs = max(best_theirs, len(sample) / (time.perf_counter() - started))
    report.add(GROUP, "ring get_nodes(key, 3) (replica sets)", aether=best_ours, baseline=best_theirs,
               unit="lookups/s", notes="baseline: uhashring range(key, size=3)")


# ---- failover -------------------------------------------------------------------------------------------
class _Node:
    def __init__(self, node_id: str, url: str, cluster: str, work_dir: Path) -> None:
        self.node_id = node_id
        self.cmd = [sys.executable, "-m", "aether.testing.node_process", "--nats-url", url, "--node-id", node_id,
                    "--cluster", cluster, "--events-file", str(work_dir / f"{node_id}.jsonl")]
        self.log = work_dir / f"{node_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


async def _status(nc: Client, cluster: str, node_id: str, timeout: float = 0.3) -> dict[str, Any] | None:
    try:
        msg = await nc.request(node_subject("_aether", cluster, node_id, "status"), b"", timeout=timeout)
    except Exception:
        return None
    value: dict[str, Any] = json.loads(msg.data)
    return value


async def _settled(nc: Client, cluster: str, shard_count: int, timeout: float = 60.0, *, slack: int = 2,
                   status_timeout: float = 0.3, interval: float = 0.05) -> dict[str, dict[str, Any]]:
    """The nodes' statuses once every shard is owned, one leader, one map, and each node holds at least
    its share minus ``slack`` shards (the rebalancing after a start or a restart is over).

    Raises:
        RuntimeError: not settled within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await asyncio.gather(*(_status(nc, cluster, n, status_timeout) for n in NODES))
        if all(s is not None for s in found):
            ready = {s["node_id"]: s for s in found if s is not None}
            owned = sorted(x for s in ready.values() for x in s["owned"])
            leaders = [n for n, s in ready.items() if s["is_leader"]]
            # settled = every shard owned, one leader, one map, and the rebalancing after a restart
            # finished (every node holds about its share: placement is balanced to within one shard)
            fair = shard_count // len(NODES) - slack
            if owned == list(range(shard_count)) and len(leaders) == 1 \
                    and len({s["map_version"] for s in ready.values()}) == 1 \
                    and all(len(s["owned"]) >= fair for s in ready.values()):
                return ready
        await asyncio.sleep(interval)
    raise RuntimeError("the benchmark cluster did not settle")


async def _kill_member(nc: Client, client: ClusterClient, cluster: str, nodes: dict[str, _Node],
                       actors_by_shard: dict[int, str], shard_count: int) -> float:
    found = await _settled(nc, cluster, shard_count)
    victim = next(n for n, s in found.items() if not s["is_leader"])
    shards = found[victim]["owned"]
    killed = time.monotonic()
    nodes[victim].kill()
    done: list[float] = []

    async def until_served(actor: str) -> None:
        await client.request(actor, b"ping", timeout=30)
        done.append(time.monotonic())

    await asyncio.gather(*(until_served(actors_by_shard[s]) for s in shards))
    elapsed = max(done) - killed
    nodes[victim].start()
    return elapsed


async def _kill_leader(nc: Client, cluster: str, nodes: dict[str, _Node], shard_count: int) -> float:
    found = await _settled(nc, cluster, shard_count)
    leader = next(n for n, s in found.items() if s["is_leader"])
    survivors = [n for n in NODES if n != leader]
    killed = time.monotonic()
    nodes[leader].kill()
    while True:
        statuses = await asyncio.gather(*(_status(nc, cluster, n) for n in survivors))
        if any(s is not None and s["is_leader"] for s in statuses):
            break
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - killed
    nodes[leader].start()
    return elapsed


async def _failover_rows(report: Report, quick: bool) -> None:
    runs = 5 if quick else 7
    defaults = ClusterOptions()
    shard_count = defaults.shard_count
    sm = ShardManager(shard_count)
    actors_by_shard: dict[int, str] = {}
    for i in itertools.count():
        actors_by_shard.setdefault(sm.shard_for(f"bench-actor-{i}"), f"bench-actor-{i}")
        if len(actors_by_shard) == shard_count:
            break
    with tempfile.TemporaryDirectory(prefix="aether-bench-cluster-") as tmp:
        work = Path(tmp)
        async with NatsServer() as server:
            cluster = f"bench-{os.getpid()}-{next(_names)}"
            nodes = {n: _Node(n, server.url, cluster, work) for n in NODES}
            nc = await nats.connect(server.url)
            try:
                for node in nodes.values():
                    node.start()
                async with ClusterClient(nc, cluster=cluster) as client:
                    await client.wait_ready(timeout=60)
                    member_times = [await _kill_member(nc, client, cluster, nodes, actors_by_shard, shard_count)
                                    for _ in range(runs)]
                    leader_times = [await _kill_leader(nc, cluster, nodes, shard_count) for _ in range(runs)]
            finally:
                for node in nodes.values():
                    node.stop()
                await nc.close()
    settings = (f"heartbeat {defaults.heartbeat_interval}s, failure_timeout {defaults.failure_timeout}s, "
                f"lease_ttl {defaults.lease_ttl}s, renew {defaults.renew_interval}s, "
                f"check {defaults.check_interval}s")
    report.add(GROUP, f"failover: SIGKILL member -> all its shards serve again (median of {runs})",
               aether=statistics.median(member_times), baseline=None, unit="s", max_value=3.0,
               notes=f"runs {', '.join(f'{t:.2f}' for t in member_times)}; {settings}")
    report.add(GROUP, f"failover: SIGKILL leader -> new leader (median of {runs})",
               aether=statistics.median(leader_times), baseline=None, unit="s", max_value=3.0,
               notes=f"runs {', '.join(f'{t:.2f}' for t in leader_times)}; {settings}")


async def run(report: Report, quick: bool) -> None:
    _ring_rows(report, quick)
    await _failover_rows(report, quick)
