"""Tunnel backends (transports), registered by name in :data:`TRANSPORTS`.

A backend turns one gateway's part of the plan into resources: its tunnel interfaces, its
overlay routes and its configuration. Adding one (OpenVPN, IPsec...) means adding a module
here that registers itself; nothing else changes.
"""

from polynimbus.tunnels import vxlan, wireguard  # noqa: F401  (registration)
from polynimbus.tunnels.base import TRANSPORTS, TunnelBackend, get_transport

__all__ = ["TRANSPORTS", "TunnelBackend", "get_transport"]
