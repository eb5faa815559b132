"""Diagnostic trace of the store's append decisions, for fault investigations (a plain JSON-lines
file; unrelated to the OpenTelemetry spans of :mod:`aether.tracing`).

Off unless the environment variable ``AETHER_STORE_TRACE`` names a file: then every
:class:`~aether.store.JetStreamEventStore` created in the process appends one JSON line per
decision (the cache it consulted, each publish ack with its sequence and duplicate flag, the
latest-version reads, the de-duplication checks, the error codes) with a wall-clock timestamp,
the process id and the server the connection was on. Nothing is recorded otherwise; the cost when
off is one attribute check per decision.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import msgspec

__all__ = ["ENV_TRACE", "StoreTrace", "trace_from_env"]

ENV_TRACE = "AETHER_STORE_TRACE"
_encode = msgspec.json.encode


class StoreTrace:
    """Appends JSON lines to ``path`` (one ``write`` per line, so processes can share a file)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __call__(self, kind: str, server: str | None, **fields: Any) -> None:
        record = {"t": time.time(), "pid": self._pid, "kind": kind, "server": server, **fields}
        line = _encode(record) + b"\n"
        with self._lock:
            os.write(self._fd, line)


def trace_from_env() -> StoreTrace | None:
    """A :class:`StoreTrace` writing to ``$AETHER_STORE_TRACE``, or ``None`` when it is unset."""
    path = os.environ.get(ENV_TRACE)
    return StoreTrace(path) if path else None
