"""ClusterManager: one node of a cluster — membership, leadership, shards, handoff and routing.

Lifecycle (``async with ClusterManager(nc, node_id="n1") as node:``):

1. join (:class:`NodeDiscovery`): heartbeats with a liveness lease;
2. watch the shard map; subscribe the node's request and status subjects;
3. campaign (:class:`LeaderElection`); the leader places shards with :class:`ShardManager` and
   publishes each new map with a write fenced by its lease;
4. apply maps in order: release lost shards first (stop taking new requests, finish in-flight
   ones within ``handoff_timeout``, call the *released* listeners), acknowledge by publishing
   ``applied_map``, and only then — once the leader has seen every acknowledgement — do the new
   owners acquire (the *acquired* listeners run before a shard serves requests);
5. on stop: announce ``leaving``, release every shard, (as leader: publish a map without this
   node), leave at once (tombstone) and release the lease.

A node serves a shard only while (a) the newest map it knows gives the shard to its current
incarnation and (b) its liveness lease is valid by its own clock. Both are checked for every
request, so a paused or partitioned node stops serving by itself before anyone can evict it.
Even so, the event store's expected-sequence check remains the last line of defence: two
writers can never both extend one actor's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Unpack

import msgspec

from aether import tracing as _tracing
from aether._nats import check_client, translate_nats_error
from aether._observers import call_observer
from aether._tasks import TaskOwner
from aether.cluster._kv import ClusterBucket, KvConflict
from aether.cluster._notify import Listener, Listeners, logger
from aether.cluster._routing import (
    ERROR,
    MAP_KEY,
    NO_HANDLER,
    NOT_OWNER,
    OK,
    MapWatcher,
    Reply,
    Request,
    Router,
    decode_map,
    decode_request,
    encode,
    node_subject,
)
from aether.cluster.discovery import NodeDiscovery
from aether.cluster.leader import LeaderChange, LeaderElection
from aether.cluster.naming import validate_cluster_name
from aether.cluster.observer import ClusterObserver
from aether.cluster.options import ClusterOptionFields, ClusterOptions
from aether.cluster.shard import ShardManager
from aether.cluster.types import ActorRequest, NodeInfo, NodeLoad, ShardMap
from aether.errors import (
    AetherError,
    AetherTimeoutError,
    ClusterError,
    FencedError,
    InvalidInputError,
    NotOwnerError,
)
from aether.names import validate_actor_id

if TYPE_CHECKING:  # nats-py types in signatures only: the cluster speaks NATS through aether._nats
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["ClusterManager", "RequestHandler"]

RequestHandler = Callable[[ActorRequest], Awaitable[bytes]]
"""Serves requests for actors this node owns: ``async def handler(request) -> bytes``."""

_encode_json = msgspec.json.encode


def _default_address() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ClusterManager:
    """A cluster node: members, leader, shard ownership with handoff, and request routing.

    Args:
        nc: a connected nats-py client (never closed here).
        node_id: this node's id, unique in the cluster (a restart may reuse it).
        cluster: the cluster name (``A-Z a-z 0-9 _ -``); one KV bucket per cluster.
        address: free text telling humans or services where the node runs (default host:pid).
        metadata: string key/value pairs published with the heartbeats.
        weight: relative capacity (shards are placed in proportion).
        handler: serves requests for local actors (see :meth:`set_handler`).
        options: a :class:`ClusterOptions`; or pass its fields as keyword arguments
            (typed by :class:`~aether.cluster.options.ClusterOptionFields`).
        observer: receives cluster metrics (see :class:`aether.metrics.cluster.ClusterMetrics`).

    Raises:
        InvalidNameError: bad cluster name or node id.
        InvalidInputError: bad options.
    """

    def __init__(self, nc: Client, *, node_id: str, cluster: str = "default", address: str | None = None,
                 metadata: Mapping[str, str] | None = None, weight: int = 1, handler: RequestHandler | None = None,
                 options: ClusterOptions | None = None, observer: ClusterObserver | None = None,
                 **option_fields: Unpack[ClusterOptionFields]) -> None:
        check_client(nc, "ClusterManager")
        if option_fields:
            if options is not None:
                raise InvalidInputError("pass either options= or option keyword arguments, not both")
            unknown = sorted(set(option_fields) - set(ClusterOptionFields.__annotations__))
            if unknown:
                raise InvalidInputError(f"unknown cluster option(s): {', '.join(unknown)}")
            options = ClusterOptions(**option_fields)
        self.options = o = options or ClusterOptions()
        validate_cluster_name(cluster)
        validate_actor_id(node_id)
        if not isinstance(weight, int) or not 1 <= weight <= 1000:
            raise InvalidInputError(f"weight must be an int in 1..1000, got {weight!r}")
        self.node_id = node_id
        self.cluster = cluster
        self._nc = nc
        self._observer = observer
        self._handler = handler
        self._shards = ShardManager(o.shard_count, virtual_nodes=o.virtual_nodes,
                                    max_moves_per_round=o.max_moves_per_round)
        info = NodeInfo(id=node_id, address=address if address is not None else _default_address(),
                        weight=weight, metadata=dict(metadata or {}))
        self._discovery = NodeDiscovery(nc, info, cluster=cluster, heartbeat_interval=o.heartbeat_interval,
                                        failure_timeout=o.failure_timeout, check_interval=o.check_interval,
                                        liveness_margin=o.liveness_margin, replicas=o.replicas, storage=o.storage,
                                        load_provider=self._load, observer=observer)
        self._election = LeaderElection(nc, cluster=cluster, node_id=node_id, lease_ttl=o.lease_ttl,
                                        renew_interval=o.renew_interval, step_down_margin=o.step_down_margin,
                                        check_interval=o.check_interval, replicas=o.replicas, storage=o.storage,
                                        observer=observer)
        self._bucket = ClusterBucket(nc, cluster, replicas=o.replicas, storage=o.storage,
                                     timeout=max(1.0, o.lease_ttl))
        self._watcher: MapWatcher | None = None
        self._router: Router | None = None
        self._subs: list[Any] = []
        self._tasks = TaskOwner(f"cluster node {node_id}")
        self._serving = TaskOwner(f"cluster node {node_id} requests")
        self._semaphore = asyncio.Semaphore(o.max_concurrency)
        self._owned: set[int] = set()
        self._in_flight: dict[int, int] = {}
        self._idle = asyncio.Event()
        self._requests = 0
        self._applied = 0
        self._reconcile_wake = asyncio.Event()
        self._reconcile_lock = asyncio.Lock()
        self._leader_wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._leader_fresh = False
        self._map_dirty = True
        self._started = False
        self._closing = False
        self._closed = False
        self._acquired: Listeners[frozenset[int]] = Listeners("shards acquired")
        self._released: Listeners[frozenset[int]] = Listeners("shards released")
        self._published: Listeners[ShardMap] = Listeners("map published")

    # ---- state ---------------------------------------------------------------------------------
    @property
    def discovery(self) -> NodeDiscovery:
        """The node's :class:`NodeDiscovery`."""
        return self._discovery

    @property
    def election(self) -> LeaderElection:
        """The node's :class:`LeaderElection`."""
        return self._election

    @property
    def shards(self) -> ShardManager:
        """The node's :class:`ShardManager` (holds the current shard map)."""
        return self._shards

    @property
    def shard_map(self) -> ShardMap | None:
        """The newest shard map this node knows."""
        return self._shards.shard_map

    @property
    def incarnation(self) -> str:
        """This node's current incarnation token."""
        return self._discovery.incarnation

    @property
    def leader_id(self) -> str | None:
        """The current leader as far as this node knows."""
        return self._election.leader_id

    @property
    def is_leader(self) -> bool:
        """Whether this node leads now (lease held, local deadline not passed)."""
        return self._election.is_leader

    @property
    def term(self) -> int:
        """The fencing term of the current leadership (see :class:`LeaderElection`)."""
        return self._election.term

    @property
    def is_alive(self) -> bool:
        """Whether this node's liveness lease is valid (it may serve shards)."""
        return self._discovery.is_alive

    def members(self) -> list[NodeInfo]:
        """Live members (this node included), sorted by id."""
        return self._discovery.members()

    def shard_for(self, actor_id: str) -> int:
        """The shard of ``actor_id``. Raises InvalidNameError for a bad id."""
        return self._shards.shard_for(actor_id)

    def owner_of(self, actor_id: str) -> str | None:
        """The node serving ``actor_id`` under the newest map (``None`` while its shard moves).

        Raises:
            InvalidNameError: bad actor id.
        """
        return self._shards.owner_of(actor_id)

    def owned_shards(self) -> frozenset[int]:
        """Shards this node serves right now."""
        return frozenset(s for s in self._owned if self._serves(s))

    def is_local(self, actor_id: str) -> bool:
        """Whether this node serves ``actor_id`` right now.

        Raises:
            InvalidNameError: bad actor id.
        """
        return self._serves(self._shards.shard_for(actor_id))

    def _serves(self, shard: int) -> bool:
        if self._closing or shard not in self._owned or not self._discovery.is_alive:
            return False
        current = self._shards.shard_map
        return (current is not None and current.owners[shard] == self.node_id and shard not in current.handoffs
                and current.members.get(self.node_id) == self._discovery.incarnation)

    # ---- notifications ----------------------------------------------------------------------------
    def on_shards_acquired(self, callback: Listener[frozenset[int]]) -> Callable[[], None]:
        """Call ``callback(shards)`` when this node acquires shards, before they serve requests."""
        return self._acquired.add(callback)

    def on_shards_released(self, callback: Listener[frozenset[int]]) -> Callable[[], None]:
        """Call ``callback(shards)`` when this node releases shards (after in-flight work finished,
        within ``handoff_timeout``), before any other node acquires them."""
        return self._released.add(callback)

    def on_leader_change(self, callback: Listener[LeaderChange]) -> Callable[[], None]:
        """Call ``callback(LeaderChange)`` when the known leader or term changes."""
        return self._election.on_leader_change(callback)

    def on_member_join(self, callback: Listener[NodeInfo]) -> Callable[[], None]:
        """Call ``callback(info)`` when a node joins."""
        return self._discovery.on_join(callback)

    def on_member_leave(self, callback: Listener[NodeInfo]) -> Callable[[], None]:
        """Call ``callback(info)`` when a node leaves gracefully."""
        return self._discovery.on_leave(callback)

    def on_member_failure(self, callback: Listener[NodeInfo]) -> Callable[[], None]:
        """Call ``callback(info)`` when a node is declared failed."""
        return self._discovery.on_failure(callback)

    def on_map_published(self, callback: Listener[ShardMap]) -> Callable[[], None]:
        """Call ``callback(map)`` just before this node, as leader, writes a new shard map."""
        return self._published.add(callback)

    def set_handler(self, handler: RequestHandler | None) -> None:
        """Set (or clear) the coroutine function serving requests for this node's actors."""
        self._handler = handler

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Join the cluster and start serving (returns once joined; see :meth:`wait_ready`).

        Raises:
            ClusterError: the node id is in use, or the cluster uses another shard count.
            StoreError / StoreUnavailableError / AetherTimeoutError: NATS trouble.
        """
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self._shutdown(graceful=False)
            raise

    async def _start(self) -> None:
        o = self.options
        await self._bucket.ensure()
        existing = await self._bucket.get(MAP_KEY, linearizable=True)
        if existing is not None and not existing.deleted:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                stored = decode_map(existing.value)
                if stored.shard_count != o.shard_count:
                    raise ClusterError(f"cluster {self.cluster!r} uses {stored.shard_count} shards; this node "
                                       f"is configured with shard_count={o.shard_count}")
        await self._discovery.start()
        self._discovery.on_liveness(self._on_liveness)
        for register in (self._discovery.on_join, self._discovery.on_leave, self._discovery.on_failure,
                         self._discovery.on_update):
            register(self._on_member_event)
        self._election.on_elected(self._on_elected)
        await self._bucket.api.start()  # the reply inbox the router's requests share
        self._watcher = MapWatcher(self._nc, self._bucket, poll_interval=o.check_interval, on_map=self._on_map)
        self._watcher.bind(self._shards)
        await self._watcher.start()
        self._router = Router(self._bucket.api, self._watcher, prefix=o.subject_prefix, cluster=self.cluster,
                              origin=self.node_id, local_node=self.node_id, local=self._dispatch)
        try:
            self._subs.append(await self._nc.subscribe(
                node_subject(o.subject_prefix, self.cluster, self.node_id, "rpc"), cb=self._on_rpc))
            self._subs.append(await self._nc.subscribe(
                node_subject(o.subject_prefix, self.cluster, self.node_id, "status"), cb=self._on_status))
        except Exception as exc:
            raise translate_nats_error(exc, "subscribing to the node's subjects") from exc
        self._tasks.spawn(self._reconcile_loop(), name=f"aether-shards-{self.node_id}")
        self._tasks.spawn(self._leader_loop(), name=f"aether-placement-{self.node_id}")
        await self._election.start()
        self._reconcile_wake.set()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until a shard map exists and this node has applied it.

        Raises:
            AetherTimeoutError: not within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise AetherTimeoutError(f"node {self.node_id!r} not ready within {timeout}s") from None

    async def stop(self) -> None:
        """Leave gracefully: release every shard (finishing in-flight work), hand leadership back,
        and announce the leave at once. Never raises for NATS trouble."""
        await self._shutdown(graceful=True)

    aclose = stop

    async def __aenter__(self) -> ClusterManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _shutdown(self, *, graceful: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing = True
        if graceful and self._discovery.is_alive:
            with contextlib.suppress(AetherError):
                await self._discovery.announce(status="leaving")
        async with self._reconcile_lock:  # a release in progress finishes first (bounded by handoff_timeout)
            self._tasks.cancel_all()
        await self._tasks.aclose()
        if self._owned:
            lost, self._owned = set(self._owned), set()
            await self._release(lost, drain=graceful)
        if graceful and self._election.is_leader and self._watcher is not None:
            with contextlib.suppress(AetherError):
                await self._publish_next(exclude=self.node_id)
        await self._discovery.stop()
        await self._election.stop()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []
        await self._serving.aclose()
        if self._watcher is not None:
            await self._watcher.aclose()
        await self._bucket.aclose()

    # ---- requests ------------------------------------------------------------------------------------
    @_tracing.traced_request
    async def request(self, actor_id: str, payload: bytes, *, timeout: float | None = None) -> bytes:
        """Send ``payload`` to the node that owns ``actor_id`` and return its handler's reply.

        Retries across handoffs and failovers until ``timeout`` (default
        ``options.request_timeout``). A retry after a failover may re-deliver a request the
        failed node had already handled: use :attr:`ActorRequest.request_id` to make handlers
        idempotent.

        Raises:
            AetherTimeoutError: no owner answered in time.
            RequestFailedError: the owner's handler raised, or it has no handler.
            InvalidNameError: bad actor id.
            ClusterError: this manager is not started or is closed.
        """
        validate_actor_id(actor_id)
        if self._router is None or self._closing:
            raise ClusterError(f"cluster node {self.node_id!r} is not running")
        return await self._router.request(actor_id, bytes(payload),
                                          self.options.request_timeout if timeout is None else timeout)

    @contextlib.asynccontextmanager
    async def ownership(self, actor_id: str) -> AsyncIterator[int]:
        """Do work for a local actor as in-flight work of its shard (a handoff waits for it).

        Yields the actor's shard.

        Raises:
            NotOwnerError: this node does not serve the actor now.
            InvalidNameError: bad actor id.
        """
        shard = self._shards.shard_for(actor_id)
        if not self._serves(shard):
            raise NotOwnerError(f"node {self.node_id!r} does not serve actor {actor_id!r} (shard {shard})")
        self._begin(shard)
        try:
            yield shard
        finally:
            self._end(shard)

    def _begin(self, shard: int) -> None:
        self._in_flight[shard] = self._in_flight.get(shard, 0) + 1

    def _end(self, shard: int) -> None:
        left = self._in_flight.get(shard, 1) - 1
        if left <= 0:
            self._in_flight.pop(shard, None)
            self._idle.set()
        else:
            self._in_flight[shard] = left

    @_tracing.traced_handler
    async def _dispatch(self, req: Request) -> Reply:
        """Serve one request locally (remote ones come through :meth:`_on_rpc`)."""
        async with self._semaphore:
            handler = self._handler
            version = self._shards.version
            if handler is None:
                return Reply(NO_HANDLER, version)
            try:
                shard = self._shards.shard_for(req.actor_id)
            except AetherError as exc:
                return Reply(ERROR, version, b"", type(exc).__name__, str(exc))
            if not self._serves(shard):
                return Reply(NOT_OWNER, version)
            self._begin(shard)
            self._requests += 1
            try:
                result = await handler(ActorRequest(actor_id=req.actor_id, payload=req.payload,
                                                    request_id=req.request_id, shard=shard, origin=req.origin))
                if not isinstance(result, bytes | bytearray | memoryview):
                    raise InvalidInputError(f"request handlers must return bytes, got {type(result).__name__}")
                return Reply(OK, version, bytes(result))
            except Exception as exc:
                return Reply(ERROR, version, b"", type(exc).__name__, str(exc))
            finally:
                self._end(shard)

    async def _on_rpc(self, msg: Msg) -> None:
        if not msg.reply:
            return
        self._serving.spawn(self._serve(msg))

    @_tracing.traced_serve
    async def _serve(self, msg: Msg) -> None:
        try:
            req = decode_request(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            reply = Reply(ERROR, self._shards.version, b"", "ClusterError", "malformed request")
        else:
            reply = await self._dispatch(req)
        with contextlib.suppress(Exception):
            await self._nc.publish(msg.reply, encode(reply))

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot of this node (also served on its ``status`` subject)."""
        current = self._shards.shard_map
        return {
            "node_id": self.node_id,
            "cluster": self.cluster,
            "incarnation": self._discovery.incarnation,
            "alive": self._discovery.is_alive,
            "is_leader": self._election.is_leader,
            "leader_id": self._election.leader_id,
            "term": self._election.term,
            "map_version": current.version if current is not None else 0,
            "map_term": current.term if current is not None else 0,
            "applied_map": self._applied,
            "owned": sorted(self.owned_shards()),
            "members": [m.id for m in self._discovery.members()],
            "in_flight": sum(self._in_flight.values()),
            "requests": self._requests,
        }

    async def _on_status(self, msg: Msg) -> None:
        if msg.reply:
            with contextlib.suppress(Exception):
                await self._nc.publish(msg.reply, _encode_json(self.status()))

    def _load(self) -> NodeLoad:
        return NodeLoad(in_flight=sum(self._in_flight.values()), shards=len(self._owned), requests=self._requests)

    # ---- applying maps -----------------------------------------------------------------------------
    async def _on_map(self, shard_map: ShardMap) -> None:
        self._reconcile_wake.set()

    async def _on_liveness(self, alive: bool) -> None:
        self._reconcile_wake.set()
        self._leader_wake.set()

    async def _on_member_event(self, info: NodeInfo) -> None:
        self._leader_wake.set()

    async def _on_elected(self, term: int) -> None:
        self._leader_fresh = False
        self._leader_wake.set()

    def _desired(self) -> set[int]:
        if self._closing or not self._discovery.is_alive:
            return set()
        current = self._shards.shard_map
        if current is None:
            return set()
        return set(current.shards_of(self.node_id, self._discovery.incarnation))

    async def _reconcile_loop(self) -> None:
        while not self._closing:
            await self._reconcile_wake.wait()
            self._reconcile_wake.clear()
            try:
                async with self._reconcile_lock:
                    await self._reconcile()
            except Exception:
                logger.exception("node %s: applying the shard map failed", self.node_id)

    async def _reconcile(self) -> None:
        while not self._closing:
            version = self._shards.version
            desired = self._desired()
            lost = self._owned - desired
            if lost:
                self._owned -= lost
                await self._release(lost, drain=self._discovery.is_alive)
            if self._shards.version != version:
                continue
            gained = desired - self._owned
            if gained:
                await self._acquired.emit(frozenset(gained))
                self._owned |= gained  # if the map moved on meanwhile, the next pass releases them
                if self._observer is not None:
                    call_observer(self._observer.on_shards_owned, self.cluster, self.node_id, len(self._owned))
                if self._shards.version != version:
                    continue
            if version and self._discovery.is_alive:
                if version > self._applied:
                    self._applied = version
                    with contextlib.suppress(AetherError):
                        await self._discovery.announce(applied_map=version)
                    self._leader_wake.set()
                self._ready.set()
            return

    async def _release(self, shards: set[int], *, drain: bool) -> None:
        started = time.monotonic()
        bound = self.options.handoff_timeout
        if drain:
            deadline = started + bound
            while any(self._in_flight.get(s) for s in shards):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning("node %s: in-flight work on shards %s did not finish within %.2fs; releasing",
                                   self.node_id, sorted(shards), bound)
                    break
                self._idle.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._idle.wait()
            bound = max(0.05, deadline - time.monotonic())
        try:
            async with asyncio.timeout(bound):
                await self._released.emit(frozenset(shards))
        except TimeoutError:
            logger.warning("node %s: shard release listeners exceeded the handoff bound", self.node_id)
        if self._observer is not None:
            call_observer(self._observer.on_handoff, self.cluster, self.node_id, len(shards),
                          time.monotonic() - started)
            call_observer(self._observer.on_shards_owned, self.cluster, self.node_id, len(self._owned))

    # ---- leader duties -------------------------------------------------------------------------------
    async def _leader_loop(self) -> None:
        interval = self.options.check_interval * 2
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._leader_wake.wait()
            self._leader_wake.clear()
            if not self._election.is_leader:
                self._leader_fresh = False
                continue
            try:
                await self._publish_next()
            except FencedError as exc:
                logger.info("node %s: map write fenced off: %s", self.node_id, exc)
            except AetherError as exc:
                logger.warning("node %s: publishing the shard map failed: %s", self.node_id, exc)
            except Exception:
                logger.exception("node %s: placement error", self.node_id)

    async def _publish_next(self, *, exclude: str | None = None) -> None:
        """As leader: compute the next map from the live members and publish it, fenced."""
        watcher = self._watcher
        assert watcher is not None
        if not self._leader_fresh or self._map_dirty:
            await watcher.refresh(linearizable=True)  # the previous leader's last map is final now
            self._leader_fresh, self._map_dirty = True, False
        live = {info.id: info for info in self._discovery.members() if info.id != exclude}
        current = self._shards.shard_map
        nxt = self._shards.next_map(current, live, self._election.term)
        if nxt is None:
            return
        moves = self._shards.last_moves
        async with self._election.fenced() as fence:
            nxt = msgspec.structs.replace(nxt, term=fence.term)
            await self._published.emit(nxt)
            try:
                await self._bucket.write(MAP_KEY, encode(nxt), headers=fence.headers,
                                         timeout=max(0.1, fence.deadline - time.monotonic()))
            except KvConflict:
                # the lease changed hands, or (10164 on a replicated bucket) a renewal of it was in
                # flight: try again while still leading
                self._map_dirty = True
                raise FencedError(f"node {self.node_id!r}: lease changed hands; map {nxt.version} refused") from None
            except AetherError:
                self._map_dirty = True
                raise
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("node %s: published shard map %d (term %d, %d moves)", self.node_id, nxt.version,
                         nxt.term, moves)
        if moves and self._observer is not None:
            call_observer(self._observer.on_shard_moves, self.cluster, self.node_id, moves)
        await watcher.offer(nxt)
