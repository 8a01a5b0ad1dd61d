"""One site's gateway as a node model (pure), wherever the gateway runs.

The same model is applied by the lab into a namespace and, later, by an agent on a real
Linux gateway to its own host. It assumes two interfaces the environment provides: the
WAN interface (``wan_if``, the gateway's public side) and the ports of hosts that join the
LAN bridge; everything else is in the model (seed 003 §3.1.1: the gateway is the site's
only public node; it routes the overlay, NATs its hosts and filters the internet).
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Network
from typing import Any

from polynimbus import names
from polynimbus.node import Address, Item, Link, NftTable, NodeModel, Qdisc, Route, Sysctl
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.render.nftables import FAMILY, TABLE, render_gateway_ruleset
from polynimbus.render.srv6 import gateway_srv6
from polynimbus.render.tenants import gateway_tenant_items
from polynimbus.tunnels import get_transport

LAN_MTU = 1500
"""MTU of the site LAN and of the underlay links, bytes."""
TBF_LATENCY_MS = 50
"""Longest a packet may wait in a shaped queue, in ms (sets the tbf queue length)."""
TBF_MIN_BURST = 2 * (LAN_MTU + 14)
"""Smallest tbf bucket, bytes: two full Ethernet frames."""
TBF_BURST_US = 50
"""The tbf bucket holds this long at the rate, in µs, when that is more than
:data:`TBF_MIN_BURST` (above about 480 Mbit/s)."""


def shaping(dev: str, rate_bps: int | None, delay_ms: float | None, netem: bool) -> list[Item]:
    """Root qdisc of a shaped underlay link.

    tbf for the rate: the rate is rounded down to whole bytes per second (the kernel keeps
    bytes/s), the bucket holds two full frames (:data:`TBF_MIN_BURST`) or
    :data:`TBF_BURST_US` at the rate, whichever is more, and the queue
    :data:`TBF_LATENCY_MS` at the rate plus the bucket. A small bucket makes the link
    behave like a wire of that rate: a bigger one (it was 10 ms) let a short burst through
    at line rate, so ``polynimbus abw``'s probe streams saw no queue above the available
    bandwidth; TCP through it ran at 95.5 Mbit/s of 100 and 190 of 200, as with the
    bigger one (about 4 % less at 1 Gbit/s). netem when a delay is asked and the
    kernel has it (netem then shapes the rate too).

    Args:
        rate_bps: bit/s, or ``None``.
        delay_ms: one-way delay in ms, or ``None``.
        netem: whether the kernel has the netem qdisc.
    """
    rate = rate_bps - rate_bps % 8 if rate_bps else None
    if delay_ms is not None and netem:
        return [Qdisc(dev, "netem", rate_bps=rate, delay_ms=delay_ms)]
    if rate:
        burst = max(TBF_MIN_BURST, rate // 8 * TBF_BURST_US // 1_000_000)
        limit = rate // 8 * TBF_LATENCY_MS // 1000 + burst
        return [Qdisc(dev, "tbf", rate_bps=rate, limit_bytes=limit, burst_bytes=burst)]
    return []


def render_gateway(
    plan: Plan,
    site: SitePlan,
    keys: Mapping[str, Any],
    impl: str = "userspace",
    netem: bool = False,
    wan_if: str = names.WAN_IF,
    standby: bool = False,
) -> NodeModel:
    """The node model of ``site``'s gateway (of its standby gateway with ``standby``: a
    ``gateways: 2`` site, :mod:`polynimbus.render.standby`).

    Args:
        keys: the transport's credentials by site name (key pairs, certificates).
        impl: the transport's implementation (``TunnelBackend.implementation``).
        netem: whether the kernel has netem (delay emulation).
        wan_if: the gateway's public interface (provided by the environment).
        standby: render the site's standby gateway rather than its primary.

    Returns:
        sysctls (forwarding on, reverse-path filter and ICMP redirects off for transit),
        the LAN bridge with the gateway's overlay address, the public address and default
        route, underlay shaping, the transport's items (tunnels, processes, overlay routes,
        configuration), the failover agent (``overlay.failover``), the nftables table, SRv6
        items, and the tenants' share (VXLAN admission, per-tenant shaping:
        :func:`polynimbus.render.tenants.gateway_tenant_items`).
    """
    backend = get_transport(plan.transport)
    block = IPv4Network(site.block)
    vrrp: list[Item] = []
    vip: dict[str, str] = {}
    if site.standby is not None:  # gateways: 2; each gateway sees the site as its own
        from polynimbus.render.standby import gateway_view, keepalived_process, node_name

        vip = {"vip": site.gateway_address, "node": node_name(standby)}
        vrrp.append(keepalived_process(site, names.LAN_BRIDGE, standby))
        site, keys = gateway_view(site, keys, standby)
    model = NodeModel().add(
        Sysctl("net.ipv4.ip_forward", "1"),
        Sysctl("net.ipv4.conf.all.rp_filter", "0"),
        Sysctl("net.ipv4.conf.default.rp_filter", "0"),
        # transit leaves by the tunnel interface it came in by (hub, failover detours):
        # no ICMP redirects to the sender, who cannot reach the "better" next hop anyway
        Sysctl("net.ipv4.conf.all.send_redirects", "0"),
        Sysctl("net.ipv4.conf.default.send_redirects", "0"),
        Link("lo", "loopback"),
        Address(wan_if, f"{site.public_address}/31"),
        Route("default", dev=wan_if, via=site.internet_address),
        Link(names.LAN_BRIDGE, "bridge", mtu=LAN_MTU),
        Address(names.LAN_BRIDGE, f"{site.gateway_address}/{block.prefixlen}"),
    )
    model.add(*shaping(wan_if, site.rate_bps, site.delay_ms, netem))
    tunnel_items = backend.gateway_items(plan, site, keys, impl)
    model.add(*tunnel_items)
    if plan.failover:  # the planner admits it only where the transport supports it
        from polynimbus.render.failover import failover_agent

        devs = [i.name for i in tunnel_items if isinstance(i, Link)]
        model.add(failover_agent(plan, site, keys, devs, **vip))
    model.add(*vrrp)
    if plan.parallel > 1:  # spread flows over the parallel tunnels by their layer-4 header
        model.add(Sysctl("net.ipv4.fib_multipath_hash_policy", "1"))
        if plan.ipv6:
            model.add(Sysctl("net.ipv6.fib_multipath_hash_policy", "1"))
    pattern = backend.ifname_pattern(plan, site)
    sr_items, forward, accept_nfv = gateway_srv6(
        plan, site, wan_if, pattern, checks_source=backend.checks_source
    )
    ruleset = render_gateway_ruleset(plan, site, pattern, forward, accept_nfv)
    model.add(NftTable(FAMILY, TABLE, ruleset))
    model.add(*sr_items)
    tunnel_devs = [i.name for i in tunnel_items if isinstance(i, Link)]
    model.add(*gateway_tenant_items(plan, site, tunnel_devs))
    return model
