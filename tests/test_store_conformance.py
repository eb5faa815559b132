"""The conformance suite against both stores (JetStream: real nats-server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from aether.store import InMemoryEventStore, JetStreamEventStore
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
