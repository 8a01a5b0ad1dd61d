"""An in-memory target that records every operation (for tests of apply, no kernel)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from polynimbus.resources import Key, Resource
from polynimbus.targets.base import TARGETS


@TARGETS.register("fake")
class FakeTarget:
    """Holds resources in a dict; ``ops`` lists ``(action, key)`` in the order made.

    Args:
        fail_on: a key whose create/update raises ``RuntimeError`` (to test interruption).
    """

    def __init__(self, fail_on: Key | None = None, **_: Any) -> None:
        self.state: dict[Key, Resource] = {}
        self.ops: list[tuple[str, Key]] = []
        self.fail_on = fail_on

    def observe(self, lab: str, desired: Sequence[Resource]) -> dict[Key, Resource]:
        return dict(self.state)

    def _put(self, action: str, r: Resource) -> None:
        if r.key == self.fail_on:
            raise RuntimeError(f"injected failure on {r.key}")
        self.ops.append((action, r.key))
        self.state[r.key] = r

    def create(self, resource: Resource) -> None:
        self._put("create", resource)

    def update(self, resource: Resource, current: Resource) -> None:
        self._put("update", resource)

    def delete(self, resource: Resource) -> None:
        self.ops.append(("delete", resource.key))
        self.state.pop(resource.key, None)
        if resource.kind == "netns":  # everything in a namespace goes with it
            for k in [k for k, r in self.state.items() if r.node == resource.node]:
                del self.state[k]
