"""aether.integrations.eventsourcing beyond eventsourcing's own suite: server-enforced uniqueness
across processes' caches, atomic multi-aggregate saves, contiguous notification ids under
concurrency, isolation between applications, settings, ciphers, and a lost or paused server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import pytest
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.cipher import AESCipher
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate
from eventsourcing.domain import event as event_decorator
from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
    Tracking,
)
from eventsourcing.system import (
    MultiThreadedRunner,
    NewMultiThreadedRunner,
    ProcessApplication,
    Runner,
    SingleThreadedRunner,
    System,
)
from eventsourcing.tests.application import BankAccounts
from eventsourcing.utils import Environment

from _es_helpers import drop_streams, streams_of
from aether._nats import JetStreamApiError, JsApi
from aether.connect import close, connect
from aether.errors import AetherError, InvalidInputError
from aether.integrations.eventsourcing import (
    JetStreamApplicationRecorder,
    JetStreamFactory,
    JetStreamIntegrityError,
    JetStreamOperationalError,
    JetStreamProcessRecorder,
)
from aether.integrations.eventsourcing._settings import events_stream
from aether.testing import NatsCluster, NatsServer, wait_for_sync
from aether.testing.security import make_tls_files
from test_store_cluster import _frozen_copy

MODULE = "aether.integrations.eventsourcing"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with NatsServer() as server:
        yield server.url


def make_factory(url: str, name: str, **settings: str) -> JetStreamFactory:
    return JetStreamFactory(Environment(name, {"AETHER_NATS_URL": url, **settings}))


@pytest.fixture
def fresh(url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh application name (its streams deleted) for the test."""
    name = "T" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    drop_streams(url, *streams_of(name))
    yield name


def event(originator: UUID | str, version: int, topic: str = "topic", state: bytes = b"{}") -> StoredEvent:
    return StoredEvent(originator_id=originator, originator_version=version, topic=topic, state=state)


def app_recorder(factory: JetStreamFactory) -> JetStreamApplicationRecorder:
    recorder = factory.application_recorder()
    assert isinstance(recorder, JetStreamApplicationRecorder)
    return recorder


# ---- uniqueness, enforced by the server --------------------------------------------------------------
def test_two_factories_race_for_the_same_version_exactly_one_wins(url: str, fresh: str) -> None:
    factories = [make_factory(url, fresh) for _ in range(2)]
    try:
        recorders = [app_recorder(f) for f in factories]
        for round_ in range(20):
            originator = uuid4()
            barrier = threading.Barrier(2)
            outcomes: list[str] = []

            def save(recorder: JetStreamApplicationRecorder, tag: bytes, barrier: threading.Barrier = barrier,
                     originator: UUID = originator, outcomes: list[str] = outcomes) -> None:
                barrier.wait()
                try:
                    recorder.insert_events([event(originator, 1, state=tag), event(originator, 2, state=tag)])
                    outcomes.append("stored")
                except IntegrityError:
                    outcomes.append("conflict")

            threads = [threading.Thread(target=save, args=(r, bytes([i]))) for i, r in enumerate(recorders)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(outcomes) == ["conflict", "stored"], (round_, outcomes)
            stored = recorders[0].select_events(originator)
            assert [e.originator_version for e in stored] == [1, 2]
            assert len({e.state for e in stored}) == 1  # both from the same, winning save
    finally:
        for f in factories:
            f.close()


def test_stale_cache_is_refused_by_the_server_then_refreshed(url: str, fresh: str) -> None:
    a, b = make_factory(url, fresh), make_factory(url, fresh)
    try:
        ra, rb = app_recorder(a), app_recorder(b)
        originator = uuid4()
        ra.insert_events([event(originator, 1)])  # a now believes version 1 is the latest
        rb.insert_events([event(originator, 2)])  # b writes behind a's back
        with pytest.raises(JetStreamIntegrityError):
            ra.insert_events([event(originator, 2)])
        assert ra.insert_events([event(originator, 3)]) == [3]  # a's knowledge was refreshed
        assert [e.originator_version for e in rb.select_events(originator)] == [1, 2, 3]
    finally:
        a.close()
        b.close()


def test_a_save_over_several_aggregates_is_atomic(url: str, fresh: str) -> None:
    factory = make_factory(url, fresh)
    try:
        recorder = app_recorder(factory)
        a, b, c = uuid4(), uuid4(), uuid4()
        assert recorder.insert_events([event(a, 1), event(b, 1), event(b, 2)]) == [1, 2, 3]
        other = make_factory(url, fresh)  # no cache: the server alone refuses
        try:
            with pytest.raises(IntegrityError):
                app_recorder(other).insert_events([event(c, 1), event(a, 2), event(b, 2), event(c, 2)])
        finally:
            other.close()
        assert recorder.select_events(c) == []
        assert [e.originator_version for e in recorder.select_events(a)] == [1]
        assert recorder.max_notification_id() == 3
        assert recorder.insert_events([event(c, 1), event(a, 2)]) == [4, 5]
    finally:
        factory.close()


def test_versions_must_ascend_within_a_save_and_not_repeat(url: str, fresh: str) -> None:
    factory = make_factory(url, fresh)
    try:
        recorder = app_recorder(factory)
        originator = uuid4()
        with pytest.raises(DataError):
            recorder.insert_events([event(originator, 2), event(originator, 1)])
        with pytest.raises(IntegrityError):
            recorder.insert_events([event(originator, 1), event(originator, 1)])
        assert recorder.select_events(originator) == []
    finally:
        factory.close()


@pytest.mark.parametrize("bad", [
    [event("", 1)],
    [event("x" * 1025, 1)],
    [event("ok", "1")],  # type: ignore[arg-type]
    [event("ok", True)],
    [event("\ud800", 1)],  # a lone surrogate cannot be UTF-8 encoded
])
def test_unstorable_events_are_data_errors(url: str, fresh: str, bad: list[StoredEvent]) -> None:
    factory = make_factory(url, fresh)
    try:
        recorder = app_recorder(factory)
        with pytest.raises(DataError) as caught:
            recorder.insert_events([event("fine", 1), *bad])
        assert isinstance(caught.value, AetherError) and isinstance(caught.value, ValueError)
        assert recorder.max_notification_id() is None  # nothing of the save was stored
        with pytest.raises(DataError):
            factory.process_recorder().insert_events([], tracking=Tracking("", 1))
    finally:
        factory.close()


def test_a_save_larger_than_one_atomic_batch_is_refused_whole(url: str, fresh: str) -> None:
    factory = make_factory(url, fresh)
    try:
        recorder = app_recorder(factory)
        originator = uuid4()
        with pytest.raises(DataError, match="at most 1000"):
            recorder.insert_events([event(originator, v) for v in range(1, 1002)])
        assert recorder.max_notification_id() is None
        assert len(recorder.insert_events([event(originator, v) for v in range(1, 1001)]) or []) == 1000
    finally:
        factory.close()


def test_an_event_larger_than_the_server_takes_is_a_data_error(url: str, fresh: str) -> None:
    factory = make_factory(url, fresh)
    try:
        recorder = app_recorder(factory)
        originator = uuid4()
        with pytest.raises(DataError, match="max_payload"):
            recorder.insert_events([event(originator, 1), event(originator, 2, state=b"x" * (2 * 1024 * 1024))])
        assert recorder.select_events(originator) == []
    finally:
        factory.close()


# ---- notification ids under concurrency ---------------------------------------------------------------
def test_concurrent_saves_from_two_connections_get_contiguous_ids(url: str, fresh: str) -> None:
    factories = [make_factory(url, fresh) for _ in range(2)]
    try:
        recorders = [app_recorder(f) for f in factories]
        results: list[tuple[list[int], list[StoredEvent]]] = []
        lock = threading.Lock()

        def writer(recorder: JetStreamApplicationRecorder) -> None:
            for _ in range(15):
                events = [event(o, v) for o in (uuid4(), uuid4(), uuid4()) for v in (1, 2)]
                ids = list(recorder.insert_events(events) or [])
                with lock:
                    results.append((ids, events))

        threads = [threading.Thread(target=writer, args=(recorders[i % 2],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 90
        for ids, _ in results:
            assert ids == list(range(ids[0], ids[0] + 6))  # one save: consecutive ids
        all_ids = sorted(i for ids, _ in results for i in ids)
        assert all_ids == list(range(1, 541))  # every id once, no gap
        notifications = recorders[0].select_notifications(None, 1000)
        by_id = {n.id: (n.originator_id, n.originator_version) for n in notifications}
        for ids, events in results:
            assert [by_id[i] for i in ids] == [(e.originator_id, e.originator_version) for e in events]
    finally:
        for f in factories:
            f.close()


def test_contended_aggregate_gets_every_version_once(url: str, fresh: str) -> None:
    factories = [make_factory(url, fresh) for _ in range(3)]
    originator = uuid4()
    try:
        recorders = [app_recorder(f) for f in factories]
        conflicts = [0]

        def worker(recorder: JetStreamApplicationRecorder, me: int) -> None:
            done = 0
            while done < 10:
                latest = recorder.select_events(originator, desc=True, limit=1)
                version = latest[0].originator_version + 1 if latest else 1
                try:
                    recorder.insert_events([event(originator, version, state=bytes([me]))])
                    done += 1
                except IntegrityError:
                    conflicts[0] += 1

        threads = [threading.Thread(target=worker, args=(r, i)) for i, r in enumerate(recorders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        versions = [e.originator_version for e in recorders[0].select_events(originator)]
        assert versions == list(range(1, 31))
        ids = [n.id for n in recorders[0].select_notifications(None, 100)]
        assert ids == list(range(1, 31))
    finally:
        for f in factories:
            f.close()


# ---- tracking -------------------------------------------------------------------------------------------
def test_tracking_and_events_are_stored_together_or_not_at_all(url: str, fresh: str) -> None:
    factory = make_factory(url, fresh)
    try:
        recorder = factory.process_recorder()
        assert isinstance(recorder, JetStreamProcessRecorder)
        a, b = uuid4(), uuid4()
        ids = recorder.insert_events([event(a, 1)], tracking=Tracking("upstream", 5))
        assert ids == [1]
        with pytest.raises(IntegrityError):  # tracking refused: the event is not stored either
            recorder.insert_events([event(b, 1)], tracking=Tracking("upstream", 5))
        assert recorder.select_events(b) == []
        with pytest.raises(IntegrityError):  # event refused: the tracking is not stored either
            recorder.insert_events([event(a, 1)], tracking=Tracking("upstream", 6))
        assert recorder.max_tracking_id("upstream") == 5
        assert recorder.insert_events([event(b, 1)], tracking=Tracking("upstream", 6)) == [3]
        # notification ids skip the tracking records' sequences; the events are what is listed
        assert [n.id for n in recorder.select_notifications(None, 10)] == [1, 3]
        assert recorder.max_notification_id() == 3
        other = make_factory(url, fresh)  # another process, no cache: the server refuses
        try:
            with pytest.raises(IntegrityError):
                other.process_recorder().insert_events([], tracking=Tracking("upstream", 6))
        finally:
            other.close()
    finally:
        factory.close()


def test_max_notification_id_skips_a_long_run_of_tracking_records(url: str, fresh: str) -> None:
    factory = make_factory(url, fresh)
    try:
        recorder = factory.process_recorder()
        assert recorder.max_notification_id() is None
        recorder.insert_events([], tracking=Tracking("up", 1))
        assert recorder.max_notification_id() is None  # only tracking records
        assert recorder.insert_events([event(uuid4(), 1)], tracking=Tracking("up", 2)) == [2]
        for n in range(3, 103):  # a process that handles 100 notifications without new events
            recorder.insert_events([], tracking=Tracking("up", n))
        assert recorder.max_notification_id() == 2
        assert recorder.max_tracking_id("up") == 102
    finally:
        factory.close()


# ---- applications ---------------------------------------------------------------------------------------
class Bank(BankAccounts):
    def open(self, name: str) -> UUID:
        return self.open_account(full_name=name, email_address=f"{name}@example.com")

    def credit(self, account_id: UUID, amount: Decimal) -> None:
        self.credit_account(account_id, amount)

    def balance(self, account_id: UUID) -> Decimal:
        return self.get_balance(account_id)


def app_env(url: str, **extra: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": MODULE, "AETHER_NATS_URL": url, **extra}


def test_each_application_has_its_own_stream(url: str) -> None:
    class Alpha(Bank):
        pass

    class Beta(Bank):
        pass

    drop_streams(url, *streams_of("Alpha"), *streams_of("Beta"), "shared-override")
    alpha, beta = Alpha(env=app_env(url)), Beta(env=app_env(url))
    try:
        assert isinstance(alpha.factory, JetStreamFactory) and isinstance(beta.factory, JetStreamFactory)
        assert (alpha.factory.stream_name, beta.factory.stream_name) == ("es-Alpha", "es-Beta")
        account = alpha.open("alice")
        beta.open("bob")
        beta.open("carol")
        assert [n.originator_id for n in alpha.notification_log.select(1, 10)] == [account]
        assert len(beta.notification_log.select(1, 10)) == 2
        assert beta.repository.event_store.recorder.select_events(account) == []
    finally:
        alpha.close()
        beta.close()
    # the stream can be chosen per application (the name-prefixed key) or for all
    alpha = Alpha(env=app_env(url, ALPHA_AETHER_ES_STREAM="shared-override"))
    try:
        assert isinstance(alpha.factory, JetStreamFactory)
        assert alpha.factory.stream_name == "shared-override"
        assert alpha.notification_log.select(1, 10) == []
    finally:
        alpha.close()


def test_cipher_and_compressor_act_on_the_state(url: str, fresh: str) -> None:
    key = AESCipher.create_key(16)

    class Vault(Bank):
        name = fresh

    app = Vault(env=app_env(url, CIPHER_KEY=key, COMPRESSOR_TOPIC="zlib"))
    try:
        account = app.open("secret-name")
        app.credit(account, Decimal("12.50"))
        assert app.balance(account) == Decimal("12.50")
        app.take_snapshot(account)
        assert app.repository.get(account).balance == Decimal("12.50")
        stored = app.repository.event_store.recorder.select_events(account)
        assert stored and all(b"secret-name" not in s.state for s in stored)
        with pytest.raises(zlib.error):  # encrypted, so not even a zlib stream
            zlib.decompress(stored[0].state)
    finally:
        app.close()
    plain = Vault(env=app_env(url))  # without the key the state cannot be read
    try:
        with pytest.raises(ValueError):
            plain.repository.get(account)
    finally:
        plain.close()


def test_subscribe_sees_saves_from_another_factory(url: str, fresh: str) -> None:
    reader, writer = make_factory(url, fresh), make_factory(url, fresh)
    try:
        recorder, other = app_recorder(reader), app_recorder(writer)
        other.insert_events([event(uuid4(), 1)])
        with recorder.subscribe(gt=None, topics=["wanted"]) as subscription:
            originator = uuid4()
            other.insert_events([event(originator, 1, topic="ignored"), event(originator, 2, topic="wanted")])
            notification = next(subscription)
            assert (notification.id, notification.topic) == (3, "wanted")
    finally:
        reader.close()
        writer.close()


class Ledger(Application[UUID]):
    """A leader: opens aggregates and adds events to them."""

    def open(self) -> UUID:
        aggregate = Aggregate()
        self.save(aggregate)
        return aggregate.id

    def touch(self, aggregate_id: UUID) -> None:
        aggregate: Aggregate = self.repository.get(aggregate_id)
        aggregate.trigger_event(Aggregate.Event)
        self.save(aggregate)


class Tally(Aggregate):
    @staticmethod
    def create_id(source: UUID) -> UUID:
        return uuid5(NAMESPACE_URL, f"/tally/{source}")

    @event_decorator("Started")
    def __init__(self, source: UUID) -> None:
        self.source = source
        self.count = 0

    @event_decorator("Counted")
    def count_one(self) -> None:
        self.count += 1


class Tallies(ProcessApplication[UUID]):
    """A process application: counts the leader's events per aggregate, recording each count with
    the tracking record of the notification it counted."""

    @singledispatchmethod
    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        tally_id = Tally.create_id(domain_event.originator_id)
        try:
            tally: Tally = self.repository.get(tally_id)
        except AggregateNotFoundError:
            tally = Tally(domain_event.originator_id)
        tally.count_one()
        processing_event.collect_events(tally)


@pytest.mark.parametrize("runner_class", [SingleThreadedRunner, MultiThreadedRunner, NewMultiThreadedRunner])
def test_a_system_with_a_process_application(url: str, runner_class: type[Runner[UUID]]) -> None:
    drop_streams(url, *streams_of("Ledger"), *streams_of("Tallies"))
    runner = runner_class(System(pipes=[[Ledger, Tallies]]), env=app_env(url))
    runner.start()
    try:
        ledger, tallies = runner.get(Ledger), runner.get(Tallies)
        ids = [ledger.open() for _ in range(5)]
        for aggregate_id in ids[:3]:
            ledger.touch(aggregate_id)
        last = ledger.recorder.max_notification_id()
        assert last == 8
        tallies.recorder.wait("Ledger", last, timeout=60)
        for i, aggregate_id in enumerate(ids):
            tally: Tally = tallies.repository.get(Tally.create_id(aggregate_id))
            assert tally.count == (2 if i < 3 else 1)
        assert tallies.recorder.max_tracking_id("Ledger") == 8
        notifications = tallies.recorder.select_notifications(None, 100)
        assert len(notifications) == 5 + 8  # a Started per tally and a Counted per leader event
        assert [n.id for n in notifications] == sorted({n.id for n in notifications})
    finally:
        runner.stop()


# ---- settings and lifecycle ------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value"), [
    ("AETHER_ES_TIMEOUT", "soon"), ("AETHER_ES_TIMEOUT", "0"), ("AETHER_ES_REPLICAS", "7"),
    ("AETHER_ES_STORAGE", "tape"), ("CREATE_TABLE", "maybe"), ("AETHER_ES_STREAM", "a.b"),
    ("AETHER_NATS_CONNECT_TIMEOUT", "-1"),
])
def test_malformed_settings_are_refused_at_construction(url: str, key: str, value: str) -> None:
    with pytest.raises(InvalidInputError):
        make_factory(url, "Settings", **{key: value})


def test_a_derived_stream_name_that_is_too_long_names_the_setting(url: str) -> None:
    with pytest.raises(InvalidInputError, match="AETHER_ES_STREAM"):
        make_factory(url, "x" * 80)


def test_create_table_false_requires_the_stream(url: str, fresh: str) -> None:
    factory = make_factory(url, fresh, CREATE_TABLE="false")
    try:
        with pytest.raises(ProgrammingError, match="does not exist") as caught:
            factory.application_recorder()
        assert isinstance(caught.value, AetherError)
    finally:
        factory.close()
    creating = make_factory(url, fresh)
    creating.application_recorder()
    creating.close()
    factory = make_factory(url, fresh, CREATE_TABLE="false")
    try:
        assert app_recorder(factory).max_notification_id() is None
    finally:
        factory.close()


def test_a_foreign_stream_of_that_name_is_refused(url: str, fresh: str) -> None:
    import asyncio

    from aether.connect import close, connect
    from aether.store import JetStreamEventStore

    async def make_foreign() -> None:
        nc = await connect(url)
        store = await JetStreamEventStore.create(nc, "es-" + fresh)
        await store.aclose()
        await close(nc)

    asyncio.run(make_foreign())
    factory = make_factory(url, fresh)
    try:
        with pytest.raises(ProgrammingError, match="not an eventsourcing stream"):
            factory.application_recorder()
    finally:
        factory.close()


def test_closed_factory_refuses_calls_and_close_is_idempotent(url: str, fresh: str) -> None:
    factory = make_factory(url, fresh)
    recorder = app_recorder(factory)
    factory.close()
    factory.close()
    with pytest.raises(OperationalError, match="closed"):
        recorder.insert_events([event(uuid4(), 1)])
    with pytest.raises(OperationalError, match="closed"):
        factory.application_recorder()


def test_no_server_is_a_quick_operational_error() -> None:
    factory = make_factory("nats://127.0.0.1:1", "Nowhere", AETHER_NATS_CONNECT_TIMEOUT="1")
    started = time.monotonic()
    with pytest.raises(JetStreamOperationalError, match="cannot connect"):
        factory.application_recorder()
    assert time.monotonic() - started < 10
    factory.close()


# ---- a lost or paused server -----------------------------------------------------------------------------
def _expect_operational_error(call: Any, bound: float) -> OperationalError:
    started = time.monotonic()
    with pytest.raises(OperationalError) as caught:
        call()
    assert time.monotonic() - started < bound
    return caught.value


def _outcome_unknown(error: Exception) -> bool:
    """Whether a failed save said it may have been stored after all (docs/integrations.md)."""
    return "may or may not" in str(error)


def test_lost_server_gives_clear_errors_never_a_hang_then_recovers() -> None:
    with NatsServer() as server:
        factory = make_factory(server.url, "Lost", AETHER_ES_TIMEOUT="1", AETHER_ES_POLL_INTERVAL="0.2")
        try:
            recorder = app_recorder(factory)
            originator = uuid4()
            recorder.insert_events([event(originator, 1)])
            subscription = recorder.subscribe(gt=None)
            assert next(subscription).originator_id == originator
            server.kill_sync()
            bound = 4 * 1 + 1 + 5  # the module's own bound plus slack for a loaded machine
            # A save sent in the instant before the client saw the server go is queued by nats-py and
            # sent when it reconnects; the recorder then says the events "may or may not" be stored.
            unknown = _outcome_unknown(
                _expect_operational_error(lambda: recorder.insert_events([event(originator, 2)]), bound))
            _expect_operational_error(lambda: recorder.select_events(originator), bound)
            _expect_operational_error(lambda: recorder.select_notifications(None, 10), bound)
            _expect_operational_error(recorder.max_notification_id, bound)
            _expect_operational_error(lambda: next(subscription), bound)  # the live feed ends with the error
            subscription.stop()
            server.start_sync()  # same port, same store
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert recorder.insert_events([event(originator, 2)]) == [2]
                    break
                except IntegrityError:
                    # as documented: retrying a save whose outcome was unknown stores it or finds it stored
                    assert unknown, "version 2 exists although every earlier save of it was refused for sure"
                    break
                except OperationalError as exc:
                    unknown = unknown or _outcome_unknown(exc)
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            assert [e.originator_version for e in recorder.select_events(originator)] == [1, 2]
            assert [n.id for n in recorder.select_notifications(None, 10)] == [1, 2]  # stored once
        finally:
            factory.close()


def test_paused_server_times_out_within_the_bound_then_recovers() -> None:
    with NatsServer() as server:
        factory = make_factory(server.url, "Paused", AETHER_ES_TIMEOUT="1")
        try:
            recorder = app_recorder(factory)
            originator = uuid4()
            recorder.insert_events([event(originator, 1)])
            server.pause_sync()  # returns once the server's threads are all stopped
            try:
                _expect_operational_error(lambda: recorder.select_events(originator), 4 * 1 + 1 + 5)
                started = time.monotonic()
                with pytest.raises(OperationalError, match="may or may not") as caught:
                    recorder.insert_events([event(originator, 2), event(originator, 3)])
                assert time.monotonic() - started < 4 * 1 + 1 + 5
                assert isinstance(caught.value, AetherError)
            finally:
                server.resume_sync()
            # whatever became of the unacknowledged save, the stream stays consistent: retrying
            # either stores it or reports it exists
            with contextlib.suppress(IntegrityError):
                recorder.insert_events([event(originator, 2), event(originator, 3)])
            versions = [e.originator_version for e in recorder.select_events(originator)]
            assert versions == [1, 2, 3]
            assert [n.id for n in recorder.select_notifications(None, 10)] == [1, 2, 3]
        finally:
            factory.close()


def test_saving_an_aggregate_twice_from_stale_copies_conflicts(url: str, fresh: str) -> None:
    class Counter(Application[UUID]):
        name = fresh

    first, second = Counter(env=app_env(url)), Counter(env=app_env(url))
    try:
        aggregate = Aggregate()
        first.save(aggregate)
        copy_one: Aggregate = first.repository.get(aggregate.id)
        copy_two: Aggregate = second.repository.get(aggregate.id)
        copy_one.trigger_event(Aggregate.Event)
        copy_two.trigger_event(Aggregate.Event)
        first.save(copy_one)
        with pytest.raises(IntegrityError):
            second.save(copy_two)
        assert second.repository.get(aggregate.id).version == 2
    finally:
        first.close()
        second.close()


def test_the_documented_example_runs(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example in docs/integrations.md and the README, run as written (but on this server)."""
    root = Path(__file__).resolve().parent.parent
    blocks = []
    for doc in ("docs/integrations.md", "README.md"):
        text = (root / doc).read_text()
        start = text.index("```python\nimport os\nfrom eventsourcing.application")
        blocks.append(text[start + len("```python\n"):text.index("```", start + 10)])
    assert blocks[0] == blocks[1]
    drop_streams(url, *streams_of("DogSchool"))
    monkeypatch.setenv("PERSISTENCE_MODULE", "unset")
    monkeypatch.setenv("AETHER_NATS_URL", url)
    exec(compile(blocks[0].replace("nats://127.0.0.1:4222", url), "integrations.md", "exec"), {})


# ---- a NATS cluster, R3 streams ----------------------------------------------------------------------------
def test_on_a_three_node_cluster_with_replicated_streams() -> None:
    """The same guarantees on R3 streams (the cluster reports a stale expectation as 10164), with
    each factory connected to a different server."""
    with NatsCluster(3) as cluster:
        factories = [JetStreamFactory(Environment("Clustered", {"AETHER_NATS_URL": url, "AETHER_ES_REPLICAS": "3"}))
                     for url in cluster.urls[:2]]
        try:
            recorders = [app_recorder(f) for f in factories]
            for _ in range(5):  # two servers' clients race for the same versions: one wins
                originator = uuid4()
                barrier = threading.Barrier(2)
                outcomes: list[str] = []

                def save(recorder: JetStreamApplicationRecorder, barrier: threading.Barrier = barrier,
                         originator: UUID = originator, outcomes: list[str] = outcomes) -> None:
                    barrier.wait()
                    try:
                        recorder.insert_events([event(originator, 1), event(originator, 2)])
                        outcomes.append("stored")
                    except IntegrityError:
                        outcomes.append("conflict")

                threads = [threading.Thread(target=save, args=(r,)) for r in recorders]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert sorted(outcomes) == ["conflict", "stored"]
            ids = recorders[1].insert_events([event(uuid4(), 1), event(uuid4(), 1)])
            assert ids == [11, 12]
            # read-your-writes: a replica that lacks the latest saves is completed from the stream leader
            assert [n.id for n in recorders[1].select_notifications(None, 100)] == list(range(1, 13))
            assert recorders[1].max_notification_id() == 12
            process = factories[0].process_recorder()
            process.insert_events([event(uuid4(), 1)], tracking=Tracking("up", 1))
            with pytest.raises(IntegrityError):
                factories[1].process_recorder().insert_events([event(uuid4(), 1)], tracking=Tracking("up", 1))
        finally:
            for f in factories:
                f.close()


def test_reads_answered_by_a_lagging_replica_still_hold_every_save() -> None:
    """Any replica of an R3 stream may answer a direct get, and a follower that has not applied the
    latest saves yet answers with a true but short prefix (nats-server 2.12+ ignores the
    ``min_last_seq`` that would make it defer: docs/reliability.md, finding 2). The lagging replica
    is played, deterministically, by a frozen copy of the stream made after the first 10 saves (a
    mirror, then promoted, so it stops following); the recorders' direct gets are sent to it. Every
    read must still hold all 20 saves, for the process that made them and for one that never wrote:
    the module completes its reads from the stream leader."""
    with NatsCluster(3) as cluster:
        env = {"AETHER_NATS_URL": ",".join(cluster.urls), "AETHER_ES_REPLICAS": "3"}
        factories = [JetStreamFactory(Environment("Lagging", env)) for _ in range(2)]
        try:
            writer, reader = (app_recorder(f) for f in factories)
            originator = uuid4()
            for version in range(1, 11):
                writer.insert_events([event(originator, version)])
            asyncio.run(_copy_stream(cluster.urls[0], writer.stream_name, "LAGGING_COPY", 10))
            for version in range(11, 21):
                writer.insert_events([event(originator, version)])
            for recorder in (writer, reader):
                recorder._store._direct = "$JS.API.DIRECT.GET.LAGGING_COPY"  # its direct gets reach the copy
            subject = writer._store._event_subject(str(originator))
            assert asyncio.run(_last_seq_on(cluster.urls[0], "LAGGING_COPY", subject)) == 10  # it lags by 10

            for recorder in (writer, reader):
                def versions(recorder: JetStreamApplicationRecorder = recorder, **kwargs: Any) -> list[int]:
                    return [e.originator_version for e in recorder.select_events(originator, **kwargs)]

                assert versions() == list(range(1, 21))
                assert versions(gt=8) == list(range(9, 21))
                assert versions(gt=15, limit=3) == [16, 17, 18]
                assert versions(lte=12) == list(range(1, 13))
                assert versions(desc=True, limit=1) == [20]
                assert versions(desc=True, limit=3) == [20, 19, 18]
                assert [n.id for n in recorder.select_notifications(None, 100)] == list(range(1, 21))
                assert [n.id for n in recorder.select_notifications(8, 5)] == list(range(8, 13))
                assert [n.id for n in recorder.select_notifications(5, 100, stop=15)] == list(range(5, 16))
                assert recorder.max_notification_id() == 20
            with pytest.raises(IntegrityError):
                reader.insert_events([event(originator, 20)])
            assert reader.insert_events([event(originator, 21)]) == [21]
        finally:
            for f in factories:
                f.close()


async def _copy_stream(url: str, source: str, name: str, messages: int) -> None:
    nc = await connect(url)
    try:
        await _frozen_copy(nc, source, name, messages=messages)
    finally:
        await close(nc)


async def _last_seq_on(url: str, stream: str, subject: str) -> int:
    nc = await connect(url)
    api = JsApi(nc)
    try:
        reply = await api.request(f"$JS.API.DIRECT.GET.{stream}", json.dumps({"last_by_subj": subject}).encode(),
                                  what="reading the copy")
        return int((reply.headers or {})["Nats-Sequence"])
    finally:
        await api.aclose()
        await close(nc)


# ---- a lost acknowledgement ----------------------------------------------------------------------------
class _OneWayProxy:
    """A TCP proxy in its own thread that can hold the server->client direction only (acks are
    delayed, requests still arrive) and counts the bytes sent client->server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.upstream_bytes = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._down_open = asyncio.Event()
        self._down_open.set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if upstream:
                        self.upstream_bytes += len(data)
                    else:
                        await self._down_open.wait()
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def hold_replies(self) -> None:
        self._loop.call_soon_threadsafe(self._down_open.clear)

    def release_replies(self) -> None:
        self._loop.call_soon_threadsafe(self._down_open.set)

    async def _shutdown(self) -> None:
        self._down_open.set()
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def _stream_messages(url: str, stream: str) -> int:
    async def count() -> int:
        nc = await connect(url)
        api = JsApi(nc)
        try:
            info = await api.api(f"STREAM.INFO.{stream}")
            return int(info["state"]["messages"])
        finally:
            await api.aclose()
            await close(nc)

    return asyncio.run(count())



def test_a_save_whose_acknowledgement_is_lost_is_confirmed_not_repeated(url: str, fresh: str) -> None:
    """The batch is stored but its ack is held past the timeout: the retry is refused by the
    server (same expectations), and the recorder finds its own save and returns its ids."""
    port = int(url.rsplit(":", 1)[1])
    proxy = _OneWayProxy(port)
    factory = make_factory(proxy.url, fresh, AETHER_ES_TIMEOUT="1")
    try:
        recorder = app_recorder(factory)
        first = uuid4()
        assert recorder.insert_events([event(first, 1)]) == [1]
        originator = uuid4()
        result: list[Any] = []
        proxy.hold_replies()
        sent_before = proxy.upstream_bytes
        worker = threading.Thread(target=lambda: result.append(
            recorder.insert_events([event(originator, 1), event(originator, 2), event(first, 2)])))
        worker.start()
        wait_for_sync(lambda: _stream_messages(url, events_stream(fresh)) == 4, message="the batch to be stored")
        stored_at = proxy.upstream_bytes
        assert stored_at > sent_before
        wait_for_sync(lambda: proxy.upstream_bytes > stored_at, message="the retry after the lost ack")
        proxy.release_replies()
        worker.join(30)
        assert result == [[2, 3, 4]]
        assert [n.id for n in recorder.select_notifications(None, 10)] == [1, 2, 3, 4]  # stored once
        assert _stream_messages(url, events_stream(fresh)) == 4
    finally:
        proxy.release_replies()
        factory.close()
        proxy.close()


# ---- the bounded wait ---------------------------------------------------------------------------------------
def test_the_bound_applies_per_step_of_a_long_call_and_to_a_stalled_one() -> None:
    from aether.integrations.eventsourcing._loop import LoopThread

    loop = LoopThread("bound-test")
    progress = [time.monotonic()]

    async def long_but_progressing() -> str:
        for _ in range(12):  # 1.2 s in all, a step every 0.1 s
            await asyncio.sleep(0.1)
            progress[0] = time.monotonic()
        return "done"

    async def stalled() -> str:
        await asyncio.sleep(60)
        return "never"

    try:
        assert loop.run(long_but_progressing(), 0.5, "long read", lambda: progress[0]) == "done"
        started = time.monotonic()
        with pytest.raises(JetStreamOperationalError, match="no result within"):
            loop.run(stalled(), 0.5, "stalled read", lambda: progress[0])
        assert time.monotonic() - started < 10
        with pytest.raises(JetStreamOperationalError, match="no result within"):
            loop.run(long_but_progressing(), 0.5, "no progress callback")  # the whole call is bounded
    finally:
        loop.close(None, 5)


def test_the_testing_helper_drops_an_applications_streams(url: str, fresh: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from aether.integrations.eventsourcing.testing import drop_streams as drop
    from aether.integrations.eventsourcing.testing import streams_of as streams

    assert streams(fresh) == [f"es-{fresh}", f"es-{fresh}__snapshots"]
    assert streams(fresh, {"AETHER_ES_STREAM": "mine"}) == ["mine", "mine__snapshots"]
    factory = make_factory(url, fresh)
    try:
        app_recorder(factory).insert_events([event(uuid4(), 1)])
        factory.aggregate_recorder("snapshots").insert_events([event(uuid4(), 1)])
    finally:
        factory.close()
    monkeypatch.setenv("AETHER_NATS_URL", url)
    drop(fresh)
    drop(fresh)  # nothing left: fine
    assert _stream_messages_or_none(url, f"es-{fresh}") is None
    assert _stream_messages_or_none(url, f"es-{fresh}__snapshots") is None


def _stream_messages_or_none(url: str, stream: str) -> int | None:
    try:
        return _stream_messages(url, stream)
    except JetStreamApiError:
        return None


# ---- authentication and TLS, from the environment ---------------------------------------------------------
def test_user_and_password_from_the_environment(tmp_path: Path) -> None:
    with NatsServer(extra_config='authorization { user: "es", password: "s3cret" }') as server:
        settings = {"AETHER_NATS_USER": "es", "AETHER_NATS_PASSWORD": "s3cret"}
        factory = make_factory(server.url, "Authed", **settings)
        try:
            assert app_recorder(factory).insert_events([event(uuid4(), 1)]) == [1]
        finally:
            factory.close()
        wrong = make_factory(server.url, "Authed", AETHER_NATS_USER="es", AETHER_NATS_PASSWORD="nope",
                             AETHER_NATS_CONNECT_TIMEOUT="3")
        try:
            with pytest.raises(OperationalError, match="refused the credentials"):
                wrong.application_recorder()
        finally:
            wrong.close()


def test_tls_with_a_client_certificate_from_the_environment(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    with NatsServer(extra_config=tls.server_config(verify=True)) as server:
        url = f"tls://127.0.0.1:{server.port}"
        factory = make_factory(url, "Tls", AETHER_NATS_TLS_CA=str(tls.ca), AETHER_NATS_TLS_CERT=str(tls.client_cert),
                               AETHER_NATS_TLS_KEY=str(tls.client_key))
        try:
            assert app_recorder(factory).insert_events([event(uuid4(), 1)]) == [1]
        finally:
            factory.close()
        without_cert = make_factory(url, "Tls", AETHER_NATS_TLS_CA=str(tls.ca), AETHER_NATS_CONNECT_TIMEOUT="3")
        try:
            with pytest.raises(AetherError):
                without_cert.application_recorder()
        finally:
            without_cert.close()
