"""Partitioned namespaces: the stable partition hash, stream names, the recorded count, routing."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from aether import ActorSnapshot, Event
from aether._nats import JsApi
from aether.cluster import ShardManager
from aether.errors import InvalidInputError, InvalidNameError, StoreError, VersionConflictError
from aether.names import encode_token, stream_name
from aether.store import JetStreamEventStore, JetStreamOptions
from aether.store.partitioning import (
    PARTITION_METADATA_KEY,
    PARTITIONS_METADATA_KEY,
    parse_partition_stream_name,
    partition_for,
    partition_stream_name,
)

pytestmark = pytest.mark.anyio

# fixed vectors: the function is BLAKE2b-64 (little-endian) of the UTF-8 actor id, modulo P.
# If one of these changes, existing partitioned namespaces become unreadable: never update them.
VECTORS: list[tuple[str, int, int, int]] = [
    # actor id, P=3, P=6, P=16
    ("a", 2, 2, 0),
    ("order-1", 2, 5, 5),
    ("user@example.com", 1, 4, 0),
    ("über", 2, 5, 7),
    ("*", 0, 3, 3),
    ("a.b", 1, 4, 14),
    (">", 2, 2, 8),
    ("a b", 0, 3, 11),
    ("x" * 256, 1, 1, 3),
]
ACTORS = [v[0] for v in VECTORS] + [f"acct-{i}" for i in range(200)]


@pytest.mark.parametrize(("actor", "p3", "p6", "p16"), VECTORS)
def test_partition_for_fixed_vectors(actor: str, p3: int, p6: int, p16: int) -> None:
    assert (partition_for(actor, 3), partition_for(actor, 6), partition_for(actor, 16)) == (p3, p6, p16)
    assert partition_for(actor, 1) == 0


def test_partition_for_is_the_same_in_another_process() -> None:
    code = ("import json, sys; from aether.store.partitioning import partition_for; "
            "actors = json.load(sys.stdin); "
            "print(json.dumps([[partition_for(a, p) for p in (2, 3, 6, 7)] for a in actors]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(ACTORS), capture_output=True,
                            text=True, env=env, check=True, timeout=60)
    assert json.loads(result.stdout) == [[partition_for(a, p) for p in (2, 3, 6, 7)] for a in ACTORS]


def test_partition_for_spreads_actors() -> None:
    counts = Counter(partition_for(f"actor-{i}", 6) for i in range(60_000))
    assert sorted(counts) == list(range(6))
    assert all(9_000 < n < 11_000 for n in counts.values()), counts


def test_partitions_align_with_shards_when_shard_count_is_a_multiple() -> None:
    shards = ShardManager(shard_count=48)
    for actor in ACTORS:
        assert partition_for(actor, 6) == shards.shard_for(actor) % 6


@pytest.mark.parametrize("bad", [0, -1, 257, True, "3", 1.5, None])
def test_invalid_partition_counts(bad: Any) -> None:
    with pytest.raises(InvalidInputError):
        JetStreamOptions(partitions=bad)
    with pytest.raises(InvalidInputError):
        partition_for("a", bad)


@pytest.mark.parametrize("bad", ["", 3, None, "\ud800"])
def test_partition_of_bad_actor_id(bad: Any) -> None:
    with pytest.raises(InvalidNameError):
        partition_for(bad, 3)


def test_default_partitions_is_one_and_not_explicit() -> None:
    assert JetStreamOptions().partitions == 1
    assert not JetStreamOptions().partitions_explicit
    assert JetStreamOptions(partitions=1).partitions_explicit
    assert JetStreamOptions(partitions=4).partitions == 4


def test_partition_stream_names_never_collide_with_namespaces() -> None:
    tokens = ["a", "p0", "p1", "_p0", "a_p1", "a-b", "_", "a.b", "p", "x___p1"]
    names: dict[str, tuple[str, str | None, int | None]] = {}
    for base in ("s", "s_p0", "s-p1"):
        for ns in [None, *(t for t in tokens if _valid_ns(t))]:
            full = stream_name(base, ns)
            for key, name in [((base, ns, None), full),
                              *(((base, ns, i), partition_stream_name(full, i)) for i in range(3))]:
                assert name not in names, (name, key, names.get(name))
                names[name] = key
    assert parse_partition_stream_name(partition_stream_name(stream_name("s", "a.b"), 12)) == (
        stream_name("s", "a.b"), 12)
    assert parse_partition_stream_name(stream_name("s", "_p0")) is None
    assert parse_partition_stream_name("s___p01") is None
    assert parse_partition_stream_name("s___p") is None


def _valid_ns(token: str) -> bool:
    try:
        stream_name("s", token)
    except InvalidNameError:
        return False
    return True


async def _subjects(nc: Any, stream: str) -> dict[str, int]:
    api = JsApi(nc)
    try:
        info = await api.api(f"STREAM.INFO.{stream}", {"subjects_filter": ">"})
    finally:
        await api.aclose()
    return dict(info.get("state", {}).get("subjects") or {})


async def test_one_partition_keeps_todays_names_and_subjects(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name, namespace="acme", storage="memory")
    assert store.partitions == 1
    assert store.streams == (stream_name(unique_name, "acme"),) == (store.stream,)
    assert store.partition_of("anyone") == 0
    await store.save_event(Event("E", "a.b", 1))
    await store.save_snapshot(ActorSnapshot("a.b", 1, {}))
    info = await store.stream_info()
    assert info["config"]["name"] == store.stream
    assert info["config"]["subjects"] == [f"aether.{store.stream}.>"]
    assert "metadata" not in info["config"] or PARTITIONS_METADATA_KEY not in info["config"]["metadata"]
    assert await _subjects(nc, store.stream) == {f"aether.{store.stream}.e.a_2Eb": 1,
                                                 f"aether.{store.stream}.s.a_2Eb": 1}
    await store.aclose()


async def test_every_actor_lives_in_its_partition_only(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name, namespace="acme", storage="memory", partitions=4)
    full = stream_name(unique_name, "acme")
    assert store.stream == full
    assert store.streams == tuple(f"{full}___p{i}" for i in range(4))
    actors = [f"u-{i}" for i in range(40)] + ["a.b", "über", "*", ">"]
    for actor in actors:
        await store.save_events([Event("E", actor, 1), Event("E", actor, 2)])
        await store.save_snapshot(ActorSnapshot(actor, 2, {"n": 2}))
    expected: dict[str, dict[str, int]] = {name: {} for name in store.streams}
    for actor in actors:
        home = store.streams[store.partition_of(actor)]
        expected[home][f"aether.{home}.e.{encode_token(actor)}"] = 2
        expected[home][f"aether.{home}.s.{encode_token(actor)}"] = 1
    for name in store.streams:
        assert await _subjects(nc, name) == expected[name]
    assert len({store.partition_of(a) for a in actors}) == 4
    assert sorted(await store.actor_ids()) == sorted(actors)
    for actor in actors:
        assert [e.version for e in await store.get_events(actor)] == [1, 2]
        assert [e.version async for e in store.iter_events(actor, 2)] == [2]
        assert await store.get_latest_version(actor) == 2
        snapshot = await store.get_latest_snapshot(actor)
        assert snapshot is not None and snapshot.state == {"n": 2}
    with pytest.raises(VersionConflictError) as conflict:
        await store.save_event(Event("E", "u-1", 2))
    assert conflict.value.current_version == 2
    info = await store.stream_info()
    assert info["partitions"] == 4 and len(info["streams"]) == 4
    assert info["state"]["messages"] == 3 * len(actors)
    assert info["state"]["num_subjects"] == 2 * len(actors)
    parts = await store.partition_info()
    assert [p["config"]["name"] for p in parts] == list(store.streams)
    for i, part in enumerate(parts):
        assert part["config"]["metadata"][PARTITIONS_METADATA_KEY] == "4"
        assert part["config"]["metadata"][PARTITION_METADATA_KEY] == str(i)
        assert part["config"]["subjects"] == [f"aether.{store.streams[i]}.>"]
    await store.aclose()


async def test_count_is_adopted_and_conflicts_refused(nc: Any, unique_name: str) -> None:
    first = await JetStreamEventStore.create(nc, unique_name, namespace="t", storage="memory", partitions=3)
    await first.save_event(Event("E", "x", 1))
    adopted = await JetStreamEventStore.create(nc, unique_name, namespace="t", storage="memory")
    assert adopted.partitions == 3 and adopted.streams == first.streams
    assert await adopted.get_latest_version("x") == 1
    same = await JetStreamEventStore.create(nc, unique_name, namespace="t", storage="memory", partitions=3)
    assert same.streams == first.streams
    readonly = await JetStreamEventStore.create(nc, unique_name, namespace="t", create_stream=False)
    assert readonly.partitions == 3
    for wrong in (1, 2, 6):
        with pytest.raises(InvalidInputError, match="re-partitioning is not supported"):
            await JetStreamEventStore.create(nc, unique_name, namespace="t", partitions=wrong)
    single = await JetStreamEventStore.create(nc, unique_name, namespace="single", storage="memory")
    await single.save_event(Event("E", "x", 1))
    with pytest.raises(InvalidInputError, match="re-partitioning is not supported"):
        await JetStreamEventStore.create(nc, unique_name, namespace="single", partitions=3)
    reopened = await JetStreamEventStore.create(nc, unique_name, namespace="single", partitions=1)
    assert reopened.streams == single.streams
    for store in (first, adopted, same, readonly, single, reopened):
        await store.aclose()


async def test_missing_partitioned_namespace_without_create(nc: Any, unique_name: str) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await JetStreamEventStore.create(nc, unique_name, partitions=3, create_stream=False)
    store = await JetStreamEventStore.create(nc, unique_name, storage="memory", partitions=3)
    api = JsApi(nc)
    try:
        await api.api(f"STREAM.DELETE.{store.streams[2]}")
        with pytest.raises(StoreError, match="does not exist"):
            await JetStreamEventStore.create(nc, unique_name, create_stream=False)
        again = await JetStreamEventStore.create(nc, unique_name, storage="memory")  # recreates partition 2
        assert again.partitions == 3
        assert (await api.api(f"STREAM.INFO.{store.streams[2]}"))["config"]["metadata"][PARTITION_METADATA_KEY] == "2"
        await again.aclose()
    finally:
        await api.aclose()
    await store.aclose()


async def test_an_unpartitioned_stream_wins_over_a_stray_partition_stream(nc: Any, unique_name: str) -> None:
    single = await JetStreamEventStore.create(nc, unique_name, storage="memory")
    api = JsApi(nc)
    try:
        config = {"name": partition_stream_name(single.stream, 0), "storage": "memory",
                  "subjects": [f"aether.{partition_stream_name(single.stream, 0)}.>"],
                  "metadata": {PARTITIONS_METADATA_KEY: "3", PARTITION_METADATA_KEY: "0"}}
        await api.api(f"STREAM.CREATE.{config['name']}", config)
    finally:
        await api.aclose()
    # the unpartitioned stream is the namespace (as before partitions existed); asking for
    # partitions is refused rather than silently using the stray partition stream
    again = await JetStreamEventStore.create(nc, unique_name)
    assert again.streams == (single.stream,)
    with pytest.raises(InvalidInputError, match="re-partitioning"):
        await JetStreamEventStore.create(nc, unique_name, partitions=3)
    await again.aclose()
    await single.aclose()


async def test_foreign_partition_stream_is_refused(nc: Any, unique_name: str) -> None:
    """A partition stream recording another count than partition 0 is refused, not written to."""
    store = await JetStreamEventStore.create(nc, unique_name, storage="memory", partitions=2)
    api = JsApi(nc)
    try:
        info = await api.api(f"STREAM.INFO.{store.streams[1]}")
        config = info["config"]
        config["metadata"] = {**config.get("metadata", {}), PARTITIONS_METADATA_KEY: "5"}
        await api.api(f"STREAM.UPDATE.{store.streams[1]}", config)
    finally:
        await api.aclose()
    with pytest.raises(InvalidInputError, match="re-partitioning"):
        await JetStreamEventStore.create(nc, unique_name)
    await store.aclose()


async def test_partition_of_matches_routing(nc: Any, unique_name: str) -> None:
    store = await JetStreamEventStore.create(nc, unique_name, storage="memory", partitions=6)
    assert [store.partition_of(a) for a, *_ in VECTORS] == [v[2] for v in VECTORS]
    with pytest.raises(InvalidNameError):
        store.partition_of("")
    with pytest.raises(InvalidNameError):
        await store.get_events("")
    pairs = list(itertools.islice(((a, store.partition_of(a)) for a in ACTORS), 30))
    for actor, _ in pairs:
        await store.save_event(Event("E", actor, 1))
    for actor, part in pairs:
        assert f"aether.{store.streams[part]}.e.{encode_token(actor)}" in await _subjects(nc, store.streams[part])
    await store.aclose()
