"""Projections and catch-up subscriptions against a real nats-server (in-process parts)."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.request
from collections import Counter, defaultdict
from typing import Any

import pytest

from _projection_helpers import balances_from_store, populate_accounts
from aether.codec import encode_event
from aether.errors import CorruptEventError, InvalidInputError, InvalidNameError, StoreError
from aether.event import ActorSnapshot, Event
from aether.names import encode_token
from aether.projection import (
    CatchUpSubscription,
    CheckpointStore,
    DeadLetterQueue,
    EventSource,
    Projection,
    ProjectionError,
    ProjectionNotActiveError,
    ProjectionOptions,
    ProjectionRunner,
    RetryPolicy,
    StoredEvent,
)
from aether.projection.checkpoint import checkpoint_key
from aether.store import JetStreamEventStore
from aether.testing import NatsServer, wait_for

pytestmark = pytest.mark.anyio

FAST = ProjectionOptions(checkpoint_every=100, checkpoint_interval=0.1, heartbeat=0.5,
                         retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05))


async def make_store(nc: Any, name: str, namespace: str | None = "t") -> JetStreamEventStore:
    return await JetStreamEventStore.create(nc, name, namespace=namespace, storage="memory")


class Balances:
    """An in-memory read model applied idempotently by position (per actor)."""

    def __init__(self, name: str) -> None:
        self.balance: dict[str, int] = defaultdict(int)
        self.count: Counter[str] = Counter()
        self.last: dict[str, int] = {}
        self.versions: dict[str, list[int]] = defaultdict(list)
        self.duplicates = 0
        self.projection = Projection(name)
        self.projection.on("Deposited", "Withdrawn")(self.apply)

        @self.projection.on_rebuild
        async def clear() -> None:
            self.balance.clear()
            self.count.clear()
            self.last.clear()
            self.versions.clear()

    async def apply(self, event: Event, position: int) -> None:
        if self.last.get(event.actor_id, 0) >= position:
            self.duplicates += 1
            return
        amount = event.data["amount"]
        self.balance[event.actor_id] += amount if event.event_type == "Deposited" else -amount
        self.count[event.actor_id] += 1
        self.last[event.actor_id] = position
        self.versions[event.actor_id].append(event.version)

    def as_dict(self) -> dict[str, tuple[int, int]]:
        return {actor: (self.balance[actor], self.count[actor]) for actor in self.count}


async def test_balances_over_10000_events_equal_the_store(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=100, per_account=100)
    model = Balances("balances")
    async with ProjectionRunner(nc, model.projection, store, options=FAST) as runner:
        head = await runner.catch_up(timeout=120)
        stats = runner.stats()
    assert model.as_dict() == await balances_from_store(store)
    assert sum(model.count.values()) == 10_000
    assert all(v == list(range(1, 101)) for v in model.versions.values())  # version order per actor
    assert model.duplicates == 0
    assert stats.position == head and stats.processed == 10_000 and stats.lag == 0
    assert stats.dead_lettered == 0 and stats.retried == 0
    checkpoints = CheckpointStore(nc)
    await checkpoints.open()
    saved = await checkpoints.load(checkpoint_key(EventSource.of(store).stream, "balances"))
    assert saved is not None and saved.position == head  # a graceful stop saves the final position


async def test_live_appends_during_catch_up_are_applied_exactly_once(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=50, per_account=100, prefix="old-")
    seen: Counter[str] = Counter()
    order: dict[str, list[int]] = defaultdict(list)
    midway = asyncio.Event()
    resume = asyncio.Event()
    projection = Projection("live")

    @projection.on_any
    async def record(event: Event, position: int) -> None:
        seen[event.id] += 1
        order[event.actor_id].append(event.version)
        if len(seen) == 2500:  # halfway through the stored history: hold until appends happened
            midway.set()
            await resume.wait()

    async def append_while_catching_up() -> None:
        await midway.wait()
        await populate_accounts(store, accounts=10, per_account=20, prefix="old-", first_version=101, seed=5)
        resume.set()  # the rest is appended while the projection works through the backlog
        await populate_accounts(store, accounts=20, per_account=100, prefix="new-", batch=5, seed=3)

    async with ProjectionRunner(nc, projection, store, options=FAST) as runner:
        await asyncio.wait_for(append_while_catching_up(), 120)
        await runner.catch_up(timeout=120)
    expected_ids = {e.id for actor in await store.actor_ids() for e in await store.get_events(actor)}
    assert set(seen) == expected_ids
    assert len(expected_ids) == 5000 + 200 + 2000
    assert max(seen.values()) == 1  # nothing applied twice
    for actor, versions in order.items():
        assert versions == list(range(1, len(versions) + 1)), actor


async def test_failing_handler_retries_then_dead_letters_and_later_events_flow(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    for v in range(1, 6):
        await store.save_event(Event("Deposited", "a", v, {"amount": v}))
    calls: Counter[int] = Counter()
    handled: list[int] = []
    flaky_failures = 2
    projection = Projection("failing")

    @projection.on_any
    async def handle(event: Event, position: int) -> None:
        calls[event.version] += 1
        if event.version == 2:
            raise RuntimeError("cannot apply version 2")
        if event.version == 4 and calls[4] <= flaky_failures:
            raise ConnectionError("flaky read model")
        handled.append(event.version)

    async with ProjectionRunner(nc, projection, store, options=FAST) as runner:
        await runner.catch_up(timeout=60)
        stats = runner.stats()
        letters = await runner.dead_letters()
    assert handled == [1, 3, 4, 5]
    assert calls[2] == 3 and calls[4] == 3  # max_attempts for the poisoned one; success on the 3rd for the flaky
    assert stats.retried == 2 + 2 and stats.dead_lettered == 1 and stats.processed == 4
    assert len(letters) == 1
    letter = letters[0]
    assert letter.projection == "failing" and letter.attempts == 3
    assert "RuntimeError: cannot apply version 2" in letter.reason
    assert letter.event_type == "Deposited" and letter.actor_id == "a"
    assert letter.event().version == 2 and letter.sequence == 2


async def test_garbage_messages_are_dead_lettered_and_never_crash(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    source = EventSource.of(store)
    js = nc.jetstream()
    await store.save_event(Event("Deposited", "a", 1, {"amount": 1}))
    await js.publish(source.event_prefix + "junk", b"this is not an event")
    await js.publish(source.event_prefix + "empty", b"")
    # a valid event stored under another actor's subject is corrupt as well
    await js.publish(source.event_prefix + encode_token("b"), encode_event(Event("Deposited", "c", 1)))
    await store.save_event(Event("Deposited", "a", 2, {"amount": 2}))
    handled: list[tuple[str, int]] = []
    projection = Projection("garbage")

    @projection.on_any
    async def handle(event: Event, position: int) -> None:
        handled.append((event.actor_id, event.version))

    async with ProjectionRunner(nc, projection, source, options=FAST) as runner:
        await runner.catch_up(timeout=60)
        letters = await runner.dead_letters()
        assert runner.stats().dead_lettered == 3
    assert handled == [("a", 1), ("a", 2)]
    assert [letter.sequence for letter in letters] == [2, 3, 4]
    assert letters[0].payload == b"this is not an event" and letters[0].attempts == 0
    assert "not an Aether event" in letters[0].reason and "empty payload" in letters[1].reason
    assert "stored under subject" in letters[2].reason
    assert all(letter.event_type is None for letter in letters)
    dlq = DeadLetterQueue(nc, source)
    try:
        assert [letter.sequence for letter in await dlq.read()] == [2, 3, 4]  # every projection's
        assert await dlq.read("another projection") == []
        assert [letter.sequence for letter in await dlq.read("garbage", after=letters[0].dlq_sequence)] == [3, 4]
        assert len(await dlq.read("garbage", limit=1)) == 1
    finally:
        await dlq.aclose()
    missing = DeadLetterQueue(nc, EventSource(unique_name, "nothing-here"))
    try:
        assert await missing.read() == []  # no dead-letter stream yet: no letters
    finally:
        await missing.aclose()


async def test_position_is_durable_across_runners(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=5, per_account=20)
    model = Balances("durable")
    async with ProjectionRunner(nc, model.projection, store, options=FAST) as runner:
        first_head = await runner.catch_up(timeout=60)
    await populate_accounts(store, accounts=5, per_account=10, first_version=21, seed=9)
    positions: list[int] = []
    resumed = Projection("durable")

    @resumed.on_any
    async def track(event: Event, position: int) -> None:
        positions.append(position)

    async with ProjectionRunner(nc, resumed, store, options=FAST) as runner:
        assert runner.position == first_head
        await runner.catch_up(timeout=60)
    assert len(positions) == 50 and min(positions) > first_head  # only the new events
    with pytest.raises(ProjectionError):
        await runner.start()  # a stopped runner stays stopped
    with pytest.raises(ProjectionError):
        await runner.wait_until(first_head + 1000, timeout=1)


async def test_rebuild_replays_everything_after_the_hook(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=10, per_account=10)
    model = Balances("rebuild")
    async with ProjectionRunner(nc, model.projection, store, options=FAST) as runner:
        head = await runner.catch_up(timeout=60)
        model.balance["acct-0"] += 1_000_000  # a read model gone wrong
        await runner.rebuild()
        await runner.wait_until(head, timeout=60)
        assert runner.is_active
    assert model.as_dict() == await balances_from_store(store)
    assert model.duplicates == 0


async def test_parallel_lanes_keep_actor_order(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=40, per_account=30)
    rng = random.Random(11)
    versions: dict[str, list[int]] = defaultdict(list)
    running = 0
    peak = 0
    projection = Projection("parallel")

    @projection.on_any
    async def slow(event: Event, position: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if rng.random() < 0.2:
            await asyncio.sleep(0.001)
        versions[event.actor_id].append(event.version)
        running -= 1

    options = ProjectionOptions(concurrency=8, max_in_flight=64, checkpoint_interval=0.1, heartbeat=0.5)
    async with ProjectionRunner(nc, projection, store, options=options) as runner:
        head = await runner.catch_up(timeout=60)
        assert runner.position == head and runner.stats().processed == 1200
    assert len(versions) == 40
    assert all(v == list(range(1, 31)) for v in versions.values())
    assert peak > 1  # lanes really ran concurrently


async def test_parallel_failure_dead_letters_without_blocking_other_actors(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    for actor in ("bad", "good"):
        for v in range(1, 4):
            await store.save_event(Event("Deposited", actor, v, {"amount": v}))
    handled: list[tuple[str, int]] = []
    projection = Projection("parallel-failing")

    @projection.on_any
    async def handle(event: Event, position: int) -> None:
        if event.actor_id == "bad" and event.version == 2:
            raise ValueError("bad event")
        handled.append((event.actor_id, event.version))

    options = ProjectionOptions(concurrency=4, retry=RetryPolicy(max_attempts=2, initial_backoff=0.01))
    async with ProjectionRunner(nc, projection, store, options=options) as runner:
        head = await runner.catch_up(timeout=60)
        assert runner.position == head
        letters = await runner.dead_letters()
    assert [letter.actor_id for letter in letters] == ["bad"] and "ValueError: bad event" in letters[0].reason
    assert [v for a, v in handled if a == "bad"] == [1, 3]
    assert [v for a, v in handled if a == "good"] == [1, 2, 3]


async def test_actor_prefix_and_unhandled_types_are_passed_over(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    for actor in ("user-1", "order-1", "user-2"):
        await store.save_event(Event("Created", actor, 1))
        await store.save_event(Event("Renamed", actor, 2))
    seen: list[tuple[str, str]] = []
    projection = Projection("users", actor_prefix="user-")

    @projection.on("Created")
    async def created(event: Event, position: int) -> None:
        seen.append((event.actor_id, event.event_type))

    async with ProjectionRunner(nc, projection, store, options=FAST) as runner:
        head = await runner.catch_up(timeout=60)
        stats = runner.stats()
    assert seen == [("user-1", "Created"), ("user-2", "Created")]
    assert stats.position == head and stats.skipped == 4


async def test_catch_up_subscription_then_live(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name, namespace="tenant.a")
    other = await make_store(nc, unique_name, namespace="tenant.b")
    await other.save_event(Event("Deposited", "x", 1))
    for v in range(1, 4):
        await store.save_event(Event("Deposited", "a.b", v))
    await store.save_snapshot(ActorSnapshot("a.b", 3, {"balance": 3}))  # snapshots are never delivered
    got: list[StoredEvent] = []
    async with CatchUpSubscription(nc, EventSource("" + unique_name, "tenant.a")) as sub:
        for _ in range(3):
            got.append(await sub.__anext__())
        await store.save_event(Event("Deposited", "a.b", 4))
        got.append(await sub.__anext__())
        assert await sub.head() == got[-1].position
        assert sub.lag == 0
    assert [s.event.version for s in got] == [1, 2, 3, 4]
    assert [s.position for s in got] == sorted(s.position for s in got)
    assert all(s.event.actor_id == "a.b" for s in got)


async def test_catch_up_subscription_from_position_with_filters(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    for v in range(1, 5):
        await store.save_event(Event("Opened" if v == 1 else "Deposited", "acct-1", v))
        await store.save_event(Event("Opened" if v == 1 else "Deposited", "other-1", v))
    source = EventSource.of(store)
    async with CatchUpSubscription(nc, source, event_types=["Deposited"], actor_prefix="acct-") as sub:
        first = [await sub.__anext__() for _ in range(3)]
    assert [(s.event.actor_id, s.event.version) for s in first] == [("acct-1", 2), ("acct-1", 3), ("acct-1", 4)]
    async with CatchUpSubscription(nc, source, after=first[0].position) as sub:
        rest = [await sub.__anext__() for _ in range(5)]
    assert rest[0].position == first[0].position + 1
    assert [s.position for s in rest] == list(range(first[0].position + 1, first[0].position + 6))


async def test_catch_up_subscription_reports_corrupt_messages_and_continues(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    source = EventSource.of(store)
    await nc.jetstream().publish(source.event_prefix + "junk", b"\x00garbage")
    await store.save_event(Event("Deposited", "a", 1))
    sub = CatchUpSubscription(nc, source)
    try:
        with pytest.raises(CorruptEventError) as info:
            await sub.__anext__()
        assert info.value.sequence == 1 and info.value.stream == source.stream
        after = await sub.__anext__()
        assert after.event.actor_id == "a" and after.position == 2
    finally:
        sub.close()
        sub.close()  # idempotent
        await sub.aclose()
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()


async def test_closing_a_subscription_ends_a_waiting_iteration(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    await store.save_event(Event("Deposited", "a", 1))
    sub = CatchUpSubscription(nc, EventSource.of(store))
    received: list[int] = []

    async def consume() -> None:
        async for stored in sub:
            received.append(stored.position)

    task = asyncio.ensure_future(consume())

    async def got_first() -> bool:
        return received == [1]

    await wait_for(got_first, message="the first event", timeout=60.0)
    sub.close()
    await asyncio.wait_for(task, 10)
    await sub.aclose()


async def test_missing_stream_and_bad_input_fail_clearly(nc: Any, unique_name: str) -> None:
    source = EventSource(unique_name, "missing")
    with pytest.raises(StoreError, match="does not exist"):
        await CatchUpSubscription(nc, source).start()
    runner = ProjectionRunner(nc, Projection("p"), source)
    with pytest.raises(StoreError, match="does not exist"):
        await runner.start()
    with pytest.raises(InvalidNameError):
        Projection("")
    with pytest.raises(InvalidNameError):
        EventSource("bad.name")
    with pytest.raises(InvalidInputError):
        CatchUpSubscription(nc, source, after=-1)
    with pytest.raises(InvalidInputError):
        ProjectionOptions(lease_ttl=0)
    with pytest.raises(InvalidInputError):
        RetryPolicy(max_attempts=0)
    assert RetryPolicy(initial_backoff=0.1, multiplier=2, max_backoff=0.3).backoff(3) == pytest.approx(0.3)


async def test_exactly_one_runner_holds_the_lease_and_a_survivor_resumes(nc: Any, unique_name: str) -> None:
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=10, per_account=10)
    options = ProjectionOptions(lease_ttl=1, checkpoint_interval=0.1, heartbeat=0.5,
                                lease_bucket=f"leases-{unique_name}"[:60])
    handled_by: dict[str, Counter[int]] = {"n1": Counter(), "n2": Counter()}

    def projection_for(node: str) -> Projection:
        projection = Projection("exclusive")

        @projection.on_any
        async def handle(event: Event, position: int) -> None:
            handled_by[node][position] += 1

        return projection

    r1 = ProjectionRunner(nc, projection_for("n1"), store, options=options, node_id="n1")
    r2 = ProjectionRunner(nc, projection_for("n2"), store, options=options, node_id="n2")
    await r1.start()
    await r2.start()
    try:
        async def one_active() -> bool:
            return r1.is_active != r2.is_active

        await wait_for(one_active, message="one active runner", timeout=60.0)
        active, standby = (r1, r2) if r1.is_active else (r2, r1)
        head = await active.catch_up(timeout=60)
        assert await standby.holder() == active.node_id
        assert not standby.is_active and active.term > 0
        with pytest.raises(ProjectionNotActiveError):
            await standby.rebuild()
        await active.stop()  # releases the lease: the standby takes over from the checkpoint
        await populate_accounts(store, accounts=10, per_account=5, first_version=11)

        async def took_over() -> bool:
            return standby.is_active

        await wait_for(took_over, message="the standby to take over", timeout=60.0)
        assert standby.stats().position >= head  # resumed from the saved position, not from 0
        await standby.catch_up(timeout=60)
    finally:
        await r1.stop()
        await r2.stop()
    total = handled_by["n1"] + handled_by["n2"]
    assert len(total) == 150 and max(total.values()) == 1


async def test_graceful_stop_hands_the_lease_over_at_once(nc: Any, nats_server: NatsServer, unique_name: str) -> None:
    """A standby hears the holder's key deletion through a KV watch: with a 60 s lease (the old
    standby retried every TTL/4 = 15 s) the takeover after stop() comes within seconds."""
    store = await make_store(nc, unique_name)
    await populate_accounts(store, accounts=2, per_account=3)
    options = ProjectionOptions(lease_ttl=60, checkpoint_interval=0.1, heartbeat=0.5,
                                lease_bucket=f"leases-{unique_name}"[:60])
    first = ProjectionRunner(nc, Projection("handover"), store, options=options, node_id="first")
    second = ProjectionRunner(nc, Projection("handover"), store, options=options, node_id="second")
    await first.start()
    try:
        await wait_for(lambda: first.is_active, message="the first runner to hold the lease", timeout=60.0)

        def subscribed() -> bool:  # the server's view: a subscription on the lease bucket's keys
            url = f"http://127.0.0.1:{nats_server.monitor_port}/connz?subs=1"
            with urllib.request.urlopen(url, timeout=10) as resp:
                connz = json.loads(resp.read())
            return any(sub.startswith(f"$KV.{options.lease_bucket}.") for conn in connz["connections"]
                       for sub in conn.get("subscriptions_list", []))

        async def standing_by() -> bool:  # tried, failed, and now follows the key with a KV watch
            # (the holder has none: the subscription on the lease key is the standby's)
            return await asyncio.to_thread(subscribed)

        assert not await asyncio.to_thread(subscribed)  # the holder needs no watch: nobody follows the key yet
        await second.start()
        await wait_for(standing_by, message="the standby to watch the lease key", timeout=60.0)
        assert not second.is_active
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        await first.stop()
        await wait_for(lambda: second.is_active, timeout=60, message="the standby to take over")
        took = loop.time() - stopped_at
        assert took < 10, f"handover took {took:.1f}s"  # well before TTL/4 = 15 s; normally milliseconds
        assert await second.holder() == "second"
        await second.catch_up(timeout=60)
    finally:
        await first.stop()
        await second.stop()


async def test_prometheus_metrics_count_progress_failures_and_lag(nc: Any, unique_name: str) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from aether.metrics.projection import ProjectionMetrics

    registry = prometheus_client.CollectorRegistry()
    metrics = ProjectionMetrics(registry)
    store = await make_store(nc, unique_name)
    source = EventSource.of(store)
    for v in range(1, 6):
        await store.save_event(Event("Deposited", "a", v))
    await nc.jetstream().publish(source.event_prefix + "junk", b"junk")
    calls: Counter[int] = Counter()
    release = asyncio.Event()
    projection = Projection("metered")

    @projection.on_any
    async def handle(event: Event, position: int) -> None:
        calls[event.version] += 1
        if event.version == 2:
            await release.wait()
        if event.version == 3 and calls[3] == 1:
            raise RuntimeError("transient")
        if event.version == 4:
            raise RuntimeError("permanent")

    def sample(name: str, **labels: str) -> float | None:
        value: float | None = registry.get_sample_value(name, {"projection": "metered", **labels})
        return value

    async with ProjectionRunner(nc, projection, source, options=FAST, observer=metrics) as runner:
        async def reports_lag() -> bool:
            return runner.lag == 5 and sample("aether_projection_lag_events") == 5

        await wait_for(reports_lag, message="the lag while blocked on the second event", timeout=60.0)
        assert sample("aether_projection_active") == 1
        release.set()
        head = await runner.catch_up(timeout=60)
    assert sample("aether_projection_events_processed_total") == 4  # 1, 2, 3 (2nd try), 5
    assert sample("aether_projection_retries_total") == 1 + 2  # v3 once, v4 twice (3 attempts)
    assert sample("aether_projection_dead_letters_total", kind="handler") == 1
    assert sample("aether_projection_dead_letters_total", kind="corrupt") == 1
    assert sample("aether_projection_position") == head
    assert sample("aether_projection_lag_events") == 0
    assert sample("aether_projection_active") == 0
    metrics.unregister()
    assert sample("aether_projection_position") is None

