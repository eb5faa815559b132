"""Coalesce the head reads of concurrent activations into batched store calls.

When many actors are loaded at once (a node that has just taken over shards after a failover, a
cold start under traffic), each load begins by asking the store for the actor's latest version
and newest snapshot. :class:`HeadBatcher` gathers the actors asked for while a batch is being
read and asks for them together with :meth:`~aether.event.HeadReader.get_heads` (one server
request per 512 actors on a single-replica JetStream stream instead of two per actor), like a
group commit: a lone load is read at once; loads that arrive while reads are in flight wait for
the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from aether.errors import StoreError
from aether.event import ActorHead

__all__ = ["HeadBatcher"]

_MAX_BATCH = 512
_MAX_IN_FLIGHT = 2


class HeadBatcher:
    """Reads actors' heads through ``fetch``, batching the actors asked for concurrently.

    A failed batch of several actors is retried actor by actor, so one actor's error (a corrupt
    message) reaches only its own loads.
    """

    def __init__(self, fetch: Callable[[Sequence[str]], Awaitable[dict[str, ActorHead]]]) -> None:
        self._fetch = fetch
        self._waiting: dict[str, list[asyncio.Future[ActorHead]]] = {}
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def get(self, actor_id: str) -> ActorHead:
        """The actor's head, read alone or in a batch with other actors asked for meanwhile.

        Raises:
            whatever the store's ``get_heads`` raises for this actor.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # used from another event loop: what the old one held is gone
            self._loop, self._waiting, self._in_flight, self._scheduled = loop, {}, 0, False
        future: asyncio.Future[ActorHead] = loop.create_future()
        self._waiting.setdefault(actor_id, []).append(future)
        if not self._scheduled and self._in_flight < _MAX_IN_FLIGHT:
            # start after the current loop iteration: loads started in it join this batch
            self._scheduled = True
            loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        self._scheduled = False
        while self._waiting and self._in_flight < _MAX_IN_FLIGHT:
            batch: dict[str, list[asyncio.Future[ActorHead]]] = {}
            for actor_id in list(self._waiting)[:_MAX_BATCH]:
                batch[actor_id] = self._waiting.pop(actor_id)
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._read(batch), name="aether-repository-heads")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _read(self, batch: dict[str, list[asyncio.Future[ActorHead]]]) -> None:
        loop = self._loop
        try:
            live = [actor_id for actor_id, futures in batch.items() if _waiting(futures)]
            try:
                heads = await self._fetch(live) if live else {}
            except Exception as exc:
                if len(live) == 1:
                    _settle(batch[live[0]], exc)
                    return
                heads = {}
                for actor_id in live:  # one by one: only the actor at fault fails
                    try:
                        heads.update(await self._fetch([actor_id]))
                    except Exception as one_exc:
                        _settle(batch[actor_id], one_exc)
            for actor_id, head in heads.items():
                _settle(batch.get(actor_id, []), head)
        except BaseException:  # cancelled (the loop is closing): nobody waits in vain
            if loop is not None and not loop.is_closed():
                for futures in batch.values():
                    for future in futures:
                        future.cancel()
            raise
        finally:
            if loop is self._loop and loop is not None and not loop.is_closed():  # else: reset by get()
                self._in_flight -= 1
                for futures in batch.values():
                    if _waiting(futures):  # an id the store left out of its answer
                        _settle(futures, StoreError("the store's get_heads returned no head for this actor"))
                if self._waiting and not self._scheduled:
                    self._start()


def _waiting(futures: list[asyncio.Future[ActorHead]]) -> bool:
    """Whether a load still waits on one of ``futures`` (not all were answered or cancelled)."""
    return not all(future.done() for future in futures)


def _settle(futures: list[asyncio.Future[ActorHead]], outcome: ActorHead | BaseException) -> None:
    for future in futures:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
