"""Decoding one stream message into an event, with the subject cross-check."""

from __future__ import annotations

from aether.codec import decode_event
from aether.errors import CorruptEventError, InvalidNameError
from aether.event import Event
from aether.names import encode_token

__all__ = ["decode_stored"]


def decode_stored(data: bytes, subject: str, sequence: int, stream: str, prefix_len: int) -> Event:
    """Decode the message stored at ``sequence`` under ``subject`` (an event subject).

    Raises:
        CorruptEventError: not an Aether event, or an event of another actor than the subject's.
    """
    event = decode_event(data, stream=stream, sequence=sequence)
    token = subject[prefix_len:]
    actor_id = event.actor_id
    if token != actor_id:
        try:
            matches = token == encode_token(actor_id)
        except InvalidNameError:
            matches = False
        if not matches:
            raise CorruptEventError(f"an event of actor {actor_id!r} stored under subject {subject!r}",
                                    stream=stream, sequence=sequence)
    return event
