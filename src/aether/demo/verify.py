"""The demo's verification: does every account's stored history tell the truth?

:func:`verify_histories` is a pure function of the stored histories and the driver's ledger of
commands, so a test can feed it a tampered history and watch it fail. It checks, per account:

1. versions are exactly 1..n (gapless, no duplicates);
2. the history starts with one ``AccountOpened`` and every event carries the id of a command
   the driver really sent, for this account, with the same operation and amount;
3. no command is stored twice (anywhere) — retries after timeouts and failovers included;
4. the balance is the sum of the events: replaying them, a withdrawal is accepted only when
   covered, rejected only when not (and the rejection records the true balance), and the
   balance never goes negative;
5. every acknowledged command is stored exactly once, at the version and with the outcome the
   node acknowledged, and the balance the node reported equals the replayed balance there;
6. optionally, the state rebuilt by the repository (snapshot + tail) equals the replay.

Unacknowledged ("in doubt") commands may be stored once or not at all, never twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from aether.aggregate import COMMAND_KEY, AggregateError, Repository
from aether.demo.bank import BankAccount
from aether.event import Event, EventStore

__all__ = ["CommandRecord", "VerificationReport", "load_histories", "verify_histories"]

_MAX_PROBLEMS = 50
_OUTCOMES = {
    "open": {"AccountOpened"},
    "deposit": {"MoneyDeposited"},
    "withdraw": {"MoneyWithdrawn", "WithdrawalRejected"},
}


class CommandRecord(msgspec.Struct, kw_only=True):
    """One command the driver sent, and what it learnt about it.

    Attributes:
        command_id / actor_id / op / amount: the command.
        acked: a node acknowledged it (ok reply).
        outcome / version / balance: from the acknowledgement (``balance`` ``None`` for a duplicate).
        refused: the node refused it with a domain error (nothing may be stored).
    """

    command_id: str
    actor_id: str
    op: str
    amount: int = 0
    acked: bool = False
    outcome: str = ""
    version: int = 0
    balance: int | None = None
    refused: bool = False


@dataclass
class VerificationReport:
    """The verdict. ``ok`` is true only when ``problems`` is empty."""

    accounts: int = 0
    events: int = 0
    commands: int = 0
    acked: int = 0
    in_doubt: int = 0
    in_doubt_stored: int = 0
    total_balance: int = 0
    rejected_withdrawals: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)


def verify_histories(histories: Mapping[str, Sequence[Event]], ledger: Iterable[CommandRecord], *,
                     rebuilt: Mapping[str, BankAccount] | None = None) -> VerificationReport:
    """Check stored bank-account histories against the ledger of commands (see the module docstring).

    Args:
        histories: actor id → its stored events, ascending, for every account the ledger names.
        ledger: every command the driver sent.
        rebuilt: actor id → the account as the repository loads it (snapshot + tail), optional.
    """
    report = VerificationReport()
    commands: dict[str, CommandRecord] = {}
    accounts: set[str] = set()
    for record in ledger:
        if record.command_id in commands:
            report.problem(f"ledger: command id {record.command_id} used twice")
        commands[record.command_id] = record
        accounts.add(record.actor_id)
    report.commands = len(commands)
    stored_at: dict[str, list[tuple[str, int]]] = {}
    for actor_id in sorted(set(histories) | accounts):
        history = histories.get(actor_id, ())
        report.accounts += 1
        report.events += len(history)
        balance = _check_account(report, actor_id, history, commands, stored_at)
        report.total_balance += balance
        if rebuilt is not None:
            account = rebuilt.get(actor_id)
            if account is None:
                report.problem(f"{actor_id}: not rebuilt by the repository")
            elif (account.version, account.balance) != (len(history), balance):
                report.problem(f"{actor_id}: repository rebuilt v{account.version} balance {account.balance}, "
                               f"replay gives v{len(history)} balance {balance}")
    for command_id, places in stored_at.items():
        if len(places) > 1:
            report.problem(f"command {command_id} stored {len(places)} times: {places}")
    for record in commands.values():
        places = stored_at.get(record.command_id, [])
        if record.acked:
            report.acked += 1
            if not places:
                report.problem(f"{record.actor_id}: acknowledged command {record.command_id} ({record.op}) "
                               "is not stored")
            elif places[0] != (record.actor_id, record.version):
                report.problem(f"{record.actor_id}: acknowledged command {record.command_id} stored at "
                               f"{places[0]}, acknowledged at version {record.version}")
        elif record.refused:
            if places:
                report.problem(f"{record.actor_id}: refused command {record.command_id} was stored")
        else:
            report.in_doubt += 1
            if places:
                report.in_doubt_stored += 1
    return report


def _check_account(report: VerificationReport, actor_id: str, history: Sequence[Event],
                   commands: Mapping[str, CommandRecord], stored_at: dict[str, list[tuple[str, int]]]) -> int:
    versions = [e.version for e in history]
    if versions != list(range(1, len(history) + 1)):
        report.problem(f"{actor_id}: versions are not 1..{len(history)}: {_brief(versions)}")
    if not history:
        report.problem(f"{actor_id}: no events stored")
        return 0
    balance = 0
    opened = 0
    for position, event in enumerate(history, start=1):
        where = f"{actor_id} v{event.version}"
        if event.actor_id != actor_id:
            report.problem(f"{where}: event belongs to {event.actor_id!r}")
        amount = event.data.get("amount", 0)
        if not isinstance(amount, int) or amount < 0:
            report.problem(f"{where}: bad amount {amount!r}")
            amount = 0
        kind = event.event_type
        if kind == "AccountOpened":
            opened += 1
            if position != 1:
                report.problem(f"{where}: AccountOpened is not the first event")
        elif opened == 0:
            report.problem(f"{where}: {kind} before the account was opened")
        if kind == "MoneyDeposited":
            balance += amount
        elif kind == "MoneyWithdrawn":
            if amount > balance:
                report.problem(f"{where}: withdrawal of {amount} accepted with balance {balance}")
            balance -= amount
        elif kind == "WithdrawalRejected":
            report.rejected_withdrawals += 1
            if amount <= balance:
                report.problem(f"{where}: withdrawal of {amount} rejected with balance {balance}")
            if event.data.get("balance") != balance:
                report.problem(f"{where}: rejection records balance {event.data.get('balance')}, "
                               f"replay gives {balance}")
        elif kind != "AccountOpened":
            report.problem(f"{where}: unknown event type {kind!r}")
        if balance < 0:
            report.problem(f"{where}: balance went negative ({balance})")
        command_id = event.metadata.get(COMMAND_KEY)
        if command_id is None:
            report.problem(f"{where}: event carries no command id")
            continue
        stored_at.setdefault(command_id, []).append((actor_id, event.version))
        record = commands.get(command_id)
        if record is None:
            report.problem(f"{where}: command {command_id} was never sent")
            continue
        if record.actor_id != actor_id:
            report.problem(f"{where}: command {command_id} was sent to {record.actor_id!r}")
        if kind not in _OUTCOMES.get(record.op, set()):
            report.problem(f"{where}: {kind} does not result from a {record.op!r} command")
        elif record.op != "open" and amount != record.amount:
            report.problem(f"{where}: amount {amount} but the command said {record.amount}")
        if record.acked and record.version == event.version:
            if record.outcome != kind:
                report.problem(f"{where}: acknowledged as {record.outcome}, stored as {kind}")
            if record.balance is not None and record.balance != balance:
                report.problem(f"{where}: node reported balance {record.balance}, replay gives {balance}")
    if opened > 1:
        report.problem(f"{actor_id}: opened {opened} times")
    return balance


def _brief(versions: list[int]) -> str:
    if len(versions) <= 12:
        return str(versions)
    duplicates = [v for v, n in Counter(versions).items() if n > 1]
    missing = sorted(set(range(1, max(versions) + 1)) - set(versions))
    return f"{len(versions)} events, duplicates {duplicates[:5]}, missing {missing[:5]}"


async def load_histories(store: EventStore, actor_ids: Iterable[str], *,
                         concurrency: int = 32) -> tuple[dict[str, list[Event]], dict[str, BankAccount]]:
    """Read every account's full history, and rebuild each with a fresh repository (snapshot + tail).

    Raises:
        AetherError: store trouble, or a history the aggregate cannot apply.
    """
    repository = Repository(store, BankAccount)
    histories: dict[str, list[Event]] = {}
    rebuilt: dict[str, BankAccount] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(actor_id: str) -> None:
        async with gate:
            histories[actor_id] = await store.get_events(actor_id)
            with contextlib.suppress(AggregateError):  # verify_histories says what is wrong with the history
                rebuilt[actor_id] = await repository.load(actor_id)

    await asyncio.gather(*(one(a) for a in actor_ids))
    return histories, rebuilt
