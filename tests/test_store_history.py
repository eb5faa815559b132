"""History reads through the per-actor sequence index (issue 12): always complete, or an error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import nats
import pytest

from aether import ActorSnapshot, Event
from aether._nats import Inbox
from aether.codec import encode_event
from aether.connect import connect
from aether.errors import CorruptEventError, StoreError
from aether.names import encode_token, stream_name
from aether.permissions import authorization_config, store_permissions
from aether.store import JetStreamEventStore
from aether.store._history import CHAIN_MAX, COUNT_MIN_WINDOW, DENSE_SPACING
from aether.store._seqindex import SeqIndex, decode_index, encode_index
from aether.testing import NatsCluster, NatsServer, wait_for
from test_store_cluster import _create

pytestmark = pytest.mark.anyio
_json = msgspec.json.encode


# ---- helpers ------------------------------------------------------------------------------------------
def _subject(store: JetStreamEventStore, actor: str, kind: str = "e") -> str:
    return f"aether.{store.stream}.{kind}.{encode_token(actor)}"


async def _api(nc: Any, call: str, body: dict[str, Any] | None = None) -> Any:
    msg = await nc.request(f"$JS.API.{call}", _json(body) if body is not None else b"", timeout=10)
    return msgspec.json.decode(msg.data)


async def _raw_publish(nc: Any, subject: str, payload: bytes, expected: int | None, msg_id: str) -> int:
    """Publish the way Aether's append does (Msg-Id and expected last subject sequence); the sequence."""
    headers = {"Nats-Msg-Id": msg_id}
    if expected is not None:
        headers["Nats-Expected-Last-Subject-Sequence"] = str(expected)
    msg = await nc.request(subject, payload, timeout=10, headers=headers)
    ack = msgspec.json.decode(msg.data)
    assert "error" not in ack, ack
    return int(ack["seq"])


async def _interleaved(nc: Any, store: JetStreamEventStore, actors: dict[str, int],
                       fillers: int = 20, filler: str = "filler") -> dict[str, list[int]]:
    """Write ``actors`` (name -> events) interleaved with ``fillers`` other actors, raw, as the
    store's appends do; return each actor's sequences."""
    seqs: dict[str, list[int]] = {}
    last: dict[str, int] = {}
    rounds = max(actors.values())
    for v in range(1, rounds + 1):
        names = [a for a, n in actors.items() if n >= v] + [f"{filler}-{f}" for f in range(fillers)]
        for name in names:
            event = Event("E", name, v, {"v": v})
            seq = await _raw_publish(nc, _subject(store, name), encode_event(event), last.get(name, 0), event.id)
            last[name] = seq
            seqs.setdefault(name, []).append(seq)
    return seqs


async def _stored_index(nc: Any, store: JetStreamEventStore, actor: str) -> SeqIndex | None:
    reply = await _api(nc, f"STREAM.MSG.GET.{store.stream}", {"last_by_subj": _subject(store, actor, "x")})
    if "error" in reply:
        return None
    import base64
    return decode_index(base64.b64decode(reply["message"]["data"]))


async def _read_fresh(nc: Any, name: str, actor: str, from_version: int = 0) -> tuple[list[int], JetStreamEventStore]:
    store = await JetStreamEventStore.create(nc, name)
    events = await store.get_events(actor, from_version)
    await store.wait_index_writes()
    return [e.version for e in events], store


# ---- the sequence index format -------------------------------------------------------------------------------
def test_index_round_trip_and_rejects() -> None:
    index = SeqIndex(3, [10, 11, 400, 1_000_000, 4_000_000_000])
    payload = encode_index(index)
    assert payload is not None
    back = decode_index(payload)
    assert back is not None and back.first_version == 3 and back.seqs == index.seqs
    assert back.last_version == 7 and back.seq_of(5) == 400 and back.covers(7) and not back.covers(8)
    assert encode_index(SeqIndex(1, [])) is None
    assert encode_index(SeqIndex(1, [5, 5])) is None  # not ascending
    assert encode_index(SeqIndex(1, [1, 2 + 2**32])) is None  # delta too large for the format
    for bad in (b"", b"\xae\x01xx", payload[:-1], payload[:3] + b"\x00" * 16, b"garbage" * 10):
        assert decode_index(bad) is None


def test_index_extension_keeps_the_newest_window() -> None:
    index = SeqIndex(1, [10, 20, 30])
    assert (e := index.extended(4, [40, 50], 10)).first_version == 1 and e.seqs == [10, 20, 30, 40, 50]
    assert (e := index.extended(3, [31, 41], 10)).seqs == [10, 20, 31, 41]  # overlapping: newer wins
    assert (e := index.extended(9, [90], 10)).first_version == 9 and e.seqs == [90]  # disjoint: replaced
    assert (e := index.extended(4, [40, 50], 3)).first_version == 3 and e.seqs == [30, 40, 50]


# ---- reads -----------------------------------------------------------------------------------------------
async def test_sparse_actor_is_read_by_sequence_after_its_first_read(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    seqs = await _interleaved(nc, store, {"sparse": 40, "small": 3})
    versions, first = await _read_fresh(nc, unique_name, "sparse")
    assert versions == list(range(1, 41))
    assert first.history_stats.scans == 1 and first.history_stats.index_writes == 1
    index = await _stored_index(nc, store, "sparse")
    assert index is not None and index.first_version == 1 and index.seqs == seqs["sparse"]
    versions, second = await _read_fresh(nc, unique_name, "sparse")
    assert versions == list(range(1, 41))
    assert second.history_stats.scans == 0 and second.history_stats.events_by_sequence == 40
    for start in (0, 1, 2, 17, 39, 40, 41, 100):
        got, reader = await _read_fresh(nc, unique_name, "sparse", start)
        assert got == list(range(max(start, 1), 41)), start
        assert reader.history_stats.scans == 0
    assert [e.version for e in await second.get_events("small")] == [1, 2, 3]
    long = COUNT_MIN_WINDOW + 10
    more = await _interleaved(nc, store, {"long": long}, filler="more")
    await _read_fresh(nc, unique_name, "long")
    versions, third = await _read_fresh(nc, unique_name, "long")
    assert versions == list(range(1, long + 1)) and third.history_stats.events_by_sequence == long
    assert sorted(await store.actor_ids()) == sorted([*seqs, *more])  # index subjects are not actors


async def test_dense_actor_is_scanned(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    await store.save_events([Event("E", "dense", v) for v in range(1, 301)])
    versions, reader = await _read_fresh(nc, unique_name, "dense")
    assert versions == list(range(1, 301))
    assert reader.history_stats.events_by_sequence == 0 and reader.history_stats.index_writes == 0
    # a dense actor that an index describes is still scanned (from the first wanted event)
    await _raw_publish(nc, _subject(store, "dense", "x"), encode_index(SeqIndex(1, list(range(1, 301)))) or b"",
                       None, "idx-dense")
    versions, reader = await _read_fresh(nc, unique_name, "dense", 5)
    assert versions == list(range(5, 301)) and reader.history_stats.events_by_sequence == 0
    assert DENSE_SPACING >= 1


async def test_snapshot_then_indexed_tail(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    await _interleaved(nc, store, {"acc": 30})
    await store.get_events("acc")
    await store.wait_index_writes()
    await store.save_snapshot(ActorSnapshot("acc", 30, {"n": 30}))
    for v in range(31, 41):
        await store.save_event(Event("E", "acc", v))
        await store.save_event(Event("E", "other", v - 30))
    reader = await JetStreamEventStore.create(nc, unique_name)
    snapshot = await reader.get_latest_snapshot("acc")
    assert snapshot is not None and snapshot.version == 30
    assert [e.version for e in await reader.get_events("acc", 31)] == list(range(31, 41))
    assert [e.version for e in await reader.get_events("acc")] == list(range(1, 41))


@pytest.mark.parametrize("n", [30, COUNT_MIN_WINDOW + 6])  # proven by predecessor headers / by the count
async def test_missing_stale_and_wrong_indexes_never_shorten_a_history(nc: Any, unique_name: str, n: int) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    seqs = await _interleaved(nc, store, {"a": n, "b": n})
    index_subject = _subject(store, "a", "x")
    cases: dict[str, SeqIndex | bytes | None] = {
        "missing": None,
        "stale": SeqIndex(1, seqs["a"][:n - 20]),  # 20 events after it: more than a chain walk, so a scan
        "slightly stale": SeqIndex(1, seqs["a"][:n - 3]),  # 3 after it: found along the predecessor chain
        "another actor's": SeqIndex(1, seqs["b"]),
        "shifted": SeqIndex(2, [*seqs["a"][1:], seqs["a"][-1] + 1]),
        "skips a message": SeqIndex(1, seqs["a"][:5] + seqs["a"][6:]),
        "past the end": SeqIndex(1, [*seqs["a"], seqs["a"][-1] + 100]),
        "garbage": b"\xaeI\x01not an index",
    }
    for label, index in cases.items():
        await _api(nc, f"STREAM.PURGE.{store.stream}", {"filter": index_subject})
        if isinstance(index, SeqIndex):
            payload = encode_index(index)
            assert payload is not None
            await _raw_publish(nc, index_subject, payload, None, f"idx-{label}")
        elif isinstance(index, bytes):
            await _raw_publish(nc, index_subject, index, None, f"idx-{label}")
        for start in (0, 4, n - 1):
            versions, _reader = await _read_fresh(nc, unique_name, "a", start)
            assert versions == list(range(max(start, 1), n + 1)), (label, start)
        repaired = await _stored_index(nc, store, "a")
        if label in ("missing", "stale", "garbage", "another actor's"):
            assert repaired is not None and repaired.seqs[-1] == seqs["a"][-1], label
    assert CHAIN_MAX >= 3


async def test_tail_found_along_the_predecessor_chain_including_atomic_batches(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    await _interleaved(nc, store, {"acc": 20})
    await store.get_events("acc")
    await store.wait_index_writes()
    await store.save_events([Event("E", "acc", v) for v in (21, 22, 23)])  # batch: one header for three
    await store.save_event(Event("E", "noise", 1))
    await store.save_event(Event("E", "acc", 24))
    versions, reader = await _read_fresh(nc, unique_name, "acc")
    assert versions == list(range(1, 25))
    assert reader.history_stats.chain_walks == 1 and reader.history_stats.scans == 0
    # a long enough tail found along the chain is added to the index
    index = await _stored_index(nc, store, "acc")
    assert index is not None and index.last_version == 24


async def test_concurrent_appends_during_reads(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    await _interleaved(nc, store, {"hot": 20})
    writer = await JetStreamEventStore.create(nc, unique_name)
    stop = asyncio.Event()
    written = [20]

    async def write() -> None:
        v = 21
        while not stop.is_set() and v <= 400:
            await writer.save_event(Event("E", "hot", v))
            for n in range(20):  # keep "hot" sparse in the stream
                await writer.save_event(Event("E", f"noise-{n}", v - 20))
            written[0] = v
            v += 1

    task = asyncio.ensure_future(write())
    try:
        reads = 0
        while not task.done() and reads < 60:
            known = written[0]
            reader = await JetStreamEventStore.create(nc, unique_name)
            versions = [e.version for e in await reader.get_events("hot")]
            assert versions == list(range(1, len(versions) + 1)), "a gap or duplicate"
            assert len(versions) >= known, (len(versions), known)
            reads += 1
    finally:
        stop.set()
        await task
    assert reads >= 5
    assert [e.version for e in await store.get_events("hot")] == list(range(1, written[0] + 1))


async def test_a_deleted_event_is_an_error_not_a_short_history(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    seqs = await _interleaved(nc, store, {"acc": 20})
    await store.get_events("acc")
    await store.wait_index_writes()
    reply = await _api(nc, f"STREAM.MSG.DELETE.{store.stream}", {"seq": seqs["acc"][9], "no_erase": True})
    assert reply.get("success"), reply
    for start in (0, 5):
        reader = await JetStreamEventStore.create(nc, unique_name)
        with pytest.raises(StoreError, match="gap"):
            await reader.get_events("acc", start)


async def test_corrupt_messages_are_reported_with_their_sequence(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    seqs = await _interleaved(nc, store, {"acc": 10})
    await store.get_events("acc")
    await store.wait_index_writes()
    # a foreign writer appends garbage to the actor's subject (after the indexed history)
    bad = await _raw_publish(nc, _subject(store, "acc"), b"not an event", seqs["acc"][-1], "garbage-1")
    for start in (0, 5, 11):
        reader = await JetStreamEventStore.create(nc, unique_name)
        with pytest.raises(CorruptEventError) as info:
            await reader.get_events("acc", start)
        assert info.value.sequence == bad
    # garbage in the middle of a history that was never indexed
    other = await JetStreamEventStore.create(nc, unique_name)
    last = 0
    for v in range(1, 4):
        event = Event("E", "mid", v)
        last = await _raw_publish(nc, _subject(store, "mid"), encode_event(event), last, event.id)
        await other.save_event(Event("E", f"n{v}", 1))
    middle = await _raw_publish(nc, _subject(store, "mid"), b"\xae\x01\xff", last, "garbage-2")
    for v in range(4, 7):
        event = Event("E", "mid", v)
        last = await _raw_publish(nc, _subject(store, "mid"), encode_event(event), None, event.id)
        await other.save_event(Event("E", f"n{v}", 1))
    for _ in range(2):
        reader = await JetStreamEventStore.create(nc, unique_name)
        with pytest.raises(CorruptEventError) as info:
            await reader.get_events("mid")
        assert info.value.sequence == middle


async def test_history_written_before_indexes_existed(nc: Any, unique_name: str) -> None:
    """A stream created by an earlier Aether (no rollups), events published as it did."""
    stream = stream_name(unique_name, None)
    config = {"name": stream, "subjects": [f"aether.{stream}.>"], "retention": "limits", "storage": "file",
              "num_replicas": 1, "max_age": 0, "max_bytes": -1, "max_msgs": -1,
              "duplicate_window": 120 * 1_000_000_000, "discard": "old", "allow_direct": True, "allow_atomic": True}
    assert "error" not in await _api(nc, f"STREAM.CREATE.{stream}", config)
    probe = JetStreamEventStore(nc, unique_name)
    seqs = await _interleaved(nc, probe, {"old": 25})
    store = await JetStreamEventStore.create(nc, unique_name)  # upgrades the stream: rollups allowed
    assert (await store.stream_info())["config"].get("allow_rollup_hdrs") is True
    versions, reader = await _read_fresh(nc, unique_name, "old")
    assert versions == list(range(1, 26))
    # a small sparse actor is first read along its predecessor chain, not by scanning the stream
    stats = reader.history_stats
    assert stats.scans == 0 and stats.chain_walks == 1 and stats.index_writes == 1
    versions, reader = await _read_fresh(nc, unique_name, "old")
    assert versions == list(range(1, 26)) and reader.history_stats.events_by_sequence == 25
    index = await _stored_index(nc, store, "old")
    assert index is not None and index.seqs == seqs["old"]


async def test_stream_that_refuses_rollups_is_read_without_index(nc: Any, unique_name: str) -> None:
    stream = stream_name(unique_name, None)
    config = {"name": stream, "subjects": [f"aether.{stream}.>"], "storage": "file", "num_replicas": 1,
              "allow_direct": True, "allow_atomic": True, "deny_purge": True}
    assert "error" not in await _api(nc, f"STREAM.CREATE.{stream}", config)
    probe = JetStreamEventStore(nc, unique_name)
    await _interleaved(nc, probe, {"acc": 12})
    for _ in range(2):
        versions, reader = await _read_fresh(nc, unique_name, "acc")
        assert versions == list(range(1, 13))
        assert reader.history_stats.index_writes == 0 and reader.history_stats.events_by_sequence == 0


async def test_r3_reads_through_the_index_from_every_server(
        nats_cluster_factory: Callable[..., NatsCluster]) -> None:
    cluster = nats_cluster_factory(3)
    conns = [await nats.connect(servers=[url]) for url in cluster.urls]
    try:
        writer = await _create(conns[0], "R3H")
        for v in range(1, 31):
            await writer.save_event(Event("E", "acc", v))
            await writer.save_event(Event("E", f"other-{v % 4}", v // 4 + 1)) if v % 4 else None
        assert [e.version for e in await writer.get_events("acc")] == list(range(1, 31))
        await writer.wait_index_writes()

        async def all_replicas_agree() -> bool:
            for nc in conns:
                reader = await _create(nc, "R3H")
                if [e.version for e in await reader.get_events("acc")] != list(range(1, 31)):
                    return False
            return True

        await wait_for(all_replicas_agree, timeout=30)
        # every server answers a read through the index; a read right after a write sees it
        for i, nc in enumerate(conns):
            store = await _create(nc, "R3H")
            await store.save_event(Event("E", "acc", 31 + i))
            versions = [e.version for e in await store.get_events("acc")]
            assert versions == list(range(1, 32 + i)), (i, versions[-3:])
    finally:
        for nc in conns:
            await nc.close()


async def test_read_only_user_reads_without_writing_indexes(
        nats_server_factory: Callable[..., NatsServer]) -> None:
    server = nats_server_factory(extra_config=authorization_config([
        {"user": "admin", "password": "admin-pw"},
        {"user": "auditor", "password": "auditor-pw",
         "permissions": store_permissions("EV", None, inbox_prefix="_INBOX_audit", read_only=True)},
    ]))
    admin = await nats.connect(server.url, user="admin", password="admin-pw")
    # through aether.connect: its error callback turns the server's asynchronous permission refusal into
    # an immediate failure of the index write (a plain nats.connect client would only time out)
    auditor = await connect(server.url, user="auditor", password="auditor-pw", inbox_prefix="_INBOX_audit")
    try:
        writer = await JetStreamEventStore.create(admin, "EV")
        await _interleaved(admin, writer, {"acc": 12})
        reader = await JetStreamEventStore.create(auditor, "EV", create_stream=False, timeout=2.0)
        for _ in range(3):
            assert [e.version for e in await reader.get_events("acc")] == list(range(1, 13))
            await reader.wait_index_writes()
        assert reader.history_stats.index_failures == 1 and reader.history_stats.index_writes == 0  # tried once
        assert auditor.is_connected
        # a writer's read keeps the index; the read-only reader then reads through it
        await writer.get_events("acc")
        await writer.wait_index_writes()
        before = reader.history_stats.events_by_sequence
        assert [e.version for e in await reader.get_events("acc")] == list(range(1, 13))
        assert reader.history_stats.events_by_sequence == before + 12
    finally:
        await admin.close()
        await auditor.close()


async def test_iter_events_stopped_early_leaves_nothing_running(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name)
    await _interleaved(nc, store, {"acc": 30})
    await store.get_events("acc")
    await store.wait_index_writes()
    for start in (0, 3):
        seen = []
        async for event in store.iter_events("acc", start):
            seen.append(event.version)
            if len(seen) == 5:
                break
        assert seen == list(range(max(start, 1), max(start, 1) + 5))
    assert Inbox.of(nc).in_flight == 0  # the abandoned reads left no request registered
    assert [e.version for e in await store.get_events("acc")] == list(range(1, 31))


async def test_partitioned_namespace_reads_each_actor_through_its_partitions_index(nc: Any,
                                                                                  unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name, partitions=3)
    actors = [f"acc-{i}" for i in range(60)]  # ~20 per partition: sparse
    for v in range(1, 21):
        for actor in actors:
            await store.save_event(Event("E", actor, v))
    for _ in range(2):
        reader = await JetStreamEventStore.create(nc, unique_name)
        for actor in actors:
            assert [e.version for e in await reader.get_events(actor)] == list(range(1, 21))
            assert [e.version for e in await reader.get_events(actor, 19)] == [19, 20]
        await reader.wait_index_writes()
    # the second reader found every index in the actor's own partition stream
    assert reader.history_stats.events_by_sequence == 60 * 20 + 60 * 2  # summed over the partitions
    assert reader.history_stats.scans == 0
    assert sorted(await reader.actor_ids()) == sorted(actors)
