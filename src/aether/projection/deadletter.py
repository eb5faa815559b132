"""The dead-letter stream: events a projection gave up on, each with the reason.

A dead letter is written (and acknowledged by the server) *before* the projection moves past
the event, so nothing is ever skipped silently. Each source stream has its own dead-letter
stream, ``__DLQ_<source stream>`` by default (store streams never start with ``__``, so the
name cannot collide with one), holding subjects ``<prefix>.__dlq.<source stream>.<projection>``.
Writes carry ``Nats-Msg-Id = <projection>:<sequence>``, so a projection that crashes after
writing and retries later does not duplicate the letter (within the duplicate window).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from aether._nats import JsApi, api_error, check_client
from aether._nats.streams import create_or_adopt
from aether.codec import decode_event
from aether.errors import StoreError
from aether.event import Event, utc_now
from aether.names import encode_token
from aether.projection.source import EventSource

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["DeadLetter", "DeadLetterQueue", "dead_letter_stream_name"]

_NS = 1_000_000_000
_PAGE = 256


class DeadLetter(msgspec.Struct, frozen=True):
    """An event (or a message that is not an event) a projection could not handle.

    Attributes:
        projection: the projection's name.
        stream: the source stream.
        sequence: the message's position in the source stream.
        subject: the message's subject in the source stream.
        reason: why it was dead-lettered (the handler's last error, or why it is corrupt).
        attempts: handler calls made (0 for a message that could not be decoded).
        payload: the message's raw bytes.
        failed_at: when it was dead-lettered (UTC).
        event_type: the event's type, when the message decoded.
        actor_id: the event's actor, when the message decoded.
        node: the node that dead-lettered it.
        dlq_sequence: its sequence in the dead-letter stream (set when read back).
    """

    projection: str
    stream: str
    sequence: int
    subject: str
    reason: str
    attempts: int
    payload: bytes
    failed_at: datetime = msgspec.field(default_factory=utc_now)
    event_type: str | None = None
    actor_id: str | None = None
    node: str = ""
    dlq_sequence: int = 0

    def event(self) -> Event:
        """Decode the payload as an event.

        Raises:
            CorruptEventError: the payload is not an Aether event.
        """
        return decode_event(self.payload, stream=self.stream, sequence=self.sequence)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(DeadLetter).decode
_encode_json = msgspec.json.encode


def dead_letter_stream_name(source_stream: str) -> str:
    """The default dead-letter stream of a source stream."""
    return f"__DLQ_{source_stream}"


class DeadLetterQueue:
    """Writes and reads the dead letters of one source stream.

    Args:
        nc: a connected nats-py client (not owned).
        source: the source stream.
        stream: the dead-letter stream's name (default :func:`dead_letter_stream_name`).
        replicas: its replicas when it is created.
        api: an existing request helper to share (internal); one is created when omitted.
    """

    def __init__(self, nc: Client, source: EventSource, *, stream: str | None = None, replicas: int = 1,
                 api: JsApi | None = None) -> None:
        check_client(nc, "DeadLetterQueue")
        self._own_api = api is None
        self._api = api if api is not None else JsApi(nc)
        self.source = source
        self.stream = stream or dead_letter_stream_name(source.stream)
        self._replicas = replicas
        self._base = f"{source.subject_prefix}.__dlq.{source.stream}."

    def subject(self, projection: str) -> str:
        """The subject holding ``projection``'s dead letters."""
        return self._base + encode_token(projection)

    async def ensure(self) -> None:
        """Create the dead-letter stream when missing.

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        config = {
            "name": self.stream,
            "subjects": [self._base + "*"],
            "retention": "limits",
            "storage": "file",
            "num_replicas": self._replicas,
            "discard": "old",
            "duplicate_window": 120 * _NS,
            "allow_direct": True,
        }
        await create_or_adopt(self._api, config)

    async def publish(self, letter: DeadLetter) -> int:
        """Store ``letter``; returns its sequence in the dead-letter stream.

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        subject = self.subject(letter.projection)
        msg_id = f"{encode_token(letter.projection)}:{letter.stream}:{letter.sequence}"
        ack = await self._api.publish_acked(subject, _encode(letter), {"Nats-Msg-Id": msg_id},
                                            what=f"dead-lettering sequence {letter.sequence}")
        if ack.error is not None:
            raise api_error(ack.error, f"dead-lettering sequence {letter.sequence} of {letter.stream!r}")
        return ack.seq

    async def read(self, projection: str | None = None, *, after: int = 0,
                   limit: int | None = None) -> list[DeadLetter]:
        """Dead letters (of one projection, or of all) stored after dead-letter sequence ``after``.

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        subject = self.subject(projection) if projection is not None else self._base + "*"
        out: list[DeadLetter] = []
        seq = after + 1
        what = f"reading dead letters from {self.stream!r}"
        while limit is None or len(out) < limit:
            body = _encode_json({"seq": seq, "next_by_subj": subject, "batch": _PAGE})
            try:
                msgs = await self._api.request_many(f"$JS.API.DIRECT.GET.{self.stream}", body, what=what)
            except StoreError as exc:
                if "no responders" in str(exc):  # the stream does not exist (yet): no letters
                    return out
                raise
            status_msg = msgs.pop()
            for msg in msgs:
                dlq_seq = int(msg.headers["Nats-Sequence"])  # type: ignore[index]
                seq = dlq_seq + 1
                try:
                    letter = _decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # not written by Aether
                out.append(msgspec.structs.replace(letter, dlq_sequence=dlq_seq))
            status = (status_msg.headers or {}).get("Status")
            if status == "404" or not msgs:
                break
            if status != "204":
                raise StoreError(f"{what}: {status} {(status_msg.headers or {}).get('Description', '')}")
            if (status_msg.headers or {}).get("Nats-Num-Pending", "0") == "0":
                break
        return out if limit is None else out[:limit]

    async def aclose(self) -> None:
        """Release the reply subscription this queue created (the client stays open)."""
        if self._own_api:
            await self._api.aclose()
