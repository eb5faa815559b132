"""Condition polling with generous deadlines (never fixed sleeps for verdicts).

Tests wait on conditions with these two, not with polling loops of their own:

* :func:`wait_for` in coroutines: the condition may be a function or a coroutine function;
* :func:`wait_for_sync` in plain functions (subprocess tests, threads).

Both return the first truthy value the condition returned, so a test can wait for a value
(``leader = await wait_for(find_leader)``) as well as for a fact.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["wait_for", "wait_for_sync"]

T = TypeVar("T")


@overload
async def wait_for(condition: Callable[[], Awaitable[T | None]], *, timeout: float = ..., interval: float = ...,
                   message: str = ..., diagnostics: Callable[[], str] | None = ...) -> T: ...


@overload
async def wait_for(condition: Callable[[], T | None], *, timeout: float = ..., interval: float = ...,
                   message: str = ..., diagnostics: Callable[[], str] | None = ...) -> T: ...


async def wait_for(condition: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05,
                   message: str = "condition", diagnostics: Callable[[], str] | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy; return that value.

    Args:
        condition: a function or a coroutine function of no arguments.
        timeout: seconds until giving up.
        interval: seconds between polls.
        message: what is waited for (in the failure message).
        diagnostics: called on failure; its text is appended to the message.

    Raises:
        AssertionError: ``timeout`` passed; names ``message`` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(_failure(timeout, message, result, diagnostics))
        await asyncio.sleep(interval)


def wait_for_sync(condition: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.05,
                  message: str = "condition", diagnostics: Callable[[], str] | None = None) -> T:
    """:func:`wait_for` for plain (non-async) code: blocks the calling thread between polls.

    Raises:
        AssertionError: ``timeout`` passed; names ``message`` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(_failure(timeout, message, result, diagnostics))
        time.sleep(interval)


def _failure(timeout: float, message: str, last: object, diagnostics: Callable[[], str] | None) -> str:
    text = f"timed out after {timeout}s waiting for {message} (last: {last!r})"
    return text if diagnostics is None else f"{text}\n{diagnostics()}"
