"""The asynchronous core: one application's stream, read and written through :class:`JsApi`.

Layout (``<root>`` is ``aether-es.<stream>``):

* ``<root>.e.<encoded originator id>`` — the events of one originator, in ascending versions;
* ``<root>.t.<encoded application name>`` — the tracking records of one upstream application;
* ``<root>.n`` — a core NATS "new events" ping after each save (not stored).

**Uniqueness is enforced by the server.** The first message of each originator in a save carries
``Nats-Expected-Last-Subject-Sequence`` = the stream sequence of that originator's latest event
(0: none), and so does the tracking record for its upstream application. The whole save is one
JetStream atomic batch: the server checks every expectation against the stream as it was before
the batch, at commit, under the stream's lock, and stores all messages or none. A writer whose
knowledge is stale is refused (error 10071); it then asks the stream leader for the latest event
of each originator involved and decides: a version at or below the latest is an
:class:`JetStreamIntegrityError` (versions of an originator are stored in ascending order, so for
``eventsourcing`` aggregates, whose versions are consecutive, "at or below the latest" is exactly
"exists"); otherwise it retries with the fresh sequences. Nothing is ever written on the strength
of a read alone: the read only chooses the expectation that the server then checks.

**Notification ids are stream sequences.** A committed batch occupies consecutive sequences and
batches never interleave (the server applies each one whole, ADR-50), so the events of one save get
consecutive notification ids. In a process application's stream tracking records also take a
sequence each, so its notification ids increase with gaps where a tracking record sits.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import Notification, StoredEvent, Tracking

from aether._nats import ERR_MESSAGE_TOO_LARGE, WRONG_LAST_SEQUENCE_CODES, JetStreamApiError, JsApi, PubAck, api_error
from aether._nats.leader import LeaderMessage, leader_get, leader_next, leader_request
from aether._nats.streams import create_or_adopt
from aether.errors import (
    AetherError,
    AetherTimeoutError,
    InvalidNameError,
    NatsConnectionError,
    PermissionDeniedError,
    StoreError,
)
from aether.integrations.eventsourcing._records import (
    EventRecord,
    TrackingRecord,
    decode_record,
    encode_event,
    encode_tracking,
    originator_of,
    to_notification,
    to_stored_event,
)
from aether.integrations.eventsourcing._settings import SUBJECT_ROOT
from aether.integrations.eventsourcing.errors import (
    JetStreamDataError,
    JetStreamIntegrityError,
    JetStreamOperationalError,
    JetStreamProgrammingError,
)
from aether.names import encode_token

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["MAX_BATCH", "StreamStore"]

MAX_BATCH = 1000
"""Messages in one JetStream atomic batch (the server's default limit): the events of one save
plus its tracking record."""

ERR_BATCH_INCOMPLETE = 10176  # e.g. the stream already had 50 batches in flight: nothing stored
ERR_BATCH_TOO_LARGE = 10199
_EXPECTED = "Nats-Expected-Last-Subject-Sequence"
_INSERT_ID = "Aether-Insert-Id"
_MAX_INFLIGHT = 32  # atomic batches this process keeps in flight per stream (the server allows 50)
_MAX_ATTEMPTS = 10
_MAX_ORIGINATOR_LENGTH = 1024
_PAGE = 1000
_PAGE_BYTES = 8 * 1024 * 1024
_CACHE_SIZE = 10_000
_HEADER_ALLOWANCE = 512  # room kept below max_payload for the headers a message carries
_encode_json = msgspec.json.encode


class _Known:
    """The latest message of a subject as last seen: its version (or tracking id) and sequence."""

    __slots__ = ("seq", "value")

    def __init__(self, value: int | None, seq: int) -> None:
        self.value = value
        self.seq = seq


class _Plan:
    """One save, validated and encoded: the batch's messages and what each first message checks."""

    __slots__ = ("firsts", "lasts", "n_events", "payloads", "subjects", "tracking", "tracking_subject")

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.payloads: list[bytes] = []
        self.firsts: dict[str, tuple[int, int]] = {}  # originator key -> (message index, version)
        self.lasts: dict[str, tuple[int, int]] = {}
        self.n_events = 0
        self.tracking: Tracking | None = None
        self.tracking_subject = ""


class StreamStore:
    """The reads and writes of one stream. Create and use it on one event loop only.

    Args:
        nc: the connected client (not owned).
        api: a :class:`JsApi` on ``nc`` (not owned).
        stream: the stream name.
    """

    def __init__(self, nc: Client, api: JsApi, stream: str) -> None:
        self.nc = nc
        self.api = api
        self.stream = stream
        root = f"{SUBJECT_ROOT}.{stream}"
        self.subjects = [f"{root}.e.*", f"{root}.t.*"]
        self.notify_subject = f"{root}.n"
        self._events_prefix = f"{root}.e."
        self._tracking_prefix = f"{root}.t."
        self._all_subjects = f"{root}.>"
        self._direct = f"$JS.API.DIRECT.GET.{stream}"
        self._known: dict[str, _Known] = {}
        self._known_tracking: dict[str, _Known] = {}
        self._slots = asyncio.Semaphore(_MAX_INFLIGHT)
        # a replicated stream's reads are completed from its leader (see select_events); set by ensure()
        self.replicated = False
        self._progress = 0.0  # time.monotonic() of the latest page read (see last_progress)

    # ---- the stream ------------------------------------------------------------------------------
    async def ensure(self, *, create: bool, replicas: int, storage: str) -> None:
        """Check the stream, creating it when missing and ``create`` is true.

        Raises:
            JetStreamProgrammingError: missing and ``create`` is false; or it holds other subjects.
        """
        config: dict[str, Any] = {
            "name": self.stream, "subjects": self.subjects, "retention": "limits", "storage": storage,
            "num_replicas": replicas, "discard": "old", "allow_direct": True, "allow_atomic": True,
        }
        try:
            info = await create_or_adopt(self.api, config, create=create)
        except StoreError as exc:
            if create or isinstance(exc, JetStreamApiError | NatsConnectionError):
                raise
            raise JetStreamProgrammingError(
                f"stream {self.stream!r} does not exist and CREATE_TABLE is false: create it (run once with "
                "CREATE_TABLE=true, or with the nats CLI) or point AETHER_ES_STREAM at an existing one") from None
        if info is None:  # created here
            self.replicated = replicas > 1
            return
        existing = info["config"]
        if not set(self.subjects) <= set(existing.get("subjects") or ()):
            raise JetStreamProgrammingError(
                f"stream {self.stream!r} exists but does not hold the subjects {self.subjects}: it is not an "
                "eventsourcing stream of this module (choose another name with AETHER_ES_STREAM)")
        self.replicated = int(existing.get("num_replicas") or 1) > 1
        if not existing.get("allow_direct") or not existing.get("allow_atomic"):
            if not create:
                raise JetStreamProgrammingError(
                    f"stream {self.stream!r} lacks allow_direct/allow_atomic and CREATE_TABLE is false")
            existing.update(allow_direct=True, allow_atomic=True)
            await self.api.api(f"STREAM.UPDATE.{self.stream}", existing)

    # ---- writing ---------------------------------------------------------------------------------
    def _event_subject(self, key: str) -> str:
        if not key:
            raise JetStreamDataError("an originator id must not be empty")
        if len(key) > _MAX_ORIGINATOR_LENGTH:
            raise JetStreamDataError(f"originator id is {len(key)} characters long; at most "
                                     f"{_MAX_ORIGINATOR_LENGTH} fit in a subject")
        try:
            return self._events_prefix + encode_token(key)
        except InvalidNameError as exc:
            raise JetStreamDataError(str(exc)) from None

    def _tracking_subject(self, application_name: str) -> str:
        if not isinstance(application_name, str) or not application_name:
            raise JetStreamDataError("a tracking record needs a non-empty application name")
        try:
            return self._tracking_prefix + encode_token(application_name)
        except InvalidNameError as exc:
            raise JetStreamDataError(str(exc)) from None

    def _plan(self, events: Sequence[StoredEvent], tracking: Tracking | None) -> _Plan:
        plan = _Plan()
        seen: set[tuple[str, int]] = set()
        subjects: dict[str, str] = {}
        for index, event in enumerate(events):
            key = str(event.originator_id)
            version = event.originator_version
            if not isinstance(version, int) or isinstance(version, bool):
                raise JetStreamDataError(f"originator_version must be an int, got {type(version).__name__}")
            if (key, version) in seen:
                raise JetStreamIntegrityError(f"stored event ({key}, {version}) appears twice in one save")
            seen.add((key, version))
            last = plan.lasts.get(key)
            if last is not None and version < last[1]:
                raise JetStreamDataError(f"the versions of originator {key} must ascend within one save "
                                         f"({version} follows {last[1]})")
            subject = subjects.get(key)
            if subject is None:
                subject = subjects[key] = self._event_subject(key)
                plan.firsts[key] = (index, version)
            plan.lasts[key] = (index, version)
            plan.subjects.append(subject)
            plan.payloads.append(encode_event(event))
        plan.n_events = len(events)
        if tracking is not None:
            notification_id = tracking.notification_id
            if not isinstance(notification_id, int) or isinstance(notification_id, bool):
                raise JetStreamDataError(f"notification_id must be an int, got {type(notification_id).__name__}")
            plan.tracking = tracking
            plan.tracking_subject = self._tracking_subject(tracking.application_name)
            plan.subjects.append(plan.tracking_subject)
            plan.payloads.append(encode_tracking(tracking.application_name, notification_id))
        limit = (self.nc.max_payload or 1024 * 1024) - _HEADER_ALLOWANCE
        for subject, payload in zip(plan.subjects, plan.payloads, strict=True):
            if len(payload) > limit:
                raise JetStreamDataError(f"a message for {subject} would be {len(payload)} bytes; the server "
                                         f"takes at most {limit} (its max_payload, less room for headers)")
        if len(plan.payloads) > MAX_BATCH:
            raise JetStreamDataError(
                f"one save of {plan.n_events} events{' and a tracking record' if tracking else ''} needs "
                f"{len(plan.payloads)} messages; a JetStream atomic batch holds at most {MAX_BATCH}")
        return plan

    def _conflict(self, plan: _Plan) -> str | None:
        """What the latest known state already refuses (it only ever grows), or None."""
        for key, (_, version) in plan.firsts.items():
            known = self._known.get(key)
            if known is not None and known.value is not None and version <= known.value:
                return (f"stored event ({key}, {version}) conflicts: originator {key} is at version {known.value} "
                        f"(stream {self.stream!r})")
        tracking = plan.tracking
        if tracking is not None:
            known = self._known_tracking.get(tracking.application_name)
            if known is not None and known.value is not None and tracking.notification_id <= known.value:
                return (f"tracking notification id {tracking.notification_id} of {tracking.application_name!r} is "
                        f"not greater than the recorded {known.value} (stream {self.stream!r})")
        return None

    def _checks(self, plan: _Plan) -> dict[int, int]:
        """Message index -> expected last sequence of its subject (0 when nothing is known)."""
        checks: dict[int, int] = {}
        for key, (index, _) in plan.firsts.items():
            known = self._known.get(key)
            checks[index] = known.seq if known is not None else 0
        if plan.tracking is not None:
            known = self._known_tracking.get(plan.tracking.application_name)
            checks[len(plan.payloads) - 1] = known.seq if known is not None else 0
        return checks

    async def insert(self, events: Sequence[StoredEvent], tracking: Tracking | None = None) -> list[int]:
        """Store ``events`` (and ``tracking``) atomically; return the events' notification ids.

        Raises:
            JetStreamIntegrityError: an (originator_id, originator_version) exists (or is at or below
                the originator's latest version), or the tracking id is not above the recorded one.
            JetStreamDataError: more than :data:`MAX_BATCH` messages, a message too large, bad values.
            JetStreamOperationalError: the server failed, or did not acknowledge twice (the message
                says the outcome is unknown).
            StoreUnavailableError / AetherTimeoutError: connection trouble (translated by the caller).
        """
        if not events and tracking is None:
            return []
        plan = self._plan(events, tracking)
        insert_id = secrets.token_hex(12)
        probes: list[tuple[str, int]] = []  # (first subject, its expectation) of unacknowledged attempts
        for attempt in range(_MAX_ATTEMPTS):
            conflict = self._conflict(plan)
            if conflict is not None:
                first_seq = await self._landed(probes, insert_id)
                if first_seq is not None:
                    return await self._stored(plan, first_seq)
                raise JetStreamIntegrityError(conflict)
            checks = self._checks(plan)
            try:
                ack = await self._publish(plan, checks, insert_id)
            except AetherTimeoutError:
                probes.append((plan.subjects[0], checks[0]))
                if len(probes) < 2:
                    continue  # once more: the same expectations, so at most one attempt can be stored
                try:
                    first_seq = await self._landed(probes, insert_id)
                except AetherTimeoutError:
                    first_seq = None
                if first_seq is not None:
                    return await self._stored(plan, first_seq)
                # a commit still queued on the server may yet be applied: say so, never "not stored"
                raise JetStreamOperationalError(
                    f"saving to stream {self.stream!r}: no acknowledgement from NATS in time, twice; the events "
                    "may or may not have been stored") from None
            except AetherError as exc:
                if not probes:
                    raise
                raise JetStreamOperationalError(
                    f"saving to stream {self.stream!r}: {exc} after an unacknowledged attempt; the events may or "
                    "may not have been stored") from exc
            if ack.error is None:
                return await self._stored(plan, ack.seq - len(plan.payloads) + 1)
            code = ack.error.err_code
            if code in WRONG_LAST_SEQUENCE_CODES:
                await self._refresh(plan)
                continue
            if code == ERR_BATCH_INCOMPLETE:
                await asyncio.sleep(min(0.01 * 2**attempt, 0.5))  # other writers filled the in-flight slots
                continue
            if code == ERR_BATCH_TOO_LARGE:
                raise JetStreamDataError(f"saving to stream {self.stream!r}: the server refused a batch of "
                                         f"{len(plan.payloads)} messages: {ack.error.description}")
            if code == ERR_MESSAGE_TOO_LARGE:
                raise JetStreamDataError(f"saving to stream {self.stream!r}: a stored event exceeds the server's "
                                         f"maximum message size: {ack.error.description}")
            error = api_error(ack.error, f"saving to stream {self.stream!r}")
            if isinstance(error, PermissionDeniedError):
                raise JetStreamProgrammingError(str(error)) from error
            raise JetStreamOperationalError(str(error)) from error
        raise JetStreamOperationalError(f"saving to stream {self.stream!r}: gave up after {_MAX_ATTEMPTS} attempts "
                                        "(the originators kept changing under this save)")

    async def _publish(self, plan: _Plan, checks: dict[int, int], insert_id: str) -> PubAck:
        subjects, payloads = plan.subjects, plan.payloads
        what = f"saving to stream {self.stream!r}"
        count = len(payloads)
        if count == 1:
            return await self.api.publish_acked(subjects[0], payloads[0],
                                                {_EXPECTED: str(checks[0]), _INSERT_ID: insert_id}, what=what)
        async with self._slots:
            batch_id = secrets.token_hex(12)
            for index in range(count - 1):
                headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(index + 1)}
                expected = checks.get(index)
                if expected is not None:
                    headers[_EXPECTED] = str(expected)
                if index == 0:
                    headers[_INSERT_ID] = insert_id
                await self.api.publish_nowait(subjects[index], payloads[index], headers, what)
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(count), "Nats-Batch-Commit": "1"}
            expected = checks.get(count - 1)
            if expected is not None:
                headers[_EXPECTED] = str(expected)
            return await self.api.publish_acked(subjects[-1], payloads[-1], headers, what=what)

    async def _stored(self, plan: _Plan, first_seq: int) -> list[int]:
        """Remember what the stored batch (first message at ``first_seq``) made latest; ping subscribers."""
        for key, (index, version) in plan.lasts.items():
            self._remember(self._known, key, version, first_seq + index)
        if plan.tracking is not None:
            self._remember(self._known_tracking, plan.tracking.application_name, plan.tracking.notification_id,
                           first_seq + len(plan.payloads) - 1)
        with contextlib.suppress(Exception):  # a lost ping is covered by the subscribers' polling
            await self.nc.publish(self.notify_subject, b"")
        return [first_seq + i for i in range(plan.n_events)]

    @staticmethod
    def _remember(cache: dict[str, _Known], key: str, value: int | None, seq: int) -> None:
        known = cache.get(key)
        if known is not None:
            if seq >= known.seq:
                known.value, known.seq = value, seq
            return
        if len(cache) >= _CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[key] = _Known(value, seq)

    async def _refresh(self, plan: _Plan) -> None:
        """Ask the stream leader for the latest message of every subject the save checks."""
        lookups = [self._latest(key, self._event_subject(key), tracking=False) for key in plan.firsts]
        if plan.tracking is not None:
            lookups.append(self._latest(plan.tracking.application_name, plan.tracking_subject, tracking=True))
        await asyncio.gather(*lookups)

    async def _landed(self, probes: list[tuple[str, int]], insert_id: str) -> int | None:
        """The first sequence of an unacknowledged attempt of this save that was stored after all."""
        for subject, expected in probes:
            message = await leader_next(self.api, self.stream, subject, expected, what="checking a save")
            if message is not None and f"{_INSERT_ID}: {insert_id}".encode() in message.headers:
                return message.seq
        return None

    # ---- reading ---------------------------------------------------------------------------------
    # Any replica may answer a direct get, and a follower applies a write only once it hears that it
    # committed: right after a save its answer can lack the save, and nats-server 2.12+ has no request
    # field that makes it defer (docs/reliability.md, finding 2). On a replicated stream every read
    # therefore asks the stream leader, alongside its first page, where the subject (or the stream)
    # ends, and reads whatever the pages lack from the leader (aether._nats.leader), as the event store
    # does: a read never returns less than what was acknowledged before it began.
    def _decode(self, data: bytes, where: str) -> EventRecord | TrackingRecord:
        try:
            return decode_record(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise JetStreamOperationalError(f"stream {self.stream!r} holds a message that is not an eventsourcing "
                                            f"record ({where}): {exc}") from None

    def _event_record(self, data: bytes, subject: str) -> EventRecord:
        record = self._decode(data, subject)
        if not isinstance(record, EventRecord):
            raise JetStreamOperationalError(f"stream {self.stream!r}: {subject} holds a tracking record")
        return record

    async def _latest(self, key: str, subject: str, *, tracking: bool) -> _Known:
        """The subject's latest event (or tracking record), asked of the stream leader; cached."""
        what = f"reading the tracking of {key!r}" if tracking else f"reading the latest event of {key}"
        message = await leader_get(self.api, self.stream, {"last_by_subj": subject}, what=what)
        known = _Known(None, 0)
        if message is not None:
            record = self._decode(message.data, subject)
            if isinstance(record, TrackingRecord) != tracking:
                raise JetStreamOperationalError(
                    f"stream {self.stream!r}: {subject} holds {'an event' if tracking else 'a tracking record'}")
            known = _Known(record.notification_id if isinstance(record, TrackingRecord) else record.version,
                           message.seq)
        cache = self._known_tracking if tracking else self._known
        cache.pop(key, None)
        self._remember(cache, key, known.value, known.seq)
        return known

    async def _leader_after(self, subject: str, after: int, top: int, what: str) -> AsyncIterator[LeaderMessage]:
        """The messages on ``subject`` after sequence ``after`` up to ``top``, one by one from the stream
        leader: what a lagging replica that answered a read had not applied yet."""
        while after < top:
            message = await leader_next(self.api, self.stream, subject, after, what=what)
            if message is None or message.seq > top:
                return
            self._progress = time.monotonic()
            yield message
            after = message.seq

    async def _leader_last_seq(self, subject: str, what: str) -> int:
        """The sequence of the subject's last message on the stream leader (0: none)."""
        message = await leader_get(self.api, self.stream, {"last_by_subj": subject}, what=what)
        return 0 if message is None else message.seq

    async def _stream_state(self, what: str) -> dict[str, Any]:
        """The stream's state (``STREAM.INFO`` is answered by the leader: constant time)."""
        info = await leader_request(self.api, f"STREAM.INFO.{self.stream}", what=what)
        state: dict[str, Any] = info.get("state") or {}
        return state

    async def _stream_last_seq(self, what: str) -> int:
        return int((await self._stream_state(what)).get("last_seq") or 0)

    def last_progress(self) -> float:
        """When the latest page of a read arrived (``time.monotonic()``; read from another thread)."""
        return self._progress

    async def _batch(self, body: dict[str, Any], what: str) -> tuple[list[Msg], int, int]:
        """One batched direct get: ``(messages, last sequence, pending)``; no messages at the end."""
        msgs = await self.api.request_many(self._direct, _encode_json(body), what=what)
        self._progress = time.monotonic()
        status = msgs.pop().headers or {} if msgs else {}
        code = status.get("Status")
        if code == "404" or (code == "204" and not msgs):
            return [], 0, 0
        if code != "204":
            raise JetStreamOperationalError(f"{what}: direct get failed: {code} {status.get('Description', '')}")
        return msgs, int(status.get("Nats-Last-Sequence", "0")), int(status.get("Nats-Num-Pending", "0"))

    async def _last_event(self, subject: str, what: str) -> tuple[int, EventRecord] | None:
        """The subject's last event and its sequence: from the leader on a replicated stream."""
        if self.replicated:
            message = await leader_get(self.api, self.stream, {"last_by_subj": subject}, what=what)
            return None if message is None else (message.seq, self._event_record(message.data, subject))
        last = await self.api.direct_last(self._direct, subject, what=what)  # StoreError: translated by the loop
        return None if last is None else (last[0], self._event_record(last[1].data, subject))

    async def select_events(self, originator_id: UUID | str, *, gt: int | None, lte: int | None, desc: bool,
                            limit: int | None) -> list[StoredEvent]:
        """The originator's stored events with ``gt < version <= lte``, ascending (or descending), at most
        ``limit``. Only the originator's subject is read (on a replicated stream, completed from the leader)."""
        key = str(originator_id)
        if not key or (limit is not None and limit <= 0):
            return []
        subject = self._event_subject(key)
        what = f"reading the events of {key}"
        if desc and limit == 1 and lte is None:  # the latest one (e.g. the last snapshot)
            last = await self._last_event(subject, what)
            if last is None:
                return []
            seq, record = last
            self._remember(self._known, key, record.version, seq)
            if gt is not None and record.version <= gt:
                return []
            return [to_stored_event(record, self._same_originator(originator_id, record))]
        known = self._known.get(key)
        start = 1
        if gt is not None and known is not None and known.value is not None and gt >= known.value:
            start = known.seq + 1  # versions ascend along the subject: nothing above gt lies before
        selection = _Selection(gt, lte, None if desc else limit)
        leader = asyncio.ensure_future(self._leader_last_seq(subject, what)) if self.replicated else None
        try:
            last_seq = await self._scan_subject(subject, start, selection, what)
            if leader is not None and not selection.full:
                top, leader = await leader, None
                async for message in self._leader_after(subject, last_seq, top, what):
                    if not selection.add(self._event_record(message.data, subject)):
                        break
                    last_seq = message.seq
        finally:
            await _cancel(leader)
        if not selection.full and selection.last_version is not None:
            self._remember(self._known, key, selection.last_version, last_seq)
        records = selection.records
        if desc:
            records.reverse()
            if limit is not None:
                records = records[:limit]
        if not records:
            return []
        originator = self._same_originator(originator_id, records[0])
        return [to_stored_event(record, originator) for record in records]

    async def _scan_subject(self, subject: str, start: int, selection: _Selection, what: str) -> int:
        """Batched direct gets of the subject from ``start`` into ``selection``; the sequence of the
        last message read (``start - 1``: none)."""
        request: dict[str, Any] = {"seq": start, "next_by_subj": subject, "batch": _PAGE, "max_bytes": _PAGE_BYTES,
                                   "no_hdr": True}
        last_seq = start - 1
        while True:
            msgs, page_last, pending = await self._batch(request, what)
            if not msgs:
                return last_seq
            last_seq = page_last
            for msg in msgs:
                if not selection.add(self._event_record(msg.data, subject)):
                    return last_seq
            if len(msgs) < _PAGE and pending <= len(msgs):
                return last_seq
            request["seq"] = page_last + 1

    @staticmethod
    def _same_originator(given: UUID | str, record: EventRecord) -> UUID | str:
        """The caller's id object when it is what the record holds (parsed once, not per event)."""
        if record.is_uuid == isinstance(given, UUID) and str(given) == record.originator:
            return given
        return originator_of(record)

    async def select_notifications(self, start: int | None, limit: int, stop: int | None,
                                   topics: Sequence[str], inclusive_of_start: bool) -> list[Notification]:
        """The events with ``start <= id`` (``start < id`` unless inclusive) and ``id <= stop``, in stream
        order, whose topic is in ``topics`` (any when empty), at most ``limit`` (on a replicated stream,
        completed from the leader)."""
        if start is None:
            start, inclusive_of_start = 1, True
        seq = max(start if inclusive_of_start else start + 1, 1)
        wanted = set(topics)
        found: list[Notification] = []
        originators: dict[str, UUID | str] = {}  # one parse per originator per call
        what = f"reading the notifications of stream {self.stream!r}"

        def take(data: bytes, number: int) -> bool:
            """Keep the message at ``number`` if it is a wanted event; False once ``limit`` are kept."""
            record = self._decode(data, f"sequence {number}")
            if isinstance(record, EventRecord) and (not wanted or record.topic in wanted):
                originator = originators.get(record.originator)
                if originator is None or record.is_uuid != isinstance(originator, UUID):
                    originator = originators[record.originator] = originator_of(record)
                found.append(to_notification(record, number, originator))
            return len(found) < limit

        leader = asyncio.ensure_future(self._stream_last_seq(what)) if self.replicated else None
        try:
            seq = await self._scan_stream(seq, stop, take, lambda: _PAGE if wanted else min(limit - len(found), _PAGE),
                                          what)
            if leader is not None and len(found) < limit:
                top, leader = await leader, None
                async for message in self._leader_after(self._all_subjects, seq - 1,
                                                        top if stop is None else min(top, stop), what):
                    if not take(message.data, message.seq):
                        break
        finally:
            await _cancel(leader)
        return found

    async def _scan_stream(self, seq: int, stop: int | None, take: Callable[[bytes, int], bool],
                           batch_size: Callable[[], int], what: str) -> int:
        """Batched direct gets of the stream from ``seq`` (up to ``stop``), each message handed to
        ``take`` until it returns False; the next sequence to read."""
        while stop is None or seq <= stop:
            batch = batch_size()
            if stop is not None:
                batch = min(batch, stop - seq + 1)
            request: dict[str, Any] = {"seq": seq, "batch": batch, "max_bytes": _PAGE_BYTES, "no_hdr": True}
            msgs, last_seq, pending = await self._batch(request, what)
            if not msgs:
                return seq
            sequences: Sequence[int]
            if last_seq - len(msgs) + 1 == seq:
                sequences = range(seq, last_seq + 1)  # no hole: the i-th message is at seq + i
            else:  # deleted messages in the range: ask again with headers for each one's sequence
                del request["no_hdr"]
                msgs, last_seq, pending = await self._batch(request, what)
                sequences = [int((m.headers or {}).get("Nats-Sequence", "0")) for m in msgs]
            for msg, number in zip(msgs, sequences, strict=True):
                if stop is not None and number > stop:
                    return number
                if not take(msg.data, number):
                    return number + 1
            seq = last_seq + 1
            if len(msgs) < batch and pending <= len(msgs):
                return seq
        return seq

    async def max_notification_id(self) -> int | None:
        """The sequence of the stream's last event (tracking records aside), or None.

        The stream's last sequence comes from the leader (``STREAM.INFO``, constant time); the
        last event is then looked for in growing windows before it (a process application's stream
        may end with tracking records). A wildcard last-by-subject lookup would answer directly but
        costs time in proportion to the number of aggregates (60 ms at 100,000 on a test VM).
        """
        what = f"reading the last notification of stream {self.stream!r}"
        state = await self._stream_state(what)
        last = int(state.get("last_seq") or 0)
        first = max(int(state.get("first_seq") or 1), 1)
        if not int(state.get("messages") or 0):
            return None
        high, window, scanned = last, 16, 0
        while high >= first:
            low = max(first, high - window + 1)
            found = await self._last_event_between(low, high, what)
            if found is not None:
                return found
            scanned += high - low + 1
            if scanned >= 10_000:  # a very long run of tracking records: ask by subject after all
                return await self._leader_last_seq(self._events_prefix + "*", what) or None
            high, window = low - 1, min(window * 4, _PAGE)
        return None

    async def _last_event_between(self, low: int, high: int, what: str) -> int | None:
        found: int | None = None

        def take(data: bytes, number: int) -> bool:
            nonlocal found
            if isinstance(self._decode(data, f"sequence {number}"), EventRecord):
                found = number
            return True

        seq = await self._scan_stream(low, high, take, lambda: high - low + 1, what)
        if self.replicated:  # a lagging replica may have answered: the rest of the window from the leader
            async for message in self._leader_after(self._all_subjects, seq - 1, high, what):
                take(message.data, message.seq)
        return found

    async def max_tracking_id(self, application_name: str) -> int | None:
        """The highest notification id recorded for ``application_name``, or None."""
        known = await self._latest(application_name, self._tracking_subject(application_name), tracking=True)
        return known.value


class _Selection:
    """The events a ``select_events`` call keeps, in stream order (``full``: no more are wanted)."""

    __slots__ = ("full", "gt", "last_version", "limit", "lte", "records")

    def __init__(self, gt: int | None, lte: int | None, limit: int | None) -> None:
        self.gt, self.lte, self.limit = gt, lte, limit
        self.records: list[EventRecord] = []
        self.full = False
        self.last_version: int | None = None

    def add(self, record: EventRecord) -> bool:
        """Keep ``record`` if it is wanted; False once nothing further is."""
        self.last_version = record.version
        if self.gt is not None and record.version <= self.gt:
            return True
        if self.lte is not None and record.version > self.lte:
            self.full = True
            return False
        self.records.append(record)
        if self.limit is not None and len(self.records) >= self.limit:
            self.full = True
            return False
        return True


async def _cancel(task: asyncio.Future[Any] | None) -> None:
    """Cancel a leader lookup the read no longer needs and reap it (its error, if any, is moot: the
    read failed or did not need it); a cancellation of the caller still propagates."""
    if task is not None:
        if not task.done():
            task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()
