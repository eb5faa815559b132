"""Request routing: the wire envelopes, the shard-map watcher and the retry loop that takes a
request to the node owning its actor. Requests travel over the multiplexed reply inbox of
:class:`aether._nats.JsApi` (the connection's one reply inbox, shared by every component on it).

A request is a core-NATS request to the owner's subject
``<prefix>.cluster.<cluster>.node.<encoded node id>.rpc``. The owner answers ``OK``,
``NOT_OWNER`` (it no longer, or not yet, serves the shard), or ``ERROR`` (its handler raised).
The caller retries ``NOT_OWNER`` and "no responders" after the shard map changes (or a short
backoff), and stops waiting for a reply when the map shows the owner's incarnation is gone
(it failed): the request goes to the new owner. A reply from an owner that is merely handing
the shard off is still awaited — it finishes in-flight work before releasing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from aether import tracing as _tracing
from aether._ids import new_id
from aether._nats import JsApi, translate_nats_error
from aether._tasks import TaskOwner
from aether.cluster._kv import ClusterBucket
from aether.cluster._notify import logger
from aether.cluster.shard import ShardManager
from aether.cluster.types import ShardMap
from aether.errors import AetherError, AetherTimeoutError, ClusterError, PermissionDeniedError, RequestFailedError
from aether.names import encode_token

if TYPE_CHECKING:  # nats-py types in signatures only: the cluster speaks NATS through aether._nats
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["MapWatcher", "Reply", "Request", "Router", "node_subject"]

OK, NOT_OWNER, ERROR, NO_HANDLER = 0, 1, 2, 3
MAP_KEY = "map"


class Request(msgspec.Struct, array_like=True, frozen=True):
    actor_id: str
    request_id: str
    shard: int
    map_version: int
    origin: str
    payload: bytes


class Reply(msgspec.Struct, array_like=True, frozen=True):
    status: int
    map_version: int
    payload: bytes = b""
    error_type: str = ""
    error: str = ""


encode = msgspec.msgpack.encode
decode_request = msgspec.msgpack.Decoder(Request).decode
decode_reply = msgspec.msgpack.Decoder(Reply).decode
decode_map = msgspec.msgpack.Decoder(ShardMap).decode


def node_subject(prefix: str, cluster: str, node_id: str, kind: str) -> str:
    """The subject where ``node_id`` serves ``kind`` (``rpc`` or ``status``)."""
    return f"{prefix}.cluster.{cluster}.node.{encode_token(node_id)}.{kind}"


class MapWatcher:
    """Keeps a :class:`ShardManager` on the newest published shard map.

    Reads the map key every ``poll_interval``, and at once when a core-NATS hint shows a write
    (a hinted version that a read does not show yet is re-read a few times: replicas may lag).
    """

    def __init__(self, nc: Client, bucket: ClusterBucket, *, poll_interval: float,
                 on_map: Callable[[ShardMap], Awaitable[None]] | None = None) -> None:
        self._nc = nc
        self._bucket = bucket
        self.poll_interval = poll_interval
        self.shards: ShardManager | None = None
        self._on_map = on_map
        self._want = 0
        self._wake = asyncio.Event()
        self._tasks = TaskOwner("shard map watcher")
        self._sub: Any = None
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def bind(self, shards: ShardManager) -> None:
        self.shards = shards

    @property
    def version(self) -> int:
        return self.shards.version if self.shards is not None else 0

    def changed(self) -> asyncio.Future[None]:
        """A future that completes at the next map change."""
        return self._changed

    async def start(self, *, strict: bool = True) -> None:
        """Subscribe, read the map once and start polling.

        Raises:
            NatsConnectionError-family / StoreError: NATS trouble (the first read only when ``strict``).
            PermissionDeniedError: the user may not read the cluster's bucket (even when not ``strict``).
        """
        try:
            self._sub = await self._nc.subscribe(self._bucket.subject(MAP_KEY), cb=self._on_hint)
        except Exception as exc:
            raise translate_nats_error(exc, "subscribing to the shard map") from exc
        try:
            await self.refresh(linearizable=True)
        except AetherError as exc:
            if strict or isinstance(exc, PermissionDeniedError):  # waiting would never help
                raise
        self._tasks.spawn(self._run(), name="aether-map-watcher")

    async def _on_hint(self, msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            hinted = decode_map(msg.data)
            if hinted.version > self.version:
                self._want = max(self._want, hinted.version)
                self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.refresh()
                tries = 0
                while self._want > self.version and tries < 5:
                    tries += 1
                    await asyncio.sleep(0.01 * tries)
                    await self.refresh(linearizable=tries >= 2)
                self._want = 0
            except AetherError as exc:
                logger.debug("shard map refresh failed: %s", exc)
            except Exception:
                logger.exception("shard map watcher error")

    async def refresh(self, *, linearizable: bool = False) -> None:
        """Read the map now and adopt it if newer.

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: NATS trouble.
        """
        entry = await self._bucket.get(MAP_KEY, linearizable=linearizable)
        if entry is None or entry.deleted:
            return
        try:
            shard_map = decode_map(entry.value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            logger.error("the shard map of cluster %r is not readable", self._bucket.cluster)
            return
        await self.offer(shard_map)

    async def offer(self, shard_map: ShardMap) -> bool:
        """Adopt ``shard_map`` if newer (also used by the leader for its own writes)."""
        if self.shards is None:
            self.shards = ShardManager(shard_map.shard_count)
        if shard_map.shard_count != self.shards.shard_count:
            logger.error("shard map of cluster %r has %d shards, this node expects %d", self._bucket.cluster,
                         shard_map.shard_count, self.shards.shard_count)
            return False
        if not self.shards.apply(shard_map):
            return False
        changed, self._changed = self._changed, asyncio.get_running_loop().create_future()
        changed.set_result(None)
        if self._on_map is not None:
            await self._on_map(shard_map)
        return True

    async def aclose(self) -> None:
        await self._tasks.aclose()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


LocalDispatch = Callable[[Request], Awaitable[Reply]]


class Router:
    """The request retry loop (see the module docstring)."""

    def __init__(self, api: JsApi, watcher: MapWatcher, *, prefix: str, cluster: str, origin: str = "",
                 local_node: str | None = None, local: LocalDispatch | None = None) -> None:
        self._api = api
        self._watcher = watcher
        self._prefix = prefix
        self._cluster = cluster
        self._origin = origin
        self._local_node = local_node
        self._local = local
        self._subjects: dict[str, tuple[str, str]] = {}  # node id -> (its rpc subject, what sending there is)

    def _subject(self, node_id: str) -> tuple[str, str]:
        entry = self._subjects.get(node_id)
        if entry is None:
            subject = node_subject(self._prefix, self._cluster, node_id, "rpc")
            entry = self._subjects[node_id] = (subject, f"sending a request to {subject!r}")
        return entry

    async def _pause(self, seconds: float) -> None:
        """Wait for the next map change, at most ``seconds``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await asyncio.shield(self._watcher.changed())

    async def request(self, actor_id: str, payload: bytes, timeout: float) -> bytes:
        """Deliver ``payload`` to the owner of ``actor_id`` and return its reply payload.

        Raises:
            AetherTimeoutError: no owner answered within ``timeout`` (the request may or may not
                have been handled).
            RequestFailedError: the owner's handler raised, or the owner has no handler.
            InvalidNameError: bad actor id.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        request_id = new_id()
        backoff = 0.005
        shard: int | None = None
        last_problem = "no shard map yet"
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AetherTimeoutError(f"request to actor {actor_id!r} timed out after {timeout}s "
                                         f"({last_problem})")
            shards = self._watcher.shards
            current = shards.shard_map if shards is not None else None
            if shards is None or current is None:
                await self._pause(min(remaining, 0.05))
                continue
            if shard is None:
                shard = shards.shard_for(actor_id)
            owner = current.owner(shard)
            if owner is None:
                last_problem = f"shard {shard} has no owner (moving or unassigned)"
                await self._pause(min(remaining, 0.1))
                continue
            req = Request(actor_id, request_id, shard, current.version, self._origin, payload)
            if self._local is not None and owner == self._local_node:
                reply: Reply | None = await self._local(req)
            else:
                reply = await self._remote(owner, req, current, deadline)
            if reply is None:
                last_problem = f"owner {owner!r} of shard {shard} did not answer"
            elif reply.status == OK:
                return reply.payload
            elif reply.status == NOT_OWNER:
                last_problem = f"node {owner!r} does not serve shard {shard} (map {current.version})"
                if reply.map_version > self._watcher.version:
                    with contextlib.suppress(AetherError):
                        await self._watcher.refresh(linearizable=True)
            elif reply.status == NO_HANDLER:
                raise RequestFailedError(f"node {owner!r} has no request handler", actor_id=actor_id,
                                         node_id=owner)
            else:
                raise RequestFailedError(f"handler on node {owner!r} failed for actor {actor_id!r}: "
                                         f"{reply.error_type}: {reply.error}", actor_id=actor_id, node_id=owner,
                                         error_type=reply.error_type)
            if self._watcher.version == current.version:
                await self._pause(min(backoff, max(0.0, deadline - loop.time())))
                backoff = min(backoff * 2, 0.2)

    @_tracing.traced_hop
    async def _remote(self, owner: str, req: Request, sent_map: ShardMap, deadline: float) -> Reply | None:
        """One attempt; ``None`` when there was no usable answer (no responders, owner gone, timeout)."""
        loop = asyncio.get_running_loop()
        try:
            subject, what = self._subject(owner)
            token, future = await self._api.send(subject, encode(req), headers=_tracing.headers(), what=what)
        except AetherError as exc:
            logger.debug("request to %s failed to send: %s", owner, exc)
            await self._pause(min(0.05, max(0.0, deadline - loop.time())))
            return None
        incarnation = sent_map.members.get(owner)
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                changed: asyncio.Future[Any] = self._watcher.changed()
                waiting: set[asyncio.Future[Any]] = {future, changed}
                done, _ = await asyncio.wait(waiting, timeout=remaining,
                                             return_when=asyncio.FIRST_COMPLETED)
                if future in done:
                    if future.cancelled():
                        raise ClusterError("the cluster node was stopped while a request was in flight")
                    msg = future.result()
                    if msg.headers and msg.headers.get("Status") == "503":
                        return None  # no responders: the owner is not (yet, or any more) subscribed
                    try:
                        return decode_reply(msg.data)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        raise ClusterError(f"malformed reply from node {owner!r}") from None
                if not done:
                    return None
                shards = self._watcher.shards
                now_map = shards.shard_map if shards is not None else None
                if now_map is not None and now_map.members.get(owner) != incarnation:
                    return None  # the owner failed or restarted: stop waiting, go to the new owner
        finally:
            self._api.forget(token)
