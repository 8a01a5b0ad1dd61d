"""Tunnel backends (transports), registered by name in :data:`TRANSPORTS`.

A backend declares its encapsulation overhead, tools, encryption and default port, and turns
one gateway's part of the plan into node model items: its tunnel interfaces, processes,
overlay routes and configuration. Adding one (OpenVPN, IPsec...) means adding a module
here that registers itself and importing it below; nothing else changes.
"""

from polynimbus.tunnels import vxlan, wireguard  # noqa: F401  (registration)
from polynimbus.tunnels.base import TRANSPORTS, TunnelBackend, get_transport

__all__ = ["TRANSPORTS", "TunnelBackend", "get_transport"]
