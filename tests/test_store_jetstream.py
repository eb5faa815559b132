"""JetStream-specific store behaviour against a real nats-server."""

from __future__ import annotations

from typing import Any

import msgspec
import nats
import pytest

from aether import ActorSnapshot, Event
from aether.errors import (
    AetherError,
    CorruptEventError,
    DuplicateEventIdError,
    EventTooLargeError,
    InvalidInputError,
    InvalidNameError,
    NatsConnectionError,
    StoreError,
    VersionConflictError,
)
from aether.store import JetStreamEventStore, JetStreamOptions

pytestmark = pytest.mark.anyio


async def test_namespaces_are_isolated(nc: Any, unique_name: str) -> None:
    a = await JetStreamEventStore.create(nc, unique_name, namespace="tenant-a")
    b = await JetStreamEventStore.create(nc, unique_name, namespace="tenant-b")
    assert a.stream != b.stream
    await a.save_event(Event("E", "acc", 1, {"tenant": "a"}))
    assert await b.get_latest_version("acc") == 0
    assert await b.get_events("acc") == []
    await b.save_event(Event("E", "acc", 1, {"tenant": "b"}))
    assert [e.data["tenant"] for e in await a.get_events("acc")] == ["a"]
    assert [e.data["tenant"] for e in await b.get_events("acc")] == ["b"]
    assert await a.actor_ids() == ["acc"]


async def test_confusable_namespaces_and_ids_never_share_data(nc: Any, unique_name: str) -> None:
    stores = {ns: await JetStreamEventStore.create(nc, unique_name, namespace=ns)
              for ns in ("a.b", "a_b", "a-b", "a")}
    for ns, store in stores.items():
        for actor in ("a.b", "a_b", "a_2Eb"):
            await store.save_event(Event("E", actor, 1, {"ns": ns, "actor": actor}))
    for ns, store in stores.items():
        for actor in ("a.b", "a_b", "a_2Eb"):
            events = await store.get_events(actor)
            assert [(e.data["ns"], e.data["actor"]) for e in events] == [(ns, actor)]
        assert sorted(await store.actor_ids()) == sorted(["a.b", "a_b", "a_2Eb"])


async def test_garbage_message_gives_clear_error_and_spares_other_actors(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    await store.save_event(Event("E", "victim", 1))
    await store.save_event(Event("E", "bystander", 1))
    js = nc.jetstream()
    ack = await js.publish(f"aether.{store.stream}.e.victim", b"not an aether event")
    with pytest.raises(CorruptEventError) as info:
        await store.get_events("victim")
    assert info.value.actor_id == "victim" and info.value.sequence == ack.seq
    assert str(ack.seq) in str(info.value) and "victim" in str(info.value)
    with pytest.raises(CorruptEventError):
        await store.get_latest_version("victim")
    assert [e.version for e in await store.get_events("bystander")] == [1]
    await store.save_event(Event("E", "bystander", 2))
    # a well-formed event of another actor published on this actor's subject is also refused
    from aether.codec import encode_event

    await js.publish(f"aether.{store.stream}.e.other", encode_event(Event("E", "intruder", 1)))
    with pytest.raises(CorruptEventError, match="intruder"):
        await store.get_events("other")


async def test_oversized_event_rejected_and_nothing_stored(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    big = {"blob": "x" * (nc.max_payload + 10)}
    with pytest.raises(EventTooLargeError) as info:
        await store.save_event(Event("E", "big", 1, big))
    assert info.value.size > info.value.limit
    with pytest.raises(EventTooLargeError):
        await store.save_events([Event("E", "big", 1), Event("E", "big", 2, big)])
    assert await store.get_events("big") == []
    small = await JetStreamEventStore.create(nc, unique_name + "-s", max_event_size=1000)
    with pytest.raises(EventTooLargeError):
        await small.save_event(Event("E", "big", 1, {"blob": "x" * 2000}))
    with pytest.raises(InvalidInputError):
        await small.save_event(Event("E", "big", 1, {"blob": "x" * 2000}))


async def test_unencodable_event_is_input_error(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    with pytest.raises(InvalidInputError):
        await store.save_event(Event("E", "a", 1, {"x": object()}))
    assert await store.get_events("a") == []


async def test_bad_input_is_refused_before_any_io(nats_url: str, unique_name: str) -> None:
    """With the connection closed, any I/O would fail with a connection error: bad input must be
    refused first, with its own InvalidInputError (the same as the in-memory store)."""
    nc = await nats.connect(nats_url)
    store = await JetStreamEventStore.create(nc, unique_name)
    await store.save_event(Event("E", "known", 1))
    await nc.close()
    big = {"blob": "x" * 2_000_000}
    cases: list[Any] = [
        lambda: store.save_event(None), lambda: store.save_event({"version": 1}),  # type: ignore[arg-type]
        lambda: store.save_events(None),  # type: ignore[arg-type]
        lambda: store.save_events([Event("E", "a", 1), None]),  # type: ignore[list-item]
        lambda: store.save_event(Event("E", "known", 2, big)),  # cached actor
        lambda: store.save_event(Event("E", "unknown", 5, big)),  # would read its latest version first
        lambda: store.save_events([Event("E", "unknown", 5), Event("E", "unknown", 6, big)]),
        lambda: store.get_events(123), lambda: store.get_events("a", -1),  # type: ignore[arg-type]
        lambda: store.get_latest_version(None), lambda: store.get_latest_snapshot(""),  # type: ignore[arg-type]
        lambda: store.save_snapshot(Event("E", "a", 1)),  # type: ignore[arg-type]
        lambda: store.save_snapshot(ActorSnapshot("a", 1, {"blob": big})),
    ]
    for call in cases:
        with pytest.raises(InvalidInputError):
            await call()


async def test_create_refuses_what_is_not_a_client_and_bad_options(nc: Any, nats_url: str, unique_name: str) -> None:
    bad: Any
    for bad in (None, "nats://127.0.0.1:4222", nc.jetstream()):
        with pytest.raises(InvalidInputError, match="nats-py client"):
            await JetStreamEventStore.create(bad, unique_name)
    with pytest.raises(InvalidInputError, match="option"):
        await JetStreamEventStore.create(nc, unique_name, replica=3)  # a typo
    with pytest.raises(InvalidInputError, match="either options= or"):
        await JetStreamEventStore.create(nc, unique_name, options=JetStreamOptions(), replicas=1)
    with pytest.raises(InvalidInputError, match="JetStreamOptions"):
        await JetStreamEventStore.create(nc, unique_name, options={"replicas": 1})  # type: ignore[arg-type]
    field: str
    value: Any
    for field, value in [("cache_size", "10"), ("timeout", "5"), ("replicas", 1.0), ("max_age", float("nan")),
                         ("create_stream", 1), ("page_size", None), ("duplicate_window", -1)]:
        with pytest.raises(InvalidInputError, match=field):
            await JetStreamEventStore.create(nc, unique_name, **{field: value})
    closed = await nats.connect(nats_url)
    await closed.close()
    with pytest.raises(NatsConnectionError, match="closed"):
        await JetStreamEventStore.create(closed, unique_name)


async def test_replay_after_snapshot_reads_only_the_tail(nc: Any, nats_url: str, unique_name: str) -> None:
    writer = await JetStreamEventStore.create(nc, unique_name)
    await writer.save_events([Event("E", "long", v) for v in range(1, 501)])
    await writer.save_snapshot(ActorSnapshot("long", 500, {"n": 500}))
    await writer.save_events([Event("E", "long", v) for v in range(501, 511)])
    nc2 = await nats.connect(nats_url)
    try:
        reader = await JetStreamEventStore.create(nc2, unique_name)  # fresh cache
        snap = await reader.get_latest_snapshot("long")
        assert snap is not None and snap.version == 500
        before = nc2.stats["in_msgs"]
        tail = await reader.get_events("long", snap.version + 1)
        received = nc2.stats["in_msgs"] - before
        assert [e.version for e in tail] == list(range(501, 511))
        # besides the tail and the scan's end-of-batch status: four small replies asked together at
        # the start of every read (the actor's last message, its sequence index, its first message
        # and the count of its messages)
        assert received <= len(tail) + 5, f"read {received} messages for a tail of {len(tail)}"
    finally:
        await nc2.close()


async def test_paged_reads_leave_no_consumer(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name, page_size=7)
    await store.save_events([Event("E", "paged", v) for v in range(1, 101)])
    assert [e.version for e in await store.get_events("paged")] == list(range(1, 101))
    assert [e.version async for e in store.iter_events("paged", 50)] == list(range(50, 101))
    info = await store.stream_info()
    assert info["state"]["consumer_count"] == 0


async def test_bounded_cache_stays_correct(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name, cache_size=8)
    for round_ in range(1, 4):
        for i in range(40):
            await store.save_event(Event("E", f"c{i}", round_))
    assert store.cached_actors <= 8
    for i in range(40):
        assert await store.get_latest_version(f"c{i}") == 3


async def test_lost_ack_retry_from_another_instance(nc: Any, nats_url: str, unique_name: str) -> None:
    """A retry of an event already stored (its ack lost) succeeds without a duplicate."""
    a = await JetStreamEventStore.create(nc, unique_name)
    nc2 = await nats.connect(nats_url)
    try:
        b = await JetStreamEventStore.create(nc2, unique_name)
        assert await b.get_latest_version("x") == 0  # b caches version 0
        event = Event("E", "x", 1)
        await a.save_event(event)  # "first attempt", whose ack b never saw
        await b.save_event(event)  # the retry
        batch = [Event("E", "x", v) for v in (2, 3, 4)]
        await a.save_events(batch)
        await b.save_events(batch)
        with pytest.raises(VersionConflictError):
            await b.save_events([Event("E", "x", v) for v in (2, 3)])
        assert [e.version for e in await b.get_events("x")] == [1, 2, 3, 4]
    finally:
        await nc2.close()


async def test_bad_names_and_options(nc: Any) -> None:
    with pytest.raises(InvalidNameError):
        await JetStreamEventStore.create(nc, "bad.name")
    with pytest.raises(InvalidNameError):
        await JetStreamEventStore.create(nc, "EV", namespace="tenant*")
    with pytest.raises(InvalidInputError):
        JetStreamOptions(replicas=0)
    with pytest.raises(InvalidInputError):
        JetStreamOptions(storage="disk")  # type: ignore[arg-type]
    with pytest.raises(InvalidNameError):
        JetStreamOptions(subject_prefix="a.>")


async def test_incompatible_existing_stream(nc: Any, unique_name: str) -> None:
    js = nc.jetstream()
    await js.add_stream(name=unique_name, subjects=[f"other.{unique_name}.>"])
    with pytest.raises(StoreError, match="does not hold subjects"):
        await JetStreamEventStore.create(nc, unique_name)
    with pytest.raises(StoreError, match="does not exist"):
        await JetStreamEventStore.create(nc, unique_name + "-missing", create_stream=False)


async def test_existing_stream_is_upgraded_for_direct_and_atomic(nc: Any, unique_name: str) -> None:
    js = nc.jetstream()
    await js.add_stream(name=unique_name, subjects=[f"aether.{unique_name}.>"])
    store = await JetStreamEventStore.create(nc, unique_name)
    await store.save_events([Event("E", "u", 1), Event("E", "u", 2)])
    assert len(await store.get_events("u")) == 2


async def test_errors_are_aether_errors(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    await nc.close()
    with pytest.raises(AetherError):
        await store.save_event(Event("E", "closed", 1))
    with pytest.raises(AetherError):
        await store.get_events("closed")


def test_options_are_frozen() -> None:
    options = JetStreamOptions()
    with pytest.raises(AttributeError):
        options.replicas = 3  # type: ignore[misc]
    assert msgspec.json.encode({"ok": True})


async def test_history_larger_than_one_server_batch_is_read_whole(nc: Any, unique_name: str) -> None:
    """The server cuts a direct-get batch at about 64 MiB; the reader must page on, never truncate."""
    store = await JetStreamEventStore.create(nc, unique_name, storage="memory", page_size=200, timeout=30)
    blob = "x" * 500_000
    for start in range(1, 151, 10):
        await store.save_events([Event("E", "huge", v, {"blob": blob}) for v in range(start, start + 10)])
    versions = [e.version async for e in store.iter_events("huge")]
    assert versions == list(range(1, 151))
    info = await store.stream_info()
    assert info["state"]["bytes"] > 64 * 1024 * 1024


async def test_reused_event_id_at_another_version_is_not_acknowledged(nc: Any, unique_name: str) -> None:
    """The server de-duplicates by event id: a retry that rebuilt an event with the same id but
    another version (its writer had read a stale version) must not be reported as stored at that
    version — nor poison the version cache."""
    store = await JetStreamEventStore.create(nc, unique_name)
    await store.save_event(Event("E", "x", 1, id="request-1"))
    await store.save_event(Event("E", "x", 2, id="request-2"))
    with pytest.raises(DuplicateEventIdError) as info:
        await store.save_event(Event("E", "x", 3, id="request-1"))
    assert isinstance(info.value, VersionConflictError)
    assert info.value.current_version == 2 and info.value.stored_version == 1
    assert str(info.value) == ("event id 'request-1' is already used by version 1 of actor 'x': version 3 of "
                               "actor 'x' was not stored (its current version is 2); give every new event a new id")
    await store.save_event(Event("E", "x", 3, id="request-3"))  # the cache still tells the truth
    assert [(e.version, e.id) for e in await store.get_events("x")] == [
        (1, "request-1"), (2, "request-2"), (3, "request-3")]


async def test_a_hole_in_a_history_is_an_error_never_a_short_history(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    for v in range(1, 6):
        await store.save_event(Event("E", "holey", v))
    info = await store.stream_info()
    middle = info["state"]["first_seq"] + 2  # version 3
    await nc.request(f"$JS.API.STREAM.MSG.DELETE.{store.stream}", msgspec.json.encode({"seq": middle}))
    with pytest.raises(StoreError, match="gap"):
        await store.get_events("holey")
