"""The cluster's KV bucket: Aether's one KV client (:mod:`aether._nats.kv`) on the cluster's bucket.

One bucket per cluster (``aether-cluster-<cluster>``, stream ``KV_aether-cluster-<cluster>``)
holds the leader lease (``leader``), the shard map (``map``) and one heartbeat key per node
(``node.<encoded id>``), with ``history=1`` and per-message TTLs: leases and heartbeats carry a
TTL, the map does not. Limit markers are left off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aether._nats.kv import KvBucket, KvConflict, KvEntry
from aether.cluster.naming import bucket_name, validate_cluster_name

if TYPE_CHECKING:  # nats-py types in signatures only: the cluster speaks NATS through aether._nats
    from nats.aio.client import Client

__all__ = ["ClusterBucket", "KvConflict", "KvEntry", "bucket_name", "validate_cluster_name"]


class ClusterBucket(KvBucket):
    """The bucket of cluster ``cluster`` (see :class:`~aether._nats.kv.KvBucket` for the calls).

    Args:
        nc: a connected nats-py client (never closed here).
        cluster: the cluster name.
        replicas: stream replicas (3 on a NATS cluster).
        storage: ``"file"`` or ``"memory"``.
        timeout: default seconds to wait for a server reply.

    Raises:
        InvalidNameError: a bad cluster name.
    """

    def __init__(self, nc: Client, cluster: str, *, replicas: int = 1, storage: str = "file",
                 timeout: float = 2.0) -> None:
        self.cluster = validate_cluster_name(cluster)
        super().__init__(nc, bucket_name(cluster), replicas=replicas, storage=storage, timeout=timeout)
