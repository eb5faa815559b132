"""Frozen, keyword-only configuration of projections and their retry policy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from aether.errors import InvalidInputError

__all__ = ["ProjectionOptions", "RetryPolicy"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How a failing handler is retried before its event is dead-lettered.

    Attributes:
        max_attempts: calls of the handler for one event (the first call included) before the
            event goes to the dead-letter stream. ``1`` dead-letters on the first failure.
        initial_backoff: seconds to wait before the first retry.
        max_backoff: upper bound of the wait between two attempts.
        multiplier: each wait is the previous one times this factor (exponential back-off).
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidInputError("RetryPolicy.max_attempts must be >= 1")
        if not (self.initial_backoff >= 0 and math.isfinite(self.initial_backoff)):
            raise InvalidInputError("RetryPolicy.initial_backoff must be a finite number >= 0")
        if not (self.max_backoff >= self.initial_backoff and math.isfinite(self.max_backoff)):
            raise InvalidInputError("RetryPolicy.max_backoff must be finite and >= initial_backoff")
        if not self.multiplier >= 1:
            raise InvalidInputError("RetryPolicy.multiplier must be >= 1")

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based)."""
        if failures < 1:
            return 0.0
        try:
            delay = self.initial_backoff * self.multiplier ** (failures - 1)
        except OverflowError:
            return self.max_backoff
        return min(delay, self.max_backoff)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProjectionOptions:
    """Options of a :class:`~aether.projection.ProjectionRunner`.

    Attributes:
        retry: the retry policy for failing handlers.
        concurrency: ``1`` handles events one after the other in stream order; ``n > 1`` runs
            ``n`` lanes in parallel, each actor always on the same lane, so one actor's events
            keep their order while different actors proceed concurrently.
        max_in_flight: with ``concurrency > 1``, events dispatched to lanes but not finished yet.
        checkpoint_every: save the position after this many messages ...
        checkpoint_interval: ... or after this many seconds, whichever comes first.
        heartbeat: idle heartbeat of the server-side consumer in seconds; after three missed
            heartbeats the consumer is recreated from the last received position.
        lease_ttl: whole seconds a node's lease on a projection lasts without renewal (cluster
            mode). A node that dies is replaced after at most this long.
        checkpoint_bucket: the JetStream KV bucket holding checkpoints.
        lease_bucket: the KV bucket holding leases; default ``aether-projection-leases-<ttl>s``
            (the bucket's max age is the lease TTL, so each TTL has its own bucket).
        dead_letter_stream: the stream receiving dead letters; default ``__DLQ_<source stream>``.
        replicas: replicas of the buckets and the dead-letter stream; ``None`` = the same as
            the source stream.
        stop_timeout: seconds a graceful stop waits for the running handler(s) to finish.
        timeout: seconds to wait for any single server reply.
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 1
    max_in_flight: int = 1000
    checkpoint_every: int = 1000
    checkpoint_interval: float = 1.0
    heartbeat: float = 2.0
    lease_ttl: int = 10
    checkpoint_bucket: str = "aether-projections"
    lease_bucket: str | None = None
    dead_letter_stream: str | None = None
    replicas: int | None = None
    stop_timeout: float = 10.0
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise InvalidInputError("concurrency must be >= 1")
        if self.max_in_flight < self.concurrency:
            raise InvalidInputError("max_in_flight must be >= concurrency")
        if self.checkpoint_every < 1:
            raise InvalidInputError("checkpoint_every must be >= 1")
        if not self.checkpoint_interval > 0:
            raise InvalidInputError("checkpoint_interval must be > 0")
        if not 0.1 <= self.heartbeat <= 60:
            raise InvalidInputError("heartbeat must be between 0.1 and 60 seconds")
        if isinstance(self.lease_ttl, bool) or not isinstance(self.lease_ttl, int) or self.lease_ttl < 1:
            raise InvalidInputError("lease_ttl must be a whole number of seconds >= 1 (a KV bucket max age)")
        if self.replicas is not None and self.replicas not in (1, 2, 3, 4, 5):
            raise InvalidInputError("replicas must be 1..5 or None")
        if self.stop_timeout < 0:
            raise InvalidInputError("stop_timeout must be >= 0")
        if not self.timeout > 0:
            raise InvalidInputError("timeout must be > 0")
        for what, name in (("checkpoint_bucket", self.checkpoint_bucket), ("lease_bucket", self.lease_bucket)):
            if name is not None and not _valid_bucket(name):
                raise InvalidInputError(f"{what} {name!r} may only contain A-Z a-z 0-9 _ -")
        if self.dead_letter_stream is not None and not _valid_stream(self.dead_letter_stream):
            raise InvalidInputError(f"dead_letter_stream {self.dead_letter_stream!r} is not a valid stream name")

    def lease_bucket_name(self) -> str:
        """The lease bucket actually used."""
        return self.lease_bucket or f"aether-projection-leases-{self.lease_ttl}s"


def _valid_bucket(name: str) -> bool:
    return bool(name) and len(name) <= 200 and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)


def _valid_stream(name: str) -> bool:
    return _valid_bucket(name)
