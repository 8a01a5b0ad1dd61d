"""Resources: the unit a target observes, creates and deletes.

The lab's desired state is a set of resources rendered from the plan
(:func:`polynimbus.render.lab.render_lab`); a target reports the same shapes for what
exists. Applying is then a set difference (:mod:`polynimbus.apply`).

A resource is identified by ``(kind, node, name)`` and compared on ``spec`` (a sorted tuple
of ``(field, value)``). ``payload`` carries what is needed to create it but is not compared
(e.g. a configuration file whose digest is in ``spec``); it is never printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str, str]

KIND_ORDER: dict[str, int] = {
    "netns": 0,
    "sysctl": 1,
    "link": 2,
    "addr": 3,
    "route": 4,
    "qdisc": 5,
    "nft": 5,
    "wgconf": 6,
}
"""Creation order of kinds (deletion runs in reverse)."""

LINK_ORDER: dict[str, int] = {"loopback": 0, "bridge": 1}
"""Within links: bridges before the ports that join them."""


@dataclass(frozen=True)
class Resource:
    """One thing a target manages.

    Attributes:
        kind: one of :data:`KIND_ORDER`.
        node: the node it lives on (a namespace name in the lab).
        name: its identity within ``node`` and ``kind`` (interface name, route prefix...).
        spec: compared attributes, a sorted tuple of ``(field, value)`` pairs.
        payload: creation data that is not compared (never shown).
    """

    kind: str
    node: str
    name: str
    spec: tuple[tuple[str, Any], ...] = ()
    payload: Any = field(default=None, compare=False, repr=False, hash=False)

    @classmethod
    def make(cls, kind: str, node: str, name: str, payload: Any = None, **spec: Any) -> Resource:
        """Build a resource from keyword ``spec`` fields (``None`` values are dropped)."""
        if kind not in KIND_ORDER:
            raise ValueError(f"unknown resource kind {kind!r}; known: {', '.join(KIND_ORDER)}")
        items = tuple(sorted((k, v) for k, v in spec.items() if v is not None))
        return cls(kind, node, name, items, payload)

    @property
    def key(self) -> Key:
        """``(kind, node, name)``."""
        return (self.kind, self.node, self.name)

    def get(self, field_name: str, default: Any = None) -> Any:
        """The value of spec field ``field_name``."""
        for k, v in self.spec:
            if k == field_name:
                return v
        return default

    @property
    def rank(self) -> tuple[int, int]:
        """Creation order: kind first, then bridges before other links."""
        sub = LINK_ORDER.get(self.get("type", ""), 2) if self.kind == "link" else 0
        return (KIND_ORDER[self.kind], sub)

    def describe(self) -> str:
        """Short human text, e.g. ``link wan0 (veth) on pn.lab.i3s.gateway``."""
        what = {"netns": "namespace", "wgconf": "wireguard config", "nft": "nftables"}.get(
            self.kind, self.kind
        )
        extra = f" ({self.get('type')})" if self.kind == "link" else ""
        name = f" {self.name}" if self.name else ""
        where = f" on {self.node}" if self.kind != "netns" else f" {self.node}"
        return f"{what}{name}{extra}{where}"

    def dependencies(self) -> list[Key]:
        """Keys this resource needs to exist first (its namespace, links it uses)."""
        deps: list[Key] = [("netns", self.node, "")] if self.kind != "netns" else []
        if self.kind == "link":
            if self.get("master"):
                deps.append(("link", self.node, self.get("master")))
            if self.get("peer_node"):
                deps.append(("netns", self.get("peer_node"), ""))
                if self.get("peer_master"):
                    deps.append(("link", self.get("peer_node"), self.get("peer_master")))
        elif self.kind == "addr":
            deps.append(("link", self.node, self.name.split(" ")[0]))
        elif self.kind == "route":
            deps.append(("link", self.node, self.get("dev")))
        elif self.kind in ("qdisc", "wgconf"):
            deps.append(("link", self.node, self.name))
        return deps


def netns(name: str) -> Resource:
    """A network namespace: ``node`` is its name, ``name`` is empty."""
    return Resource.make("netns", name, "")
