"""A raising store observer never breaks an append or a read (aether.store.observer.guard): the
events are stored and read back, and every failed call is counted."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client

from aether import Event
from aether._observers import observer_failures
from aether.errors import VersionConflictError
from aether.store import JetStreamEventStore
from aether.store.observer import GuardedStoreObserver, guard

pytestmark = pytest.mark.anyio


class RaisingStoreObserver:
    """A StoreObserver whose every method raises (and records that it was called)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _raise(self, name: str) -> None:
        self.calls.append(name)
        raise RuntimeError(f"observer {name} is broken")

    def on_append(self, namespace: str, events: int, seconds: float) -> None:
        self._raise("on_append")

    def on_conflict(self, namespace: str) -> None:
        self._raise("on_conflict")

    def on_cache(self, namespace: str, hit: bool) -> None:
        self._raise("on_cache")

    def on_read(self, namespace: str, events: int, seconds: float) -> None:
        self._raise("on_read")


def _event(actor: str, version: int, **data: Any) -> Event:
    return Event(event_type="Happened", actor_id=actor, version=version, data=data)


def test_guard_wraps_once_and_keeps_none() -> None:
    observer = RaisingStoreObserver()
    guarded = guard(observer)
    assert isinstance(guarded, GuardedStoreObserver)
    assert guard(guarded) is guarded
    assert guard(None) is None


async def test_a_raising_observer_breaks_no_append_read_or_conflict(nc: Client, unique_name: str) -> None:
    observer = RaisingStoreObserver()
    store = await JetStreamEventStore.create(nc, unique_name, observer=observer)
    before = observer_failures()
    await store.save_event(_event("a-1", 1, n=1))
    await store.save_events([_event("a-1", 2, n=2), _event("a-1", 3, n=3)])
    with pytest.raises(VersionConflictError):
        await store.save_event(_event("a-1", 3, n=99))
    events = await store.get_events("a-1")
    assert [(e.version, e.data["n"]) for e in events] == [(1, 1), (2, 2), (3, 3)]
    assert {"on_append", "on_conflict", "on_cache", "on_read"} <= set(observer.calls)
    assert observer_failures() - before == len(observer.calls)
