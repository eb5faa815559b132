"""The conformance suite against both stores (JetStream: real nats-server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats
import pytest

from aether.codec import encode_event
from aether.errors import EventTooLargeError
from aether.event import Event
from aether.store import InMemoryEventStore, JetStreamEventStore, JetStreamOptions
from aether.store.options import DEFAULT_MAX_EVENT_SIZE
from aether.testing.conformance import EventStoreConformance


class TestInMemoryStore(EventStoreConformance):
    @pytest.fixture
    def store(self) -> InMemoryEventStore:
        return InMemoryEventStore()


class TestJetStreamStore(EventStoreConformance):
    @pytest.fixture
    async def store(self, nc: Any, unique_name: str) -> AsyncIterator[JetStreamEventStore]:
        store = await JetStreamEventStore.create(nc, unique_name, storage="memory")
        yield store
        await store.aclose()

    @pytest.fixture
    async def second_store(self, nats_url: str, unique_name: str,
                           store: JetStreamEventStore) -> AsyncIterator[JetStreamEventStore]:
        nc2 = await nats.connect(nats_url)
        other = await JetStreamEventStore.create(nc2, unique_name, storage="memory")
        yield other
        await other.aclose()
        await nc2.close()


class TestJetStreamNamespacedFileStore(EventStoreConformance):
    @pytest.fixture
    async def store(self, nc: Any, unique_name: str) -> AsyncIterator[JetStreamEventStore]:
        store = await JetStreamEventStore.create(nc, unique_name, namespace="tenant-a.orders", storage="file")
        yield store
        await store.aclose()


class TestJetStreamPartitionedStore(EventStoreConformance):
    """The same contract on a namespace spread over three partition streams; the second store
    opens the namespace without ``partitions`` and adopts the recorded count."""

    @pytest.fixture
    async def store(self, nc: Any, unique_name: str) -> AsyncIterator[JetStreamEventStore]:
        store = await JetStreamEventStore.create(nc, unique_name, namespace="tenant-p", storage="memory",
                                                 partitions=3)
        assert len(store.streams) == 3
        yield store
        await store.aclose()

    @pytest.fixture
    async def second_store(self, nats_url: str, unique_name: str,
                           store: JetStreamEventStore) -> AsyncIterator[JetStreamEventStore]:
        nc2 = await nats.connect(nats_url)
        other = await JetStreamEventStore.create(nc2, unique_name, namespace="tenant-p", storage="memory")
        assert other.partitions == 3
        yield other
        await other.aclose()
        await nc2.close()


@pytest.fixture(params=["memory", "jetstream"])
async def any_store(request: pytest.FixtureRequest, nc: Any, unique_name: str) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield InMemoryEventStore()
        return
    store = await JetStreamEventStore.create(nc, unique_name, storage="memory")
    yield store
    await store.aclose()


@pytest.mark.anyio
async def test_both_stores_draw_the_size_limit_at_the_same_byte(any_store: Any) -> None:
    """An event that encodes to exactly the default limit is stored by both stores, one byte more is
    refused by both (a default nats-server, 1 MiB max_payload)."""
    assert JetStreamOptions().max_event_size == InMemoryEventStore().max_event_size == DEFAULT_MAX_EVENT_SIZE
    stamp = datetime(2024, 1, 1, tzinfo=UTC)

    def sized(version: int, size: int) -> Event:
        probe = Event("E", "edge", version, {"blob": "x" * 100_000}, id=f"edge-{version}", timestamp=stamp)
        overhead = len(encode_event(probe)) - 100_000
        event = Event("E", "edge", version, {"blob": "x" * (size - overhead)}, id=f"edge-{version}", timestamp=stamp)
        assert len(encode_event(event)) == size
        return event

    with pytest.raises(EventTooLargeError):
        await any_store.save_event(sized(1, DEFAULT_MAX_EVENT_SIZE + 1))
    await any_store.save_event(sized(1, DEFAULT_MAX_EVENT_SIZE))
    assert [e.version for e in await any_store.get_events("edge")] == [1]
