"""Semantic validation of tenants: what their types alone cannot say (seed 001 §2, seed 004 §III).

Checks, each reported with its YAML path and a hint, all at once:

- duplicate tenant names, network names within a tenant, hosts within a tenant;
- a network's sites and every host's site exist, and a host's site is one its network spans;
- within one tenant, subnets do not overlap (across tenants they may: that is the point);
- a subnet leaves room for its router and hosts, and stays out of the transit range
  (:data:`TRANSIT_RANGE`);
- an ``address:`` lies inside its subnet, is not its network, broadcast or router address,
  and is not taken twice; automatic numbering does not run out;
- a tenant's ``rate`` has a capacity to be a share of: every site the tenant uses across
  tunnels has ``underlay.rate``, the rate is not above it, and the tenants' rates on one
  site do not add up to more than it;
- VNIs and tenant ids (hashed from names) do not collide.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network

from polynimbus.errors import Problem
from polynimbus.intent.chains import did_you_mean
from polynimbus.intent.models import Intent, TenantSpec
from polynimbus.numbering import tenant_mac

TRANSIT_RANGE = IPv4Network("169.254.0.0/16")
"""IPv4 link-local range used between a tenant's routers (RFC 3927); tenants cannot use it."""
RESERVED_TENANT_HOST_NAMES = frozenset({"router"})
TENANT_VXLAN_PORT = 8472
"""UDP port of tenant VXLAN between gateways (Linux's historical VXLAN port): never the
same socket as a VXLAN transport on 4789; ``overlay.port`` may not take it."""
VXLAN_OVERHEAD = 50
"""Bytes VXLAN over IPv4 adds to an Ethernet payload: IPv4 20 + UDP 8 + VXLAN 8 + inner
Ethernet 14 (RFC 7348 §5)."""
ETHERNET_HEADER = 14
"""Bytes of Ethernet header an underlay link's shaper counts on each frame."""
SHAPING_MARGIN = 0.98
"""Share of the computed tunnel capacity the htb root class takes, so that its queue,
not the underlay link's, is the one that fills (then the tenants' shares hold)."""
TENANT_SHARE = 0.95
"""Most of a tunnel's capacity the tenants' classes may take together (the rest stays for
the provider overlay)."""


def tenant_capacity(underlay_bps: int, underlay_mtu: int, tunnel_overhead: int) -> int:
    """What a site's tunnels carry for tenants, in bit/s of the tenants' own IP packets:
    the underlay rate, less the WireGuard (or other transport) and VXLAN headers of a
    full-size packet and the underlay's Ethernet header, less :data:`SHAPING_MARGIN` and
    :data:`TENANT_SHARE`. 200 Mbit/s over WireGuard on a 1500-byte underlay: 171 Mbit/s."""
    tenant_mtu = underlay_mtu - tunnel_overhead - VXLAN_OVERHEAD
    share = tenant_mtu / (underlay_mtu + ETHERNET_HEADER) * SHAPING_MARGIN * TENANT_SHARE
    return int(underlay_bps * share)


"""Host names taken by a tenant's own nodes (its virtual router on each site)."""


def _mbit(bps: int) -> str:
    return f"{bps / 1e6:.4g} Mbit/s"


def router_address(subnet: IPv4Network) -> IPv4Address:
    """The tenant router's address in ``subnet``: its last usable address (like a site's
    gateway, seed 003 §3.2.3.1). On a stretched network every site's router has it (an
    anycast gateway)."""
    return subnet.broadcast_address - 1


def host_addresses(
    subnet: IPv4Network, asked: list[IPv4Address | None]
) -> list[IPv4Address | None]:
    """Addresses of a network's hosts: the one ``asked`` or the next free of .1, .2, ...
    in list order, skipping addresses asked by any host and the router's. ``None`` where
    the subnet has run out."""
    taken = {a for a in asked if a is not None} | {router_address(subnet)}
    out: list[IPv4Address | None] = []
    candidates = (subnet.network_address + k for k in range(1, subnet.num_addresses - 1))
    for a in asked:
        if a is not None:
            out.append(a)
            continue
        nxt = None
        for c in candidates:
            if c not in taken:
                nxt = c
                break
        out.append(nxt)
    return out


def tenant_problems(intent: Intent) -> list[Problem]:
    """All problems of ``intent.tenants``, in a stable order.

    Expects the sites to be valid (names unique).
    """
    from polynimbus.numbering import tenant_id, vni_of

    out: list[Problem] = []
    sites = {s.name: s for s in intent.sites}
    site_names = list(sites)
    seen: dict[str, int] = {}
    ids: dict[int, str] = {}
    vnis: dict[int, str] = {}
    for i, tenant in enumerate(intent.tenants):
        path = f"tenants[{i}]"
        if tenant.name in seen:
            out.append(
                Problem(
                    f"{path}.name",
                    f"duplicate tenant name {tenant.name!r} (also tenants[{seen[tenant.name]}])",
                    "tenant names must be unique; rename one",
                )
            )
            continue
        seen[tenant.name] = i
        tid = tenant.id if tenant.id is not None else tenant_id(tenant.name)
        if tid in ids:
            taken = set(ids) | {t.id for t in intent.tenants if t.id is not None}
            free = next(i for i in range(1, 0x8000) if i not in taken)
            out.append(
                Problem(
                    f"{path}.id" if tenant.id is not None else f"{path}.name",
                    f"tenant {tenant.name!r} has the same id ({tid}) as tenant {ids[tid]!r}"
                    + ("" if tenant.id is not None else " (ids are hashed from names)"),
                    f"give one of them another id: (e.g. id: {free}), or rename it",
                )
            )
        ids.setdefault(tid, tenant.name)
        for key in [tenant.name + "/", *(f"{tenant.name}/{n.name}" for n in tenant.networks)]:
            v = vni_of(key)
            if v in vnis and vnis[v] != key:
                out.append(
                    Problem(
                        path,
                        f"network {key!r} has the same VNI ({v}) as {vnis[v]!r} (VNIs are "
                        "hashed from names)",
                        "rename one of the two networks",
                    )
                )
            vnis[v] = key
        out += _tenant(intent, tenant, path, sites, site_names)
    out += _rates(intent)
    return out


def _tenant(
    intent: Intent,
    tenant: TenantSpec,
    path: str,
    sites: Mapping[str, object],
    site_names: list[str],
) -> list[Problem]:
    out: list[Problem] = []
    net_seen: dict[str, int] = {}
    host_seen: dict[str, str] = {}
    subnets: list[tuple[IPv4Network, int]] = []
    for j, net in enumerate(tenant.networks):
        npath = f"{path}.networks[{j}]"
        if net.name in net_seen:
            out.append(
                Problem(
                    f"{npath}.name",
                    f"duplicate network name {net.name!r} in tenant {tenant.name!r} "
                    f"(also {path}.networks[{net_seen[net.name]}])",
                    "network names must be unique within a tenant",
                )
            )
        else:
            net_seen[net.name] = j
        site_seen: set[str] = set()
        for k, s in enumerate(net.sites):
            if s not in sites:
                out.append(
                    Problem(
                        f"{npath}.sites[{k}]",
                        f"no site named {s!r}",
                        did_you_mean(s, site_names) + "sites: " + ", ".join(site_names),
                    )
                )
            elif s in site_seen:
                out.append(
                    Problem(f"{npath}.sites[{k}]", f"site {s!r} is listed twice", "list it once")
                )
            site_seen.add(s)
        subnet = net.subnet
        subnet_ok = True
        if subnet.overlaps(TRANSIT_RANGE):
            out.append(
                Problem(
                    f"{npath}.subnet",
                    f"{subnet} overlaps {TRANSIT_RANGE}, which links the tenant's routers",
                    "choose a subnet outside 169.254.0.0/16",
                )
            )
            subnet_ok = False
        if subnet.prefixlen > 30:
            out.append(
                Problem(
                    f"{npath}.subnet",
                    f"{subnet} is too small: a network needs its router address and hosts",
                    "use a /30 or larger, e.g. a /24",
                )
            )
            subnet_ok = False
        for other, k in subnets:
            if subnet.overlaps(other):
                out.append(
                    Problem(
                        f"{npath}.subnet",
                        f"{subnet} overlaps {other} of network "
                        f"{tenant.networks[k].name!r} in the same tenant",
                        "networks of one tenant need distinct ranges (other tenants may "
                        "reuse them)",
                    )
                )
                break
        subnets.append((subnet, j))
        asked: list[IPv4Address | None] = []
        addr_seen: dict[IPv4Address, int] = {}
        for h, host in enumerate(net.hosts):
            hpath = f"{npath}.hosts[{h}]"
            if host.host in RESERVED_TENANT_HOST_NAMES:
                out.append(
                    Problem(
                        hpath,
                        f"host name {host.host!r} is reserved for the tenant's router",
                        "rename the host",
                    )
                )
            key = f"{host.site}/{host.host}"
            if key in host_seen:
                out.append(
                    Problem(
                        hpath,
                        f"host {key!r} is listed twice in tenant {tenant.name!r} (also "
                        f"{host_seen[key]})",
                        "a tenant host has one interface, on one network; rename one",
                    )
                )
            else:
                host_seen[key] = hpath
            if host.site not in sites:
                out.append(
                    Problem(
                        hpath,
                        f"no site named {host.site!r}",
                        did_you_mean(host.site, site_names) + "sites: " + ", ".join(site_names),
                    )
                )
            elif host.site not in net.sites:
                out.append(
                    Problem(
                        hpath,
                        f"host {key!r} is on site {host.site!r}, which network {net.name!r} "
                        f"does not span (sites: {', '.join(net.sites)})",
                        f"add {host.site} to sites: of network {net.name!r}, or move the host",
                    )
                )
            a = host.address
            asked.append(a)
            if a is None or not subnet_ok:
                continue
            apath = f"{hpath}.address"
            if a not in subnet:
                out.append(
                    Problem(
                        apath,
                        f"{a} is outside network {net.name!r} ({subnet})",
                        f"choose an address in {subnet}",
                    )
                )
            elif a in (subnet.network_address, subnet.broadcast_address):
                out.append(
                    Problem(
                        apath,
                        f"{a} is the network or broadcast address of {subnet}",
                        "choose a host address",
                    )
                )
            elif a == router_address(subnet):
                out.append(
                    Problem(
                        apath,
                        f"{a} is the router's address of network {net.name!r}",
                        "the tenant router takes the last usable address; choose another",
                    )
                )
            elif a in addr_seen:
                out.append(
                    Problem(
                        apath,
                        f"{a} is taken twice (also {npath}.hosts[{addr_seen[a]}])",
                        "give each host its own address",
                    )
                )
            else:
                addr_seen[a] = h
        if subnet_ok:
            router_mac = tenant_mac(intent.name, tenant.name, net.name, "router")
            macs: dict[str, str] = {router_mac: "router"}
            for h, got in enumerate(host_addresses(subnet, asked)):
                if got is not None:
                    mac = tenant_mac(intent.name, tenant.name, net.name, str(got))
                    if mac in macs:
                        out.append(
                            Problem(
                                f"{npath}.hosts[{h}]",
                                f"host {net.hosts[h].name!r} would get the same MAC ({mac}) "
                                f"as {macs[mac]!r} (MACs are hashed from names and addresses)",
                                "give the host another address",
                            )
                        )
                    macs[mac] = net.hosts[h].name
                if got is None:
                    out.append(
                        Problem(
                            f"{npath}.hosts[{h}]",
                            f"network {net.name!r} ({subnet}) has no address left for this host",
                            "use a larger subnet",
                        )
                    )
                    break
    return out


def _rates(intent: Intent) -> list[Problem]:
    """Guaranteed rates against what each site's tunnels carry for tenants
    (:func:`tenant_capacity` of its underlay rate), and the tenant VXLAN port."""
    from polynimbus.tunnels import TRANSPORTS

    out: list[Problem] = []
    if intent.tenants and intent.overlay.effective_port == TENANT_VXLAN_PORT:
        out.append(
            Problem(
                "overlay.port",
                f"UDP {TENANT_VXLAN_PORT} carries the tenants' VXLAN between gateways",
                "choose another port for the overlay",
            )
        )
    overhead = TRANSPORTS.get(intent.overlay.transport).overhead
    mtu = intent.overlay.underlay_mtu
    rates = {s.name: (s.underlay.rate_bps if s.underlay else None) for s in intent.sites}
    totals: dict[str, list[tuple[str, int]]] = {}
    over: set[str] = set()
    for i, tenant in enumerate(intent.tenants):
        bps = tenant.rate_bps
        used = [s for s in tenant.sites if s in rates]
        if bps is None or len(used) < 2:
            continue  # a tenant on one site uses no tunnel
        for s in used:
            under = rates[s]
            if under is None:
                out.append(
                    Problem(
                        f"tenants[{i}].rate",
                        f"tenant {tenant.name!r} has a guaranteed rate, but site {s!r} has "
                        "no underlay rate to share",
                        f"give site {s!r} an underlay: {{rate: ...}} (its tunnels' "
                        "capacity), or remove rate:",
                    )
                )
                continue
            cap = tenant_capacity(under, mtu, overhead)
            if bps > cap:
                out.append(
                    Problem(
                        f"tenants[{i}].rate",
                        f"{_mbit(bps)} is above what the tunnels of site {s!r} carry for "
                        f"tenants: {_mbit(cap)} of its underlay rate {_mbit(under)}, less "
                        "the tunnel's and VXLAN's headers",
                        f"guarantee at most {_mbit(cap)}, or raise the site's underlay rate",
                    )
                )
            else:
                totals.setdefault(s, []).append((tenant.name, bps))
                total = sum(b for _, b in totals[s])
                if total > cap and len(totals[s]) > 1 and s not in over:
                    over.add(s)  # once per site, at the tenant that tips it over
                    out.append(
                        Problem(
                            f"tenants[{i}].rate",
                            f"the guaranteed rates on site {s!r} ("
                            + ", ".join(f"{n} {_mbit(b)}" for n, b in totals[s])
                            + f") add up to {_mbit(total)}, above what its tunnels carry "
                            f"for tenants: {_mbit(cap)} of its underlay rate {_mbit(under)}",
                            "lower the tenants' rates, or raise the site's underlay rate",
                        )
                    )
    return out
