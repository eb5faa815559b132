"""An ordered, ack-less push consumer: flow control, heartbeats, gap recovery, no duplicates.

The server pushes the stream's messages (``ack_policy: none``, flow control, idle heartbeats)
to a private inbox. The owner of an :class:`OrderedConsumer` drains :attr:`~OrderedConsumer.queue`
in its own task and passes each message to :meth:`~OrderedConsumer.accept`, which checks the
consumer sequence (a gap means messages were dropped: the consumer is recreated from the last
accepted stream sequence), drops anything at or below the last accepted stream sequence (so
nothing is delivered twice across a reset) and tells flow-control requests apart; those are
answered when the owner reaches them, which bounds what is buffered: the server waits for the
answer before it sends more.

For speed, :attr:`queue` is the nats-py subscription's own pending queue (no callback task,
no second queue; nats-py has kept it as ``Subscription._pending_queue`` since 2.0). Should a
nats-py release lack it, a callback feeds an equivalent queue instead.

A ``None`` in the queue is a wake-up (reset, close, interrupt): the owner re-reads
:attr:`queue` (a reset switches to a new subscription) and its own state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from aether._nats import JetStreamApiError, JsApi, translate_nats_error
from aether._tasks import cancel_and_wait
from aether.errors import AetherError

__all__ = ["FLOW_CONTROL", "OrderedConsumer", "head_sequence"]

log = logging.getLogger("aether.projection")

FLOW_CONTROL = -1
"""What :meth:`OrderedConsumer.accept` returns for a flow-control request (answer with ``respond``)."""

_NS = 1_000_000_000
_ACK_PREFIX = "$JS.ACK."
_PENDING_MSGS_LIMIT = 1024 * 1024
_PENDING_QUEUE_ATTRIBUTE = "_pending_queue"  # nats-py's Subscription queue (fast path, see the module doc)
_ERR_NO_MESSAGE_FOUND = 10037


async def head_sequence(api: JsApi, stream: str, filter_subject: str) -> int:
    """The stream sequence of the newest message matching ``filter_subject`` (0 when none).

    Raises:
        StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
    """
    try:
        reply = await api.api(f"STREAM.MSG.GET.{stream}", {"last_by_subj": filter_subject})
    except JetStreamApiError as exc:
        if exc.err_code == _ERR_NO_MESSAGE_FOUND:
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
    """

    def __init__(self, nc: Client, api: JsApi, stream: str, filter_subject: str, *, start_after: int = 0,
                 heartbeat: float = 2.0) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.received = start_after
        self.pending = "0"
        self.closed = False
        self.resets = 0
        self._nc = nc
        self._api = api
        self._stream = stream
        self._filter = filter_subject
        self._heartbeat = heartbeat
        self._dead = False
        self._cseq = 0
        self._seen = 0
        self._sub: Any = None
        self._name: str | None = None
        self._reset_reason: str | None = None
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the server-side consumer and start receiving.

        Raises:
            StoreError: the stream does not exist or the consumer cannot be created.
            StoreUnavailableError / AetherTimeoutError: the server cannot be reached.
        """
        await self._create()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="aether-consumer")

    def close(self) -> None:
        """Stop delivering (synchronous, idempotent); :meth:`aclose` also cleans up the server side."""
        if self.closed:
            return
        self.closed = True
        self._dead = True
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
        """Wake an owner waiting on :attr:`queue` without delivering anything."""
        self.queue.put_nowait(None)

    async def respond(self, msg: Msg) -> None:
        """Answer a flow-control request (``accept`` returned :data:`FLOW_CONTROL`)."""
        subject = msg.reply or (msg.headers or {}).get("Nats-Consumer-Stalled")
        if subject and not self.closed:
            with contextlib.suppress(Exception):
                await self._nc.publish(subject, b"")

    # ---- the hot path ---------------------------------------------------------------------
    def accept(self, msg: Msg) -> int:
        """Classify a message taken from :attr:`queue`.

        Returns its stream sequence (> 0) when it is the next message to handle (and sets
        :attr:`pending`), :data:`FLOW_CONTROL` for a flow-control request, ``0`` to skip it.
        """
        if self._dead:
            return 0
        reply = msg.reply
        if reply.startswith(_ACK_PREFIX):
            tokens = reply.split(".")
            if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
                cseq = int(tokens[6])
                sseq_text, pending = tokens[5], tokens[8]
            else:  # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>...
                cseq = int(tokens[8])
                sseq_text, pending = tokens[7], tokens[10]
            if cseq != self._cseq + 1:
                self._request_reset(f"gap: consumer sequence {cseq} after {self._cseq}")
                return 0
            self._cseq = cseq
            sseq = int(sseq_text)
            if sseq <= self.received:
                return 0
            self.received = sseq
            self.pending = pending
            return sseq
        return self._control(msg)

    def _control(self, msg: Msg) -> int:
        self._seen += 1
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "100":
            if msg.reply:
                return FLOW_CONTROL
            last = headers.get("Nats-Last-Consumer")
            if last is not None and last.isdigit() and int(last) != self._cseq:
                self._request_reset(f"heartbeat reports consumer sequence {last}, received {self._cseq}")
                return 0
            if headers.get("Nats-Consumer-Stalled"):
                return FLOW_CONTROL
        elif status is not None:
            self._request_reset(f"server status {status} {headers.get('Description', '')}".strip())
        return 0

    # ---- server-side consumer ---------------------------------------------------------------
    async def _subscribe(self, inbox: str) -> tuple[Any, asyncio.Queue[Any]]:
        try:
            sub = await self._nc.subscribe(inbox, pending_msgs_limit=_PENDING_MSGS_LIMIT, pending_bytes_limit=0)
        except Exception as exc:
            raise translate_nats_error(exc, f"subscribing to stream {self._stream!r}") from exc
        queue = getattr(sub, _PENDING_QUEUE_ATTRIBUTE, None)
        if isinstance(queue, asyncio.Queue):
            return sub, queue
        with contextlib.suppress(Exception):  # no pending queue in this nats-py: feed our own
            await sub.unsubscribe()
        own: asyncio.Queue[Any] = asyncio.Queue()

        async def feed(msg: Msg) -> None:
            own.put_nowait(msg)

        try:
            sub = await self._nc.subscribe(inbox, cb=feed, pending_bytes_limit=0)
        except Exception as exc:
            raise translate_nats_error(exc, f"subscribing to stream {self._stream!r}") from exc
        return sub, own

    async def _create(self) -> None:
        start = self.received + 1
        inbox = self._nc.new_inbox()
        sub, queue = await self._subscribe(inbox)
        name = f"aether-{secrets.token_hex(8)}"
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
        self._cseq = 0
        try:
            await self._api.api(f"CONSUMER.CREATE.{self._stream}.{name}",
                                {"stream_name": self._stream, "config": config})
        except BaseException:
            await self._drop(sub, None)
            raise
        old_sub, old_name, old_queue = self._sub, self._name, self.queue
        self._sub, self._name, self.queue = sub, name, queue
        self._cseq = 0
        self._dead = self.closed
        old_queue.put_nowait(None)  # an owner blocked on the old queue switches to the new one
        await self._drop(old_sub, old_name)

    async def _drop(self, sub: Any, name: str | None) -> None:
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if name is not None and self._nc.is_connected:
            with contextlib.suppress(AetherError):
                await self._api.api(f"CONSUMER.DELETE.{self._stream}.{name}", timeout=1.0)

    def _request_reset(self, reason: str) -> None:
        if self.closed:
            return
        self._dead = True  # whatever else the current subscription holds is stale now
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
                # idle = nothing accepted and nothing waiting in the queue (a busy owner is not idle)
                idle = self._seen == last_seen and self.received == last_received and self.queue.empty()
                idle_checks = idle_checks + 1 if idle else 0
                last_seen, last_received = self._seen, self.received
                if idle_checks >= 3:
                    self._dead = True
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
