"""The bank-account domain of the demo and the examples, and its cluster request handler.

Events: ``AccountOpened``, ``MoneyDeposited``, ``MoneyWithdrawn`` and ``WithdrawalRejected`` —
a withdrawal beyond the balance is not an exception but a fact worth keeping.

Commands travel to the node owning the account as msgpack :class:`BankCommand` s and come back
as :class:`BankReply` s. Every command carries a ``command_id`` chosen by the caller, which the
node passes to :meth:`~aether.aggregate.Repository.execute`: a command retried after a timeout
or a failover is stored exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Literal

import msgspec

from aether.aggregate import Aggregate, EventPayload, Repository, applies
from aether.cluster.types import ActorRequest
from aether.errors import InvalidInputError
from aether.event import EventStore

if TYPE_CHECKING:
    from aether.cli.node import NodeContext

__all__ = [
    "AccountOpened",
    "BankAccount",
    "BankCommand",
    "BankReply",
    "BankService",
    "DomainError",
    "MoneyDeposited",
    "MoneyWithdrawn",
    "WithdrawalRejected",
    "bank_handler",
    "decode_reply",
    "encode_command",
]


class DomainError(InvalidInputError):
    """A command the account refuses outright (not open, already open, non-positive amount)."""


# ---- events -------------------------------------------------------------------------------------
class AccountOpened(EventPayload, frozen=True):
    owner: str


class MoneyDeposited(EventPayload, frozen=True):
    amount: int


class MoneyWithdrawn(EventPayload, frozen=True):
    amount: int


class WithdrawalRejected(EventPayload, frozen=True):
    amount: int
    balance: int
    reason: str = "insufficient funds"


# ---- the aggregate ------------------------------------------------------------------------------
class BankAccount(Aggregate):
    """A bank account: opened once, then deposits and withdrawals; the balance never goes negative."""

    aggregate_type = "BankAccount"

    owner: str = ""
    is_open: bool = False
    balance: int = 0

    def open(self, owner: str) -> None:
        if self.is_open:
            raise DomainError(f"account {self.actor_id!r} is already open")
        self.record(AccountOpened(owner=owner))

    def deposit(self, amount: int) -> None:
        self._check(amount)
        self.record(MoneyDeposited(amount=amount))

    def withdraw(self, amount: int) -> None:
        self._check(amount)
        if amount > self.balance:
            self.record(WithdrawalRejected(amount=amount, balance=self.balance))
        else:
            self.record(MoneyWithdrawn(amount=amount))

    def _check(self, amount: int) -> None:
        if not self.is_open:
            raise DomainError(f"account {self.actor_id!r} is not open")
        if amount <= 0:
            raise DomainError(f"amount must be positive, got {amount}")

    @applies(AccountOpened)
    def _opened(self, event: AccountOpened) -> None:
        self.owner = event.owner
        self.is_open = True

    @applies(MoneyDeposited)
    def _deposited(self, event: MoneyDeposited) -> None:
        self.balance += event.amount

    @applies(MoneyWithdrawn)
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        self.balance -= event.amount

    @applies(WithdrawalRejected)
    def _rejected(self, event: WithdrawalRejected) -> None:
        pass


# ---- the wire -----------------------------------------------------------------------------------
class BankCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A command for one account. ``op`` ``balance`` only reads."""

    op: Literal["open", "deposit", "withdraw", "balance"]
    command_id: str
    amount: int = 0
    owner: str = ""


class BankReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The outcome of a command.

    Attributes:
        ok: the command was accepted (its event, possibly a rejection event, is stored).
        outcome: the type of the event the command recorded.
        version: that event's version.
        balance: the balance right after that event (``None`` for a duplicate).
        duplicate: the command had already been processed (by this or another node).
        error: why the command was refused (``ok`` is false).
        node: the node that handled it.
    """

    ok: bool
    outcome: str = ""
    version: int = 0
    balance: int | None = None
    duplicate: bool = False
    error: str = ""
    node: str = ""


_encode = msgspec.msgpack.encode
_decode_command = msgspec.msgpack.Decoder(BankCommand).decode
_decode_reply = msgspec.msgpack.Decoder(BankReply).decode


def encode_command(command: BankCommand) -> bytes:
    """The command's wire form."""
    return _encode(command)


def decode_reply(payload: bytes) -> BankReply:
    """Decode a node's reply.

    Raises:
        msgspec.DecodeError / msgspec.ValidationError: not a BankReply.
    """
    return _decode_reply(payload)


class BankService:
    """Serves :class:`BankCommand` requests for the accounts a cluster node owns.

    Args:
        repository: a repository of :class:`BankAccount` (use ``cache_size`` on a node: it is
            the single writer of its accounts).
        node_id: reported in replies.
    """

    def __init__(self, repository: Repository[BankAccount], node_id: str = "") -> None:
        self.repository = repository
        self.node_id = node_id

    @classmethod
    def create(cls, store: EventStore, node_id: str = "", *, snapshot_every: int | None = 50,
               cache_size: int = 100_000) -> BankService:
        """A service on ``store`` with its own repository."""
        return cls(Repository(store, BankAccount, snapshot_every=snapshot_every, cache_size=cache_size), node_id)

    async def handle(self, request: ActorRequest) -> bytes:
        """The cluster request handler: decode, execute, reply (domain refusals are replies, not errors)."""
        try:
            command = _decode_command(request.payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _encode(BankReply(ok=False, error=f"malformed command: {exc}", node=self.node_id))
        return _encode(await self.execute(request.actor_id, command))

    async def execute(self, actor_id: str, command: BankCommand) -> BankReply:
        """Run one command on ``actor_id``.

        Raises:
            AetherError: store trouble (the caller may retry with the same command id).
        """
        repo = self.repository
        if command.op == "balance":
            account = await repo.load(actor_id)
            return BankReply(ok=True, version=account.version, balance=account.balance, node=self.node_id)
        action = _ACTIONS[command.op]
        try:
            result = await repo.execute(actor_id, lambda account: action(account, command),
                                        command_id=command.command_id)
        except DomainError as exc:
            return BankReply(ok=False, error=str(exc), node=self.node_id)
        account = result.aggregate
        if result.duplicate:
            version = account.processed_version(command.command_id) or 0
            stored = await repo.store.get_events(actor_id, version) if version else []
            outcome = stored[0].event_type if stored else ""
            return BankReply(ok=True, outcome=outcome, version=version, duplicate=True, node=self.node_id)
        event = result.events[-1]
        return BankReply(ok=True, outcome=event.event_type, version=event.version, balance=account.balance,
                         node=self.node_id)


_ACTIONS: dict[str, Callable[[BankAccount, BankCommand], None]] = {
    "open": lambda account, c: account.open(c.owner or account.actor_id),
    "deposit": lambda account, c: account.deposit(c.amount),
    "withdraw": lambda account, c: account.withdraw(c.amount),
}



def _int_setting(options: Mapping[str, str], key: str, default: str) -> int:
    raw = options.get(key, default)
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInputError(f"--set {key}={raw}: expected a whole number") from None
    if value < 0:
        raise InvalidInputError(f"--set {key}={raw}: expected a number >= 0")
    return value


def bank_handler(context: NodeContext) -> Callable[[ActorRequest], Awaitable[bytes]]:
    """Handler factory of ``aether node`` (the default): host bank accounts on a cluster node.

    Keeps accounts cached while the node owns them (it is their single writer), forgets them
    when their shard moves away, and flushes pending snapshots when the node stops.
    Settings (``--set``): ``snapshot_every`` (default 50), ``cache_size`` (default 100000).
    """
    snapshot_every = _int_setting(context.options, "snapshot_every", "50") or None
    cache_size = _int_setting(context.options, "cache_size", "100000")
    service = BankService.create(context.store, context.node_id, snapshot_every=snapshot_every,
                                 cache_size=cache_size)
    node = context.node

    def forget(shards: frozenset[int]) -> None:
        service.repository.forget_if(lambda actor_id: node.shard_for(actor_id) in shards)

    node.on_shards_released(forget)
    context.on_close(service.repository.aclose)
    return service.handle
