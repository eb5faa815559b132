"""The dashboard's view of a cluster: read it periodically, derive rates and events, publish snapshots.

:class:`Collector` reads, at every ``interval`` (and at once when a cluster key changes):

* the cluster's KV bucket, exactly as ``aether cluster status --json`` does
  (:func:`aether.cluster.state.read_cluster_state`, with every member pinged);
* every stream (``STREAM.LIST``), the projections' checkpoints, leases and dead letters
  (:mod:`aether.dashboard.streams`);
* each member's ``/metrics`` endpoint when its heartbeat advertises one (metadata ``metrics``),
  for its append count.

From two successive reads it derives per-node request and append rates, per-stream message
rates, and *cluster events*: joins, leaves, failures, restarts, unreachable members, leader
changes and shard moves. It only reads: it joins nothing and owns nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aether._nats import JsApi
from aether.cluster.discovery import REASON_HEADER
from aether.cluster.naming import bucket_name, validate_cluster_name
from aether.cluster.state import ClusterState, read_cluster_state
from aether.dashboard.streams import StreamView, list_streams, read_projections, read_streams
from aether.errors import AetherError, InvalidInputError, InvalidNameError
from aether.names import decode_token

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["Collector", "ClusterEvent", "diff_events"]

logger = logging.getLogger("aether.dashboard")

_MOVE_HIGHLIGHT = 10.0
"""Seconds a shard counts as "just moved" after its owner changed."""


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """Something that happened in the cluster, as seen between two reads."""

    at: str
    kind: str
    text: str
    node: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "text": self.text, "node": self.node}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def diff_events(before: ClusterState | None, after: ClusterState,
                departures: dict[str, str] | None = None) -> list[ClusterEvent]:
    """The cluster events that explain the change from ``before`` to ``after``.

    ``departures`` maps node ids to the reason written with their heartbeat's tombstone
    (``leave`` or ``failed``); without one, a member that was ``leaving`` left and any other failed.
    """
    at = _now_iso()
    if before is None:
        leader = f"; leader {after.leader_id} (term {after.term})" if after.leader_id else "; no leader"
        return [ClusterEvent(at, "watch", f"watching cluster {after.cluster}: {len(after.members)} members{leader}")]
    events: list[ClusterEvent] = []
    old = {m.id: m for m in before.members}
    new = {m.id: m for m in after.members}
    for node_id, member in new.items():
        previous = old.get(node_id)
        if previous is None:
            events.append(ClusterEvent(at, "join", f"{node_id} joined ({member.address})", node_id))
        elif previous.incarnation != member.incarnation:
            events.append(ClusterEvent(at, "restart", f"{node_id} rejoined as a new incarnation", node_id))
        else:
            if previous.status != member.status:
                events.append(ClusterEvent(at, member.status, f"{node_id} is {member.status}", node_id))
            if previous.reachable is not False and member.reachable is False:
                events.append(ClusterEvent(at, "unreachable", f"{node_id} does not answer", node_id))
            elif previous.reachable is False and member.reachable:
                events.append(ClusterEvent(at, "reachable", f"{node_id} answers again", node_id))
    for node_id, member in old.items():
        if node_id not in new:
            reason = (departures or {}).get(node_id)
            if reason == "leave" or (reason is None and member.status == "leaving"):
                events.append(ClusterEvent(at, "leave", f"{node_id} left", node_id))
            else:
                events.append(ClusterEvent(at, "failure", f"{node_id} failed (its heartbeat expired)", node_id))
    if (before.leader_id, before.term) != (after.leader_id, after.term):
        if after.leader_id is None:
            events.append(ClusterEvent(at, "leader", f"no leader (was {before.leader_id})", before.leader_id))
        else:
            events.append(ClusterEvent(at, "leader", f"{after.leader_id} leads (term {after.term})", after.leader_id))
    if after.map_version != before.map_version and after.shard_map is not None:
        moved = _moved(before, after)
        handoffs = len(after.shard_map.handoffs)
        text = f"shard map v{after.map_version}: {len(moved)} shards moved"
        if handoffs:
            text += f", {handoffs} in handoff"
        events.append(ClusterEvent(at, "shards", text))
    return events


def _moved(before: ClusterState, after: ClusterState) -> list[int]:
    if after.shard_map is None:
        return []
    old = before.shard_map.owners if before.shard_map is not None else ()
    return [s for s, owner in enumerate(after.shard_map.owners) if s >= len(old) or old[s] != owner]


def _appends_from_metrics(text: str) -> float | None:
    """The sum of ``aether_store_appends_total`` samples in a Prometheus text exposition."""
    total: float | None = None
    for line in text.splitlines():
        if line.startswith("aether_store_appends_total"):
            with contextlib.suppress(ValueError, IndexError):
                total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def _fetch(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read(4 * 1024 * 1024)
    return body.decode(errors="replace")


class Collector:
    """Reads a cluster's state every ``interval`` seconds and keeps the newest snapshot.

    Args:
        nc: a connected nats-py client (not owned).
        cluster: the cluster name.
        interval: seconds between reads (a cluster key change triggers one at once).
        checkpoint_bucket: the projections' checkpoint bucket.
        scrape_metrics: read members' ``/metrics`` endpoints for their append counts.
        max_events: cluster events kept.

    Raises:
        InvalidNameError: bad cluster name.
        InvalidInputError: bad interval.
    """

    def __init__(self, nc: Client, cluster: str = "default", *, interval: float = 1.0,
                 checkpoint_bucket: str = "aether-projections", scrape_metrics: bool = True,
                 max_events: int = 200) -> None:
        validate_cluster_name(cluster)
        if not interval > 0:
            raise InvalidInputError(f"interval must be > 0, got {interval!r}")
        self.cluster = cluster
        self.interval = interval
        self._nc = nc
        self._api = JsApi(nc)
        self._checkpoint_bucket = checkpoint_bucket
        self._scrape = scrape_metrics
        self._events: deque[ClusterEvent] = deque(maxlen=max_events)
        self._last: ClusterState | None = None
        self._last_time = 0.0
        self._counters: dict[str, tuple[float, float, float | None]] = {}
        self._seqs: dict[str, tuple[float, int]] = {}
        self._moved_at: dict[int, float] = {}
        self._departures: dict[str, str] = {}
        self._snapshot: dict[str, Any] | None = None
        self._version = 0
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subs: list[Any] = []

    @property
    def snapshot(self) -> dict[str, Any] | None:
        """The newest state (``None`` before the first read)."""
        return self._snapshot

    @property
    def version(self) -> int:
        """Counts the snapshots made so far."""
        return self._version

    async def start(self) -> None:
        """Read once and keep reading in the background.

        Raises:
            ClusterError: the cluster does not exist (yet): the collector keeps trying.
            PermissionDeniedError / StoreUnavailableError: as the first read.
        """
        bucket = bucket_name(self.cluster)
        for key in ("leader", "map", "node.*"):
            with contextlib.suppress(Exception):
                self._subs.append(await self._nc.subscribe(f"$KV.{bucket}.{key}", cb=self._on_hint))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aether-dashboard-collector")
        await self.wait_for_version(1, timeout=max(10.0, self.interval * 5))

    async def _on_hint(self, msg: Any) -> None:
        headers = msg.headers or {}
        if headers.get("KV-Operation") in ("DEL", "PURGE") and ".node." in msg.subject:
            with contextlib.suppress(InvalidNameError):
                node_id = decode_token(msg.subject.rsplit(".", 1)[1])
                self._departures[node_id] = headers.get(REASON_HEADER, "")
        self._wake.set()

    async def wait_for_version(self, version: int, *, timeout: float) -> dict[str, Any] | None:
        """Wait until snapshot number ``version`` exists (or ``timeout``); return the newest snapshot."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self._version >= version)
        return self._snapshot

    async def aclose(self) -> None:
        """Stop reading (the connection is left open)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []
        await self._api.aclose()

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("dashboard: reading the cluster failed")
            self._wake.clear()
            # a hint wakes the next read early, but never more often than every 0.1 s
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    async def refresh(self) -> dict[str, Any]:
        """Read everything once, publish and return the new snapshot."""
        problems: list[str] = []
        now = time.monotonic()
        try:
            state: ClusterState | None = await read_cluster_state(self._nc, self.cluster, ping=True)
        except AetherError as exc:
            state = None
            problems.append(f"cluster: {exc}")
        streams: list[StreamView] = []
        projections: list[dict[str, Any]] = []
        try:
            infos = await list_streams(self._api)
            streams = read_streams(infos)
            projections = [p.to_json() for p in await read_projections(
                self._api, infos, streams, checkpoint_bucket=self._checkpoint_bucket, problems=problems)]
        except AetherError as exc:
            problems.append(f"streams: {exc}")
        nodes: dict[str, Any] = {}
        if state is not None:
            for event in diff_events(self._last, state, self._departures):
                self._events.append(event)
            present = {m.id for m in state.members}
            self._departures = {n: r for n, r in self._departures.items() if n in present}  # used: dropped
            for shard in _moved(self._last, state) if self._last is not None else []:
                self._moved_at[shard] = now
            nodes = await self._node_rates(state, now)
            self._last = state
        snapshot = {
            "cluster_name": self.cluster,
            "generated_at": _now_iso(),
            "cluster": state.to_json() if state is not None else None,
            "shard_map": self._shard_map(state, now),
            "nodes": nodes,
            "streams": [self._stream_json(s, now) for s in streams],
            "namespaces": _namespaces(streams),
            "projections": projections,
            "events": [e.to_json() for e in reversed(self._events)],
            "problems": problems,
        }
        async with self._changed:
            self._snapshot = snapshot
            self._version += 1
            self._changed.notify_all()
        return snapshot

    def _shard_map(self, state: ClusterState | None, now: float) -> dict[str, Any] | None:
        if state is None or state.shard_map is None:
            return None
        shard_map = state.shard_map
        for shard, when in list(self._moved_at.items()):
            if now - when > _MOVE_HIGHLIGHT:
                del self._moved_at[shard]
        return {
            "version": shard_map.version, "term": shard_map.term, "shard_count": shard_map.shard_count,
            "owners": list(shard_map.owners),
            "handoffs": {str(s): h.target for s, h in shard_map.handoffs.items()},
            "moved": sorted(self._moved_at),
        }

    async def _node_rates(self, state: ClusterState, now: float) -> dict[str, Any]:
        appends = await asyncio.gather(*(self._scrape_appends(m.metadata.get("metrics")) for m in state.members))
        nodes: dict[str, Any] = {}
        for member, appended in zip(state.members, appends, strict=True):
            requests = float(member.live["requests"]) if member.live and "requests" in member.live \
                else float(member.requests)
            key = f"{member.id}/{member.incarnation}"
            previous = self._counters.get(key)
            self._counters[key] = (now, requests, appended)
            request_rate = append_rate = None
            if previous is not None and now > previous[0]:
                dt = now - previous[0]
                request_rate = max(0.0, (requests - previous[1]) / dt)
                if appended is not None and previous[2] is not None:
                    append_rate = max(0.0, (appended - previous[2]) / dt)
            nodes[member.id] = {
                "uptime_seconds": max(0.0, (datetime.now(UTC) - member.started_at).total_seconds()),
                "requests_per_second": request_rate, "appends_per_second": append_rate,
                "appends": appended, "metrics_url": member.metadata.get("metrics"),
                "leader": member.id == state.leader_id,
            }
        live = {f"{m.id}/{m.incarnation}" for m in state.members}
        for key in list(self._counters):
            if key not in live:
                del self._counters[key]
        return nodes

    async def _scrape_appends(self, url: str | None) -> float | None:
        if not self._scrape or not url or not url.startswith(("http://", "https://")):
            return None
        try:
            text = await asyncio.to_thread(_fetch, url, min(1.0, self.interval))
        except Exception:
            return None
        return _appends_from_metrics(text)

    def _stream_json(self, stream: StreamView, now: float) -> dict[str, Any]:
        data = stream.to_json()
        previous = self._seqs.get(stream.name)
        self._seqs[stream.name] = (now, stream.last_seq)
        rate = None
        if previous is not None and now > previous[0]:
            rate = max(0.0, (stream.last_seq - previous[1]) / (now - previous[0]))
        data["messages_per_second"] = rate
        return data


def _namespaces(streams: list[StreamView]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str | None], list[StreamView]] = {}
    for stream in streams:
        groups.setdefault((stream.base, stream.namespace), []).append(stream)
    return [{
        "base": base, "namespace": namespace, "streams": [s.name for s in members],
        "partitions": len(members), "messages": sum(s.messages for s in members),
        "bytes": sum(s.bytes for s in members), "leaders": {s.name: s.leader for s in members},
    } for (base, namespace), members in groups.items()]
