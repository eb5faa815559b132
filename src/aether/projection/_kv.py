"""Opening (creating when missing) the JetStream KV buckets projections use, with translated errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from aether._nats import refused_or, translate_nats_error
from aether.errors import StoreError

__all__ = ["guarded", "open_bucket"]

T = TypeVar("T")


def _about(bucket: str) -> Callable[[str], bool]:
    """Whether a (lower-cased) subject concerns ``bucket``: its keys or its stream's API."""
    keys, stream = f"$kv.{bucket.lower()}.", f"kv_{bucket.lower()}"
    return lambda subject: subject.startswith(keys) or stream in subject.split(".")


async def guarded(nc: Client, bucket: str, call: Awaitable[T]) -> T:
    """Await a nats-py KV call on ``bucket``; a permission violation the server reports for the
    bucket meanwhile raises :class:`~aether.errors.PermissionDeniedError` at once (nats-py itself
    would only time out)."""
    return await refused_or(nc, call, _about(bucket))


async def open_bucket(nc: Client, bucket: str, *, replicas: int, ttl: int | None = None,
                      description: str = "") -> KeyValue:
    """Open ``bucket`` (history 1, file storage, direct gets), creating it when missing.

    ``ttl`` is the bucket's max age in whole seconds (leases); an existing bucket must have the
    same one. No limit markers are configured (they break nats-py's ``get``/``create``).

    Raises:
        StoreError: the bucket exists with another TTL, or cannot be created.
        PermissionDeniedError: the NATS user may not use the bucket.
        StoreUnavailableError / AetherTimeoutError: the server cannot be reached.
    """
    js = nc.jetstream()
    what = f"opening KV bucket {bucket!r}"
    try:
        info = await guarded(nc, bucket, js.stream_info(f"KV_{bucket}"))
    except nats.js.errors.NotFoundError:
        info = None
    except Exception as exc:
        raise translate_nats_error(exc, what) from exc
    if info is None:
        # direct=True: reads name the key in the API subject ($JS.API.DIRECT.GET.KV_<b>.$KV.<b>.<key>),
        # so NATS permissions can confine a user to its own keys (see aether.permissions)
        config = KeyValueConfig(bucket=bucket, description=description or None, history=1, direct=True,
                                ttl=float(ttl) if ttl else None, replicas=replicas, storage=StorageType.FILE)
        try:
            return await guarded(nc, bucket, js.create_key_value(config))
        except Exception as exc:  # a concurrent creator may have won: use its bucket if it fits
            try:
                info = await guarded(nc, bucket, js.stream_info(f"KV_{bucket}"))
            except Exception:
                raise translate_nats_error(exc, what) from exc
    max_age = float(info.config.max_age or 0)
    if ttl is not None and abs(max_age - ttl) > 1e-3:
        raise StoreError(f"KV bucket {bucket!r} exists with max age {max_age:g}s, expected the lease TTL {ttl}s")
    try:
        return await guarded(nc, bucket, js.key_value(bucket))
    except Exception as exc:
        raise translate_nats_error(exc, what) from exc
