"""Lazy access to the optional ``prometheus-client`` package."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from aether.errors import InvalidInputError, MetricsUnavailableError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["metrics_available", "prometheus", "register", "resolve_registry"]

_module: ModuleType | None = None


def prometheus() -> ModuleType:
    """The ``prometheus_client`` module, imported on first use.

    Raises:
        MetricsUnavailableError: ``prometheus-client`` is not installed.
    """
    global _module
    if _module is None:
        try:
            import prometheus_client
        except ImportError as exc:
            raise MetricsUnavailableError(
                "Aether metrics need prometheus-client: pip install 'aether-nats[metrics]'"
            ) from exc
        _module = prometheus_client
    return _module


def metrics_available() -> bool:
    """Whether ``prometheus-client`` can be imported (metrics can be enabled)."""
    try:
        prometheus()
    except MetricsUnavailableError:
        return False
    return True


def resolve_registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    """``registry``, or prometheus-client's global ``REGISTRY`` when ``None``."""
    if registry is not None:
        return registry
    default: CollectorRegistry = prometheus().REGISTRY
    return default


def register(registry: CollectorRegistry, collectors: list[Any]) -> None:
    """Register every collector or none of them.

    Raises:
        InvalidInputError: a metric of the same name is already registered in ``registry``
            (create one metrics object per registry and share it).
    """
    done: list[Any] = []
    try:
        for collector in collectors:
            registry.register(collector)
            done.append(collector)
    except ValueError as exc:
        for collector in done:
            registry.unregister(collector)
        raise InvalidInputError(
            f"metrics already registered in this CollectorRegistry ({exc}); "
            "create one metrics object per registry and share it"
        ) from exc
