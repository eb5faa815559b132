"""Prometheus metrics: store and bus counters match the work done, registries, HTTP, and life without
prometheus-client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from prometheus_client import REGISTRY, CollectorRegistry

from aether import Event, EventBus, NATSEventBus, VersionConflictError
from aether.bus.wire import MAGIC, pack_header
from aether.codec import encode_event
from aether.errors import InvalidInputError
from aether.metrics import BusMetrics, StoreMetrics, metrics_available, start_metrics_server
from aether.store import JetStreamEventStore
from aether.store.observer import StoreObserver

pytestmark = pytest.mark.anyio


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


# ---- store ---------------------------------------------------------------------------------
async def test_store_metrics_match_the_work_done(client: Client, unique_name: str) -> None:
    registry = CollectorRegistry()
    metrics = StoreMetrics(registry)
    observer: StoreObserver = metrics  # implements the store's protocol
    store = await JetStreamEventStore.create(client, unique_name, namespace="tenant-a", observer=observer,
                                             storage="memory")
    plain = await JetStreamEventStore.create(client, unique_name, observer=observer, storage="memory")
    try:
        for v in range(1, 6):
            await store.save_event(Event("Deposited", "acct-1", v))  # miss, then 4 hits
        await store.save_event(Event("Deposited", "acct-2", 1))  # miss
        with pytest.raises(VersionConflictError):
            await store.save_event(Event("Deposited", "acct-2", 1))  # hit, conflict
        await store.save_events([Event("Deposited", "acct-3", v) for v in (1, 2, 3)])  # one call, 3 events
        assert len(await store.get_events("acct-1")) == 5
        assert len(await store.get_events("acct-1", from_version=4)) == 2
        await plain.save_event(Event("Opened", "acct-9", 1))

        ns = {"namespace": "tenant-a"}
        assert value(registry, "aether_store_appends_total", **ns) == 7
        assert value(registry, "aether_store_appended_events_total", **ns) == 9
        assert value(registry, "aether_store_append_seconds_count", **ns) == 7
        assert value(registry, "aether_store_append_seconds_sum", **ns) > 0
        assert value(registry, "aether_store_conflicts_total", **ns) == 1
        assert value(registry, "aether_store_cache_hits_total", **ns) == 5
        assert value(registry, "aether_store_cache_misses_total", **ns) == 2
        assert value(registry, "aether_store_reads_total", **ns) == 2
        assert value(registry, "aether_store_events_read_total", **ns) == 7
        assert value(registry, "aether_store_read_seconds_count", **ns) == 2
        assert value(registry, "aether_store_appends_total", namespace="") == 1
        # the user's registry is honoured: nothing went to the global one
        assert REGISTRY.get_sample_value("aether_store_appends_total", ns) is None
    finally:
        await store.aclose()
        await plain.aclose()


async def test_one_metrics_object_per_registry() -> None:
    registry = CollectorRegistry()
    first = StoreMetrics(registry)
    with pytest.raises(InvalidInputError):
        StoreMetrics(registry)
    first.on_append("ns", 1, 0.001)  # the failed second registration left the first intact
    assert value(registry, "aether_store_appends_total", namespace="ns") == 1
    first.unregister()
    StoreMetrics(registry)  # the names are free again
    bus_metrics = BusMetrics(registry)
    with pytest.raises(InvalidInputError):
        BusMetrics(registry)
    bus_metrics.unregister()
    BusMetrics(registry)


async def test_default_registry_is_the_global_one() -> None:
    metrics = BusMetrics()
    try:
        assert metrics.registry is REGISTRY
        assert REGISTRY.get_sample_value("aether_bus_subscriptions") == 0
    finally:
        metrics.unregister()


# ---- bus -----------------------------------------------------------------------------------
async def test_bus_metrics_match_the_work_done() -> None:
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)
    bus = EventBus(metrics=metrics)
    fast = bus.subscribe("tenant-a.>")
    slow = bus.subscribe(">", buffer_size=3)
    for v in range(1, 11):
        await bus.publish("tenant-a.orders", Event("Placed", "o", v))
    for v in range(1, 3):
        await bus.publish("tenant-b", Event("Placed", "o", v))
    assert value(registry, "aether_bus_published_total", namespace="tenant-a.orders") == 10
    assert value(registry, "aether_bus_published_total", namespace="tenant-b") == 2
    assert value(registry, "aether_bus_delivered_total", namespace="tenant-a.orders") == 13  # 10 fast + 3 slow
    assert value(registry, "aether_bus_dropped_total", namespace="tenant-a.orders") == 7
    assert value(registry, "aether_bus_dropped_total", namespace="tenant-b") == 2
    assert value(registry, "aether_bus_subscriptions") == 2
    assert slow.dropped == 9 and fast.dropped == 0
    fast.close()
    assert value(registry, "aether_bus_subscriptions") == 1
    second = EventBus(metrics=metrics)  # several buses sum up
    await second.publish("tenant-b", Event("Placed", "o", 3))
    assert value(registry, "aether_bus_published_total", namespace="tenant-b") == 3
    await bus.aclose()
    await second.aclose()
    # closed buses keep their counts: counters never go down
    assert value(registry, "aether_bus_published_total", namespace="tenant-a.orders") == 10
    assert value(registry, "aether_bus_published_total", namespace="tenant-b") == 3
    assert value(registry, "aether_bus_dropped_total", namespace="tenant-a.orders") == 7
    assert value(registry, "aether_bus_subscriptions") == 0


async def test_nats_bus_metrics_across_nodes(nats_url: str, client: Client) -> None:
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)
    other_nc = await nats.connect(nats_url)
    raw = await nats.connect(nats_url)
    prefix = "bus-metrics-test"
    try:
        a = await NATSEventBus.create(client, subject_prefix=prefix, metrics=metrics)
        b = await NATSEventBus.create(other_nc, subject_prefix=prefix, metrics=metrics)
        sub_a = a.subscribe("t")
        sub_b = b.subscribe("t", buffer_size=4)
        await sub_a.ready()
        await sub_b.ready()
        for v in range(1, 6):
            await a.publish("t", Event("X", "x", v))
        await b.publish("t", Event("X", "y", 1))
        for seq in (1, 4):  # a forged publisher whose events 2 and 3 were lost
            forged = pack_header(MAGIC + b"forged!!", seq) + encode_event(Event("X", "z", seq))
            await raw.publish(f"{prefix}.t.X", forged)
        await raw.publish(f"{prefix}.t.X", b"junk")
        # nats-py's flush() PING can overtake queued publishes; the bus's probe cannot
        await NATSEventBus(raw, subject_prefix=prefix).flush()
        for bus in (a, b):
            await bus.flush()
        # a: 5 own + 1 from b + 2 forged = 8 buffered; b: 4 buffered of 5 from a + 1 own + 2 forged
        assert sub_a.pending == 8 and sub_b.pending == 4 and sub_b.dropped == 4
        assert value(registry, "aether_bus_published_total", namespace="t") == 6
        assert value(registry, "aether_bus_delivered_total", namespace="t") == 12
        assert value(registry, "aether_bus_dropped_total", namespace="t") == 4
        assert value(registry, "aether_bus_gaps_total", namespace="t") == 2  # seen by each node
        assert value(registry, "aether_bus_missed_total", namespace="t") == 4  # 2 per subscription
        assert value(registry, "aether_bus_invalid_messages_total") == 2
        assert value(registry, "aether_bus_subscriptions") == 2
        assert value(registry, "aether_bus_reconnects_total") == 0
        await a.aclose()
        await b.aclose()
        assert value(registry, "aether_bus_delivered_total", namespace="t") == 12
    finally:
        await other_nc.close()
        await raw.close()


async def test_metrics_http_endpoint() -> None:
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)
    bus = EventBus(metrics=metrics)
    await bus.publish("tenant-a", Event("X", "a", 1))
    async with start_metrics_server(0, registry, host="127.0.0.1") as server:
        assert server.port > 0
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(server.url, timeout=10).read().decode())
    assert 'aether_bus_published_total{namespace="tenant-a"} 1.0' in body
    assert "# TYPE aether_bus_subscriptions gauge" in body
    with pytest.raises(InvalidInputError):
        start_metrics_server(-1, registry)
    with start_metrics_server(0, registry, host="127.0.0.1") as busy, pytest.raises(InvalidInputError):
        start_metrics_server(busy.port, registry, host="127.0.0.1")
    await bus.aclose()


# ---- without prometheus-client -----------------------------------------------------------------
def test_everything_works_without_prometheus_client() -> None:
    assert metrics_available()
    script = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None  # as if the extra were not installed
        import asyncio
        import aether, aether.bus, aether.store, aether.metrics
        from aether import Event, EventBus
        from aether.errors import AetherError, MetricsUnavailableError
        from aether.metrics import BusMetrics, StoreMetrics, metrics_available, start_metrics_server

        assert not metrics_available()
        for make in (StoreMetrics, BusMetrics, lambda: start_metrics_server(0)):
            try:
                make()
            except MetricsUnavailableError as exc:
                assert isinstance(exc, ImportError) and isinstance(exc, AetherError)
                assert "aether-nats[metrics]" in str(exc)
            else:
                raise SystemExit("metrics were created without prometheus-client")

        async def main():
            async with EventBus() as bus:
                sub = bus.subscribe("t.>")
                await bus.publish("t.x", Event("X", "a", 1))
                assert (await sub.__anext__()).actor_id == "a"
                assert bus.stats().namespaces["t.x"].delivered == 1

        asyncio.run(main())
        assert "prometheus_client" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
