"""The hook through which the cluster reports what it does (implemented by aether.metrics.cluster)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["ClusterObserver"]


class ClusterObserver(Protocol):
    """Receives cluster activity. Every method must be cheap and must never raise.

    ``cluster`` and ``node`` identify the reporting node (one process may run several).
    """

    def on_members(self, cluster: str, node: str, count: int) -> None:
        """The node now sees ``count`` live members (itself included)."""

    def on_leadership(self, cluster: str, node: str, is_leader: bool, term: int) -> None:
        """The node gained (``is_leader``) or lost leadership; ``term`` is the fencing term."""

    def on_lease_renewal(self, cluster: str, node: str, seconds: float, ok: bool) -> None:
        """A leader-lease renewal finished (``ok``) or failed after ``seconds``."""

    def on_shards_owned(self, cluster: str, node: str, count: int) -> None:
        """The node now owns ``count`` shards."""

    def on_shard_moves(self, cluster: str, node: str, moves: int) -> None:
        """The leader published a map that moves ``moves`` shards (handoffs started or shards reassigned)."""

    def on_handoff(self, cluster: str, node: str, shards: int, seconds: float) -> None:
        """The node released ``shards`` shards; draining in-flight work took ``seconds``."""
