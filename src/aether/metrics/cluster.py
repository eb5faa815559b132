"""ClusterMetrics: Prometheus metrics of cluster nodes (a :class:`~aether.cluster.ClusterObserver`).

Pass one instance to every node (or discovery / election) that should report into the same
registry::

    metrics = ClusterMetrics(registry)
    node = ClusterManager(nc, node_id="n1", cluster="orders", observer=metrics)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._prometheus import prometheus, register, resolve_registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["DEFAULT_CLUSTER_BUCKETS", "ClusterMetrics"]

#: Histogram buckets in seconds for lease renewals (1 ms … 2.5 s) and handoffs (up to the bound).
DEFAULT_CLUSTER_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)


class ClusterMetrics:
    """Membership, leadership, shard and lease metrics, labelled by ``cluster`` and ``node``.

    ============================================== ========= ===============================================
    ``aether_cluster_members``                     gauge     live members this node sees (itself included)
    ``aether_cluster_is_leader``                   gauge     1 while this node leads, else 0
    ``aether_cluster_leader_term``                 gauge     fencing term of this node's last leadership
    ``aether_cluster_leader_changes_total``        counter   leaderships gained or lost by this node
    ``aether_cluster_shards_owned``                gauge     shards this node serves
    ``aether_cluster_shard_moves_total``           counter   shards moved by maps this node published as leader
    ``aether_cluster_handoff_seconds``             histogram time to release shards (in-flight work drained)
    ``aether_cluster_lease_renew_seconds``         histogram latency of successful leader-lease renewals
    ``aether_cluster_lease_renew_failures_total``  counter   leader-lease renewals that failed
    ============================================== ========= ===============================================

    Args:
        registry: the ``prometheus_client.CollectorRegistry`` to register in (default: the
            global ``prometheus_client.REGISTRY``).
        buckets: histogram buckets in seconds.

    Raises:
        MetricsUnavailableError: ``prometheus-client`` is not installed.
        InvalidInputError: ``registry`` holds these metrics already (one ClusterMetrics serves every node).
    """

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 buckets: Sequence[float] = DEFAULT_CLUSTER_BUCKETS) -> None:
        prom = prometheus()
        self.registry = resolve_registry(registry)
        labels = ["cluster", "node"]

        def gauge(name: str, doc: str) -> Any:
            return prom.Gauge(name, doc, labels, registry=None)

        def counter(name: str, doc: str) -> Any:
            return prom.Counter(name, doc, labels, registry=None)

        def histogram(name: str, doc: str) -> Any:
            return prom.Histogram(name, doc, labels, registry=None, buckets=tuple(buckets))

        self.members = gauge("aether_cluster_members", "Live members this node sees, itself included.")
        self.is_leader = gauge("aether_cluster_is_leader", "1 while this node leads its cluster, else 0.")
        self.leader_term = gauge("aether_cluster_leader_term", "Fencing term of this node's last leadership.")
        self.leader_changes = counter("aether_cluster_leader_changes_total",
                                      "Leaderships gained or lost by this node.")
        self.shards_owned = gauge("aether_cluster_shards_owned", "Shards this node serves.")
        self.shard_moves = counter("aether_cluster_shard_moves_total",
                                   "Shards moved (handoffs started or reassigned) by maps this node published.")
        self.handoff_seconds = histogram("aether_cluster_handoff_seconds",
                                         "Time to release shards, draining in-flight work.")
        self.lease_renew_seconds = histogram("aether_cluster_lease_renew_seconds",
                                             "Latency of successful leader-lease renewals.")
        self.lease_renew_failures = counter("aether_cluster_lease_renew_failures_total",
                                            "Leader-lease renewals that failed.")
        self._collectors = [self.members, self.is_leader, self.leader_term, self.leader_changes, self.shards_owned,
                            self.shard_moves, self.handoff_seconds, self.lease_renew_seconds,
                            self.lease_renew_failures]
        register(self.registry, self._collectors)

    # ---- ClusterObserver ------------------------------------------------------------------
    def on_members(self, cluster: str, node: str, count: int) -> None:
        """The node now sees ``count`` live members."""
        self.members.labels(cluster, node).set(count)

    def on_leadership(self, cluster: str, node: str, is_leader: bool, term: int) -> None:
        """The node gained or lost leadership."""
        self.is_leader.labels(cluster, node).set(1 if is_leader else 0)
        self.leader_term.labels(cluster, node).set(term)
        self.leader_changes.labels(cluster, node).inc()

    def on_lease_renewal(self, cluster: str, node: str, seconds: float, ok: bool) -> None:
        """A lease renewal finished or failed."""
        if ok:
            self.lease_renew_seconds.labels(cluster, node).observe(seconds)
        else:
            self.lease_renew_failures.labels(cluster, node).inc()

    def on_shards_owned(self, cluster: str, node: str, count: int) -> None:
        """The node now owns ``count`` shards."""
        self.shards_owned.labels(cluster, node).set(count)

    def on_shard_moves(self, cluster: str, node: str, moves: int) -> None:
        """A published map moved ``moves`` shards."""
        self.shard_moves.labels(cluster, node).inc(moves)

    def on_handoff(self, cluster: str, node: str, shards: int, seconds: float) -> None:
        """The node released ``shards`` shards in ``seconds``."""
        self.handoff_seconds.labels(cluster, node).observe(seconds)

    def unregister(self) -> None:
        """Remove these metrics from their registry."""
        for collector in self._collectors:
            with contextlib.suppress(KeyError):
                self.registry.unregister(collector)
