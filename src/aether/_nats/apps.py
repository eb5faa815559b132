"""What the command-line tools ask of nats-py beyond the JetStream API calls of :class:`JsApi`:
following a stream with an ordered push consumer (``aether events tail``).

nats-py's consumer configuration types stay here, so the applications import no nats-py at run time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from nats.js.api import ConsumerConfig, DeliverPolicy

from aether._nats import translate_nats_error

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

__all__ = ["follow_ordered", "stream_last_sequence"]


async def stream_last_sequence(nc: Client, stream: str) -> int:
    """The sequence of the last message in ``stream`` (0 when it is empty).

    Raises:
        AetherError: the stream does not exist or NATS failed (translated; never a nats-py error).
    """
    try:
        info = await nc.jetstream().stream_info(stream)
    except Exception as exc:
        raise translate_nats_error(exc, f"stream {stream!r}") from exc
    return int(info.state.last_seq)


async def follow_ordered(nc: Client, subject: str, *, stream: str, start_sequence: int,
                         deliver: Callable[[Msg], Awaitable[None]]) -> Subscription:
    """Deliver the messages of ``stream`` on ``subject`` to ``deliver`` through an ordered push
    consumer, from ``start_sequence`` (0: from the first message). Unsubscribe to stop.

    Raises:
        AetherError: the stream does not exist or NATS failed (translated; never a nats-py error).
    """
    try:
        if start_sequence:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_sequence)
            return await nc.jetstream().subscribe(subject, stream=stream, cb=deliver, ordered_consumer=True,
                                                  config=config)
        return await nc.jetstream().subscribe(subject, stream=stream, cb=deliver, ordered_consumer=True,
                                              deliver_policy=DeliverPolicy.ALL)
    except Exception as exc:
        raise translate_nats_error(exc, f"stream {stream!r}") from exc
