"""Prometheus metrics for Aether (optional extra: ``pip install 'aether-nats[metrics]'``).

* :class:`StoreMetrics` — a :class:`~aether.store.observer.StoreObserver`: pass it as
  ``observer=`` to the stores.
* :class:`BusMetrics` — a collector reading the buses' counters at scrape time: pass it as
  ``metrics=`` to :class:`~aether.bus.EventBus` / :class:`~aether.bus.NATSEventBus`.
* :class:`ClusterMetrics` — pass it as ``metrics=`` to :class:`~aether.cluster.ClusterManager`.
* :class:`ProjectionMetrics` — pass it to projection runners (lag, processed, retried, dead-lettered).
* :func:`start_metrics_server` — serves ``/metrics`` over HTTP.

Every class takes an optional ``prometheus_client.CollectorRegistry`` (default: the global
registry). Importing this package never needs ``prometheus-client``; creating a metrics object
without it raises :class:`~aether.errors.MetricsUnavailableError`, and the rest of Aether works
without metrics. Metric names and labels are listed in ``docs/metrics.md``.
"""

from aether.errors import MetricsUnavailableError

from ._prometheus import metrics_available
from .bus import BUS_METRICS, BusMetrics
from .cluster import DEFAULT_CLUSTER_BUCKETS, ClusterMetrics
from .http import MetricsServer, start_metrics_server
from .projection import ProjectionMetrics
from .store import DEFAULT_LATENCY_BUCKETS, StoreMetrics

__all__ = [
    "BUS_METRICS",
    "DEFAULT_LATENCY_BUCKETS",
    "BusMetrics",
    "ClusterMetrics",
    "DEFAULT_CLUSTER_BUCKETS",
    "MetricsServer",
    "MetricsUnavailableError",
    "ProjectionMetrics",
    "StoreMetrics",
    "metrics_available",
    "start_metrics_server",
]
