"""Tenants as node models (pure): their routers and hosts, and the gateway's share.

Seed 001 §3 (a virtual router per tenant, isolation of traffic and of bandwidth) and seed
004 §III (layer-2 extension in VXLAN inside the encrypted tunnels; MTU and MSS; per-tenant
shaping on shared tunnels). On each site a tenant uses:

- its **router** (a namespace of its own: the tenant's routing table, like a VRF) has a
  bridge per network of the site carrying the router's address (the hosts' gateway; one
  anycast address and MAC on every site of a stretched network), a VXLAN port per
  stretched network, and a transit VXLAN port ``tr0`` joining it to the tenant's other
  routers. Its VXLAN devices are made in the gateway's namespace and moved in: their
  UDP sockets stay with the gateway, so their packets ride the gateway's tunnels between
  gateway overlay addresses (:data:`~polynimbus.plan.tenants.TENANT_VXLAN_PORT`), while no
  tenant address ever exists in the gateway. ARP from the anycast MAC never leaves
  through a VXLAN port (each site answers its own hosts, and no router learns a remote
  host's MAC: it routes to it over the transit network). TCP MSS is clamped to the route
  MTU.
- each **host** has one interface with its MAC, address and default route; IPv6 is off.
- the **gateway** accepts tenant VXLAN only from peer gateways (never from its LAN, which
  could otherwise inject frames into a tenant), and when tenants have a rate, an htb tree
  on the tunnel interface gives each tenant its guaranteed rate and lets it borrow up to
  the tunnel's capacity; nftables sets each tenant's VXLAN packets' priority to its
  class (by VNI, which the plaintext VXLAN header shows before encryption).
"""

from __future__ import annotations

from collections.abc import Sequence

from polynimbus import names
from polynimbus.intent.tenants import ETHERNET_HEADER, SHAPING_MARGIN, TENANT_SHARE
from polynimbus.node import (
    Address,
    FdbEntry,
    Item,
    Link,
    Netns,
    NftTable,
    Qdisc,
    Route,
    Sysctl,
    TrafficClass,
    VethPeer,
    VxlanParams,
)
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.plan.tenants import (
    TENANT_VXLAN_PORT,
    NetworkPlan,
    TenantPlan,
    crossing_tenants,
    router_routes,
    transit_address,
)
from polynimbus.resources import Resource, on
from polynimbus.tunnels import get_transport

ZERO_MAC = "00:00:00:00:00:00"
TENANT_TABLE = "pn-tenant"
"""nftables table of a tenant router (``inet``: MSS clamp; ``bridge``: anycast filter)."""
GATEWAY_TABLE = "pn-tenants"
"""nftables table of a gateway's share of the tenants (``inet``)."""
ROOT_CLASS = 0x8000
"""Minor of the htb root class of a tunnel interface (tenant ids are below it)."""
DEFAULT_CLASS = 0x8001
"""Minor of the htb class of everything that is not a tenant's (the provider overlay)."""
COMMENT = "managed by polynimbus: changes are undone by the next up"


def tunnel_capacity(plan: Plan, site: SitePlan) -> int | None:
    """What the tunnel interfaces of ``site`` can carry before its underlay link queues, in
    bit/s of inner packets (whole bytes), or ``None`` without an underlay rate.

    The underlay rate counts whole frames; a full-size inner packet of ``tunnel_mtu``
    bytes becomes ``underlay_mtu`` + 14 bytes of frame, so the capacity is
    ``rate * tunnel_mtu / (underlay_mtu + 14)``, less :data:`SHAPING_MARGIN`.
    """
    if not site.rate_bps:
        return None
    bps = int(
        site.rate_bps * plan.tunnel_mtu / (plan.underlay_mtu + ETHERNET_HEADER) * SHAPING_MARGIN
    )
    return bps - bps % 8


def gateway_tenant_items(plan: Plan, site: SitePlan, tunnel_devs: Sequence[str] = ()) -> list[Item]:
    """The gateway's share of the tenants (nothing in a lab without tenants).

    Args:
        tunnel_devs: the gateway's tunnel interfaces (the transport's links), where the
            tenants' traffic is shaped.

    Returns:
        the ``inet pn-tenants`` table, on every gateway of a lab with tenants (a gateway
        without tenants of its own may still be their transit): tenant VXLAN is taken, or
        forwarded, only when it arrived through a tunnel and, when it is for this gateway,
        from another gateway's overlay address (never from a LAN, an NFV node or an
        address a host could take); its packets' priority is set to their tenant's class by
        VNI on their way out (``postrouting``: sent here or forwarded in transit). When
        tenants with rates use the site's tunnels and the site has an underlay rate, an htb
        root qdisc on each tunnel interface with a root class at :func:`tunnel_capacity`,
        a class per tenant (rate: :func:`class_rates`; ceil: the capacity) and a default
        class for the rest.
    """
    if not plan.tenants:
        return []
    backend = get_transport(plan.transport)
    tun = backend.ifname_pattern(plan, site)
    every = sorted(
        (s.gateway_address for s in plan.sites),
        key=lambda a: tuple(int(x) for x in a.split(".")),
    )
    others = [a for a in every if a != site.gateway_address]
    capacity = tunnel_capacity(plan, site)
    shaped = crossing_tenants(plan, site.name) if capacity else []
    priorities = ""
    for t in shaped:
        vnis = ", ".join(str(v) for v in sorted({t.transit_vni, *(n.vni for n in t.networks)}))
        priorities += (
            f"\t\tudp dport {TENANT_VXLAN_PORT} @th,96,24 {{ {vnis} }} "
            f'meta priority set 1:{t.tenant_id:x} comment "tenant {t.name}"\n'
        )
    port = TENANT_VXLAN_PORT
    if others:
        from_gateways = (
            f"\t\tudp dport {port} ip saddr != {{ {', '.join(others)} }} drop "
            'comment "tenant VXLAN only from gateways"\n'
        )
    else:
        from_gateways = f'\t\tudp dport {port} drop comment "no other gateway"\n'
    ruleset = (
        f"table inet {GATEWAY_TABLE} {{\n"
        f'\tcomment "{COMMENT}"\n\n'
        "\tchain input {\n"
        "\t\ttype filter hook input priority filter - 1; policy accept;\n"
        f'\t\tiifname != "{tun}" udp dport {port} drop '
        'comment "tenant VXLAN only through the tunnels"\n'
        f"{from_gateways}"
        "\t}\n\n"
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter - 1; policy accept;\n"
        f'\t\tiifname != "{tun}" ip daddr {{ {", ".join(every)} }} udp dport {port} drop '
        'comment "tenant VXLAN to a gateway never from a LAN or an NFV node"\n'
        "\t}\n\n"
        "\tchain postrouting {\n"
        "\t\ttype filter hook postrouting priority filter; policy accept;\n"
        f"{priorities}"
        "\t}\n"
        "}\n"
    )
    items: list[Item] = [NftTable("inet", GATEWAY_TABLE, ruleset)]
    if capacity and shaped:
        rates = class_rates(plan, shaped, capacity)
        rest = max(capacity - sum(rates.values()), capacity // 100)
        rest -= rest % 8
        for dev in tunnel_devs:
            items += [
                Qdisc(dev, "htb", default_class=DEFAULT_CLASS),
                TrafficClass(dev, ROOT_CLASS, 0, capacity, capacity),
                TrafficClass(dev, DEFAULT_CLASS, ROOT_CLASS, rest, capacity),
            ]
            for t in shaped:
                items.append(TrafficClass(dev, t.tenant_id, ROOT_CLASS, rates[t.name], capacity))
    return items


def class_rates(plan: Plan, tenants: list[TenantPlan], capacity: int) -> dict[str, int]:
    """The htb rate of each tenant's class on a tunnel interface, bit/s (whole bytes).

    A tenant's ``rate`` counts its own packets; on the tunnel interface each carries
    :data:`~polynimbus.plan.tenants.VXLAN_OVERHEAD` bytes more, so the class gets
    ``rate * tunnel_mtu / tenant_mtu`` (a full-size packet's ratio; smaller packets get a
    little less). When those add up to more than :data:`TENANT_SHARE` of ``capacity`` (the
    rest stays for the provider overlay), all are scaled down in proportion: every tenant
    still gets the same share of what there is (validation keeps the tenants of a site
    within it; a transit site may carry more tenants than its own).
    """
    want = {t.name: (t.rate_bps or 0) * plan.tunnel_mtu // plan.tenant_mtu for t in tenants}
    room = int(capacity * TENANT_SHARE)
    total = sum(want.values())
    scale = min(1.0, room / total) if total else 1.0
    return {name: max(8, int(v * scale) // 8 * 8) for name, v in want.items()}


def _router_ruleset(networks: list[NetworkPlan]) -> tuple[str, str]:
    inet = (
        f"table inet {TENANT_TABLE} {{\n"
        f'\tcomment "{COMMENT}"\n\n'
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        "\t\ttcp flags syn / syn,rst tcp option maxseg size set rt mtu "
        'comment "MSS clamp"\n'
        "\t}\n"
        "}\n"
    )
    rules = ""
    for n in networks:
        if n.layer2:
            rules += (
                f'\t\toifname "{names.tenant_vxlan_if(n.index)}" ether saddr {n.router_mac} '
                f'ether type arp drop comment "anycast gateway of {n.name} answers on its '
                'site only"\n'
            )
    bridge = ""
    if rules:
        bridge = (
            f"table bridge {TENANT_TABLE} {{\n"
            f'\tcomment "{COMMENT}"\n\n'
            "\tchain forward {\n"
            "\t\ttype filter hook forward priority filter; policy accept;\n"
            f"{rules}"
            "\t}\n\n"
            "\tchain output {\n"
            "\t\ttype filter hook output priority filter; policy accept;\n"
            f"{rules}"
            "\t}\n"
            "}\n"
        )
    return inet, bridge


_NO_IPV6 = (
    Sysctl("net.ipv6.conf.all.disable_ipv6", "1"),
    Sysctl("net.ipv6.conf.default.disable_ipv6", "1"),
)


def render_tenant_site(plan: Plan, tenant: TenantPlan, site: SitePlan) -> list[Resource]:
    """The router of ``tenant`` on ``site`` and the tenant's hosts there, as resources.

    Raises:
        KeyError: a site of the tenant is not in the plan (the intent was not validated).
    """
    lab = plan.name
    order = [s.name for s in plan.sites]
    mtu = plan.tenant_mtu
    gw = names.gateway_ns(lab, site.name)
    router = names.tenant_router_ns(lab, site.name, tenant.name)
    nets = tenant.networks_at(site.name)
    out = on(
        router,
        Netns(),
        Sysctl("net.ipv4.ip_forward", "1"),
        Sysctl("net.ipv4.conf.all.rp_filter", "0"),
        Sysctl("net.ipv4.conf.default.rp_filter", "0"),
        *_NO_IPV6,
        Link("lo", "loopback"),
    )
    local = site.gateway_address

    def vxlan(name: str, vni: int, master: str | None) -> Link:
        return Link(
            name,
            "vxlan",
            mtu=mtu,
            master=master,
            vxlan=VxlanParams(
                vni=vni, port=TENANT_VXLAN_PORT, local=local, learning=True, underlay=gw
            ),
        )

    if len(tenant.sites) > 1:
        out += on(
            router,
            vxlan(names.TRANSIT_IF, tenant.transit_vni, None),
            Address(names.TRANSIT_IF, f"{transit_address(order.index(site.name))}/16"),
            *(
                FdbEntry(names.TRANSIT_IF, ZERO_MAC, plan.site(s).gateway_address)
                for s in tenant.sites
                if s != site.name
            ),
        )
        for prefix, via in router_routes(tenant, site.name, order):
            out += on(router, Route(prefix, dev=names.TRANSIT_IF, via=via))
    for n in nets:
        br = names.tenant_bridge_if(n.index)
        out += on(
            router,
            Link(br, "bridge", mtu=mtu, mac=n.router_mac),
            Address(br, f"{n.router_address}/{n.prefixlen}"),
        )
        if n.layer2:
            vx = names.tenant_vxlan_if(n.index)
            out += on(
                router,
                vxlan(vx, n.vni, br),
                *(
                    FdbEntry(vx, ZERO_MAC, plan.site(s).gateway_address)
                    for s in n.sites
                    if s != site.name
                ),
            )
        for i, h in enumerate(n.hosts):
            if h.site != site.name:
                continue
            hn = names.tenant_host_ns(lab, site.name, tenant.name, h.name)
            port = names.tenant_port_if(n.index, i)
            out += on(hn, Netns(), *_NO_IPV6, Link("lo", "loopback"))
            out.append(_veth(hn, names.HOST_IF, h.mac, router, port, br, mtu))
            out += on(
                hn,
                Address(names.HOST_IF, f"{h.address}/{n.prefixlen}"),
                Route("default", dev=names.HOST_IF, via=n.router_address),
            )
    inet, bridge = _router_ruleset(nets)
    out += on(router, NftTable("inet", TENANT_TABLE, inet))
    if bridge:
        out += on(router, NftTable("bridge", TENANT_TABLE, bridge))
    return out


def _veth(
    host_ns: str, host_if: str, mac: str, router: str, port: str, bridge: str, mtu: int
) -> Resource:
    """A host's veth pair, placed on its lexicographically smaller end (as the lab's
    observation reports pairs)."""
    if (host_ns, host_if) < (router, port):
        return Resource(
            host_ns,
            Link(host_if, "veth", mtu=mtu, mac=mac, peer=VethPeer(router, port, bridge)),
        )
    return Resource(
        router,
        Link(port, "veth", mtu=mtu, master=bridge, peer=VethPeer(host_ns, host_if, None, mac)),
    )


def render_tenants(plan: Plan) -> list[Resource]:
    """Every tenant router and host of ``plan``, as resources (the lab's layout)."""
    out: list[Resource] = []
    for t in plan.tenants:
        for s in t.sites:
            out += render_tenant_site(plan, t, plan.site(s))
    return out
