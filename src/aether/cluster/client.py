"""ClusterClient: send requests to the owners of actors without being a cluster member.

For API gateways, scripts and tests: it reads the shard map and routes like a member does
(retrying across handoffs and failovers) but owns no shards, sends no heartbeats and never
leads.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aether import tracing as _tracing
from aether._nats import check_client
from aether.cluster._kv import ClusterBucket
from aether.cluster._routing import MapWatcher, Router
from aether.cluster.naming import validate_cluster_name
from aether.cluster.types import ShardMap
from aether.errors import AetherError, AetherTimeoutError, ClusterError, InvalidInputError
from aether.names import validate_actor_id, validate_subject_prefix

if TYPE_CHECKING:  # nats-py types in signatures only: the cluster speaks NATS through aether._nats
    from nats.aio.client import Client

__all__ = ["ClusterClient"]


class ClusterClient:
    """Routes requests to the nodes owning actors.

    Args:
        nc: a connected nats-py client (never closed here).
        cluster: the cluster name.
        request_timeout: default timeout of :meth:`request`.
        check_interval: seconds between reads of the shard map (writes are also seen at once).
        subject_prefix: as the nodes' ``ClusterOptions.subject_prefix``.

    Raises:
        InvalidNameError / InvalidInputError: bad arguments.
    """

    def __init__(self, nc: Client, *, cluster: str = "default", request_timeout: float = 5.0,
                 check_interval: float = 0.25, subject_prefix: str = "_aether") -> None:
        check_client(nc, "ClusterClient")
        self.cluster = validate_cluster_name(cluster)
        self.subject_prefix = validate_subject_prefix(subject_prefix)
        if request_timeout <= 0 or check_interval <= 0:
            raise InvalidInputError("request_timeout and check_interval must be > 0")
        self.request_timeout = request_timeout
        self.check_interval = check_interval
        self._nc = nc
        self._bucket = ClusterBucket(nc, cluster)
        self._watcher: MapWatcher | None = None
        self._router: Router | None = None

    @property
    def shard_map(self) -> ShardMap | None:
        """The newest shard map seen."""
        shards = self._watcher.shards if self._watcher is not None else None
        return shards.shard_map if shards is not None else None

    def owner_of(self, actor_id: str) -> str | None:
        """The node serving ``actor_id`` under the newest map (``None``: unknown or moving)."""
        shards = self._watcher.shards if self._watcher is not None else None
        return shards.owner_of(actor_id) if shards is not None else None

    async def start(self) -> None:
        """Start watching the shard map (a cluster that does not exist yet is waited for).

        Raises:
            NatsConnectionError-family errors: the client cannot subscribe.
            PermissionDeniedError: the NATS user may not read the cluster's shard map.
        """
        if self._router is not None:
            return
        await self._bucket.api.start()  # the reply inbox the router's requests share
        self._watcher = MapWatcher(self._nc, self._bucket, poll_interval=self.check_interval)
        await self._watcher.start(strict=False)  # a missing cluster is polled for until it exists
        self._router = Router(self._bucket.api, self._watcher, prefix=self.subject_prefix, cluster=self.cluster)

    async def wait_ready(self, timeout: float = 10.0) -> ShardMap:
        """Wait until a shard map is known and return it.

        Raises:
            AetherTimeoutError: none within ``timeout``.
        """
        watcher = self._watcher
        if watcher is None:
            raise ClusterError("ClusterClient not started")
        try:
            async with asyncio.timeout(timeout):
                while self.shard_map is None:
                    await asyncio.shield(watcher.changed())
        except TimeoutError:
            raise AetherTimeoutError(f"no shard map for cluster {self.cluster!r} within {timeout}s") from None
        current = self.shard_map
        assert current is not None
        return current

    @_tracing.traced_request
    async def request(self, actor_id: str, payload: bytes, *, timeout: float | None = None) -> bytes:
        """Send ``payload`` to the owner of ``actor_id``; see :meth:`ClusterManager.request`.

        Raises:
            AetherTimeoutError / RequestFailedError / InvalidNameError / ClusterError (not started).
        """
        validate_actor_id(actor_id)
        if self._router is None:
            raise ClusterError("ClusterClient not started")
        return await self._router.request(actor_id, bytes(payload),
                                          self.request_timeout if timeout is None else timeout)

    async def aclose(self) -> None:
        """Stop watching and release subscriptions (the nats client stays open)."""
        self._router = None
        if self._watcher is not None:
            await self._watcher.aclose()
        with contextlib.suppress(AetherError):
            await self._bucket.aclose()

    stop = aclose

    async def __aenter__(self) -> ClusterClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
