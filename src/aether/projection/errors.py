"""Errors of the projection package (all derive from :class:`~aether.errors.AetherError`).

::

    AetherError
    └── ProjectionError                 a projection could not run (setup failed, it crashed)
        └── ProjectionNotActiveError    (+ClusterError) the call needs the node that runs the projection
"""

from __future__ import annotations

from aether.errors import AetherError, ClusterError

__all__ = ["ProjectionError", "ProjectionNotActiveError"]


class ProjectionError(AetherError):
    """A projection or subscription could not be set up, or stopped because of an unexpected error."""


class ProjectionNotActiveError(ProjectionError, ClusterError):
    """The operation needs the node that currently holds the projection's lease.

    Attributes:
        projection: the projection's name.
        holder: the node holding the lease when known, else ``None``.
    """

    def __init__(self, projection: str, holder: str | None = None) -> None:
        self.projection = projection
        self.holder = holder
        where = f"node {holder!r}" if holder else "another node (or nobody yet)"
        super().__init__(f"projection {projection!r} is not active on this node; it runs on {where}")
