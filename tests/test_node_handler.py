"""The append handler of ``aether.testing.node_process`` (what ``--stream`` nodes and the
single-writer fault tests run) answers a retried request with the version its event is stored at.

The router re-sends a request that got no answer in time with the same request id, so two
attempts of one request can run on the owner at once. Found by the fault loop
(docs/reliability.md): the second attempt read the latest version *before* the first attempt's
append landed and the history *after* it, recognised its own event, and replied with the stale
latest version, so the caller was told ``req@3`` while the event is version 4.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import nats
import pytest

from aether import Event
from aether.cluster.types import ActorRequest
from aether.connect import close
from aether.errors import VersionConflictError
from aether.store import JetStreamEventStore
from aether.testing import NatsServer
from aether.testing.node_process import _append_handler

pytestmark = pytest.mark.anyio


class _PausedAfterLatest:
    """The real store, except that ``get_latest_version`` waits, after reading, until released:
    the interleaving the fault loop caught, made deterministic."""

    def __init__(self, store: JetStreamEventStore) -> None:
        self._store = store
        self.has_read = asyncio.Event()
        self.release = asyncio.Event()

    async def get_latest_version(self, actor_id: str) -> int:
        version = await self._store.get_latest_version(actor_id)
        self.has_read.set()
        await self.release.wait()
        return version

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_concurrent_attempts_of_one_request_reply_with_the_stored_version(
        nats_server_factory: Callable[..., NatsServer]) -> None:
    server = nats_server_factory()
    nc = await nats.connect(server.url)
    try:
        store = await JetStreamEventStore.create(nc, "HANDLER")
        for version in range(1, 4):
            await store.save_event(Event("Requested", "acc", version, {"payload": f"old-{version}"}))
        request = ActorRequest(actor_id="acc", payload=b"new", request_id="req-retried", shard=0)
        paused = _PausedAfterLatest(store)
        second = asyncio.create_task(_append_handler(paused)(request))  # type: ignore[arg-type]
        await asyncio.wait_for(paused.has_read.wait(), 10)  # the second attempt has read latest = 3
        first = await _append_handler(store)(request)  # the first attempt appends version 4
        paused.release.set()
        assert first == b"4"
        assert await second == b"4"
        events = await store.get_events("acc")
        assert [(e.version, e.id) for e in events][-1] == (4, "req-retried")
        assert len(events) == 4
        # a later retry of the same request, once the actor has moved on, is not appended again
        await store.save_event(Event("Requested", "acc", 5, {"payload": "other"}))
        with pytest.raises(VersionConflictError):
            await _append_handler(store)(request)
        assert [e.id for e in await store.get_events("acc")].count("req-retried") == 1
    finally:
        await close(nc)
