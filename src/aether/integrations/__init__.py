"""Aether as the storage of other libraries.

* :mod:`aether.integrations.eventsourcing` — NATS JetStream as a persistence module of the
  `eventsourcing <https://pypi.org/project/eventsourcing/>`_ library
  (``PERSISTENCE_MODULE="aether.integrations.eventsourcing"``).
"""

__all__: list[str] = []
