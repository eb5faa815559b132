"""Guarded calls of observers and listeners: a raising observer is logged and counted, never
propagated, so it cannot break the component that reports to it (e.g. a leader stepping down
still queues its "deposed" notification when a metrics observer raises).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec

__all__ = ["call_observer", "call_listener", "observer_failures"]

P = ParamSpec("P")

logger = logging.getLogger("aether.observers")

_failures = [0]


def observer_failures() -> int:
    """How many observer or listener calls have raised in this process."""
    return _failures[0]


def _failed(callback: object) -> None:
    _failures[0] += 1
    logger.exception("observer %r raised (ignored)", callback)


def call_observer(method: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs) -> None:
    """Call a synchronous observer method; an exception is logged and counted, never raised."""
    try:
        method(*args, **kwargs)
    except Exception:
        _failed(method)


async def call_listener(callback: Callable[P, Awaitable[None] | None], /, *args: P.args, **kwargs: P.kwargs) -> None:
    """Call a plain or coroutine callback (awaiting its result); an exception is logged and
    counted, never raised. Cancellation propagates."""
    try:
        result = callback(*args, **kwargs)
        if inspect.isawaitable(result):
            await result
    except Exception:
        _failed(callback)
