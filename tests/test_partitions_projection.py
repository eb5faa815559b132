"""Catch-up subscriptions and projection runners over partitioned namespaces (real nats-server)."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from _projection_helpers import balances_from_store, populate_accounts
from aether.errors import InvalidInputError, StoreError
from aether.event import Event
from aether.projection import (
    CatchUpSubscription,
    Checkpoint,
    CheckpointStore,
    EventSource,
    Projection,
    ProjectionOptions,
    ProjectionRunner,
)
from aether.projection.checkpoint import checkpoint_key
from aether.store import JetStreamEventStore
from aether.testing import wait_for
from test_projection import FAST, Balances
from test_projection_process import Worker, applied_total, read_model

pytestmark = pytest.mark.anyio



async def make_store(nc: Any, name: str, partitions: int = 3) -> JetStreamEventStore:
    return await JetStreamEventStore.create(nc, name, namespace="p", storage="memory", partitions=partitions)


async def all_events(store: JetStreamEventStore) -> dict[str, list[Event]]:
    return {actor: await store.get_events(actor) for actor in await store.actor_ids()}


def test_event_source_of_partitions() -> None:
    source = EventSource("orders", "acme", partitions=3)
    assert source.stream == "orders__acme"
    assert source.streams == ("orders__acme___p0", "orders__acme___p1", "orders__acme___p2")
    assert [p.stream for p in source.parts] == list(source.streams)
    assert all(p.partitions == 1 and p.event_prefix == f"aether.{p.stream}.e." for p in source.parts)
    assert EventSource("orders", "acme").parts == (EventSource("orders", "acme"),)
    assert source != EventSource("orders", "acme")
    with pytest.raises(InvalidInputError):
        EventSource("orders", partitions=0)


async def test_catch_up_reads_every_partition_once_in_actor_order(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=30, per_account=20)
    source = EventSource.of(store)
    assert source.partitions == 3 and source.streams == store.streams
    stored = await all_events(store)
    seen: Counter[str] = Counter()
    order: dict[str, list[int]] = defaultdict(list)
    async with CatchUpSubscription(nc, source) as sub:
        heads = await sub.heads()
        assert len(heads) == 3 and all(h > 0 for h in heads) and await sub.head() == sum(heads)
        while len(seen) < 600:
            item = await asyncio.wait_for(sub.__anext__(), 30)
            assert item.partition == store.partition_of(item.event.actor_id)
            seen[item.event.id] += 1
            order[item.event.actor_id].append(item.event.version)
        assert sub.positions == heads and sub.position == sum(heads)
        # live: appended after the catch-up, still once and in order
        await populate_accounts(store, accounts=30, per_account=2, first_version=21, seed=3)
        while len(seen) < 660:
            item = await asyncio.wait_for(sub.__anext__(), 30)
            seen[item.event.id] += 1
            order[item.event.actor_id].append(item.event.version)
        resume_at = sub.positions
    assert max(seen.values()) == 1
    assert set(seen) == {e.id for events in (await all_events(store)).values() for e in events}
    assert all(versions == list(range(1, 23)) for versions in order.values())
    assert len(stored) == 30
    # resuming from saved positions delivers only what came after
    await store.save_event(Event("Deposited", "late", 1, {"amount": 1}))
    async with CatchUpSubscription(nc, source, after=resume_at) as again:
        item = await asyncio.wait_for(again.__anext__(), 30)
        assert (item.event.actor_id, item.event.version) == ("late", 1)
        assert again.positions[store.partition_of("late")] == item.position


async def test_catch_up_filters_and_bad_positions(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    source = EventSource.of(store)
    with pytest.raises(InvalidInputError):
        CatchUpSubscription(nc, source, after=5)  # one int cannot say where each partition is
    with pytest.raises(InvalidInputError):
        CatchUpSubscription(nc, source, after=[0, 0])
    with pytest.raises(InvalidInputError):
        CatchUpSubscription(nc, source, after=[0, -1, 0])
    for i in range(12):
        await store.save_event(Event("Kept" if i % 2 else "Dropped", f"k-{i}", 1))
        await store.save_event(Event("Kept", f"other-{i}", 1))
    async with CatchUpSubscription(nc, source, event_types=["Kept"], actor_prefix="k-") as sub:
        got = {(await asyncio.wait_for(sub.__anext__(), 30)).event.actor_id for _ in range(6)}
        assert sub.lag >= 0
    assert got == {f"k-{i}" for i in range(1, 12, 2)}


async def test_subscription_close_ends_iteration(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    sub = CatchUpSubscription(nc, EventSource.of(store))
    await sub.start()
    waiting = asyncio.ensure_future(sub.__anext__())
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 10)
    await sub.aclose()
    assert sub.closed


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_runner_applies_every_event_once_in_actor_order(nc: Any, unique_name: str, concurrency: int) -> None:
    store = await make_store(nc, unique_name, partitions=6)
    await populate_accounts(store, accounts=60, per_account=50)
    model = Balances("balances")
    options = ProjectionOptions(checkpoint_every=100, checkpoint_interval=0.1, heartbeat=0.5,
                                concurrency=concurrency)
    async with ProjectionRunner(nc, model.projection, store, options=options) as runner:
        head = await runner.catch_up(timeout=120)
        stats = runner.stats()
        positions = runner.positions
    assert model.as_dict() == await balances_from_store(store)
    assert sum(model.count.values()) == 3000 and model.duplicates == 0
    assert all(v == list(range(1, 51)) for v in model.versions.values())
    assert stats.processed == 3000 and stats.position == head == sum(positions) and stats.lag == 0
    infos = await store.partition_info()
    assert positions == tuple(int(info["state"]["last_seq"]) for info in infos)
    checkpoints = CheckpointStore(nc)
    await checkpoints.open()
    saved = await checkpoints.load(checkpoint_key(store.stream, "balances"))
    assert saved is not None and saved.positions == positions and saved.position == head


async def test_runner_resumes_every_partition_from_its_checkpoint(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=9, per_account=20)
    model = Balances("durable")
    async with ProjectionRunner(nc, model.projection, store, options=FAST) as runner:
        await runner.catch_up(timeout=60)
        first = runner.positions
    await populate_accounts(store, accounts=9, per_account=10, first_version=21, seed=9)
    delivered: list[tuple[str, int]] = []
    resumed = Projection("durable")

    @resumed.on_any
    async def track(event: Event, position: int) -> None:
        delivered.append((event.actor_id, event.version))

    async with ProjectionRunner(nc, resumed, store, options=FAST) as runner:
        assert all(now >= before for now, before in zip(runner.positions, first, strict=True))
        await runner.catch_up(timeout=60)
        with pytest.raises(InvalidInputError):
            await runner.wait_until([1, 2], timeout=1)
        await runner.wait_until(runner.positions, timeout=1)
    assert len(delivered) == 90 and all(version > 20 for _, version in delivered)


async def test_rebuild_and_dead_letters_on_partitions(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=12, per_account=5)
    await store.save_event(Event("Poison", "bad", 1, {"amount": 0}))
    model = Balances("rebuild")

    @model.projection.on("Poison")
    async def poison(event: Event, position: int) -> None:
        raise RuntimeError("cannot apply poison")

    async with ProjectionRunner(nc, model.projection, store, options=FAST) as runner:
        head = await runner.catch_up(timeout=60)
        letters = await runner.dead_letters()
        assert len(letters) == 1 and letters[0].actor_id == "bad"
        assert letters[0].stream == store.streams[store.partition_of("bad")]
        model.balance["acct-0"] += 1_000_000
        await runner.rebuild()
        await runner.wait_until(head, timeout=60)
        assert runner.is_active
        assert runner.stats().dead_lettered == 2  # replayed: dead-lettered again
    expected = await balances_from_store(store)
    del expected["bad"]
    assert model.as_dict() == expected
    assert model.duplicates == 0


async def test_single_stream_checkpoint_cannot_drive_a_partitioned_source(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    checkpoints = CheckpointStore(nc)
    await checkpoints.open()
    await checkpoints.save(checkpoint_key(store.stream, "old"), Checkpoint(42))
    runner = ProjectionRunner(nc, Projection("old"), store, options=FAST)
    with pytest.raises(StoreError, match="single-stream position"):
        await runner.start()
    await runner.stop()
    wrong = ProjectionRunner(nc, Projection("wrong"), EventSource(unique_name, "p", partitions=2), options=FAST)
    with pytest.raises(StoreError, match="records 3"):
        await wrong.start()
    await wrong.stop()
    await checkpoints.save(checkpoint_key(store.stream, "short"), Checkpoint(3, positions=(1, 2)))
    runner = ProjectionRunner(nc, Projection("short"), store, options=FAST)
    with pytest.raises(StoreError, match="holds 2 positions"):
        await runner.start()
    await runner.stop()


async def test_one_lease_for_all_partitions_and_a_survivor_resumes(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=12, per_account=10)
    options = ProjectionOptions(lease_ttl=1, checkpoint_interval=0.1, heartbeat=0.5,
                                lease_bucket=f"leases-{unique_name}"[:60])
    handled: Counter[tuple[str, int]] = Counter()

    def projection() -> Projection:
        p = Projection("exclusive")

        @p.on_any
        async def handle(event: Event, position: int) -> None:
            handled[(event.actor_id, event.version)] += 1

        return p

    r1 = ProjectionRunner(nc, projection(), store, options=options, node_id="n1")
    r2 = ProjectionRunner(nc, projection(), store, options=options, node_id="n2")
    await r1.start()
    await r2.start()
    try:
        async def one_active() -> bool:
            return r1.is_active != r2.is_active

        await wait_for(one_active, message="one active runner", timeout=60.0)
        active, standby = (r1, r2) if r1.is_active else (r2, r1)
        head = await active.catch_up(timeout=60)
        assert await standby.holder() == active.node_id and not standby.is_active
        await active.stop()
        await populate_accounts(store, accounts=12, per_account=5, first_version=11)

        async def took_over() -> bool:
            return standby.is_active

        await wait_for(took_over, message="the standby to take over", timeout=60.0)
        assert standby.position >= head
        await standby.catch_up(timeout=60)
    finally:
        await r1.stop()
        await r2.stop()
    assert len(handled) == 180 and max(handled.values()) == 1


async def test_metrics_on_partitions(nc: Any, unique_name: str) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from aether.metrics.projection import ProjectionMetrics

    registry = prometheus_client.CollectorRegistry()
    metrics = ProjectionMetrics(registry)
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=6, per_account=5)
    await store.save_event(Event("Poison", "bad", 1))
    projection = Projection("metered")

    @projection.on_any
    async def handle(event: Event, position: int) -> None:
        if event.event_type == "Poison":
            raise RuntimeError("permanent")

    def sample(name: str, **labels: str) -> float | None:
        value: float | None = registry.get_sample_value(name, {"projection": "metered", **labels})
        return value

    async with ProjectionRunner(nc, projection, store, options=FAST, observer=metrics) as runner:
        head = await runner.catch_up(timeout=60)
        assert sample("aether_projection_active") == 1
    assert sample("aether_projection_events_processed_total") == 30
    assert sample("aether_projection_retries_total") == 2
    assert sample("aether_projection_dead_letters_total", kind="handler") == 1
    assert sample("aether_projection_position") == head
    assert sample("aether_projection_lag_events") == 0
    assert sample("aether_projection_active") == 0
    metrics.unregister()


async def test_sigkilled_runner_process_restarts_exact_over_partitions(nc: Any, nats_url: str, unique_name: str,
                                                                     tmp_path: Path) -> None:
    """A projection process over 3 partitions is SIGKILLed three times mid-run; the restarted one
    ends with every event applied exactly once (per-actor idempotency by position)."""
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=60, per_account=50)  # 3,000 events
    total = 3000
    db = tmp_path / "balances.sqlite"
    args = ["--url", nats_url, "--stream", unique_name, "--namespace", "p", "--partitions", "3", "--db", str(db),
            "--name", "balances", "--until-caught-up", "--slow"]
    rng = random.Random(7)
    killed_mid_run = 0
    workers: list[Worker] = []
    try:
        for round_no in range(3):
            done_before = applied_total(db)
            threshold = rng.randint(done_before + 100, done_before + 600)
            worker = Worker(tmp_path, f"run{round_no}", args)
            workers.append(worker)

            async def passed_threshold(w: Worker = worker, limit: int = threshold) -> bool:
                return not w.alive() or applied_total(db) >= limit

            await wait_for(passed_threshold, timeout=120, interval=0.005, message="the worker to make progress")
            if worker.alive():
                killed_mid_run += 1
            worker.kill()
            assert worker.proc.returncode in (0, -signal.SIGKILL), worker.err.read_text()
        assert killed_mid_run >= 2 and applied_total(db) < total
        checkpoints = CheckpointStore(nc)
        await checkpoints.open()
        saved = await checkpoints.load(checkpoint_key(store.stream, "balances"))
        assert saved is not None and saved.positions is not None and len(saved.positions) == 3
        final = Worker(tmp_path, "final", args)
        workers.append(final)
        final.proc.wait(240)
        assert final.proc.returncode == 0, final.err.read_text()
    finally:
        for worker in workers:
            worker.kill()
    model = read_model(db)
    expected = await balances_from_store(store)
    assert {actor: (balance, applied) for actor, (balance, applied, _) in model.items()} == expected
    assert sum(applied for _, applied, _ in model.values()) == total


async def test_moving_a_namespace_to_another_partition_count(nc: Any, unique_name: str) -> None:
    """The documented way to re-partition (docs/scaling.md): a projection copies every event, id
    and version unchanged, into a new namespace; copying again after a restart stores nothing twice."""
    old = await JetStreamEventStore.create(nc, unique_name, namespace="v1", storage="memory")
    await populate_accounts(old, accounts=20, per_account=15)
    new = await JetStreamEventStore.create(nc, unique_name, namespace="v2", storage="memory", partitions=4)
    copy = Projection("move-to-v2")

    @copy.on_any
    async def store_again(event: Event, position: int) -> None:
        await new.save_event(event)  # same id and version: a repeat after a restart is a no-op

    async with ProjectionRunner(nc, copy, old, options=FAST) as runner:
        await runner.catch_up(timeout=60)
        await runner.rebuild()  # as if the copier restarted from scratch: nothing is stored twice
        await runner.catch_up(timeout=60)
    assert await all_events(new) == await all_events(old)
    with pytest.raises(InvalidInputError, match="re-partitioning"):
        await JetStreamEventStore.create(nc, unique_name, namespace="v1", partitions=4)


async def test_lease_holder_killed_survivor_resumes_every_partition(nc: Any, nats_url: str, unique_name: str,
                                                                    tmp_path: Path) -> None:
    """Two worker processes compete for one lease over a 3-partition namespace; the holder is
    SIGKILLed, the other takes over from the checkpoint (per partition) and the model is exact."""
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=20, per_account=50)
    db = tmp_path / "balances.sqlite"
    lease_bucket = f"leases-{unique_name}"[:60]
    base = ["--url", nats_url, "--stream", unique_name, "--namespace", "p", "--partitions", "3", "--db", str(db),
            "--name", "balances", "--lease-ttl", "2", "--lease-bucket", lease_bucket]
    workers: list[Worker] = []
    try:
        node_a = Worker(tmp_path, "a", [*base, "--node-id", "node-a"])
        workers.append(node_a)

        async def a_caught_up() -> bool:
            saved = await checkpoints.load(key)
            return applied_total(db) == 1000 and saved is not None and saved.positions == heads

        checkpoints = CheckpointStore(nc)
        await checkpoints.open()
        key = checkpoint_key(store.stream, "balances")
        heads = tuple(int(info["state"]["last_seq"]) for info in await store.partition_info())
        await wait_for(a_caught_up, timeout=120, message="node a to catch up and checkpoint every partition")
        node_b = Worker(tmp_path, "b", [*base, "--node-id", "node-b"])
        workers.append(node_b)
        node_a.kill()
        await populate_accounts(store, accounts=20, per_account=25, first_version=51, seed=99)

        async def b_took_over() -> bool:
            return applied_total(db) == 1500

        await wait_for(b_took_over, timeout=120, message="node b to take over and apply the new events")
        active = [line for line in node_b.lines() if line.startswith("ACTIVE")]
        assert len(active) == 1 and int(active[0].split()[1]) >= sum(heads)  # resumed, not from 0
        node_b.stop()
        assert node_b.proc.returncode == 0, node_b.err.read_text()
    finally:
        for worker in workers:
            worker.kill()
    model = read_model(db)
    expected = await balances_from_store(store)
    assert {actor: (balance, applied) for actor, (balance, applied, _) in model.items()} == expected
