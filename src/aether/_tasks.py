"""Structured background tasks: each component owns a :class:`TaskOwner` holding the tasks it
starts, and its ``stop()`` cancels and awaits them, so no task outlives its owner.

Cancellation is never swallowed here: :meth:`TaskOwner.aclose`, :meth:`TaskOwner.cancel` and
:func:`cancel_and_wait` (for one task started outside a ``TaskOwner``) wait with
:func:`asyncio.wait`, which does not raise the awaited tasks' exceptions (their own
``CancelledError`` included) but does raise when the *caller* is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

__all__ = ["TaskOwner", "cancel_and_wait"]

T = TypeVar("T")

logger = logging.getLogger("aether.tasks")


class TaskOwner:
    """The background tasks of one component.

    Args:
        name: the owner's name, used in log messages.
    """

    __slots__ = ("_closed", "_name", "_tasks")

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T] | None:
        """Run ``coro`` as a task owned here; ``None`` (and ``coro`` closed unrun) once the owner
        is closed. An exception the task ends with is logged (it has nobody else to go to)."""
        if self._closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("%s: background task %s failed", self._name, task.get_name(), exc_info=exc)

    def cancel_all(self) -> None:
        """Cancel every task (without waiting; see :meth:`aclose`)."""
        for task in self._tasks:
            task.cancel()

    async def cancel(self, task: asyncio.Task[Any] | None) -> None:
        """Cancel one task and wait until it has ended (raises only if the caller is cancelled)."""
        await cancel_and_wait(task)

    async def aclose(self) -> None:
        """Refuse new tasks, cancel every task and wait until all have ended (raises only if the
        caller is cancelled)."""
        self._closed = True
        while self._tasks:  # a task may spawn another while being cancelled
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await _wait(tasks)
            # every one has ended now; forget them here, not only in their done callbacks (those run
            # a loop iteration later: waiting for them by looping would spin without yielding)
            self._tasks.difference_update(tasks)


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` (one this code started itself) and wait until it has ended.

    What the task ends with (its own ``CancelledError``, or an exception it raised while ending)
    is retrieved and dropped: the caller cancelled it and wants it gone. A cancellation of the
    *caller* while it waits propagates (unlike ``task.cancel(); with suppress(CancelledError):
    await task``, which swallows it). ``None`` is accepted and ignored.
    """
    if task is None:
        return
    task.cancel()
    await _wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


async def _wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    pending = [task for task in tasks if not task.done()]
    if pending:
        await asyncio.wait(pending)
