"""Partitioned namespaces: which partition an actor lives in, and what the partitions are called.

A namespace with ``partitions=P > 1`` is P independent JetStream streams. Each actor lives in
exactly one of them, chosen by :func:`partition_for`:

    partition = BLAKE2b-64(UTF-8 bytes of the actor id), read little-endian, modulo P

(``hashlib.blake2b(actor_id.encode("utf-8"), digest_size=8)``). It is the hash
:class:`~aether.cluster.ShardManager` uses for shards, so it is the same in every process,
machine and version, and when ``shard_count`` is a multiple of P an actor's partition is its
shard modulo P (the shards a node owns map onto a fixed set of partitions).

Stream names: partition ``i`` of stream ``S`` (``S`` = ``<base>`` or ``<base>__<encoded
namespace>``, see :mod:`aether.names`) is ``S___p<i>``. No unpartitioned stream name contains
``___p`` (a base has no ``__``; an encoded namespace has ``_`` only before two upper-case hex
digits), so partition streams never collide with another namespace's stream. With P = 1 the
namespace is the single stream ``S``, exactly as before partitions existed.

The count is recorded on the server as stream metadata of every partition stream
(:data:`PARTITIONS_METADATA_KEY`); a store opening the namespace without an explicit count
adopts it.
"""

from __future__ import annotations

from hashlib import blake2b

from aether.errors import InvalidInputError
from aether.names import validate_actor_id

__all__ = [
    "MAX_PARTITIONS",
    "PARTITIONS_METADATA_KEY",
    "PARTITION_METADATA_KEY",
    "partition_for",
    "partition_index",
    "partition_stream_name",
    "parse_partition_stream_name",
    "validate_partitions",
]

MAX_PARTITIONS = 256
PARTITIONS_METADATA_KEY = "aether_partitions"
"""Stream metadata key holding the namespace's partition count (decimal text)."""
PARTITION_METADATA_KEY = "aether_partition"
"""Stream metadata key holding the index of the partition a stream is (decimal text)."""

_SUFFIX = "___p"


def validate_partitions(partitions: object) -> int:
    """Check a partition count (an ``int`` in 1..:data:`MAX_PARTITIONS`) and return it.

    Raises:
        InvalidInputError: not an int (bools refused) or out of range.
    """
    if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
        raise InvalidInputError(f"partitions must be an int in 1..{MAX_PARTITIONS}, got {partitions!r}")
    return int(partitions)


def partition_for(actor_id: str, partitions: int) -> int:
    """The partition (0..partitions-1) holding ``actor_id``'s events and snapshots.

    Stable across processes, machines and versions (see the module docstring for the exact
    function). Always 0 when ``partitions`` is 1.

    Raises:
        InvalidNameError: ``actor_id`` is not a valid actor id.
        InvalidInputError: bad ``partitions``.
    """
    validate_actor_id(actor_id)
    validate_partitions(partitions)
    return partition_index(actor_id, partitions)


def partition_index(actor_id: str, partitions: int) -> int:
    """:func:`partition_for` without its checks, for a caller that has checked both arguments (the
    store routes every call after checking its input; a lone surrogate would raise UnicodeEncodeError)."""
    if partitions == 1:
        return 0
    return int.from_bytes(blake2b(actor_id.encode("utf-8"), digest_size=8).digest(), "little") % partitions


def partition_stream_name(stream: str, partition: int) -> str:
    """The JetStream stream of ``partition`` of the (full, possibly namespaced) stream ``stream``."""
    return f"{stream}{_SUFFIX}{partition}"


def parse_partition_stream_name(name: str) -> tuple[str, int] | None:
    """``(stream, partition)`` when ``name`` is a partition stream, else ``None``."""
    stream, sep, index = name.rpartition(_SUFFIX)
    if not sep or not stream or not (index.isascii() and index.isdigit()) or (len(index) > 1 and index[0] == "0"):
        return None
    return stream, int(index)
