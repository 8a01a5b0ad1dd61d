"""Failover of a dead tunnel through a detour site (``overlay.failover``).

Every gateway runs a failover agent (:mod:`polynimbus.agent.failover`) that probes each
peer gateway through the tunnel itself, every :data:`PROBE_INTERVAL_MS`. After
:data:`DOWN_AFTER` probes in a row go unanswered the tunnel is dead, and the agent moves
the peer's prefixes to a *detour*: a live peer that has a tunnel of its own to the dead
one (seed 003 §3.1: transit through another site's gateway). Both ends of a cut tunnel
decide on their own, from their own probes. When probes are answered again for
:data:`UP_AFTER_MS`, the prefixes move back.

Detection takes ``DOWN_AFTER x PROBE_INTERVAL_MS`` = 300 ms to 400 ms, so traffic moves
within the 1 s asked by issue 9; peers elsewhere are much slower (Headscale probes every
10 s, Kilo takes a minute).

This module is pure: which sites can stand in for which tunnel, and what the planner must
refuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polynimbus.errors import Problem

if TYPE_CHECKING:
    from polynimbus.plan.model import Plan

PROBE_INTERVAL_MS = 100
"""Time between two probes of one peer, ms."""
DOWN_AFTER = 3
"""Probes in a row without an answer that make a tunnel dead."""
UP_AFTER_MS = 1000
"""How long a dead tunnel must answer every probe before traffic moves back, ms
(hysteresis against a flapping path)."""
PROBE_PORT_OFFSET = 1000
"""The agents' UDP port is the transport's port + this (52820 for WireGuard's 51820);
probes travel inside the tunnels, so the gateways' public firewall never sees them."""


def neighbours(plan: Plan) -> dict[int, set[int]]:
    """Site index -> indices of the sites it has a tunnel with."""
    out: dict[int, set[int]] = {i: set() for i in range(len(plan.sites))}
    for t in plan.tunnels:
        out[t.a].add(t.b)
        out[t.b].add(t.a)
    return out


def detours(plan: Plan, a: int, b: int) -> list[int]:
    """The sites that can carry ``a``'s traffic for ``b`` when the tunnel ``a``-``b``
    dies: those with a tunnel to both, in site order.

    Args:
        a, b: site indices with a tunnel between them.

    Returns:
        Site indices (possibly empty: the tunnel has no detour).
    """
    n = neighbours(plan)
    return sorted((n[a] & n[b]) - {a, b})


def failover_problems(plan: Plan, transport_supports: bool) -> list[Problem]:
    """Why ``overlay.failover`` cannot work for ``plan``: a transport without support, or
    tunnels with no detour site (one-hop transit is all the agents do).

    Returns:
        Problems at ``overlay.failover``, each with a hint; empty if it can.
    """
    if not transport_supports:
        return [
            Problem(
                "overlay.failover",
                f"failover is not available with transport {plan.transport!r}",
                "use transport: wireguard, or remove failover",
            )
        ]
    lonely = [
        f"{plan.sites[t.a].name}-{plan.sites[t.b].name}"
        for t in plan.tunnels
        if not detours(plan, t.a, t.b)
    ]
    if not lonely:
        return []
    shown = ", ".join(lonely[:5]) + (f" and {len(lonely) - 5} more" if len(lonely) > 5 else "")
    return [
        Problem(
            "overlay.failover",
            f"{len(lonely)} tunnel(s) have no detour site (a site with tunnels to both "
            f"ends): {shown}",
            "use topology: full-mesh (with three sites or more), or remove failover",
        )
    ]
