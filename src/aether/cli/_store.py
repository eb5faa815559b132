"""Opening a store for inspection, and listing the streams of a base name (command-line helpers)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aether._nats import ERR_STREAM_NOT_FOUND, JetStreamApiError, JsApi
from aether.cli._status import ConnectionStatus
from aether.connect import ConnectOptions, close
from aether.errors import StoreError
from aether.names import decode_token, stream_name, validate_namespace, validate_stream_base
from aether.store import JetStreamEventStore
from aether.store.partitioning import parse_partition_stream_name

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["StreamRef", "connected", "list_streams", "matches_namespace", "open_store", "subject_counts"]


@dataclass(frozen=True, slots=True)
class StreamRef:
    """One Aether namespace: its stream name, the namespace (``None``: no namespace) and, when it
    is partitioned, its partition streams."""

    stream: str
    namespace: str | None
    partitions: tuple[str, ...] = ()

    @property
    def streams(self) -> tuple[str, ...]:
        """The JetStream streams holding the namespace's events."""
        return self.partitions or (self.stream,)


@contextlib.asynccontextmanager
async def connected(options: ConnectOptions, status: ConnectionStatus | None = None) -> AsyncIterator[Client]:
    """A connection closed on exit (errors: as :func:`aether.connect.connect`); ``status`` reports
    when it is lost and back (long-running commands)."""
    nc = await options.connect(**(status.callbacks() if status is not None else {}))
    if status is not None:
        status.nc = nc
    try:
        yield nc
    finally:
        if status is not None:
            status.close()
        with contextlib.suppress(Exception):
            await close(nc)


async def open_store(nc: Client, stream: str, namespace: str | None) -> JetStreamEventStore:
    """The store of an existing stream (never creates one).

    Raises:
        StoreError: the stream does not exist.
        InvalidNameError: bad stream or namespace name.
    """
    name = stream_name(stream, namespace)
    try:
        return await JetStreamEventStore.create(nc, stream, namespace=namespace, create_stream=False)
    except StoreError as exc:
        if "does not exist" in str(exc):
            where = f"namespace {namespace!r} of stream {stream!r}" if namespace else f"stream {stream!r}"
            raise StoreError(f"{where} does not exist (JetStream stream {name!r}): nothing stored there yet") from None
        raise


def matches_namespace(pattern: str, namespace: str | None) -> bool:
    """Whether an exact namespace matches a NATS-style pattern (``*`` one token, ``>`` the rest)."""
    if namespace is None:
        return False
    want = pattern.split(".")
    have = namespace.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(have) == len(want)


async def list_streams(nc: Client, base: str, prefix: str = "aether") -> list[StreamRef]:
    """Every Aether namespace of base name ``base`` (the un-namespaced one and one per namespace),
    partitioned ones with their partition streams.

    Raises:
        StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
    """
    validate_stream_base(base)
    api = JsApi(nc)
    try:
        names: list[str] = []
        offset = 0
        while True:
            reply = await api.api("STREAM.NAMES", {"offset": offset, "subject": f"{prefix}.>"})
            page = reply.get("streams") or []
            names.extend(page)
            offset += len(page)
            if not page or offset >= int(reply.get("total", 0)):
                break
    finally:
        await api.aclose()
    partitions: dict[str, dict[int, str]] = {}
    for name in set(names):
        parsed = parse_partition_stream_name(name)
        if parsed is not None:
            partitions.setdefault(parsed[0], {})[parsed[1]] = name
    logical = (set(names) - {n for parts in partitions.values() for n in parts.values()}) | set(partitions)
    found: list[StreamRef] = []
    for name in sorted(logical):
        parts = partitions.get(name, {})
        members = tuple(parts[i] for i in sorted(parts))
        if name == base:
            found.append(StreamRef(name, None, members))
        elif name.startswith(base + "__"):
            try:
                namespace = validate_namespace(decode_token(name[len(base) + 2:]))
            except ValueError:
                continue
            found.append(StreamRef(name, namespace, members))
    return found


async def subject_counts(nc: Client, stream: str, subject_filter: str) -> dict[str, int]:
    """Message count per subject of ``stream`` matching ``subject_filter`` (paged).

    Raises:
        StoreError: the stream does not exist or the server failed.
    """
    api = JsApi(nc)
    counts: dict[str, int] = {}
    offset = 0
    try:
        while True:
            try:
                info: dict[str, Any] = await api.api(f"STREAM.INFO.{stream}",
                                                     {"subjects_filter": subject_filter, "offset": offset})
            except JetStreamApiError as exc:
                if exc.err_code == ERR_STREAM_NOT_FOUND:
                    raise StoreError(f"stream {stream!r} does not exist") from None
                raise
            subjects = info.get("state", {}).get("subjects") or {}
            counts.update(subjects)
            offset += len(subjects)
            if not subjects or offset >= int(info.get("total", 0)):
                break
    finally:
        await api.aclose()
    return counts
