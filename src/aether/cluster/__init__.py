"""Cluster primitives: membership, leader election with fencing, sharding, handoff and routing.

* :class:`ConsistentHashRing` — stable consistent hashing with virtual nodes and weights.
* :class:`NodeDiscovery` — heartbeats in JetStream KV; join / leave / failure notifications.
* :class:`LeaderElection` — a KV lease whose revision is a strictly increasing fencing term.
* :class:`ShardManager` — actors → shards → nodes; the versioned shard map.
* :class:`ClusterManager` — one cluster node tying them together, with handoff and
  :meth:`~ClusterManager.request` routing; :class:`ClusterClient` routes without being a member.

See ``docs/cluster.md`` for the protocol, the defaults and the failover figures.
"""

from aether.cluster.client import ClusterClient
from aether.cluster.discovery import NodeDiscovery
from aether.cluster.hashring import ConsistentHashRing, stable_hash
from aether.cluster.leader import Fence, LeaderChange, LeaderElection
from aether.cluster.manager import ClusterManager, RequestHandler
from aether.cluster.observer import ClusterObserver
from aether.cluster.options import ClusterOptions
from aether.cluster.shard import ShardManager
from aether.cluster.types import ActorRequest, Handoff, NodeInfo, NodeLoad, NodeStatus, ShardMap

__all__ = [
    "ActorRequest",
    "ClusterClient",
    "ClusterManager",
    "ClusterObserver",
    "ClusterOptions",
    "ConsistentHashRing",
    "Fence",
    "Handoff",
    "LeaderChange",
    "LeaderElection",
    "NodeDiscovery",
    "NodeInfo",
    "NodeLoad",
    "NodeStatus",
    "RequestHandler",
    "ShardManager",
    "ShardMap",
    "stable_hash",
]
