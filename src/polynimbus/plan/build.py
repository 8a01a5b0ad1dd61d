"""Assemble a :class:`Plan` from a validated intent (pure; no I/O)."""

from __future__ import annotations

import gc
import hashlib

from polynimbus.errors import IntentError, PlanError
from polynimbus.intent.models import Intent
from polynimbus.names import wireguard_if
from polynimbus.plan import ipam, mtu, routes, topology
from polynimbus.plan.model import HostPlan, PeerPlan, Plan, SitePlan, TunnelPlan

VNI_SPACE = 2**24 - 2
"""VNIs 1 .. 2^24-2 (RFC 7348 gives 24 bits; 0 and the top value are avoided)."""


def allocate_vnis(names: list[str], edges: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """A VNI per tunnel, stable under changes to other tunnels.

    Each tunnel hashes its two site names (SHA-256, order-independent) into 1..2^24-2;
    collisions probe upward, in sorted tunnel order.
    """
    used: set[int] = set()
    out: dict[tuple[int, int], int] = {}
    for a, b in edges:
        key = "|".join(sorted((names[a], names[b]))).encode()
        vni = 1 + int.from_bytes(hashlib.sha256(key).digest()[:4], "big") % VNI_SPACE
        while vni in used:
            vni = 1 + vni % VNI_SPACE
        used.add(vni)
        out[(a, b)] = vni
    return out


def build_plan(intent: Intent) -> Plan:
    """Plan the overlay for ``intent`` (see :func:`_build_plan`).

    The cyclic garbage collector is paused while the plan's many small immutable objects
    are made (it would rescan them repeatedly: 3x slower at 1,000 full-mesh sites).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_plan(intent)
    finally:
        if enabled:
            gc.enable()


def _build_plan(intent: Intent) -> Plan:
    """Plan the overlay for ``intent`` (which must have passed validation).

    Follows seed 003 §3.2.3.1 (numbering), §3.2.3.2 (routes: every overlay prefix to the
    gateway, transit through intermediate gateways), §3.1.3 (topologies).

    Raises:
        IntentError: the intent has numbering problems (when called without validation).
        PlanError: the overlay cannot be planned (e.g. a hub that is not a site).
    """
    ov = intent.overlay
    numbering, problems = ipam.number_sites(intent)
    if problems:
        raise IntentError(problems)
    nums = [n for n in numbering if n is not None]
    names = [s.name for s in intent.sites]
    n = len(intent.sites)

    locs = [(s.location.lat, s.location.lon) if s.location else None for s in intent.sites]
    if ov.topology == "full-mesh":
        edges = topology.full_mesh(n)
    elif ov.topology == "hub":
        if ov.hub not in names:
            raise PlanError(f"hub {ov.hub!r} is not a site", "set overlay.hub to a site name")
        edges = topology.hub(n, names.index(ov.hub))
    elif ov.topology == "mst":
        edges = topology.mst(locs)
    else:  # pragma: no cover - the model's Literal forbids it
        raise PlanError(
            f"unknown topology {ov.topology!r}", "known: " + ", ".join(topology.TOPOLOGIES)
        )

    vnis = allocate_vnis(names, edges) if ov.transport == "vxlan" else {}
    reach = routes.transit_reach(n, edges)
    under = ipam.underlay_indices(nums, ov.address_space)
    t_mtu = mtu.tunnel_mtu(ov.transport, ov.underlay_mtu)

    sites: list[SitePlan] = []
    for i, (spec, num) in enumerate(zip(intent.sites, nums, strict=True)):
        inet, public = ipam.underlay_pair(under[i])
        if vnis:
            peers = tuple(PeerPlan(p, r, vnis[(i, p) if i < p else (p, i)]) for p, r in reach[i])
        else:
            peers = tuple(PeerPlan(p, r, None) for p, r in reach[i])
        first = int(num.block.network_address)
        sites.append(
            SitePlan(
                name=spec.name,
                provider=spec.provider,
                region=spec.region,
                site_id=num.site_id,
                block=str(num.block),
                gateway_address=str(num.gateway),
                public_address=str(public),
                internet_address=str(inet),
                tunnel_if=wireguard_if(intent.name, num.site_id),
                hosts=tuple(
                    HostPlan(h.name, str(a), int(a) - first)
                    for h, a in zip(spec.hosts, num.hosts, strict=True)
                ),
                peers=peers,
                location=locs[i],
                rate_bps=spec.underlay.rate_bps if spec.underlay else None,
                delay_ms=spec.underlay.delay_ms if spec.underlay else None,
            )
        )
    lengths = topology.edge_lengths(locs, edges)
    tunnels = tuple(
        TunnelPlan(a, b, km, vnis.get((a, b))) for (a, b), km in zip(edges, lengths, strict=True)
    )
    return Plan(
        name=intent.name,
        topology=ov.topology,
        transport=ov.transport,
        hub=ov.hub,
        address_space=str(ov.address_space),
        port=ov.effective_port,
        underlay_mtu=ov.underlay_mtu,
        tunnel_mtu=t_mtu,
        mss=mtu.tcp_mss(t_mtu),
        sites=tuple(sites),
        tunnels=tuple(tunnels),
    )
