"""The hook through which a store reports what it does (implemented by aether.metrics)."""

from __future__ import annotations

from typing import Protocol

from aether._observers import call_observer

__all__ = ["StoreObserver", "GuardedStoreObserver", "guard"]


class StoreObserver(Protocol):
    """Receives store activity. Every method must be cheap; one that raises is logged and counted,
    never allowed to break the store (the stores wrap observers in :class:`GuardedStoreObserver`)."""

    def on_append(self, namespace: str, events: int, seconds: float) -> None:
        """``events`` events were appended in one call that took ``seconds``."""

    def on_conflict(self, namespace: str) -> None:
        """An append was rejected with a version conflict."""

    def on_cache(self, namespace: str, hit: bool) -> None:
        """The version cache was consulted for an append."""

    def on_read(self, namespace: str, events: int, seconds: float) -> None:
        """A history read returned ``events`` events in ``seconds``."""


class GuardedStoreObserver:
    """Wraps a :class:`StoreObserver` so that a raising method is logged and counted
    (:func:`aether._observers.observer_failures`) and never breaks the append or read that reported."""

    __slots__ = ("_observer",)

    def __init__(self, observer: StoreObserver) -> None:
        self._observer = observer

    def on_append(self, namespace: str, events: int, seconds: float) -> None:
        call_observer(self._observer.on_append, namespace, events, seconds)

    def on_conflict(self, namespace: str) -> None:
        call_observer(self._observer.on_conflict, namespace)

    def on_cache(self, namespace: str, hit: bool) -> None:
        call_observer(self._observer.on_cache, namespace, hit)

    def on_read(self, namespace: str, events: int, seconds: float) -> None:
        call_observer(self._observer.on_read, namespace, events, seconds)


def guard(observer: StoreObserver | None) -> StoreObserver | None:
    """``observer`` wrapped in a :class:`GuardedStoreObserver` (``None`` stays ``None``)."""
    if observer is None or isinstance(observer, GuardedStoreObserver):
        return observer
    return GuardedStoreObserver(observer)
