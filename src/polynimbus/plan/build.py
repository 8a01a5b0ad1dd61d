"""Assemble a :class:`Plan` from a validated intent (pure; no I/O)."""

from __future__ import annotations

import gc
import hashlib
import os

import numpy as np

from polynimbus.errors import IntentError, PlanError, Problem
from polynimbus.intent.models import Intent
from polynimbus.names import wireguard_if
from polynimbus.numbering import (
    ipv6_address,
    ipv6_prefix,
    number_sites,
    sid_block,
    underlay6_pair,
    underlay_indices,
    underlay_pair,
)
from polynimbus.plan import mtu, routes, topology
from polynimbus.plan.model import HostPlan, Peers, Plan, SitePlan, Tunnels
from polynimbus.plan.tenants import TenantPlan, build_tenants
from polynimbus.tunnels import TRANSPORTS

VNI_SPACE = 2**24 - 2
"""VNIs 1 .. 2^24-2 (RFC 7348 gives 24 bits; 0 and the top value are avoided)."""


def allocate_vnis(names: list[str], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A VNI per tunnel ``(a[k], b[k])``, stable under changes to other tunnels.

    Each tunnel hashes its two site names (SHA-256 of ``"x|y"`` with ``x <= y``, so
    order-independent) into 1..2^24-2; collisions probe upward, in the given (sorted)
    tunnel order.

    Returns:
        int64 array of shape ``a.shape``, all distinct.

    Raises:
        ValueError: more tunnels than VNIs.
    """
    if len(a) > VNI_SPACE:
        raise ValueError(f"{len(a)} tunnels do not fit in {VNI_SPACE} VNIs")
    enc = [s.encode() for s in names]
    sha = hashlib.sha256
    base = []
    for i, j in zip(a.tolist(), b.tolist(), strict=True):
        x, y = enc[i], enc[j]
        key = x + b"|" + y if x <= y else y + b"|" + x
        base.append(int.from_bytes(sha(key).digest()[:4], "big"))
    vnis = 1 + np.array(base, dtype=np.int64) % VNI_SPACE
    if len(np.unique(vnis)) == len(vnis):
        return vnis
    used: set[int] = set()
    out: list[int] = []
    for vni in vnis.tolist():
        while vni in used:
            vni = 1 + vni % VNI_SPACE
        used.add(vni)
        out.append(vni)
    return np.array(out, dtype=np.int64)


def build_plan(intent: Intent) -> Plan:
    """Plan the overlay for ``intent`` (see :func:`_build_plan`).

    The cyclic garbage collector is paused while the plan's many small immutable objects
    are made (it would rescan them repeatedly).
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
        IntentError: the intent has numbering problems (when called without validation),
            or problems only the planned topology shows: rates through a transit site,
            what the transport cannot carry
            (:meth:`~polynimbus.tunnels.base.TunnelBackend.plan_problems`).
        PlanError: the overlay cannot be planned (e.g. a hub that is not a site).
    """
    ov = intent.overlay
    numbering, problems = number_sites(intent)
    twin = [s.gateways > 1 for s in intent.sites]
    if any(twin):
        from polynimbus.plan.standby import host_conflicts, standby_problems

        problems += standby_problems(intent, [n.block if n else None for n in numbering])
        for i, sn in enumerate(numbering):
            if twin[i] and sn is not None and sn.block.num_addresses >= 8:
                problems += host_conflicts(i, sn.block, list(sn.hosts))
    if problems:
        raise IntentError(problems)
    nums = [n for n in numbering if n is not None]
    names = [s.name for s in intent.sites]
    n = len(intent.sites)

    locs = [(s.location.lat, s.location.lon) if s.location else None for s in intent.sites]
    if ov.topology == "full-mesh":
        a, b = topology.full_mesh_arrays(n)
    elif ov.topology == "hub":
        if ov.hub not in names:
            raise PlanError(f"hub {ov.hub!r} is not a site", "set overlay.hub to a site name")
        a, b = topology.edge_arrays(topology.hub(n, names.index(ov.hub)))
    elif ov.topology == "mst":
        a, b = topology.edge_arrays(topology.mst(locs))
    else:  # pragma: no cover - the model's Literal forbids it
        raise PlanError(
            f"unknown topology {ov.topology!r}", "known: " + ", ".join(topology.TOPOLOGIES)
        )

    vnis = allocate_vnis(names, a, b) if TRANSPORTS.get(ov.transport).vni_per_tunnel else None
    table = routes.route_table(n, a, b)
    under = underlay_indices(nums, ov.address_space)
    t_mtu = mtu.tunnel_mtu(ov.transport, ov.underlay_mtu)
    edge_keys = a * n + b  # ascending, as the tunnels are sorted by (a, b)
    standby_under: list[int | None] = [None] * n
    if any(twin):
        from polynimbus.plan.standby import standby_indices, standby_plan

        standby_under = standby_indices(under, twin)

    sites: list[SitePlan] = []
    for i, (spec, num) in enumerate(zip(intent.sites, nums, strict=True)):
        inet, public = underlay_pair(under[i])
        peer_vnis = None
        if vnis is not None:
            p = table[i].peers.astype(np.int64)
            keys = np.where(p > i, i * n + p, p * n + i)
            peer_vnis = vnis[np.searchsorted(edge_keys, keys)]
        first = int(num.block.network_address)
        dual = intent.dual_stack
        underlay6 = intent.uses_srv6 and intent.carrier == "underlay"
        inet6, public6 = underlay6_pair(under[i]) if underlay6 else (None, None)
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
                    HostPlan(
                        h.name,
                        str(addr),
                        int(addr) - first,
                        ipv6_address(addr, num.block) if dual else None,
                    )
                    for h, addr in zip(spec.hosts, num.hosts, strict=True)
                ),
                peers=Peers(table[i], peer_vnis),
                location=locs[i],
                rate_bps=spec.underlay.rate_bps if spec.underlay else None,
                delay_ms=spec.underlay.delay_ms if spec.underlay else None,
                block6=ipv6_prefix(num.block) if dual else None,
                gateway_address6=ipv6_address(num.gateway, num.block) if dual else None,
                sid_block=sid_block(num.block) if intent.uses_srv6 else None,
                public_address6=public6,
                internet_address6=inet6,
                standby=None
                if (k := standby_under[i]) is None
                else standby_plan(intent.name, spec.name, num.site_id, num.block, k),
            )
        )
    tunnels = Tunnels(a, b, topology.edge_lengths(locs, a, b), vnis)
    srv6_plan = None
    if intent.uses_srv6:
        from polynimbus.plan.srv6 import build_srv6

        carrier_mtu = t_mtu if intent.carrier == "tunnels" else ov.underlay_mtu
        srv6_plan = build_srv6(intent, tuple(sites), carrier_mtu)
    tenant_plans: tuple[TenantPlan, ...] = ()
    if intent.tenants:
        tenant_plans = build_tenants(intent, [s.name for s in sites])
    plan = Plan(
        name=intent.name,
        topology=ov.topology,
        transport=ov.transport,
        hub=ov.hub,
        address_space=str(ov.address_space),
        port=ov.effective_port,
        parallel=ov.parallel
        or TRANSPORTS.get(ov.transport)().default_parallel(os.cpu_count() or 1),
        underlay_mtu=ov.underlay_mtu,
        tunnel_mtu=t_mtu,
        mss=mtu.tcp_mss(t_mtu),
        sites=tuple(sites),
        tunnels=tunnels,
        ipv6=intent.dual_stack,
        srv6=srv6_plan,
        tenants=tenant_plans,
        failover=ov.failover,
    )
    late: list[Problem] = []  # what only the planned topology shows
    if tenant_plans and ov.topology != "full-mesh":
        from polynimbus.plan.tenants import transit_problems

        late += transit_problems(plan, intent)
    late += TRANSPORTS.get(ov.transport)().plan_problems(plan)  # e.g. IPsec's one transit
    if ov.failover:
        from polynimbus.plan.failover import failover_problems

        late += failover_problems(plan, TRANSPORTS.get(ov.transport).supports_failover)
    if late:
        raise IntentError(late)
    return plan
