"""VXLAN transport (RFC 7348), unencrypted: one point-to-point VXLAN device per tunnel.

Each tunnel has its own VNI (see :func:`polynimbus.plan.build.allocate_vnis`) and unicast
remote. Overlay routes point at the peer gateway's overlay address, on-link through the
tunnel device; the peer answers ARP for it (Linux answers for any local address). On a
dual-stack overlay each tunnel device also holds the gateway's IPv6 address (/128), so the
peer's neighbour solicitations for it are answered (Linux answers those only for addresses
of the receiving interface), and IPv6 prefixes route via the peer's IPv6 address.
VXLAN has no authentication: the gateway's firewall admits its UDP port only from the
peers' public addresses (see :mod:`polynimbus.render.nftables`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from polynimbus.names import vxlan_if
from polynimbus.node import Address, Item, Link, Route, VxlanParams
from polynimbus.tunnels.base import TRANSPORTS, TunnelBackend

if TYPE_CHECKING:
    from polynimbus.plan.model import Plan, SitePlan


@TRANSPORTS.register("vxlan")
class VxlanBackend(TunnelBackend):
    """Unencrypted layer-2 tunnels with the kernel's VXLAN."""

    name = "vxlan"
    encrypted = False
    default_port = 4789  # IANA, RFC 7348 §5
    # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 (RFC 7348 §5)
    overhead = 20 + 8 + 8 + 14
    summary = "kernel VXLAN, unencrypted (a lab or a trusted underlay only)"
    vni_per_tunnel = True

    def ifname_pattern(self, plan: Plan, site: SitePlan) -> str:
        return "vx*"

    def gateway_items(
        self, plan: Plan, site: SitePlan, creds: Mapping[str, Any], impl: str
    ) -> list[Item]:
        out: list[Item] = []
        for peer in site.peers:
            p = plan.sites[peer.site]
            ifname = vxlan_if(p.site_id)
            assert peer.vni is not None
            params = VxlanParams(
                vni=peer.vni, port=plan.port, local=site.public_address, remote=p.public_address
            )
            out.append(Link(ifname, "vxlan", mtu=plan.tunnel_mtu, vxlan=params))
            if site.gateway_address6:
                # the peer must answer neighbour solicitations for its address on the
                # tunnel device itself (Linux answers only for the receiving interface)
                out.append(Address(ifname, f"{site.gateway_address6}/128"))
            for d in peer.reaches:
                for prefix in plan.prefixes(d):
                    v6 = ":" in prefix
                    via = p.gateway_address6 if v6 else p.gateway_address
                    assert via is not None
                    out.append(Route(prefix, dev=ifname, via=via, onlink=True))
        return out
