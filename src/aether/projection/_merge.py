"""Catch-up over a partitioned namespace: one single-stream subscription per partition, merged.

Each partition's subscription delivers that partition in stream order (so each actor's events
in version order: an actor lives in one partition); a task per partition moves its events into
one bounded queue the owner iterates. Nothing is ordered across partitions. A full queue stops
the tasks, which stops reading from the server (its flow control holds the rest back).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aether.errors import CorruptEventError, InvalidInputError
from aether.projection.source import StoredEvent

if TYPE_CHECKING:
    from aether.projection.subscription import CatchUpSubscription

__all__ = ["Merged", "partition_positions"]

_QUEUE_SIZE = 1024


def partition_positions(after: int | Sequence[int], partitions: int) -> list[int]:
    """Per-partition start positions from ``after``: ``0`` (everything) or one int >= 0 per partition.

    Raises:
        InvalidInputError: anything else.
    """
    if isinstance(after, bool):
        raise InvalidInputError("after must be an int >= 0 or a sequence of them")
    if isinstance(after, int):
        if after == 0:
            return [0] * partitions
        raise InvalidInputError(f"the source has {partitions} partitions: after must be 0 or a sequence of "
                                f"{partitions} positions (one per partition, e.g. positions of a subscription)")
    values = list(after)
    if len(values) != partitions or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise InvalidInputError(f"after must hold {partitions} ints >= 0 (one position per partition), got {after!r}")
    return values


class Merged:
    """The merge of per-partition subscriptions (owned by a :class:`CatchUpSubscription`)."""

    def __init__(self, children: list[CatchUpSubscription], positions: list[int]) -> None:
        self.children = children
        self.positions = positions
        self.queue: asyncio.Queue[tuple[int, StoredEvent | BaseException] | None] = asyncio.Queue(_QUEUE_SIZE)
        self._pumps: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await asyncio.gather(*(child.start() for child in self.children))
        loop = asyncio.get_running_loop()
        self._pumps = [loop.create_task(self._pump(i, child), name=f"aether-catchup-p{i}")
                       for i, child in enumerate(self.children)]

    async def _pump(self, index: int, child: CatchUpSubscription) -> None:
        put = self.queue.put
        while True:
            try:
                item = await child.__anext__()
            except StopAsyncIteration:
                return
            except CorruptEventError as exc:  # the child moved past it: report it, go on
                await put((index, exc))
                continue
            except Exception as exc:
                await put((index, exc))
                return
            await put((index, item))  # the child names its partition already

    async def next(self) -> StoredEvent | None:
        """The next event (``None``: closed)."""
        item = await self.queue.get()
        if item is None:
            return None
        index, value = item
        if isinstance(value, BaseException):
            if isinstance(value, CorruptEventError) and value.sequence:
                self.positions[index] = max(self.positions[index], value.sequence)
            raise value
        self.positions[index] = value.position
        return value

    def close(self) -> None:
        for pump in self._pumps:
            pump.cancel()
        for child in self.children:
            child.close()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    async def aclose(self) -> None:
        self.close()
        if self._pumps:
            await asyncio.wait(self._pumps)
        for child in self.children:
            await child.aclose()

    @property
    def lag(self) -> int:
        return sum(child.lag for child in self.children) + self.queue.qsize()
