"""A raising observer never breaks a cluster component (aether._observers): the leader still
announces "deposed" when it steps down, shard notifications still arrive, the failures are counted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.client import Client

from aether._observers import call_listener, call_observer, observer_failures
from aether.cluster import ClusterManager, LeaderElection
from aether.errors import InvalidInputError
from aether.testing.waiting import wait_for

pytestmark = pytest.mark.anyio


class RaisingObserver:
    """A ClusterObserver whose every method raises (and records that it was called)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _raise(self, name: str) -> None:
        self.calls.append(name)
        raise RuntimeError(f"observer {name} is broken")

    def on_members(self, cluster: str, node: str, count: int) -> None:
        self._raise("on_members")

    def on_leadership(self, cluster: str, node: str, is_leader: bool, term: int) -> None:
        self._raise("on_leadership")

    def on_lease_renewal(self, cluster: str, node: str, seconds: float, ok: bool) -> None:
        self._raise("on_lease_renewal")

    def on_shards_owned(self, cluster: str, node: str, count: int) -> None:
        self._raise("on_shards_owned")

    def on_shard_moves(self, cluster: str, node: str, moves: int) -> None:
        self._raise("on_shard_moves")

    def on_handoff(self, cluster: str, node: str, shards: int, seconds: float) -> None:
        self._raise("on_handoff")


def _name(unique_name: str) -> str:
    return unique_name.replace(".", "-")[:40]


async def test_leader_still_announces_deposed_when_the_observer_raises(nc: Client, unique_name: str) -> None:
    observer = RaisingObserver()
    election = LeaderElection(nc, cluster=_name(unique_name), node_id="n1", lease_ttl=2.0, observer=observer)
    elected: list[int] = []
    deposed: list[int] = []
    election.on_elected(elected.append)
    election.on_deposed(deposed.append)
    before = observer_failures()
    await election.start()
    try:
        await wait_for(lambda: bool(elected), timeout=15, message="the election")
        assert election.is_leader
    finally:
        await election.stop()  # steps down: on_leadership(False) raises, "deposed" must still go out
    assert deposed == elected, (elected, deposed)
    assert observer.calls.count("on_leadership") == 2
    assert observer_failures() >= before + 2


async def test_shard_notifications_arrive_when_the_observer_raises(nc: Client, unique_name: str) -> None:
    observer = RaisingObserver()
    acquired: list[frozenset[int]] = []
    released: list[frozenset[int]] = []
    node = ClusterManager(nc, node_id="n1", cluster=_name(unique_name), observer=observer)
    node.on_shards_acquired(acquired.append)
    node.on_shards_released(released.append)
    async with node:
        await node.wait_ready(timeout=15)
        await wait_for(lambda: bool(acquired), timeout=15, message="shards acquired")
        owned = node.owned_shards()
        assert owned and set().union(*acquired) == owned
    assert set().union(*released) == owned  # the graceful stop released every shard
    assert "on_shards_owned" in observer.calls


async def test_raising_listener_is_counted_and_the_next_one_still_runs() -> None:
    seen: list[int] = []

    def broken(value: int) -> None:
        raise ValueError("listener bug")

    async def fine(value: int) -> None:
        seen.append(value)

    before = observer_failures()
    await call_listener(broken, 1)
    await call_listener(fine, 2)
    call_observer(broken, 3)
    assert seen == [2]
    assert observer_failures() == before + 2


async def test_listener_cancellation_propagates() -> None:
    async def slow(value: int) -> None:
        await asyncio.sleep(60)

    task = asyncio.ensure_future(call_listener(slow, 1))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_non_callable_listener_is_invalid_input(nc: Client, unique_name: str) -> None:
    election = LeaderElection(nc, cluster=_name(unique_name), node_id="n1")
    bad: Any = "not callable"
    with pytest.raises(InvalidInputError):
        election.on_elected(bad)
    with pytest.raises(ValueError):  # input errors are also ValueErrors
        election.on_deposed(bad)
