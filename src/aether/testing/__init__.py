"""Test support: real nats-server processes, pytest fixtures and the store conformance suite."""

from aether.server import NatsCluster, NatsServer, find_nats_server, nats_url_or_embedded
from aether.testing.waiting import wait_for

__all__ = ["NatsCluster", "NatsServer", "find_nats_server", "nats_url_or_embedded", "wait_for"]
