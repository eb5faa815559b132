"""One factory's NATS connection: the client, its event-loop thread, the streams in use, and the
"new events" listeners of the live subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from aether._nats import JsApi
from aether.connect import close as close_client
from aether.integrations.eventsourcing._loop import LoopThread
from aether.integrations.eventsourcing._settings import Settings
from aether.integrations.eventsourcing._stream import StreamStore
from aether.integrations.eventsourcing.errors import JetStreamOperationalError, JetStreamProgrammingError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["Connection"]

T = TypeVar("T")


class Connection:
    """Connects lazily (at the first recorder), runs every call on its loop thread with a bounded
    wait, and closes everything in :meth:`close`.

    Args:
        settings: the factory's settings.
        name: names the loop thread (the application's name).
    """

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self._name = name
        self._loop: LoopThread | None = None
        self._nc: Client | None = None
        self._api: JsApi | None = None
        self._stores: dict[str, StreamStore] = {}
        self._lock = threading.Lock()  # guards the listeners and the closed flag (taken by the loop thread too)
        self._connect_lock = threading.Lock()  # held while connecting (never by the loop thread)
        self._listeners: dict[str, set[threading.Event]] = {}
        self._pings: dict[str, Any] = {}
        self._waker: asyncio.Task[None] | None = None
        self._closed = False
        # a call's requests each wait at most `timeout`; a save may take a few of them in turn
        self.bound = 4 * settings.timeout + 1.0

    def run(self, coro: Coroutine[Any, Any, T], what: str, store: StreamStore | None = None) -> T:
        """Run ``coro`` on the loop thread, connecting first when needed (with ``store``, the bound
        applies to each page it reads rather than to the whole call).

        Raises:
            JetStreamOperationalError: the factory is closed, the server cannot be reached, or no
                result within the bound; and as ``coro`` raises (translated).
        """
        loop = self._ensure_connected(coro)
        return loop.run(coro, self.bound, what, None if store is None else store.last_progress)

    def _ensure_connected(self, pending: Coroutine[Any, Any, Any] | None = None) -> LoopThread:
        with self._connect_lock:
            if self._closed:
                if pending is not None:
                    pending.close()
                raise JetStreamOperationalError("the infrastructure factory is closed")
            if self._loop is None:
                self._loop = LoopThread(f"aether-eventsourcing-{self._name or 'app'}")
            loop = self._loop
            if self._nc is None:
                options = self.settings.connect
                try:
                    self._nc = loop.run(options.connect(), options.connect_timeout + 2.0, "connecting to NATS")
                except BaseException as exc:
                    if pending is not None:
                        pending.close()
                    if isinstance(exc, JetStreamProgrammingError):  # refused credentials: a connection failure
                        raise JetStreamOperationalError(str(exc)) from exc.__cause__
                    raise
                self._api = JsApi(self._nc, timeout=self.settings.timeout)
            return loop

    def store(self, stream: str, *, create: bool) -> StreamStore:
        """The stream's store, after checking (or creating) the stream on the server.

        Raises:
            JetStreamProgrammingError: the stream is missing and ``create`` is false, or incompatible.
            JetStreamOperationalError: server trouble.
        """
        return self.run(self._store(stream, create), f"opening stream {stream!r}")

    async def _store(self, stream: str, create: bool) -> StreamStore:
        store = self._stores.get(stream)
        if store is None:
            assert self._nc is not None and self._api is not None
            store = StreamStore(self._nc, self._api, stream)
        await store.ensure(create=create, replicas=self.settings.replicas, storage=self.settings.storage)
        return self._stores.setdefault(stream, store)

    # ---- live subscriptions -------------------------------------------------------------------
    def listen(self, store: StreamStore, event: threading.Event) -> None:
        """Set ``event`` whenever a save to ``store``'s stream is acknowledged (any process using
        this module pings), and every ``poll_interval`` seconds in any case.

        Raises:
            JetStreamOperationalError: the factory is closed or the server is unreachable.
        """
        with self._lock:
            self._listeners.setdefault(store.stream, set()).add(event)
        try:
            self.run(self._watch(store), f"subscribing to stream {store.stream!r}")
        except BaseException:
            self.unlisten(store, event)
            raise

    def unlisten(self, store: StreamStore, event: threading.Event) -> None:
        with self._lock:
            self._listeners.get(store.stream, set()).discard(event)

    def _wake(self, stream: str | None) -> None:
        with self._lock:
            if stream is None:
                events = [e for group in self._listeners.values() for e in group]
            else:
                events = list(self._listeners.get(stream, ()))
        for event in events:
            event.set()

    async def _watch(self, store: StreamStore) -> None:
        if store.stream not in self._pings:
            assert self._nc is not None
            stream = store.stream

            async def on_ping(msg: Msg) -> None:
                self._wake(stream)

            self._pings[stream] = await self._nc.subscribe(store.notify_subject, cb=on_ping)
        if self._waker is None:
            self._waker = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            self._wake(None)

    # ---- closing --------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection and stop the loop thread (idempotent; never raises)."""
        with self._connect_lock:
            if self._closed:
                return
            self._closed = True
            loop = self._loop
        if loop is not None:
            loop.close(self._shutdown(), timeout=self.settings.timeout + 2.0)
        self._wake(None)  # live subscriptions pull once more, fail, and end

    async def _shutdown(self) -> None:
        # calls still in flight (other threads) end with "cancelled (the factory is closing)"
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for sub in self._pings.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._api is not None:
            await self._api.aclose()
        if self._nc is not None:
            await close_client(self._nc)
