"""Ordered, ack-less consumption of a stream: flow control, heartbeats, gap recovery, no duplicates.

The server pushes the stream's messages (``ack_policy: none``, flow control, idle heartbeats)
to a private inbox. A callback subscription (nats-py's public ``subscribe(cb=...)``) classifies
each message as it arrives: it checks the consumer sequence (a gap means messages were
dropped: the consumer is recreated from the last accepted stream sequence), drops anything at
or below the last accepted stream sequence (so nothing is delivered twice across a reset),
appends the accepted ones to this consumer's own buffer and notes flow-control requests.

The owner of an :class:`OrderedConsumer` takes the accepted messages in batches
(:meth:`OrderedConsumer.take`) in its own task. A flow-control request is answered when the
owner comes back for more after the batch that preceded it, which bounds what is buffered:
the server waits for the answer before it sends more.

Only nats-py's public API is used: ``Client.subscribe`` with a coroutine callback,
``Client.new_inbox``, ``Client.publish``, ``Subscription.unsubscribe`` and the public fields
of ``Msg`` (``subject``, ``reply``, ``data``, ``headers``); ``tests/test_nats_consume.py`` pins them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from aether._nats import ERR_NO_MESSAGE_FOUND, JetStreamApiError, JsApi, translate_nats_error
from aether._tasks import cancel_and_wait
from aether.errors import AetherError, AetherTimeoutError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

__all__ = ["Delivery", "OrderedConsumer", "head_sequence"]

log = logging.getLogger("aether.consumer")

Delivery = tuple[int, "Msg"]
"""A message taken from an :class:`OrderedConsumer`: ``(stream sequence, message)``."""

_NS = 1_000_000_000
_CREATE_ATTEMPTS = 3  # creation requests start() sends before an unanswered one is an error
_ACK_PREFIX = "$JS.ACK."
_PENDING_MSGS_LIMIT = 1024 * 1024  # nats-py's queue in front of the callback; flow control bounds it
_SEQUENCE = itemgetter(0)


async def head_sequence(api: JsApi, stream: str, filter_subject: str) -> int:
    """The stream sequence of the newest message matching ``filter_subject`` (0 when none).

    Raises:
        StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
    """
    try:
        reply = await api.api(f"STREAM.MSG.GET.{stream}", {"last_by_subj": filter_subject})
    except JetStreamApiError as exc:
        if exc.err_code == ERR_NO_MESSAGE_FOUND:
            return 0
        raise
    return int(reply["message"]["seq"])


class OrderedConsumer:
    """Delivers every message of ``stream`` matching ``filter_subject`` after ``start_after``, in order, once.

    Args:
        nc: a connected nats-py client (not owned).
        api: the JetStream API helper used to create and delete the server-side consumer.
        stream: the stream name.
        filter_subject: the subject filter (may hold wildcards).
        start_after: deliver messages with a stream sequence greater than this.
        heartbeat: idle heartbeat in seconds; three missed ones recreate the consumer.

    Attributes:
        received: the stream sequence of the last message accepted (taken or buffered).
        pending: matching messages the server still held after that one (as a decimal string).
        closed: whether :meth:`close` was called.
        resets: how many times the server-side consumer was recreated.
    """

    def __init__(self, nc: Client, api: JsApi, stream: str, filter_subject: str, *, start_after: int = 0,
                 heartbeat: float = 2.0) -> None:
        self.received = start_after
        self.pending = "0"
        self.closed = False
        self.resets = 0
        self._nc = nc
        self._api = api
        self._stream = stream
        self._filter = filter_subject
        self._heartbeat = heartbeat
        self._buf: list[Delivery] = []  # accepted, not taken yet
        self._taken: list[Delivery] = []  # the batch the owner holds
        self._flow_now: list[str] = []  # flow-control requests that came after (or among) the buffered messages
        self._flow_due: list[str] = []  # flow-control requests that came with the batch the owner holds
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        self._cseq = 0
        self._seen = 0
        # the token of the subscription whose messages count; None while none does (closed, or a
        # reset is due): a callback holding another token drops what it gets
        self._live: object | None = None
        self._sub: Subscription | None = None
        self._name: str | None = None
        self._reset_reason: str | None = None
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the server-side consumer and start receiving.

        A creation request left without reply is asked again, with a new consumer name, up to
        :data:`_CREATE_ATTEMPTS` times in all: just after a server of a cluster died, a
        ``CONSUMER.CREATE`` may go unanswered for longer than the API timeout (seen in
        test_partitions_cluster beside busy processes) while the cluster settles on its leaders.
        An unanswered consumer has no subscriber and expires after its inactivity threshold.

        Raises:
            StoreError: the stream does not exist or the consumer cannot be created.
            StoreUnavailableError: not connected.
            AetherTimeoutError: no reply to any of the creation requests.
        """
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                await self._create()
                break
            except AetherTimeoutError as exc:
                if attempt == _CREATE_ATTEMPTS:
                    raise
                log.warning("creating a consumer on %s: %s; asking again", self._stream, exc)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="aether-consumer")

    def close(self) -> None:
        """Stop delivering (synchronous, idempotent); :meth:`aclose` also cleans up the server side."""
        if self.closed:
            return
        self.closed = True
        self._live = None
        self._wake.set()
        self.interrupt()

    async def aclose(self) -> None:
        """Close, unsubscribe and delete the server-side consumer (best effort)."""
        self.close()
        task, self._supervisor = self._supervisor, None
        try:
            await cancel_and_wait(task)  # ours to cancel; a cancellation of the caller propagates ...
        finally:  # ... once the (bounded) clean-up has run
            await self._drop(self._sub, self._name)
            self._sub = self._name = None

    def interrupt(self) -> None:
        """Make the owner's :meth:`take` return (an empty batch when nothing is buffered)."""
        self._woken = True
        self._notify()

    # ---- the owner's side -------------------------------------------------------------------
    async def take(self) -> list[Delivery]:
        """The next accepted messages, in stream order, as ``(stream sequence, message)`` pairs.

        Waits until there is at least one; returns an empty list when woken by :meth:`interrupt`
        or :meth:`close` (re-check your own state then), and always once closed. Calling it
        again means the previous batch is done: the flow-control requests that came with it
        are answered first.
        """
        if self._flow_due:
            due, self._flow_due = self._flow_due, []
            for subject in due:
                await self.respond(subject)
        self._taken = []
        while True:
            if self.closed:
                return []
            batch = self._buf
            if batch:
                self._buf = []
                self._flow_due, self._flow_now = self._flow_now, []
                self._taken = batch
                return batch
            if self._flow_now:  # nothing before them is left to handle
                now, self._flow_now = self._flow_now, []
                for subject in now:
                    await self.respond(subject)
                continue
            if self._woken:
                self._woken = False
                return []
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def lag(self, done: int) -> int:
        """Matching messages after stream sequence ``done`` that the owner has not handled: still
        on the server (:attr:`pending`), buffered here, or in the batch taken last."""
        taken = self._taken
        unhandled = len(taken) - bisect_right(taken, done, key=_SEQUENCE) if taken else 0
        return int(self.pending) + len(self._buf) + unhandled

    async def respond(self, subject: str) -> None:
        """Answer a flow-control request (best effort: a lost answer ends in a heartbeat-driven reset)."""
        if not self.closed:
            with contextlib.suppress(Exception):
                await self._nc.publish(subject, b"")

    # ---- the subscription's side (the hot path) ---------------------------------------------
    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _callback(self, token: object) -> Callable[[Msg], Awaitable[None]]:
        async def deliver(msg: Msg) -> None:
            if token is not self._live:
                return
            reply = msg.reply
            if not reply.startswith(_ACK_PREFIX):
                self._control(msg)
                return
            tokens = reply.split(".")
            if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
                cseq = int(tokens[6])
                sseq_text, pending = tokens[5], tokens[8]
            else:  # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>...
                cseq = int(tokens[8])
                sseq_text, pending = tokens[7], tokens[10]
            if cseq != self._cseq + 1:
                self._request_reset(f"gap: consumer sequence {cseq} after {self._cseq}")
                return
            self._cseq = cseq
            sseq = int(sseq_text)
            if sseq <= self.received:
                return
            self.received = sseq
            self.pending = pending
            buf = self._buf
            buf.append((sseq, msg))
            if len(buf) == 1:
                self._notify()

        return deliver

    def _control(self, msg: Msg) -> None:
        self._seen += 1
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "100":
            if msg.reply:
                self._flow_now.append(msg.reply)
                self._notify()
                return
            last = headers.get("Nats-Last-Consumer")
            if last is not None and last.isdigit() and int(last) != self._cseq:
                self._request_reset(f"heartbeat reports consumer sequence {last}, received {self._cseq}")
                return
            stalled = headers.get("Nats-Consumer-Stalled")
            if stalled:
                self._flow_now.append(stalled)
                self._notify()
        elif status is not None:
            self._request_reset(f"server status {status} {headers.get('Description', '')}".strip())

    # ---- server-side consumer ---------------------------------------------------------------
    async def _create(self) -> None:
        inbox = self._nc.new_inbox()
        token = object()
        try:
            sub = await self._nc.subscribe(inbox, cb=self._callback(token), pending_msgs_limit=_PENDING_MSGS_LIMIT,
                                           pending_bytes_limit=0)
        except Exception as exc:
            raise translate_nats_error(exc, f"subscribing to stream {self._stream!r}") from exc
        name = f"aether-{secrets.token_hex(8)}"
        # switch to the new subscription before the server can deliver to it; from here on
        # whatever the old one still brings is dropped, so the start below is final
        old_sub, old_name = self._sub, self._name
        self._sub, self._name = sub, name
        self._cseq = 0
        self._live = None if self.closed else token
        start = self.received + 1
        hb = self._heartbeat
        config: dict[str, Any] = {
            "name": name,
            "deliver_subject": inbox,
            "deliver_policy": "all",
            "ack_policy": "none",
            "filter_subject": self._filter,
            "flow_control": True,
            "idle_heartbeat": int(hb * _NS),
            "mem_storage": True,
            "num_replicas": 1,
            "inactive_threshold": int(max(5 * hb, 10.0) * _NS),
            "replay_policy": "instant",
        }
        if start > 1:
            config.update(deliver_policy="by_start_sequence", opt_start_seq=start)
        try:
            await self._api.api(f"CONSUMER.CREATE.{self._stream}.{name}",
                                {"stream_name": self._stream, "config": config})
        except BaseException:
            self._live = None  # the supervisor retries (or start() fails)
            self._sub, self._name = old_sub, old_name
            await self._drop(sub, None)
            raise
        await self._drop(old_sub, old_name)

    async def _drop(self, sub: Subscription | None, name: str | None) -> None:
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if name is not None and self._nc.is_connected:
            with contextlib.suppress(AetherError):
                await self._api.api(f"CONSUMER.DELETE.{self._stream}.{name}", timeout=1.0)

    def _request_reset(self, reason: str) -> None:
        if self.closed:
            return
        self._live = None  # whatever else the current subscription brings is stale now
        self._reset_reason = reason
        self._wake.set()

    async def _supervise(self) -> None:
        idle_checks = 0
        last_seen = self._seen
        last_received = self.received
        while not self.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat):
                    await self._wake.wait()
            if self.closed:
                return
            reason: str | None = None
            if self._wake.is_set():
                self._wake.clear()
                reason, self._reset_reason = self._reset_reason, None
            else:
                # idle = nothing accepted, no heartbeat or flow control seen and nothing buffered
                idle = self._seen == last_seen and self.received == last_received and not self._buf
                idle_checks = idle_checks + 1 if idle else 0
                last_seen, last_received = self._seen, self.received
                if idle_checks >= 3:
                    self._live = None
                    reason = f"no message or heartbeat for {3 * self._heartbeat:g}s"
            if reason is None:
                continue
            idle_checks = 0
            log.info("consumer on %s: %s; resuming after stream sequence %d", self._stream, reason, self.received)
            await self._recreate()
            last_seen, last_received = self._seen, self.received

    async def _recreate(self) -> None:
        delay = 0.05
        while not self.closed:
            try:
                await self._create()
                self.resets += 1
                return
            except AetherError as exc:
                log.warning("recreating the consumer on %s failed (%s); retrying in %.2fs", self._stream, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
