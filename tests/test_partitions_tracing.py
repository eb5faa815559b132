"""Tracing a partitioned store: one span per call (the routing adds none)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aether import Event
from aether.store import JetStreamEventStore
from test_tracing import spans  # noqa: F401  (a fixture)

pytestmark = pytest.mark.anyio


async def test_one_span_per_call_on_a_partitioned_store(nc: Any, unique_name: str,
                                                       spans: InMemorySpanExporter) -> None:  # noqa: F811
    store = await JetStreamEventStore.create(nc, unique_name, storage="memory", partitions=3)
    spans.clear()
    await store.save_event(Event("E", "a", 1))
    await store.save_events([Event("E", "a", 2), Event("E", "a", 3)])
    assert [e.version for e in await store.get_events("a")] == [1, 2, 3]
    assert await store.get_latest_version("a") == 3
    names = [span.name for span in spans.get_finished_spans()]
    assert names.count("aether.store.append") == 2 and names.count("aether.store.read") == 2, names
    await store.aclose()
