"""A small registry of named backends (transports, targets), one per kind.

Adding a backend means adding a module that calls ``register``; an unknown name fails with
the list of known ones (like containerlab's node registry).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from polynimbus.errors import PolynimbusError

T = TypeVar("T")


class Registry(Generic[T]):
    """Backends of one kind by name.

    Args:
        kind: what is registered, for messages (``"transport"``, ``"target"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``.

        Raises:
            ValueError: ``name`` is already registered.
        """

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The backend called ``name``.

        Raises:
            PolynimbusError: unknown name (the message lists the known ones).
        """
        try:
            return self._items[name]
        except KeyError:
            raise PolynimbusError(
                f"unknown {self.kind} {name!r}", f"known: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)
