"""The target registry."""

from __future__ import annotations

from typing import Any

from polynimbus.registry import Registry

TARGETS: Registry[Any] = Registry("target")


def get_target(name: str, **kwargs: Any) -> Any:
    """An instance of the target called ``name``.

    Raises:
        PolynimbusError: unknown target (lists the known ones).
    """
    return TARGETS.get(name)(**kwargs)
