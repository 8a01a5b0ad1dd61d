"""WireGuard transport: one interface per gateway, one peer per tunnel.

Uses the kernel module where the kernel has one, else ``wireguard-go`` (user space, over
TUN). Configuration goes through ``wg setconf``, which drives both. Transit traffic is
carried by listing the transit blocks in the peer's AllowedIPs.
"""

from __future__ import annotations

from collections.abc import Mapping

from polynimbus.keys import KeyPair
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.render.wireguard import render_wg_config, wg_digest
from polynimbus.resources import Resource
from polynimbus.tunnels.base import TRANSPORTS, TunnelBackend


@TRANSPORTS.register("wireguard")
class WireGuardBackend(TunnelBackend):
    """Encrypted tunnels with WireGuard (kernel or ``wireguard-go``)."""

    name = "wireguard"
    encrypted = True
    needs_keys = True
    tools = {"wg": "wireguard-tools", "wireguard-go": "wireguard-go"}

    def ifname_pattern(self, plan: Plan, site: SitePlan) -> str:
        return site.tunnel_if

    def gateway_resources(
        self, plan: Plan, site: SitePlan, node: str, keys: Mapping[str, KeyPair], impl: str
    ) -> list[Resource]:
        ifname = site.tunnel_if
        config = render_wg_config(plan, site, keys)
        out = [
            Resource.make(
                "link", node, ifname, type="wireguard", impl=impl, mtu=plan.tunnel_mtu, up=True
            ),
            Resource.make("wgconf", node, ifname, payload=config, digest=wg_digest(config)),
        ]
        for peer in site.peers:
            for d in peer.reaches:
                out.append(Resource.make("route", node, plan.sites[d].block, dev=ifname))
        return out
