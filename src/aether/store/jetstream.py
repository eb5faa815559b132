"""JetStreamEventStore: the production event store on NATS JetStream.

See DESIGN.md section 2: the server enforces optimistic concurrency with
``Nats-Expected-Last-Subject-Sequence``; a bounded cache of (version, sequence) per actor
avoids a lookup per append and is refreshed from the server on any mismatch; every append
carries ``Nats-Msg-Id`` so retries are idempotent; ``save_events`` is a JetStream atomic
batch; histories are read with batched direct gets (no consumer is ever created).

A partitioned namespace (``partitions=P > 1``, see :mod:`aether.store.partitioning`) is P
streams: the store then holds one single-stream store per partition (each exactly the logic
above, on its own stream and subjects) and routes every call to the actor's partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from aether import tracing as _tracing
from aether._ids import new_id
from aether._nats import (
    ERR_BATCH_DUPLICATE_MSG_ID,
    ERR_MESSAGE_TOO_LARGE,
    ERR_STREAM_NOT_FOUND,
    MULTI_LAST_MAX,
    WRONG_LAST_SEQUENCE_CODES,
    JetStreamApiError,
    JsApi,
    PubAck,
    api_error,
    check_client,
)
from aether._nats.leader import leader_get
from aether._nats.streams import create_or_adopt
from aether._tasks import cancel_and_wait
from aether.codec import decode_event, decode_snapshot, encode_snapshot
from aether.errors import (
    AetherError,
    AetherTimeoutError,
    CorruptEventError,
    DuplicateEventIdError,
    EventTooLargeError,
    InvalidInputError,
    NatsConnectionError,
    StoreError,
    VersionConflictError,
)
from aether.event import ActorHead, ActorSnapshot, Event
from aether.names import decode_token, encode_token, stream_name, validate_actor_id
from aether.store._history import HistoryReader, HistoryStats, ReadPosition, decode_actor_event
from aether.store._trace import trace_from_env
from aether.store._validation import (
    check_actor_id,
    check_batch,
    check_event,
    check_from_version,
    check_snapshot,
    encode_within,
)
from aether.store.observer import StoreObserver
from aether.store.observer import guard as guard_observer
from aether.store.options import JetStreamOptions
from aether.store.partitioning import (
    PARTITION_METADATA_KEY,
    PARTITIONS_METADATA_KEY,
    partition_for,
    partition_index,
    partition_stream_name,
)
from aether.store.placement import PartitionPlacement, current_placement, rebalance

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["JetStreamEventStore", "JetStreamOptions"]

_log = logging.getLogger("aether.store")

_NS = 1_000_000_000
_HEADER_ALLOWANCE = 512  # room kept below max_payload for the headers Aether adds
_encode_json = msgspec.json.encode
_CONFLICT_CODES = WRONG_LAST_SEQUENCE_CODES | {ERR_BATCH_DUPLICATE_MSG_ID}


class _Entry:
    """What the cache knows of one actor: latest version, its stream sequence, its subject."""

    __slots__ = ("seq", "subject", "version")

    def __init__(self, version: int, seq: int, subject: str) -> None:
        self.version = version
        self.seq = seq
        self.subject = subject


class _Latest(msgspec.Struct):
    version: int
    seq: int
    event_id: str | None


class JetStreamEventStore:
    """Event and snapshot store on JetStream: one stream per namespace, or ``partitions``
    streams (see :attr:`streams`, :meth:`partition_of`).

    Create it with :meth:`create`; the constructor does no I/O. The store never closes the
    nats-py client it was given.
    """

    def __init__(self, nc: Client, stream: str, *, namespace: str | None = None,
                 options: JetStreamOptions | None = None, observer: StoreObserver | None = None,
                 _partition: tuple[int, int] | None = None) -> None:
        check_client(nc, "JetStreamEventStore")
        self.options = options or JetStreamOptions()
        self.namespace = namespace
        self.stream = stream_name(stream, namespace)
        # a partitioned namespace: the per-partition stores (empty with one stream); a
        # partition store itself knows its (index, count) and works on its own stream
        self.partitions = 1
        self._units: tuple[JetStreamEventStore, ...] = ()
        self._base = stream
        self._partition = _partition
        self._single_info: dict[str, Any] | None = None
        if _partition is not None:
            self.stream = partition_stream_name(self.stream, _partition[0])
        self._nc = nc
        self._api = JsApi(nc, timeout=self.options.timeout)
        prefix = self.options.subject_prefix
        self._event_prefix = f"{prefix}.{self.stream}.e."
        self._snapshot_prefix = f"{prefix}.{self.stream}.s."
        self._direct_get = f"$JS.API.DIRECT.GET.{self.stream}"
        self._index_prefix = f"{prefix}.{self.stream}.x."
        # histories are read by aether.store._history; it also keeps each actor's sequence index
        # (derived data on the subjects <prefix>.<stream>.x.*) when the stream allows rollups
        self._history = HistoryReader(self._api, page_size=self.options.page_size, timeout=self.options.timeout,
                                      index_limit=max(16, (self.options.max_event_size - 64) // 4))
        self._indexing = True
        self._cache: dict[str, _Entry] = {}
        self._anchors: dict[str, tuple[int, int]] = {}
        self._observer = guard_observer(observer)
        self._ns_label = namespace or ""
        self._max_event_size = self.options.max_event_size
        self._trace = trace_from_env()  # diagnostics only: see aether.store._trace
        # on a replicated stream any replica may answer a direct get, and a follower may not have
        # applied the latest writes yet: history reads are then completed from the stream leader
        self._replicated = self.options.replicas > 1

    # ---- construction -----------------------------------------------------------------
    @classmethod
    async def create(cls, nc: Client, stream_name: str, *, namespace: str | None = None,
                     options: JetStreamOptions | None = None, observer: StoreObserver | None = None,
                     **option_fields: Any) -> JetStreamEventStore:
        """Connect a store to its stream(s), creating or upgrading them when needed.

        With ``partitions`` unset, an existing namespace is opened with the partition count
        recorded on the server (1 for a new one); see :attr:`streams` and :meth:`partition_of`.
        Creating a replicated partitioned namespace also spreads its partition leaders over the
        servers (:meth:`rebalance_leaders`).

        Args:
            nc: a connected nats-py client.
            stream_name: base stream name (see :mod:`aether.names`).
            namespace: optional namespace; each namespace has its own stream and subjects.
            options: a :class:`JetStreamOptions`; or pass its fields as keyword arguments.
            observer: receives metrics (see :mod:`aether.metrics`).

        Raises:
            InvalidInputError: ``nc`` is not a nats-py client, bad options (unknown or ill-typed).
            InvalidNameError: bad stream name or namespace.
            InvalidInputError: ``partitions`` differs from the count recorded for the namespace
                (re-partitioning is not supported).
            NatsConnectionError: ``nc`` is closed.
            StoreError: the stream cannot be created or is configured incompatibly.
            StoreUnavailableError / AetherTimeoutError: the server cannot be reached.
        """
        check_client(nc, "JetStreamEventStore.create")
        if nc.is_closed:
            raise NatsConnectionError("the nats-py client given to JetStreamEventStore.create is closed")
        if option_fields:
            if options is not None:
                raise InvalidInputError("pass either options= or option keyword arguments, not both")
            try:
                options = JetStreamOptions(**option_fields)
            except TypeError as exc:
                raise InvalidInputError(f"bad JetStreamEventStore option: {exc}") from None
        elif options is not None and not isinstance(options, JetStreamOptions):
            raise InvalidInputError(f"options must be a JetStreamOptions, got {type(options).__name__}")
        store = cls(nc, stream_name, namespace=namespace, options=options, observer=observer)
        await store._open()
        payload_limit = nc.max_payload - _HEADER_ALLOWANCE if nc.max_payload else store._max_event_size
        for each in (store, *store._units):
            each._max_event_size = min(each._max_event_size, payload_limit)
        return store

    def _stream_config(self) -> dict[str, Any]:
        o = self.options
        return {
            "name": self.stream,
            "subjects": [f"{o.subject_prefix}.{self.stream}.>"],
            "retention": "limits",
            "storage": o.storage,
            "num_replicas": o.replicas,
            "max_age": int(o.max_age * _NS),
            "max_bytes": o.max_bytes,
            "max_msgs": o.max_msgs,
            "duplicate_window": int(o.duplicate_window * _NS),
            "discard": "old",
            "allow_direct": True,
            "allow_atomic": True,
            "allow_rollup_hdrs": True,
            **self._partition_metadata(),
        }

    async def _ensure_stream(self, known: dict[str, Any] | None = None) -> None:
        config = self._stream_config()
        info = await create_or_adopt(self._api, config, create=self.options.create_stream, known=known,
                                     why_not_created="create_stream=False")
        if info is None:
            self._replicated = int(config["num_replicas"]) > 1
            return
        existing = info["config"]
        self._replicated = int(existing.get("num_replicas", 1)) > 1
        self._check_recorded_count(existing)
        if config["subjects"][0] not in existing.get("subjects", []):
            raise StoreError(
                f"stream {self.stream!r} exists but does not hold subjects {config['subjects'][0]!r}"
            )
        if not existing.get("allow_direct") or not existing.get("allow_atomic"):
            existing.update(allow_direct=True, allow_atomic=True, allow_rollup_hdrs=not existing.get("deny_purge"))
            await self._api.api(f"STREAM.UPDATE.{self.stream}", existing)
        elif not existing.get("allow_rollup_hdrs") and not existing.get("deny_purge"):
            # sequence indexes need rollups; a stream created before them is upgraded when this
            # client may, else it is read without indexes (they only make reads faster)
            existing["allow_rollup_hdrs"] = True
            try:
                await self._api.api(f"STREAM.UPDATE.{self.stream}", existing)
            except AetherError:
                self._indexing = False
        self._indexing = self._indexing and bool(existing.get("allow_rollup_hdrs")) and not existing.get("deny_purge")

    # ---- partitions -----------------------------------------------------------------------
    def _partition_metadata(self) -> dict[str, Any]:
        if self._partition is None:
            return {}
        index, count = self._partition
        return {"metadata": {PARTITIONS_METADATA_KEY: str(count), PARTITION_METADATA_KEY: str(index)}}

    def _check_recorded_count(self, config: dict[str, Any]) -> None:
        expected = str(self._partition[1]) if self._partition is not None else None
        recorded = (config.get("metadata") or {}).get(PARTITIONS_METADATA_KEY)
        if recorded != expected:
            raise InvalidInputError(
                f"stream {self.stream!r} belongs to a namespace with {recorded or 1} partition(s), not "
                f"{expected or 1}: re-partitioning is not supported (see docs/scaling.md)")

    async def _stream_info_or_none(self, name: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = await self._api.api(f"STREAM.INFO.{name}")
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            return None
        return info

    async def _recorded_partitions(self) -> int | None:
        """The partition count the server records for this namespace (``None``: nothing exists).

        An existing unpartitioned stream answers it in one request, as before partitions existed
        (and with the same permissions); otherwise partition 0's metadata holds the count.
        """
        self._single_info = await self._stream_info_or_none(self.stream)
        if self._single_info is not None:
            return 1
        first = await self._stream_info_or_none(partition_stream_name(self.stream, 0))
        if first is None:
            return None
        text = (first.get("config", {}).get("metadata") or {}).get(PARTITIONS_METADATA_KEY, "")
        if not (isinstance(text, str) and text.isascii() and text.isdigit() and int(text) > 1):
            raise StoreError(f"stream {partition_stream_name(self.stream, 0)!r} does not record a partition "
                             f"count ({PARTITIONS_METADATA_KEY} metadata is {text!r})")
        return int(text)

    async def _open(self) -> None:
        """Adopt or check the recorded partition count, then create or check every stream."""
        options = self.options
        requested = options.partitions if options.partitions_explicit else None
        recorded = await self._recorded_partitions()
        if recorded is not None and requested is not None and requested != recorded:
            raise InvalidInputError(
                f"namespace stream {self.stream!r} has {recorded} partition(s); it cannot be opened with "
                f"partitions={requested} (re-partitioning is not supported: move the events to a new "
                "namespace with a projection, see docs/scaling.md)")
        count = recorded or requested or 1
        if count == 1:
            known, self._single_info = self._single_info, None
            await self._ensure_stream(known)  # one STREAM.INFO when the stream exists, as before partitions
        else:
            self.partitions = count
            self._units = tuple(
                type(self)(self._nc, self._base, namespace=self.namespace, options=options,
                           observer=self._observer, _partition=(i, count))
                for i in range(count))
            await self._units[0]._ensure_stream()  # partition 0 first: it records the count
            await asyncio.gather(*(unit._ensure_stream() for unit in self._units[1:]))
        if recorded is None and await self._recorded_partitions() != count:
            # another process created the namespace at the same time with another count
            raise InvalidInputError(f"namespace stream {self.stream!r} was created concurrently with a "
                                    f"different partition count than {count}")
        if recorded is None and count > 1 and options.replicas > 1:
            # new partitions on a cluster: spread their leaders over the servers now, while idle
            try:
                await self.rebalance_leaders()
            except AetherError as exc:
                _log.warning("spreading the partition leaders of %s failed: %s", self.stream, exc)

    async def placement(self) -> list[PartitionPlacement]:
        """Per partition (partition 0 first): its stream, leading server and replicas. A
        partition electing a leader right now (it does not answer) shows no leader.

        Raises:
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        return await current_placement(self._api, self.streams)

    async def rebalance_leaders(self, *, timeout: float = 30.0) -> list[PartitionPlacement]:
        """Move partition leaders so every server of the cluster leads an even share of the
        partitions (leader step-down with a preferred server); returns the placement after.

        Done automatically when a replicated partitioned namespace is created; call it again
        after servers restart (leaders move to the survivors when a server dies and do not come
        back on their own). Each move pauses that partition's writes briefly (an election).
        Does nothing on a single server, with ``replicas=1`` or with one partition.

        Raises:
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        return await rebalance(self._api, self.streams, timeout=timeout)

    @property
    def history_stats(self) -> HistoryStats:
        """What this store's history reads did so far, over every partition (inspection, tests)."""
        return sum((unit._history.stats() for unit in (self, *self._units)), HistoryStats())

    @property
    def cached_actors(self) -> int:
        """How many actors' latest versions are cached (at most ``options.cache_size``)."""
        return len(self._cache)

    async def wait_index_writes(self) -> None:
        """Wait until the sequence-index writes that reads started so far are done (tests, benchmarks)."""
        for unit in (self, *self._units):
            await unit._history.wait_index_writes()

    @property
    def streams(self) -> tuple[str, ...]:
        """The JetStream streams of the namespace, partition 0 first (one with ``partitions=1``)."""
        return tuple(unit.stream for unit in self._units) or (self.stream,)

    def partition_of(self, actor_id: str) -> int:
        """The partition holding ``actor_id`` (see :func:`aether.store.partitioning.partition_for`).

        Raises:
            InvalidNameError: bad actor id.
        """
        return partition_for(actor_id, self.partitions)

    def _unit(self, actor_id: str) -> JetStreamEventStore:
        """The partition store of ``actor_id`` (every caller has checked the id)."""
        return self._units[partition_index(actor_id, self.partitions)]

    # ---- helpers ------------------------------------------------------------------------
    def _note(self, kind: str, **fields: Any) -> None:
        """Record a decision in the diagnostic trace (only called when tracing is on)."""
        assert self._trace is not None
        url = self._nc.connected_url
        self._trace(kind, f"{url.hostname}:{url.port}" if url is not None else None, stream=self.stream, **fields)

    def _subject(self, actor_id: str) -> str:
        entry = self._cache.get(actor_id)
        if entry is not None:
            return entry.subject
        return self._event_prefix + encode_token(validate_actor_id(actor_id))

    def _remember(self, actor_id: str, version: int, seq: int, subject: str) -> None:
        cache = self._cache
        entry = cache.get(actor_id)
        if entry is not None:
            if version >= entry.version:
                entry.version = version
                entry.seq = seq
            return
        if len(cache) >= self.options.cache_size:
            del cache[next(iter(cache))]
        cache[actor_id] = _Entry(version, seq, subject)

    async def _msg_get(self, body: dict[str, Any], what: str) -> tuple[int, bytes] | None:
        """One message through the stream leader (``STREAM.MSG.GET``): ``(sequence, payload)``.

        Unlike a direct get, which any replica may answer (a lagging follower gives a stale
        answer), this is answered by the leader: what the concurrency decisions rely on. While
        the stream has no leader it waits for one within the store's timeout.
        """
        try:
            found = await leader_get(self._api, self.stream, body, timeout=self.options.timeout, what=what)
        except JetStreamApiError as exc:
            raise StoreError(f"{what}: {exc.description}") from exc
        return None if found is None else (found.seq, found.data)

    async def _fetch_latest(self, actor_id: str, subject: str) -> _Latest:
        """Ask the stream leader for the actor's last event; updates the cache (never trusts it)."""
        found = await self._msg_get({"last_by_subj": subject}, f"reading the latest version of {actor_id!r}")
        if found is None:
            latest = _Latest(0, 0, None)
        else:
            seq, data = found
            event = self._decode(data, actor_id, seq)
            latest = _Latest(event.version, seq, event.id)
        if self._trace is not None:
            self._note("latest", actor=actor_id, version=latest.version, seq=latest.seq, id=latest.event_id)
        entry = self._cache.get(actor_id)
        if entry is not None:
            entry.version = latest.version
            entry.seq = latest.seq
        else:
            self._remember(actor_id, latest.version, latest.seq, subject)
        return latest

    def _decode(self, data: bytes, actor_id: str, seq: int) -> Event:
        return decode_actor_event(data, actor_id, self.stream, seq)

    async def _event_after(self, actor_id: str, subject: str, seq: int) -> Event | None:
        """The actor's first event stored after stream sequence ``seq`` (asked of the leader)."""
        found = await self._msg_get({"seq": seq + 1, "next_by_subj": subject}, f"reading an event of {actor_id!r}")
        if found is None:
            return None
        return self._decode(found[1], actor_id, found[0])

    async def _confirm_duplicate(self, event: Event, subject: str, seq: int) -> None:
        """The server de-duplicated ``event`` by its id: succeed only if the message stored with
        that id (at ``seq``) is this very event at this very version.

        A retry may rebuild an event with the same id but another version (its writer read a
        stale version first); reporting success then would acknowledge a version that holds
        another event, and poison the cache.
        """
        found = await self._msg_get({"seq": seq}, f"checking a de-duplicated append of {event.actor_id!r}")
        stored: Event | None = None
        if found is not None:
            stored = decode_event(found[1], stream=self.stream, sequence=seq, actor_id=event.actor_id)
            if self._trace is not None:
                self._note("dup-check", actor=event.actor_id, version=event.version, id=event.id, seq=seq,
                           stored_version=stored.version, stored_id=stored.id, stored_actor=stored.actor_id)
            if stored.id == event.id and stored.version == event.version and stored.actor_id == event.actor_id:
                return
        elif self._trace is not None:
            self._note("dup-check", actor=event.actor_id, version=event.version, id=event.id, seq=seq, stored_id=None)
        latest = await self._fetch_latest(event.actor_id, subject)
        if self._observer is not None:
            self._observer.on_conflict(self._ns_label)
        # the server de-duplicated the id: it is used by another event (another version or actor)
        raise DuplicateEventIdError(event.actor_id, event.version, latest.version, event.id,
                                    stored.actor_id if stored is not None else "",
                                    stored.version if stored is not None else 0)

    async def _already_stored(self, actor_id: str, subject: str, first: Event, last: Event,
                              expected_seq: int | None, latest: _Latest) -> bool:
        """Whether ``first..last`` were stored by an earlier attempt (same ids): a retry, not a conflict."""
        if latest.version < last.version:
            return False
        if latest.version == last.version:
            # the last id is unique to this call, and batches are atomic: it is ours
            return latest.event_id == last.id
        if expected_seq is None:
            return False
        stored = await self._event_after(actor_id, subject, expected_seq)
        return stored is not None and stored.version == first.version and stored.id == first.id

    def _check_size(self, actor_id: str, payload: bytes) -> None:
        if len(payload) > self._max_event_size:
            raise EventTooLargeError(actor_id, len(payload), self._max_event_size)

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str], what: str) -> PubAck:
        """Publish and return the ack, re-sending (same id: idempotent) when no ack arrives."""
        for _ in range(self.options.publish_retries):
            try:
                return await self._api.publish_acked(subject, payload, headers, what=what)
            except AetherTimeoutError:
                if self._trace is not None:
                    self._note("ack-timeout", subject=subject, id=headers.get("Nats-Msg-Id"))
                continue
        return await self._api.publish_acked(subject, payload, headers, what=what)

    # ---- EventStore -------------------------------------------------------------------
    @_tracing.traced_append
    async def save_event(self, event: Event) -> None:
        """Append one event with server-enforced optimistic concurrency.

        Raises:
            VersionConflictError: ``event.version`` is not the latest version + 1.
            DuplicateEventIdError: the event's id is already used by another stored event.
            InvalidInputError: not an Event; InvalidVersionError / InvalidNameError: bad version or actor id.
            EventTooLargeError: the encoded event exceeds the size limit.
            CorruptEventError: the actor's last stored message is not an Aether event.
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        check_event(event)
        if self._units:
            await self._unit(event.actor_id)._append(event)  # checked once, here
            return
        await self._append(event)

    async def _append(self, event: Event) -> None:
        """:meth:`save_event` on this (single-stream) store, ``event`` already checked."""
        started = time.perf_counter()
        payload = encode_within(event, self._max_event_size)  # bad input fails before any I/O
        actor_id = event.actor_id
        version = event.version
        entry = self._cache.get(actor_id)
        observer = self._observer
        if observer is not None:
            observer.on_cache(self._ns_label, entry is not None)
        latest: _Latest | None = None
        if entry is None:
            subject = self._event_prefix + encode_token(validate_actor_id(actor_id))
            if version == 1:
                expected_seq = 0
            else:
                latest = await self._fetch_latest(actor_id, subject)
                expected_seq = latest.seq
                if version != latest.version + 1:
                    await self._resolve_mismatch(event, event, subject, None, latest)
                    return
        else:
            subject = entry.subject
            expected_seq = entry.seq
            if version != entry.version + 1:
                latest = await self._fetch_latest(actor_id, subject)
                expected_seq = latest.seq
                if version != latest.version + 1:
                    await self._resolve_mismatch(event, event, subject, None, latest)
                    return
        if self._trace is not None:
            self._note("append", actor=actor_id, version=version, id=event.id, expected_seq=expected_seq,
                       cached=None if entry is None else [entry.version, entry.seq])
        headers = {"Nats-Msg-Id": event.id, "Nats-Expected-Last-Subject-Sequence": str(expected_seq)}
        if _tracing.TRACER is not None:
            _tracing.inject(headers)
        ack = await self._publish(subject, payload, headers, f"appending version {version} of {actor_id!r}")
        if self._trace is not None:
            self._note("ack", actor=actor_id, version=version, id=event.id, seq=ack.seq, duplicate=ack.duplicate,
                       err=None if ack.error is None else ack.error.err_code)
        if ack.error is not None:
            await self._handle_ack_error(ack, event, event, subject, expected_seq)
            return
        if ack.duplicate:
            await self._confirm_duplicate(event, subject, ack.seq)
        self._remember(actor_id, version, ack.seq, subject)
        if observer is not None:
            observer.on_append(self._ns_label, 1, time.perf_counter() - started)

    async def _resolve_mismatch(self, first: Event, last: Event, subject: str, expected_seq: int | None,
                                latest: _Latest) -> None:
        stored = await self._already_stored(first.actor_id, subject, first, last, expected_seq, latest)
        if self._trace is not None:
            self._note("mismatch", actor=first.actor_id, first=first.version, last=last.version, id=last.id,
                       expected_seq=expected_seq, latest_version=latest.version, latest_seq=latest.seq,
                       latest_id=latest.event_id, already_stored=stored)
        if stored:
            return
        if self._observer is not None:
            self._observer.on_conflict(self._ns_label)
        raise VersionConflictError(first.actor_id, first.version, latest.version)

    async def _handle_ack_error(self, ack: PubAck, first: Event, last: Event, subject: str,
                                expected_seq: int) -> None:
        assert ack.error is not None
        code = ack.error.err_code
        if code in _CONFLICT_CODES:
            # a stale version, or (cluster: de-duplication first) a retried batch already stored
            latest = await self._fetch_latest(first.actor_id, subject)
            if code != ERR_BATCH_DUPLICATE_MSG_ID or latest.version + 1 != first.version:
                await self._resolve_mismatch(first, last, subject, expected_seq, latest)
                return
            # the actor is where the batch expects it, yet an id was de-duplicated: a reused id
            if self._observer is not None:
                self._observer.on_conflict(self._ns_label)
            raise DuplicateEventIdError(first.actor_id, first.version, latest.version)
        if ack.error.err_code == ERR_MESSAGE_TOO_LARGE:
            raise EventTooLargeError(first.actor_id, -1, self._max_event_size)
        raise api_error(ack.error, f"appending to {first.actor_id!r}")

    @_tracing.traced_append
    async def save_events(self, events: Sequence[Event]) -> None:
        """Append consecutive events of one actor atomically (JetStream atomic batch).

        Raises:
            VersionConflictError: the first version is not latest + 1; nothing is stored.
            DuplicateEventIdError: an event id is already used by another stored event; nothing is stored.
            InvalidBatchError: not a sequence of Events, empty, mixed actors, an id twice, or more than
                1000 events.
            InvalidVersionError / InvalidNameError / EventTooLargeError: bad input; nothing is stored.
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        check_batch(events)
        if self._units:
            await self._unit(events[0].actor_id)._append_batch(events)  # checked once, here
            return
        await self._append_batch(events)

    async def _append_batch(self, events: Sequence[Event]) -> None:
        """:meth:`save_events` on this (single-stream) store, ``events`` already checked."""
        if len(events) == 1:
            await self.save_event(events[0])
            return
        limit = self._max_event_size
        payloads = [encode_within(e, limit) for e in events]  # bad input fails before any I/O
        started = time.perf_counter()
        first, last = events[0], events[-1]
        actor_id = first.actor_id
        entry = self._cache.get(actor_id)
        if entry is None:
            subject = self._event_prefix + encode_token(validate_actor_id(actor_id))
            known_version, expected_seq = (0, 0) if first.version == 1 else (-1, -1)
        else:
            subject = entry.subject
            known_version, expected_seq = entry.version, entry.seq
        if first.version != known_version + 1:
            latest = await self._fetch_latest(actor_id, subject)
            expected_seq = latest.seq
            if first.version != latest.version + 1:
                await self._resolve_mismatch(first, last, subject, None, latest)
                return
        what = f"appending versions {first.version}..{last.version} of {actor_id!r}"
        ack: PubAck | None = None
        for attempt in range(self.options.publish_retries + 1):
            batch_id = new_id()
            n = len(events)
            for i in range(n - 1):
                headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i + 1),
                           "Nats-Msg-Id": events[i].id}
                if i == 0:
                    headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_seq)
                _tracing.inject(headers)
                await self._api.publish_nowait(subject, payloads[i], headers, what)
            commit = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n), "Nats-Batch-Commit": "1",
                      "Nats-Msg-Id": last.id}
            _tracing.inject(commit)
            try:
                ack = await self._api.publish_acked(subject, payloads[-1], commit, what=what)
                break
            except AetherTimeoutError:
                if attempt == self.options.publish_retries:
                    raise
        assert ack is not None
        if self._trace is not None:
            self._note("batch-ack", actor=actor_id, first=first.version, last=last.version, id=last.id,
                       expected_seq=expected_seq, seq=ack.seq, duplicate=ack.duplicate,
                       err=None if ack.error is None else ack.error.err_code)
        if ack.error is not None:
            await self._handle_ack_error(ack, first, last, subject, expected_seq)
            return
        if ack.duplicate:
            await self._confirm_duplicate(last, subject, ack.seq)
        self._remember(actor_id, last.version, ack.seq, subject)
        if self._observer is not None:
            self._observer.on_append(self._ns_label, len(events), time.perf_counter() - started)

    def _start_seq(self, actor_id: str, from_version: int) -> int:
        entry = self._cache.get(actor_id)
        if entry is not None and from_version > entry.version:
            return entry.seq + 1
        anchor = self._anchors.get(actor_id)
        if anchor is not None and anchor[1] and from_version > anchor[0]:
            return anchor[1] + 1
        return 1

    async def iter_events(self, actor_id: str, from_version: int = 0) -> AsyncIterator[Event]:
        """Stream the actor's events with ``version >= from_version`` in pages.

        Only the actor's subject is read (batched direct get); nothing is left on the server. On a
        replicated stream the stream leader is asked for the actor's last sequence alongside the
        first page, and what a lagging replica's answer lacks is read from the leader: the events
        returned include every write acknowledged before the call (while the stream has no
        leader, the call waits up to the store's timeout, then raises).

        Raises:
            CorruptEventError: a message in the actor's history is not an Aether event.
            InvalidVersionError / InvalidNameError: bad arguments.
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        check_actor_id(actor_id)
        check_from_version(from_version)
        store = self._unit(actor_id) if self._units else self  # a partition store reads, unchecked
        async for page in store._pages(actor_id, from_version):
            for event in page:
                yield event

    async def _pages(self, actor_id: str, from_version: int) -> AsyncIterator[list[Event]]:
        subject = self._subject(actor_id)
        index_subject = self._index_prefix + subject[len(self._event_prefix):] if self._indexing else None
        what = f"reading the history of {actor_id!r}"
        position = ReadPosition()
        known = self._cache.get(actor_id)
        # Any replica may answer a direct get, and a follower can lag behind the leader (it applies a
        # write only once it learns the write committed): its answer is then a true but short prefix
        # of the history, missing writes already acknowledged. nats-server 2.12+ has no request
        # field to make a lagging replica defer (min_last_seq was removed before 2.12.0), so on a
        # replicated stream the leader is asked, at the same time as the first page, for the actor's
        # last version, and whatever the pages lack is read from the leader (docs/reliability.md).
        leader: asyncio.Task[int] | None = None
        if self._replicated:
            leader = asyncio.ensure_future(self._leader_last_version(actor_id, subject, what))
        leader_version = 0
        try:
            async for page in self._history.pages(self.stream, actor_id, subject, index_subject, from_version,
                                                  self._start_seq(actor_id, from_version), position,
                                                  known.version if known is not None else 0):
                yield page
            if leader is not None:
                leader_version, leader = await leader, None
                async for page in self._history.complete(self.stream, actor_id, subject, position, leader_version,
                                                         from_version, what):
                    yield page
        finally:
            await cancel_and_wait(leader)  # ours; a cancellation of the reader propagates
        if self._trace is not None:
            self._note("read", actor=actor_id, from_version=from_version, last_version=position.version,
                       last_seq=position.seq, leader_version=leader_version)
        if position.seq:
            self._remember(actor_id, position.version, position.seq, subject)

    async def _leader_last_version(self, actor_id: str, subject: str, what: str) -> int:
        """The actor's last version as the stream leader has it (0: no events), for replicated reads."""
        found = await self._msg_get({"last_by_subj": subject}, what)
        if found is None:
            return 0
        seq, data = found
        return self._decode(data, actor_id, seq).version

    @_tracing.traced_read
    async def get_events(self, actor_id: str, from_version: int = 0) -> list[Event]:
        """The actor's events with ``version >= from_version``, ascending.

        Raises:
            as :meth:`iter_events`.
        """
        check_actor_id(actor_id)
        check_from_version(from_version)
        store = self._unit(actor_id) if self._units else self  # a partition store reads, unchecked
        started = time.perf_counter()
        events: list[Event] = []
        async for page in store._pages(actor_id, from_version):
            events.extend(page)
        if self._observer is not None:
            self._observer.on_read(self._ns_label, len(events), time.perf_counter() - started)
        return events

    @_tracing.traced_read
    async def get_latest_version(self, actor_id: str) -> int:
        """The actor's latest version as stored on the server now (0 if none).

        Raises:
            CorruptEventError: the actor's last message is not an Aether event.
            InvalidNameError: bad actor id.
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        check_actor_id(actor_id)
        store = self._unit(actor_id) if self._units else self  # a partition store reads, unchecked
        latest = await store._fetch_latest(actor_id, store._subject(actor_id))
        return latest.version

    # ---- SnapshotStore ------------------------------------------------------------------
    async def save_snapshot(self, snapshot: ActorSnapshot) -> None:
        """Store a snapshot unless a newer one exists; older snapshots of the actor are purged.

        Raises:
            InvalidVersionError / InvalidNameError / EventTooLargeError: bad input.
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        check_snapshot(snapshot)
        if self._units:
            await self._unit(snapshot.actor_id).save_snapshot(snapshot)
            return
        actor_id = snapshot.actor_id
        subject = self._snapshot_prefix + encode_token(actor_id)  # checked above
        entry = self._cache.get(actor_id)
        seq = entry.seq if entry is not None and entry.version == snapshot.version else 0
        payload = encode_snapshot(snapshot, seq)
        self._check_size(actor_id, payload)
        for _ in range(10):
            found = await self._msg_get({"last_by_subj": subject}, f"reading the snapshot of {actor_id!r}")
            current_seq = 0
            if found is not None:
                current_seq = found[0]
                try:
                    current = decode_snapshot(found[1], stream=self.stream, sequence=current_seq,
                                              actor_id=actor_id)
                    if current.version > snapshot.version:
                        return
                except CorruptEventError:
                    pass  # a foreign message: replace it with a valid snapshot
            ack = await self._publish(subject, payload, {"Nats-Expected-Last-Subject-Sequence": str(current_seq)},
                                      f"saving the snapshot of {actor_id!r}")
            if ack.error is None:
                break
            if ack.error.err_code not in _CONFLICT_CODES:
                raise api_error(ack.error, f"saving the snapshot of {actor_id!r}")
        else:
            raise StoreError(f"saving the snapshot of {actor_id!r}: too much contention")
        if seq:
            self._anchors[actor_id] = (snapshot.version, seq)
        await self._api.api(f"STREAM.PURGE.{self.stream}", {"filter": subject, "keep": 1})

    async def get_latest_snapshot(self, actor_id: str) -> ActorSnapshot | None:
        """The actor's newest snapshot, or ``None``.

        Loading a snapshot lets a following ``get_events(actor_id, snapshot.version + 1)`` start
        reading right after the snapshot's last event.

        Raises:
            CorruptEventError: the stored snapshot cannot be decoded.
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        check_actor_id(actor_id)
        store = self._unit(actor_id) if self._units else self  # a partition store reads, unchecked
        return await store._latest_snapshot(actor_id)

    async def _latest_snapshot(self, actor_id: str) -> ActorSnapshot | None:
        """:meth:`get_latest_snapshot` on this (single-stream) store, ``actor_id`` already checked."""
        subject = self._snapshot_prefix + encode_token(actor_id)
        found = await self._api.direct_last(self._direct_get, subject, what=f"reading the snapshot of {actor_id!r}")
        if found is None:
            return None
        sequence, msg = found
        return self._snapshot_record(actor_id, sequence, msg.data)

    async def _head(self, actor_id: str) -> ActorHead:
        """One actor's head on this (single-stream) store, its version asked of the stream leader."""
        version, snapshot = await asyncio.gather(self.get_latest_version(actor_id), self._latest_snapshot(actor_id))
        return ActorHead(version, snapshot)

    async def get_heads(self, actor_ids: Sequence[str]) -> dict[str, ActorHead]:
        """Each actor's latest version and newest snapshot, read for many actors at once: what a
        burst of activations (a failover, a cold start) needs before it reads any event.

        On a single-replica stream one batched direct get (``multi_last``) answers 512 actors;
        on a replicated stream, where any replica may answer a direct get and a follower can lag,
        each actor is asked of the stream leader as :meth:`get_latest_version` does. Either way
        ``version`` is what the server held when asked (0: no events) and ``snapshot`` is what
        :meth:`get_latest_snapshot` returns. Every id is in the result.

        Raises:
            InvalidNameError: a bad actor id (before any I/O).
            CorruptEventError: an actor's last message or its snapshot is not Aether's.
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        ids = list(dict.fromkeys(actor_ids))
        for actor_id in ids:
            check_actor_id(actor_id)
        if not self._units:
            return await self._heads(ids)
        groups: dict[int, list[str]] = {}
        for actor_id in ids:
            groups.setdefault(partition_index(actor_id, self.partitions), []).append(actor_id)
        parts = await asyncio.gather(*(self._units[i]._heads(group) for i, group in groups.items()))
        return {actor_id: head for part in parts for actor_id, head in part.items()}

    async def _heads(self, ids: list[str]) -> dict[str, ActorHead]:
        """:meth:`get_heads` on this (single-stream) store, ``ids`` distinct and already checked."""
        if self._replicated:
            heads = await asyncio.gather(*(self._head(actor_id) for actor_id in ids))
            return dict(zip(ids, heads, strict=True))
        step = MULTI_LAST_MAX // 2
        parts = await asyncio.gather(*(self._heads_batch(ids[i:i + step]) for i in range(0, len(ids), step)))
        return {actor_id: head for part in parts for actor_id, head in part.items()}

    async def _heads_batch(self, ids: list[str]) -> dict[str, ActorHead]:
        """:meth:`get_heads` of at most 512 actors of this single-replica stream: one ``multi_last``."""
        wanted: dict[str, tuple[str, bool]] = {}  # subject -> (actor, is the snapshot subject)
        for actor_id in ids:
            wanted[self._subject(actor_id)] = (actor_id, False)
            wanted[self._snapshot_prefix + encode_token(actor_id)] = (actor_id, True)
        subjects = list(wanted)  # an actor's event subject at 2 * i, its snapshot subject at 2 * i + 1
        found, unsent = await self._api.direct_multi_last(self._direct_get, subjects,
                                                          what=f"reading the heads of {len(ids)} actors",
                                                          max_bytes=self.options.max_reply_bytes)
        versions: dict[str, tuple[int, int]] = {}
        snapshots: dict[str, ActorSnapshot] = {}
        for subject, seq, msg in found:
            actor_id, is_snapshot = wanted[subject]
            if is_snapshot:
                snapshots[actor_id] = self._snapshot_record(actor_id, seq, msg.data)
            else:
                versions[actor_id] = (self._decode(msg.data, actor_id, seq).version, seq)
        heads: dict[str, ActorHead] = {}
        unsure: list[str] = []
        for i, actor_id in enumerate(ids):
            if unsent and (actor_id not in versions or actor_id not in snapshots):
                unsure.append(actor_id)  # the server stopped at the byte limit before it, perhaps
                continue
            version, seq = versions.get(actor_id, (0, 0))
            if seq:
                self._remember(actor_id, version, seq, subjects[2 * i])
            heads[actor_id] = ActorHead(version, snapshots.get(actor_id))
        if unsure:
            for actor_id, head in zip(unsure, await asyncio.gather(*(self._head(a) for a in unsure)), strict=True):
                heads[actor_id] = head
        return heads

    def _snapshot_record(self, actor_id: str, sequence: int, data: bytes) -> ActorSnapshot:
        """Decode a stored snapshot and remember where its last event is (the read's start)."""
        record = decode_snapshot(data, stream=self.stream, sequence=sequence, actor_id=actor_id)
        if record.sequence:
            if len(self._anchors) >= self.options.cache_size:
                del self._anchors[next(iter(self._anchors))]
            self._anchors[actor_id] = (record.version, record.sequence)
        return record.to_snapshot()

    # ---- inspection -----------------------------------------------------------------------
    async def actor_ids(self) -> list[str]:
        """Every actor id with at least one event in this store's stream(s).

        Raises:
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        if self._units:
            parts = await asyncio.gather(*(unit.actor_ids() for unit in self._units))
            return [actor for part in parts for actor in part]
        prefix = self._event_prefix
        found: list[str] = []
        offset = 0
        while True:
            info = await self._api.api(f"STREAM.INFO.{self.stream}",
                                       {"subjects_filter": prefix + "*", "offset": offset})
            subjects = info.get("state", {}).get("subjects") or {}
            found.extend(decode_token(s[len(prefix):]) for s in subjects)
            total = int(info.get("total", 0))
            offset += len(subjects)
            if not subjects or offset >= total:
                break
        return found

    async def stream_info(self) -> dict[str, Any]:
        """The raw JetStream stream info (config and state) of this store's stream.

        With partitions: an aggregate ``{"stream", "partitions", "config", "state", "streams"}``
        where ``config`` is partition 0's, ``state`` sums ``messages``, ``bytes``,
        ``num_subjects`` and ``consumer_count`` over the partitions and ``streams`` holds the
        raw info of every partition (as :meth:`partition_info`).

        Raises:
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        if self._units:
            infos = await self.partition_info()
            state = {key: sum(int(info.get("state", {}).get(key, 0) or 0) for info in infos)
                     for key in ("messages", "bytes", "num_subjects", "consumer_count")}
            return {"stream": self.stream, "partitions": self.partitions, "config": infos[0].get("config", {}),
                    "state": state, "streams": infos}
        info: dict[str, Any] = await self._api.api(f"STREAM.INFO.{self.stream}")
        return info

    async def partition_info(self) -> list[dict[str, Any]]:
        """The raw JetStream stream info of every partition stream, partition 0 first.

        Raises:
            StoreUnavailableError / AetherTimeoutError / StoreError: server trouble.
        """
        if not self._units:
            return [await self.stream_info()]
        return list(await asyncio.gather(*(unit.stream_info() for unit in self._units)))

    async def aclose(self) -> None:
        """Release the store's reply subscriptions (the nats-py client stays open)."""
        for unit in self._units:
            await unit.aclose()
        await self._history.aclose()
        await self._api.aclose()

    async def __aenter__(self) -> JetStreamEventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
