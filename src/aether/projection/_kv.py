"""Opening (creating when missing) the JetStream KV buckets projections use, with translated errors."""

from __future__ import annotations

import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from aether._nats import translate_nats_error
from aether.errors import StoreError

__all__ = ["open_bucket"]


async def open_bucket(nc: Client, bucket: str, *, replicas: int, ttl: int | None = None,
                      description: str = "") -> KeyValue:
    """Open ``bucket`` (history 1, file storage), creating it when missing.

    ``ttl`` is the bucket's max age in whole seconds (leases); an existing bucket must have the
    same one. No limit markers are configured (they break nats-py's ``get``/``create``).

    Raises:
        StoreError: the bucket exists with another TTL, or cannot be created.
        StoreUnavailableError / AetherTimeoutError: the server cannot be reached.
    """
    js = nc.jetstream()
    what = f"opening KV bucket {bucket!r}"
    try:
        info = await js.stream_info(f"KV_{bucket}")
    except nats.js.errors.NotFoundError:
        info = None
    except Exception as exc:
        raise translate_nats_error(exc, what) from exc
    if info is None:
        config = KeyValueConfig(bucket=bucket, description=description or None, history=1,
                                ttl=float(ttl) if ttl else None, replicas=replicas, storage=StorageType.FILE)
        try:
            return await js.create_key_value(config)
        except Exception as exc:  # a concurrent creator may have won: use its bucket if it fits
            try:
                info = await js.stream_info(f"KV_{bucket}")
            except Exception:
                raise translate_nats_error(exc, what) from exc
    max_age = float(info.config.max_age or 0)
    if ttl is not None and abs(max_age - ttl) > 1e-3:
        raise StoreError(f"KV bucket {bucket!r} exists with max age {max_age:g}s, expected the lease TTL {ttl}s")
    try:
        return await js.key_value(bucket)
    except Exception as exc:
        raise translate_nats_error(exc, what) from exc
