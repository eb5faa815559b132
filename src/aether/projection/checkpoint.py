"""Durable positions: one checkpoint per projection in a JetStream KV bucket."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from aether._nats import check_client
from aether._nats.kv import KvBucket
from aether.errors import CorruptEventError, StoreError
from aether.event import utc_now
from aether.names import encode_token
from aether.projection._kv import open_bucket

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["Checkpoint", "CheckpointStore", "checkpoint_key"]


class Checkpoint(msgspec.Struct, frozen=True):
    """A saved position: every message of the stream up to ``position`` has been handled.

    Attributes:
        position: the stream sequence handled last (0 = nothing yet); in a partitioned
            namespace the sum of ``positions``.
        node: the node that saved it.
        term: the lease revision of that node (0 outside cluster mode).
        updated: when it was saved (UTC).
        positions: partitioned namespaces only: per partition, the stream sequence handled
            last (all of them saved in one write). ``None`` for a single stream (the format
            of checkpoints written before partitions existed).
    """

    position: int
    node: str = ""
    term: int = 0
    updated: datetime = msgspec.field(default_factory=utc_now)
    positions: tuple[int, ...] | None = None


_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(Checkpoint).decode


def checkpoint_key(stream: str, projection: str) -> str:
    """The KV key of a projection over a stream (injective: both parts are encoded tokens)."""
    return f"{stream}.{encode_token(projection)}"


class CheckpointStore:
    """Loads and saves checkpoints in a KV bucket (created on :meth:`open` when missing).

    Args:
        nc: a connected nats-py client (not owned).
        bucket: the bucket name.
        replicas: replicas of the bucket when it is created.
    """

    def __init__(self, nc: Client, bucket: str = "aether-projections", *, replicas: int = 1) -> None:
        check_client(nc, "CheckpointStore")
        self._nc = nc
        self.bucket = bucket
        self._replicas = replicas
        self._kv: KvBucket | None = None

    async def open(self) -> None:
        """Open or create the bucket.

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        if self._kv is None:
            self._kv = await open_bucket(self._nc, self.bucket, replicas=self._replicas,
                                         description="Aether projection checkpoints")

    def _bucket(self) -> KvBucket:
        if self._kv is None:
            raise StoreError("CheckpointStore.open() was not called")
        return self._kv

    async def load(self, key: str) -> Checkpoint | None:
        """The checkpoint under ``key``, or ``None``.

        Raises:
            CorruptEventError: the stored value is not a checkpoint.
            PermissionDeniedError: the NATS user may not read this key.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        entry = await self._bucket().get(key)
        if entry is None or entry.deleted or not entry.value:
            return None
        try:
            return _decode(entry.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CorruptEventError(f"checkpoint {key!r} is unreadable: {exc}") from None

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` under ``key``.

        Raises:
            PermissionDeniedError: the NATS user may not write this key.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        await self._bucket().put(key, _encode(checkpoint))
