"""ProjectionMetrics: Prometheus metrics of projections (a :class:`~aether.projection.ProjectionObserver`).

Pass one instance to every runner that should report into the same registry::

    metrics = ProjectionMetrics(registry)
    runner = ProjectionRunner(nc, balances, store, observer=metrics)

Projections work without it (and without prometheus-client installed).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ._prometheus import prometheus, register, resolve_registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["ProjectionMetrics"]


class _Children:
    """The label-bound metric children of one projection (looked up once, then reused)."""

    __slots__ = ("active", "lag", "position", "processed", "retried")

    def __init__(self, metrics: ProjectionMetrics, projection: str) -> None:
        self.processed = metrics.processed.labels(projection)
        self.retried = metrics.retried.labels(projection)
        self.lag = metrics.lag.labels(projection)
        self.position = metrics.position.labels(projection)
        self.active = metrics.active.labels(projection)


class ProjectionMetrics:
    """Progress and failures of projections (label ``projection``).

    ============================================== ========= ==========================================
    ``aether_projection_events_processed_total``   counter   events handled successfully
    ``aether_projection_retries_total``            counter   handler calls repeated after a failure
    ``aether_projection_dead_letters_total``       counter   messages dead-lettered (label ``kind``:
                                                             ``handler`` gave up, ``corrupt`` not an event)
    ``aether_projection_lag_events``               gauge     matching events stored after the position
    ``aether_projection_position``                 gauge     stream sequence handled up to
    ``aether_projection_active``                   gauge     1 while this node runs the projection
    ============================================== ========= ==========================================

    Progress (processed, lag, position) is reported in batches, about once per checkpoint
    interval, never per event.

    Args:
        registry: the ``prometheus_client.CollectorRegistry`` to register in (default: the
            global ``prometheus_client.REGISTRY``).

    Raises:
        MetricsUnavailableError: ``prometheus-client`` is not installed.
        InvalidInputError: these metrics are already registered in ``registry`` (share one
            ProjectionMetrics between runners instead).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prom = prometheus()
        self.registry = resolve_registry(registry)
        labels = ["projection"]
        self.processed: Any = prom.Counter("aether_projection_events_processed_total",
                                           "Events handled successfully by projection handlers.", labels,
                                           registry=None)
        self.retried: Any = prom.Counter("aether_projection_retries_total",
                                         "Handler calls repeated after a failure.", labels, registry=None)
        self.dead_letters: Any = prom.Counter("aether_projection_dead_letters_total",
                                              "Messages written to the dead-letter stream.",
                                              ["projection", "kind"], registry=None)
        self.lag: Any = prom.Gauge("aether_projection_lag_events",
                                   "Matching events stored after the projection's position.", labels, registry=None)
        self.position: Any = prom.Gauge("aether_projection_position",
                                        "Stream sequence up to which the projection has handled everything.",
                                        labels, registry=None)
        self.active: Any = prom.Gauge("aether_projection_active",
                                      "1 while this node runs the projection, else 0.", labels, registry=None)
        register(self.registry, self._collectors())
        self._children: dict[str, _Children] = {}

    def _collectors(self) -> list[Any]:
        return [self.processed, self.retried, self.dead_letters, self.lag, self.position, self.active]

    def _for(self, projection: str) -> _Children:
        children = self._children.get(projection)
        if children is None:
            children = self._children[projection] = _Children(self, projection)
        return children

    # ---- ProjectionObserver ---------------------------------------------------------------
    def on_progress(self, projection: str, processed: int, position: int, lag: int) -> None:
        """``processed`` more events were handled; now at ``position`` and ``lag`` events behind."""
        children = self._for(projection)
        if processed > 0:
            children.processed.inc(processed)
        children.position.set(position)
        children.lag.set(lag)

    def on_retry(self, projection: str) -> None:
        """A handler failed and will be called again."""
        self._for(projection).retried.inc()

    def on_dead_letter(self, projection: str, kind: str) -> None:
        """A message was dead-lettered (``kind``: ``handler`` or ``corrupt``)."""
        self.dead_letters.labels(projection, kind).inc()

    def on_active(self, projection: str, active: bool) -> None:
        """This node started or stopped running the projection."""
        self._for(projection).active.set(1 if active else 0)

    def unregister(self) -> None:
        """Remove these metrics from their registry."""
        for collector in self._collectors():
            with contextlib.suppress(KeyError):
                self.registry.unregister(collector)
