"""VXLAN transport (RFC 7348), unencrypted: one point-to-point VXLAN device per tunnel.

Each tunnel has its own VNI (see :func:`polynimbus.plan.build.allocate_vnis`) and unicast
remote. Overlay routes point at the peer gateway's overlay address, on-link through the
tunnel device; the peer answers ARP for it (Linux answers for any local address).
"""

from __future__ import annotations

from collections.abc import Mapping

from polynimbus.keys import KeyPair
from polynimbus.names import vxlan_if
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.resources import Resource
from polynimbus.tunnels.base import TRANSPORTS, TunnelBackend


@TRANSPORTS.register("vxlan")
class VxlanBackend(TunnelBackend):
    """Unencrypted layer-2 tunnels with the kernel's VXLAN."""

    name = "vxlan"
    encrypted = False

    def ifname_pattern(self, plan: Plan, site: SitePlan) -> str:
        return "vx*"

    def gateway_resources(
        self, plan: Plan, site: SitePlan, node: str, keys: Mapping[str, KeyPair], impl: str
    ) -> list[Resource]:
        out: list[Resource] = []
        for peer in site.peers:
            p = plan.sites[peer.site]
            ifname = vxlan_if(p.site_id)
            out.append(
                Resource.make(
                    "link",
                    node,
                    ifname,
                    type="vxlan",
                    vni=peer.vni,
                    local=site.public_address,
                    remote=p.public_address,
                    port=plan.port,
                    mtu=plan.tunnel_mtu,
                    up=True,
                )
            )
            for d in peer.reaches:
                out.append(
                    Resource.make(
                        "route",
                        node,
                        plan.sites[d].block,
                        dev=ifname,
                        via=p.gateway_address,
                        onlink=True,
                    )
                )
        return out
