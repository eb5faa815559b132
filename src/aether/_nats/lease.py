"""Aether's one lease: a key of a KV bucket (:mod:`aether._nats.kv`) held by at most one owner.

Used by cluster leadership (:mod:`aether.cluster.leader`) and projection leases
(:mod:`aether.projection.lease`). The protocol:

* **acquire**: a compare-and-set write on the key at the revision last seen (0 or a tombstone's
  when the key is free). The revision of that write is the holder's **term**: stream sequences
  only grow, so every new holder has a larger term than every earlier one (the fencing token).
* **renew**: a compare-and-set write on the holder's last revision. Every write carries a
  per-message TTL of ``ceil(ttl)`` seconds where the bucket allows it (else the bucket's max age,
  equal to the TTL, expires it), so the key of a dead holder disappears on its own.
* **local deadline** (the clock): the holder reads ``time.monotonic()`` immediately BEFORE
  sending each acquiring or renewing write and holds only until ``t0 + ttl - margin``
  (:attr:`Lease.deadline`, :attr:`Lease.held`, checked on every call; asyncio's default loop
  clock is the same clock). Whatever lets another owner in starts after the write was stored,
  which is after ``t0``: the server's expiry (``ttl`` after it stored the write), or a takeover
  (below). So a holder that cannot renew has stepped down by its own clock before anyone can
  acquire, whether it crashed, was paused or lost its connection. Of the two clocks Aether used
  before (the projection lease measured with the event loop's ``loop.time()``, the leader with
  ``time.monotonic()``), this is the safer one: a loop may return a time cached at the start of
  its iteration, which answers "is the deadline still ahead?" too late; ``time.monotonic()`` is
  read fresh at every decision.
* **takeover**: a contender reads the key; a revision that stays the same for ``ttl`` (plus a
  ``grace`` the caller may add, e.g. while its own loop lags) since the contender first READ it
  is taken with a compare-and-set on that revision. The first read is after the write, which is
  after its ``t0``: the holder's deadline has passed by then.
* **lost acknowledgement**: a renewal whose reply was lost but which the server stored makes the
  next renewal's compare-and-set fail; the holder then recognises its own write (a header carries
  its random token and term) and adopts that revision WITHOUT extending its deadline.
* **fencing**: :meth:`Lease.fence_headers` makes a write into the same bucket succeed only while
  the key is still at the holder's revision, so a write in flight when the lease changed hands is
  refused by the server.
* **release**: a compare-and-set tombstone; contenders see the key free and acquire at once.

Every lost compare-and-set (10071, and 10164 on a replicated bucket) is a lost race, never an error.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import NamedTuple

from aether._nats.kv import KvBucket, KvConflict, KvEntry
from aether.errors import AetherError, InvalidInputError

__all__ = ["LEASE_HEADER", "Lease", "Sighting"]

LEASE_HEADER = "Aether-Lease"
"""Header on every lease write: ``<owner token>.<term>`` (term 0 in the acquiring write)."""


class Sighting(NamedTuple):
    """What a contender saw of the key.

    Attributes:
        entry: the key's last message (``None``: no value).
        new: its revision had not been seen before (the holder or its term may have changed).
        stale: the same revision has been seen for ``ttl + grace``: it may be taken over.
    """

    entry: KvEntry | None
    new: bool
    stale: bool

    @property
    def free(self) -> bool:
        """Whether nobody holds the key (no value, or a tombstone)."""
        return self.entry is None or self.entry.deleted

    @property
    def term(self) -> int:
        """The term of the holder seen (0 when free)."""
        entry = self.entry
        if entry is None or entry.deleted:
            return 0
        _, _, term = entry.headers.get(LEASE_HEADER, "").rpartition(".")
        return int(term) if term.isdigit() and int(term) else entry.revision


class Lease:
    """One owner's handle on a lease key (see the module docstring for the protocol).

    Args:
        bucket: the KV bucket holding the key (opened with :meth:`KvBucket.ensure` by the caller).
        key: the lease key.
        ttl: seconds the lease lives without renewal (> 0).
        margin: the holder steps down this long before ``ttl`` has passed since its last write
            was sent (``0 <= margin < ttl``).
        linearizable: read the key from the stream leader after a lost compare-and-set (needs
            ``$JS.API.STREAM.MSG.GET`` of the bucket); otherwise any replica answers.

    Raises:
        InvalidInputError: a bad ``ttl`` or ``margin``.
    """

    def __init__(self, bucket: KvBucket, key: str, *, ttl: float, margin: float, linearizable: bool = False) -> None:
        if not ttl > 0 or not 0 <= margin < ttl:
            raise InvalidInputError(f"a lease needs ttl > 0 and 0 <= margin < ttl, got ttl={ttl!r} margin={margin!r}")
        self.bucket, self.key, self.ttl, self.margin = bucket, key, ttl, margin
        self.linearizable = linearizable
        self.token = secrets.token_hex(8)
        """Random per handle: marks this owner's writes (header :data:`LEASE_HEADER`)."""
        self.revision = 0
        """The revision of the holder's last write (0 when not holding)."""
        self.term = 0
        """The fencing term: the revision that acquired the lease (kept after losing it)."""
        self.deadline = 0.0
        """``time.monotonic()`` time at which the holder stops holding unless it renews."""
        self._seen_rev = 0
        self._seen_at = 0.0
        self._reread = False

    # ---- state --------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        """Whether this owner holds the lease NOW (acquired, not lost, deadline not passed)."""
        return self.revision != 0 and time.monotonic() < self.deadline

    def lose(self) -> None:
        """Consider the lease lost (e.g. after the deadline passed); the term is kept."""
        self.revision = 0
        self._seen_rev, self._seen_at = 0, 0.0

    def fence_headers(self) -> dict[str, str]:
        """Headers making a write into the bucket succeed only while the lease is at this
        holder's revision (check :attr:`held` first)."""
        return self.bucket.fence_headers(self.key, self.revision)

    def _mark(self, term: int) -> dict[str, str]:
        return {LEASE_HEADER: f"{self.token}.{term}"}

    # ---- contending ---------------------------------------------------------------------------
    async def look(self, *, grace: float = 0.0, timeout: float | None = None) -> Sighting:
        """Read the key and note since when its revision is unchanged (for :meth:`try_acquire`).

        Raises:
            PermissionDeniedError / StoreError / StoreUnavailableError / AetherTimeoutError.
        """
        linearizable, self._reread = self._reread, False
        entry = await self.bucket.get(self.key, linearizable=linearizable and self.linearizable, timeout=timeout)
        now = time.monotonic()
        if entry is None or entry.deleted:
            self._seen_rev, self._seen_at = 0, 0.0
            return Sighting(entry, False, False)
        if entry.revision != self._seen_rev:
            self._seen_rev, self._seen_at = entry.revision, now
            return Sighting(entry, True, False)
        return Sighting(entry, False, now - self._seen_at >= self.ttl + grace)

    async def try_acquire(self, value: bytes, *, grace: float = 0.0,
                          timeout: float | None = None) -> tuple[bool, Sighting]:
        """Read the key and acquire it when it is free or stale.

        Returns whether this owner now holds the lease, and what it saw before trying.

        Raises:
            PermissionDeniedError: the NATS user may not use the key.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        sighting = await self.look(grace=grace, timeout=timeout)
        if sighting.free or sighting.stale:
            entry = sighting.entry
            return await self.acquire(value, expected=entry.revision if entry is not None else 0,
                                      timeout=timeout), sighting
        return False, sighting

    async def acquire(self, value: bytes, *, expected: int, timeout: float | None = None) -> bool:
        """Write the key if it is still at revision ``expected`` (0: no value); ``False`` when
        another write came first. Use :meth:`try_acquire` unless the revision is known.

        Raises:
            PermissionDeniedError / StoreError / StoreUnavailableError / AetherTimeoutError.
        """
        sent = time.monotonic()
        try:
            revision = await self.bucket.write(self.key, value, last=expected, ttl=self.ttl, headers=self._mark(0),
                                               timeout=timeout)
        except KvConflict:
            # someone else won, or our read was stale (a lagging replica): read again (from the
            # stream leader when allowed) and, for a takeover, wait a full ttl on what it shows
            self._seen_rev, self._seen_at = 0, 0.0
            self._reread = True
            return False
        self.revision = self.term = self._seen_rev = revision
        self.deadline = sent + self.ttl - self.margin
        return True

    # ---- holding ------------------------------------------------------------------------------
    async def renew(self, value: bytes, *, timeout: float | None = None) -> bool:
        """Extend the lease; ``False`` when it is lost (taken over, expired, or the deadline passed).

        ``True`` also when the compare-and-set found this holder's own earlier write whose reply
        was lost: that revision is adopted, but the deadline is NOT extended (it is unknown when
        that write was sent).

        Raises:
            PermissionDeniedError / StoreError / StoreUnavailableError / AetherTimeoutError:
                the renewal failed; the lease is still held until :attr:`deadline`.
        """
        if not self.revision:
            return False
        sent = time.monotonic()
        remaining = self.deadline - sent
        if remaining <= 0:
            self.lose()
            return False
        try:
            revision = await self.bucket.write(self.key, value, last=self.revision, ttl=self.ttl,
                                               headers=self._mark(self.term),
                                               timeout=remaining if timeout is None else min(timeout, remaining))
        except KvConflict:
            if await self._own_write():
                return True
            self.lose()
            return False
        self.revision = self._seen_rev = revision
        self.deadline = sent + self.ttl - self.margin
        return True

    async def _own_write(self) -> bool:
        """After a failed compare-and-set: is the key's last write our own (lost ack)? Adopt it."""
        try:
            entry = await self.bucket.get(self.key, linearizable=self.linearizable,
                                          timeout=max(0.05, self.deadline - time.monotonic()))
        except AetherError:
            return False
        if (entry is None or entry.deleted or entry.revision <= self.revision
                or entry.headers.get(LEASE_HEADER) != f"{self.token}.{self.term}"):
            return False
        self.revision = self._seen_rev = entry.revision
        return time.monotonic() < self.deadline

    async def release(self, *, timeout: float = 1.0) -> None:
        """Give the lease up at once (a compare-and-set tombstone) so another owner can acquire
        without waiting for expiry. Never raises: on NATS trouble the lease simply expires."""
        revision, self.revision = self.revision, 0
        if revision:
            with contextlib.suppress(AetherError):
                await self.bucket.delete(self.key, last=revision, ttl=max(1.0, self.ttl), timeout=timeout)
