"""Listener lists for cluster notifications: sync or async callbacks, errors logged, never raised."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from aether._observers import call_listener
from aether.errors import InvalidInputError

__all__ = ["Listener", "Listeners", "logger"]

logger = logging.getLogger("aether.cluster")

T = TypeVar("T")

Listener = Callable[[T], Awaitable[None] | None]
"""A notification callback: a plain function or a coroutine function taking one argument."""


class Listeners(Generic[T]):
    """An ordered list of callbacks; :meth:`add` returns a function that removes the callback."""

    __slots__ = ("_callbacks", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._callbacks: list[Listener[T]] = []

    def add(self, callback: Listener[T]) -> Callable[[], None]:
        """Register ``callback``; call the returned function to unregister it."""
        if not callable(callback):
            raise InvalidInputError(f"{self._what} listener must be callable, got {callback!r}")
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    async def emit(self, value: T) -> None:
        """Call every callback in order, awaiting coroutines; exceptions are logged and counted
        (:func:`aether._observers.call_listener`), never raised."""
        for callback in list(self._callbacks):
            await call_listener(callback, value)
