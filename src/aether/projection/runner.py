"""ProjectionRunner: runs a :class:`Projection` over a stream, durably, once per cluster.

* **Delivery**: an ordered push consumer (see :mod:`aether._nats.consume`) delivers
  every stored event after the saved position, then live events, in stream order, with no
  gap and no duplicate at the switch.
* **Position**: the stream sequence of the last message handled (all earlier ones are done)
  is saved in a KV checkpoint every ``checkpoint_every`` messages or ``checkpoint_interval``
  seconds and on stop. After a crash the runner resumes from the checkpoint, so events after
  it are delivered again: delivery is *at least once*; handlers get each event's position to
  apply it idempotently.
* **Failures**: a handler that raises is retried with exponential back-off; after
  ``retry.max_attempts`` calls the event is written to the dead-letter stream with the reason
  and the runner moves on. A message that is not an Aether event is dead-lettered at once.
  The position never moves past a message before it was handled or dead-lettered.
* **Cluster**: with a ``node_id`` the runner only consumes while it holds the projection's
  lease (see :mod:`aether.projection.lease`); when the holder dies, another node acquires the
  lease at most the TTL plus one retry interval (TTL/10, 0.2-1 s) after the holder's last renewal
  and resumes from the checkpoint; after a graceful ``stop()`` a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import traceback
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aether import tracing as _tracing
from aether._nats import ERR_STREAM_NOT_FOUND, JetStreamApiError, JsApi, check_client
from aether._nats.consume import OrderedConsumer, head_sequence
from aether._observers import call_observer
from aether.errors import AetherError, AetherTimeoutError, CorruptEventError, InvalidInputError, StoreError
from aether.event import Event
from aether.names import encode_token
from aether.projection._context import StartsAndCloses
from aether.projection._decode import decode_stored
from aether.projection.checkpoint import Checkpoint, CheckpointStore, checkpoint_key
from aether.projection.deadletter import DeadLetter, DeadLetterQueue
from aether.projection.errors import ProjectionError, ProjectionNotActiveError
from aether.projection.lease import ProjectionLease
from aether.projection.observer import ProjectionObserver
from aether.projection.options import ProjectionOptions
from aether.projection.projection import Handler, Projection
from aether.projection.source import EventSource
from aether.store.jetstream import JetStreamEventStore
from aether.store.partitioning import PARTITIONS_METADATA_KEY

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["ProjectionRunner", "ProjectionStats"]

log = logging.getLogger("aether.projection")

_NEVER = 1 << 62
_Target = int | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ProjectionStats:
    """A snapshot of a runner's counters.

    Attributes:
        position: stream sequence up to which every message has been handled.
        lag: matching messages stored after ``position`` (as last reported by the server).
        processed: events handled successfully by a handler (this process, since start).
        skipped: messages passed over (no handler for the type, or another actor prefix).
        retried: handler calls repeated after a failure.
        dead_lettered: messages written to the dead-letter stream.
        active: whether this node is running the projection now.
        consumer_resets: times the server-side consumer was recreated (gaps, lost heartbeats).
    """

    position: int
    lag: int
    processed: int
    skipped: int
    retried: int
    dead_lettered: int
    active: bool
    consumer_resets: int


class _Lane:
    """One parallel lane: events of the actors hashed to it, handled one at a time in order."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: deque[tuple[Handler, Event, int, Msg]] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__qualname__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return text


class ProjectionRunner(StartsAndCloses):
    """Runs ``projection`` over ``source`` with a durable position, retries, dead letters and metrics.

    Args:
        nc: a connected nats-py client (not owned: never closed here).
        projection: the handlers.
        source: the stream to read: an :class:`EventSource` or a ``JetStreamEventStore``.
        options: :class:`ProjectionOptions`.
        observer: receives metrics (e.g. :class:`aether.metrics.projection.ProjectionMetrics`).
        node_id: when given, the runner competes for the projection's lease and runs the
            projection only while it holds it (one node per cluster).

    Use as ``async with ProjectionRunner(...) as runner:`` or call :meth:`start` / :meth:`stop`.

    A partitioned source (``source.partitions > 1``) reads every partition, in parallel, each
    from its own position; the checkpoint holds one position per partition, saved in one KV
    write. See :mod:`aether.projection._partitioned`.
    """

    def __new__(cls, nc: Client, projection: Projection, source: EventSource | JetStreamEventStore,
                *args: Any, **kwargs: Any) -> ProjectionRunner:
        if cls is ProjectionRunner and source.partitions > 1:
            from aether.projection._partitioned import PartitionedRunner

            return super().__new__(PartitionedRunner)
        return super().__new__(cls)

    def __init__(self, nc: Client, projection: Projection, source: EventSource | JetStreamEventStore, *,
                 options: ProjectionOptions | None = None, observer: ProjectionObserver | None = None,
                 node_id: str | None = None) -> None:
        check_client(nc, "ProjectionRunner")
        if node_id is not None and (not isinstance(node_id, str) or not node_id):
            raise InvalidInputError("node_id must be a non-empty str or None")
        self.projection = projection
        self.source = source if isinstance(source, EventSource) else EventSource.of(source)
        self.options = options or ProjectionOptions()
        self.node_id = node_id
        self._nc = nc
        self._observer = observer
        self._node = node_id or f"{socket.gethostname()}-{os.getpid()}"
        self._key = checkpoint_key(self.source.stream, projection.name)
        self._api: JsApi | None = None
        self._checkpoints: CheckpointStore | None = None
        self._dlq: DeadLetterQueue | None = None
        self._lease: ProjectionLease | None = None
        self._consumer: OrderedConsumer | None = None
        self._consume_task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._save_lock = asyncio.Lock()
        self._checkpoint_wake = asyncio.Event()
        self._stopped_event = asyncio.Event()
        self._set_up = False
        self._started = False
        self._stopping = False
        self._active = False
        self._draining = False
        self._failure: BaseException | None = None
        self._lanes: list[_Lane] | None = None
        self._in_flight = 0
        self._space_waiter: asyncio.Future[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wait_min = _NEVER  # the lowest position a waiter waits for
        self._dispatched = 0  # without lanes: the position; with lanes: the last message handed to a lane
        self._saved = -1
        self._lag = 0  # as of the last deactivation; while active the consumer's figure is used
        self._processed = 0
        self._reported = 0
        self._skipped = 0
        self._retried = 0
        self._dead = 0
        self._resets = 0

    # ---- public state -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The projection's name."""
        return self.projection.name

    @property
    def position(self) -> int:
        """Stream sequence up to which every message has been handled (the resume point)."""
        return self._current_position()

    @property
    def positions(self) -> tuple[int, ...]:
        """Per partition of the source, the sequence up to which every message has been handled
        (``(position,)`` for a single stream)."""
        return (self._current_position(),)

    @property
    def lag(self) -> int:
        """Matching messages stored after the position (0 when caught up)."""
        consumer = self._consumer
        if consumer is None:
            return self._lag
        return consumer.lag(self._dispatched) + self._in_flight

    @property
    def is_active(self) -> bool:
        """Whether this runner is consuming now (always, once started, without a ``node_id``)."""
        return self._active

    @property
    def term(self) -> int:
        """The fencing token of this node's current lease (0 without a lease or when not held)."""
        lease = self._lease
        return lease.term if lease is not None and self._active else 0

    def stats(self) -> ProjectionStats:
        """The current counters."""
        consumer = self._consumer
        return ProjectionStats(self._current_position(), self.lag, self._processed, self._skipped, self._retried,
                               self._dead, self._active, self._resets + (consumer.resets if consumer else 0))

    # ---- lifecycle ------------------------------------------------------------------------------
    async def _setup(self) -> None:
        if self._set_up:
            return
        opts = self.options
        api = self._api or JsApi(self._nc, timeout=opts.timeout)
        self._api = api
        try:
            info = await api.api(f"STREAM.INFO.{self.source.streams[0]}")
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                raise StoreError(f"stream {self.source.streams[0]!r} does not exist") from exc
            raise
        recorded = (info.get("config", {}).get("metadata") or {}).get(PARTITIONS_METADATA_KEY, "1")
        if self.source.partitions > 1 and recorded != str(self.source.partitions):
            raise StoreError(f"the source has {self.source.partitions} partitions but stream "
                             f"{self.source.streams[0]!r} records {recorded}: use EventSource.of(store)")
        replicas = opts.replicas or int(info.get("config", {}).get("num_replicas", 1) or 1)
        checkpoints = CheckpointStore(self._nc, opts.checkpoint_bucket, replicas=replicas)
        await checkpoints.open()
        dlq = DeadLetterQueue(self._nc, self.source, stream=opts.dead_letter_stream, replicas=replicas, api=api)
        await dlq.ensure()
        if self.node_id is not None:
            lease = ProjectionLease(self._nc, bucket=opts.lease_bucket_name(), key=self._key, node_id=self.node_id,
                                    ttl=opts.lease_ttl, replicas=replicas)
            await lease.open()
            self._lease = lease
        self._checkpoints, self._dlq = checkpoints, dlq
        self._set_up = True

    async def start(self) -> None:
        """Set up (buckets, dead-letter stream) and start consuming, or competing for the lease.

        Returns once consuming started (without ``node_id``) or the lease loop runs (with one).

        Raises:
            StoreError: the source stream does not exist, or a bucket cannot be created.
            StoreUnavailableError / AetherTimeoutError: the server cannot be reached.
            ProjectionError: the runner was stopped already.
        """
        if self._stopping:
            raise ProjectionError(f"projection {self.name!r}: a stopped runner cannot be restarted")
        if self._started:
            return
        await self._setup()
        loop = asyncio.get_running_loop()
        if self._lease is None:
            async with self._lock:
                await self._activate()
        else:
            self._lease_task = loop.create_task(self._lease_loop(), name=f"aether-lease-{self.name}")
        self._checkpoint_task = loop.create_task(self._checkpoint_loop(), name=f"aether-checkpoint-{self.name}")
        self._started = True

    async def stop(self) -> None:
        """Stop gracefully: finish the running handler(s) (up to ``stop_timeout``), save the
        position, release the lease. Idempotent."""
        if self._stopping:
            await self._stopped_event.wait()
            return
        self._stopping = True
        try:
            for task in (self._lease_task,):
                if task is not None:
                    task.cancel()
                    await asyncio.wait({task})
            async with self._lock:
                await self._deactivate(graceful=True)
            if self._lease is not None:
                await self._lease.release()
                await self._lease.close()
            if self._checkpoint_task is not None:
                self._checkpoint_task.cancel()
                await asyncio.wait({self._checkpoint_task})
            self._report_progress()
            self._fail_waiters(ProjectionError(f"projection {self.name!r} was stopped"))
            if self._api is not None:
                await self._api.aclose()
        finally:
            self._stopped_event.set()

    aclose = stop

    async def run(self) -> None:
        """Start and run until :meth:`stop` is called or the task is cancelled (then stop gracefully).

        Raises:
            as :meth:`start`.
        """
        try:
            await self.start()
            await self._stopped_event.wait()
        finally:
            await self.stop()

    # ---- waiting ------------------------------------------------------------------------------
    async def wait_until(self, position: int | Sequence[int], timeout: float | None = None) -> None:
        """Wait until every message up to stream sequence ``position`` has been handled (with
        partitions: up to the sum ``position``, or one position per partition, see :attr:`positions`).

        Raises:
            InvalidInputError: a sequence with not one entry per partition.
            AetherTimeoutError: not reached within ``timeout`` seconds.
            ProjectionError: the runner stopped or failed.
        """
        target = self._wait_target(position)
        if self._failure is not None:
            raise ProjectionError(f"projection {self.name!r} failed: {self._failure!r}") from self._failure
        if self._reached(target):
            return
        if self._stopping:
            raise ProjectionError(f"projection {self.name!r} was stopped")
        waiter = asyncio.get_running_loop().create_future()
        self._add_waiter(target, waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            at = self.positions if len(self.positions) > 1 else self._current_position()
            raise AetherTimeoutError(f"projection {self.name!r} did not reach position {position} within "
                                     f"{timeout}s (at {at})") from None
        finally:
            self._remove_waiter(target, waiter)

    def _wait_target(self, position: int | Sequence[int]) -> _Target:
        """``position`` as :meth:`wait_until` waits for it (checked)."""
        if isinstance(position, int):
            return position
        values = tuple(position)
        if len(values) != 1:
            raise InvalidInputError(f"expected 1 position, got {len(values)}")
        return values[0]

    def _reached(self, target: _Target) -> bool:
        if isinstance(target, int):
            return self._current_position() >= target
        return all(have >= want for have, want in zip(self.positions, target, strict=True))

    def _add_waiter(self, target: _Target, waiter: asyncio.Future[None]) -> None:
        position = target if isinstance(target, int) else target[0]
        self._waiters.append((position, waiter))
        self._wait_min = min(self._wait_min, position)

    def _remove_waiter(self, target: _Target, waiter: asyncio.Future[None]) -> None:
        self._waiters[:] = [entry for entry in self._waiters if entry[1] is not waiter]
        self._wait_min = min((position for position, _ in self._waiters), default=_NEVER)

    async def catch_up(self, timeout: float | None = None) -> int:
        """Wait until every event stored now has been handled; returns that stream sequence.

        Raises:
            AetherTimeoutError: not caught up within ``timeout`` seconds.
            ProjectionError: the runner stopped or failed.
            StoreError / StoreUnavailableError: server trouble.
        """
        await self._setup()
        assert self._api is not None
        head = await head_sequence(self._api, self.source.stream, self.source.event_filter)
        await self.wait_until(head, timeout)
        return head

    def _release_waiters(self, position: int) -> None:
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, waiter in self._waiters:
            if target <= position:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                keep.append((target, waiter))
        self._waiters[:] = keep
        self._wait_min = min((target for target, _ in keep), default=_NEVER)

    def _fail_waiters(self, exc: BaseException) -> None:
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._waiters.clear()
        self._wait_min = _NEVER

    # ---- dead letters and rebuild ------------------------------------------------------------------
    async def dead_letters(self, *, after: int = 0, limit: int | None = None) -> list[DeadLetter]:
        """This projection's dead letters (oldest first) after dead-letter sequence ``after``.

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        await self._setup()
        assert self._dlq is not None
        return await self._dlq.read(self.name, after=after, limit=limit)

    async def holder(self) -> str | None:
        """The node running the projection per its lease (this node's id without a lease, when started)."""
        if self._lease is None:
            return self._node if self._active else None
        return await self._lease.holder()

    async def rebuild(self) -> None:
        """Replay from the start: stop consuming, call the projection's rebuild hook (clear the
        read model there), reset the checkpoint to 0 and consume again from the first event.

        Call it on the running runner that is active, or before any runner of the projection
        has started.

        Raises:
            ProjectionNotActiveError: another node runs the projection.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        await self._setup()
        lease = self._lease
        if lease is not None and not lease.held:
            holder = await lease.holder()
            if self._started or holder is not None:
                raise ProjectionNotActiveError(self.name, holder)
        async with self._lock:
            was_active = self._active
            await self._deactivate(graceful=True)
            hook = self.projection.rebuild_hook
            if hook is not None:
                await hook()
            await self._reset_checkpoint(lease.term if lease else 0)
            log.info("projection %s: rebuilding from the start", self.name)
            if was_active and not self._stopping and (lease is None or lease.held):
                await self._activate()

    async def _reset_checkpoint(self, term: int) -> None:
        """Save position 0 (rebuild)."""
        assert self._checkpoints is not None
        async with self._save_lock:
            await self._checkpoints.save(self._key, Checkpoint(0, self._node, term))
            self._saved = 0
        self._dispatched = 0

    # ---- activation ---------------------------------------------------------------------------------
    async def _load_position(self) -> int:
        """The position to resume after (the checkpoint's)."""
        assert self._checkpoints is not None
        checkpoint = await self._checkpoints.load(self._key)
        return checkpoint.position if checkpoint is not None else 0

    async def _activate(self) -> None:
        assert self._api is not None
        position = await self._load_position()
        if position:
            info = await self._api.api(f"STREAM.INFO.{self.source.stream}")
            first = int(info.get("state", {}).get("first_seq", 0) or 0)
            if position + 1 < first:
                log.warning("projection %s: the stream's retention limits removed messages %d..%d before this "
                            "projection read them; it resumes at %d", self.name, position + 1, first - 1, first)
        self._dispatched = position
        self._saved = position
        self._lanes = None
        self._in_flight = 0
        self._draining = False
        self._failure = None
        consumer = OrderedConsumer(self._nc, self._api, self.source.stream, self.source.event_filter,
                                   start_after=position, heartbeat=self.options.heartbeat)
        await consumer.start()
        self._consumer = consumer
        self._active = True
        self._consume_task = asyncio.get_running_loop().create_task(self._guard(self._consume(consumer)),
                                                                     name=f"aether-projection-{self.name}")
        log.info("projection %s active on %s from position %d", self.name, self._node, position)
        self._notify_active(True)
        if position >= self._wait_min:
            self._release_waiters(position)

    async def _deactivate(self, *, graceful: bool) -> None:
        consumer, task = self._consumer, self._consume_task
        self._consumer = self._consume_task = None
        if consumer is None and task is None:
            return
        if task is not None:
            if graceful:
                self._draining = True
                if consumer is not None:
                    consumer.interrupt()
                timeout = self.options.stop_timeout
                if self._lease is not None:  # never keep acting past the lease's local deadline
                    timeout = min(timeout, max(0.0, self._lease.deadline - asyncio.get_running_loop().time()))
                done, _ = await asyncio.wait({task}, timeout=timeout)
                if not done:
                    log.warning("projection %s: handler still running after %.1fs; cancelling it",
                                self.name, self.options.stop_timeout)
            task.cancel()
            await asyncio.wait({task})
        if graceful:
            await self._save_checkpoint()
        if consumer is not None:
            self._lag = consumer.lag(self._dispatched) + self._in_flight
        self._active = False
        if consumer is not None:
            self._resets += consumer.resets
            await consumer.aclose()
        log.info("projection %s inactive on %s at position %d", self.name, self._node, self._current_position())
        self._notify_active(False)

    async def _guard(self, body: Coroutine[Any, Any, None]) -> None:
        try:
            await body
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("projection %s stopped on an unexpected error", self.name)
            self._failure = exc
            self._active = False
            self._notify_active(False)
            self._fail_waiters(ProjectionError(f"projection {self.name!r} failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise

    # ---- the consuming loop -------------------------------------------------------------------------
    # One loop for both modes: without lanes it awaits each handler in place, with lanes it hands
    # the event to the lane of its actor. It is the per-event hot path: the handler call stays
    # inline (not behind a helper) and the state it reads is held in locals.
    async def _consume(self, consumer: OrderedConsumer) -> None:
        opts = self.options
        count = opts.concurrency
        lanes = [_Lane() for _ in range(count)] if count > 1 else None
        self._lanes = lanes
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._lane(lane), name=f"aether-lane-{self.name}-{i}")
                 for i, lane in enumerate(lanes or ())]
        take = consumer.take
        projection = self.projection
        handlers = dict(projection.handlers)
        default = projection.default
        subject_filter = self._subject_filter()
        stream = self.source.stream
        prefix_len = len(self.source.event_prefix)
        every = opts.checkpoint_every
        max_in_flight = opts.max_in_flight
        since_checkpoint = 0
        wake_checkpoint = self._checkpoint_wake.set
        graceful = False
        try:
            while not self._draining:
                batch = await take()
                if not batch and consumer.closed:
                    break
                for seq, msg in batch:
                    if self._draining:
                        break
                    subject = msg.subject
                    if subject_filter is None or subject.startswith(subject_filter):
                        try:
                            event = decode_stored(msg.data, subject, seq, stream, prefix_len)
                        except CorruptEventError as exc:
                            await self._dead_letter(msg, seq, str(exc), 0, None)
                        else:
                            handler = handlers.get(event.event_type, default)
                            if handler is None:
                                self._skipped += 1
                            elif lanes is None:
                                try:
                                    if _tracing.TRACER is None:
                                        await handler(event, seq)
                                    else:
                                        await _tracing.projection_handle(handler, event, seq, msg.headers,
                                                                         self.name, stream)
                                    self._processed += 1
                                except Exception as exc:
                                    await self._retry(handler, event, seq, msg, exc)
                            else:
                                while self._in_flight >= max_in_flight:
                                    self._space_waiter = loop.create_future()
                                    await self._space_waiter
                                lane = lanes[hash(subject[prefix_len:]) % count]
                                lane.items.append((handler, event, seq, msg))
                                self._in_flight += 1
                                lane.wake()
                    else:
                        self._skipped += 1
                    self._dispatched = seq
                    since_checkpoint += 1
                    if since_checkpoint >= every:
                        since_checkpoint = 0
                        wake_checkpoint()
                    if seq >= self._wait_min:
                        self._release_waiters(self._current_position())
            graceful = True
        finally:
            if lanes is not None and graceful:  # the lanes finish what they hold (bounded by stop_timeout)
                self._draining = True
                for lane in lanes:
                    lane.wake()
                await asyncio.gather(*tasks)
            elif lanes is not None:
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)

    async def _lane(self, lane: _Lane) -> None:
        items = lane.items
        loop = asyncio.get_running_loop()
        max_in_flight = self.options.max_in_flight
        while True:
            if not items:
                if self._draining:
                    return
                lane.waiter = loop.create_future()
                await lane.waiter
                continue
            handler, event, seq, msg = items[0]
            try:
                await self._apply(handler, event, seq, msg)
                self._processed += 1
            except Exception as exc:
                await self._retry(handler, event, seq, msg, exc)
            items.popleft()
            self._in_flight -= 1
            space = self._space_waiter
            if space is not None and self._in_flight < max_in_flight:
                self._space_waiter = None
                if not space.done():
                    space.set_result(None)
            if self._dispatched >= self._wait_min:
                self._release_waiters(self._current_position())

    async def _apply(self, handler: Handler, event: Event, seq: int, msg: Msg) -> None:
        """Call ``handler`` once (within a span when tracing is on)."""
        if _tracing.TRACER is None:
            await handler(event, seq)
        else:
            await _tracing.projection_handle(handler, event, seq, msg.headers, self.name, self.source.stream)

    def _subject_filter(self) -> str | None:
        prefix = self.projection.actor_prefix
        return self.source.event_prefix + encode_token(prefix) if prefix else None

    def _current_position(self) -> int:
        lanes = self._lanes
        if lanes is None:
            return self._dispatched
        low = 0
        for lane in lanes:
            items = lane.items
            if items:
                seq = items[0][2]
                if not low or seq < low:
                    low = seq
        return low - 1 if low else self._dispatched

    # ---- failures -------------------------------------------------------------------------------------
    async def _retry(self, handler: Handler, event: Event, seq: int, msg: Msg, exc: Exception) -> None:
        policy = self.options.retry
        attempts = 1
        while attempts < policy.max_attempts:
            delay = policy.backoff(attempts)
            log.warning("projection %s: handler failed on %s v%d of %r at position %d (attempt %d/%d): %s; "
                        "retrying in %.2fs", self.name, event.event_type, event.version, event.actor_id, seq,
                        attempts, policy.max_attempts, _describe(exc), delay)
            self._retried += 1
            self._notify_retry()
            await asyncio.sleep(delay)
            attempts += 1
            try:
                await self._apply(handler, event, seq, msg)
            except Exception as again:
                exc = again
                continue
            self._processed += 1
            return
        await self._dead_letter(msg, seq, _describe(exc), attempts, event)

    async def _dead_letter(self, msg: Msg, seq: int, reason: str, attempts: int, event: Event | None) -> None:
        assert self._dlq is not None
        letter = DeadLetter(projection=self.name, stream=self.source.stream, sequence=seq, subject=msg.subject,
                            reason=reason, attempts=attempts, payload=bytes(msg.data),
                            event_type=event.event_type if event is not None else None,
                            actor_id=event.actor_id if event is not None else None, node=self._node)
        delay = 0.1
        while True:
            try:
                await self._dlq.publish(letter)
                break
            except AetherError as exc:
                log.error("projection %s: cannot dead-letter position %d yet (%s); retrying in %.1fs",
                          self.name, seq, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            with contextlib.suppress(AetherError):
                await self._dlq.ensure()
        self._dead += 1
        kind = "corrupt" if event is None else "handler"
        log.error("projection %s: dead-lettered position %d (%s) after %d attempt(s): %s",
                  self.name, seq, kind, attempts, reason)
        self._notify_dead_letter(kind)

    # ---- checkpoints --------------------------------------------------------------------------------
    async def _checkpoint_loop(self) -> None:
        interval = self.options.checkpoint_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._checkpoint_wake.wait()
            self._checkpoint_wake.clear()
            await self._save_checkpoint()
            self._report_progress()

    async def _save_checkpoint(self) -> None:
        lease = self._lease
        if not self._active or (lease is not None and not lease.held) or self._checkpoints is None:
            return
        async with self._save_lock:
            position = self._current_position()
            if position == self._saved:
                return
            try:
                await self._checkpoints.save(self._key, Checkpoint(position, self._node, self.term))
            except AetherError as exc:
                log.warning("projection %s: saving the checkpoint at %d failed: %s", self.name, position, exc)
                return
            self._saved = position

    # ---- the lease loop -------------------------------------------------------------------------------
    async def _lease_loop(self) -> None:
        lease = self._lease
        assert lease is not None
        loop = asyncio.get_running_loop()
        ttl = lease.ttl
        idle = max(0.2, ttl / 4)
        while not self._stopping:
            if not lease.held:
                if self._active:
                    await self._step_down("the lease's local deadline passed before it was renewed")
                try:
                    acquired = await lease.try_acquire()
                except AetherError as exc:
                    log.debug("projection %s: acquiring the lease failed: %s", self.name, exc)
                    acquired = False
                if not acquired:
                    await lease.wait_for_turn()  # at once when the holder releases it
                    continue
                try:
                    async with asyncio.timeout_at(lease.deadline):
                        async with self._lock:
                            if not self._stopping:
                                await self._activate()
                except (AetherError, TimeoutError) as exc:
                    log.warning("projection %s: could not start after acquiring the lease: %s", self.name, exc)
                    await self._deactivate(graceful=False)
                    await lease.release()
                    await asyncio.sleep(idle)
                continue
            if self._failure is not None and not self._active:  # crashed: let another node try
                await self._step_down(f"the projection failed: {self._failure!r}")
                await lease.release()
                await asyncio.sleep(idle)
                continue
            renew_at = lease.deadline - ttl * 2 / 3
            now = loop.time()
            if now < renew_at:
                await asyncio.sleep(renew_at - now)
            if not lease.held:
                continue
            try:
                async with asyncio.timeout_at(lease.deadline):
                    renewed = await lease.renew()
            except (AetherError, TimeoutError) as exc:
                log.warning("projection %s: renewing the lease failed: %s", self.name, exc)
                await asyncio.sleep(min(0.2, max(0.0, lease.deadline - loop.time())))
                continue
            if not renewed:
                await self._step_down("the lease was lost to another node")

    async def _step_down(self, reason: str) -> None:
        log.warning("projection %s: stepping down on %s: %s", self.name, self._node, reason)
        assert self._lease is not None
        self._lease.forget()
        await self._deactivate(graceful=False)

    # ---- observer (guarded: a raising observer is logged and counted, never breaks the runner) --------
    def _report_progress(self) -> None:
        observer = self._observer
        if observer is None:
            return
        delta = self._processed - self._reported
        self._reported = self._processed
        call_observer(observer.on_progress, self.name, delta, self._current_position(), self.lag)

    def _notify_retry(self) -> None:
        if self._observer is not None:
            call_observer(self._observer.on_retry, self.name)

    def _notify_dead_letter(self, kind: str) -> None:
        if self._observer is not None:
            call_observer(self._observer.on_dead_letter, self.name, kind)

    def _notify_active(self, active: bool) -> None:
        if self._observer is not None:
            call_observer(self._observer.on_active, self.name, active)
