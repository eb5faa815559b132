"""Bank account: an event-sourced aggregate with snapshots, conflict retry and an upcaster.

Run it as-is (an embedded NATS server is started when no URL is given)::

    python examples/bank_account.py [nats://127.0.0.1:4222]

The domain of ``eventstorming/worked-example-bank.md`` (and of ``aether demo``).

What it shows:

1. An ``Account`` aggregate with typed events; a withdrawal beyond the balance is recorded as
   a ``WithdrawalRejected`` event, not raised.
2. A ``Repository`` that snapshots every 10 events in the background; loading reads the
   snapshot plus only the events after it.
3. Two services (two connections, two repositories) racing on the same account: conflicts are
   detected by the server and retried; not a single deposit is lost.
4. An event written with an old schema (``cents``) is read through an upcaster, never rewritten.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from aether.aggregate import Aggregate, EventPayload, Repository, Upcasters, applies
from aether.connect import connect
from aether.event import Event
from aether.store import JetStreamEventStore
from aether.testing import nats_url_or_embedded

# ---- the domain ----------------------------------------------------------------------------------
upcasters = Upcasters()


@upcasters.register("MoneyDeposited", 1)
def _cents_to_amount(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 stored cents; version 2 stores whole units."""
    return {"amount": data["cents"] // 100}


class AccountOpened(EventPayload, frozen=True):
    owner: str


class MoneyDeposited(EventPayload, frozen=True):
    schema_version = 2
    amount: int


class MoneyWithdrawn(EventPayload, frozen=True):
    amount: int


class WithdrawalRejected(EventPayload, frozen=True):
    amount: int
    balance: int


class Account(Aggregate):
    upcasters = upcasters

    owner: str = ""
    balance: int = 0

    def open(self, owner: str) -> None:
        if self.version:
            raise ValueError("already open")
        self.record(AccountOpened(owner=owner))

    def deposit(self, amount: int) -> None:
        if amount <= 0:
            raise ValueError("amount must be positive")
        self.record(MoneyDeposited(amount=amount))

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            self.record(WithdrawalRejected(amount=amount, balance=self.balance))
        else:
            self.record(MoneyWithdrawn(amount=amount))

    @applies(AccountOpened)
    def _opened(self, e: AccountOpened) -> None:
        self.owner = e.owner

    @applies(MoneyDeposited)
    def _deposited(self, e: MoneyDeposited) -> None:
        self.balance += e.amount

    @applies(MoneyWithdrawn)
    def _withdrawn(self, e: MoneyWithdrawn) -> None:
        self.balance -= e.amount

    @applies(WithdrawalRejected)
    def _rejected(self, e: WithdrawalRejected) -> None:
        pass


# ---- running it ----------------------------------------------------------------------------------
async def main() -> None:
    async with nats_url_or_embedded(sys.argv[1] if len(sys.argv) > 1 else None) as url:
        nc1, nc2 = await connect(url), await connect(url)
        store1 = await JetStreamEventStore.create(nc1, "bank-example")
        store2 = await JetStreamEventStore.create(nc2, "bank-example")
        # Two writers racing on one account: under load one may lose several times in a row, so
        # both retry generously (the default, 5, suits commands that rarely collide).
        teller = Repository(store1, Account, snapshot_every=10, max_attempts=20)
        atm = Repository(store2, Account, max_attempts=20)
        account = f"acct-{os.getpid()}"

        await teller.execute(account, lambda a: a.open("Ada"))
        await teller.execute(account, lambda a: a.deposit(100))
        rejected = await teller.execute(account, lambda a: a.withdraw(500))
        print(f"withdraw 500 with balance 100 -> {rejected.events[0].event_type} (recorded, not raised)")

        # two services racing on the same account
        async def deposits(repo: Repository[Account], n: int) -> int:
            retries = 0
            for _ in range(n):
                result = await repo.execute(account, lambda a: a.deposit(1))
                retries += result.attempts - 1
            return retries

        retries = await asyncio.gather(deposits(teller, 25), deposits(atm, 25))
        print(f"50 concurrent deposits from 2 services: {sum(retries)} conflicts detected and retried")

        await teller.flush_snapshots()
        snapshot = await store1.get_latest_snapshot(account)
        fresh = Repository(store1, Account)
        loaded = await fresh.load(account)
        print(f"snapshot at version {snapshot.version if snapshot else 0}; load replayed "
              f"{fresh.stats.events_replayed} events after it -> version {loaded.version}, balance {loaded.balance}")
        assert loaded.balance == 150, loaded.balance

        # an event stored long ago with the old schema is read through the upcaster
        latest = await store1.get_latest_version(account)
        await store1.save_event(Event("MoneyDeposited", account, latest + 1, {"cents": 2500}))
        upgraded = await fresh.load(account)
        print(f"old-schema event {{'cents': 2500}} upcast on read -> balance {upgraded.balance}")
        assert upgraded.balance == 175

        for closer in (teller.aclose, atm.aclose, store1.aclose, store2.aclose, nc1.close, nc2.close):
            await closer()
    print("bank account example: OK")


if __name__ == "__main__":
    asyncio.run(main())
