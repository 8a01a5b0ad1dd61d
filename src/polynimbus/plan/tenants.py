"""The tenants' plan (pure): their networks, VNIs, addresses, MACs, routers and routes.

Seed 001 §3: each tenant gets virtual networks with its own address space, isolated from
the others in traffic and in bandwidth, with a virtual router per tenant on every site it
uses. Seed 004 §III: a network stretched over several sites is one broadcast domain,
carried in VXLAN (one VNI per network, "a specific tunnel ID to isolate the traffic of
this network") inside the encrypted tunnels between gateways, which all tenants share.

- **Addresses**: a host takes its ``address:`` or the next free of .1, .2, ... of its
  subnet in list order; the router takes the last usable address (on a stretched network
  every site's router has it, with one MAC: an anycast gateway, so a moved host keeps
  its gateway's MAC).
- **VNIs**: ``TENANT/NETWORK`` hashed into 2^23..2^24-2 (:func:`polynimbus.numbering.vni_of`),
  and ``TENANT/`` for the tenant's transit network, which joins its routers.
- **Transit**: router ``i`` (the site's index in the plan) has ``169.254.x.y/16``
  (:func:`transit_address`); it routes each remote network's subnet to the router of the
  network's first site, and each host of a stretched network that sits elsewhere with a
  /32 to its own site's router, so every path is symmetric and the shortest.
- **MTU**: the tunnel MTU minus VXLAN over IPv4 (outer IPv4 20 + UDP 8 + VXLAN 8 + inner
  Ethernet 14 = 50 bytes), set on every tenant interface; TCP MSS 40 below it. Over
  WireGuard on a 1500-byte underlay: 1500 - 60 - 50 = 1390 (seed 004 finds 1416 for VXLAN
  over IPsec transport mode, whose overhead is 37 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Any

from polynimbus.errors import Problem
from polynimbus.intent.models import Intent
from polynimbus.intent.tenants import (
    TENANT_VXLAN_PORT,
    TRANSIT_RANGE,
    VXLAN_OVERHEAD,
    host_addresses,
    router_address,
    tenant_capacity,
)

if TYPE_CHECKING:
    from polynimbus.plan.model import Plan

__all__ = ["TENANT_VXLAN_PORT", "VXLAN_OVERHEAD"]
from polynimbus.numbering import tenant_id, tenant_mac, vni_of


@dataclass(frozen=True, slots=True)
class TenantHostPlan:
    """A tenant host: its site, name (the host part), address and MAC (hashed from the
    tenant, network and address, not the site: it keeps it when it moves)."""

    site: str
    name: str
    address: str
    mac: str

    @property
    def key(self) -> str:
        """``SITE/HOST``."""
        return f"{self.site}/{self.name}"


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    """A tenant network.

    Attributes:
        name, subnet: from the intent.
        index: its position in the tenant's list (interface names ``nK``/``vK``).
        vni: its VXLAN network identifier (used when ``layer2``).
        sites: the sites it spans, the first is its origin.
        layer2: stretched over more than one site.
        router_address: the routers' address in it (the hosts' default gateway).
        router_mac: the routers' MAC in it (the same on every site).
        hosts: its hosts, in list order.
    """

    name: str
    subnet: str
    index: int
    vni: int
    sites: tuple[str, ...]
    layer2: bool
    router_address: str
    router_mac: str
    hosts: tuple[TenantHostPlan, ...]

    @property
    def prefixlen(self) -> int:
        """The subnet's prefix length."""
        return IPv4Network(self.subnet).prefixlen


@dataclass(frozen=True, slots=True)
class TenantPlan:
    """One tenant.

    Attributes:
        name: from the intent.
        tenant_id: 15-bit id (its traffic classes are ``1:ID``).
        rate_bps: guaranteed rate on every tunnel it uses, bit/s, or ``None``.
        transit_vni: VNI of the network joining its routers.
        sites: the sites it uses, in plan order.
        networks: in intent order.
    """

    name: str
    tenant_id: int
    rate_bps: int | None
    transit_vni: int
    sites: tuple[str, ...]
    networks: tuple[NetworkPlan, ...]

    def networks_at(self, site: str) -> list[NetworkPlan]:
        """The tenant's networks that span ``site``."""
        return [n for n in self.networks if site in n.sites]

    def hosts(self) -> list[tuple[NetworkPlan, TenantHostPlan]]:
        """Every ``(network, host)`` of the tenant."""
        return [(n, h) for n in self.networks for h in n.hosts]

    def host(self, key: str) -> tuple[NetworkPlan, TenantHostPlan]:
        """The network and host called ``SITE/HOST``.

        Raises:
            KeyError: no such host.
        """
        for n, h in self.hosts():
            if h.key == key:
                return n, h
        raise KeyError(key)


def transit_address(site_index: int) -> str:
    """The transit address of the tenant router on the plan's site ``site_index``
    (``169.254.x.y``, the same for every tenant: each tenant's transit is its own)."""
    return str(TRANSIT_RANGE.network_address + site_index + 1)


def tenant_mtu(tunnel_mtu: int) -> int:
    """MTU of every tenant interface in bytes: the tunnel MTU minus :data:`VXLAN_OVERHEAD`."""
    return tunnel_mtu - VXLAN_OVERHEAD


def build_tenants(intent: Intent, site_order: list[str]) -> tuple[TenantPlan, ...]:
    """The tenants' plan for a validated intent.

    Args:
        site_order: the plan's site names, in order.
    """
    lab = intent.name
    out = []
    for t in intent.tenants:
        nets = []
        for k, n in enumerate(t.networks):
            subnet = n.subnet
            addrs = host_addresses(subnet, [h.address for h in n.hosts])
            hosts = []
            for h, a in zip(n.hosts, addrs, strict=True):
                assert a is not None  # validated
                hosts.append(
                    TenantHostPlan(h.site, h.host, str(a), tenant_mac(lab, t.name, n.name, str(a)))
                )
            nets.append(
                NetworkPlan(
                    name=n.name,
                    subnet=str(subnet),
                    index=k,
                    vni=vni_of(f"{t.name}/{n.name}"),
                    sites=tuple(n.sites),
                    layer2=n.layer2,
                    router_address=str(router_address(subnet)),
                    router_mac=tenant_mac(lab, t.name, n.name, "router"),
                    hosts=tuple(hosts),
                )
            )
        used = set(t.sites)
        out.append(
            TenantPlan(
                name=t.name,
                tenant_id=t.id if t.id is not None else tenant_id(t.name),
                rate_bps=t.rate_bps - t.rate_bps % 8 if t.rate_bps else None,
                transit_vni=vni_of(f"{t.name}/"),
                sites=tuple(s for s in site_order if s in used),
                networks=tuple(nets),
            )
        )
    return tuple(out)


def router_routes(tenant: TenantPlan, site: str, site_order: list[str]) -> list[tuple[str, str]]:
    """The routes of ``tenant``'s router on ``site``: ``[(prefix, via)]`` over its transit
    network, ``via`` being another site's router's transit address.

    A remote network's subnet goes to its first site's router; a host of a stretched
    network sitting on another site than ``site`` gets a /32 to its own site's router.
    """
    index = {s: i for i, s in enumerate(site_order)}
    out: list[tuple[str, str]] = []
    for n in tenant.networks:
        if site not in n.sites:
            out.append((n.subnet, transit_address(index[n.sites[0]])))
        if n.layer2:
            for h in n.hosts:
                if h.site != site and (site in n.sites or h.site != n.sites[0]):
                    out.append((f"{h.address}/32", transit_address(index[h.site])))
    return out


def tenants_to_dict(tenants: tuple[TenantPlan, ...], mtu: int) -> list[dict[str, Any]]:
    """The ``tenants`` part of ``plan --json`` (docs/plan-schema.md)."""
    return [
        {
            "name": t.name,
            "id": t.tenant_id,
            "rate_bps": t.rate_bps,
            "transit_vni": t.transit_vni,
            "sites": list(t.sites),
            "mtu": mtu,
            "networks": [
                {
                    "name": n.name,
                    "subnet": n.subnet,
                    "vni": n.vni,
                    "sites": list(n.sites),
                    "layer2": n.layer2,
                    "router": {"address": n.router_address, "mac": n.router_mac},
                    "hosts": [
                        {"site": h.site, "name": h.name, "address": h.address, "mac": h.mac}
                        for h in n.hosts
                    ],
                }
                for n in t.networks
            ],
        }
        for t in tenants
    ]


def crossing_tenants(plan: Plan, site: str) -> list[TenantPlan]:
    """Tenants with a rate whose traffic leaves through ``site``'s tunnels: from one of
    their sites to another, the path (the plan's routes: direct in a full mesh, through the
    hub or along the tree otherwise) starts at or crosses ``site``."""
    index = {s.name: i for i, s in enumerate(plan.sites)}
    here = index[site]
    next_hop: dict[int, dict[int, int]] = {}

    def hop(cur: int, dst: int) -> int:
        if cur not in next_hop:
            next_hop[cur] = {d: p.site for p in plan.sites[cur].peers for d in p.reaches}
        return next_hop[cur][dst]

    out = []
    for t in plan.tenants:
        if not t.rate_bps or len(t.sites) < 2:
            continue
        ends = [index[s] for s in t.sites]
        crosses = False
        for x in ends:
            for y in ends:
                cur, steps = x, 0
                while cur != y and steps <= len(plan.sites) and not crosses:
                    crosses = cur == here
                    cur, steps = hop(cur, y), steps + 1
        if crosses:
            out.append(t)
    return out


def transit_problems(plan: Plan, intent: Intent) -> list[Problem]:
    """Guaranteed rates through transit sites (a hub, a tree's inner sites), which
    validation cannot see without the topology: a site carrying tenants that are not its
    own needs an underlay rate, and the rates crossing it must fit what its tunnels carry
    for tenants (:func:`polynimbus.intent.tenants.tenant_capacity`)."""
    from polynimbus.tunnels import TRANSPORTS

    overhead = TRANSPORTS.get(intent.overlay.transport).overhead
    where = {t.name: i for i, t in enumerate(intent.tenants)}
    out: list[Problem] = []
    for s in plan.sites:
        crossing = crossing_tenants(plan, s.name)
        passing = [t for t in crossing if s.name not in t.sites]
        if not passing:
            continue  # its own tenants: validated with the intent
        first = passing[0]
        path = f"tenants[{where[first.name]}].rate"
        if not s.rate_bps:
            out.append(
                Problem(
                    path,
                    f"site {s.name!r} carries tenant {first.name!r}'s traffic in transit "
                    f"({plan.topology}) but has no underlay rate to share",
                    f"give site {s.name!r} an underlay: {{rate: ...}}, or remove rate:",
                )
            )
            continue
        cap = tenant_capacity(s.rate_bps, plan.underlay_mtu, overhead)
        total = sum(t.rate_bps or 0 for t in crossing)
        if total > cap:
            listed = ", ".join(f"{t.name} {(t.rate_bps or 0) / 1e6:.4g}" for t in crossing)
            out.append(
                Problem(
                    path,
                    f"through site {s.name!r} (a transit of the {plan.topology}) the "
                    f"guaranteed rates ({listed} Mbit/s) add up to {total / 1e6:.4g} Mbit/s, "
                    f"above what its tunnels carry for tenants: {cap / 1e6:.4g} Mbit/s",
                    "lower the rates, raise the transit site's underlay rate, or use "
                    "topology: full-mesh",
                )
            )
    return out
