"""The emulated multi-cloud lab scaffold (pure): where every node lives and how they are
wired. The only module that knows the lab's namespace layout.

::

                          pn.LAB.internet  (router; 198.18.0.0/15 /31 per gateway; 192.0.2.1)
                 uSID /        |        \\ uSID
             wan0 /            |         \\ wan0
     pn.LAB.A.gateway   pn.LAB.B.gateway   pn.LAB.C.gateway   <- tunnels between gateways
        lan0 (bridge)      lan0 (bridge)      lan0 (bridge)
        hN |   | hN          hN |               hN |
      eth0 host eth0 host   eth0 host          eth0 host       (pn.LAB.SITE.HOST)

Every node is a namespace. A site's hosts share the LAN bridge of their gateway and route
everything through it; only the gateway has a public address (seed 003 §3.1.1). The
underlay links (``wan0`` and its internet-side peer) have the intent's ``underlay_mtu``;
LANs have 1500 bytes. Each
gateway's own configuration comes from :func:`polynimbus.render.gateway.render_gateway`,
which does not know it runs here.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from polynimbus import names
from polynimbus.node import Address, Link, Netns, Route, Sysctl, VethPeer
from polynimbus.numbering import INTERNET_SERVICE
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.render.gateway import LAN_MTU, render_gateway, shaping
from polynimbus.render.srv6 import host_routes, render_function, render_nfv
from polynimbus.render.tenants import render_tenants
from polynimbus.resources import Resource, on


def veth(
    node_a: str,
    if_a: str,
    node_b: str,
    if_b: str,
    mtu: int,
    master_a: str | None = None,
    master_b: str | None = None,
) -> Resource:
    """A veth pair as one resource, placed on its lexicographically smaller end."""
    if (node_b, if_b) < (node_a, if_a):
        node_a, if_a, node_b, if_b = node_b, if_b, node_a, if_a
        master_a, master_b = master_b, master_a
    return Resource(
        node_a, Link(if_a, "veth", mtu=mtu, master=master_a, peer=VethPeer(node_b, if_b, master_b))
    )


def render_lab(
    plan: Plan,
    keys: Mapping[str, Any],
    impl: str = "userspace",
    netem: bool = False,
) -> list[Resource]:
    """Every resource of the lab for ``plan``, in creation order.

    Args:
        keys: the transport's credentials by site name (key pairs, certificates).
        impl: the transport's implementation (``TunnelBackend.implementation``).
        netem: whether the kernel has netem (delay emulation).
    """
    inet = names.internet_ns(plan.name)
    out: list[Resource] = on(
        inet,
        Netns(),
        Sysctl("net.ipv4.ip_forward", "1"),
        Link("lo", "loopback"),
        Address("lo", f"{INTERNET_SERVICE}/32"),
    )
    if plan.srv6 is not None and plan.srv6.carrier == "underlay":
        out += on(inet, Sysctl("net.ipv6.conf.all.forwarding", "1"))
    for site in plan.sites:
        out += _site(plan, site, inet, keys, impl, netem)
        if plan.srv6 is not None and site.name in plan.srv6.nfv_sites:
            out += _nfv(plan, site)
    out += render_tenants(plan)
    out.sort(key=lambda r: r.rank)
    return out


def _site(
    plan: Plan,
    site: SitePlan,
    inet: str,
    keys: Mapping[str, Any],
    impl: str,
    netem: bool,
) -> list[Resource]:
    lab = plan.name
    if site.standby is not None:
        return _twin_site(plan, site, inet, keys, impl, netem)
    gw = names.gateway_ns(lab, site.name)
    up_if = names.uplink_if(site.site_id)
    block = IPv4Network(site.block)
    gateway = render_gateway(plan, site, keys, impl, netem, wan_if=names.WAN_IF)
    out = on(gw, Netns(), *gateway.items)
    out.append(veth(gw, names.WAN_IF, inet, up_if, plan.underlay_mtu))  # the intent's
    out += on(inet, Address(up_if, f"{site.internet_address}/31"))
    if site.internet_address6 and site.public_address6 and site.sid_block:
        out += on(
            inet,
            Address(up_if, f"{site.internet_address6}/64"),
            Route(site.sid_block, dev=up_if, via=site.public_address6),
        )
    out += on(inet, *shaping(up_if, site.rate_bps, site.delay_ms, netem))
    for host in site.hosts:
        hn = names.host_ns(lab, site.name, host.name)
        out += on(hn, Netns(), Link("lo", "loopback"))
        out.append(
            veth(
                hn,
                names.HOST_IF,
                gw,
                names.host_port_if(host.offset),
                LAN_MTU,
                master_b=names.LAN_BRIDGE,
            )
        )
        out += on(
            hn,
            Address(names.HOST_IF, f"{host.address}/{block.prefixlen}"),
            Route("default", dev=names.HOST_IF, via=site.gateway_address),
        )
        if host.address6 and site.gateway_address6 and site.block6:
            plen = IPv6Network(site.block6).prefixlen
            out += on(
                hn,
                Address(names.HOST_IF, f"{host.address6}/{plen}"),
                Route("default6", dev=names.HOST_IF, via=site.gateway_address6),
            )
        out += on(hn, *host_routes(plan, site, host.address, host.address6))
    return out


def _twin_site(
    plan: Plan,
    site: SitePlan,
    inet: str,
    keys: Mapping[str, Any],
    impl: str,
    netem: bool,
) -> list[Resource]:
    """A site with two gateways (``gateways: 2``, :mod:`polynimbus.plan.standby`): the
    hosts' LAN is a bridge in a switch node of its own (``pn.LAB.SITE.lan``), so it
    outlives either gateway; each gateway joins it from its own ``lan0`` bridge (port
    ``lan1``) and has its own uplink to the internet router."""
    assert site.standby is not None
    lab = plan.name
    sw = names.switch_ns(lab, site.name)
    block = IPv4Network(site.block)
    out = on(sw, Netns(), Link("lo", "loopback"), Link(names.LAN_BRIDGE, "bridge", mtu=LAN_MTU))
    sb = site.standby
    for standby, ns, up_if, inet_addr in (
        (
            False,
            names.gateway_ns(lab, site.name),
            names.uplink_if(site.site_id),
            site.internet_address,
        ),
        (
            True,
            names.standby_ns(lab, site.name),
            names.standby_uplink_if(site.site_id),
            sb.internet_address,
        ),
    ):
        gateway = render_gateway(plan, site, keys, impl, netem, names.WAN_IF, standby)
        out += on(ns, Netns(), *gateway.items)
        out.append(veth(ns, names.WAN_IF, inet, up_if, plan.underlay_mtu))
        out += on(inet, Address(up_if, f"{inet_addr}/31"))
        out += on(inet, *shaping(up_if, site.rate_bps, site.delay_ms, netem))
        port = names.switch_port_if("gateway-2" if standby else "gateway")
        out.append(
            veth(ns, names.SWITCH_LINK_IF, sw, port, LAN_MTU, names.LAN_BRIDGE, names.LAN_BRIDGE)
        )
    for host in site.hosts:
        hn = names.host_ns(lab, site.name, host.name)
        out += on(hn, Netns(), Link("lo", "loopback"))
        out.append(
            veth(
                hn,
                names.HOST_IF,
                sw,
                names.host_port_if(host.offset),
                LAN_MTU,
                master_b=names.LAN_BRIDGE,
            )
        )
        out += on(
            hn,
            Address(names.HOST_IF, f"{host.address}/{block.prefixlen}"),
            Route("default", dev=names.HOST_IF, via=site.gateway_address),
        )
    return out


def _nfv(plan: Plan, site: SitePlan) -> list[Resource]:
    """The NFV node of ``site`` and its functions, wired to the gateway (seed 002 §III)."""
    assert plan.srv6 is not None
    lab = plan.name
    gw = names.gateway_ns(lab, site.name)
    nfv = names.nfv_ns(lab, site.name)
    out = on(nfv, Netns(), *render_nfv(plan, site).items)
    out.append(veth(gw, names.NFV_IF, nfv, names.CORE_IF, LAN_MTU))
    for svc in plan.srv6.services:
        if svc.site != site.name:
            continue
        fn = names.service_ns(lab, site.name, svc.name)
        out += on(fn, Netns(), *render_function(plan, svc).items)
        if svc.mode == "sr-aware":
            out.append(veth(nfv, svc.aware_if, fn, names.NFV_IF, LAN_MTU))
        for link in svc.links:
            for side in (0, 1):
                out.append(veth(nfv, link.nfv_if[side], fn, link.fn_if[side], LAN_MTU))
    return out
