"""Fast, unique event ids: a random per-process prefix plus a counter."""

from __future__ import annotations

import itertools
import os

__all__ = ["new_id"]

_prefix = os.urandom(8).hex()
_counter = itertools.count(1)


def _reset_after_fork() -> None:
    global _prefix, _counter
    _prefix = os.urandom(8).hex()
    _counter = itertools.count(1)


os.register_at_fork(after_in_child=_reset_after_fork)


def new_id() -> str:
    """Return a new id, unique across processes (64 random bits per process + a counter)."""
    return f"{_prefix}{next(_counter):010x}"
