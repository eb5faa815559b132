"""A fleet of real ``aether node`` processes on one machine (scale tests and benchmarks).

    fleet = NodeFleet(server.url, cluster="scale", work_dir=tmp)
    fleet.start(17)                                  # node-1 … node-17, started back to back
    await fleet.wait_balanced(nc, timeout=60)        # every node owns its floor/ceil share
    fleet.kill("node-3")                             # SIGKILL: no goodbye
    await fleet.wait_balanced(nc, timeout=60)        # the survivors serve every shard, balanced
    fleet.stop_all()

Each node answers ``<prefix>.cluster.<cluster>.node.<id>.status`` with its JSON status
(:meth:`aether.cluster.ClusterManager.status`); :func:`balance_of` judges a set of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aether.cluster._routing import node_subject
from aether.demo.processes import NodeProcess
from aether.errors import AetherTimeoutError

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["Balance", "NodeFleet", "balance_of", "cpu_seconds"]


@dataclass(frozen=True, slots=True)
class Balance:
    """What a set of node statuses says about the cluster.

    Attributes:
        served: shards some node serves now. overlap: shards two nodes claim (must stay 0).
        counts: shards per node. balanced: every expected node answered, every shard is served
        exactly once and each node holds ``floor(S/N)`` or ``ceil(S/N)``. leaders: nodes that lead.
    """

    served: int
    overlap: int
    counts: dict[str, int]
    balanced: bool
    leaders: list[str]

    @property
    def spread(self) -> tuple[int, int]:
        """(min, max) shards per node (``(0, 0)`` without nodes)."""
        values = list(self.counts.values())
        return (min(values), max(values)) if values else (0, 0)


def balance_of(statuses: dict[str, dict[str, Any] | None], shard_count: int) -> Balance:
    """Judge ``{node_id: status or None}`` for a cluster of equal-weight nodes."""
    answered = {n: s for n, s in statuses.items() if s is not None}
    counts = {n: len(s["owned"]) for n, s in answered.items()}
    owned = [shard for s in answered.values() for shard in s["owned"]]
    served = len(set(owned))
    n = len(statuses)
    low, high = (shard_count // n, -(-shard_count // n)) if n else (0, 0)
    balanced = (len(answered) == n and served == shard_count and len(owned) == shard_count
                and all(low <= c <= high for c in counts.values()))
    leaders = sorted(nid for nid, s in answered.items() if s["is_leader"])
    return Balance(served, len(owned) - served, counts, balanced, leaders)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class NodeFleet:
    """``aether node`` child processes of one cluster (killed on :meth:`kill_all`).

    Args:
        nats_url: the server the nodes connect to.
        cluster: the cluster name.
        work_dir: where each node's log goes.
        shard_count: the cluster's shard count.
        extra_args: more ``aether node`` arguments.
    """

    def __init__(self, nats_url: str, *, cluster: str, work_dir: Path, shard_count: int = 64,
                 extra_args: Sequence[str] = ()) -> None:
        self.nats_url = nats_url
        self.cluster = cluster
        self.work_dir = work_dir
        self.shard_count = shard_count
        self.args = ["--cluster", cluster, "--nats-url", nats_url, "--no-metrics", "--shard-count",
                     str(shard_count), *extra_args]
        self.nodes: dict[str, NodeProcess] = {}

    def start(self, count: int) -> list[str]:
        """Start ``count`` more nodes (``node-<i>``) back to back; returns their ids."""
        first = len(self.nodes) + 1
        ids = [f"node-{i}" for i in range(first, first + count)]
        for node_id in ids:
            proc = NodeProcess(node_id, list(self.args), self.work_dir)
            proc.start()
            self.nodes[node_id] = proc
        return ids

    def running(self) -> list[str]:
        """Ids of the nodes whose process runs."""
        return [n for n, p in self.nodes.items() if p.running]

    def pid(self, node_id: str) -> int | None:
        """The process id of ``node_id`` while it runs."""
        return self.nodes[node_id].pid

    def kill(self, node_id: str) -> None:
        """SIGKILL ``node_id`` (no goodbye)."""
        self.nodes[node_id].kill()

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGTERM every node (a graceful leave), SIGKILL stragglers."""
        NodeProcess.stop_all(list(self.nodes.values()), timeout=timeout)

    def kill_all(self) -> None:
        """SIGKILL every node still running."""
        for proc in self.nodes.values():
            proc.kill()

    async def status(self, nc: Client, node_id: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """The JSON status of ``node_id`` (``None`` when it does not answer in time)."""
        try:
            msg = await nc.request(node_subject("_aether", self.cluster, node_id, "status"), b"", timeout=timeout)
        except Exception:
            return None
        data: dict[str, Any] = json.loads(msg.data)
        return data

    async def statuses(self, nc: Client, node_ids: Sequence[str] | None = None,
                       timeout: float = 1.0) -> dict[str, dict[str, Any] | None]:
        """Statuses of ``node_ids`` (default: the running nodes), asked in parallel."""
        ids = list(node_ids) if node_ids is not None else self.running()
        found = await asyncio.gather(*(self.status(nc, n, timeout) for n in ids))
        return dict(zip(ids, found, strict=True))

    async def wait_balanced(self, nc: Client, *, timeout: float = 60.0, interval: float = 0.1,
                            need_leader: bool = True) -> Balance:
        """Wait until the running nodes serve every shard once, balanced (and one leads).

        Raises:
            AetherTimeoutError: not within ``timeout`` seconds (the message holds the last view).
        """
        deadline = time.monotonic() + timeout
        last: Balance | None = None
        while True:
            last = balance_of(await self.statuses(nc), self.shard_count)
            if last.balanced and (not need_leader or len(last.leaders) == 1):
                return last
            if time.monotonic() >= deadline:
                tails = "\n".join(f"{n}: {p.log_tail()}" for n, p in self.nodes.items())
                raise AetherTimeoutError(f"cluster {self.cluster!r} not balanced within {timeout}s: "
                                         f"counts {last.counts}, served {last.served}, leaders {last.leaders}"
                                         f"\n{tails}")
            await asyncio.sleep(interval)
