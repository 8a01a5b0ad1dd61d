"""Resources: a node model item placed on a node, the unit a target observes and changes.

A target's desired state is a list of resources (for the lab:
:func:`polynimbus.render.lab.render_lab`); the target reports the same shapes for what
exists. Applying is then a set difference (:mod:`polynimbus.apply`).

A resource is identified by ``(kind, node, ident)``, where ``ident`` is the item's
structured identity (:meth:`polynimbus.node.Item.ident`), and compared on the item's
:meth:`~polynimbus.node.Item.spec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polynimbus.node import Item, Link, Netns

Key = tuple[str, str, tuple[Any, ...]]
"""``(kind, node, ident)``."""


@dataclass(frozen=True, slots=True)
class Resource:
    """One item on one node.

    Attributes:
        node: where it lives (a namespace name in the lab).
        item: what it is (:mod:`polynimbus.node`).
    """

    node: str
    item: Item

    @property
    def kind(self) -> str:
        """The item's kind."""
        return self.item.kind

    @property
    def key(self) -> Key:
        """``(kind, node, ident)``."""
        return (self.item.kind, self.node, self.item.ident())

    @property
    def spec(self) -> tuple[tuple[str, Any], ...]:
        """The compared fields of the item."""
        return self.item.spec()

    @property
    def rank(self) -> tuple[int, int]:
        """Creation order: kind first, then the item's order within its kind."""
        return (self.item.rank, self.item.sub_rank())

    def describe(self) -> str:
        """Short human text, e.g. ``link wan0 (veth) on pn.lab.i3s.gateway``."""
        if isinstance(self.item, Netns):
            return f"namespace {self.node}"
        return f"{self.item.label()} on {self.node}"

    def dependencies(self) -> list[Key]:
        """Keys this resource needs to exist first: its node, items it uses, and for a
        veth pair the peer's node and bridge."""
        deps: list[Key] = [] if isinstance(self.item, Netns) else [("netns", self.node, ())]
        deps += [(k, self.node, ident) for k, ident in self.item.depends()]
        if isinstance(self.item, Link) and self.item.peer is not None:
            p = self.item.peer
            deps.append(("netns", p.node, ()))
            if p.master:
                deps.append(("link", p.node, (p.master,)))
        return deps

    def ends(self) -> list[Key]:
        """The keys the resource occupies: itself, and for a veth pair its peer end too."""
        keys = [self.key]
        if isinstance(self.item, Link) and self.item.peer is not None:
            keys.append(("link", self.item.peer.node, (self.item.peer.name,)))
        return keys


def on(node: str, *items: Item) -> list[Resource]:
    """``items`` placed on ``node``."""
    return [Resource(node, i) for i in items]
