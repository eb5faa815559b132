"""A projection over a partitioned namespace: one consuming runner per partition, one checkpoint.

:class:`PartitionedRunner` is what ``ProjectionRunner(...)`` builds for a source with
``partitions > 1``. It keeps everything that concerns the projection as a whole — the lease
(one node per cluster), the checkpoint, the dead-letter stream, waiting, metrics — and, while
active, runs one :class:`PartitionRunner` per partition: the single-stream runner unchanged
(ordered consumer, retries, dead letters, optional lanes), started from that partition's
position, saving nothing itself.

* **Order**: each partition is consumed in stream order, so each actor's events (an actor
  lives in one partition) come in version order; partitions run in parallel, with no order
  across them.
* **Checkpoint**: one KV value holding one position per partition (``Checkpoint.positions``),
  written in one ``put``: a crash resumes every partition from the same saved moment; events
  after it are delivered again (at least once, as with one stream).
* **Failure**: a partition's runner that fails makes the projection fail (inactive, waiters
  fail; with a lease it steps down and another node takes over).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from aether._nats import JsApi
from aether._nats.consume import head_sequence
from aether._observers import call_observer
from aether.errors import AetherError, InvalidInputError, StoreError
from aether.projection.checkpoint import Checkpoint
from aether.projection.errors import ProjectionError
from aether.projection.observer import ProjectionObserver
from aether.projection.options import ProjectionOptions
from aether.projection.projection import Projection
from aether.projection.runner import _NEVER, ProjectionRunner, ProjectionStats, _Target
from aether.projection.source import EventSource
from aether.store.jetstream import JetStreamEventStore

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["PartitionRunner", "PartitionedRunner"]

log = logging.getLogger("aether.projection")


class _PartitionObserver:
    """Forwards a partition runner's retries and dead letters; progress and activity are the parent's."""

    def __init__(self, observer: ProjectionObserver | None) -> None:
        self._observer = observer

    def on_progress(self, projection: str, processed: int, position: int, lag: int) -> None:
        pass

    def on_retry(self, projection: str) -> None:
        if self._observer is not None:
            self._observer.on_retry(projection)

    def on_dead_letter(self, projection: str, kind: str) -> None:
        if self._observer is not None:
            self._observer.on_dead_letter(projection, kind)

    def on_active(self, projection: str, active: bool) -> None:
        pass


class PartitionedRunner(ProjectionRunner):
    """A :class:`ProjectionRunner` over every partition of a namespace (built by ``ProjectionRunner``).

    :attr:`position` is the sum of :attr:`positions` (one per partition); :meth:`wait_until`
    takes either such a sum or one position per partition; :meth:`catch_up` returns the sum
    of the partitions' newest sequences.
    """

    def __init__(self, nc: Client, projection: Projection, source: EventSource | JetStreamEventStore, *,
                 options: ProjectionOptions | None = None, observer: ProjectionObserver | None = None,
                 node_id: str | None = None) -> None:
        super().__init__(nc, projection, source, options=options, observer=observer, node_id=node_id)
        count = self.source.partitions
        self._parts = self.source.parts  # one single-stream source per partition (built once)
        self._children: list[PartitionRunner] | None = None
        self._positions = [0] * count
        self._saved_positions: tuple[int, ...] | None = None
        self._part_waiters: list[tuple[_Target, asyncio.Future[None]]] = []
        self._done = _Counters()

    # ---- state --------------------------------------------------------------------------------
    @property
    def positions(self) -> tuple[int, ...]:
        """Per partition, the stream sequence up to which every message has been handled."""
        children = self._children
        if children is not None:
            return tuple(child._current_position() for child in children)
        return tuple(self._positions)

    def _current_position(self) -> int:
        return sum(self.positions)

    @property
    def lag(self) -> int:
        children = self._children
        if children is None:
            return self._lag
        return sum(child.lag for child in children)

    def stats(self) -> ProjectionStats:
        totals = self._done.plus(self._children or [])
        return ProjectionStats(self._current_position(), self.lag, totals.processed, totals.skipped,
                               totals.retried, totals.dead, self._active, totals.resets)

    def _report_progress(self) -> None:
        observer = self._observer
        if observer is None:
            return
        processed = self._done.plus(self._children or []).processed
        delta = processed - self._reported
        self._reported = processed
        call_observer(observer.on_progress, self.name, delta, self._current_position(), self.lag)

    # ---- waiting ------------------------------------------------------------------------------
    def _wait_target(self, position: int | Sequence[int]) -> _Target:
        """A sum of positions (an int) or one position per partition (checked)."""
        if isinstance(position, int):
            return position
        target = tuple(position)
        if len(target) != self.source.partitions:
            raise InvalidInputError(f"expected {self.source.partitions} positions, got {len(target)}")
        return target

    def _add_waiter(self, target: _Target, waiter: asyncio.Future[None]) -> None:
        self._part_waiters.append((target, waiter))
        self._arm_children()

    def _remove_waiter(self, target: _Target, waiter: asyncio.Future[None]) -> None:
        self._part_waiters[:] = [entry for entry in self._part_waiters if entry[1] is not waiter]

    def _threshold(self, index: int) -> int:
        """The position of partition ``index`` at which its runner must report progress: the
        lowest per-partition target still ahead of it (0: every step, for a waiter on a sum)."""
        low = _NEVER
        position = self._children[index]._current_position() if self._children else self._positions[index]
        for target, _ in self._part_waiters:
            if isinstance(target, int):
                return 0
            if target[index] > position:
                low = min(low, target[index])
        return low

    def _arm_children(self) -> None:
        for i, child in enumerate(self._children or []):
            child._wait_min = min(child._wait_min, self._threshold(i))

    def _on_partition_progress(self) -> None:
        """Release the waiters reached (a partition runner reached its threshold)."""
        keep = []
        for target, waiter in self._part_waiters:
            if self._reached(target):
                if not waiter.done():
                    waiter.set_result(None)
            else:
                keep.append((target, waiter))
        self._part_waiters[:] = keep

    def _fail_waiters(self, exc: BaseException) -> None:
        super()._fail_waiters(exc)
        for _, waiter in self._part_waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._part_waiters.clear()

    async def catch_up(self, timeout: float | None = None) -> int:
        """Wait until every event stored now in every partition has been handled; returns the
        sum of the partitions' newest sequences.

        Raises:
            AetherTimeoutError: not caught up within ``timeout`` seconds.
            ProjectionError: the runner stopped or failed.
            StoreError / StoreUnavailableError: server trouble.
        """
        await self._setup()
        api = self._api
        assert api is not None
        heads = tuple(await asyncio.gather(*(head_sequence(api, part.stream, part.event_filter)
                                             for part in self._parts)))
        await self.wait_until(heads, timeout)
        return sum(heads)

    # ---- checkpoints ----------------------------------------------------------------------------
    async def _load_positions(self) -> list[int]:
        assert self._checkpoints is not None
        count = self.source.partitions
        checkpoint = await self._checkpoints.load(self._key)
        if checkpoint is None:
            return [0] * count
        if checkpoint.positions is None:
            if checkpoint.position == 0:
                return [0] * count
            raise StoreError(f"checkpoint {self._key!r} holds a single-stream position ({checkpoint.position}) but "
                             f"the source has {count} partitions")
        if len(checkpoint.positions) != count:
            raise StoreError(f"checkpoint {self._key!r} holds {len(checkpoint.positions)} positions but the source "
                             f"has {count} partitions")
        return list(checkpoint.positions)

    async def _save_checkpoint(self) -> None:
        lease = self._lease
        if not self._active or (lease is not None and not lease.held) or self._checkpoints is None:
            return
        async with self._save_lock:
            positions = self.positions
            if positions == self._saved_positions:
                return
            checkpoint = Checkpoint(sum(positions), self._node, self.term, positions=positions)
            try:
                await self._checkpoints.save(self._key, checkpoint)
            except AetherError as exc:
                log.warning("projection %s: saving the checkpoint at %s failed: %s", self.name, positions, exc)
                return
            self._saved_positions = positions

    async def _reset_checkpoint(self, term: int) -> None:
        assert self._checkpoints is not None
        zeros = (0,) * self.source.partitions
        async with self._save_lock:
            await self._checkpoints.save(self._key, Checkpoint(0, self._node, term, positions=zeros))
            self._saved_positions = zeros
        self._positions = list(zeros)

    # ---- activation -----------------------------------------------------------------------------
    async def _activate(self) -> None:
        assert self._api is not None
        positions = await self._load_positions()
        self._positions = positions
        self._saved_positions = tuple(positions)
        self._failure = None
        children = [PartitionRunner(self, i, start) for i, start in enumerate(positions)]
        # all consumers are created at once: once partitions deliver, the loop is busy handling
        # their events and a late creation request would wait for its reply behind them
        results = await asyncio.gather(*(child.start() for child in children), return_exceptions=True)
        failed = [result for result in results if isinstance(result, BaseException)]
        if failed:
            await asyncio.gather(*(child.stop() for child in children), return_exceptions=True)
            raise failed[0]
        self._children = children
        self._arm_children()
        self._active = True
        log.info("projection %s active on %s from positions %s", self.name, self._node, positions)
        self._notify_active(True)
        self._on_partition_progress()

    async def _deactivate(self, *, graceful: bool) -> None:
        children = self._children
        if children is None:
            return
        lag = sum(child.lag for child in children)
        lease = self._lease
        if graceful and lease is not None:  # never keep acting past the lease's local deadline
            left = max(0.001, min(self.options.stop_timeout, lease.deadline - asyncio.get_running_loop().time()))
            for child in children:
                child.options = dataclasses.replace(child.options, stop_timeout=left)
        if not graceful:  # the lease is gone: stop at once, save nothing
            for child in children:
                child._lease_lost = True
            await asyncio.gather(*(child._deactivate(graceful=False) for child in children))
        await asyncio.gather(*(child.stop() for child in children))
        if graceful:
            await self._save_checkpoint()
        self._positions = [child._current_position() for child in children]
        self._done = self._done.plus(children)
        self._children = None
        self._lag = lag
        self._active = False
        log.info("projection %s inactive on %s at positions %s", self.name, self._node, self._positions)
        self._notify_active(False)

    def _partition_failed(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._active = False
        self._notify_active(False)
        self._fail_waiters(ProjectionError(f"projection {self.name!r} failed: {exc!r}"))


class _Counters:
    """What finished partition runners counted."""

    __slots__ = ("dead", "processed", "resets", "retried", "skipped")

    def __init__(self, processed: int = 0, skipped: int = 0, retried: int = 0, dead: int = 0, resets: int = 0) -> None:
        self.processed, self.skipped, self.retried, self.dead, self.resets = processed, skipped, retried, dead, resets

    def plus(self, runners: Sequence[PartitionRunner]) -> _Counters:
        total = _Counters(self.processed, self.skipped, self.retried, self.dead, self.resets)
        for runner in runners:
            stats = ProjectionRunner.stats(runner)
            total.processed += stats.processed
            total.skipped += stats.skipped
            total.retried += stats.retried
            total.dead += stats.dead_lettered
            total.resets += stats.consumer_resets
        return total


class PartitionRunner(ProjectionRunner):
    """The single-stream runner over one partition, owned by a :class:`PartitionedRunner`:
    it starts where the parent says, saves through the parent and shares its dead-letter stream."""

    def __init__(self, parent: PartitionedRunner, index: int, start_after: int) -> None:
        super().__init__(parent._nc, parent.projection, parent._parts[index], options=parent.options,
                         observer=_PartitionObserver(parent._observer))
        self._parent = parent
        self._index = index
        self._start_after = start_after
        self._node = parent._node
        self._lease_lost = False

    async def _setup(self) -> None:
        if self._set_up:
            return
        self._api = JsApi(self._nc, timeout=self.options.timeout)
        self._dlq = self._parent._dlq
        self._set_up = True

    async def _load_position(self) -> int:
        return self._start_after

    async def _save_checkpoint(self) -> None:
        if not self._lease_lost:
            await self._parent._save_checkpoint()

    def _release_waiters(self, position: int) -> None:
        super()._release_waiters(position)
        parent = self._parent
        parent._on_partition_progress()
        self._wait_min = min(self._wait_min, parent._threshold(self._index))

    async def _guard(self, body: Coroutine[Any, Any, None]) -> None:
        try:
            await super()._guard(body)
        finally:
            if self._failure is not None:
                self._parent._partition_failed(self._failure)
