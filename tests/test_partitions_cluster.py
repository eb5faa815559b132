"""Partitioned namespaces on a real 3-server NATS cluster (R3): leader spread, fault isolation, catch-up."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import nats
import pytest

from aether import Event
from aether._nats import JsApi
from aether.errors import AetherError, InvalidInputError
from aether.projection import CatchUpSubscription, EventSource, Projection, ProjectionOptions, ProjectionRunner
from aether.store import JetStreamEventStore
from aether.store.placement import PartitionPlacement, plan_moves
from aether.testing import NatsCluster, wait_for

pytestmark = pytest.mark.anyio


async def _create(nc: Any, name: str, **options: Any) -> JetStreamEventStore:
    # the meta leader may still be settling right after the cluster starts
    for _ in range(150):
        try:
            return await JetStreamEventStore.create(nc, name, replicas=3, **{"timeout": 2.0, **options})
        except AetherError as exc:
            if isinstance(exc, InvalidInputError):
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("could not create the R3 partition streams")


def _counts(placements: list[PartitionPlacement]) -> Counter[str]:
    return Counter(p.leader for p in placements if p.leader)


async def bunch_leaders(store: JetStreamEventStore, api: JsApi, target: str) -> None:
    """Move (at least 5 of 6) partition leaders onto ``target``: step-downs asking for it, repeated
    for the partitions an election gave to another server (or whose request timed out)."""
    async def moved() -> bool:
        placements = await store.placement()
        if _counts(placements).get(target, 0) >= 5:
            return True
        for p in placements:
            if p.leader is not None and p.leader != target:
                with contextlib.suppress(AetherError):
                    await api.api(f"STREAM.LEADER.STEPDOWN.{p.stream}", {"placement": {"preferred": target}})
        return False

    await wait_for(moved, timeout=120, interval=0.5, message=f"leaders to move onto {target}")


def test_plan_moves_spreads_evenly_with_fewest_moves() -> None:
    servers = ("n1", "n2", "n3")

    def part(i: int, leader: str) -> PartitionPlacement:
        return PartitionPlacement(f"s{i}", leader, tuple((s, True) for s in servers if s != leader))

    bunched = [part(i, "n1") for i in range(6)]
    moves = plan_moves(bunched)
    assert len(moves) == 4
    after = Counter({"n1": 6})
    for _, target in moves:
        after["n1"] -= 1
        after[target] += 1
    assert sorted(after.values()) == [2, 2, 2]
    assert plan_moves([part(0, "n1"), part(1, "n2"), part(2, "n3"), part(3, "n1")]) == []
    # a replica that is not current is never chosen
    stale = [PartitionPlacement(f"s{i}", "n1", (("n2", False), ("n3", False))) for i in range(3)]
    assert plan_moves(stale) == []
    assert plan_moves([PartitionPlacement("s0", None)]) == []


async def test_leaders_spread_and_rebalance(nats_cluster_factory: Callable[..., NatsCluster]) -> None:
    cluster = nats_cluster_factory(3)
    nc = await nats.connect(servers=cluster.urls)
    api = JsApi(nc)
    try:
        store = await _create(nc, "orders", namespace="acme", partitions=6)
        placements = await store.placement()
        assert [p.stream for p in placements] == list(store.streams)
        counts = _counts(placements)
        assert len(counts) >= 2, counts  # spread at creation
        assert max(counts.values()) - min(counts.values()) <= 1 or len(counts) == 3
        # bunch every leader on one server, then rebalance
        target = cluster.servers[0].server_name
        assert target is not None
        await bunch_leaders(store, api, target)
        after = _counts(await store.rebalance_leaders(timeout=60))
        assert sorted(after.values()) == [2, 2, 2], after
        adopted = await JetStreamEventStore.create(nc, "orders", namespace="acme")
        assert adopted.partitions == 6
        with pytest.raises(InvalidInputError):
            await JetStreamEventStore.create(nc, "orders", namespace="acme", partitions=3)
    finally:
        await api.aclose()
        await nc.close()


async def test_server_kill_stalls_only_its_partitions_and_loses_nothing(
        nats_cluster_factory: Callable[..., NatsCluster]) -> None:
    cluster = nats_cluster_factory(3)
    setup = await nats.connect(servers=cluster.urls)
    try:
        store = await _create(setup, "acct", partitions=6, timeout=1.0)
        placements = await store.rebalance_leaders(timeout=60)
        counts = _counts(placements)
        victim_name, _ = counts.most_common(1)[0]
        victim = next(s for s in cluster.servers if s.server_name == victim_name)
        victim_parts = {i for i, p in enumerate(placements) if p.leader == victim_name}
        assert 0 < len(victim_parts) < 6
    finally:
        await setup.close()
    # the writers connect only to survivors: a client reconnect would pause every actor alike
    survivors = [s.url for s in cluster.servers if s is not victim]
    nc = await nats.connect(servers=survivors, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        store = await JetStreamEventStore.create(nc, "acct", timeout=1.0)
        assert store.partitions == 6
        actors = [f"a-{i}" for i in range(60)]
        acked: dict[str, list[tuple[int, str, float]]] = defaultdict(list)  # version, id, ack time
        stop = asyncio.Event()
        killed_at: list[float] = []

        async def writer(actor: str) -> None:
            version = 1
            while not stop.is_set():
                event = Event("Tick", actor, version, {"n": version})
                while True:  # retry the same event (same id) until it is stored: idempotent
                    try:
                        await store.save_event(event)
                        break
                    except AetherError:
                        if stop.is_set():
                            return
                        await asyncio.sleep(0.05)
                acked[actor].append((version, event.id, time.monotonic()))
                version += 1

        tasks = [asyncio.ensure_future(writer(a)) for a in actors]
        await wait_for(lambda: all(len(acked[a]) >= 3 for a in actors), timeout=120, message="writes before the kill")
        await victim.kill()
        killed_at.append(time.monotonic())
        t0 = killed_at[0]

        def resumed(actor: str) -> bool:
            return any(t > t0 for _, _, t in acked[actor])

        victim_actors = [a for a in actors if store.partition_of(a) in victim_parts]
        other_actors = [a for a in actors if store.partition_of(a) not in victim_parts]
        assert victim_actors and other_actors
        await wait_for(lambda: all(resumed(a) for a in actors), timeout=120,
                       message="every actor to write again after the kill")
        recovered = min(min(t for _, _, t in acked[a] if t > t0) for a in victim_actors)
        await wait_for(lambda: all(sum(1 for _, _, t in acked[a] if t > recovered) >= 3 for a in actors),
                       timeout=120, message="writes after the victim's partitions recovered")
        stop.set()
        await asyncio.gather(*tasks)

        def longest_pause(actor: str) -> float:
            times = [t0] + [t for _, _, t in acked[actor] if t > t0]
            return max(b - a for a, b in itertools.pairwise(times))

        victim_pause = max(longest_pause(a) for a in victim_actors)
        other_pause = max(longest_pause(a) for a in other_actors)
        # the partitions the victim did not lead kept accepting writes while its own were
        # electing new leaders: they paused less than the victim's partitions did
        assert other_pause < victim_pause, (other_pause, victim_pause)
        # nothing acknowledged is lost, nothing is duplicated
        for actor in actors:
            stored = await store.get_events(actor)
            assert [e.version for e in stored] == list(range(1, len(stored) + 1))
            ids = {e.version: e.id for e in stored}
            for version, event_id, _ in acked[actor]:
                assert ids.get(version) == event_id, (actor, version)
        total = sum(len(v) for v in acked.values())
        # catch-up and a projection runner over the 6 partitions see every event once, in order
        seen: Counter[str] = Counter()
        order: dict[str, list[int]] = defaultdict(list)
        async with CatchUpSubscription(nc, EventSource.of(store)) as sub:
            while len(seen) < total:
                item = await asyncio.wait_for(sub.__anext__(), 60)
                seen[item.event.id] += 1
                order[item.event.actor_id].append(item.event.version)
        assert max(seen.values()) == 1
        assert all(order[a] == [v for v, _, _ in acked[a]] for a in actors)
        handled: Counter[tuple[str, int]] = Counter()
        projection = Projection("ticks")

        @projection.on("Tick")
        async def tick(event: Event, position: int) -> None:
            handled[(event.actor_id, event.version)] += 1

        # its checkpoint bucket is created now, with one server down: the meta leader may be
        # re-electing, and R1 is all two servers can place for sure
        options = ProjectionOptions(heartbeat=0.5, replicas=1, checkpoint_bucket="partition-kill-test")
        for _ in range(60):
            handled.clear()
            runner = ProjectionRunner(nc, projection, store, options=options)
            try:
                await runner.start()
                break
            except AetherError:
                await runner.stop()
                await asyncio.sleep(0.5)
        try:
            await runner.catch_up(timeout=120)
        finally:
            await runner.stop()
        assert len(handled) == total and max(handled.values()) == 1
    finally:
        await nc.close()
