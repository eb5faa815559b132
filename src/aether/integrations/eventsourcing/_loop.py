"""One asyncio event loop in a background thread: the synchronous recorders run their NATS
calls on it and wait a bounded time for each."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from eventsourcing.persistence import PersistenceError

from aether.errors import (
    AetherError,
    InvalidInputError,
    PermissionDeniedError,
)
from aether.integrations.eventsourcing.errors import (
    JetStreamDataError,
    JetStreamOperationalError,
    JetStreamProgrammingError,
)

__all__ = ["LoopThread", "translate"]

T = TypeVar("T")


def translate(exc: AetherError) -> Exception:
    """The eventsourcing-facing error for an Aether error (the module's own pass through)."""
    if isinstance(exc, PersistenceError):  # the module's own errors
        return exc
    if isinstance(exc, PermissionDeniedError):
        return JetStreamProgrammingError(str(exc))
    if isinstance(exc, InvalidInputError):
        return JetStreamDataError(str(exc))
    return JetStreamOperationalError(str(exc))  # connection trouble, timeouts, server failures


class LoopThread:
    """Runs coroutines on a private event loop in a daemon thread.

    Args:
        name: the thread's name.
        margin: seconds :meth:`run` waits beyond the caller's deadline before giving up.
    """

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def closed(self) -> bool:
        return self._closed

    def run(self, coro: Coroutine[Any, Any, T], timeout: float, what: str,
            progress: Callable[[], float] | None = None) -> T:
        """Run ``coro`` on the loop and return its result, waiting at most ``timeout`` seconds —
        or, with ``progress`` (the ``time.monotonic()`` of the coroutine's latest step), at most
        ``timeout`` seconds without a step, so that a long read of many pages is not cut short.

        Raises:
            JetStreamOperationalError: the loop is closed, or no result (no step) within ``timeout``
                (the coroutine is then cancelled); or the coroutine raised a connection/timeout error.
            JetStreamDataError / JetStreamProgrammingError / JetStreamIntegrityError: as raised.
        """
        if self._closed:
            coro.close()
            raise JetStreamOperationalError(f"{what}: the infrastructure factory is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(f"{what}: a recorder was called from its own event loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        started = time.monotonic()
        try:
            while True:
                last = started if progress is None else max(started, progress())
                remaining = last + timeout - time.monotonic()
                try:
                    return future.result(max(remaining, 0.0))
                except concurrent.futures.TimeoutError:
                    if progress is None or max(started, progress()) == last:
                        raise
        except concurrent.futures.TimeoutError:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                future.cancel()
            raise JetStreamOperationalError(f"{what}: no result within {timeout:g}s") from None
        except concurrent.futures.CancelledError:
            raise JetStreamOperationalError(f"{what}: cancelled (the factory is closing)") from None
        except AetherError as exc:
            raise translate(exc) from exc

    def close(self, final: Coroutine[Any, Any, None] | None, timeout: float) -> None:
        """Run ``final`` (best effort, bounded), stop the loop and join the thread. Idempotent."""
        if self._closed:
            if final is not None:
                final.close()
            return
        if final is not None:
            future = asyncio.run_coroutine_threadsafe(final, self._loop)
            try:
                future.result(timeout)
            except BaseException:  # closing must not fail: the connection is abandoned instead
                future.cancel()
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
