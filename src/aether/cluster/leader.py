"""LeaderElection: one leader per cluster, a lease in JetStream KV, a fencing term.

The lease is the ``leader`` key of the cluster bucket (``history=1``), held with Aether's one
lease primitive (:class:`aether._nats.lease.Lease`, shared with projection leases):

* **acquire**: compare-and-set create (expected last revision 0, or the tombstone's). The
  revision of that write is the leader's **term**: stream sequences only grow, so every new
  leadership has a larger term than any earlier one (the fencing token).
* **renew**: every ``renew_interval``, compare-and-set update on the last revision (the value
  keeps the term). Each write carries a server TTL of ``ceil(lease_ttl)`` seconds so a dead
  leader's key also disappears on its own.
* **local deadline**: the leader takes ``t0`` (local clock) BEFORE sending each acquire/renew and
  leads only until ``t0 + lease_ttl - step_down_margin``. ``is_leader`` checks that deadline
  on every call and a timer steps down exactly at it.
* **takeover**: a candidate reads the key every ``check_interval``; a revision that stays the
  same for ``lease_ttl`` since the candidate first READ it (which is after it was written, which
  is after its ``t0``) is taken over with a compare-and-set on that revision. Hence a leader that
  cannot renew has stepped down by its own deadline before anyone can take over — whether it
  crashed, was paused (SIGSTOP) or lost its connection.
* **lost acknowledgement**: a renewal whose reply was lost but which the server stored is
  recognised as the leader's own (a header carries its token and term) and adopted without
  extending the deadline.
* **fencing**: :meth:`LeaderElection.fenced` yields headers that make a write into the cluster
  bucket succeed only while the lease is still at the leader's current revision, so even a
  write that was in flight when the lease changed hands is refused by the server.
* **release**: :meth:`LeaderElection.stop` deletes the key at once; candidates see the
  tombstone (core NATS hint) and acquire immediately.

Trade-off: nats-py and the server only take whole-second TTLs, so expiry precision comes from
the revision/clock check above, not from the TTL; failover takes about ``lease_ttl`` plus up to
one ``check_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from aether._nats import check_client, translate_nats_error
from aether._nats.lease import Lease
from aether._observers import call_observer
from aether._tasks import TaskOwner
from aether.cluster._kv import ClusterBucket
from aether.cluster._lag import lag_tracker, suspicion_grace
from aether.cluster._notify import Listener, Listeners, logger
from aether.cluster.observer import ClusterObserver
from aether.cluster.options import check_lease_timings
from aether.errors import AetherError, AetherTimeoutError, FencedError, InvalidInputError
from aether.event import utc_now

if TYPE_CHECKING:  # nats-py types in signatures only: the cluster speaks NATS through aether._nats
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["Fence", "LeaderChange", "LeaderElection", "LeaseRecord"]

LEADER_KEY = "leader"


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The value of the leader key.

    Attributes:
        node_id: the leader. term: its fencing term (0 in the acquiring write: the term is that
        write's revision). token: random per election instance. acquired_at: wall clock, informative.
    """

    node_id: str
    term: int = 0
    token: str = ""
    acquired_at: datetime = msgspec.field(default_factory=utc_now)


class LeaderChange(msgspec.Struct, frozen=True):
    """Who leads now (``leader_id`` ``None`` when nobody is known to) and with which term."""

    leader_id: str | None
    term: int


class Fence(msgspec.Struct, frozen=True):
    """Proof of leadership for one write: ``term``, and ``headers`` to send with the write."""

    term: int
    headers: dict[str, str]
    deadline: float


_encode = msgspec.msgpack.encode
_decode_record = msgspec.msgpack.Decoder(LeaseRecord).decode


class LeaderElection:
    """Leader election with a fenced lease (see the module docstring for the protocol).

    Args:
        nc: a connected nats-py client (never closed here).
        cluster: the cluster name.
        node_id: this node's id.
        lease_ttl: seconds a lease lives without renewal.
        renew_interval: seconds between renewals (well below ``lease_ttl``).
        step_down_margin: the leader gives up this long before its lease could be taken over.
        check_interval: seconds between a candidate's reads of the lease.
        replicas / storage: of the cluster bucket.
        observer: receives leadership changes and renewal latencies.

    Raises:
        InvalidInputError: inconsistent timings (``renew_interval + step_down_margin`` must be
            below ``lease_ttl``).
        InvalidNameError: bad cluster name.
    """

    def __init__(self, nc: Client, *, cluster: str = "default", node_id: str, lease_ttl: float = 2.0,
                 renew_interval: float = 0.5, step_down_margin: float = 0.25, check_interval: float = 0.25,
                 replicas: int = 1, storage: str = "file", observer: ClusterObserver | None = None) -> None:
        check_client(nc, "LeaderElection")
        if not isinstance(node_id, str) or not node_id:
            raise InvalidInputError("node_id must be a non-empty str")
        check_lease_timings(lease_ttl, renew_interval, step_down_margin, check_interval)
        self._bucket = ClusterBucket(nc, cluster, replicas=replicas, storage=storage, timeout=lease_ttl)
        self._lease = Lease(self._bucket, LEADER_KEY, ttl=lease_ttl, margin=step_down_margin, linearizable=True)
        self._nc = nc
        self.cluster = cluster
        self.node_id = node_id
        self.lease_ttl = lease_ttl
        self.renew_interval = renew_interval
        self.step_down_margin = step_down_margin
        self.check_interval = check_interval
        self._observer = observer
        self._token = secrets.token_hex(8)
        self._leading = False
        self._term = 0
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._leader_id: str | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._owner = TaskOwner(f"leader election {node_id}")
        self._task: asyncio.Task[None] | None = None
        self._hint_sub: Any = None
        self._closing = False
        self._elected: Listeners[int] = Listeners("elected")
        self._deposed: Listeners[int] = Listeners("deposed")
        self._changes: Listeners[LeaderChange] = Listeners("leader change")
        self._last_change: LeaderChange | None = None
        self._changed = asyncio.Event()
        self._pending: list[tuple[str, int]] = []
        self._flush_lock = asyncio.Lock()

    # ---- state --------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """Whether this node leads NOW: holds the lease and its local deadline has not passed."""
        return self._leading and time.monotonic() < self._lease.deadline

    @property
    def leader_id(self) -> str | None:
        """The current leader as far as this node knows (itself when it leads)."""
        if self._leading:
            return self.node_id if self.is_leader else None
        return self._leader_id

    @property
    def term(self) -> int:
        """The fencing term of the current leadership (this node's when it leads; 0 if unknown)."""
        return self._term

    @property
    def lease_deadline(self) -> float:
        """``time.monotonic()`` time at which this leader steps down unless it renews (0 if not leading)."""
        return self._lease.deadline if self._leading else 0.0

    # ---- notifications ------------------------------------------------------------------------
    def on_elected(self, callback: Listener[int]) -> Callable[[], None]:
        """Call ``callback(term)`` when this node becomes leader."""
        return self._elected.add(callback)

    def on_deposed(self, callback: Listener[int]) -> Callable[[], None]:
        """Call ``callback(term)`` when this node stops being leader (the term it had)."""
        return self._deposed.add(callback)

    def on_leader_change(self, callback: Listener[LeaderChange]) -> Callable[[], None]:
        """Call ``callback(LeaderChange)`` whenever the known leader or term changes."""
        return self._changes.add(callback)

    async def wait_for_leader(self, timeout: float = 10.0) -> str:
        """Wait until some node leads and return its id.

        Raises:
            AetherTimeoutError: no leader within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    leader = self.leader_id
                    if leader is not None:
                        return leader
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AetherTimeoutError(f"no leader in cluster {self.cluster!r} within {timeout}s") from None

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the bucket if needed and start campaigning (returns at once; see :meth:`wait_for_leader`).

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: NATS trouble.
        """
        if self._task is not None:
            return
        await self._bucket.ensure()
        try:
            self._hint_sub = await self._nc.subscribe(self._bucket.subject(LEADER_KEY), cb=self._on_hint)
        except Exception as exc:
            raise translate_nats_error(exc, "subscribing to the leader lease") from exc
        self._task = self._owner.spawn(self._run(), name=f"aether-leader-{self.node_id}")

    async def stop(self) -> None:
        """Stop campaigning; a leader releases its lease at once (others can take over now).

        Never raises for NATS trouble (the lease then simply expires).
        """
        if self._closing:
            return
        self._closing = True
        await self._owner.cancel(self._task)
        async with self._lock:
            if self._leading:
                await self._lease.release(timeout=1.0)
            self._step_down("stopped")
        await self._flush()
        await self._owner.aclose()  # a notification flush spawned by the deadline timer
        if self._hint_sub is not None:
            with contextlib.suppress(Exception):
                await self._hint_sub.unsubscribe()
            self._hint_sub = None
        await self._bucket.aclose()

    aclose = stop

    async def __aenter__(self) -> LeaderElection:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- fencing --------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def fenced(self) -> AsyncIterator[Fence]:
        """Hold leadership for one write into the cluster bucket.

        Yields a :class:`Fence` whose ``headers`` make the write fail on the server (wrong last
        sequence) if the lease is no longer at this leader's revision. Renewals wait meanwhile.

        Raises:
            FencedError: this node does not lead (or its deadline passed).
        """
        async with self._lock:
            if not self.is_leader:
                raise FencedError(f"node {self.node_id!r} does not lead cluster {self.cluster!r}")
            yield Fence(self._term, self._lease.fence_headers(), self._lease.deadline)

    # ---- the loop -------------------------------------------------------------------------------
    async def _on_hint(self, msg: Msg) -> None:
        if not self._leading:
            self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                if self._leading:
                    started = loop.time()
                    await self._renew()
                    if self._leading:
                        await asyncio.sleep(max(0.0, started + self.renew_interval - loop.time()))
                    continue
                await self._campaign()
            except AetherError as exc:
                logger.debug("node %s: election step failed: %s", self.node_id, exc)
            except Exception:
                logger.exception("node %s: election error", self.node_id)
            if not self._leading:
                planned = loop.time() + self.check_interval
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.check_interval):
                        await self._wake.wait()
                self._wake.clear()
                lag_tracker().note(max(0.0, loop.time() - planned))

    def _record(self, term: int) -> bytes:
        return _encode(LeaseRecord(node_id=self.node_id, term=term, token=self._token))

    async def _campaign(self) -> None:
        # (a takeover waits longer while this process's loop lags: the leader's renewals may be
        # queued behind the same CPU storm; waiting longer is always safe)
        grace = suspicion_grace(self.lease_ttl, local=lag_tracker().recent(self.lease_ttl + self.check_interval))
        sighting = await self._lease.look(grace=grace, timeout=self.lease_ttl / 2)
        entry = sighting.entry
        if entry is None or sighting.free:
            if self._leader_id is not None:
                self._leader_id = None
                self._pending.append(("change", 0))
            await self._acquire(entry.revision if entry is not None else 0)
            await self._flush()
            return
        try:
            record = _decode_record(entry.value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            record = LeaseRecord(node_id="?")
        if sighting.new:
            self._leader_id = record.node_id
            self._term = record.term or sighting.term
            self._pending.append(("change", 0))
        elif sighting.stale:
            logger.info("node %s: lease of %s (term %d) expired; taking over", self.node_id, record.node_id,
                        record.term or sighting.term)
            await self._acquire(entry.revision)
        await self._flush()

    async def _acquire(self, last: int) -> None:
        async with self._lock:
            if self._closing:
                return
            if not await self._lease.acquire(self._record(0), expected=last,
                                             timeout=self.lease_ttl - self.step_down_margin):
                return  # someone else won, or our read was stale: the lease reads again
            rev = self._lease.term
            self._term = rev
            self._leading = True
            self._leader_id = self.node_id
            self._set_deadline(self._lease.deadline)
            logger.info("node %s: elected leader of %r with term %d", self.node_id, self.cluster, rev)
            if self._observer is not None:
                call_observer(self._observer.on_leadership, self.cluster, self.node_id, True, rev)
            self._pending.append(("elected", rev))

    async def _renew(self) -> None:
        try:
            await self._renew_locked()
        finally:
            await self._flush()

    async def _renew_locked(self) -> None:
        async with self._lock:
            if not self._leading:
                return
            sent_at = time.monotonic()
            if self._lease.deadline <= sent_at:
                self._step_down("lease deadline passed")
                return
            try:
                renewed = await self._lease.renew(self._record(self._term))
            except AetherError as exc:
                self._renewed(sent_at, ok=False)
                logger.warning("node %s: lease renewal failed: %s", self.node_id, exc)
                if time.monotonic() >= self._lease.deadline:
                    self._step_down("could not renew before the deadline")
                return
            if not renewed:
                self._step_down("lease taken over" if time.monotonic() < self._lease.deadline
                                else "lease deadline passed")
                self._renewed(sent_at, ok=False)
                return
            self._set_deadline(self._lease.deadline)
            self._renewed(sent_at, ok=True)

    def _renewed(self, sent_at: float, *, ok: bool) -> None:
        if self._observer is not None:
            call_observer(self._observer.on_lease_renewal, self.cluster, self.node_id, time.monotonic() - sent_at, ok)

    def _set_deadline(self, deadline: float) -> None:
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
        self._deadline_handle = asyncio.get_running_loop().call_at(deadline, self._deadline_reached)

    def _deadline_reached(self) -> None:
        if self._leading and time.monotonic() >= self._lease.deadline:
            self._step_down("lease deadline passed")
            self._owner.spawn(self._flush(), name=f"aether-leader-flush-{self.node_id}")

    def _step_down(self, why: str) -> None:
        """Stop leading now (synchronous: no await between the decision and the state change)."""
        if not self._leading:
            return
        self._leading = False
        term = self._term
        self._leader_id = None
        self._lease.lose()
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
            self._deadline_handle = None
        level = logging.INFO if why == "stopped" else logging.WARNING
        logger.log(level, "node %s: stepped down as leader of %r (term %d): %s", self.node_id, self.cluster, term, why)
        if self._observer is not None:
            call_observer(self._observer.on_leadership, self.cluster, self.node_id, False, term)
        self._pending.append(("deposed", term))
        self._wake.set()

    async def _flush(self) -> None:
        """Deliver pending notifications in order, outside the lease lock."""
        async with self._flush_lock:
            while self._pending:
                kind, term = self._pending.pop(0)
                if kind == "elected":
                    await self._elected.emit(term)
                elif kind == "deposed":
                    await self._deposed.emit(term)
                change = LeaderChange(self.leader_id, self._term if self.leader_id is not None else 0)
                self._changed.set()
                if change != self._last_change:
                    self._last_change = change
                    await self._changes.emit(change)
