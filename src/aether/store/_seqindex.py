"""The per-actor sequence index: which stream sequence holds which version of an actor.

It is derived data, kept only to make reads fast: one message per actor on the subject
``<prefix>.<stream>.x.<actor token>`` of the actor's own stream (older ones are rolled up with
``Nats-Rollup: sub``). It records the stream sequences of a window of consecutive versions
``first_version .. first_version + len(seqs) - 1``. Readers never trust it: every event read
through it is checked against the stream (subject, actor, version, the predecessor sequence the
server enforced when the event was appended, and the actor's last message), and any mismatch
falls back to reading the actor's subject.

Wire format (format byte 1): ``0xAE 0x49 0x01``, then ``first_version`` and ``seqs[0]`` as
unsigned 64-bit little-endian integers, then ``len(seqs) - 1`` unsigned 32-bit little-endian
deltas between consecutive sequences.
"""

from __future__ import annotations

import struct
import sys
from array import array
from itertools import accumulate, pairwise

__all__ = ["MAGIC", "SeqIndex", "decode_index", "encode_index"]

MAGIC = b"\xaeI\x01"
_HEAD = struct.Struct("<QQ")
_MAX_DELTA = 0xFFFFFFFF
_BIG_ENDIAN = sys.byteorder == "big"


class SeqIndex:
    """Sequences of versions ``first_version ..`` of one actor (ascending, one per version)."""

    __slots__ = ("first_version", "seqs")

    def __init__(self, first_version: int, seqs: list[int]) -> None:
        self.first_version = first_version
        self.seqs = seqs

    @property
    def last_version(self) -> int:
        return self.first_version + len(self.seqs) - 1

    def seq_of(self, version: int) -> int:
        """The sequence of ``version`` (must lie in the window)."""
        return self.seqs[version - self.first_version]

    def covers(self, version: int) -> bool:
        return self.first_version <= version <= self.last_version

    def extended(self, first_version: int, seqs: list[int], limit: int) -> SeqIndex:
        """This window followed by ``seqs`` (which start at ``first_version``), keeping the newest
        ``limit`` entries. When the two do not join up, only the new window is kept."""
        if self.seqs and self.first_version <= first_version <= self.last_version + 1:
            merged = self.seqs[: first_version - self.first_version] + seqs
            start = self.first_version
        else:
            merged, start = list(seqs), first_version
        if len(merged) > limit:
            start += len(merged) - limit
            merged = merged[-limit:]
        return SeqIndex(start, merged)


def encode_index(index: SeqIndex) -> bytes | None:
    """The index as stored, or ``None`` when it cannot be encoded (empty, or a gap of 2**32)."""
    seqs = index.seqs
    if not seqs or index.first_version < 1:
        return None
    deltas = [b - a for a, b in pairwise(seqs)]
    if deltas and (min(deltas) < 1 or max(deltas) > _MAX_DELTA):
        return None
    packed = array("I", deltas)
    if _BIG_ENDIAN:
        packed.byteswap()
    return MAGIC + _HEAD.pack(index.first_version, seqs[0]) + packed.tobytes()


def decode_index(payload: bytes) -> SeqIndex | None:
    """The stored index, or ``None`` when the payload is not a well-formed index."""
    head = len(MAGIC) + _HEAD.size
    if len(payload) < head or not payload.startswith(MAGIC) or (len(payload) - head) % 4:
        return None
    first_version, first_seq = _HEAD.unpack_from(payload, len(MAGIC))
    if first_version < 1 or first_seq < 1:
        return None
    deltas = array("I")
    deltas.frombytes(payload[head:])
    if _BIG_ENDIAN:
        deltas.byteswap()
    if deltas and min(deltas) < 1:
        return None
    return SeqIndex(first_version, list(accumulate(deltas, initial=first_seq)))
