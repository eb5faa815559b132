"""The demo's load driver: concurrent bank commands through the cluster, and the ledger of what it sent."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import msgspec

from aether._ids import new_id
from aether.demo.bank import BankCommand, decode_reply, encode_command
from aether.demo.verify import CommandRecord
from aether.errors import AetherError

__all__ = ["Driver", "Requester"]


class Requester(Protocol):
    """What the driver sends requests through (a ClusterClient or a ClusterManager)."""

    async def request(self, actor_id: str, payload: bytes, *, timeout: float | None = None) -> bytes: ...


class Driver:
    """Sends commands with caller-chosen ids, retries them on any failure, records every outcome.

    Args:
        client: routes requests to the node owning each account.
        accounts: the account ids.
        concurrency: commands in flight at once.
        request_timeout: seconds per attempt (the cluster retries across failovers inside it).
        attempts: attempts per command before it is left "in doubt".
        seed: random seed of the workload.
    """

    # what happened so far (class-level zeros: each driver's own counts start there)
    acked = 0  # commands acknowledged
    refused = 0  # commands answered with an error
    retries = 0  # commands sent again after an error or a timeout
    in_doubt = 0  # commands never acknowledged within their attempts
    duplicates = 0  # acknowledged as already stored (a re-sent command, stored once)
    rejected_withdrawals = 0
    last_error = ""

    def __init__(self, client: Requester, accounts: Sequence[str], *, concurrency: int = 32,
                 request_timeout: float = 3.0, attempts: int = 5, seed: int | None = None) -> None:
        self.client = client
        self.accounts = list(accounts)
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self.attempts = attempts
        self.rng = random.Random(seed)
        self.ledger: dict[str, CommandRecord] = {}
        self.started = time.monotonic()
        self._acks: deque[float] = deque()
        self._stop = asyncio.Event()
        self._slowest = 0.0

    # ---- figures -----------------------------------------------------------------------------
    def rate(self, window: float = 1.0) -> float:
        """Acknowledged commands (= events stored) per second over the last ``window`` seconds."""
        now = time.monotonic()
        acks = self._acks
        while acks and acks[0] < now - 10.0:
            acks.popleft()
        recent = sum(1 for t in reversed(acks) if t >= now - window) if acks else 0
        return recent / window

    @property
    def sent(self) -> int:
        return len(self.ledger)

    @property
    def slowest(self) -> float:
        """The longest time one command took to be acknowledged (retries included), in seconds."""
        return self._slowest

    # ---- sending -------------------------------------------------------------------------------
    async def send(self, actor_id: str, op: str, amount: int = 0) -> CommandRecord:
        """Send one command until acknowledged, refused, or out of attempts."""
        record = CommandRecord(command_id=new_id(), actor_id=actor_id, op=op, amount=amount)
        self.ledger[record.command_id] = record
        payload = encode_command(BankCommand(op=op, command_id=record.command_id, amount=amount,  # type: ignore[arg-type]
                                             owner=f"owner of {actor_id}" if op == "open" else ""))
        started = time.monotonic()
        for attempt in range(self.attempts):
            if attempt:
                self.retries += 1
                await asyncio.sleep(min(0.05 * 2 ** attempt, 0.5))
            try:
                raw = await self.client.request(actor_id, payload, timeout=self.request_timeout)
                reply = decode_reply(raw)
            except (AetherError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                continue
            if not reply.ok:
                record.refused = True
                self.refused += 1
                self.last_error = reply.error
                return record
            record.acked = True
            record.outcome, record.version, record.balance = reply.outcome, reply.version, reply.balance
            self.acked += 1
            self.duplicates += reply.duplicate
            self.rejected_withdrawals += reply.outcome == "WithdrawalRejected"
            now = time.monotonic()
            self._acks.append(now)
            self._slowest = max(self._slowest, now - started)
            return record
        self.in_doubt += 1
        return record

    async def open_accounts(self) -> None:
        """Open every account (concurrently)."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(actor_id: str) -> None:
            async with gate:
                await self.send(actor_id, "open")
                await self.send(actor_id, "deposit", self.rng.randint(50, 500))

        await asyncio.gather(*(one(a) for a in self.accounts))

    async def run(self, duration: float) -> None:
        """Deposits and withdrawals on random accounts for ``duration`` seconds (or until :meth:`stop`)."""
        deadline = time.monotonic() + duration

        async def worker() -> None:
            rng = self.rng
            while not self._stop.is_set() and time.monotonic() < deadline:
                actor_id = rng.choice(self.accounts)
                if rng.random() < 0.55:
                    await self.send(actor_id, "deposit", rng.randint(1, 200))
                else:
                    await self.send(actor_id, "withdraw", rng.randint(1, 400))

        workers = [asyncio.ensure_future(worker()) for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            for task in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def stop(self) -> None:
        """Let the workers finish their current command and stop."""
        self._stop.set()
