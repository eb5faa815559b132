"""HeadBatcher (aether.aggregate._heads): how concurrent head reads are grouped; no server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from aether.aggregate._heads import HeadBatcher
from aether.errors import CorruptEventError, StoreError
from aether.event import ActorHead

pytestmark = pytest.mark.anyio


class FakeStore:
    """get_heads answering version = len(actor id); holds each call until released."""

    def __init__(self, *, bad: frozenset[str] = frozenset(), omit: frozenset[str] = frozenset()) -> None:
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.bad = bad
        self.omit = omit

    async def get_heads(self, actor_ids: Sequence[str]) -> dict[str, ActorHead]:
        self.calls.append(list(actor_ids))
        await self.gate.wait()
        for actor in actor_ids:
            if actor in self.bad:
                raise CorruptEventError("not an Aether event", actor_id=actor)
        return {a: ActorHead(len(a)) for a in actor_ids if a not in self.omit}


async def test_a_lone_read_goes_at_once_and_a_burst_is_one_batch() -> None:
    store = FakeStore()
    batcher = HeadBatcher(store.get_heads)
    assert (await batcher.get("abc")).version == 3
    assert store.calls == [["abc"]]
    store.calls.clear()
    heads = await asyncio.gather(*(batcher.get(f"a{i}") for i in range(100)))
    assert [h.version for h in heads] == [len(f"a{i}") for i in range(100)]
    assert store.calls == [[f"a{i}" for i in range(100)]]


async def test_reads_arriving_while_batches_are_in_flight_wait_for_the_next_batch() -> None:
    store = FakeStore()
    store.gate.clear()
    batcher = HeadBatcher(store.get_heads)
    first = [asyncio.ensure_future(batcher.get(f"x{i}")) for i in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    second = [asyncio.ensure_future(batcher.get(f"y{i}")) for i in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    third = [asyncio.ensure_future(batcher.get(f"z{i}")) for i in range(50)]  # two batches in flight already
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(store.calls) == 2
    store.gate.set()
    await asyncio.gather(*first, *second, *third)
    assert store.calls[2] == [f"z{i}" for i in range(50)]  # the ones that waited went together


async def test_one_bad_actor_fails_only_its_own_reads_and_the_same_actor_twice_is_read_once() -> None:
    store = FakeStore(bad=frozenset({"broken"}))
    batcher = HeadBatcher(store.get_heads)
    results = await asyncio.gather(batcher.get("broken"), batcher.get("ok"), batcher.get("ok"), batcher.get("fine"),
                                   return_exceptions=True)
    assert isinstance(results[0], CorruptEventError)
    assert results[1] == results[2] == ActorHead(2)
    assert results[3] == ActorHead(4)
    assert store.calls[0] == ["broken", "ok", "fine"]  # then one by one after the batch failed
    assert sorted(map(tuple, store.calls[1:])) == [("broken",), ("fine",), ("ok",)]


async def test_an_actor_the_store_left_out_is_an_aether_error_not_a_hang() -> None:
    batcher = HeadBatcher(FakeStore(omit=frozenset({"ghost"})).get_heads)
    with pytest.raises(StoreError, match="no head"):
        await asyncio.wait_for(batcher.get("ghost"), 5)


async def test_a_cancelled_reader_does_not_disturb_the_others() -> None:
    store = FakeStore()
    store.gate.clear()
    batcher = HeadBatcher(store.get_heads)
    doomed = asyncio.ensure_future(batcher.get("doomed"))
    kept = asyncio.ensure_future(batcher.get("kept"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    doomed.cancel()
    store.gate.set()
    assert await kept == ActorHead(4)
    with pytest.raises(asyncio.CancelledError):
        await doomed
    # a reader cancelled before its batch starts is not asked for
    store.calls.clear()
    store.gate.clear()
    blockers = [asyncio.ensure_future(batcher.get(f"b{i}")) for i in range(2)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    more = asyncio.ensure_future(batcher.get("b-later"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    late = asyncio.ensure_future(batcher.get("late"))
    await asyncio.sleep(0)
    late.cancel()
    store.gate.set()
    await asyncio.gather(*blockers, more)
    assert all("late" not in call for call in store.calls)


def test_a_batcher_used_from_a_second_event_loop_still_answers() -> None:
    store = FakeStore()
    store.gate.clear()
    batcher = HeadBatcher(store.get_heads)

    left: list[asyncio.Future[ActorHead]] = []

    async def leave_two_batches_in_flight() -> None:
        left.append(asyncio.ensure_future(batcher.get("x")))
        for _ in range(3):
            await asyncio.sleep(0)
        left.append(asyncio.ensure_future(batcher.get("y")))
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(store.calls) == 2

    loop = asyncio.new_event_loop()
    loop.run_until_complete(leave_two_batches_in_flight())
    loop.close()  # its tasks never finish: the batcher must not wait for them
    store.gate = asyncio.Event()  # (the old one belongs to the closed loop)
    store.gate.set()
    assert asyncio.run(asyncio.wait_for(batcher.get("next"), 5)) == ActorHead(4)
