"""A lease in JetStream KV that lets exactly one node run a named projection.

The bucket has ``history=1`` and a max age equal to the lease TTL: ``create()`` acquires (it
fails while someone holds the key), ``update(last=revision)`` renews (it fails once the lease
expired or someone else took it) and the server drops a lease that was not renewed within the
TTL. The holder keeps a *local* deadline, measured from before it sent the acquiring or
renewing write; the server's expiry is always later, so a holder that cannot renew stops
acting before anyone else can acquire. The revision that acquired the lease is the fencing
token (:attr:`ProjectionLease.term`); it increases with every new holder.

A standby (:meth:`ProjectionLease.wait_for_turn`) follows the key with a KV watch: a graceful
``release()`` deletes the key and the standby tries at once; otherwise it tries when the last
write it saw is a TTL old (when the server expires the key of a holder that died) and then every
:attr:`~ProjectionLease.retry_interval`. So failover after a crash takes at most the TTL plus one
retry interval after the holder's last renewal. Without a watch (e.g. the NATS user may not create
consumers on the lease bucket) it polls every retry interval: the same bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from aether._nats import check_client, translate_nats_error
from aether._tasks import cancel_and_wait
from aether.errors import AetherError, InvalidInputError, StoreError
from aether.projection._kv import guarded, open_bucket

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
    """

    def __init__(self, nc: Client, *, bucket: str, key: str, node_id: str, ttl: int, replicas: int = 1) -> None:
        check_client(nc, "ProjectionLease")
        if not node_id:
            raise InvalidInputError("node_id must not be empty")
        self._nc = nc
        self.bucket = bucket
        self.key = key
        self.node_id = node_id
        self.ttl = ttl
        self._replicas = replicas
        self._kv: KeyValue | None = None
        self._revision = 0
        self.term = 0
        self.deadline = 0.0
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_failed = False
        self._freed = asyncio.Event()  # set when the key is seen deleted
        self._last_write: float | None = None  # loop time at which the last stored write was seen

    @property
    def watching(self) -> bool:
        """Whether a KV watch follows the key (a standby that could not create one polls)."""
        return self._watch_task is not None and not self._watch_task.done()

    @property
    def retry_interval(self) -> float:
        """Seconds between acquisition attempts once the lease may have expired: a tenth of the
        TTL, between 0.2 s and 1 s. Failover after a crash takes at most ``ttl + retry_interval``."""
        return max(0.2, min(1.0, self.ttl / 10))

    async def open(self) -> None:
        """Open or create the bucket.

        Raises:
            StoreError: the bucket exists with another max age.
            StoreUnavailableError / AetherTimeoutError: the server cannot be reached.
        """
        if self._kv is None:
            self._kv = await open_bucket(self._nc, self.bucket, replicas=self._replicas, ttl=self.ttl,
                                         description="Aether projection leases")

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise StoreError("ProjectionLease.open() was not called")
        return self._kv

    def _safe_ttl(self) -> float:
        # the server expires the lease ttl seconds after it stored the write, which is after
        # ``sent``; keeping a margin on top makes the holder stop well before anyone can acquire
        return self.ttl - min(0.5, self.ttl * 0.1)

    @property
    def held(self) -> bool:
        """Whether this node holds the lease and its local deadline has not passed."""
        return self._revision != 0 and asyncio.get_running_loop().time() < self.deadline

    def forget(self) -> None:
        """Consider the lease lost (after the deadline passed or a renewal was refused)."""
        self._revision = 0

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it.

        Raises:
            PermissionDeniedError: the NATS user may not use this lease key.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self._freed.clear()  # a deletion seen from now on means: try again
        try:
            revision = await guarded(self._nc, self.bucket, self._bucket().create(self.key, self.node_id.encode()))
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except Exception as exc:
            raise translate_nats_error(exc, f"acquiring lease {self.key!r}") from exc
        self._revision = self.term = revision
        self.deadline = sent + self._safe_ttl()
        await self._stop_watch()  # the holder needs no watch
        return True

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
            watcher = await guarded(self._nc, self.bucket, self._kv.watch(self.key, include_history=False))
        except Exception as exc:  # e.g. no permission to create a consumer on the bucket: poll instead
            log.debug("lease %s: cannot watch the key, polling instead: %s", self.key, exc)
            self._watch_failed = True
            return False
        self._last_write = None
        self._watch_task = asyncio.get_running_loop().create_task(self._follow(watcher),
                                                                  name=f"aether-lease-watch-{self.key}")
        return True

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for entry in watcher:
                if entry is None:  # the initial value (if any) was delivered
                    continue
                if entry.operation in ("DEL", "PURGE"):
                    self._last_write = None
                    self._freed.set()
                else:
                    self._last_write = loop.time()
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _stop_watch(self) -> None:
        task, self._watch_task = self._watch_task, None
        await cancel_and_wait(task)  # ours to cancel; a cancellation of the caller propagates

    async def close(self) -> None:
        """Stop following the key (the lease itself is given up with :meth:`release`)."""
        await self._stop_watch()

    async def renew(self) -> bool:
        """Extend the lease; ``False`` when it was lost (expired on the server or taken over).

        Raises:
            PermissionDeniedError: the NATS user may not use this lease key.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble (the lease
                may still be held until :attr:`deadline`).
        """
        if not self._revision:
            return False
        sent = asyncio.get_running_loop().time()
        try:
            revision = await guarded(self._nc, self.bucket,
                                     self._bucket().update(self.key, self.node_id.encode(), last=self._revision))
        except nats.js.errors.KeyWrongLastSequenceError:
            self._revision = 0
            return False
        except Exception as exc:
            raise translate_nats_error(exc, f"renewing lease {self.key!r}") from exc
        self._revision = revision
        self.deadline = sent + self._safe_ttl()
        return True

    async def release(self) -> None:
        """Give the lease up at once so another node can take over without waiting for expiry."""
        revision, self._revision = self._revision, 0
        if revision and self._kv is not None:
            with contextlib.suppress(Exception):
                await self._kv.delete(self.key, last=revision)

    async def holder(self) -> str | None:
        """The node currently holding the lease according to the server, or ``None``.

        Raises:
            PermissionDeniedError: the NATS user may not use this lease key.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        try:
            entry = await guarded(self._nc, self.bucket, self._bucket().get(self.key))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except AetherError:
            raise
        except Exception as exc:
            raise translate_nats_error(exc, f"reading lease {self.key!r}") from exc
        return entry.value.decode(errors="replace") if entry.value else None
