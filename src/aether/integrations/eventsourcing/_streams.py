"""Create a stream or adopt the one that exists, and delete one.

The same functions, with the same signatures, as ``aether._nats.streams`` (branch ``kvlease``,
issue 11: the one place Aether creates or adopts a stream). Until that lands this module holds
them for the eventsourcing module; at the merge, import ``create_or_adopt`` and
``delete_stream`` from ``aether._nats.streams`` in ``_stream.py`` and ``testing.py`` (their only
users) and delete this file.
"""

from __future__ import annotations

from typing import Any

from aether._nats import ERR_STREAM_NAME_IN_USE, ERR_STREAM_NOT_FOUND, JetStreamApiError, JsApi
from aether.errors import StoreError

__all__ = ["create_or_adopt", "delete_stream"]


async def create_or_adopt(api: JsApi, config: dict[str, Any], *, create: bool = True,
                          known: dict[str, Any] | None = None,
                          why_not_created: str = "it may not be created here") -> dict[str, Any] | None:
    """Create the stream ``config["name"]`` with ``config``, or adopt the one that exists (also one
    a concurrent creator made first).

    Returns:
        ``None`` when this call created the stream, else the existing stream's ``STREAM.INFO`` reply.

    Raises:
        StoreError: the stream is missing and ``create`` is false ("does not exist").
        JetStreamApiError: the server refused the creation (e.g. an overlapping stream).
        PermissionDeniedError / StoreUnavailableError / AetherTimeoutError: server trouble.
    """
    name = config["name"]
    if known is not None:
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
