"""A lease in JetStream KV that lets exactly one node run a named projection.

Held with Aether's one lease primitive (:class:`aether._nats.lease.Lease`, shared with cluster
leadership; its docstring gives the protocol). The bucket has ``history=1`` and a max age equal
to the lease TTL: acquiring is a compare-and-set on a free key (or on a revision seen unchanged
for a TTL), renewing a compare-and-set on the holder's last revision, and the server drops a
lease that was not renewed within the TTL. The holder keeps a *local* deadline on
``time.monotonic()``, read just before it sent the acquiring or renewing write, ``ttl - margin``
later (margin: a tenth of the TTL, at most 0.5 s); the server's expiry is always later, so a
holder that cannot renew stops acting before anyone else can acquire. The revision that acquired
the lease is the fencing token (:attr:`ProjectionLease.term`); it increases with every new holder.

A standby (:meth:`ProjectionLease.wait_for_turn`) follows the key with a watch
(:class:`aether._nats.kv.KvWatch`: a subscription on the key's subject, each write re-read from
the bucket): a graceful ``release()`` deletes the key and the standby tries at once; otherwise it
tries when the last write it saw is a TTL old (when the server expires the key of a holder that
died) and then every :attr:`~ProjectionLease.retry_interval`. So failover after a crash takes at
most the TTL plus one retry interval after the holder's last renewal. Without a watch (the NATS
user may not subscribe to the key) it polls every retry interval: the same bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aether._nats import check_client
from aether._nats.kv import KvBucket, KvEntry, KvWatch
from aether._nats.lease import Lease
from aether._tasks import cancel_and_wait
from aether.errors import InvalidInputError, StoreError
from aether.projection._kv import open_bucket

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["ProjectionLease"]

log = logging.getLogger("aether.projection")


class ProjectionLease:
    """One node's handle on a lease key.

    Args:
        nc: a connected nats-py client (not owned).
        bucket: the KV bucket (its max age becomes ``ttl``).
        key: the lease key (one per projection and stream).
        node_id: this node's id, stored as the lease's value.
        ttl: lease duration in whole seconds.
        replicas: bucket replicas when it is created.

    Raises:
        InvalidInputError: ``nc`` is not a nats-py client, or ``node_id`` is empty.
    """

    def __init__(self, nc: Client, *, bucket: str, key: str, node_id: str, ttl: int, replicas: int = 1) -> None:
        check_client(nc, "ProjectionLease")
        if not node_id:
            raise InvalidInputError("node_id must not be empty")
        self._nc, self._replicas = nc, replicas
        self.bucket, self.key, self.node_id, self.ttl = bucket, key, node_id, ttl
        self._kv: KvBucket | None = None
        self._lease: Lease | None = None
        self._watch: KvWatch | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_failed = False
        self._freed = asyncio.Event()  # set when the key is seen deleted
        self._last_write: float | None = None  # loop time at which the last stored write was seen

    @property
    def watching(self) -> bool:
        """Whether a watch follows the key (a standby that could not create one polls)."""
        return self._watch_task is not None and not self._watch_task.done()

    @property
    def retry_interval(self) -> float:
        """Seconds between acquisition attempts once the lease may have expired: a tenth of the
        TTL, between 0.2 s and 1 s. Failover after a crash takes at most ``ttl + retry_interval``."""
        return max(0.2, min(1.0, self.ttl / 10))

    @property
    def term(self) -> int:
        """The fencing token: the revision that acquired the lease last (0 before)."""
        return self._lease.term if self._lease is not None else 0

    @property
    def deadline(self) -> float:
        """``time.monotonic()`` time (asyncio's default loop clock) at which the holder stops
        holding unless it renews (0 before the first acquisition)."""
        return self._lease.deadline if self._lease is not None else 0.0

    async def open(self) -> None:
        """Open or create the bucket.

        Raises:
            StoreError: the bucket exists with another max age.
            PermissionDeniedError: the NATS user may not use the bucket.
            StoreUnavailableError / AetherTimeoutError: the server cannot be reached.
        """
        if self._kv is None:
            self._kv = await open_bucket(self._nc, self.bucket, replicas=self._replicas, ttl=self.ttl,
                                         description="Aether projection leases")
            self._lease = Lease(self._kv, self.key, ttl=self.ttl, margin=min(0.5, self.ttl * 0.1))

    def _held_lease(self) -> Lease:
        if self._lease is None:
            raise StoreError("ProjectionLease.open() was not called")
        return self._lease

    @property
    def held(self) -> bool:
        """Whether this node holds the lease and its local deadline has not passed."""
        return self._lease is not None and self._lease.held

    def forget(self) -> None:
        """Consider the lease lost (after the deadline passed or a renewal was refused)."""
        if self._lease is not None:
            self._lease.lose()

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it (or its holder stopped renewing a TTL ago).

        Raises:
            StoreError: :meth:`open` was not called.
            PermissionDeniedError: the NATS user may not use this lease key.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        lease = self._held_lease()
        self._freed.clear()  # a deletion seen from now on means: try again
        acquired, _ = await lease.try_acquire(self.node_id.encode())
        if acquired:
            await self._stop_watch()  # the holder needs no watch
        return acquired

    async def wait_for_turn(self) -> None:
        """After a failed :meth:`try_acquire`: wait until another attempt may succeed.

        Returns at once when the holder deletes the key (graceful handover), else when the
        holder's last write seen is :attr:`ttl` old (the server then expires the key), but never
        later than :attr:`ttl` and never sooner than :attr:`retry_interval` (the holder still
        renews, or the server has not expired the key yet). Never raises: without a watch it
        sleeps one retry interval.
        """
        loop = asyncio.get_running_loop()
        retry = self.retry_interval
        if not await self._ensure_watch():
            await asyncio.sleep(retry)
            return
        wait = retry
        if self._last_write is not None:
            wait = min(float(self.ttl), max(retry, self._last_write + self.ttl - loop.time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._freed.wait(), wait)

    async def _ensure_watch(self) -> bool:
        if self._watch_task is not None and not self._watch_task.done():
            return True
        if self._watch_failed or self._kv is None:
            return False
        try:
            self._watch = await self._kv.watch(self.key)
        except Exception as exc:  # e.g. no permission to subscribe to the key: poll instead
            log.debug("lease %s: cannot watch the key, polling instead: %s", self.key, exc)
            self._watch_failed = True
            return False
        self._last_write = None
        self._watch_task = asyncio.get_running_loop().create_task(self._follow(self._watch),
                                                                  name=f"aether-lease-watch-{self.key}")
        return True

    async def _follow(self, watch: KvWatch) -> None:
        loop = asyncio.get_running_loop()
        entry: KvEntry | None
        try:
            async for entry in watch:
                if entry is None or entry.deleted:
                    self._last_write = None
                    self._freed.set()
                else:
                    self._last_write = loop.time()
        except Exception as exc:  # a read failed (e.g. a reconnect): the next wait_for_turn watches anew
            log.debug("lease %s: the watch ended: %s", self.key, exc)
        finally:
            await watch.stop()

    async def _stop_watch(self) -> None:
        task, self._watch_task = self._watch_task, None
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.stop()
        await cancel_and_wait(task)  # ours to cancel; a cancellation of the caller propagates

    async def close(self) -> None:
        """Stop following the key (the lease itself is given up with :meth:`release`)."""
        await self._stop_watch()

    async def renew(self) -> bool:
        """Extend the lease; ``False`` when it was lost (expired, taken over, or past the local deadline).

        Raises:
            PermissionDeniedError: the NATS user may not use this lease key.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble (the lease
                may still be held until :attr:`deadline`).
        """
        if self._lease is None:
            return False
        return await self._lease.renew(self.node_id.encode())

    async def release(self) -> None:
        """Give the lease up at once so another node can take over without waiting for expiry."""
        if self._lease is not None:
            await self._lease.release()

    async def holder(self) -> str | None:
        """The node currently holding the lease according to the server, or ``None``.

        Raises:
            StoreError: :meth:`open` was not called.
            PermissionDeniedError: the NATS user may not use this lease key.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        entry = await self._held_lease().bucket.get(self.key)
        if entry is None or entry.deleted or not entry.value:
            return None
        return entry.value.decode(errors="replace")
