"""SRv6 settings of a lab node that rtnetlink does not carry: the encapsulation source
(``ip sr tunsrc``, a generic-netlink setting per namespace), through iproute2."""

from __future__ import annotations

from polynimbus.errors import ApplyError
from polynimbus.node import TunnelSource
from polynimbus.targets.lab import netns

UNSET = "::"


def observe(ns: str) -> TunnelSource | None:
    """The node's tunnel source, or ``None`` when unset (``::``).

    Raises:
        ApplyError: ``ip sr tunsrc show`` failed.
    """
    res = netns.run(["ip", "-n", ns, "sr", "tunsrc", "show"])
    if res.returncode != 0:
        raise ApplyError(f"cannot read the SRv6 tunnel source of {ns}: {res.stderr.strip()}")
    parts = res.stdout.split()
    addr = parts[-1] if parts else UNSET
    return None if addr == UNSET else TunnelSource(addr)


def create(ns: str, item: TunnelSource) -> None:
    """Set the node's tunnel source.

    Raises:
        ApplyError: iproute2 refused.
    """
    _set(ns, item.address)


def delete(ns: str) -> None:
    """Unset the node's tunnel source (the kernel then picks one per route)."""
    _set(ns, UNSET)


def _set(ns: str, addr: str) -> None:
    res = netns.run(["ip", "-n", ns, "sr", "tunsrc", "set", addr])
    if res.returncode != 0:
        raise ApplyError(f"cannot set the SRv6 tunnel source of {ns}: {res.stderr.strip()}")
