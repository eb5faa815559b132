"""A live web dashboard of an Aether cluster (extra ``dashboard``: Starlette + uvicorn).

Run it with ``aether dashboard -s nats://… --cluster NAME``; it serves one page that updates
live (server-sent events) with the members, the leader and its term, the shard map as a grid
coloured by owner, request and append rates per node, the streams per namespace, the
projections and recent cluster events, and the same state as JSON at ``/api/state``.

It only reads (see :class:`~aether.dashboard.collector.Collector`); the NATS permissions it
needs are :func:`aether.permissions.dashboard_permissions`. ``docs/observability.md`` shows it.

* :class:`Collector` — reads the cluster and keeps the newest snapshot (no web stack needed);
* :class:`DashboardServer` — the collector and the app served by uvicorn in this event loop;
* :func:`create_app` — the Starlette app (imports ``starlette``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aether.dashboard.collector import ClusterEvent, Collector, diff_events
from aether.dashboard.server import DashboardServer, dashboard_url

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["ClusterEvent", "Collector", "DashboardServer", "create_app", "dashboard_url", "diff_events"]


def create_app(collector: Collector) -> Starlette:
    """The dashboard's ASGI app for ``collector`` (see :mod:`aether.dashboard.app`).

    Raises:
        ImportError: the ``dashboard`` extra (starlette, uvicorn) is not installed.
    """
    from aether.dashboard.app import create_app as create

    app: Any = create(collector)
    return app  # type: ignore[no-any-return]
