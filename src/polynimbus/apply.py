"""Apply: observe a target, diff it against the desired resources, make only the changes.

Applying the same desired state twice makes no change the second time (tailscale's
``router.Set`` rule). Every change is idempotent on its own, so an apply cut off at any
point (Ctrl-C, kill -9, a failing command) is completed by applying again.

Order: deletions first, most dependent first (routes before links before namespaces),
skipping what disappears with its namespace or link; then creations and updates, least
dependent first. A resource whose dependency is (re)created is re-applied too, because
recreating a link drops its addresses, routes and qdiscs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from polynimbus.node import Address, FdbEntry, Qdisc, Route, TrafficClass, WireGuardConfig
from polynimbus.resources import Key, Resource

Action = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class Change:
    """One change to make: ``action`` on ``resource``, and why."""

    action: Action
    resource: Resource
    reason: str

    def describe(self) -> str:
        """E.g. ``create link wan0 (veth) on pn.x.a.gateway: missing``."""
        return f"{self.action} {self.resource.describe()}: {self.reason}"


class Target(Protocol):
    """What apply needs from a target (a place it can observe and change)."""

    def canonicalise(self, desired: Sequence[Resource]) -> list[Resource]:
        """``desired`` with the fields only the target can compute filled in (e.g. the
        kernel's canonical form of a firewall table), so that it compares with
        :meth:`observe`'s output."""
        ...

    def observe(
        self, lab: str, desired: Sequence[Resource], nodes: set[str] | None = None
    ) -> dict[Key, Resource]:
        """What exists now for ``lab``, as resources (scoped by ``desired`` where reading
        everything would be costly, e.g. sysctls); only on ``nodes`` when given."""
        ...

    def create(self, resource: Resource) -> None:
        """Create ``resource``, replacing whatever has its key. Idempotent."""
        ...

    def update(self, resource: Resource, current: Resource) -> None:
        """Make ``current`` match ``resource`` (same key, other spec). Idempotent."""
        ...

    def delete(self, resource: Resource) -> None:
        """Remove ``resource``; absent is not an error."""
        ...


_RECREATING = frozenset({"netns", "link", "process", "qdisc"})
"""Kinds whose (re)creation drops what depends on them (a process owns its TUN link; a
root qdisc its classes)."""

_COMPARED_AS_CONTENT = frozenset({"digest", "canonical"})


def _differences(want: Resource, have: Resource) -> str:
    a, b = dict(have.spec), dict(want.spec)
    parts = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            if k in _COMPARED_AS_CONTENT:
                parts.append("content differs")
            else:
                parts.append(f"{k} {a.get(k)!r} -> {b.get(k)!r}")
    return ", ".join(parts) or "differs"


def device_of(r: Resource) -> str | None:
    """The interface whose removal takes ``r`` with it (addresses, routes through it,
    FDB entries, qdiscs, WireGuard configuration), or ``None``."""
    item = r.item
    if isinstance(item, Address | WireGuardConfig):
        return item.ifname
    if isinstance(item, Route | Qdisc | FdbEntry | TrafficClass):
        return item.dev
    return None


def diff(desired: Sequence[Resource], actual: Mapping[Key, Resource]) -> list[Change]:
    """The ordered changes that turn ``actual`` into ``desired``.

    Args:
        desired: resources wanted (any order; keys must be unique).
        actual: what exists, by key.

    Returns:
        deletions (most dependent first), then creations and updates (least dependent
        first).

    Raises:
        ValueError: two desired resources share a key.
    """
    want: dict[Key, Resource] = {}
    for r in desired:
        if r.key in want:
            raise ValueError(f"two desired resources share the key {r.key}")
        want[r.key] = r

    changes: list[Change] = []
    touched: set[Key] = set()

    for r in sorted(want.values(), key=lambda x: x.rank):
        have = actual.get(r.key)
        if have is None:
            changes.append(Change("create", r, "missing"))
            touched.update(r.ends())
        elif have.spec != r.spec:
            changes.append(Change("update", r, _differences(r, have)))
            if r.kind in _RECREATING:
                touched.update(r.ends())
        else:
            dep = next((d for d in r.dependencies() if d in touched), None)
            if dep is not None:
                what = " ".join(str(p) for p in dep[2]) or dep[1]
                changes.append(Change("create", r, f"re-applied: {dep[0]} {what} was recreated"))
                touched.update(r.ends())

    gone_ns = {k[1] for k in actual if k[0] == "netns" and k not in want}
    gone_links = {
        (e[1], e[2][0])
        for k, r in actual.items()
        if k[0] == "link" and (k not in want or want[k].spec != r.spec)
        for e in r.ends()
    }
    deletes: list[Change] = []
    for k, r in actual.items():
        if k in want:
            continue
        if r.kind != "netns" and r.node in gone_ns:
            continue  # goes away with its namespace
        dev = device_of(r)
        if dev is not None and (r.node, dev) in gone_links:
            continue  # goes away with its link
        deletes.append(Change("delete", r, "not in the plan"))
    deletes.sort(key=lambda c: c.resource.rank, reverse=True)
    return deletes + changes


@dataclass
class ApplyResult:
    """What an apply did.

    Attributes:
        changes: the changes made, in order.
        warnings: things the user should know (e.g. delay emulation unavailable).
    """

    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when anything was changed."""
        return bool(self.changes)

    def counts(self) -> dict[str, int]:
        """Number of changes per action."""
        out = {"create": 0, "update": 0, "delete": 0}
        for c in self.changes:
            out[c.action] += 1
        return out


Progress = Callable[[Change, int, int], None]


def execute(
    target: Target,
    changes: Iterable[Change],
    actual: Mapping[Key, Resource],
    progress: Progress | None = None,
) -> ApplyResult:
    """Make ``changes`` on ``target`` in order.

    Args:
        progress: called before each change with ``(change, index, total)``.

    Raises:
        ApplyError: (from the target) a change failed; the changes before it stay made.
    """
    todo = list(changes)
    result = ApplyResult()
    for i, c in enumerate(todo):
        if progress:
            progress(c, i, len(todo))
        if c.action == "create":
            target.create(c.resource)
        elif c.action == "update":
            target.update(c.resource, actual[c.resource.key])
        else:
            target.delete(c.resource)
        result.changes.append(c)
    return result


def changed_nodes(before: Sequence[Resource], after: Sequence[Resource]) -> set[str]:
    """The nodes whose desired resources differ between ``before`` and ``after`` (a
    resource added, removed or changed, payloads included), with both ends of every veth
    pair that changed (a pair is one resource, on its smaller end, but it changes both
    namespaces)."""
    old = {r.key: r for r in before}
    new = {r.key: r for r in after}
    changed = [new.get(k) or old[k] for k in old.keys() ^ new.keys()]
    # whole items, payloads too: two desired states are compared before the target has
    # canonicalised them (a firewall table's text is its payload)
    differ = [k for k in old.keys() & new.keys() if old[k].item != new[k].item]
    changed += [new[k] for k in differ] + [old[k] for k in differ]
    nodes = {r.node for r in changed}
    for r in changed:
        peer = getattr(r.item, "peer", None)
        if peer is not None:
            nodes.add(peer.node)
    return nodes


def apply(
    target: Target,
    lab: str,
    desired: Sequence[Resource],
    progress: Progress | None = None,
    dry_run: bool = False,
    nodes: set[str] | None = None,
) -> ApplyResult:
    """Observe ``target``, diff against ``desired`` and make the changes.

    Args:
        dry_run: compute and return the changes without making them.
        nodes: only observe and change these nodes (e.g. :func:`changed_nodes` of the
            previous and the new desired state: drift elsewhere is then left alone).
    """
    if nodes is not None:
        desired = [r for r in desired if r.node in nodes]
    desired = target.canonicalise(desired)
    actual = (
        target.observe(lab, desired, nodes) if nodes is not None else target.observe(lab, desired)
    )
    changes = diff(desired, actual)
    if dry_run:
        return ApplyResult(changes=changes)
    return execute(target, changes, actual, progress)
