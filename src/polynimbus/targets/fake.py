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
        if resource.kind == "link":
            self._drop(current)  # links are recreated, like the lab target does
        self._put("update", resource)

    def delete(self, resource: Resource) -> None:
        self.ops.append(("delete", resource.key))
        self._drop(resource)

    def _drop(self, resource: Resource) -> None:
        """Remove like the kernel: a namespace takes its contents and the veth ends in it;
        a link takes its addresses, routes and qdisc, and a veth both ends'."""
        self.state.pop(resource.key, None)
        if resource.kind == "netns":
            for r in list(self.state.values()):
                if r.node == resource.node or r.get("peer_node") == resource.node:
                    self._drop(r)
        elif resource.kind == "link":
            ends = {(resource.node, resource.name)}
            if resource.get("peer_node"):
                ends.add((resource.get("peer_node"), resource.get("peer_name")))
            for k, r in list(self.state.items()):
                dev = r.name.split(" ")[0] if r.kind == "addr" else r.get("dev", r.name)
                if r.kind in ("addr", "route", "qdisc", "wgconf") and (r.node, dev) in ends:
                    self.state.pop(k, None)
