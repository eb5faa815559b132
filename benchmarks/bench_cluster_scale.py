"""Cluster at scale (issue 17): N real ``aether node`` processes on one machine and one nats-server.

    python -m benchmarks --only cluster_scale        # N = 3, 9, 17, 33 (``cluster-scale`` works too)
    python -m benchmarks --only cluster_scale --quick   # N = 3, 9
    AETHER_SCALE_NODES=3,9,17 python -m benchmarks --only cluster_scale

Per N (default :class:`~aether.cluster.ClusterOptions`, 64 shards):

* **formation** — the N processes are started back to back; the time from the last start
  until every node serves its balanced share (``floor(64/N)`` or ``ceil(64/N)``), every shard
  exactly once, one leader;
* **at rest** — over 10 s: each node's CPU (``/proc``, % of one core) and its NATS messages/s
  in and out (the server's ``/connz``), mean and max over nodes. These grow linearly with N
  per node by design (each node reads every heartbeat); the ``per N`` column divides by N;
* **member failover** — SIGKILL of a non-leader; time until the survivors serve every shard
  again, balanced over N-1;
* **leader failover** — SIGKILL of the leader; time until a new leader publishes a map in
  which the survivors serve every shard, balanced over N-2.

Baseline: the messages/s row compares with plain nats-py all-to-all heartbeats (N connections,
each publishing every 0.5 s and subscribing to all: the least traffic any membership protocol
with that failure detection needs), measured in the same run on the same server. Formation and
failover have no plain-nats-py equivalent and carry no ratio; the ``placement`` rows time
:meth:`ShardManager.placement` against a plain ring lookup
of every shard (the cost a consistent-hash-only placement would have). The machine is a shared
2-core box: with other work running the absolute times are pessimistic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats

from aether.cluster import ConsistentHashRing, ShardManager
from aether.testing import NatsServer
from aether.testing.fleet import NodeFleet, cpu_seconds
from benchmarks._harness import Report

__all__ = ["run"]

GROUP = "cluster-scale"
SHARDS = 64
REST_WINDOW = 10.0


def _sizes(quick: bool) -> list[int]:
    env = os.environ.get("AETHER_SCALE_NODES", "")
    if env:
        return [int(x) for x in env.split(",") if x.strip()]
    return [3, 9] if quick else [3, 9, 17, 33]


def _connz(monitor_port: int) -> dict[int, dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/connz?limit=4096", timeout=5) as reply:
        data = json.loads(reply.read())
    return {c["cid"]: c for c in data.get("connections", [])}


_FLAPS = {"evicted": "rejoining as a new incarnation", "lapsed": "liveness lease lapsed",
          "deposed": "stepped down as leader"}


def _flaps(fleet: NodeFleet) -> str:
    """Counts of flapping signs in the nodes' logs: a live node evicted, a liveness lease that
    lapsed (the node paused serving), a leader that lost its lease while running."""
    counts = dict.fromkeys(_FLAPS, 0)
    for proc in fleet.nodes.values():
        text = proc.log_file.read_text(errors="replace") if proc.log_file.exists() else ""
        for line in text.splitlines():
            for name, needle in _FLAPS.items():
                if needle in line and "stopped" not in line:
                    counts[name] += 1
    return ", ".join(f"{name} {count}" for name, count in counts.items())


async def _raw_gossip(url: str, monitor_port: int, n: int, interval: float = 0.5) -> float:
    """The baseline: the least all-to-all membership traffic — N plain nats-py connections, each
    publishing a heartbeat every ``interval`` on its own subject and subscribing to everyone's.
    Returns messages/s per connection (sent + received), measured with ``/connz`` like Aether."""
    clients = [await nats.connect(url, name=f"gossip-{i}") for i in range(n)]
    received = [0]

    async def on_beat(msg: Any) -> None:
        received[0] += 1

    try:
        for client in clients:
            await client.subscribe("gossip.*", cb=on_beat)
        stop = asyncio.Event()

        async def beat(i: int) -> None:
            while not stop.is_set():
                await clients[i].publish(f"gossip.{i}", b"x" * 200)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)

        tasks = [asyncio.ensure_future(beat(i)) for i in range(n)]
        await asyncio.sleep(2.0)
        before = _connz(monitor_port)
        await asyncio.sleep(REST_WINDOW)
        after = _connz(monitor_port)
        stop.set()
        await asyncio.gather(*tasks)
        rates = [((c["in_msgs"] + c["out_msgs"]) - (before[cid]["in_msgs"] + before[cid]["out_msgs"])) / REST_WINDOW
                 for cid, c in after.items() if str(c.get("name", "")).startswith("gossip-") and cid in before]
        return float(sum(rates) / len(rates))
    finally:
        for client in clients:
            await client.close()


def _placement_rows(report: Report) -> None:
    nodes = {f"node-{i}": 1 for i in range(64)}
    sm = ShardManager(4096)
    ring = ConsistentHashRing(160)
    keys = [f"shard-{s}" for s in range(4096)]

    def best(fn: Any, runs: int = 5) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    def fresh() -> None:
        ShardManager(4096).placement(nodes)

    def ring_only() -> None:
        ring.set_nodes({})
        ring.set_nodes(nodes)
        for key in keys:
            ring.get_node(key)

    owners = sm.placement(nodes)
    fewer = dict(nodes)
    del fewer["node-7"]
    report.add(GROUP, "placement 4096 shards x 64 nodes, new node set (ring rebuilt)", aether=best(fresh) * 1e3,
               baseline=best(ring_only) * 1e3, unit="ms", max_value=250,
               notes="baseline: rebuild the same ring and look every shard up (unbalanced placement)")
    sm.placement(fewer, owners)
    report.add(GROUP, "placement 4096 x 63 after a failure, same node set (leader's round)",
               aether=best(lambda: sm.placement(fewer, owners)) * 1e3, baseline=None, unit="ms", max_value=50)


async def _scale(report: Report, n: int, work: Path) -> None:
    async with NatsServer() as server:
        monitor = server.monitor_port
        nc = await nats.connect(server.url, name="bench-observer")
        fleet = NodeFleet(server.url, cluster=f"scale{n}-{os.getpid()}", work_dir=work, shard_count=SHARDS)
        try:
            fleet.start(n)
            started = time.monotonic()
            await fleet.wait_balanced(nc, timeout=120)
            formation = time.monotonic() - started
            report.add(GROUP, f"N={n}: formation (last process started -> every node owns its share)",
                       aether=formation, baseline=None, unit="s", max_value=10.0 if n <= 17 else None,
                       notes=f"{SHARDS // n}-{-(-SHARDS // n)} shards per node; flaps: {_flaps(fleet)}")

            await asyncio.sleep(3.0)  # let start-up work (imports, first handoffs) die down
            pids = {node: fleet.pid(node) for node in fleet.running()}
            cpu0 = {node: cpu_seconds(pid) for node, pid in pids.items() if pid}
            conn0 = _connz(monitor)
            await asyncio.sleep(REST_WINDOW)
            conn1 = _connz(monitor)
            cpu = [(cpu_seconds(pid) - cpu0[node]) / REST_WINDOW * 100 for node, pid in pids.items() if pid]
            rates_in, rates_out = [], []
            for cid, c in conn1.items():
                if c.get("name") == "bench-observer" or cid not in conn0:
                    continue
                rates_in.append((c["in_msgs"] - conn0[cid]["in_msgs"]) / REST_WINDOW)
                rates_out.append((c["out_msgs"] - conn0[cid]["out_msgs"]) / REST_WINDOW)
            cpu_mean = sum(cpu) / len(cpu)
            report.add(GROUP, f"N={n}: at rest, CPU per node (% of one core)", aether=cpu_mean, baseline=None,
                       unit="%", notes=f"max {max(cpu):.1f}%; per N {cpu_mean / n:.2f}")
            sent, got = sum(rates_in) / len(rates_in), sum(rates_out) / len(rates_out)
            gossip = await _raw_gossip(server.url, monitor, n)
            report.add(GROUP, f"N={n}: at rest, NATS msgs/s per node (sent + received)", aether=sent + got,
                       baseline=gossip, unit="msg/s",
                       notes=f"sent {sent:.0f}/s, received {got:.0f}/s; per N {(sent + got) / n:.1f}; "
                             f"{len(rates_in)} connections; baseline: plain nats-py all-to-all heartbeats "
                             f"every 0.5 s (the least membership traffic)")

            if n >= 2:
                view = await fleet.wait_balanced(nc, timeout=60)
                victim = next(node for node in sorted(view.counts) if node not in view.leaders)
                killed = time.monotonic()
                fleet.kill(victim)
                await fleet.wait_balanced(nc, timeout=60)
                report.add(GROUP, f"N={n}: SIGKILL member -> every shard served, balanced over N-1",
                           aether=time.monotonic() - killed, baseline=None, unit="s",
                           max_value=3.0 if n <= 17 else None)
            if n >= 3:
                view = await fleet.wait_balanced(nc, timeout=60)
                leader = view.leaders[0]
                killed = time.monotonic()
                fleet.kill(leader)
                await fleet.wait_balanced(nc, timeout=60)
                report.add(GROUP, f"N={n}: SIGKILL leader -> new leader, every shard served, balanced over N-2",
                           aether=time.monotonic() - killed, baseline=None, unit="s",
                           notes=f"flaps over the whole run: {_flaps(fleet)}")
        finally:
            await asyncio.to_thread(fleet.stop_all, 20.0)
            await nc.close()


async def run(report: Report, quick: bool) -> None:
    _placement_rows(report)
    with tempfile.TemporaryDirectory(prefix="aether-bench-scale-") as tmp:
        for n in _sizes(quick):
            work = Path(tmp) / f"n{n}"
            work.mkdir()
            await _scale(report, n, work)
