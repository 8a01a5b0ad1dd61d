"""The tunnel backend (transport) interface and its registry.

A transport is one module in this package: it declares its name, its encapsulation
overhead (which the planner turns into the tunnel MTU and TCP MSS), the tools it runs,
whether it encrypts, its default UDP port, and renders one gateway's tunnel items. Adding
a transport means adding a module to this package that registers itself; nothing else
changes (the package imports every module in it; the intent accepts its name, the planner
sizes its MTU and allocates VNIs if it asks, the renderers and targets use it).

This package sits beside the stages: it imports no stage at run time (the plan types are
only named in annotations), so the intent and plan stages may use the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from polynimbus.node import Item
from polynimbus.registry import Registry

if TYPE_CHECKING:
    from polynimbus.keys import KeyPair
    from polynimbus.plan.model import Plan, SitePlan


class TunnelBackend:
    """What every transport declares and provides.

    Class attributes:
        name: the transport's name in intents (``overlay.transport``).
        encrypted: whether the tunnel encrypts (the integration tests check the wire).
        needs_keys: whether gateways need key pairs.
        tools: commands the backend runs, each with the Debian package providing it.
        default_port: UDP port when the intent gives none.
        overhead: bytes of encapsulation added to each inner packet over an IPv4 underlay.
        summary: one line for ``--help`` and error hints.
        vni_per_tunnel: whether the planner allocates a VNI to each tunnel.
        gateway_interface: whether a gateway has one tunnel interface for all its peers
            (its host-unique name is ``SitePlan.tunnel_if``), rather than one per peer.
        checks_source: whether the tunnel admits from a peer only packets whose source is
            routed to that peer (WireGuard's AllowedIPs).
    """

    name: ClassVar[str]
    encrypted: ClassVar[bool]
    needs_keys: ClassVar[bool] = False
    tools: ClassVar[dict[str, str]] = {}
    default_port: ClassVar[int]
    overhead: ClassVar[int]
    summary: ClassVar[str] = ""
    vni_per_tunnel: ClassVar[bool] = False
    gateway_interface: ClassVar[bool] = False
    checks_source: ClassVar[bool] = False

    def required_tools(self, impl: str) -> dict[str, str]:
        """Commands needed with implementation ``impl``, each with its Debian package."""
        return dict(self.tools)

    def ifname_pattern(self, plan: Plan, site: SitePlan) -> str:
        """The gateway's tunnel interfaces as nftables matches them (name or ``prefix*``)."""
        raise NotImplementedError

    def gateway_items(
        self, plan: Plan, site: SitePlan, keys: Mapping[str, KeyPair], impl: str
    ) -> list[Item]:
        """Tunnel links, overlay routes (transit included), processes and configuration of
        ``site``'s gateway, without knowing where the gateway runs.

        Args:
            keys: key pairs by site name (empty when ``needs_keys`` is False).
            impl: implementation choice where the backend has several (WireGuard:
                ``kernel`` or ``userspace``).
        """
        raise NotImplementedError


TRANSPORTS: Registry[type[TunnelBackend]] = Registry("transport")


def get_transport(name: str) -> TunnelBackend:
    """An instance of the transport called ``name``.

    Raises:
        PolynimbusError: unknown transport (lists the known ones).
    """
    return TRANSPORTS.get(name)()
