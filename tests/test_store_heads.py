"""Reading many actors' heads at once (``get_heads``) and the repository loads built on it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import nats
import pytest

from aether import ActorHead, ActorSnapshot, Event, HeadReader
from aether.aggregate import Aggregate, Repository, applies
from aether.errors import CorruptEventError, InvalidNameError, StoreUnavailableError
from aether.names import encode_token
from aether.store import InMemoryEventStore, JetStreamEventStore
from aether.testing import NatsCluster, wait_for
from test_store_cluster import _create

pytestmark = pytest.mark.anyio


async def _store(nats_url: str, name: str, **options: Any) -> tuple[Any, JetStreamEventStore]:
    """A store on a stream of its own (a fresh name per call: the server is shared by the session)."""
    nc = await nats.connect(nats_url)
    store = await JetStreamEventStore.create(nc, f"{name}{uuid.uuid4().hex[:8]}", **options)
    return nc, store


async def _populate(store: Any, actors: int, *, events: int = 3, snapshot_every: int = 2) -> dict[str, ActorHead]:
    """``actors`` actors with 1..events events each; every snapshot_every-th actor snapshotted
    at its second-to-last version. Returns what get_heads must answer."""
    expected: dict[str, ActorHead] = {}
    for i in range(actors):
        actor = f"acc-{i}"
        count = 1 + i % events
        for v in range(1, count + 1):
            await store.save_event(Event("E", actor, v, {"v": v}))
        snapshot = None
        if i % snapshot_every == 0 and count > 1:
            snapshot = ActorSnapshot(actor, count - 1, {"upto": count - 1})
            await store.save_snapshot(snapshot)
        expected[actor] = ActorHead(count, snapshot)
    return expected


def _same(heads: dict[str, ActorHead], expected: dict[str, ActorHead]) -> None:
    assert set(heads) == set(expected)
    for actor, head in expected.items():
        got = heads[actor]
        assert got.version == head.version, actor
        if head.snapshot is None:
            assert got.snapshot is None, actor
        else:
            assert got.snapshot is not None, actor
            assert (got.snapshot.version, got.snapshot.state) == (head.snapshot.version, head.snapshot.state), actor


# ---- the store --------------------------------------------------------------------------------------
async def test_heads_of_many_actors_in_batches_match_one_by_one(nats_url: str) -> None:
    nc, store = await _store(nats_url, "HEADS1")
    try:
        expected = await _populate(store, 700)  # more than one batch of 512 actors
        expected["never-written"] = ActorHead(0, None)
        queried = [*list(expected), "acc-3", "acc-3"]  # a repeated id is answered once
        heads = await store.get_heads(queried)
        _same(heads, expected)
        for actor in ("acc-0", "acc-1", "acc-699", "never-written"):  # the one-by-one reads agree
            assert heads[actor].version == await store.get_latest_version(actor)
            snapshot = await store.get_latest_snapshot(actor)
            assert (snapshot.version if snapshot else None) == (heads[actor].snapshot.version  # type: ignore[union-attr]
                                                                if heads[actor].snapshot else None)
        assert await store.get_heads([]) == {}
        # the version the heads read is what the next append expects (no extra lookup, no conflict)
        await store.save_event(Event("E", "acc-5", heads["acc-5"].version + 1))
        assert (await store.get_heads(["acc-5"]))["acc-5"].version == heads["acc-5"].version + 1
    finally:
        await store.aclose()
        await nc.close()


async def test_heads_past_the_reply_byte_limit_are_asked_one_by_one(nats_url: str) -> None:
    nc, store = await _store(nats_url, "HEADS2", max_reply_bytes=600)  # the server stops after a few messages
    try:
        expected = await _populate(store, 40, snapshot_every=1)
        asked: list[str] = []
        one_by_one = store.get_latest_version

        async def counted(actor_id: str) -> int:
            asked.append(actor_id)
            return await one_by_one(actor_id)

        store.get_latest_version = counted  # type: ignore[method-assign]
        _same(await store.get_heads(list(expected)), expected)
        assert 0 < len(asked) < len(expected)  # the rest came in the batched reply
    finally:
        await store.aclose()
        await nc.close()


async def test_heads_of_a_partitioned_store(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    store = await JetStreamEventStore.create(nc, f"HEADSP{uuid.uuid4().hex[:8]}", partitions=3)
    try:
        expected = await _populate(store, 60)
        assert len({store.partition_of(a) for a in expected}) == 3
        _same(await store.get_heads(list(expected)), expected)
    finally:
        await store.aclose()
        await nc.close()


async def test_heads_refuse_a_bad_id_before_any_io_and_name_a_corrupt_message(nats_url: str) -> None:
    nc, store = await _store(nats_url, "HEADS3")
    try:
        await store.save_event(Event("E", "good", 1))
        await nc.publish(f"aether.{store.stream}.e.{encode_token('bad-event')}", b"not an event")
        await nc.publish(f"aether.{store.stream}.s.{encode_token('bad-snapshot')}", b"not a snapshot")
        await nc.flush()
        with pytest.raises(CorruptEventError, match="bad-event"):
            await store.get_heads(["good", "bad-event"])
        with pytest.raises(CorruptEventError, match="bad-snapshot"):
            await store.get_heads(["good", "bad-snapshot"])
        assert (await store.get_heads(["good"]))["good"].version == 1
        await nc.close()
        with pytest.raises(InvalidNameError):
            await store.get_heads(["good", ""])
        with pytest.raises(StoreUnavailableError):
            await store.get_heads(["good"])
    finally:
        await store.aclose()
        await nc.close()


async def test_heads_on_an_r3_stream_are_the_leaders_right_after_writes(
        nats_cluster_factory: Callable[..., NatsCluster]) -> None:
    cluster = nats_cluster_factory(3)
    conns = [await nats.connect(servers=[url]) for url in cluster.urls]
    try:
        stores = [await _create(nc, "HEADSR3") for nc in conns]
        for round_ in range(1, 6):
            for i, store in enumerate(stores):  # each server's client writes, then every one reads
                await store.save_event(Event("E", f"acc-{i}", round_))
                if round_ == 3:
                    await store.save_snapshot(ActorSnapshot(f"acc-{i}", 3, {"r": 3}))
            for store in stores:
                heads = await store.get_heads([f"acc-{i}" for i in range(3)] + ["none"])
                assert [heads[f"acc-{i}"].version for i in range(3)] == [round_] * 3
                assert heads["none"] == ActorHead(0, None)
                if round_ >= 3:
                    assert all(heads[f"acc-{i}"].snapshot is not None for i in range(3))
    finally:
        for nc in conns:
            await nc.close()


async def test_in_memory_heads() -> None:
    store = InMemoryEventStore()
    assert isinstance(store, HeadReader)
    expected = await _populate(store, 20)
    expected["none"] = ActorHead(0, None)
    _same(await store.get_heads(list(expected)), expected)
    with pytest.raises(InvalidNameError):
        await store.get_heads([""])


# ---- the repository: concurrent loads share batched head reads ---------------------------------------
class Counter(Aggregate):
    total: int

    def __init__(self, actor_id: str) -> None:
        super().__init__(actor_id)
        self.total = 0

    @applies("E")
    def _on_e(self, event: Event) -> None:
        self.total += int(event.data.get("v", 0))


def _envelope(total: int) -> dict[str, Any]:
    """What Counter.to_snapshot() writes for that state."""
    return {"aggregate": Counter.aggregate_type, "schema": Counter.snapshot_version, "state": {"total": total},
            "commands": []}


class CountingStore:
    """Wraps a store; records the batches ``get_heads`` was asked for and the history reads."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches: list[list[str]] = []
        self.reads: list[tuple[str, int]] = []

    async def get_heads(self, actor_ids: Sequence[str]) -> dict[str, ActorHead]:
        self.batches.append(list(actor_ids))
        return dict(await self.inner.get_heads(actor_ids))

    async def get_events(self, actor_id: str, from_version: int = 0) -> list[Event]:
        self.reads.append((actor_id, from_version))
        return list(await self.inner.get_events(actor_id, from_version))

    # spelled out, not left to __getattr__: since Python 3.12 isinstance() against a runtime
    # protocol (SnapshotStore, the repository's check) looks methods up statically
    async def save_snapshot(self, snapshot: ActorSnapshot) -> None:
        await self.inner.save_snapshot(snapshot)

    async def get_latest_snapshot(self, actor_id: str) -> ActorSnapshot | None:
        snapshot: ActorSnapshot | None = await self.inner.get_latest_snapshot(actor_id)
        return snapshot

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _expected_totals(store: Any, actors: list[str]) -> dict[str, tuple[int, int]]:
    totals: dict[str, tuple[int, int]] = {}
    for actor in actors:
        events = await store.get_events(actor)
        totals[actor] = (len(events), sum(int(e.data.get("v", 0)) for e in events))
    return totals


async def test_concurrent_loads_read_heads_in_batches_and_equal_plain_loads(nats_url: str) -> None:
    nc, inner = await _store(nats_url, "HEADSREPO")
    try:
        actors = [f"acc-{i}" for i in range(300)]
        for i, actor in enumerate(actors):
            for v in range(1, 2 + i % 4):
                await inner.save_event(Event("E", actor, v, {"v": v}))
        for actor in actors[::3]:  # a third up to date with a snapshot, a third with events after one
            events = await inner.get_events(actor)
            await inner.save_snapshot(ActorSnapshot(actor, len(events), _envelope(sum(e.data["v"] for e in events))))
        for actor in actors[1::3]:
            await inner.save_snapshot(ActorSnapshot(actor, 1, _envelope(1)))
        expected = await _expected_totals(inner, actors)
        store = CountingStore(inner)
        repo = Repository(store, Counter)
        assert repo.snapshots is store  # the snapshots live in the store: heads carry them
        loaded = await asyncio.gather(*(repo.load(actor) for actor in actors))
        assert {a.actor_id: (a.version, a.total) for a in loaded} == expected
        assert sum(len(b) for b in store.batches) == len(actors)
        assert len(store.batches) <= 3  # one burst: a few batches, not one read per actor
        # only actors whose history goes past their snapshot read events, and from after it
        snapshotted_up_to_date = set(actors[::3])
        assert all(actor not in snapshotted_up_to_date for actor, _ in store.reads)
        assert all(from_version == 2 for actor, from_version in store.reads if actor in set(actors[1::3]))
        # a lone load is read at once (a batch of one)
        store.batches.clear()
        assert (await repo.load("acc-7")).version == expected["acc-7"][0]
        assert store.batches == [["acc-7"]]
    finally:
        await inner.aclose()
        await nc.close()


async def test_a_corrupt_actor_in_a_batch_fails_only_its_own_load(nats_url: str) -> None:
    nc, store = await _store(nats_url, "HEADSBAD")
    try:
        for i in range(10):
            await store.save_event(Event("E", f"ok-{i}", 1, {"v": 1}))
        await nc.publish(f"aether.{store.stream}.e.{encode_token('broken')}", b"garbage")
        await nc.flush()
        repo = Repository(store, Counter)
        results = await asyncio.gather(*(repo.load(a) for a in ["broken", *[f"ok-{i}" for i in range(10)]]),
                                       return_exceptions=True)
        assert isinstance(results[0], CorruptEventError)
        assert all(isinstance(r, Counter) and r.version == 1 for r in results[1:])
    finally:
        await store.aclose()
        await nc.close()


async def test_loads_racing_appends_are_never_behind_what_was_acknowledged_before_them(nats_url: str) -> None:
    nc, store = await _store(nats_url, "HEADSRACE")
    try:
        repo = Repository(store, Counter)
        actors = [f"acc-{i}" for i in range(40)]
        acknowledged: dict[str, int] = dict.fromkeys(actors, 0)
        stop = asyncio.Event()

        async def writer(actor: str) -> None:
            v = 0
            while not stop.is_set():
                v += 1
                await store.save_event(Event("E", actor, v, {"v": 1}))
                acknowledged[actor] = v
                await asyncio.sleep(0)

        async def reader() -> None:
            while not stop.is_set():
                floor = dict(acknowledged)
                loaded = await asyncio.gather(*(repo.load(a) for a in actors))
                for aggregate in loaded:
                    assert aggregate.version >= floor[aggregate.actor_id]
                    assert aggregate.total == aggregate.version  # every event once, none skipped

        writers = [asyncio.ensure_future(writer(a)) for a in actors]
        readers = [asyncio.ensure_future(reader()) for _ in range(3)]
        await wait_for(lambda: min(acknowledged.values()) >= 15, timeout=60)
        stop.set()
        await asyncio.gather(*writers, *readers)
    finally:
        await store.aclose()
        await nc.close()


async def test_a_separate_snapshot_store_keeps_plain_loads(nats_url: str) -> None:
    nc, store = await _store(nats_url, "HEADSSEP")
    try:
        snapshots = InMemoryEventStore()
        await store.save_event(Event("E", "a", 1, {"v": 5}))
        await store.save_event(Event("E", "a", 2, {"v": 5}))
        await snapshots.save_snapshot(ActorSnapshot("a", 1, _envelope(5)))
        repo = Repository(store, Counter, snapshots=snapshots)
        loaded = await repo.load("a")
        assert (loaded.version, loaded.total) == (2, 10)
    finally:
        await store.aclose()
        await nc.close()
