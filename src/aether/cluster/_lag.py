"""Recent event-loop lag of this process, shared by the cluster components of one event loop.

Heartbeat, watch and election loops sleep to planned times; how late they wake is the loop's
lag. When this process's own loop lags (a CPU storm: dozens of processes starting on a few
cores, a long GC), other processes on the machine most likely lag too, and a heartbeat or lease
renewal that looks overdue may just be queued behind that work. Suspicion is therefore
extended by the lag seen recently (see :func:`suspicion_grace`): only ever *later* eviction or
takeover — never earlier, so no safety argument changes — and none at all when the loop is
responsive (failover stays as fast as configured).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque

__all__ = ["LagTracker", "lag_tracker", "suspicion_grace"]

_NOISE = 0.02  # lags below this are scheduling noise, not worth remembering


class LagTracker:
    """The largest loop lags seen, with when they were seen."""

    __slots__ = ("_samples",)

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=256)

    def note(self, lag: float, *, at: float | None = None) -> None:
        """Record a lag (seconds) observed at ``at`` (:func:`time.monotonic`; default: now; notes
        come in time order)."""
        if lag >= _NOISE:
            self._samples.append((time.monotonic() if at is None else at, lag))

    def recent(self, window: float) -> float:
        """The largest lag seen in the last ``window`` seconds (0.0 if none)."""
        since = time.monotonic() - window
        samples = self._samples
        while samples and samples[0][0] < since - 60.0:
            samples.popleft()
        return max((lag for at, lag in samples if at >= since), default=0.0)


_trackers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LagTracker] = weakref.WeakKeyDictionary()


def lag_tracker() -> LagTracker:
    """The tracker of the running event loop."""
    loop = asyncio.get_running_loop()
    tracker = _trackers.get(loop)
    if tracker is None:
        tracker = _trackers[loop] = LagTracker()
    return tracker


def suspicion_grace(timeout: float, *, local: float, remote: float = 0.0) -> float:
    """Extra seconds to wait before declaring a peer dead after ``timeout`` of silence.

    ``local``: the lag this process saw over the last ``timeout``; ``remote``: the lag the peer
    reported in its last heartbeat. The grace is the larger of the two, at most ``timeout``
    (so a stalled machine at worst doubles the failover time; a responsive one adds nothing).
    """
    return min(timeout, max(local, remote, 0.0))
