"""Opening (creating when missing) the JetStream KV buckets projections use, with Aether's KV client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aether._nats.kv import KvBucket

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["open_bucket"]


async def open_bucket(nc: Client, bucket: str, *, replicas: int, ttl: int | None = None,
                      description: str = "") -> KvBucket:
    """Open ``bucket`` (history 1, file storage, direct gets), creating it when missing.

    ``ttl`` is the bucket's max age in whole seconds (leases); an existing bucket must have the
    same one. Keys are read with the direct get that names the key in its API subject, so NATS
    permissions can confine a user to its own keys (see :mod:`aether.permissions`). No per-message
    TTLs and no limit markers are configured: the max age expires leases. Requests go through
    the connection's one reply inbox (:mod:`aether._nats.inbox`): a handle holds no subscription
    of its own.

    Raises:
        StoreError: the bucket exists with another TTL, or cannot be created.
        PermissionDeniedError: the NATS user may not use the bucket.
        StoreUnavailableError / AetherTimeoutError: the server cannot be reached.
    """
    kv = KvBucket(nc, bucket, replicas=replicas, max_age=float(ttl) if ttl else None, msg_ttl=False,
                  keyed_reads=True, description=description)
    try:
        await kv.ensure()
    except BaseException:
        await kv.aclose()
        raise
    return kv
