"""NodeDiscovery: membership by heartbeats in the cluster's KV bucket.

Every node keeps one key, ``node.<encoded id>``, and rewrites it every ``heartbeat_interval``
with a compare-and-set on its own last revision. Each write that the server acknowledges is a
*liveness lease*: the node counts itself alive until ``t0 + failure_timeout - liveness_margin``
where ``t0`` is the local time it SENT the write. Observers read all heartbeat keys every
``check_interval`` (and at once when a core-NATS hint shows a join, a change or a leave). A
revision that has not changed for ``failure_timeout`` — measured from the moment the observer
first READ it, which is after the write, which is after ``t0`` — is evicted with a
compare-and-set tombstone. So a node always considers itself dead before anyone can evict it,
and an eviction can never race a heartbeat: whichever of the two the server stores first wins,
and the loser learns it (the evicted node's next heartbeat fails its compare-and-set).

A graceful :meth:`NodeDiscovery.stop` writes a tombstone at once (``leave``); an evicted or
expired heartbeat is a ``failure``. A node that restarts is a new *incarnation*.

Cost at scale (N members): every node receives each heartbeat once as a core-NATS hint (2N/s
at the default 0.5 s interval) and takes the member's new fields from it, without a read. The
full read of all heartbeats (one ``multi_last`` request, N entries) runs every ``check_interval``
only while some member is overdue, else every ``failure_timeout / 2``. The eviction clock of a
revision starts when the hint of that very heartbeat (same incarnation and beat) arrived — it
was sent before that — or at the read that first showed it, whichever is earlier; so slower
polling does not slow failover, and the argument above is unchanged. While this process's event
loop lags (or the member reported lag), eviction waits that much longer (at most
``failure_timeout`` more): a CPU storm delays heartbeats without making anyone flap.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from aether._nats import check_client, translate_nats_error
from aether.cluster._kv import ClusterBucket, KvConflict, KvEntry
from aether.cluster._lag import lag_tracker, suspicion_grace
from aether.cluster._notify import Listener, Listeners, logger, spawn
from aether.cluster.observer import ClusterObserver
from aether.cluster.types import NodeInfo, NodeLoad
from aether.errors import AetherError, ClusterError, InvalidInputError
from aether.names import decode_token, encode_token

__all__ = ["NodeDiscovery"]

_encode = msgspec.msgpack.encode
_decode_info = msgspec.msgpack.Decoder(NodeInfo).decode
_TOMBSTONE_TTL = 60.0
REASON_HEADER = "Aether-Reason"


class _Member:
    __slots__ = ("heard", "info", "revision", "seen_at")

    def __init__(self, info: NodeInfo, revision: int, seen_at: float) -> None:
        self.info = info
        self.revision = revision
        self.seen_at = seen_at
        self.heard: dict[int, float] = {}  # beat → when its hint arrived (the last few)

    def hear(self, beat: int, at: float) -> None:
        if beat not in self.heard:
            self.heard[beat] = at
            if len(self.heard) > 8:
                del self.heard[min(self.heard)]

    def last_heard(self) -> float:
        return max(self.heard.values(), default=0.0)

    def written_before(self, info: NodeInfo, read_at: float) -> float:
        """When the write holding ``info`` was surely already sent: its hint's arrival if it
        was heard (the hint is a copy of the published message), else the read's time."""
        heard = self.heard.get(info.beat) if info.incarnation == self.info.incarnation else None
        return min(read_at, heard) if heard is not None else read_at


def _significant(info: NodeInfo) -> tuple[Any, ...]:
    """The fields whose change is worth an ``update`` notification (not beat or load)."""
    return (info.status, info.applied_map, info.address, info.weight, info.metadata)


class NodeDiscovery:
    """Cluster membership: this node's heartbeats, everyone else's liveness.

    Args:
        nc: a connected nats-py client (never closed here).
        node_info: this node's description (``id`` required; ``incarnation`` is set on join).
        cluster: the cluster name (``A-Z a-z 0-9 _ -``).
        heartbeat_interval: seconds between heartbeats.
        failure_timeout: seconds without a new heartbeat after which a node is declared failed.
        check_interval: seconds between reads of the members (default: heartbeat_interval / 2).
        liveness_margin: safety margin: a node considers itself dead this long before anyone may
            evict it (covers clock-rate drift and scheduling delays).
        replicas / storage: of the cluster bucket (3 / ``"file"`` on a NATS cluster).
        load_provider: returns this node's current :class:`NodeLoad` (event-loop lag and CPU
            time are filled in here).
        observer: receives the member count (see :mod:`aether.metrics.cluster`).

    Raises:
        InvalidInputError: inconsistent timings (``failure_timeout`` must exceed
            ``heartbeat_interval + liveness_margin``).
        InvalidNameError: bad cluster name.
    """

    def __init__(self, nc: Client, node_info: NodeInfo, *, cluster: str = "default",
                 heartbeat_interval: float = 0.5, failure_timeout: float = 1.5,
                 check_interval: float | None = None, liveness_margin: float = 0.25, replicas: int = 1,
                 storage: str = "file", load_provider: Callable[[], NodeLoad] | None = None,
                 observer: ClusterObserver | None = None) -> None:
        check_client(nc, "NodeDiscovery")
        if not isinstance(node_info, NodeInfo) or not node_info.id:
            raise InvalidInputError("node_info must be a NodeInfo with a non-empty id")
        if heartbeat_interval <= 0 or liveness_margin < 0:
            raise InvalidInputError("heartbeat_interval must be > 0 and liveness_margin >= 0")
        if failure_timeout <= heartbeat_interval + liveness_margin:
            raise InvalidInputError(
                f"failure_timeout ({failure_timeout}) must exceed heartbeat_interval + liveness_margin "
                f"({heartbeat_interval} + {liveness_margin})"
            )
        self._bucket = ClusterBucket(nc, cluster, replicas=replicas, storage=storage,
                                     timeout=max(1.0, failure_timeout))
        self.cluster = cluster
        self.heartbeat_interval = heartbeat_interval
        self.failure_timeout = failure_timeout
        self.check_interval = check_interval if check_interval is not None else heartbeat_interval / 2
        self.liveness_margin = liveness_margin
        self._nc = nc
        self._info = node_info
        self._key = "node." + encode_token(node_info.id)
        self._key_ttl = float(int(failure_timeout) + 2)
        self._rev = 0
        self._live_until = 0.0
        self._alive = False
        self._alive_handle: asyncio.TimerHandle | None = None
        self._members: dict[str, _Member] = {}
        self._load_provider = load_provider
        self._observer = observer
        self._lag = 0.0
        self._beat_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._hint_sub: Any = None
        self._started = False
        self._closing = False
        self._rejoining = False
        self._join_listeners: Listeners[NodeInfo] = Listeners("join")
        self._leave_listeners: Listeners[NodeInfo] = Listeners("leave")
        self._failure_listeners: Listeners[NodeInfo] = Listeners("failure")
        self._update_listeners: Listeners[NodeInfo] = Listeners("update")
        self._liveness_listeners: Listeners[bool] = Listeners("liveness")

    # ---- public state ---------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        """This node's id."""
        return self._info.id

    @property
    def node_info(self) -> NodeInfo:
        """This node's current description (as last announced)."""
        return self._info

    @property
    def incarnation(self) -> str:
        """This node's current incarnation token (``""`` before it joined)."""
        return self._info.incarnation

    @property
    def is_alive(self) -> bool:
        """Whether this node's liveness lease is valid now (checked against the local clock)."""
        return self._alive and time.monotonic() < self._live_until

    @property
    def alive_until(self) -> float:
        """``time.monotonic()`` deadline of this node's liveness lease."""
        return self._live_until

    def members(self) -> list[NodeInfo]:
        """Live members, this node included while it is alive, sorted by id."""
        found = [m.info for m in self._members.values()]
        if self.is_alive:
            found.append(self._info)
        return sorted(found, key=lambda info: info.id)

    def member(self, node_id: str) -> NodeInfo | None:
        """The live member ``node_id`` (this node included), or ``None``."""
        if node_id == self._info.id:
            return self._info if self.is_alive else None
        m = self._members.get(node_id)
        return m.info if m is not None else None

    # ---- notifications ----------------------------------------------------------------------
    def on_join(self, callback: Listener[NodeInfo]) -> Callable[[], None]:
        """Call ``callback(info)`` when a node (or a new incarnation of one) joins."""
        return self._join_listeners.add(callback)

    def on_leave(self, callback: Listener[NodeInfo]) -> Callable[[], None]:
        """Call ``callback(info)`` when a node leaves gracefully."""
        return self._leave_listeners.add(callback)

    def on_failure(self, callback: Listener[NodeInfo]) -> Callable[[], None]:
        """Call ``callback(info)`` when a node is declared failed (no heartbeat for failure_timeout)."""
        return self._failure_listeners.add(callback)

    def on_update(self, callback: Listener[NodeInfo]) -> Callable[[], None]:
        """Call ``callback(info)`` when a member changes its status, weight, metadata or applied map."""
        return self._update_listeners.add(callback)

    def on_liveness(self, callback: Listener[bool]) -> Callable[[], None]:
        """Call ``callback(alive)`` when THIS node's liveness lease is gained or lost."""
        return self._liveness_listeners.add(callback)

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Join the cluster: create the bucket if needed, write the first heartbeat, start watching.

        If a previous incarnation of this node id still heartbeats, waits until it is stale and
        evicts it (at most about ``failure_timeout``).

        Raises:
            ClusterError: another live process uses this node id.
            StoreError / StoreUnavailableError / AetherTimeoutError: NATS trouble.
        """
        if self._started:
            return
        self._started = True
        try:
            await self._bucket.ensure()
            try:
                self._hint_sub = await self._nc.subscribe(self._bucket.prefix + "node.*", cb=self._on_hint)
            except Exception as exc:
                raise translate_nats_error(exc, "subscribing to cluster heartbeats") from exc
            await self._refresh()
            await self._join(strict=True)
        except BaseException:
            await self.stop()
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeat_loop(), name=f"aether-heartbeat-{self.node_id}"),
                       loop.create_task(self._watch_loop(), name=f"aether-discovery-{self.node_id}")]
        with contextlib.suppress(AetherError):
            await self._refresh()

    async def stop(self) -> None:
        """Leave the cluster: the tombstone is written at once, so others see a ``leave`` now.

        Never raises for NATS trouble (a node that cannot say goodbye is declared failed later).
        """
        if self._closing:
            return
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._alive_handle is not None:
            self._alive_handle.cancel()
        was_alive = self.is_alive
        if self._rev:
            with contextlib.suppress(AetherError):
                await self._bucket.write(self._key, b"", last=self._rev, op="DEL", ttl=_TOMBSTONE_TTL,
                                         headers={REASON_HEADER: "leave"}, timeout=1.0)
        self._rev = 0
        self._alive = False
        if self._hint_sub is not None:
            with contextlib.suppress(Exception):
                await self._hint_sub.unsubscribe()
            self._hint_sub = None
        await self._bucket.aclose()
        if was_alive:
            await self._liveness_listeners.emit(False)

    aclose = stop

    async def __aenter__(self) -> NodeDiscovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- own heartbeats ---------------------------------------------------------------------
    async def announce(self, **changes: Any) -> None:
        """Change fields of this node's :class:`NodeInfo` (status, metadata, applied_map, …) and
        heartbeat at once so the cluster sees them now.

        Raises:
            InvalidInputError: ``id`` or ``incarnation`` cannot be changed.
        """
        if "id" in changes or "incarnation" in changes:
            raise InvalidInputError("a node's id and incarnation cannot be changed")
        self._info = msgspec.structs.replace(self._info, **changes)
        if self._rev and not self._closing:
            await self._beat()

    def _load(self) -> NodeLoad:
        base = self._load_provider() if self._load_provider is not None else NodeLoad()
        lag, self._lag = self._lag, 0.0
        return msgspec.structs.replace(base, event_loop_lag=round(lag, 6), cpu_seconds=round(time.process_time(), 3))

    def _note_lag(self, lag: float) -> None:
        if lag > self._lag:
            self._lag = lag
        lag_tracker().note(lag)

    def _extend(self, sent_at: float) -> None:
        until = sent_at + self.failure_timeout - self.liveness_margin
        if until <= self._live_until:
            return
        self._live_until = until
        if self._alive_handle is not None:
            self._alive_handle.cancel()
        loop = asyncio.get_running_loop()
        self._alive_handle = loop.call_at(until, self._check_alive)
        if not self._alive and time.monotonic() < until:
            self._alive = True
            self._report_members()
            spawn(self._liveness_listeners.emit(True))

    def _report_members(self) -> None:
        if self._observer is not None:
            self._observer.on_members(self.cluster, self.node_id, len(self._members) + (1 if self.is_alive else 0))

    def _check_alive(self) -> None:
        if self._alive and time.monotonic() >= self._live_until:
            self._alive = False
            self._report_members()
            logger.warning("node %s: liveness lease lapsed (no heartbeat acknowledged in time)", self.node_id)
            spawn(self._liveness_listeners.emit(False))

    async def _beat(self) -> None:
        async with self._beat_lock:
            if self._closing or not self._rev:
                return
            info = msgspec.structs.replace(self._info, beat=self._info.beat + 1, load=self._load())
            self._info = info
            sent_at = time.monotonic()
            try:
                rev = await self._bucket.write(self._key, _encode(info), last=self._rev, ttl=self._key_ttl,
                                               timeout=max(0.2, self.failure_timeout - self.heartbeat_interval))
            except KvConflict:
                await self._after_conflict(info)
                return
            except AetherError as exc:
                logger.debug("node %s: heartbeat failed: %s", self.node_id, exc)
                return
            self._rev = rev
            self._extend(sent_at)

    async def _after_conflict(self, sent: NodeInfo) -> None:
        """A heartbeat lost its compare-and-set: a lost ack of our own write, or we were evicted."""
        try:
            entry = await self._bucket.get(self._key, linearizable=True)
        except AetherError:
            return
        if entry is not None and not entry.deleted:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                stored = _decode_info(entry.value)
                if stored.incarnation == sent.incarnation:
                    self._rev = entry.revision  # our own earlier write; the next beat extends the lease
                    return
        logger.warning("node %s: evicted from cluster %r; rejoining as a new incarnation", self.node_id, self.cluster)
        self._rev = 0
        self._live_until = 0.0
        if self._alive:
            self._alive = False
            await self._liveness_listeners.emit(False)
        if not self._rejoining:
            self._rejoining = True
            spawn(self._rejoin())

    async def _rejoin(self) -> None:
        try:
            while not self._closing:
                try:
                    await self._join(strict=False)
                    return
                except AetherError as exc:
                    logger.warning("node %s: rejoin failed, retrying: %s", self.node_id, exc)
                    await asyncio.sleep(self.check_interval)
        finally:
            self._rejoining = False

    async def _join(self, *, strict: bool) -> None:
        """Write the first heartbeat of a new incarnation (see :meth:`start`)."""
        self._info = msgspec.structs.replace(self._info, incarnation=secrets.token_hex(8), beat=1,
                                             load=self._load())
        watched_rev, watched_at, changes = 0, 0.0, 0
        while not self._closing:
            entry = await self._bucket.get(self._key, linearizable=True)
            if entry is None or entry.deleted:
                sent_at = time.monotonic()
                try:
                    rev = await self._bucket.write(self._key, _encode(self._info),
                                                   last=entry.revision if entry is not None else 0,
                                                   ttl=self._key_ttl)
                except KvConflict:
                    continue
                self._rev = rev
                self._extend(sent_at)
                self._wake.set()
                return
            now = time.monotonic()
            if entry.revision != watched_rev:
                if watched_rev:
                    changes += 1
                    if strict and changes > 2 * self.failure_timeout / self.heartbeat_interval:
                        raise ClusterError(f"node id {self.node_id!r} is in use by another live process "
                                           f"in cluster {self.cluster!r}")
                watched_rev, watched_at = entry.revision, now
            elif now - watched_at >= self.failure_timeout:
                with contextlib.suppress(KvConflict):
                    await self._bucket.write(self._key, b"", last=entry.revision, op="DEL", ttl=_TOMBSTONE_TTL,
                                             headers={REASON_HEADER: "failed"})
                continue
            await asyncio.sleep(self.check_interval)

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.heartbeat_interval
        planned = loop.time() + interval
        while not self._closing:
            delay = planned - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            self._note_lag(max(0.0, now - planned))
            planned = max(planned + interval, now + interval / 4)
            try:
                await self._beat()
            except Exception:  # never let the heartbeat die
                logger.exception("node %s: heartbeat error", self.node_id)

    # ---- watching others ----------------------------------------------------------------------
    async def _on_hint(self, msg: Msg) -> None:
        """A heartbeat or tombstone passed by: refresh now if it tells something new."""
        node_token = msg.subject[len(self._bucket.prefix) + 5:]
        if msg.headers and msg.headers.get("KV-Operation"):
            self._wake.set()
            return
        try:
            info = _decode_info(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if info.id == self._info.id or encode_token(info.id) != node_token:
            return
        m = self._members.get(info.id)
        if m is None or m.info.incarnation != info.incarnation:
            self._wake.set()  # a join or a new incarnation: read it (its revision is needed)
            return
        m.hear(info.beat, time.monotonic())
        if info.beat <= m.info.beat:
            return
        # the same incarnation, newer: take its fields now, without reading every heartbeat
        # (a shard-map round changes every member's applied_map: N hints, not N full reads)
        changed = _significant(m.info) != _significant(info)
        m.info = info
        if changed:
            await self._update_listeners.emit(info)

    def _poll_interval(self) -> float:
        """``check_interval`` while some member is overdue (or unheard), slower while every
        member's heartbeats arrive on time: the hints carry their content, and the eviction
        clock starts when the last heard heartbeat arrived, so failover is not slower."""
        relaxed = max(self.check_interval, self.failure_timeout / 2)
        if relaxed == self.check_interval:
            return relaxed
        overdue = time.monotonic() - self.heartbeat_interval - self.check_interval
        if any(m.last_heard() < overdue for m in self._members.values()):
            return self.check_interval
        return relaxed

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            interval = self._poll_interval()
            planned = loop.time() + interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            self._note_lag(max(0.0, loop.time() - planned))
            try:
                await self._refresh()
            except AetherError as exc:
                logger.debug("node %s: member refresh failed: %s", self.node_id, exc)
            except Exception:
                logger.exception("node %s: member refresh error", self.node_id)

    async def _refresh(self) -> None:
        entries = await self._bucket.get_prefix("node.", timeout=max(0.5, self.failure_timeout / 2))
        now = time.monotonic()
        events: list[tuple[Listeners[NodeInfo], NodeInfo]] = []
        seen: set[str] = set()
        for entry in entries:
            token = entry.key[5:]
            try:
                node_id = decode_token(token)
            except AetherError:
                continue
            if node_id == self._info.id:
                continue
            seen.add(node_id)
            member = self._members.get(node_id)
            if entry.deleted:
                if member is not None:
                    del self._members[node_id]
                    reason = entry.headers.get(REASON_HEADER, "leave")
                    events.append((self._leave_listeners if reason == "leave" else self._failure_listeners,
                                   member.info))
                continue
            try:
                info = _decode_info(entry.value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if member is None:
                self._members[node_id] = _Member(info, entry.revision, now)
                events.append((self._join_listeners, info))
            elif member.info.incarnation != info.incarnation:
                self._members[node_id] = _Member(info, entry.revision, now)
                events.append((self._failure_listeners, member.info))
                events.append((self._join_listeners, info))
            elif entry.revision != member.revision:
                member.revision, member.seen_at = entry.revision, member.written_before(info, now)
                if info.beat >= member.info.beat:  # a hint may already have brought it (or newer)
                    changed = _significant(member.info) != _significant(info)
                    member.info = info
                    if changed:
                        events.append((self._update_listeners, info))
            elif now - member.seen_at >= self.failure_timeout + self._grace(member):
                await self._evict(node_id, member, events)
        for node_id in [n for n in self._members if n not in seen]:
            member = self._members.pop(node_id)  # the heartbeat expired (TTL): failed
            events.append((self._failure_listeners, member.info))
        if events:
            self._report_members()
        for listeners, info in events:
            await listeners.emit(info)

    def _grace(self, member: _Member) -> float:
        """Extra silence tolerated while this loop (or, by its last report, the member's) lags."""
        local = lag_tracker().recent(self.failure_timeout + self.heartbeat_interval)
        return suspicion_grace(self.failure_timeout, local=local, remote=member.info.load.event_loop_lag)

    async def _evict(self, node_id: str, member: _Member,
                     events: list[tuple[Listeners[NodeInfo], NodeInfo]]) -> None:
        try:
            await self._bucket.write(self._key_of(node_id), b"", last=member.revision, op="DEL",
                                     ttl=_TOMBSTONE_TTL, headers={REASON_HEADER: "failed"},
                                     timeout=max(0.5, self.failure_timeout / 2))
        except KvConflict:
            member.seen_at = time.monotonic()  # it heartbeated, or someone else evicted it: re-read
            self._wake.set()
            return
        logger.info("node %s: evicted %s (no heartbeat for %.2fs)", self.node_id, node_id, self.failure_timeout)
        self._members.pop(node_id, None)
        events.append((self._failure_listeners, member.info))

    @staticmethod
    def _key_of(node_id: str) -> str:
        return "node." + encode_token(node_id)

    async def entries(self) -> list[KvEntry]:
        """The raw heartbeat entries of the bucket (diagnostics)."""
        return await self._bucket.get_prefix("node.")

