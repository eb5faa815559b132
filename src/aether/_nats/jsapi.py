"""JetStream API calls over the connection's one reply inbox, with translated errors.

Acks and API replies are decoded with msgspec (faster than nats-py's JetStream client); every
request goes through :class:`aether._nats.inbox.Inbox`, shared by every component on the
connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from aether.errors import JetStreamApiError, StoreError, StoreUnavailableError

from .errors import ApiError, translate_nats_error
from .inbox import Collector, Inbox

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["MULTI_LAST_MAX", "JsApi", "PubAck"]

MULTI_LAST_MAX = 1024  # nats-server answers a multi_last with at most this many messages (else 413)


class PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None
    batch: str = ""
    count: int = 0


_decode_ack = msgspec.json.Decoder(PubAck).decode
_decode_any = msgspec.json.Decoder().decode
_encode_json = msgspec.json.encode


class JsApi:
    """Request/reply over the connection's inbox (:class:`~aether._nats.inbox.Inbox`), with
    translated errors (the stores' classes: StoreUnavailableError / StoreError).

    Args:
        nc: a connected nats-py client (not owned: it is never closed here).
        api_prefix: the JetStream API prefix (``$JS.API``; differs with domains).
        timeout: default seconds to wait for a reply.
    """

    def __init__(self, nc: Client, *, api_prefix: str = "$JS.API", timeout: float = 5.0) -> None:
        self.nc = nc
        self.api_prefix = api_prefix
        self.timeout = timeout
        self._inbox = Inbox.of(nc)
        self._inbox.hold()
        self._held = True
        self._detached: dict[str, asyncio.Future[Msg]] = {}

    @property
    def inbox(self) -> Inbox:
        """The connection's reply inbox this API sends through."""
        return self._inbox

    async def start(self) -> None:
        """Subscribe the reply inbox now (otherwise done by the first request).

        Raises:
            StoreUnavailableError / StoreError / PermissionDeniedError: the subscription failed.
        """
        await self._inbox.ensure()

    def check_connected(self, what: str) -> None:
        """Raise StoreUnavailableError at once when the connection is not up."""
        nc = self.nc
        if not nc.is_connected:
            state = "closed" if nc.is_closed else "reconnecting" if nc.is_reconnecting else "not connected"
            raise StoreUnavailableError(f"{what}: NATS connection is {state}")

    async def request(self, subject: str, payload: bytes, *, headers: dict[str, str] | None = None,
                      timeout: float | None = None, what: str = "request") -> Msg:
        """Send a request and return the reply message.

        Raises:
            StoreUnavailableError: not connected.
            AetherTimeoutError: no reply within ``timeout``.
            StoreError: no responders.
            PermissionDeniedError: the server refused the request (connected with aether.connect).
        """
        self.check_connected(what)
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        await self._inbox.exchange(subject, payload, headers, self.timeout if timeout is None else timeout, what,
                                   future)
        msg = future.result()
        hdrs = msg.headers
        if hdrs and hdrs.get("Status") == "503":
            raise StoreError(f"{what}: no responders on {subject!r} (JetStream disabled or stream missing)")
        return msg

    async def direct_last(self, stream_get: str, subject: str, *, what: str) -> tuple[int, Msg] | None:
        """The last message on ``subject`` by direct get (``stream_get``: the stream's
        ``$JS.API.DIRECT.GET.<stream>``) with its sequence, ``None`` when the subject holds none.

        Raises:
            StoreError: the server answered with another status (named in the message).
            StoreUnavailableError, AetherTimeoutError, PermissionDeniedError: as :meth:`request`.
        """
        msg = await self.request(stream_get, _encode_json({"last_by_subj": subject}), what=what)
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status is not None:
            raise StoreError(f"{what}: {status} {headers.get('Description', '')}")
        return int(headers["Nats-Sequence"]), msg

    async def request_many(self, subject: str, payload: bytes, *, timeout: float | None = None,
                           what: str = "request") -> list[Msg]:
        """Send a request whose reply is several messages ended by a status message.

        Returns every message, the final status message included.

        Raises:
            as :meth:`request`.
        """
        self.check_connected(what)
        collector = Collector()
        await self._inbox.exchange(subject, payload, None, self.timeout if timeout is None else timeout, what,
                                   collector)
        return collector.msgs

    async def direct_multi_last(self, stream_get: str, subjects: list[str], *, what: str,
                                max_bytes: int = 0) -> tuple[list[tuple[str, int, Msg]], int]:
        """The last message of each of ``subjects`` that holds any, by one batched direct get
        (``multi_last``, ADR-31; at most :data:`MULTI_LAST_MAX` subjects), as ``(subject,
        sequence, message)``; and how many the server left unsent (it stops once it has sent
        ``max_bytes``, by default its ``max_pending``).

        Raises:
            StoreError: more subjects than allowed, or the server answered with another status.
            StoreUnavailableError, AetherTimeoutError, PermissionDeniedError: as :meth:`request`.
        """
        if len(subjects) > MULTI_LAST_MAX:
            raise StoreError(f"{what}: {len(subjects)} subjects in one multi_last (at most {MULTI_LAST_MAX})")
        if not subjects:
            return [], 0
        body: dict[str, Any] = {"multi_last": subjects}
        if max_bytes:
            body["max_bytes"] = max_bytes
        msgs = await self.request_many(stream_get, _encode_json(body), what=what)
        found: list[tuple[str, int, Msg]] = []
        for msg in msgs[:-1]:
            headers = msg.headers or {}
            found.append((headers["Nats-Subject"], int(headers["Nats-Sequence"]), msg))
        end = msgs[-1].headers or {}
        status = end.get("Status")
        if status == "404" and not found:
            return [], 0
        if status != "204":
            raise StoreError(f"{what}: {status} {end.get('Description', '')}".rstrip())
        pending = end.get("Nats-Num-Pending", "0")
        return found, int(pending) if pending.isdigit() else 0

    async def direct_get_each(self, stream_get: str, seqs: list[int], *, timeout: float | None = None,
                              what: str = "direct get", with_headers: bool = False) -> list[Msg | None]:
        """The messages at ``seqs`` of the stream whose direct-get subject is ``stream_get``, by
        pipelined single direct gets (bare payloads unless ``with_headers``); ``None`` where the
        stream has no message.

        Raises:
            StoreUnavailableError: not connected.
            AetherTimeoutError: not every reply arrived within ``timeout`` seconds.
            StoreError / PermissionDeniedError: a failed or refused request.
        """
        if not seqs:
            return []
        self.check_connected(what)
        body = b'{"seq":%d}' if with_headers else b'{"seq":%d,"no_hdr":true}'
        return await self._inbox.fetch_each(stream_get, [body % seq for seq in seqs],
                                            timeout=self.timeout if timeout is None else timeout, what=what)

    async def send(self, subject: str, payload: bytes, *, headers: dict[str, str] | None = None,
                   what: str = "request") -> tuple[str, asyncio.Future[Msg]]:
        """Publish a request and return at once its token and the future of its (first) reply.

        For callers that wait on the reply alongside other events and may abandon it: they own
        the deadline and must call :meth:`forget` with the token when done. The future fails
        with :class:`PermissionDeniedError` if the server refuses the request's subject, and is
        cancelled by :meth:`aclose`.

        Raises:
            PermissionDeniedError: the server refused the reply subscription.
            StoreUnavailableError / StoreError: the publish failed.
        """
        token, future = await self._inbox.send(subject, payload, headers=headers, what=what)
        self._detached[token] = future
        return token, future

    def forget(self, token: str) -> None:
        """Stop waiting for the reply of a request made with :meth:`send`."""
        self._detached.pop(token, None)
        self._inbox.forget(token)

    async def publish_acked(self, subject: str, payload: bytes, headers: dict[str, str], *,
                            timeout: float | None = None, what: str = "publish") -> PubAck:
        """Publish to a stream and return the decoded PubAck (``error`` may be set)."""
        msg = await self.request(subject, payload, headers=headers, timeout=timeout, what=what)
        try:
            return _decode_ack(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreError(f"{what}: malformed publish ack {msg.data[:120]!r}") from exc

    async def publish_nowait(self, subject: str, payload: bytes, headers: dict[str, str],
                             what: str = "publish") -> None:
        """Publish without a reply (used inside atomic batches)."""
        try:
            await self.nc.publish(subject, payload, headers=headers)
        except Exception as exc:
            raise translate_nats_error(exc, what) from exc

    async def api(self, call: str, body: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Call ``$JS.API.<call>`` with a JSON body and return the decoded JSON reply.

        Raises:
            JetStreamApiError: the API replied with an error (code and description kept).
        """
        payload = _encode_json(body) if body is not None else b""
        msg = await self.request(f"{self.api_prefix}.{call}", payload, timeout=timeout, what=f"JetStream {call}")
        try:
            reply = _decode_any(msg.data)
        except msgspec.DecodeError as exc:
            raise StoreError(f"JetStream {call}: malformed reply") from exc
        err = reply.get("error") if isinstance(reply, dict) else None
        if err:
            raise JetStreamApiError(call, int(err.get("code", 0)), int(err.get("err_code", 0)),
                                    str(err.get("description", "")))
        return reply

    async def aclose(self) -> None:
        """Cancel the futures of :meth:`send` and let go of the connection's inbox (unsubscribed
        when no other component uses it; the connection itself is left open)."""
        detached, self._detached = self._detached, {}
        for token, future in detached.items():
            future.cancel()
            self._inbox.forget(token)
        if self._held:
            self._held = False
            await self._inbox.release()
