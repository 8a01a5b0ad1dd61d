"""An in-memory target that keeps its own state, like a small fake kernel (for tests of
apply, no root needed).

It stores only what a kernel would keep of each item: the identity and the compared
fields, never the payload (configuration text, firewall source). :meth:`observe` rebuilds
items from that record, so a renderer that puts a compared value only in a payload, or a
desired item that does not survive a round trip, shows up as a difference. Firewall tables
are canonicalised by dropping comments and blank lines, standing in for the kernel's own
form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from polynimbus.node import KINDS, Item, Link, NftTable
from polynimbus.resources import Key, Resource
from polynimbus.targets.base import TARGETS


def _record(item: Item) -> dict[str, Any]:
    """What the fake kernel keeps of ``item``: every init field except the payload."""
    payload = type(item)._payload_fields
    return {
        f.name: getattr(item, f.name)
        for f in dataclasses.fields(item)  # type: ignore[arg-type]
        if f.init and f.name not in payload
    }


def _rebuild(kind: str, record: dict[str, Any]) -> Item:
    cls = KINDS[kind]
    kwargs = dict(record)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.init and f.name not in kwargs:
            kwargs[f.name] = ""  # a payload the kernel does not give back
    return cls(**kwargs)


@TARGETS.register("fake")
class FakeTarget:
    """Holds records in a dict; ``ops`` lists ``(action, key)`` in the order made.

    Args:
        fail_on: a key whose create/update raises ``RuntimeError`` (to test interruption).
    """

    def __init__(self, fail_on: Key | None = None, **_: Any) -> None:
        self.state: dict[Key, tuple[str, str, dict[str, Any]]] = {}
        self.ops: list[tuple[str, Key]] = []
        self.fail_on = fail_on

    def canonicalise(self, desired: Sequence[Resource]) -> list[Resource]:
        out = []
        for r in desired:
            if isinstance(r.item, NftTable):
                lines = [ln.strip() for ln in r.item.ruleset.splitlines()]
                canon = "\n".join(ln for ln in lines if ln and not ln.startswith("#"))
                r = Resource(r.node, dataclasses.replace(r.item, canonical=canon))
            out.append(r)
        return out

    def observe(
        self, lab: str, desired: Sequence[Resource], nodes: set[str] | None = None
    ) -> dict[Key, Resource]:
        out = {}
        for key, (kind, node, record) in self.state.items():
            if nodes is None or node in nodes:
                out[key] = Resource(node, _rebuild(kind, record))
        return out

    def _put(self, action: str, r: Resource) -> None:
        if r.key == self.fail_on:
            raise RuntimeError(f"injected failure on {r.key}")
        self.ops.append((action, r.key))
        self.state[r.key] = (r.kind, r.node, _record(r.item))

    def create(self, resource: Resource) -> None:
        self._put("create", resource)

    def update(self, resource: Resource, current: Resource) -> None:
        if isinstance(resource.item, Link):
            self._drop(current)  # links are recreated, like the lab target does
        self._put("update", resource)

    def delete(self, resource: Resource) -> None:
        self.ops.append(("delete", resource.key))
        self._drop(resource)

    def _drop(self, resource: Resource) -> None:
        """Remove like the kernel: a namespace takes its contents and the veth ends in it;
        a link takes its addresses, routes, FDB entries, qdisc and configuration, and a
        veth both ends'."""
        from polynimbus.apply import device_of

        self.state.pop(resource.key, None)
        current = self.observe("", [])
        if resource.kind == "netns":
            for k, r in current.items():
                peer = r.item.peer if isinstance(r.item, Link) else None
                on_peer = peer is not None and peer.node == resource.node
                inside = r.node == resource.node or on_peer
                if inside and k in self.state:
                    self._drop(r)
        elif resource.kind == "link":
            ends = {(k[1], k[2][0]) for k in resource.ends()}
            for k, r in current.items():
                dev = device_of(r)
                if dev is not None and (r.node, dev) in ends:
                    self.state.pop(k, None)
