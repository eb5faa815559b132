"""The repository: load an aggregate, run a command, save its events, retry on conflicts.

::

    repo = Repository(store, Account, snapshot_every=100)
    result = await repo.execute("acct-1", lambda account: account.deposit(50), command_id=request_id)

* **Load** = the latest snapshot (if its aggregate type and snapshot version fit) plus the
  events after it (``get_events(actor, snapshot.version + 1)``), each upcast, then applied.
  Concurrent loads read their heads (latest version + snapshot) in shared batches when the store
  can (:class:`~aether.event.HeadReader`): a node taking over thousands of actors at once.
* **Execute** runs the command on the loaded aggregate; the events it records are saved with
  one atomic ``save_events``. On :class:`~aether.errors.VersionConflictError` (someone else
  wrote first) the aggregate is reloaded and the command runs again, at most
  ``max_attempts`` times in all, with a short jittered back-off; then
  :class:`~aether.aggregate.ConflictRetriesExhaustedError` is raised.
* **Idempotency**: with ``command_id`` the events carry it in their metadata; a command whose id
  the aggregate has already seen records nothing and returns ``duplicate=True``. A caller that
  retries after an unknown outcome (timeout, node failure) therefore never stores a command twice.
* **Snapshots** are taken every ``snapshot_every`` events *after* the save, in a background
  task: the save path never waits for them, failures are logged (``aether.aggregate``) and
  counted, and :meth:`Repository.aclose` waits for those still running.
* Commands on one actor are serialized inside one repository (one in-process "mailbox" per
  actor), so they never conflict with each other; conflicts come only from other writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast, overload

from aether.aggregate._heads import HeadBatcher
from aether.aggregate.base import COMMAND_KEY, Aggregate
from aether.aggregate.errors import ConflictRetriesExhaustedError
from aether.errors import InvalidInputError, VersionConflictError
from aether.event import ActorSnapshot, Event, EventStore, HeadReader, SnapshotStore

__all__ = ["CommandResult", "Repository", "RepositoryStats"]

log = logging.getLogger("aether.aggregate")

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class CommandResult(Generic[A, R]):
    """What :meth:`Repository.execute` did.

    Attributes:
        aggregate: the aggregate after the command (its ``version`` is the latest stored version).
        events: the events this call saved (empty when the command recorded nothing or was a duplicate).
        value: what the command returned (``None`` for a duplicate).
        attempts: how many times the command ran (1 without conflicts).
        duplicate: the ``command_id`` had already been processed; nothing was saved.
    """

    aggregate: A
    events: list[Event]
    value: R | None
    attempts: int
    duplicate: bool = False


@dataclass(slots=True)
class RepositoryStats:
    """Counters of one repository."""

    commands: int = 0
    events_saved: int = 0
    conflicts: int = 0
    duplicates: int = 0
    loads: int = 0
    events_replayed: int = 0
    snapshots_saved: int = 0
    snapshot_failures: int = 0


@dataclass(slots=True)
class _ActorLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Repository(Generic[A]):
    """Loads, changes and saves aggregates of one type on an event store.

    Args:
        store: any :class:`~aether.EventStore`.
        aggregate_type: the :class:`~aether.aggregate.Aggregate` subclass to build.
        snapshots: where snapshots live; by default the event store itself when it is also a
            :class:`~aether.SnapshotStore`.
        snapshot_every: take a snapshot once this many events were applied since the last one
            (``None``: never take snapshots, but still use existing ones).
        max_attempts: how many times a command may run before conflicts are given up (>= 1).
        retry_backoff: base seconds of the jittered exponential back-off between attempts.
        cache_size: keep up to this many aggregates in memory between commands (LRU), so a
            single writer does not re-read histories. A stale cached copy is harmless: its
            save conflicts and the aggregate is reloaded.

    Raises:
        InvalidInputError: bad arguments.
    """

    def __init__(self, store: EventStore, aggregate_type: type[A], *, snapshots: SnapshotStore | None = None,
                 snapshot_every: int | None = None, max_attempts: int = 5, retry_backoff: float = 0.002,
                 cache_size: int = 0) -> None:
        if not (isinstance(aggregate_type, type) and issubclass(aggregate_type, Aggregate)):
            raise InvalidInputError(f"aggregate_type must be an Aggregate subclass, got {aggregate_type!r}")
        if snapshot_every is not None and (type(snapshot_every) is not int or snapshot_every < 1):
            raise InvalidInputError(f"snapshot_every must be None or an int >= 1, got {snapshot_every!r}")
        if type(max_attempts) is not int or max_attempts < 1:
            raise InvalidInputError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        if retry_backoff < 0:
            raise InvalidInputError("retry_backoff must be >= 0")
        if type(cache_size) is not int or cache_size < 0:
            raise InvalidInputError(f"cache_size must be an int >= 0, got {cache_size!r}")
        if snapshots is None and isinstance(store, SnapshotStore):
            snapshots = store
        if snapshot_every is not None and snapshots is None:
            raise InvalidInputError("snapshot_every needs a SnapshotStore (the event store is not one)")
        self.store, self.snapshots, self.aggregate_type = store, snapshots, aggregate_type
        self.snapshot_every = snapshot_every
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.cache_size = cache_size
        self.stats = RepositoryStats()
        self._cache: OrderedDict[str, A] = OrderedDict()
        self._locks: dict[str, _ActorLock] = {}
        self._snapshot_tasks: dict[str, asyncio.Task[None]] = {}
        # loads of many actors at once read their heads (latest version + snapshot) in batches,
        # when the store can and the snapshots live in it
        self._heads: HeadBatcher | None = None
        if isinstance(store, HeadReader) and (snapshots is None or snapshots is cast(object, store)):
            self._heads = HeadBatcher(store.get_heads)

    # ---- loading -------------------------------------------------------------------------
    async def load(self, actor_id: str) -> A:
        """The aggregate rebuilt from the store (version 0 when the actor has no events).

        When the store is a :class:`~aether.event.HeadReader` holding the snapshots too, the
        loads running at the same time read their heads (latest version and snapshot) in shared
        batches, and a load whose snapshot is the latest version reads no events.

        Raises:
            AggregateError (UnknownEventError, EventSchemaError): the history cannot be applied.
            InvalidNameError: bad actor id.
            StoreError / StoreUnavailableError / AetherTimeoutError: store trouble.
        """
        self.stats.loads += 1
        aggregate: A | None = None
        snapshot: ActorSnapshot | None = None
        latest: int | None = None  # the latest stored version, when the head was read
        if self._heads is not None:
            head = await self._heads.get(actor_id)  # a bad id fails in the store, for this load alone
            latest, snapshot = head.version, head.snapshot if self.snapshots is not None else None
        elif self.snapshots is not None:
            snapshot = await self.snapshots.get_latest_snapshot(actor_id)
        if snapshot is not None:
            aggregate = self.aggregate_type.from_snapshot(actor_id, snapshot.version, snapshot.state)
            if aggregate is None:
                log.debug("ignoring incompatible snapshot of %r at version %d", actor_id, snapshot.version)
            else:
                aggregate._snapshot_base = snapshot.version
        if aggregate is None:
            aggregate = self.aggregate_type(actor_id)
        if latest is not None and latest <= aggregate.version:
            return aggregate  # the snapshot (or nothing) is the whole history: no events to read
        events = await self.store.get_events(actor_id, aggregate.version + 1)
        apply = aggregate.apply
        for event in events:
            apply(event)
        self.stats.events_replayed += len(events)
        return aggregate

    # ---- commands -----------------------------------------------------------------------
    @overload
    async def execute(self, actor_id: str, command: Callable[[A], Awaitable[R]], *, command_id: str | None = None,
                      metadata: Mapping[str, str] | None = None) -> CommandResult[A, R]: ...

    @overload
    async def execute(self, actor_id: str, command: Callable[[A], R], *, command_id: str | None = None,
                      metadata: Mapping[str, str] | None = None) -> CommandResult[A, R]: ...

    async def execute(self, actor_id: str, command: Callable[[A], Any], *,
                      command_id: str | None = None,
                      metadata: Mapping[str, str] | None = None) -> CommandResult[A, Any]:
        """Run ``command`` on the actor's current state and save the events it records.

        Args:
            actor_id: the actor.
            command: called with the aggregate (may be async); it validates and calls
                ``aggregate.record(...)``. An exception it raises propagates and nothing is saved.
            command_id: idempotency key; a command already processed is not run again.
            metadata: added to every event's metadata (correlation ids, user, …).

        Returns:
            a :class:`CommandResult`.

        Raises:
            ConflictRetriesExhaustedError: every one of ``max_attempts`` attempts conflicted.
            whatever ``command`` raises; AggregateError while loading; store errors while saving
            (after a timeout the outcome is unknown: retry with the same ``command_id``).
        """
        context: dict[str, str] = dict(metadata) if metadata else {}
        if command_id is not None:
            context[COMMAND_KEY] = command_id
        self.stats.commands += 1
        async with self._actor_lock(actor_id):
            aggregate = self._cache.pop(actor_id, None)
            attempt = 0
            while True:
                attempt += 1
                if aggregate is None:
                    aggregate = await self.load(actor_id)
                if command_id is not None and aggregate.has_processed(command_id):
                    self.stats.duplicates += 1
                    self._remember(aggregate)
                    return CommandResult(aggregate, [], None, attempt, duplicate=True)
                aggregate._context = context
                try:
                    value = command(aggregate)
                    if inspect.isawaitable(value):
                        value = await value
                finally:
                    aggregate._context = {}
                events, aggregate._pending = aggregate._pending, []
                if not events:
                    self._remember(aggregate)
                    return CommandResult(aggregate, [], value, attempt)
                try:
                    await self.store.save_events(events)
                except VersionConflictError as exc:
                    self.stats.conflicts += 1
                    if attempt >= self.max_attempts:
                        raise ConflictRetriesExhaustedError(exc.actor_id, exc.attempted_version,
                                                            exc.current_version, attempt) from exc
                    aggregate = None
                    if self.retry_backoff:
                        await asyncio.sleep(self.retry_backoff * (2 ** (attempt - 1)) * random.random())
                    continue
                self.stats.events_saved += len(events)
                self._remember(aggregate)
                self._maybe_snapshot(aggregate)
                return CommandResult(aggregate, events, value, attempt)

    @contextlib.asynccontextmanager
    async def _actor_lock(self, actor_id: str) -> AsyncIterator[None]:
        locks = self._locks
        entry = locks.get(actor_id)
        if entry is None:
            entry = locks[actor_id] = _ActorLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del locks[actor_id]

    def _remember(self, aggregate: A) -> None:
        if not self.cache_size:
            return
        cache = self._cache
        cache[aggregate.actor_id] = aggregate
        cache.move_to_end(aggregate.actor_id)
        while len(cache) > self.cache_size:
            cache.popitem(last=False)

    def forget(self, actor_id: str | None = None) -> None:
        """Drop one actor (or every actor) from the in-memory cache."""
        if actor_id is None:
            self._cache.clear()
        else:
            self._cache.pop(actor_id, None)

    def forget_if(self, predicate: Callable[[str], bool]) -> int:
        """Drop every cached actor whose id satisfies ``predicate`` (e.g. its shard moved away).

        Returns the number of actors dropped.
        """
        doomed = [actor_id for actor_id in self._cache if predicate(actor_id)]
        for actor_id in doomed:
            del self._cache[actor_id]
        return len(doomed)

    # ---- snapshots ----------------------------------------------------------------------
    def _maybe_snapshot(self, aggregate: A) -> None:
        every = self.snapshot_every
        if every is None or aggregate.version - aggregate._snapshot_base < every:
            return
        actor_id = aggregate.actor_id
        if actor_id in self._snapshot_tasks:
            return  # one at a time per actor; the next command tries again
        assert self.snapshots is not None
        snapshot = ActorSnapshot(actor_id, aggregate.version, aggregate.to_snapshot())
        aggregate._snapshot_base = aggregate.version
        task = asyncio.get_running_loop().create_task(self._save_snapshot(snapshot),
                                                      name=f"aether-snapshot-{actor_id}")
        self._snapshot_tasks[actor_id] = task

    async def _save_snapshot(self, snapshot: ActorSnapshot) -> None:
        assert self.snapshots is not None
        try:
            await self.snapshots.save_snapshot(snapshot)
            self.stats.snapshots_saved += 1
        except Exception as exc:
            self.stats.snapshot_failures += 1
            log.warning("snapshot of %r at version %d failed: %s", snapshot.actor_id, snapshot.version, exc)
        finally:
            self._snapshot_tasks.pop(snapshot.actor_id, None)

    async def snapshot(self, actor_id: str) -> ActorSnapshot:
        """Load the actor and save a snapshot of it now (waits for the save).

        Raises:
            InvalidInputError: no snapshot store, or the actor has no events.
            as :meth:`load`, and store errors while saving.
        """
        if self.snapshots is None:
            raise InvalidInputError("this repository has no snapshot store")
        aggregate = await self.load(actor_id)
        if aggregate.version == 0:
            raise InvalidInputError(f"actor {actor_id!r} has no events to snapshot")
        snapshot = ActorSnapshot(actor_id, aggregate.version, aggregate.to_snapshot())
        await self.snapshots.save_snapshot(snapshot)
        self.stats.snapshots_saved += 1
        return snapshot

    async def flush_snapshots(self) -> None:
        """Wait for every background snapshot still running (their failures are logged, not raised)."""
        while self._snapshot_tasks:
            await asyncio.gather(*list(self._snapshot_tasks.values()), return_exceptions=True)

    async def aclose(self) -> None:
        """Wait for background snapshots and drop the cache. The store is not closed."""
        await self.flush_snapshots()
        self._cache.clear()

    async def __aenter__(self) -> Repository[A]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Repository of {self.aggregate_type.__qualname__} on {type(self.store).__name__}>"


