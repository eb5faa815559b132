"""``async with`` for the projection package's long-lived objects: enter starts, exit closes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

__all__ = ["StartsAndCloses"]


class StartsAndCloses(ABC):
    """A base for objects with ``start()`` and ``aclose()``: ``async with`` calls them."""

    @abstractmethod
    async def start(self) -> None:
        """Start (idempotent)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop and release everything (idempotent)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
