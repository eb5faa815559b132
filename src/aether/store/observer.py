"""The hook through which a store reports what it does (implemented by aether.metrics)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["StoreObserver"]


class StoreObserver(Protocol):
    """Receives store activity. Every method must be cheap and must never raise."""

    def on_append(self, namespace: str, events: int, seconds: float) -> None:
        """``events`` events were appended in one call that took ``seconds``."""

    def on_conflict(self, namespace: str) -> None:
        """An append was rejected with a version conflict."""

    def on_cache(self, namespace: str, hit: bool) -> None:
        """The version cache was consulted for an append."""

    def on_read(self, namespace: str, events: int, seconds: float) -> None:
        """A history read returned ``events`` events in ``seconds``."""
