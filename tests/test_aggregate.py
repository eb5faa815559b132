"""Aggregates and the repository, on both stores (JetStream: a real nats-server)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats
import pytest

from aether.aggregate import (
    COMMAND_KEY,
    SCHEMA_KEY,
    Aggregate,
    AggregateError,
    ConflictRetriesExhaustedError,
    EventPayload,
    EventSchemaError,
    Repository,
    UnknownEventError,
    Upcasters,
    applies,
)
from aether.aggregate.payload import decode_payload, encode_payload
from aether.errors import AetherError, InvalidInputError, StoreError, VersionConflictError
from aether.event import ActorSnapshot, Event
from aether.store import InMemoryEventStore, JetStreamEventStore

pytestmark = pytest.mark.anyio


# ---- a small domain --------------------------------------------------------------------------
class Opened(EventPayload, frozen=True):
    owner: str
    at: datetime


class Deposited(EventPayload, frozen=True):
    schema_version = 2
    amount: int
    currency: str = "EUR"


class Withdrawn(EventPayload, frozen=True):
    amount: int


class Entry(EventPayload, frozen=True):
    """Used as a nested Struct inside the state (restored with its type from snapshots)."""

    kind: str
    amount: int


account_upcasters = Upcasters()


@account_upcasters.register("Deposited", 1)
def _cents_to_amount(data: dict[str, Any]) -> dict[str, Any]:
    return {"amount": data["cents"] // 100, "currency": "EUR"}


@account_upcasters.register("MoneyAdded", 1, to_type="Deposited", to_version=1)
def _renamed(data: dict[str, Any]) -> dict[str, Any]:
    return {"cents": data["value"]}


class Account(Aggregate):
    upcasters = account_upcasters

    owner: str = ""
    opened_at: datetime | None = None
    balance: int = 0
    entries: list[Entry]
    tags: set[str]

    def __init__(self, actor_id: str) -> None:
        super().__init__(actor_id)
        self.entries = []
        self.tags = set()

    # commands
    def open(self, owner: str) -> None:
        if self.opened_at is not None:
            raise ValueError("already open")
        self.record(Opened(owner=owner, at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)))

    def deposit(self, amount: int) -> int:
        if amount <= 0:
            raise ValueError("amount must be positive")
        self.record(Deposited(amount=amount))
        return self.balance

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            self.record("WithdrawalRejected", {"amount": amount, "balance": self.balance})
        else:
            self.record(Withdrawn(amount=amount))

    # handlers
    @applies(Opened)
    def _opened(self, e: Opened) -> None:
        self.owner = e.owner
        self.opened_at = e.at

    @applies(Deposited)
    def _deposited(self, e: Deposited) -> None:
        self.balance += e.amount
        self.entries.append(Entry(kind="in", amount=e.amount))
        self.tags.add(e.currency)

    @applies(Withdrawn)
    def _withdrawn(self, e: Withdrawn) -> None:
        self.balance -= e.amount
        self.entries.append(Entry(kind="out", amount=e.amount))

    @applies("WithdrawalRejected")
    def _rejected(self, e: Event) -> None:
        self.tags.add("rejected")


class Counter(Aggregate):
    count: int = 0

    def inc(self) -> None:
        self.record("Incremented")

    @applies("Incremented")
    def _inc(self, e: Event) -> None:
        self.count += 1


AggT = TypeVar("AggT", bound=Aggregate)


def replay(cls: type[AggT], actor_id: str, events: list[Event]) -> AggT:
    aggregate = cls(actor_id)
    for event in events:
        aggregate.apply(event)
    return aggregate


# ---- fixtures -------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "jetstream"])
async def stores(request: pytest.FixtureRequest, nats_url: str,
                 unique_name: str) -> AsyncIterator[tuple[Any, Any]]:
    """Two views of the same data (for JetStream: two connections)."""
    if request.param == "memory":
        store = InMemoryEventStore()
        yield store, store
        return
    nc1 = await nats.connect(nats_url)
    nc2 = await nats.connect(nats_url)
    s1 = await JetStreamEventStore.create(nc1, unique_name, storage="memory")
    s2 = await JetStreamEventStore.create(nc2, unique_name, storage="memory")
    try:
        yield s1, s2
    finally:
        await s1.aclose()
        await s2.aclose()
        await nc1.close()
        await nc2.close()


@pytest.fixture
def store(stores: tuple[Any, Any]) -> Any:
    return stores[0]


# ---- tests ----------------------------------------------------------------------------------
async def test_commands_record_apply_and_save(store: Any) -> None:
    async with Repository(store, Account) as repo:
        r1 = await repo.execute("acc", lambda a: a.open("ann"))
        assert [e.version for e in r1.events] == [1] and r1.attempts == 1 and not r1.duplicate
        r2 = await repo.execute("acc", lambda a: a.deposit(30))
        assert r2.value == 30
        r3 = await repo.execute("acc", lambda a: a.withdraw(50))
        assert r3.events[0].event_type == "WithdrawalRejected"
        assert r3.aggregate.balance == 30 and r3.aggregate.version == 3
        stored = await store.get_events("acc")
        assert [e.event_type for e in stored] == ["Opened", "Deposited", "WithdrawalRejected"]
        assert stored[1].metadata[SCHEMA_KEY] == "2" and stored[1].data == {"amount": 30, "currency": "EUR"}
        loaded = await repo.load("acc")
        assert (loaded.owner, loaded.balance, loaded.version) == ("ann", 30, 3)
        assert loaded.opened_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_multi_event_command_is_atomic(store: Any) -> None:
    repo = Repository(store, Account)
    await repo.execute("multi", lambda a: a.open("bo"))

    def several(a: Account) -> None:
        for amount in (1, 2, 3):
            a.deposit(amount)

    result = await repo.execute("multi", several)
    assert [e.version for e in result.events] == [2, 3, 4]
    assert (await repo.load("multi")).balance == 6


async def test_snapshot_plus_tail_equals_full_replay(store: Any) -> None:
    repo = Repository(store, Account, snapshot_every=10)
    await repo.execute("snap", lambda a: a.open("cy"))
    for i in range(1, 25):
        if i % 5 == 0:
            await repo.execute("snap", lambda a: a.withdraw(7))
        else:
            await repo.execute("snap", functools.partial(Account.deposit, amount=i))
        await asyncio.sleep(0)  # the in-memory store never yields: let the background snapshot run
    await repo.flush_snapshots()
    assert repo.stats.snapshots_saved >= 2
    snapshot = await store.get_latest_snapshot("snap")
    assert snapshot is not None and 10 <= snapshot.version < 25

    fresh = Repository(store, Account)
    loaded = await fresh.load("snap")
    assert fresh.stats.events_replayed == 25 - snapshot.version  # only the tail was read
    full = replay(Account, "snap", await store.get_events("snap"))
    assert loaded.version == full.version == 25
    assert loaded.snapshot_state() == full.snapshot_state()
    assert loaded.entries == full.entries and all(isinstance(e, Entry) for e in loaded.entries)
    assert loaded.tags == full.tags and isinstance(loaded.tags, set)
    assert loaded.opened_at == full.opened_at and isinstance(loaded.opened_at, datetime)
    # and it keeps working from there
    await fresh.execute("snap", lambda a: a.deposit(1))
    assert (await fresh.load("snap")).balance == full.balance + 1


async def test_incompatible_snapshot_is_ignored(store: Any) -> None:
    repo = Repository(store, Counter, snapshot_every=2)
    for _ in range(5):
        await repo.execute("c", lambda c: c.inc())
    await repo.flush_snapshots()
    assert await store.get_latest_snapshot("c") is not None

    class CounterV2(Counter):
        aggregate_type = "Counter"
        snapshot_version = 2

    other = Repository(store, CounterV2)
    loaded = await other.load("c")
    assert loaded.count == 5 and other.stats.events_replayed == 5  # full replay, snapshot skipped
    await store.save_snapshot(ActorSnapshot("c", 5, {"garbage": True}))  # not an envelope at all
    assert (await other.load("c")).count == 5


async def test_conflict_is_retried_after_reload(stores: tuple[Any, Any]) -> None:
    s1, s2 = stores
    writer = Repository(s1, Counter)
    cached = Repository(s2, Counter, cache_size=10)
    await cached.execute("race", lambda c: c.inc())  # cached now holds v1 in memory
    await writer.execute("race", lambda c: c.inc())  # v2 written behind its back
    result = await cached.execute("race", lambda c: c.inc())
    assert result.attempts == 2 and result.aggregate.count == 3 and result.aggregate.version == 3
    assert cached.stats.conflicts == 1
    assert [e.version for e in await s1.get_events("race")] == [1, 2, 3]


async def test_two_repositories_racing_lose_nothing(stores: tuple[Any, Any]) -> None:
    s1, s2 = stores
    repos = [Repository(s1, Counter, max_attempts=1000, retry_backoff=0.0005),
             Repository(s2, Counter, max_attempts=1000, retry_backoff=0.0005)]

    async def worker(repo: Repository[Counter], n: int) -> None:
        for _ in range(n):
            await repo.execute("hot", lambda c: c.inc())

    await asyncio.gather(*(worker(repos[i % 2], 10) for i in range(6)))
    events = await s1.get_events("hot")
    assert [e.version for e in events] == list(range(1, 61))
    assert (await repos[0].load("hot")).count == 60


async def test_bounded_attempts_raise(store: Any) -> None:
    repo = Repository(store, Counter, max_attempts=3, retry_backoff=0)
    await repo.execute("busy", lambda c: c.inc())
    runs = 0

    async def interfering(c: Counter) -> None:
        nonlocal runs
        runs += 1
        # another writer sneaks in between our load and our save, every time
        await store.save_event(Event("Incremented", "busy", await store.get_latest_version("busy") + 1))
        c.inc()

    with pytest.raises(ConflictRetriesExhaustedError) as info:
        await repo.execute("busy", interfering)
    assert runs == 3 and info.value.attempts == 3
    assert isinstance(info.value, VersionConflictError) and info.value.actor_id == "busy"
    assert "3 attempts" in str(info.value)
    assert [e.version for e in await store.get_events("busy")] == [1, 2, 3, 4]  # only the interferer's


async def test_command_ids_make_retries_idempotent(store: Any) -> None:
    repo = Repository(store, Account, cache_size=0)
    await repo.execute("idem", lambda a: a.open("di"), command_id="cmd-1")
    first = await repo.execute("idem", lambda a: a.deposit(5), command_id="cmd-2", metadata={"user": "u1"})
    assert first.events[0].metadata[COMMAND_KEY] == "cmd-2" and first.events[0].metadata["user"] == "u1"
    again = await repo.execute("idem", lambda a: a.deposit(5), command_id="cmd-2")
    assert again.duplicate and again.events == [] and again.value is None
    assert len(await store.get_events("idem")) == 2
    # the seen ids survive snapshots
    await repo.snapshot("idem")
    fresh = Repository(store, Account)
    assert (await fresh.execute("idem", lambda a: a.deposit(5), command_id="cmd-2")).duplicate
    assert fresh.stats.events_replayed == 0


async def test_upcasting_old_events(store: Any) -> None:
    old = [Event("Opened", "old", 1, {"owner": "ed", "at": "2020-05-06T07:08:09Z"}),
           Event("Deposited", "old", 2, {"cents": 1250}),              # v1 schema (no metadata)
           Event("MoneyAdded", "old", 3, {"value": 300}),              # renamed type, v1
           Event("Deposited", "old", 4, {"amount": 2, "currency": "USD"}, {SCHEMA_KEY: "2"})]
    await store.save_events(old)
    account = await Repository(store, Account).load("old")
    assert account.balance == 12 + 3 + 2 and account.tags == {"EUR", "USD"}
    assert account.opened_at == datetime(2020, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert await store.get_events("old") == old  # nothing was rewritten
    upcast = account_upcasters.upcast(old[2])
    assert (upcast.event_type, upcast.data, upcast.metadata[SCHEMA_KEY]) == ("Deposited", {"amount": 3,
                                                                                          "currency": "EUR"}, "2")
    assert upcast.id == old[2].id and upcast.version == 3
    assert account_upcasters.upcast(old[3]) is old[3]


def test_upcaster_registry_rules() -> None:
    registry = Upcasters()
    registry.add("A", 1, lambda d: d)
    with pytest.raises(InvalidInputError):
        registry.add("A", 1, lambda d: d)
    with pytest.raises(InvalidInputError):
        registry.add("B", 1, lambda d: d, to_version=1)
    with pytest.raises(InvalidInputError):
        registry.add("C", 0, lambda d: d)
    registry.add("A", 2, lambda d: {"x": d["missing"]})
    with pytest.raises(EventSchemaError, match="KeyError"):
        registry.upcast(Event("A", "a", 1, {}))
    registry.add("Loop", 1, lambda d: d, to_type="Loop2")
    registry.add("Loop2", 2, lambda d: d, to_type="Loop", to_version=1)
    with pytest.raises(EventSchemaError, match="cycle"):
        registry.upcast(Event("Loop", "a", 1, {}))
    bad = Upcasters()
    bad.add("N", 1, lambda d: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(EventSchemaError, match="not dict"):
        bad.upcast(Event("N", "a", 1, {}))


async def test_bad_histories_raise_clear_errors(store: Any) -> None:
    await store.save_events([Event("Opened", "weird", 1, {"owner": "x", "at": "2020-01-01T00:00:00Z"}),
                             Event("Teleported", "weird", 2, {})])
    repo = Repository(store, Account)
    with pytest.raises(UnknownEventError) as info:
        await repo.load("weird")
    assert (info.value.version, info.value.event_type) == (2, "Teleported")

    class Lenient(Account):
        ignore_unknown_events = True

    assert (await Repository(store, Lenient).load("weird")).version == 2

    await store.save_event(Event("Withdrawn", "schema", 1, {"amount": "lots"}))
    with pytest.raises(EventSchemaError) as schema_info:
        await repo.load("schema")
    assert isinstance(schema_info.value, AetherError) and schema_info.value.version == 1

    account = Account("gap")
    account.apply(Event("Opened", "gap", 1, {"owner": "x", "at": "2020-01-01T00:00:00Z"}))
    with pytest.raises(AggregateError, match="not consecutive"):
        account.apply(Event("Deposited", "gap", 3, {"amount": 1}, {SCHEMA_KEY: "2"}))
    with pytest.raises(AggregateError, match="applied to actor"):
        account.apply(Event("Deposited", "other", 2, {"amount": 1}, {SCHEMA_KEY: "2"}))


async def test_failing_command_saves_nothing_and_keeps_cache_clean(store: Any) -> None:
    repo = Repository(store, Account, cache_size=5)
    await repo.execute("fail", lambda a: a.open("fa"))

    def half_done(a: Account) -> None:
        a.deposit(10)
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await repo.execute("fail", half_done)
    assert len(await store.get_events("fail")) == 1
    result = await repo.execute("fail", lambda a: a.deposit(1))
    assert result.aggregate.balance == 1 and result.aggregate.version == 2


class _BrokenSnapshots:
    """A snapshot store whose server is 'down'."""

    def __init__(self) -> None:
        self.saves = 0

    async def save_snapshot(self, snapshot: ActorSnapshot) -> None:
        self.saves += 1
        await asyncio.sleep(0)
        raise StoreError("snapshot stream unavailable")

    async def get_latest_snapshot(self, actor_id: str) -> ActorSnapshot | None:
        return None


async def test_snapshot_failures_never_fail_the_save(store: Any, caplog: pytest.LogCaptureFixture) -> None:
    broken = _BrokenSnapshots()
    repo = Repository(store, Counter, snapshots=broken, snapshot_every=2)
    with caplog.at_level(logging.WARNING, logger="aether.aggregate"):
        for _ in range(6):
            await repo.execute("s", lambda c: c.inc())
        await repo.aclose()
    assert (await repo.load("s")).count == 6
    assert broken.saves >= 1 and repo.stats.snapshot_failures == broken.saves
    assert "snapshot of 's'" in caplog.text


def test_repository_argument_checks() -> None:
    store = InMemoryEventStore()
    for kwargs in ({"max_attempts": 0}, {"snapshot_every": 0}, {"cache_size": -1}, {"retry_backoff": -1.0}):
        with pytest.raises(InvalidInputError):
            Repository(store, Counter, **kwargs)
    with pytest.raises(InvalidInputError):
        Repository(store, int)  # type: ignore[type-var]
    with pytest.raises(InvalidInputError):
        applies(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="two handlers"):

        class Twice(Aggregate):
            @applies("X")
            def _a(self, e: Event) -> None: ...

            @applies("X")
            def _b(self, e: Event) -> None: ...

    with pytest.raises(InvalidInputError):
        Counter("x").record(123)  # type: ignore[arg-type]


async def test_cache_forget_and_processed_version(store: Any) -> None:
    repo = Repository(store, Counter, cache_size=10)
    for actor in ("keep-1", "drop-1", "drop-2"):
        await repo.execute(actor, lambda c: c.inc(), command_id=f"cmd-{actor}")
    assert repo.forget_if(lambda actor_id: actor_id.startswith("drop-")) == 2
    loads = repo.stats.loads
    await repo.execute("keep-1", lambda c: c.inc())          # served from the cache
    assert repo.stats.loads == loads
    result = await repo.execute("drop-1", lambda c: c.inc())  # reloaded
    assert repo.stats.loads == loads + 1
    assert result.aggregate.processed_version("cmd-drop-1") == 1
    assert result.aggregate.processed_version("unknown") is None
    repo.forget()
    await repo.execute("keep-1", lambda c: c.inc())
    assert repo.stats.loads == loads + 2


class Shipped(EventPayload, frozen=True):
    parcel: tuple[str, int]
    tags: frozenset[str]
    raw: bytes
    at: datetime
    weight: float = 1.5


async def test_typed_payloads_with_non_json_field_types_still_work(store: Any) -> None:
    """Tuples, sets, bytes and datetimes in a typed payload become JSON values in ``data`` (the
    value model refuses them raw) and come back as the annotated types."""
    payload = Shipped(parcel=("box", 3), tags=frozenset({"a", "b"}), raw=b"\x00\xff", at=datetime.now(UTC))
    data = encode_payload(payload)
    event = Event(Shipped.event_type, "parcel-1", 1, data)
    await store.save_event(event)
    stored = (await store.get_events("parcel-1"))[0]
    assert decode_payload(stored.data, Shipped) == payload
    with pytest.raises(InvalidInputError, match="nan is not a JSON number"):
        Event("Shipped", "parcel-1", 2, encode_payload(Shipped(parcel=("b", 1), tags=frozenset(), raw=b"",
                                                               at=datetime.now(UTC), weight=float("nan"))))
