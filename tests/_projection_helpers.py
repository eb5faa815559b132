"""Helpers shared by the projection tests (not collected by pytest)."""

from __future__ import annotations

import asyncio
import random

from aether.event import Event
from aether.store import JetStreamEventStore

__all__ = ["balances_from_store", "populate_accounts"]


def account_events(actor_id: str, first_version: int, count: int, rng: random.Random) -> list[Event]:
    events = []
    for version in range(first_version, first_version + count):
        kind = "Deposited" if version == 1 or rng.random() < 0.7 else "Withdrawn"
        events.append(Event(kind, actor_id, version, {"amount": rng.randint(1, 100)}))
    return events


async def populate_accounts(store: JetStreamEventStore, *, accounts: int, per_account: int, seed: int = 7,
                            prefix: str = "acct-", batch: int = 25, first_version: int = 1) -> None:
    """Append ``per_account`` events to each of ``accounts`` accounts, interleaved, in atomic batches."""
    rng = random.Random(seed)
    plans = {f"{prefix}{i}": account_events(f"{prefix}{i}", first_version, per_account, rng) for i in range(accounts)}
    gate = asyncio.Semaphore(16)

    async def write(events: list[Event]) -> None:
        async with gate:
            await store.save_events(events)

    for start in range(0, per_account, batch):
        await asyncio.gather(*(write(events[start:start + batch]) for events in plans.values()))


async def balances_from_store(store: JetStreamEventStore) -> dict[str, tuple[int, int]]:
    """``{actor: (balance, event count)}`` computed by reading every history from the store."""
    out: dict[str, tuple[int, int]] = {}
    for actor_id in await store.actor_ids():
        events = await store.get_events(actor_id)
        balance = sum(e.data["amount"] if e.event_type == "Deposited" else -e.data["amount"] for e in events)
        out[actor_id] = (balance, len(events))
    return out
