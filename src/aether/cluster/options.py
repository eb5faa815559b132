"""Frozen, keyword-only configuration of a cluster node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

from aether.errors import InvalidInputError

__all__ = ["ClusterOptionFields", "ClusterOptions", "check_heartbeat_timings", "check_lease_timings"]


def check_heartbeat_timings(heartbeat_interval: float, failure_timeout: float, liveness_margin: float) -> None:
    """The membership timing rules (used by :class:`ClusterOptions` and :class:`~aether.cluster.NodeDiscovery`).

    Raises:
        InvalidInputError: ``heartbeat_interval <= 0``, ``liveness_margin < 0``, or
            ``failure_timeout <= heartbeat_interval + liveness_margin``.
    """
    if heartbeat_interval <= 0 or liveness_margin < 0:
        raise InvalidInputError("heartbeat_interval must be > 0 and liveness_margin >= 0")
    if failure_timeout <= heartbeat_interval + liveness_margin:
        raise InvalidInputError(f"failure_timeout ({failure_timeout}) must exceed heartbeat_interval + "
                                f"liveness_margin ({heartbeat_interval} + {liveness_margin})")


def check_lease_timings(lease_ttl: float, renew_interval: float, step_down_margin: float,
                        check_interval: float) -> None:
    """The leader-lease timing rules (used by :class:`ClusterOptions` and :class:`~aether.cluster.LeaderElection`).

    Raises:
        InvalidInputError: a non-positive interval, ``step_down_margin < 0``, or
            ``lease_ttl <= renew_interval + step_down_margin``.
    """
    if renew_interval <= 0 or check_interval <= 0 or step_down_margin < 0:
        raise InvalidInputError("renew_interval and check_interval must be > 0, step_down_margin >= 0")
    if lease_ttl <= renew_interval + step_down_margin:
        raise InvalidInputError(f"lease_ttl ({lease_ttl}) must exceed renew_interval + step_down_margin "
                                f"({renew_interval} + {step_down_margin})")


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterOptions:
    """Options of :class:`~aether.cluster.ClusterManager` (defaults tuned for ~2 s failover).

    Attributes:
        shard_count: number of shards; fixed for the life of the cluster (all nodes must agree).
        heartbeat_interval: seconds between a node's heartbeats.
        failure_timeout: seconds without a heartbeat before a node is declared failed and evicted.
        liveness_margin: a node stops serving this long before it could be evicted.
        check_interval: seconds between reads of members, lease and shard map (hints make most
            changes visible at once; this bounds how long a missed hint can hide one).
        lease_ttl: seconds the leader's lease lasts without renewal.
        renew_interval: seconds between lease renewals.
        step_down_margin: the leader steps down this long before its lease could be taken over.
        handoff_timeout: bound on finishing in-flight work (and the release callbacks) when a
            shard is released; after it the shard is released anyway.
        max_moves_per_round: how many shards may be handed off between live nodes at once.
        virtual_nodes: ring points per unit of node weight.
        request_timeout: default timeout of :meth:`~aether.cluster.ClusterManager.request`.
        max_concurrency: requests a node handles at once (more wait).
        replicas: replicas of the cluster's KV bucket (3 on a NATS cluster).
        storage: ``"file"`` or ``"memory"`` for the KV bucket.
        subject_prefix: first token of the cluster's request subjects.
    """

    shard_count: int = 64
    heartbeat_interval: float = 0.5
    failure_timeout: float = 1.5
    liveness_margin: float = 0.25
    check_interval: float = 0.25
    lease_ttl: float = 2.0
    renew_interval: float = 0.5
    step_down_margin: float = 0.25
    handoff_timeout: float = 1.0
    max_moves_per_round: int = 8
    virtual_nodes: int = 160
    request_timeout: float = 5.0
    max_concurrency: int = 1000
    replicas: int = 1
    storage: Literal["file", "memory"] = "file"
    subject_prefix: str = "_aether"

    def __post_init__(self) -> None:
        from aether.names import validate_subject_prefix

        if not 1 <= self.shard_count <= 65536:
            raise InvalidInputError(f"shard_count must be 1..65536, got {self.shard_count}")
        for name in ("handoff_timeout", "request_timeout"):
            if getattr(self, name) <= 0:
                raise InvalidInputError(f"{name} must be > 0")
        check_heartbeat_timings(self.heartbeat_interval, self.failure_timeout, self.liveness_margin)
        check_lease_timings(self.lease_ttl, self.renew_interval, self.step_down_margin, self.check_interval)
        if self.max_moves_per_round < 1 or self.max_concurrency < 1:
            raise InvalidInputError("max_moves_per_round and max_concurrency must be >= 1")
        if self.replicas not in (1, 2, 3, 4, 5):
            raise InvalidInputError(f"replicas must be 1..5, got {self.replicas}")
        if self.storage not in ("file", "memory"):
            raise InvalidInputError(f"storage must be 'file' or 'memory', got {self.storage!r}")
        validate_subject_prefix(self.subject_prefix)


class ClusterOptionFields(TypedDict, total=False):
    """The fields of :class:`ClusterOptions`, accepted as keyword arguments by
    :class:`~aether.cluster.ClusterManager` (typed: mypy reports a misspelt one)."""

    shard_count: int
    heartbeat_interval: float
    failure_timeout: float
    liveness_margin: float
    check_interval: float
    lease_ttl: float
    renew_interval: float
    step_down_margin: float
    handoff_timeout: float
    max_moves_per_round: int
    virtual_nodes: int
    request_timeout: float
    max_concurrency: int
    replicas: int
    storage: Literal["file", "memory"]
    subject_prefix: str
