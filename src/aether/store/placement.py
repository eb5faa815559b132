"""Where the partitions of a namespace are led on a NATS cluster, and spreading their leaders.

Each partition stream is its own Raft group with its own leader; every write of a partition
goes through its leader's server. JetStream chooses leaders on its own, so they can bunch up on
one server. :func:`plan_moves` computes the fewest leader moves that leave every server with
``floor(P/S)`` or ``ceil(P/S)`` leaders (S = the servers holding replicas); :func:`rebalance`
performs them with ``$JS.API.STREAM.LEADER.STEPDOWN.<stream>`` and a preferred server in the
request's placement (nats-server 2.11+; older servers elect a random replica, so the plan is
retried a few rounds and may end less balanced).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aether._nats import JetStreamApiError, JsApi
from aether.errors import AetherError, AetherTimeoutError

__all__ = ["PartitionPlacement", "current_placement", "placement_of", "plan_moves", "rebalance"]

log = logging.getLogger("aether.store")


@dataclass(frozen=True, slots=True)
class PartitionPlacement:
    """Where one partition stream lives.

    Attributes:
        stream: the partition's stream name.
        leader: the server leading it (``None``: no leader now, or not clustered).
        replicas: the other servers holding a copy, with whether each is current.
    """

    stream: str
    leader: str | None
    replicas: tuple[tuple[str, bool], ...] = ()

    @property
    def candidates(self) -> tuple[str, ...]:
        """Servers that may lead it: the leader and every current replica."""
        current = tuple(name for name, ok in self.replicas if ok)
        return ((self.leader,) if self.leader else ()) + current


def placement_of(info: Mapping[str, Any]) -> PartitionPlacement:
    """The placement in a raw ``STREAM.INFO`` reply."""
    cluster = info.get("cluster") or {}
    replicas = tuple((str(r.get("name", "")), bool(r.get("current")) and not r.get("offline"))
                     for r in cluster.get("replicas") or [])
    return PartitionPlacement(str(info.get("config", {}).get("name", "")), cluster.get("leader") or None, replicas)


def plan_moves(placements: Sequence[PartitionPlacement]) -> list[tuple[str, str]]:
    """``(stream, new leader)`` moves that spread the leaders evenly (fewest moves, greedy).

    A partition moves only to a server already holding a current replica of it. The result
    leaves no partition whose leader has two or more leaders more than one of its candidates.
    """
    leaders = {p.stream: p.leader for p in placements if p.leader}
    counts: Counter[str] = Counter(leaders.values())
    for p in placements:
        for name in p.candidates:
            counts.setdefault(name, 0)
    moves: dict[str, str] = {}
    while True:
        best: tuple[int, str, str] | None = None
        for p in placements:
            current = leaders.get(p.stream)
            if current is None:
                continue
            for name in p.candidates:
                gain = counts[current] - counts[name]
                if name != current and gain >= 2 and (best is None or gain > best[0]):
                    best = (gain, p.stream, name)
        if best is None:
            break
        _, stream, target = best
        counts[leaders[stream]] -= 1
        counts[target] += 1
        leaders[stream] = target
        moves[stream] = target
    original = {p.stream: p.leader for p in placements}
    return [(stream, target) for stream, target in moves.items() if original.get(stream) != target]


async def current_placement(api: JsApi, streams: Sequence[str]) -> list[PartitionPlacement]:
    """The placement of every stream; one that does not answer now (electing a leader: its info
    request times out) has no leader. Raises only when no stream answers.

    Raises:
        AetherTimeoutError / StoreUnavailableError / StoreError: no stream answered.
    """
    async def one(name: str) -> PartitionPlacement | AetherError:
        try:
            return placement_of(await api.api(f"STREAM.INFO.{name}"))
        except AetherTimeoutError as exc:
            return exc

    results = await asyncio.gather(*(one(name) for name in streams))
    placements = [r if isinstance(r, PartitionPlacement) else PartitionPlacement(name, None)
                  for name, r in zip(streams, results, strict=True)]
    if results and all(isinstance(r, AetherError) for r in results):
        failed = results[0]
        assert isinstance(failed, AetherError)
        raise failed
    return placements


async def _wait_leader(api: JsApi, stream: str, previous: str, deadline: float) -> str | None:
    loop = asyncio.get_running_loop()
    leader: str | None = None
    while loop.time() < deadline:
        try:
            leader = placement_of(await api.api(f"STREAM.INFO.{stream}")).leader
        except AetherError:
            leader = None
        if leader is not None and leader != previous:
            return leader
        await asyncio.sleep(0.05)
    return leader


async def rebalance(api: JsApi, streams: Sequence[str], *, timeout: float = 30.0,
                    rounds: int = 3) -> list[PartitionPlacement]:
    """Move partition leaders so each server leads an even share; returns the placement after.

    Does nothing on a single server or with one replica (no choice of leader).

    Raises:
        AetherTimeoutError / StoreUnavailableError / StoreError: server trouble.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    placements = await current_placement(api, streams)
    for _ in range(rounds):
        moves = plan_moves(placements)
        if not moves:
            break
        current = {p.stream: p.leader for p in placements}
        for stream, target in moves:
            if loop.time() >= deadline:
                break
            try:
                await api.api(f"STREAM.LEADER.STEPDOWN.{stream}", {"placement": {"preferred": target}})
            except JetStreamApiError as exc:
                log.warning("moving the leader of %s to %s failed: %s", stream, target, exc)
                continue
            now = await _wait_leader(api, stream, current[stream] or "", deadline)
            log.info("stream %s: leader %s -> %s (asked for %s)", stream, current[stream], now, target)
        placements = await current_placement(api, streams)
    return placements
