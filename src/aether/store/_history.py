"""Reading one actor's history at a cost that follows the actor's events, not the stream's size.

Two ways to read an actor's events from its stream:

* **subject scan** — batched direct gets with ``next_by_subj`` (the way Aether always read).
  Cheap when the actor is dense in the stream, but the server scans every message between
  the actor's messages inside each block, and a cold read loads every block in between.
* **reads by sequence** — when the stream sequences of the events are known from the actor's
  sequence index (:mod:`aether.store._seqindex`), pipelined single direct gets by sequence
  (``no_hdr``): O(1) each on the server, and only the blocks holding the events are loaded.

:class:`HistoryReader` chooses per read, verifies everything read through the index against
the stream, falls back to the scan on any doubt, and keeps the index up to date from what it
reads (off the append path). Functions are parameterised by the stream and subjects so that a
namespace spread over several streams reads each actor from its own.

Why a history read through the index is complete (never short): every event read by sequence
must decode as an event of this actor with exactly the next version; the window must close on
the actor's last message (its sequence and version, asked of the server at the start of the
read) or continue with a subject scan from the last event read by sequence; and the number of
messages on the actor's subject must equal its last version (no message of the subject that
the index does not list). Anything else — a missing message, another actor's event, a stale,
foreign or malformed index — makes the read continue by subject scan from the last event it
has verified.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from aether._nats import JetStreamApiError, JsApi
from aether._nats.leader import leader_next
from aether._tasks import cancel_and_wait
from aether.codec import decode_event
from aether.errors import AetherError, CorruptEventError, PermissionDeniedError, StoreError
from aether.event import Event
from aether.store._seqindex import SeqIndex, decode_index, encode_index

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["DENSE_SPACING", "HistoryReader", "HistoryStats", "ReadPosition", "decode_actor_event", "sequence_at"]

# bytes per scan page: with the next page prefetched, at most ~2 pages are on their way to the
# client, far below the server's per-client max_pending (64 MiB)
PAGE_BYTES = 8 * 1024 * 1024
# an actor whose events are at most this many stream messages apart on average is read by
# subject scan (few requests, little to skip); sparser ones by sequence
DENSE_SPACING = 16
# the index is (re)written when a read had to learn at least this many sequences by scanning ...
INDEX_MIN_NEW = 2
# ... or this many by walking back the predecessor chain, which it does for at most CHAIN_MAX events
INDEX_REWRITE_TAIL = 4
CHAIN_MAX = 16
# an actor without a usable index and with at most this many events to read is read along its
# predecessor chain when it is sparse (one round trip per event, but no scan of the stream)
CHAIN_FIRST_READ = 32
# windows of at least this many events read from version 1 are proven complete by the subject's
# message count instead of each event's predecessor header
COUNT_MIN_WINDOW = 64
_DENSE_MEMORY = 10_000  # dense actors remembered per store
_CHUNK = 1000  # events verified and handed out per page when reading by sequence
_encode_json = msgspec.json.encode


def _predecessor(seq: int, headers: dict[str, str]) -> int:
    """The sequence of the subject's message before the one at ``seq``, as the server enforced it at
    append time (``Nats-Expected-Last-Subject-Sequence``); a message without the header (inside an
    atomic batch) follows its predecessor directly."""
    expected = headers.get("Nats-Expected-Last-Subject-Sequence")
    return int(expected) if expected is not None and expected.isdigit() else seq - 1


def decode_actor_event(data: bytes, actor_id: str, stream: str, seq: int | None) -> Event:
    """The event in ``data``, which must belong to ``actor_id``.

    Raises:
        CorruptEventError: not an Aether event, or another actor's.
    """
    event = decode_event(data, stream=stream, sequence=seq, actor_id=actor_id)
    if event.actor_id != actor_id:
        raise CorruptEventError(f"message belongs to actor {event.actor_id!r}", actor_id=actor_id,
                                stream=stream, sequence=seq)
    return event


def _dense(seqs: list[int]) -> bool:
    """Whether events at ``seqs`` are close enough in the stream to read them by subject scan."""
    return len(seqs) > 1 and (seqs[-1] - seqs[0]) / (len(seqs) - 1) <= DENSE_SPACING


@dataclass(frozen=True, slots=True)
class HistoryStats:
    """What a store's history reads did so far (inspection, tests, benchmarks).

    Attributes:
        scans: subject scans (a whole history, or the part after the index).
        index_writes: sequence-index messages stored.
        index_failures: index writes the server refused or did not acknowledge.
        events_by_sequence: events read by sequence through an index.
        chain_walks: reads that found their newest events along the predecessor chain.
    """

    scans: int = 0
    index_writes: int = 0
    index_failures: int = 0
    events_by_sequence: int = 0
    chain_walks: int = 0

    def __add__(self, other: HistoryStats) -> HistoryStats:
        return HistoryStats(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


class _Facts:
    """What a read learns first: the actor's last message, its index, its message count, and the
    fetch of the index's first sequences already under way."""

    __slots__ = ("chained", "count", "index", "index_seq", "indexing", "latest", "prefetch")

    def __init__(self, latest: tuple[int, Msg] | None, index_seq: int, index: SeqIndex | None, count: int | None,
                 prefetch: asyncio.Future[list[Msg | None]] | None, indexing: bool, chained: bool) -> None:
        self.latest = latest
        self.index_seq = index_seq
        self.index = index
        self.count = count
        self.prefetch = prefetch
        self.indexing = indexing
        self.chained = chained


class ReadPosition:
    """Where a read ended: the last version read and its stream sequence (0, 0: nothing read)."""

    __slots__ = ("seq", "version")

    def __init__(self) -> None:
        self.version = 0
        self.seq = 0

    def advance(self, version: int, seq: int) -> None:
        if seq > self.seq:
            self.version, self.seq = version, seq


async def sequence_at(api: JsApi, stream_get: str, subject: str, start: int, index: int) -> int | None:
    """Stream sequence of the ``index``-th message of ``subject`` from ``start`` (error path only)."""
    body = _encode_json({"seq": start, "next_by_subj": subject, "batch": index + 1})
    msgs = await api.request_many(stream_get, body, what="locating a corrupt message")
    data = [m for m in msgs if m.headers and "Status" not in m.headers]
    if len(data) != index + 1:
        return None
    return int(data[-1].headers["Nats-Sequence"])  # type: ignore[index]


class HistoryReader:
    """Reads actors' histories (see the module docstring) and maintains their sequence indexes.

    Args:
        api: the store's JetStream API client.
        page_size: events per scan request.
        timeout: seconds to wait for replies.
        index_limit: most versions one index message records (the newest are kept).
    """

    def __init__(self, api: JsApi, *, page_size: int, timeout: float, index_limit: int) -> None:
        self._api = api
        self._page_size = page_size
        self._timeout = timeout
        self._index_limit = index_limit
        self._writes: set[asyncio.Task[None]] = set()
        # actors found dense along their chain (they get no index): read by scan next time
        self._dense_subjects: dict[str, None] = {}
        # what the reads did (inspection, tests, benchmarks)
        self.index_writes = 0       # index messages stored
        self.index_failures = 0     # index writes the server refused or did not acknowledge
        self.events_by_sequence = 0  # events read by sequence through an index
        self.chain_walks = 0        # reads that found their newest events along the predecessor chain
        self.scans = 0              # subject scans (whole history, or the part after the index)
        self.indexing_disabled: set[str] = set()  # streams that refuse this client's index writes

    # ---- small server reads -----------------------------------------------------------------
    async def _last_of(self, stream_get: str, subject: str) -> tuple[int, Msg] | None:
        return await self._api.direct_last(stream_get, subject, what=f"reading the last message of {subject!r}")

    async def _index(self, stream_get: str, index_subject: str) -> tuple[int, SeqIndex | None]:
        """(sequence of the index message or 0, the decoded index or None); never raises for a
        broken index: it is only a hint."""
        try:
            found = await self._last_of(stream_get, index_subject)
        except AetherError:
            return 0, None
        if found is None:
            return 0, None
        return found[0], decode_index(found[1].data)

    async def _count(self, stream_get: str, subject: str) -> int | None:
        """Messages on ``subject`` now (None when the server does not say).

        Asked as a one-message batch from the start of the stream: the server takes the subject's
        total from its per-subject index (no block scan) and reports what is pending after the
        first message in the end-of-batch status.
        """
        try:
            body = b'{"seq":1,"batch":1,"next_by_subj":%s}' % _encode_json(subject)
            msgs = await self._api.request_many(stream_get, body, what=f"counting the messages of {subject!r}")
        except AetherError:
            return None
        status = msgs[-1].headers or {}
        if status.get("Status") == "404":
            return 0
        pending = status.get("Nats-Num-Pending")
        if status.get("Status") != "204" or len(msgs) != 2 or pending is None or not pending.isdigit():
            return None
        return int(pending) + 1

    # ---- the read ---------------------------------------------------------------------------
    async def pages(self, stream: str, actor_id: str, subject: str, index_subject: str | None, from_version: int,
                    start_seq: int, position: ReadPosition, known_version: int = 0) -> AsyncIterator[list[Event]]:
        """The actor's events with ``version >= from_version``, ascending, in pages.

        ``start_seq`` is where a scan may start (after a known earlier event, else 1);
        ``index_subject`` is None when the stream does not keep indexes. ``position`` ends on the
        last event read. ``known_version`` is the newest version this client knows exists (it wrote
        it): a read that a lagging replica answered is completed from the stream leader up to it.

        Raises:
            CorruptEventError: a message of the actor's subject is not an event of this actor.
            StoreError: the history has a gap (messages lost or deleted), or server trouble.
            StoreUnavailableError / AetherTimeoutError: the server cannot be reached.
        """
        async for page in self._read(stream, actor_id, subject, index_subject, from_version, start_seq, position):
            yield page
        async for page in self.complete(stream, actor_id, subject, position, known_version, from_version,
                                        f"reading the history of {actor_id!r}"):
            yield page

    async def complete(self, stream: str, actor_id: str, subject: str, position: ReadPosition, top: int,
                       from_version: int, what: str) -> AsyncIterator[list[Event]]:
        """Events after ``position`` up to version ``top`` (those with ``version >= from_version``),
        read from the stream leader: what a lagging replica that answered a read had not applied yet."""
        if position.version < top:
            async for event, _ in self._leader_tail(stream, actor_id, subject, position, top, what):
                if event.version >= from_version:
                    yield [event]

    async def _read(self, stream: str, actor_id: str, subject: str, index_subject: str | None, from_version: int,
                    start_seq: int, position: ReadPosition) -> AsyncIterator[list[Event]]:
        what = f"reading the history of {actor_id!r}"
        stream_get = f"{self._api.api_prefix}.DIRECT.GET.{stream}"
        want = max(from_version, 1)
        indexing = index_subject is not None and stream not in self.indexing_disabled  # may write indexes
        index_seq, index = await self._index(stream_get, index_subject) if index_subject else (0, None)
        # that the index lists every message of the subject in its window is proven either by the
        # events' predecessor sequences (fetched with headers: "chained") or, for a long window read
        # from version 1, by the subject's message count (bare payloads: half the client's work per
        # event, but the count's lookup of the subject's first message may load one more block)
        window = len(index.seqs) - (want - index.first_version) if index is not None else 0
        chained = want > 1 or window < COUNT_MIN_WINDOW
        prefetch: asyncio.Future[list[Msg | None]] | None = None
        if index is not None and index.covers(want) and not _dense(index.seqs[want - index.first_version:]):
            # fetch what the index names right away; it is used only once the actor's last message
            # (and count) confirm the index. Asked first, the events' blocks are loaded for good
            # before the lookups by subject touch them (a cold block loaded only for a subject
            # lookup is dropped again at once)
            first_chunk = index.seqs[want - index.first_version:][:_CHUNK]
            prefetch = asyncio.ensure_future(self._api.direct_get_each(stream_get, first_chunk, timeout=self._timeout,
                                                                       what=what, with_headers=chained))
        latest_task = asyncio.ensure_future(self._last_of(stream_get, subject))
        count_task = asyncio.ensure_future(self._count(stream_get, subject)) \
            if prefetch is not None and not chained else None
        try:
            latest = await latest_task
            count = await count_task if count_task is not None else None
            facts = _Facts(latest, index_seq, index, count, prefetch, indexing, chained)
            async for page in self._continue(stream, stream_get, actor_id, subject, index_subject, from_version,
                                             start_seq, position, facts):
                yield page
        finally:
            for task in (latest_task, count_task, prefetch):
                if task is not None and not task.done():
                    task.cancel()
            await cancel_and_wait(prefetch)  # ours; a cancellation of the reader propagates

    async def _continue(self, stream: str, stream_get: str, actor_id: str, subject: str, index_subject: str | None,
                        from_version: int, start_seq: int, position: ReadPosition,
                        facts: _Facts) -> AsyncIterator[list[Event]]:
        """The read once the first answers are in (see :meth:`pages`)."""
        what = f"reading the history of {actor_id!r}"
        want = max(from_version, 1)
        latest, index_seq, index, count = facts.latest, facts.index_seq, facts.index, facts.count
        prefetch, indexing, chained = facts.prefetch, facts.indexing, facts.chained
        if latest is None:
            return
        last_seq, last_msg = latest
        last = decode_actor_event(last_msg.data, actor_id, stream, last_seq)
        top = last.version
        if want >= top:
            position.advance(top, last_seq)
            if want == top:
                yield [last]
            return

        # 1. the part the index knows, read by sequence and verified event by event; the events
        #    after it (a few, appended since the index was written) by walking back the chain of
        #    expected predecessor sequences from the actor's last message
        next_version, after_seq = 0, start_seq - 1  # the scan below continues from here
        dense = False
        if index is not None and index.covers(want) and (chained or count == top) \
                and (index.last_version < top or index.seq_of(top) == last_seq):
            hi = min(index.last_version, top)
            seqs = index.seqs[want - index.first_version: hi - index.first_version + 1]
            if _dense(seqs):
                dense = True  # a scan is as cheap; it starts where it would without an index
            else:
                tail: list[tuple[Event, int]] | None = [] if hi == top else None
                if hi < top and top - hi <= CHAIN_MAX:
                    tail = await self._chain(stream, stream_get, actor_id, subject, last, last_seq,
                                             last_msg.headers or {}, hi, index.seq_of(hi), what)
                async for page, version, seq in self._by_sequence(stream, stream_get, actor_id, subject, seqs, want,
                                                                  top, last, last_seq, what, prefetch, chained):
                    self.events_by_sequence += len(page)
                    if page:
                        yield page
                    next_version, after_seq = version + 1, seq
                    position.advance(version, seq)
                if next_version == hi + 1 and tail is not None:
                    if tail:
                        self.chain_walks += 1
                        yield [event for event, _ in tail if event.version >= from_version]
                        position.advance(top, last_seq)
                        if len(tail) >= INDEX_REWRITE_TAIL and index_subject is not None and indexing:
                            self._write_index(stream, index_subject, index_seq, index.extended(
                                hi + 1, [seq for _, seq in tail], self._index_limit))
                    return
                if next_version > top:
                    return
        else:
            index = None

        # 2. a small sparse actor without a usable index: walk its predecessor chain back from its
        #    last message (a scan would walk the whole stream between its events, and load every
        #    block of that span when they are cold)
        wanted = top - want + 1
        if next_version == 0 and not dense and wanted <= CHAIN_FIRST_READ and subject not in self._dense_subjects \
                and (last_seq - start_seq + 1) / wanted > DENSE_SPACING:
            chain = await self._chain(stream, stream_get, actor_id, subject, last, last_seq, last_msg.headers or {},
                                      want - 1, None, what)
            if chain is not None:
                self.chain_walks += 1
                yield [event for event, _ in chain if event.version >= from_version]
                position.advance(top, last_seq)
                seqs = [seq for _, seq in chain]
                if _dense(seqs):  # no index for it: remember to scan it next time instead
                    if len(self._dense_subjects) >= _DENSE_MEMORY:
                        del self._dense_subjects[next(iter(self._dense_subjects))]
                    self._dense_subjects[subject] = None
                elif index_subject is not None and indexing and len(chain) >= INDEX_MIN_NEW:
                    self._write_index(stream, index_subject, index_seq, SeqIndex(want, seqs))
                return

        # 3. the rest by subject scan; learn the sequences when the actor is sparse
        remaining = top - max(next_version, want) + 1
        spacing = (last_seq - after_seq) / max(remaining, 1)
        collect = (index_subject is not None and indexing and not dense and remaining >= INDEX_MIN_NEW
                   and spacing > DENSE_SPACING)
        learned: list[int] = []
        first_learned = 0
        self.scans += 1
        async for page, seqs_read in self._scan(stream, stream_get, actor_id, subject, after_seq + 1,
                                                next_version, from_version, collect, position, what):
            if collect and seqs_read:
                if not learned:
                    first_learned = position.version - len(seqs_read) + 1
                learned.extend(seqs_read)
            if page:
                yield page
        if position.version < top:
            # a replica that has not caught up answered the scan: read the rest from the leader
            async for event, seq in self._leader_tail(stream, actor_id, subject, position, top, what):
                if event.version >= from_version:
                    yield [event]
                if collect:
                    if not learned:
                        first_learned = event.version
                    learned.append(seq)
        if collect and index_subject is not None and len(learned) >= INDEX_MIN_NEW \
                and (index is not None or not _dense(learned)):  # a dense actor is read by scan anyway
            base = index if index is not None else SeqIndex(first_learned, [])
            self._write_index(stream, index_subject, index_seq,
                              base.extended(first_learned, learned, self._index_limit))

    async def _chain(self, stream: str, stream_get: str, actor_id: str, subject: str, last: Event, last_seq: int,
                     last_headers: dict[str, str], stop_version: int, stop_seq: int | None,
                     what: str) -> list[tuple[Event, int]] | None:
        """Events ``stop_version + 1 .. last.version`` found by walking back from the last one along the
        predecessor sequences the server enforced at append time (``Nats-Expected-Last-Subject-Sequence``;
        a message without it, inside an atomic batch, follows its predecessor directly).

        Returns them ascending with their sequences, or ``None`` when the chain does not lead back
        to ``stop_seq`` (when given; the caller then scans).
        """
        chain = [(last, last_seq)]
        event, seq, headers = last, last_seq, last_headers
        while True:
            prev = _predecessor(seq, headers)
            if event.version == stop_version + 1:
                if stop_seq is not None and prev != stop_seq:
                    return None
                chain.reverse()
                return chain
            if prev <= (stop_seq or 0):
                return None
            msg = await self._api.request(stream_get, b'{"seq":%d}' % prev, what=what)
            headers = msg.headers or {}
            if "Status" in headers or headers.get("Nats-Subject") != subject:
                return None
            try:
                found = decode_event(msg.data, stream=stream, sequence=prev, actor_id=actor_id)
            except CorruptEventError:
                return None  # the scan will locate and report it
            if found.actor_id != actor_id or found.version != event.version - 1:
                return None
            event, seq = found, prev
            chain.append((event, seq))

    async def _by_sequence(self, stream: str, stream_get: str, actor_id: str, subject: str, seqs: list[int],
                           want: int, top: int, last: Event, last_seq: int, what: str,
                           prefetch: asyncio.Future[list[Msg | None]] | None,
                           chained: bool) -> AsyncIterator[tuple[list[Event], int, int]]:
        """Pages of the events ``want ..`` at ``seqs``, each verified; stops at the first doubt.

        Yields ``(page, version, seq)``: the version and sequence of the page's last verified event
        (the caller scans on from there). ``prefetch``, when given, holds the messages at the first
        ``_CHUNK`` sequences of the index from ``want`` (perhaps more than ``seqs``). With
        ``chained`` the messages carry headers and each event's predecessor sequence must be the
        previous one read. The actor's last event (``last``) is not fetched again.
        """
        version = want
        prev_seq = 0
        fetch = self._api.direct_get_each
        for start in range(0, len(seqs), _CHUNK):
            chunk = seqs[start:start + _CHUNK]
            msgs: list[Msg | None]
            if start == 0 and prefetch is not None:
                msgs = (await prefetch)[:len(chunk)]
            elif chunk[-1] == last_seq and not chained:
                msgs = [*await fetch(stream_get, chunk[:-1], timeout=self._timeout, what=what), None]
            else:
                msgs = await fetch(stream_get, chunk, timeout=self._timeout, what=what, with_headers=chained)
            page: list[Event] = []
            good_seq = 0
            for seq, msg in zip(chunk, msgs, strict=True):
                if chained:
                    headers = msg.headers if msg is not None else None
                    if not headers or headers.get("Nats-Subject") != subject \
                            or (prev_seq and _predecessor(seq, headers) != prev_seq):
                        break
                if seq == last_seq and version == top:
                    event = last
                elif msg is None:
                    break
                else:
                    try:
                        event = decode_event(msg.data, stream=stream, sequence=seq, actor_id=actor_id)
                    except CorruptEventError:
                        break  # perhaps not this actor's message at all: the scan will tell
                    if event.actor_id != actor_id or event.version != version:
                        break
                page.append(event)
                good_seq = prev_seq = seq
                version += 1
            else:
                if page:
                    yield page, version - 1, good_seq
                if version > top:
                    return
                continue
            if page:
                yield page, version - 1, good_seq
            return

    async def _scan(self, stream: str, stream_get: str, actor_id: str, subject: str, start_seq: int,
                    expect_version: int, from_version: int, with_seqs: bool, position: ReadPosition,
                    what: str) -> AsyncIterator[tuple[list[Event], list[int]]]:
        """Subject scan from ``start_seq`` to the end: pages of events ``>= from_version`` and, with
        ``with_seqs``, the sequences of every event read (headers are requested then)."""
        page_size = self._page_size
        request: dict[str, Any] = {"seq": max(start_seq, 1), "next_by_subj": subject, "batch": page_size,
                                   "max_bytes": PAGE_BYTES}
        if not with_seqs:
            # the server sends bare payloads: nats-py would otherwise parse every message's headers
            # in Python; the end-of-batch status still carries Nats-Last-Sequence and Nats-Num-Pending
            request["no_hdr"] = True
        fetch = self._api.request_many
        last_version = expect_version - 1 if expect_version else 0
        prefetch: asyncio.Task[list[Msg]] | None = None
        try:
            msgs = await fetch(stream_get, _encode_json(request), what=what)
            while True:
                page_start = int(request["seq"])
                status = msgs.pop().headers or {}
                code = status.get("Status")
                if code == "404" or (code == "204" and not msgs):
                    break
                if code != "204":
                    raise StoreError(f"{what}: direct get failed: {code} {status.get('Description', '')}")
                with_headers = msgs[0].headers is not None
                page_last = int(status["Nats-Last-Sequence"])
                pending = int(status.get("Nats-Num-Pending", "0"))
                # with headers Nats-Num-Pending counts what is left after this batch; with no_hdr (server
                # 2.11-2.15) it counts what matched when the batch started. A batch can also end early when
                # it reaches its byte limit, so a short page alone proves nothing.
                done = (pending == 0) if with_headers else (len(msgs) < page_size and pending <= len(msgs))
                if not done:  # ask for the next page now: the server works while this one is decoded
                    request["seq"] = page_last + 1
                    prefetch = asyncio.ensure_future(fetch(stream_get, _encode_json(request), what=what))
                page: list[Event] = []
                seqs: list[int] = []
                for index, msg in enumerate(msgs):
                    seq = int(msg.headers["Nats-Sequence"]) if with_headers and msg.headers else None
                    try:
                        event = decode_event(msg.data)
                    except CorruptEventError as exc:
                        if seq is None:
                            seq = await sequence_at(self._api, stream_get, subject, page_start, index)
                        raise CorruptEventError(exc.reason, actor_id=actor_id, stream=stream, sequence=seq) from None
                    if event.actor_id != actor_id:
                        if seq is None:
                            seq = await sequence_at(self._api, stream_get, subject, page_start, index)
                        raise CorruptEventError(f"message belongs to actor {event.actor_id!r}", actor_id=actor_id,
                                                stream=stream, sequence=seq)
                    version = event.version
                    if last_version and version != last_version + 1:
                        # an actor's versions are consecutive: a jump means messages were lost on
                        # the way or deleted from the stream; never return a history with a hole
                        raise StoreError(f"{what}: version {version} follows version {last_version}: "
                                         "the history read has a gap (messages lost or deleted)")
                    if version >= from_version:
                        page.append(event)
                    if with_seqs and seq is not None:
                        seqs.append(seq)
                    last_version = version
                if with_seqs and len(seqs) != len(msgs):
                    seqs = []  # the server sent no headers after all: nothing learned
                position.advance(last_version, page_last)
                yield page, seqs
                if prefetch is None:
                    break
                msgs = await prefetch
                prefetch = None
        finally:
            await cancel_and_wait(prefetch)  # ours; a cancellation of the reader propagates

    async def _leader_tail(self, stream: str, actor_id: str, subject: str, position: ReadPosition, top: int,
                           what: str) -> AsyncIterator[tuple[Event, int]]:
        """Events after ``position`` up to version ``top``, one by one from the stream leader."""
        while position.version < top:
            ends = f"{what}: the history ends at version {position.version} but the actor's last version is {top}"
            try:  # waits through a leader election within the timeout, as the leader's last version did
                message = await leader_next(self._api, stream, subject, position.seq, what=what)
            except JetStreamApiError as exc:
                raise StoreError(f"{ends}: {exc.description}") from exc
            if message is None:
                raise StoreError(f"{ends}: no message found")
            seq = message.seq
            event = decode_actor_event(message.data, actor_id, stream, seq)
            if position.version and event.version != position.version + 1:
                raise StoreError(f"{what}: version {event.version} follows version {position.version}: "
                                 "the history read has a gap (messages lost or deleted)")
            position.advance(event.version, seq)
            yield event, seq

    # ---- index maintenance ------------------------------------------------------------------
    def _write_index(self, stream: str, index_subject: str, expected_seq: int, index: SeqIndex) -> None:
        """Store ``index`` in the background (rolling up the previous one); failures only count."""
        payload = encode_index(index)
        if payload is None:
            return
        task = asyncio.ensure_future(self._store_index(stream, index_subject, expected_seq, payload))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _store_index(self, stream: str, index_subject: str, expected_seq: int, payload: bytes) -> None:
        headers = {"Nats-Rollup": "sub", "Nats-Expected-Last-Subject-Sequence": str(expected_seq)}
        try:
            ack = await self._api.publish_acked(index_subject, payload, headers, what="storing a sequence index")
        except PermissionDeniedError:
            self.index_failures += 1
            self.indexing_disabled.add(stream)  # e.g. a read-only user: read without writing indexes
            return
        except AetherError:
            self.index_failures += 1
            return
        if ack.error is not None:
            self.index_failures += 1
            if "rollup" in ack.error.description.lower():
                self.indexing_disabled.add(stream)  # the stream does not allow rollups: stop trying
            return
        self.index_writes += 1

    def stats(self) -> HistoryStats:
        """The counters above."""
        return HistoryStats(self.scans, self.index_writes, self.index_failures, self.events_by_sequence,
                            self.chain_walks)

    async def wait_index_writes(self) -> None:
        """Wait until the index writes started so far are done (tests, orderly shutdown)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._writes):
            task.cancel()
        await self.wait_index_writes()
