"""Test support: real nats-server processes (re-exported from the production :mod:`aether.server`),
pytest fixtures, the store and bus conformance suites, ``wait_for``."""

from aether.server import NatsCluster, NatsServer, find_nats_server, nats_url_or_embedded
from aether.testing.waiting import wait_for

__all__ = ["NatsCluster", "NatsServer", "find_nats_server", "nats_url_or_embedded", "wait_for"]
