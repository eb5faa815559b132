"""Create a JetStream stream or adopt the one that exists: the one place Aether does it.

Used by the event store (``store/jetstream.py``), the KV buckets (:mod:`aether._nats.kv`: the
cluster bucket, projection checkpoints and leases) and the dead-letter streams. Each caller then
checks the adopted configuration its own way (subjects, partition count, max age, ...).
"""

from __future__ import annotations

from typing import Any

from aether._nats import ERR_STREAM_NAME_IN_USE, ERR_STREAM_NOT_FOUND, JetStreamApiError, JsApi
from aether.errors import StoreError

__all__ = ["create_or_adopt", "delete_stream"]


async def create_or_adopt(api: JsApi, config: dict[str, Any], *, create: bool = True,
                          known: dict[str, Any] | None = None,
                          why_not_created: str = "it may not be created here") -> dict[str, Any] | None:
    """Create the stream ``config["name"]`` with ``config``, or adopt the one that exists.

    A concurrent creator that wins the race is adopted too (``STREAM.CREATE`` answers 10058,
    the stream is read back).

    Args:
        api: the request helper.
        config: the full stream configuration (JetStream API JSON) used when creating.
        create: ``False``: never create; a missing stream is an error.
        known: the stream's ``STREAM.INFO`` reply when the caller already has it (no request then).
        why_not_created: said in the error for a missing stream when ``create`` is false.

    Returns:
        ``None`` when this call created the stream, else the existing stream's ``STREAM.INFO``
        reply (its ``"config"`` is for the caller to check or upgrade).

    Raises:
        StoreError: the stream is missing and ``create`` is false ("does not exist").
        JetStreamApiError: the server refused the creation (e.g. an overlapping stream).
        PermissionDeniedError / StoreUnavailableError / AetherTimeoutError: server trouble.
    """
    name = config["name"]
    if known:
        return known
    try:
        info: dict[str, Any] = await api.api(f"STREAM.INFO.{name}")
        return info
    except JetStreamApiError as exc:
        if exc.err_code != ERR_STREAM_NOT_FOUND:
            raise
    if not create:
        raise StoreError(f"stream {name!r} does not exist ({why_not_created})")
    try:
        await api.api(f"STREAM.CREATE.{name}", config)
        return None
    except JetStreamApiError as exc:
        if exc.err_code != ERR_STREAM_NAME_IN_USE:
            raise
    adopted: dict[str, Any] = await api.api(f"STREAM.INFO.{name}")
    return adopted


async def delete_stream(api: JsApi, name: str) -> bool:
    """Delete stream ``name``; ``False`` when it did not exist.

    Raises:
        JetStreamApiError / PermissionDeniedError / StoreUnavailableError / AetherTimeoutError.
    """
    try:
        await api.api(f"STREAM.DELETE.{name}")
    except JetStreamApiError as exc:
        if exc.err_code != ERR_STREAM_NOT_FOUND:
            raise
        return False
    return True
