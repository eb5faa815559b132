"""The hook through which projections report what they do (see :mod:`aether.metrics.projection`).

Projections work without any observer and without prometheus-client installed.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ProjectionObserver"]


class ProjectionObserver(Protocol):
    """Receives projection activity. Methods must be cheap and should not raise (errors are logged).

    ``on_progress`` is called in batches (about every checkpoint interval), never per event.
    """

    def on_progress(self, projection: str, processed: int, position: int, lag: int) -> None:
        """``processed`` more events were handled; the projection is at ``position``, ``lag`` events behind."""

    def on_retry(self, projection: str) -> None:
        """A handler failed and will be called again for the same event."""

    def on_dead_letter(self, projection: str, kind: str) -> None:
        """A message was dead-lettered; ``kind`` is ``"handler"`` (gave up) or ``"corrupt"`` (not an event)."""

    def on_active(self, projection: str, active: bool) -> None:
        """This node started (``True``) or stopped (``False``) running the projection."""
