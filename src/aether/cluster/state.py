"""A read-only view of a cluster, straight from its KV bucket (no membership, no leadership).

Reads the ``leader`` lease, the ``map`` key and every ``node.*`` heartbeat of the bucket
``aether-cluster-<cluster>`` (see :mod:`aether.cluster`), and optionally asks each member for its
live status on its ``status`` subject. Public so that tools which only watch a cluster (``aether
cluster status``, the dashboard, the demo) need not reach into the cluster's private modules.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from aether._nats import ERR_STREAM_NOT_FOUND, JetStreamApiError
from aether.cluster._kv import ClusterBucket
from aether.cluster._routing import MAP_KEY, decode_map, node_subject
from aether.cluster.leader import LEADER_KEY, LeaseRecord
from aether.cluster.types import NodeInfo, ShardMap
from aether.errors import ClusterError

if TYPE_CHECKING:  # nats-py types in signatures only: the cluster speaks NATS through aether._nats
    from nats.aio.client import Client

__all__ = ["ClusterState", "MemberState", "read_cluster_state"]

_decode_lease = msgspec.msgpack.Decoder(LeaseRecord).decode
_decode_info = msgspec.msgpack.Decoder(NodeInfo).decode
_decode_json = msgspec.json.decode


@dataclass
class MemberState:
    """One member as its heartbeat (and, when asked, its status reply) describes it."""

    id: str
    address: str
    status: str
    started_at: datetime
    incarnation: str
    weight: int
    shards: int
    in_flight: int
    requests: int
    event_loop_lag: float
    metadata: dict[str, str]
    in_map: bool
    reachable: bool | None = None
    live: dict[str, Any] | None = None


@dataclass
class ClusterState:
    """Members, leader and term, and the shard map of one cluster."""

    cluster: str
    leader_id: str | None = None
    term: int = 0
    map_version: int = 0
    map_term: int = 0
    shard_count: int = 0
    handoffs: int = 0
    unassigned: int = 0
    shards_per_node: dict[str, int] = field(default_factory=dict)
    members: list[MemberState] = field(default_factory=list)
    shard_map: ShardMap | None = None

    def _up(self) -> list[MemberState]:
        return [m for m in self.members if m.status == "up"]

    def shard_spread(self) -> tuple[int, int]:
        """(fewest, most) shards held by a live ``up`` member — one holding none counts as 0;
        ``(0, 0)`` without members."""
        counts = [m.shards for m in self._up()]
        return (min(counts), max(counts)) if counts else (0, 0)

    def fair_range(self) -> tuple[int, int]:
        """The balanced range for equal weights: ``floor(S/N)`` to ``ceil(S/N)`` over the ``up`` members."""
        n = len(self._up())
        return (self.shard_count // n, -(-self.shard_count // n)) if n and self.shard_count else (0, 0)

    @property
    def balanced(self) -> bool:
        """Every shard assigned, none in handoff, and every ``up`` member holds its weighted share
        rounded down or up (equal weights: ``floor(S/N)`` or ``ceil(S/N)``)."""
        up = self._up()
        if not up or not self.shard_count or self.unassigned or self.handoffs:
            return False
        total = sum(max(1, m.weight) for m in up)
        return all(self.shard_count * max(1, m.weight) // total <= m.shards
                   <= -(-self.shard_count * max(1, m.weight) // total) for m in up)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (without the raw shard map's owner list)."""
        low, high = self.shard_spread()
        return {
            "cluster": self.cluster,
            "leader": {"id": self.leader_id, "term": self.term},
            "map": {"version": self.map_version, "term": self.map_term, "shard_count": self.shard_count,
                    "handoffs": self.handoffs, "unassigned": self.unassigned},
            "shards_per_node": self.shards_per_node,
            "balance": {"min_shards": low, "max_shards": high, "balanced": self.balanced},
            "members": [msgspec.to_builtins(m.__dict__) for m in self.members],
        }


async def read_cluster_state(nc: Client, cluster: str, *, ping: bool = False,
                             ping_timeout: float = 0.5, subject_prefix: str = "_aether") -> ClusterState:
    """Read a cluster's state from its bucket.

    Args:
        ping: also ask every member for its live status (marks unreachable ones).

    Raises:
        ClusterError: the cluster does not exist.
        InvalidNameError: bad cluster name.
        StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
    """
    bucket = ClusterBucket(nc, cluster)
    try:
        try:
            await bucket.api.api(f"STREAM.INFO.{bucket.stream}")
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                raise ClusterError(f"cluster {cluster!r} does not exist (no KV bucket {bucket.name!r})") from None
            raise
        lease, map_entry, nodes = await asyncio.gather(bucket.get(LEADER_KEY), bucket.get(MAP_KEY),
                                                       bucket.get_prefix("node."))
    finally:
        await bucket.aclose()
    state = ClusterState(cluster)
    if lease is not None and not lease.deleted:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            record = _decode_lease(lease.value)
            state.leader_id = record.node_id
            state.term = record.term or lease.revision
    if map_entry is not None and not map_entry.deleted:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            published = decode_map(map_entry.value)
            state.shard_map = published
            state.map_version, state.map_term = published.version, published.term
            state.shard_count = published.shard_count
            state.handoffs = len(published.handoffs)
            state.unassigned = sum(1 for owner in published.owners if not owner)
            for node_id in sorted(set(published.owners) - {""}):
                state.shards_per_node[node_id] = len(published.shards_of(node_id))
    for entry in nodes:
        if entry.deleted:
            continue
        try:
            info = _decode_info(entry.value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        shard_map = state.shard_map
        in_map = shard_map is not None and shard_map.members.get(info.id) == info.incarnation
        state.members.append(MemberState(
            id=info.id, address=info.address, status=info.status, started_at=info.started_at,
            incarnation=info.incarnation, weight=info.weight,
            shards=len(shard_map.shards_of(info.id, info.incarnation)) if shard_map is not None else 0,
            in_flight=info.load.in_flight, requests=info.load.requests, event_loop_lag=info.load.event_loop_lag,
            metadata=dict(info.metadata), in_map=in_map))
    state.members.sort(key=lambda m: m.id)
    if ping and state.members:
        await asyncio.gather(*(_ping(nc, cluster, m, ping_timeout, subject_prefix) for m in state.members))
    return state


async def _ping(nc: Client, cluster: str, member: MemberState, timeout: float, prefix: str) -> None:
    try:
        msg = await nc.request(node_subject(prefix, cluster, member.id, "status"), b"", timeout=timeout)
        member.live = _decode_json(msg.data)
        member.reachable = True
    except Exception:
        member.reachable = False
