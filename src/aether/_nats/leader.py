"""Reads answered by a stream's leader: what a read on a replicated stream must not miss.

Any replica of a stream may answer a direct get, and a follower applies a write only once it
hears that the write committed, so right after an acknowledged write a follower's answer can
lack it. nats-server 2.12+ has no request field that makes a lagging replica defer
(``min_last_seq`` was removed before 2.12.0; docs/reliability.md, finding 2). What must include
every acknowledged write asks the leader instead: ``STREAM.MSG.GET`` (one message) and
``STREAM.INFO``. While the stream has no leader (an election after a server died) the server
answers 503; these calls wait for the new leader within their timeout.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any, NamedTuple

from aether._nats import ERR_NO_MESSAGE_FOUND, JetStreamApiError, JsApi
from aether.errors import StoreError, StoreUnavailableError

__all__ = ["LeaderMessage", "leader_get", "leader_next", "leader_request"]


class LeaderMessage(NamedTuple):
    """One stored message as the stream leader returned it."""

    seq: int
    data: bytes
    headers: bytes  # the raw header block (b"" without headers)


async def leader_request(api: JsApi, call: str, body: dict[str, Any] | None = None, *,
                         timeout: float | None = None, what: str) -> dict[str, Any]:
    """A JetStream API request (``call`` after ``$JS.API.``) that waits through 503 answers (no
    stream leader right now) for at most ``timeout`` seconds (default: ``api.timeout``).

    Raises:
        StoreUnavailableError: still no leader when the time is up.
        JetStreamApiError: any other error reply.
        StoreUnavailableError / AetherTimeoutError / PermissionDeniedError: connection trouble.
    """
    deadline = time.monotonic() + (api.timeout if timeout is None else timeout)
    pause = 0.05
    while True:
        try:
            reply: dict[str, Any] = await api.api(call, body)
            return reply
        except JetStreamApiError as exc:
            if exc.code != 503:
                raise
            if time.monotonic() + pause > deadline:
                raise StoreUnavailableError(f"{what}: {exc.description}") from exc
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


async def leader_get(api: JsApi, stream: str, body: dict[str, Any], *, timeout: float | None = None,
                     what: str) -> LeaderMessage | None:
    """One message of ``stream`` (``STREAM.MSG.GET`` with ``body``: ``seq``, ``last_by_subj``,
    ``next_by_subj``), answered by its leader; None when there is no such message.

    Raises:
        StoreError: a malformed reply.
        as :func:`leader_request`.
    """
    try:
        reply = await leader_request(api, f"STREAM.MSG.GET.{stream}", body, timeout=timeout, what=what)
    except JetStreamApiError as exc:
        if exc.err_code == ERR_NO_MESSAGE_FOUND:
            return None
        raise
    message = reply.get("message") or {}
    try:
        return LeaderMessage(int(message["seq"]), base64.b64decode(message.get("data") or ""),
                             base64.b64decode(message.get("hdrs") or ""))
    except (KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"{what}: malformed message reply") from exc


async def leader_next(api: JsApi, stream: str, subject: str, after_seq: int, *, timeout: float | None = None,
                      what: str) -> LeaderMessage | None:
    """The first message on ``subject`` (wildcards allowed) stored after sequence ``after_seq``, from
    the stream leader; None when there is none.

    Raises:
        as :func:`leader_get`.
    """
    return await leader_get(api, stream, {"seq": after_seq + 1, "next_by_subj": subject}, timeout=timeout, what=what)
