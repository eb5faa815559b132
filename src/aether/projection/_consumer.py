"""An ordered, ack-less push consumer: flow control, heartbeats, gap recovery, no duplicates.

The server pushes the stream's messages (``ack_policy: none``, flow control, idle heartbeats)
to a private inbox. The subscription callback never runs user code: it checks the consumer
sequence (a gap means messages were dropped, so the consumer is recreated from the last
received stream sequence), drops anything at or below the last received stream sequence
(so nothing is delivered twice across a reset) and appends ``(msg, stream_seq, pending)`` to
:attr:`OrderedConsumer.buffer`, which the owner drains in its own task. Flow-control requests
are queued in the same buffer (stream sequence 0) and answered when the owner reaches them,
which bounds the buffer: the server waits for the answer before sending more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from aether._nats import JsApi, translate_nats_error
from aether.errors import AetherError, StoreError

__all__ = ["Entry", "OrderedConsumer", "head_sequence"]

log = logging.getLogger("aether.projection")

Entry = tuple[Msg, int, str]
"""``(message, stream sequence, messages pending after it as text)``; sequence 0 marks a flow-control request."""

_NS = 1_000_000_000
_ACK_PREFIX = "$JS.ACK."
_encode_json = msgspec.json.encode


async def head_sequence(api: JsApi, stream: str, filter_subject: str) -> int:
    """The stream sequence of the newest message matching ``filter_subject`` (0 when none).

    Raises:
        StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
    """
    msg = await api.request(f"$JS.API.DIRECT.GET.{stream}", _encode_json({"last_by_subj": filter_subject}),
                            what=f"reading the head of stream {stream!r}")
    headers = msg.headers or {}
    status = headers.get("Status")
    if status == "404":
        return 0
    if status is not None:
        raise StoreError(f"reading the head of stream {stream!r}: {status} {headers.get('Description', '')}")
    return int(headers["Nats-Sequence"])


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
        self.buffer: deque[Entry] = deque()
        self.received = start_after
        self.closed = False
        self.resets = 0
        self._nc = nc
        self._api = api
        self._stream = stream
        self._filter = filter_subject
        self._heartbeat = heartbeat
        self._gen = 0
        self._cseq = 0
        self._seen = 0
        self._sub: Any = None
        self._name: str | None = None
        self._waiter: asyncio.Future[None] | None = None
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
        self._gen += 1
        self._wake.set()
        self.interrupt()

    async def aclose(self) -> None:
        """Close, unsubscribe and delete the server-side consumer (best effort)."""
        self.close()
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self._drop(self._sub, self._name)
        self._sub = self._name = None

    def interrupt(self) -> None:
        """Wake a pending :meth:`wait` without delivering anything."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Return once the buffer holds an entry, the consumer closes, or :meth:`interrupt` is called."""
        if self.buffer or self.closed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    async def respond(self, msg: Msg) -> None:
        """Answer a flow-control request taken from the buffer (sequence 0)."""
        subject = msg.reply or (msg.headers or {}).get("Nats-Consumer-Stalled")
        if subject and not self.closed:
            with contextlib.suppress(Exception):
                await self._nc.publish(subject, b"")

    # ---- server-side consumer ---------------------------------------------------------------
    async def _create(self) -> None:
        self._gen += 1
        gen = self._gen
        self._cseq = 0
        start = self.received + 1
        inbox = self._nc.new_inbox()
        try:
            sub = await self._nc.subscribe(inbox, cb=self._callback(gen))
        except Exception as exc:
            raise translate_nats_error(exc, f"subscribing to stream {self._stream!r}") from exc
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
        try:
            await self._api.api(f"CONSUMER.CREATE.{self._stream}.{name}",
                                {"stream_name": self._stream, "config": config})
        except BaseException:
            await self._drop(sub, None)
            raise
        old_sub, old_name = self._sub, self._name
        self._sub, self._name = sub, name
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
        self._gen += 1  # everything still queued for the current subscription is stale now
        self._reset_reason = reason
        self._wake.set()

    async def _supervise(self) -> None:
        idle_checks = 0
        last_seen = self._seen
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
                idle_checks = idle_checks + 1 if self._seen == last_seen else 0
                last_seen = self._seen
                if idle_checks >= 3:
                    self._gen += 1
                    reason = f"no message or heartbeat for {3 * self._heartbeat:g}s"
            if reason is None:
                continue
            idle_checks = 0
            log.info("consumer on %s: %s; resuming after stream sequence %d", self._stream, reason, self.received)
            await self._recreate()
            last_seen = self._seen

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

    # ---- the hot path ---------------------------------------------------------------------
    def _callback(self, gen: int) -> Callable[[Msg], Awaitable[None]]:
        append = self.buffer.append
        ack_prefix = _ACK_PREFIX

        async def on_msg(msg: Msg) -> None:
            if gen != self._gen:
                return
            self._seen += 1
            reply = msg.reply
            if reply.startswith(ack_prefix):
                tokens = reply.split(".")
                if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
                    cseq = int(tokens[6])
                    sseq_text, pending_text = tokens[5], tokens[8]
                else:  # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>...
                    cseq = int(tokens[8])
                    sseq_text, pending_text = tokens[7], tokens[10]
                if cseq != self._cseq + 1:
                    self._request_reset(f"gap: consumer sequence {cseq} after {self._cseq}")
                    return
                self._cseq = cseq
                sseq = int(sseq_text)
                if sseq <= self.received:
                    return
                self.received = sseq
                append((msg, sseq, pending_text))
                waiter = self._waiter
                if waiter is not None:
                    self._waiter = None
                    if not waiter.done():
                        waiter.set_result(None)
                return
            self._control(msg)

        return on_msg

    def _control(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "100":
            if msg.reply:  # flow-control request: answered when the owner reaches it
                self._push_marker(msg)
                return
            last = headers.get("Nats-Last-Consumer")
            if last is not None and last.isdigit() and int(last) != self._cseq:
                self._request_reset(f"heartbeat reports consumer sequence {last}, received {self._cseq}")
                return
            if headers.get("Nats-Consumer-Stalled"):
                self._push_marker(msg)
        elif status is not None and status != "100":
            self._request_reset(f"server status {status} {headers.get('Description', '')}".strip())

    def _push_marker(self, msg: Msg) -> None:
        self.buffer.append((msg, 0, "0"))
        self.interrupt()
