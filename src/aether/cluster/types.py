"""Value types of the cluster: node descriptions, load figures, the shard map, requests.

All are frozen msgspec Structs: cheap to build, encoded with msgpack on the wire and in KV.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from aether.event import utc_now

__all__ = ["ActorRequest", "Handoff", "NodeInfo", "NodeLoad", "NodeStatus", "ShardMap"]

NodeStatus = Literal["up", "leaving"]
"""``up``: a member that may own shards; ``leaving``: shutting down, gets no new shards."""


class NodeLoad(msgspec.Struct, frozen=True, kw_only=True):
    """Load figures a node publishes with every heartbeat.

    Attributes:
        event_loop_lag: seconds; the largest delay of the node's asyncio loop seen during the last
            heartbeat interval (a busy or blocked loop shows here first).
        in_flight: requests being handled now.
        shards: shards owned now.
        requests: requests handled since start.
        cpu_seconds: CPU time the process has used since start.
    """

    event_loop_lag: float = 0.0
    in_flight: int = 0
    shards: int = 0
    requests: int = 0
    cpu_seconds: float = 0.0


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a node tells the cluster about itself (its heartbeat).

    Attributes:
        id: the node id, unique in the cluster.
        address: where the node can be reached by humans or other services (free text).
        status: ``"up"`` or ``"leaving"``.
        started_at: when this node process joined (UTC).
        weight: relative capacity; a node of weight 2 gets about twice the shards.
        load: load figures (see :class:`NodeLoad`).
        metadata: free string key/value pairs (zone, version, …).
        incarnation: a fresh random token for every join; a restarted node is a new incarnation.
        beat: heartbeat counter of this incarnation.
        applied_map: the highest shard-map version this node has fully applied (its releases done).
    """

    id: str
    address: str = ""
    status: NodeStatus = "up"
    started_at: datetime = msgspec.field(default_factory=utc_now)
    weight: int = 1
    load: NodeLoad = msgspec.field(default_factory=NodeLoad)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    incarnation: str = ""
    beat: int = 0
    applied_map: int = 0


class Handoff(msgspec.Struct, frozen=True, array_like=True):
    """A shard on its way from its current owner to ``target``.

    The owner releases it (finishing in-flight work) and acknowledges by publishing
    ``applied_map >= since``; only then does the leader give the shard to ``target``.
    """

    target: str
    since: int


class ShardMap(msgspec.Struct, frozen=True, kw_only=True):
    """The versioned assignment of shards to nodes, published by the leader.

    Attributes:
        version: strictly increasing across leaders (each map is one more than the last).
        term: the fencing term of the leader that published it.
        shard_count: number of shards.
        owners: owner node id per shard (``""``: unassigned).
        members: node id → incarnation the assignments are for (a restarted node owns nothing
            until a map names its new incarnation).
        handoffs: shard → :class:`Handoff` for shards being released by their owner.
    """

    version: int
    term: int
    shard_count: int
    owners: tuple[str, ...]
    members: dict[str, str] = msgspec.field(default_factory=dict)
    handoffs: dict[int, Handoff] = msgspec.field(default_factory=dict)

    def owner(self, shard: int) -> str | None:
        """The node serving ``shard`` now: ``None`` when unassigned or being handed off."""
        if shard in self.handoffs:
            return None
        return self.owners[shard] or None

    def shards_of(self, node_id: str, incarnation: str | None = None) -> frozenset[int]:
        """Shards ``node_id`` serves under this map (not those it is handing off).

        With ``incarnation``, only when the map names that incarnation of the node.
        """
        if incarnation is not None and self.members.get(node_id) != incarnation:
            return frozenset()
        handoffs = self.handoffs
        return frozenset(s for s, o in enumerate(self.owners) if o == node_id and s not in handoffs)


class ActorRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request delivered to the handler of the node that owns ``actor_id``.

    Attributes:
        actor_id: the target actor.
        payload: the caller's bytes.
        request_id: unique per :meth:`~aether.cluster.ClusterManager.request` call and kept
            across its retries: use it to make handlers idempotent (e.g. as the event id).
        shard: the actor's shard.
        origin: node id of the caller (``""`` for a :class:`~aether.cluster.ClusterClient`).
    """

    actor_id: str
    payload: bytes
    request_id: str
    shard: int
    origin: str = ""
