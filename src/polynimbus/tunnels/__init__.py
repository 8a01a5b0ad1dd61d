"""Tunnel backends (transports), registered by name in :data:`TRANSPORTS`.

A backend declares its encapsulation overhead, tools, encryption and default port, and turns
one gateway's part of the plan into node model items: its tunnel interfaces, processes,
overlay routes and configuration. Adding one (OpenVPN, IPsec...) means adding a module
here that registers itself; every module of the package is imported below.
"""

import importlib
import pkgutil

from polynimbus.tunnels.base import TRANSPORTS, TunnelBackend, get_transport

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")  # each registers itself

__all__ = ["TRANSPORTS", "TunnelBackend", "get_transport"]
