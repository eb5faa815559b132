"""A conformance suite every EventStore / SnapshotStore implementation must pass.

Subclass :class:`EventStoreConformance` in a test module and provide a ``store`` fixture
(and optionally ``second_store``: another instance over the same data, e.g. a separate
connection). Every test is async and runs under the anyio pytest plugin::

    class TestMyStore(EventStoreConformance):
        @pytest.fixture
        async def store(self):
            yield MyStore(...)
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from aether.errors import (
    AetherError,
    DuplicateEventIdError,
    EventTooLargeError,
    InvalidBatchError,
    InvalidInputError,
    InvalidNameError,
    InvalidVersionError,
    VersionConflictError,
)
from aether.event import ActorSnapshot, Event

__all__ = ["BAD_VALUES", "NASTY_ACTOR_IDS", "EventStoreConformance", "append_with_retry", "forged"]

BAD_VALUES: list[Any] = [object(), {1, 2}, frozenset(), b"bytes", bytearray(b"x"), (1, 2), float("nan"),
                         float("inf"), -float("inf"), 2**64, -(2**63) - 1, "\ud800", {1: "int key"},
                         {"k": {None: 1}}, [1, [object()]], Ellipsis, 1j]
"""Values that are not JSON values: ``Event(...)`` refuses each in ``data`` (and every store with it)."""

_TOO_BIG = 2 * 1024 * 1024  # above the default limit of every store (1 MiB)


def forged(event: Event, **fields: Any) -> Event:
    """A copy of ``event`` with ``fields`` set *without* the checks of ``Event`` (as a buggy or
    hostile caller could build one): for testing that stores check what they rely on."""
    copy = msgspec.structs.replace(event)
    for name, value in fields.items():
        msgspec.structs.force_setattr(copy, name, value)
    return copy

NASTY_ACTOR_IDS = ["a.b", "a_b", "a-b", "*", ">", "a b", "über", "user@example.com", "a.*", "_2E", "x" * 200]


async def append_with_retry(store: Any, actor_id: str, event_type: str = "Tick", attempts: int = 10_000) -> int:
    """The usual optimistic loop: read latest version, append latest+1, on conflict retry."""
    for _ in range(attempts):
        version: int = await store.get_latest_version(actor_id) + 1
        try:
            await store.save_event(Event(event_type, actor_id, version, {"v": version}))
            return version
        except VersionConflictError:
            await asyncio.sleep(0)
    raise AssertionError("too many conflicts")


def _versions(events: list[Event]) -> list[int]:
    return [e.version for e in events]


class EventStoreConformance:
    """The contract of DESIGN.md section 1 as tests. Provide a ``store`` fixture."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def second_store(self, store: Any) -> Any:
        """Another view of the same data; by default the same instance."""
        return store

    # ---- versions ------------------------------------------------------------------------
    async def test_empty_actor(self, store: Any) -> None:
        assert await store.get_latest_version("nobody") == 0
        assert await store.get_events("nobody") == []
        assert [e async for e in store.iter_events("nobody")] == []
        assert await store.get_latest_snapshot("nobody") is None

    async def test_append_and_read_back(self, store: Any) -> None:
        events = [Event("Happened", "acc-1", v, {"n": v, "nested": {"k": [1, "2"]}}, {"correlation_id": "c"})
                  for v in range(1, 6)]
        for e in events:
            await store.save_event(e)
        got = await store.get_events("acc-1")
        assert got == events
        assert await store.get_latest_version("acc-1") == 5
        assert [e async for e in store.iter_events("acc-1")] == events

    async def test_from_version(self, store: Any) -> None:
        for v in range(1, 11):
            await store.save_event(Event("E", "fv", v))
        assert _versions(await store.get_events("fv", 0)) == list(range(1, 11))
        assert _versions(await store.get_events("fv", 1)) == list(range(1, 11))
        assert _versions(await store.get_events("fv", 7)) == [7, 8, 9, 10]
        assert _versions(await store.get_events("fv", 10)) == [10]
        assert await store.get_events("fv", 11) == []
        assert _versions([e async for e in store.iter_events("fv", 4)]) == list(range(4, 11))

    async def test_first_version_must_be_one(self, store: Any) -> None:
        with pytest.raises(VersionConflictError) as info:
            await store.save_event(Event("E", "starts-at-2", 2))
        assert (info.value.actor_id, info.value.attempted_version, info.value.current_version) == ("starts-at-2", 2, 0)
        assert await store.get_events("starts-at-2") == []

    async def test_conflict_carries_versions(self, store: Any) -> None:
        for v in range(1, 4):
            await store.save_event(Event("E", "c", v))
        for attempted in (2, 3, 5, 100):
            with pytest.raises(VersionConflictError) as info:
                await store.save_event(Event("E", "c", attempted))
            assert info.value.attempted_version == attempted
            assert info.value.current_version == 3
            assert info.value.actor_id == "c"
        assert _versions(await store.get_events("c")) == [1, 2, 3]

    @pytest.mark.parametrize("version", [0, -1, -100])
    async def test_invalid_version(self, store: Any, version: int) -> None:
        with pytest.raises(InvalidVersionError):
            await store.save_event(Event("E", "bad-version", version))
        with pytest.raises(ValueError):
            await store.save_event(Event("E", "bad-version", version))
        assert await store.get_events("bad-version") == []

    async def test_invalid_from_version(self, store: Any) -> None:
        with pytest.raises(InvalidVersionError):
            await store.get_events("x", -1)

    async def test_invalid_actor_ids(self, store: Any) -> None:
        for bad in ["", "x" * 300]:
            with pytest.raises(InvalidNameError):
                await store.save_event(Event("E", bad, 1))

    # ---- bad input: refused alike by every store, before anything is stored ----------------
    @pytest.mark.parametrize("bad", [None, {}, {"event_type": "E", "actor_id": "bi", "version": 1}, "event", 42,
                                     ActorSnapshot("bi", 1, {})])
    async def test_save_event_refuses_what_is_not_an_event(self, store: Any, bad: Any) -> None:
        with pytest.raises(InvalidInputError, match=r"expected an aether\.Event"):
            await store.save_event(bad)
        assert await store.get_latest_version("bi") == 0

    async def test_save_events_refuses_bad_batches(self, store: Any) -> None:
        good = Event("E", "bb", 1)
        for bad in (None, "abc", good, 7, {"a": good}, [good, {"version": 2}], [good, None],
                    (good, Event("E", "bb", 2), "x")):
            with pytest.raises(InvalidInputError):
                await store.save_events(bad)
        with pytest.raises(InvalidBatchError, match="same event id twice"):
            await store.save_events([good, Event("E", "bb", 2, id=good.id)])
        assert await store.get_events("bb") == []
        await store.save_events((good, Event("E", "bb", 2)))  # a tuple is a sequence too
        assert _versions(await store.get_events("bb")) == [1, 2]

    @pytest.mark.parametrize("bad", [None, 123, b"a", ["a"], ""])
    async def test_reads_refuse_bad_actor_ids(self, store: Any, bad: Any) -> None:
        with pytest.raises(InvalidNameError):
            await store.get_events(bad)
        with pytest.raises(InvalidNameError):
            [e async for e in store.iter_events(bad)]
        with pytest.raises(InvalidNameError):
            await store.get_latest_version(bad)
        with pytest.raises(InvalidNameError):
            await store.get_latest_snapshot(bad)

    @pytest.mark.parametrize("bad", [-1, "1", 1.0, True, None])
    async def test_reads_refuse_bad_from_version(self, store: Any, bad: Any) -> None:
        with pytest.raises(InvalidVersionError):
            await store.get_events("fv-bad", bad)
        with pytest.raises(InvalidVersionError):
            [e async for e in store.iter_events("fv-bad", bad)]

    @pytest.mark.parametrize("bad", [None, {}, Event("E", "sb", 1), (("sb", 1, {}))])
    async def test_save_snapshot_refuses_what_is_not_a_snapshot(self, store: Any, bad: Any) -> None:
        with pytest.raises(InvalidInputError, match=r"expected an aether\.ActorSnapshot"):
            await store.save_snapshot(bad)
        assert await store.get_latest_snapshot("sb") is None

    async def test_forged_versions_and_actor_ids_are_refused(self, store: Any) -> None:
        base = Event("E", "forged", 1)
        cases: list[tuple[dict[str, Any], type[Exception]]] = [
            ({"version": 0}, InvalidVersionError), ({"version": True}, InvalidVersionError),
            ({"version": "1"}, InvalidVersionError), ({"version": 1.0}, InvalidVersionError),
            ({"actor_id": 5}, InvalidNameError), ({"actor_id": ""}, InvalidNameError)]
        for fields, error in cases:
            with pytest.raises(error):
                await store.save_event(forged(base, **fields))
            with pytest.raises(error):
                await store.save_events([forged(base, **fields), Event("E", "forged", 2)])
        with pytest.raises(InvalidVersionError):
            await store.save_snapshot(forged(ActorSnapshot("forged", 1, {}), version=0))  # type: ignore[arg-type]
        assert await store.get_events("forged") == []

    @pytest.mark.parametrize("value", BAD_VALUES, ids=lambda v: type(v).__name__)
    async def test_values_that_would_not_read_back_are_refused_and_never_poison(self, store: Any,
                                                                              value: Any) -> None:
        await store.save_event(Event("E", "poison", 1, {"ok": 1}))
        with pytest.raises(InvalidInputError):
            await store.save_event(Event("E", "poison", 2, {"v": value}))
        with pytest.raises(InvalidInputError):
            await store.save_event(Event("E", "poison", 2, {"ok": 1}, {"m": value}))
        with pytest.raises(InvalidInputError):
            await store.save_snapshot(ActorSnapshot("poison", 1, {"v": value}))
        await store.save_event(Event("E", "poison", 2, {"ok": 2}))
        assert [e.data for e in await store.get_events("poison")] == [{"ok": 1}, {"ok": 2}]

    async def test_oversized_events_are_refused_alike(self, store: Any) -> None:
        big = "x" * _TOO_BIG
        await store.save_event(Event("E", "big-one", 1))
        with pytest.raises(EventTooLargeError) as info:
            await store.save_event(Event("E", "big-one", 2, {"blob": big}))
        assert isinstance(info.value, InvalidInputError) and info.value.size > info.value.limit
        with pytest.raises(EventTooLargeError):
            await store.save_events([Event("E", "big-one", 2), Event("E", "big-one", 3, {"blob": big})])
        with pytest.raises(EventTooLargeError):
            await store.save_event(Event("E", "big-new", 1, {"blob": big}))
        with pytest.raises(EventTooLargeError):
            await store.save_snapshot(ActorSnapshot("big-one", 1, {"blob": big}))
        assert _versions(await store.get_events("big-one")) == [1]
        assert await store.get_events("big-new") == []
        await store.save_event(Event("E", "big-one", 2, {"blob": "x" * 100_000}))  # well within: fine
        assert _versions(await store.get_events("big-one")) == [1, 2]

    async def test_reused_event_id_is_an_accurate_error(self, store: Any) -> None:
        first = Event("E", "owner", 1)
        await store.save_event(first)
        with pytest.raises(DuplicateEventIdError) as info:
            await store.save_event(Event("E", "thief", 1, id=first.id))
        error = info.value
        assert isinstance(error, VersionConflictError)
        assert (error.actor_id, error.attempted_version, error.current_version) == ("thief", 1, 0)
        assert (error.event_id, error.stored_actor_id, error.stored_version) == (first.id, "owner", 1)
        assert "already used by version 1 of actor 'owner'" in str(error)
        assert "expected" not in str(error)
        with pytest.raises(DuplicateEventIdError) as info:
            await store.save_event(Event("E", "owner", 2, id=first.id))  # the same id at the next version
        assert info.value.current_version == 1 and info.value.stored_version == 1
        with pytest.raises(DuplicateEventIdError):
            await store.save_events([Event("E", "thief", 1), Event("E", "thief", 2, id=first.id)])
        assert await store.get_events("thief") == []
        assert await store.get_events("owner") == [first]

    async def test_every_refusal_is_an_aether_error(self, store: Any) -> None:
        calls: list[Any] = [lambda: store.save_event(None), lambda: store.save_events(None),
                            lambda: store.get_events(None), lambda: store.get_latest_version(None),
                            lambda: store.save_snapshot(None), lambda: store.get_latest_snapshot(None)]
        for call in calls:
            with pytest.raises(AetherError):
                await call()

    async def test_idempotent_retry_of_same_event(self, store: Any) -> None:
        event = Event("E", "retry", 1)
        await store.save_event(event)
        await store.save_event(event)  # a retry after a lost ack: success, no duplicate
        await store.save_event(Event("E", "retry", 2))
        with pytest.raises(VersionConflictError):
            await store.save_event(Event("E", "retry", 2))  # same version, different id: a conflict
        batch = [Event("E", "retry", v) for v in (3, 4, 5)]
        await store.save_events(batch)
        await store.save_events(batch)  # a retried batch: success, nothing duplicated
        assert _versions(await store.get_events("retry")) == [1, 2, 3, 4, 5]

    # ---- batches -------------------------------------------------------------------------
    async def test_save_events_atomic(self, store: Any) -> None:
        await store.save_events([Event("E", "batch", v) for v in range(1, 51)])
        await store.save_events([Event("E", "batch", v) for v in range(51, 53)])
        assert _versions(await store.get_events("batch")) == list(range(1, 53))

    async def test_conflicting_batch_stores_nothing(self, store: Any) -> None:
        await store.save_events([Event("E", "cb", v) for v in range(1, 4)])
        with pytest.raises(VersionConflictError) as info:
            await store.save_events([Event("E", "cb", v) for v in range(3, 8)])
        assert info.value.current_version == 3 and info.value.attempted_version == 3
        with pytest.raises(VersionConflictError):
            await store.save_events([Event("E", "new-cb", v) for v in range(2, 4)])
        assert _versions(await store.get_events("cb")) == [1, 2, 3]
        assert await store.get_events("new-cb") == []

    async def test_batch_bad_input(self, store: Any) -> None:
        with pytest.raises(InvalidBatchError):
            await store.save_events([])
        with pytest.raises(InvalidVersionError):
            await store.save_events([Event("E", "nc", 1), Event("E", "nc", 3)])
        with pytest.raises(InvalidBatchError):
            await store.save_events([Event("E", "m1", 1), Event("E", "m2", 2)])
        with pytest.raises(InvalidVersionError):
            await store.save_events([Event("E", "zero", 0), Event("E", "zero", 1)])
        with pytest.raises(InvalidBatchError):
            await store.save_events([Event("E", "big", v) for v in range(1, 1002)])
        for actor in ("nc", "m1", "m2", "zero", "big"):
            assert await store.get_events(actor) == []
        with pytest.raises(InvalidInputError):
            await store.save_events([Event("E", "m1", 1)] * 0)

    # ---- names ---------------------------------------------------------------------------
    async def test_nasty_actor_ids_round_trip_and_stay_apart(self, store: Any) -> None:
        for i, actor in enumerate(NASTY_ACTOR_IDS):
            for v in range(1, i + 2):
                await store.save_event(Event("E", actor, v, {"actor": actor}))
        for i, actor in enumerate(NASTY_ACTOR_IDS):
            events = await store.get_events(actor)
            assert _versions(events) == list(range(1, i + 2)), actor
            assert all(e.actor_id == actor and e.data == {"actor": actor} for e in events)
            assert await store.get_latest_version(actor) == i + 1

    # ---- snapshots -----------------------------------------------------------------------
    async def test_snapshots(self, store: Any) -> None:
        for v in range(1, 11):
            await store.save_event(Event("E", "snap", v))
        await store.save_snapshot(ActorSnapshot("snap", 5, {"total": 5}))
        await store.save_snapshot(ActorSnapshot("snap", 10, {"total": 10}))
        await store.save_snapshot(ActorSnapshot("snap", 7, {"total": 7}))  # older: never replaces
        latest = await store.get_latest_snapshot("snap")
        assert latest is not None and latest.version == 10 and latest.state == {"total": 10}
        assert await store.get_events("snap", latest.version + 1) == []
        await store.save_event(Event("E", "snap", 11))
        assert _versions(await store.get_events("snap", latest.version + 1)) == [11]
        with pytest.raises(InvalidVersionError):
            await store.save_snapshot(ActorSnapshot("snap", 0, {}))

    # ---- concurrency ---------------------------------------------------------------------
    async def test_concurrent_writers_one_actor(self, store: Any, second_store: Any) -> None:
        total, writers = 2000, 8
        counter = iter(range(total))
        stores = [store if i % 2 == 0 else second_store for i in range(writers)]

        async def writer(s: Any) -> None:
            for _ in counter:
                await append_with_retry(s, "hot")

        await asyncio.gather(*(writer(s) for s in stores))
        events = await store.get_events("hot")
        assert _versions(events) == list(range(1, total + 1))
        assert len({e.id for e in events}) == total
        assert await second_store.get_latest_version("hot") == total

    async def test_stale_writer_never_passes(self, store: Any, second_store: Any) -> None:
        await store.save_event(Event("E", "stale", 1))
        assert await second_store.get_latest_version("stale") == 1
        await second_store.save_event(Event("E", "stale", 2))
        # `store` still caches version 1; the server must refuse its stale append
        with pytest.raises(VersionConflictError) as info:
            await store.save_event(Event("E", "stale", 2))
        assert info.value.current_version == 2
        assert await store.get_latest_version("stale") == 2
        await store.save_event(Event("E", "stale", 3))
        assert _versions(await second_store.get_events("stale")) == [1, 2, 3]
