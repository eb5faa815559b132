"""Every public component refuses bad input with a clear AetherError subclass before any I/O:
a missing or wrong NATS client, an argument that is not an Event (no server needed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aether import Event, EventBus, InvalidInputError, NATSEventBus
from aether.cluster import ClusterManager, LeaderElection, NodeDiscovery, NodeInfo
from aether.cluster.client import ClusterClient
from aether.projection import (
    CatchUpSubscription,
    CheckpointStore,
    DeadLetterQueue,
    EventSource,
    Projection,
    ProjectionLease,
    ProjectionRunner,
)
from aether.store import JetStreamEventStore

pytestmark = pytest.mark.anyio

CONSTRUCTORS: list[tuple[str, Callable[[Any], object]]] = [
    ("JetStreamEventStore", lambda nc: JetStreamEventStore(nc, "S")),
    ("NATSEventBus", lambda nc: NATSEventBus(nc)),
    ("CatchUpSubscription", lambda nc: CatchUpSubscription(nc, EventSource("S"))),
    ("ProjectionRunner", lambda nc: ProjectionRunner(nc, Projection("p"), EventSource("S"))),
    ("CheckpointStore", lambda nc: CheckpointStore(nc)),
    ("DeadLetterQueue", lambda nc: DeadLetterQueue(nc, EventSource("S"))),
    ("ProjectionLease", lambda nc: ProjectionLease(nc, bucket="b", key="k", node_id="n", ttl=5)),
    ("NodeDiscovery", lambda nc: NodeDiscovery(nc, NodeInfo(id="n"))),
    ("ClusterClient", lambda nc: ClusterClient(nc)),
    ("ClusterManager", lambda nc: ClusterManager(nc, node_id="n")),
    ("LeaderElection", lambda nc: LeaderElection(nc, node_id="n")),
]


@pytest.mark.parametrize(("name", "build"), CONSTRUCTORS, ids=[c[0] for c in CONSTRUCTORS])
@pytest.mark.parametrize("bad", [None, "nats://127.0.0.1:4222", object()], ids=["None", "url", "object"])
def test_components_refuse_what_is_not_a_nats_client(name: str, build: Callable[[Any], object], bad: Any) -> None:
    with pytest.raises(InvalidInputError, match=f"{name} needs a connected nats-py client"):
        build(bad)


async def test_create_refuses_what_is_not_a_nats_client() -> None:
    with pytest.raises(InvalidInputError, match="nats-py client"):
        await JetStreamEventStore.create(None, "S")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="nats-py client"):
        await NATSEventBus.create(None)  # type: ignore[arg-type]


async def test_local_bus_refuses_what_is_not_an_event() -> None:
    bus = EventBus()
    for bad in (None, {"event_type": "E"}, "event"):
        with pytest.raises(InvalidInputError, match=r"aether\.Event"):
            await bus.publish("ns", bad)  # type: ignore[arg-type]
    await bus.publish("ns", Event("E", "a", 1))
