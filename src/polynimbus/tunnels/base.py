"""The tunnel backend interface and its registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from polynimbus.keys import KeyPair
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.registry import Registry
from polynimbus.resources import Resource


class TunnelBackend:
    """What every transport provides.

    Attributes:
        name: the transport's name in intents (``overlay.transport``).
        encrypted: whether the tunnel encrypts (the integration tests check the wire).
        needs_keys: whether gateways need key pairs.
        tools: commands the backend runs, each with the Debian package providing it.
    """

    name: ClassVar[str]
    encrypted: ClassVar[bool]
    needs_keys: ClassVar[bool] = False
    tools: ClassVar[dict[str, str]] = {}

    def ifname_pattern(self, plan: Plan, site: SitePlan) -> str:
        """The gateway's tunnel interfaces as nftables matches them (name or ``prefix*``)."""
        raise NotImplementedError

    def gateway_resources(
        self, plan: Plan, site: SitePlan, node: str, keys: Mapping[str, KeyPair], impl: str
    ) -> list[Resource]:
        """Tunnel links, overlay routes (transit included) and configuration of a gateway.

        Args:
            node: the gateway's node (namespace) name.
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
