"""The emulated multi-cloud lab as desired resources (pure).

::

                          pn.LAB.internet  (router; 198.18.0.0/15 /31 per gateway; 192.0.2.1)
                 uSID /        |        \\ uSID
             wan0 /            |         \\ wan0
     pn.LAB.A.gateway   pn.LAB.B.gateway   pn.LAB.C.gateway   <- tunnels between gateways
        lan0 (bridge)      lan0 (bridge)      lan0 (bridge)
        hN |   | hN          hN |               hN |
      eth0 host eth0 host   eth0 host          eth0 host       (pn.LAB.SITE.HOST)

Every node is a namespace. A site's hosts share the LAN bridge of their gateway and route
everything through it; only the gateway has a public address (seed 003 §3.1.1).
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Network

from polynimbus import names
from polynimbus.keys import KeyPair
from polynimbus.plan.ipam import INTERNET_SERVICE
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.render.nftables import render_gateway_ruleset, ruleset_digest
from polynimbus.resources import Resource, netns
from polynimbus.tunnels import TunnelBackend, get_transport

LAN_MTU = 1500
TBF_LATENCY_MS = 50
"""Longest a packet may wait in a shaped queue, in ms (tbf ``latency``)."""


def veth(
    node_a: str,
    if_a: str,
    node_b: str,
    if_b: str,
    mtu: int,
    master_a: str | None = None,
    master_b: str | None = None,
) -> Resource:
    """A veth pair as one resource, keyed by its lexicographically smaller end."""
    if (node_b, if_b) < (node_a, if_a):
        node_a, if_a, node_b, if_b = node_b, if_b, node_a, if_a
        master_a, master_b = master_b, master_a
    return Resource.make(
        "link",
        node_a,
        if_a,
        type="veth",
        mtu=mtu,
        up=True,
        master=master_a,
        peer_node=node_b,
        peer_name=if_b,
        peer_master=master_b,
    )


def shaping(
    node: str, ifname: str, rate_bps: int | None, delay_ms: float | None, netem: bool
) -> list[Resource]:
    """Root qdisc of a shaped underlay link: tbf for rate, netem when delay is asked and the
    kernel has it (netem then shapes the rate too)."""
    if delay_ms is not None and netem:
        return [
            Resource.make("qdisc", node, ifname, type="netem", delay_ms=delay_ms, rate_bps=rate_bps)
        ]
    if rate_bps is not None:
        return [
            Resource.make(
                "qdisc", node, ifname, type="tbf", rate_bps=rate_bps, latency_ms=TBF_LATENCY_MS
            )
        ]
    return []


def _lo(node: str) -> Resource:
    return Resource.make("link", node, "lo", type="loopback", up=True)


def render_lab(
    plan: Plan, keys: Mapping[str, KeyPair], wireguard_impl: str = "userspace", netem: bool = False
) -> list[Resource]:
    """Every resource of the lab for ``plan``, in creation order.

    Args:
        keys: key pairs by site name (for transports that need them).
        wireguard_impl: ``kernel`` or ``userspace`` (``wireguard-go``).
        netem: whether the kernel has netem (delay emulation).
    """
    lab = plan.name
    inet = names.internet_ns(lab)
    backend = get_transport(plan.transport)
    out: list[Resource] = [
        netns(inet),
        Resource.make("sysctl", inet, "net.ipv4.ip_forward", value="1"),
        _lo(inet),
        Resource.make("addr", inet, f"lo {INTERNET_SERVICE}/32"),
    ]
    for site in plan.sites:
        out += _site(plan, site, inet, backend, keys, wireguard_impl, netem)
    out.sort(key=lambda r: r.rank)
    return out


def _site(
    plan: Plan,
    site: SitePlan,
    inet: str,
    backend: TunnelBackend,
    keys: Mapping[str, KeyPair],
    wireguard_impl: str,
    netem: bool,
) -> list[Resource]:
    lab = plan.name
    gw = names.gateway_ns(lab, site.name)
    up_if = names.uplink_if(site.site_id)
    block = IPv4Network(site.block)
    out = [
        netns(gw),
        Resource.make("sysctl", gw, "net.ipv4.ip_forward", value="1"),
        Resource.make("sysctl", gw, "net.ipv4.conf.all.rp_filter", value="0"),
        Resource.make("sysctl", gw, "net.ipv4.conf.default.rp_filter", value="0"),
        _lo(gw),
        veth(gw, names.WAN_IF, inet, up_if, LAN_MTU),
        Resource.make("addr", gw, f"{names.WAN_IF} {site.public_address}/31"),
        Resource.make("addr", inet, f"{up_if} {site.internet_address}/31"),
        Resource.make("route", gw, "default", dev=names.WAN_IF, via=site.internet_address),
        Resource.make("link", gw, names.LAN_BRIDGE, type="bridge", mtu=LAN_MTU, up=True),
        Resource.make("addr", gw, f"{names.LAN_BRIDGE} {site.gateway_address}/{block.prefixlen}"),
    ]
    out += shaping(gw, names.WAN_IF, site.rate_bps, site.delay_ms, netem)
    out += shaping(inet, up_if, site.rate_bps, site.delay_ms, netem)
    out += backend.gateway_resources(plan, site, gw, keys, wireguard_impl)
    ruleset = render_gateway_ruleset(plan, site, backend.ifname_pattern(plan, site))
    out.append(
        Resource.make("nft", gw, "polynimbus", payload=ruleset, digest=ruleset_digest(ruleset))
    )
    for host in site.hosts:
        hn = names.host_ns(lab, site.name, host.name)
        out += [
            netns(hn),
            _lo(hn),
            veth(
                hn,
                names.HOST_IF,
                gw,
                names.host_port_if(host.offset),
                LAN_MTU,
                master_b=names.LAN_BRIDGE,
            ),
            Resource.make("addr", hn, f"{names.HOST_IF} {host.address}/{block.prefixlen}"),
            Resource.make("route", hn, "default", dev=names.HOST_IF, via=site.gateway_address),
        ]
    return out
