"""The test-facing face of :mod:`aether.server`: real ``nats-server`` processes for tests.

The launcher itself lives in production (:mod:`aether.server`, used by ``aether server`` and the
demo); these names stay importable here for tests, examples and users of ``aether.testing``.
"""

from aether.server import NatsCluster, NatsServer, find_nats_server, nats_url_or_embedded

__all__ = ["NatsCluster", "NatsServer", "find_nats_server", "nats_url_or_embedded"]
