"""The bus conformance suite (aether.testing.bus_conformance) against both buses.

The NATS flavour runs two nodes (two buses on two connections to a real nats-server): ``bus``
receives, ``peer`` publishes, so every delivery crosses the server (and the coalesced wire
format); the I/O counter is the connection's count of sent messages.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from aether.bus import EventBus, NATSEventBus
from aether.testing.bus_conformance import EventBusConformance

_prefixes = itertools.count(1)
_client_of: dict[int, Client] = {}  # bus -> its connection (whose sent-message counter is the I/O count)


class TestEventBus(EventBusConformance):
    @pytest.fixture
    async def bus(self) -> AsyncIterator[EventBus]:
        bus = EventBus()
        yield bus
        await bus.aclose()


class TestNATSEventBus(EventBusConformance):
    @pytest.fixture
    async def clients(self, nats_url: str) -> AsyncIterator[list[Client]]:
        clients = [await nats.connect(nats_url, connect_timeout=5) for _ in range(2)]
        yield clients
        for nc in clients:
            await nc.close()

    @pytest.fixture
    def prefix(self) -> str:
        return f"bus-conformance-{next(_prefixes)}"

    @pytest.fixture
    async def bus(self, clients: list[Client], prefix: str) -> AsyncIterator[NATSEventBus]:
        bus = await NATSEventBus.create(clients[0], subject_prefix=prefix)
        _client_of[id(bus)] = clients[0]
        yield bus
        await bus.aclose()
        del _client_of[id(bus)]

    @pytest.fixture
    async def peer(self, clients: list[Client], prefix: str) -> AsyncIterator[NATSEventBus]:
        peer = await NATSEventBus.create(clients[1], subject_prefix=prefix)
        yield peer
        await peer.aclose()

    async def settle(self, *buses: Any) -> None:
        for bus in buses:  # what each node sent is handled by the server ...
            if not bus.closed:
                await bus.flush()
        for bus in buses:  # ... and has reached every node
            if not bus.closed:
                await bus.flush()

    def io_operations(self, bus: Any) -> int:
        return int(_client_of[id(bus)].stats["out_msgs"])
