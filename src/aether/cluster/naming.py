"""Cluster names and the KV bucket a cluster keeps its state in (pure functions, no I/O).

Public so that tools which only need the names (e.g. :mod:`aether.permissions`, the dashboard)
need not reach into the cluster's private KV module.
"""

from __future__ import annotations

import re

from aether.errors import InvalidNameError

__all__ = ["bucket_name", "validate_cluster_name"]

_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_cluster_name(cluster: object) -> str:
    """Check a cluster name (``A-Z a-z 0-9 _ -``, 1..64 characters) and return it.

    Raises:
        InvalidNameError: any other value.
    """
    if not isinstance(cluster, str) or not _CLUSTER_NAME.fullmatch(cluster):
        raise InvalidNameError(f"cluster name must be 1..64 characters of A-Z a-z 0-9 _ -, got {cluster!r}")
    return cluster


def bucket_name(cluster: str) -> str:
    """The KV bucket of ``cluster`` (``aether-cluster-<cluster>``; its stream is ``KV_<bucket>``).

    Raises:
        InvalidNameError: a bad cluster name.
    """
    return f"aether-cluster-{validate_cluster_name(cluster)}"
