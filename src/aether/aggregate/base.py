"""The aggregate base: actor state rebuilt by applying its events in order.

A subclass keeps its state in ordinary attributes, changes them only in *handlers*
(methods marked with :func:`applies`), and decides new events in *command methods* that call
:meth:`Aggregate.record`::

    class Deposited(EventPayload):
        amount: int

    class Account(Aggregate):
        balance: int = 0

        def deposit(self, amount: int) -> None:          # a command: validate, then record
            if amount <= 0:
                raise ValueError("amount must be positive")
            self.record(Deposited(amount=amount))

        @applies(Deposited)                               # a handler: no checks, no I/O
        def _deposited(self, event: Deposited) -> None:
            self.balance += event.amount

:meth:`record` applies the event at once (so a command sees its own effects) and queues it
for the :class:`~aether.aggregate.Repository` to save atomically.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import msgspec

from aether.aggregate.errors import AggregateError, EventSchemaError, UnknownEventError
from aether.aggregate.payload import SCHEMA_KEY, EventPayload, decode_payload, encode_payload
from aether.aggregate.upcast import Upcasters
from aether.errors import InvalidInputError
from aether.event import Event

__all__ = ["COMMAND_KEY", "Aggregate", "applies"]

COMMAND_KEY = "aether.command_id"
"""Event metadata key holding the id of the command that recorded the event (idempotency)."""

F = TypeVar("F", bound=Callable[..., None])
A = TypeVar("A", bound="Aggregate")

_RESERVED = frozenset({"actor_id", "version"})
_Handler = tuple[Callable[..., None], "type[EventPayload] | None"]


def applies(kind: type[EventPayload] | str) -> Callable[[F], F]:
    """Mark an aggregate method as the handler of an event type.

    ``kind`` is an :class:`~aether.aggregate.EventPayload` subclass (the handler receives the
    decoded payload) or an event type name (the handler receives the raw :class:`~aether.Event`).
    """
    if isinstance(kind, str):
        if not kind:
            raise InvalidInputError("event type must be a non-empty str")
    elif not (isinstance(kind, type) and issubclass(kind, EventPayload)):
        raise InvalidInputError(f"applies() takes an EventPayload subclass or an event type name, got {kind!r}")

    def decorator(function: F) -> F:
        function.__aether_applies__ = kind  # type: ignore[attr-defined]
        return function

    return decorator


class Aggregate:
    """Base class of event-sourced actor state.

    Class attributes a subclass may set:
        aggregate_type: name stored in snapshots (default: the class's qualified name).
        snapshot_version: bump when the state layout changes; older snapshots are then
            ignored and the state is rebuilt from the events.
        ignore_unknown_events: skip events without a handler instead of raising.
        upcasters: an :class:`~aether.aggregate.Upcasters` registry applied to every loaded event.
        idempotency_window: how many recent command ids are remembered for de-duplication.

    Attributes:
        actor_id: the actor this state belongs to.
        version: the version of the last applied event (0 for a new actor).
    """

    aggregate_type: ClassVar[str] = "Aggregate"
    snapshot_version: ClassVar[int] = 1
    ignore_unknown_events: ClassVar[bool] = False
    upcasters: ClassVar[Upcasters | None] = None
    idempotency_window: ClassVar[int] = 1000
    _handlers: ClassVar[dict[str, _Handler]] = {}
    _state_hints: ClassVar[dict[str, Any] | None] = None

    def __init__(self, actor_id: str) -> None:
        self.actor_id = actor_id
        self.version = 0
        self._pending: list[Event] = []
        self._commands: dict[str, int] = {}
        self._context: dict[str, str] = {}
        self._snapshot_base = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "aggregate_type" not in cls.__dict__:
            cls.aggregate_type = cls.__qualname__
        handlers: dict[str, _Handler] = {}
        for klass in reversed(cls.__mro__):
            own: set[str] = set()
            for value in vars(klass).values():
                kind = getattr(value, "__aether_applies__", None)
                if kind is None:
                    continue
                if isinstance(kind, str):
                    event_type, payload_type = kind, None
                else:
                    event_type, payload_type = kind.event_type, kind
                if event_type in own:
                    raise InvalidInputError(f"{cls.__qualname__}: two handlers for event type {event_type!r}")
                own.add(event_type)
                handlers[event_type] = (value, payload_type)
        cls._handlers = handlers
        cls._state_hints = None

    # ---- commands ------------------------------------------------------------------------
    def record(self, event: EventPayload | str, data: Mapping[str, Any] | None = None, *,
               metadata: Mapping[str, str] | None = None) -> Event:
        """Decide a new event: apply it now and queue it for saving.

        Args:
            event: a typed payload, or an event type name (then ``data`` is its payload).
            data: the payload of an untyped event.
            metadata: extra metadata for this event (the repository adds the command's own).

        Returns:
            the new :class:`~aether.Event` (version = current version + 1).

        Raises:
            InvalidInputError: bad arguments or a payload that cannot be encoded.
            UnknownEventError / EventSchemaError: the aggregate cannot apply the event.
        """
        meta = dict(self._context)
        if isinstance(event, EventPayload):
            if data is not None:
                raise InvalidInputError("record(payload) takes no data argument")
            event_type = event.event_type
            payload = encode_payload(event)
            if event.schema_version != 1:
                meta[SCHEMA_KEY] = str(event.schema_version)
        elif isinstance(event, str) and event:
            event_type = event
            payload = dict(data) if data is not None else {}
        else:
            raise InvalidInputError(f"record() takes an EventPayload or an event type name, got {event!r}")
        if metadata:
            meta.update(metadata)
        new = Event(event_type, self.actor_id, self.version + 1, payload, meta)
        self._dispatch(new, event if isinstance(event, EventPayload) else None)
        self._pending.append(new)
        return new

    @property
    def pending_events(self) -> list[Event]:
        """Events recorded since the last save (a copy)."""
        return list(self._pending)

    def has_processed(self, command_id: str) -> bool:
        """Whether a command with this id already recorded events (within the idempotency window)."""
        return command_id in self._commands

    def processed_version(self, command_id: str) -> int | None:
        """The version of the last event recorded by command ``command_id`` (``None`` if unknown)."""
        return self._commands.get(command_id)

    # ---- rebuilding ------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Apply one stored event (upcast first); its version must be ``version + 1``.

        Raises:
            AggregateError: the event belongs to another actor or leaves a gap in the history.
            UnknownEventError: no handler for the event type.
            EventSchemaError: the payload does not fit its type, or an upcaster failed.
        """
        if event.actor_id != self.actor_id:
            raise AggregateError(f"event of actor {event.actor_id!r} applied to actor {self.actor_id!r}")
        if event.version != self.version + 1:
            raise AggregateError(
                f"history of {self.actor_id!r} is not consecutive: expected version {self.version + 1}, "
                f"got {event.version}"
            )
        upcasters = self.upcasters
        if upcasters is not None:
            event = upcasters.upcast(event)
        self._dispatch(event)

    def _dispatch(self, event: Event, typed: EventPayload | None = None) -> None:
        entry = self._handlers.get(event.event_type)
        if entry is None:
            if not self.ignore_unknown_events:
                raise UnknownEventError(self.actor_id, event.version, event.event_type, self.aggregate_type)
        else:
            handler, payload_type = entry
            if payload_type is None:
                handler(self, event)
            elif type(typed) is payload_type:
                handler(self, typed)
            else:
                try:
                    payload = decode_payload(event.data, payload_type)
                except msgspec.ValidationError as exc:
                    raise EventSchemaError(event.actor_id, event.version, event.event_type,
                                           f"payload does not fit {payload_type.__name__}: {exc}") from exc
                handler(self, payload)
        self.version = event.version
        command_id = event.metadata.get(COMMAND_KEY)
        if command_id is not None:
            commands = self._commands
            commands[command_id] = event.version
            if len(commands) > self.idempotency_window:
                del commands[next(iter(commands))]

    # ---- snapshots -------------------------------------------------------------------------
    def snapshot_state(self) -> Any:
        """The state to store in a snapshot (JSON-compatible; override for custom layouts).

        The default takes every public instance attribute except ``actor_id`` and ``version``.
        """
        return msgspec.to_builtins({k: v for k, v in vars(self).items() if k[0] != "_" and k not in _RESERVED})

    def restore_state(self, state: Any) -> None:
        """Set the state from :meth:`snapshot_state`'s output (override with it).

        The default sets each attribute, converting it to the attribute's annotated type
        (so Structs, sets and datetimes come back as what they were).

        Raises:
            msgspec.ValidationError: the state does not fit the annotations (the snapshot is then ignored).
        """
        hints = type(self)._hints()
        for name, value in dict(state).items():
            if name[0] == "_" or name in _RESERVED:
                continue
            hint = hints.get(name)
            setattr(self, name, value if hint is None else msgspec.convert(value, hint))

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        hints = cls._state_hints
        if hints is None:
            try:
                raw = typing.get_type_hints(cls)
            except Exception:  # unresolvable forward references: restore without conversion
                raw = {}
            hints = {k: v for k, v in raw.items()
                     if k[0] != "_" and k not in _RESERVED and typing.get_origin(v) is not ClassVar and v is not Any}
            cls._state_hints = hints
        return hints

    def to_snapshot(self) -> dict[str, Any]:
        """The snapshot envelope: aggregate type, snapshot version, state and recent command ids."""
        return {
            "aggregate": self.aggregate_type,
            "schema": self.snapshot_version,
            "state": self.snapshot_state(),
            "commands": [[k, v] for k, v in self._commands.items()],
        }

    @classmethod
    def from_snapshot(cls: type[A], actor_id: str, version: int, envelope: Any) -> A | None:
        """Rebuild from a snapshot envelope, or ``None`` when it does not fit this class/version."""
        if not isinstance(envelope, dict):
            return None
        if envelope.get("aggregate") != cls.aggregate_type or envelope.get("schema") != cls.snapshot_version:
            return None
        aggregate = cls(actor_id)
        try:
            aggregate.restore_state(envelope.get("state") or {})
            commands = envelope.get("commands") or []
            aggregate._commands = {str(k): int(v) for k, v in commands}
        except (msgspec.ValidationError, TypeError, ValueError):
            return None
        aggregate.version = version
        return aggregate

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self.actor_id!r} v{self.version}>"
