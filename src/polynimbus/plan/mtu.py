"""Tunnel MTU and TCP MSS arithmetic (seed 004's MTU/MSS discussion; RFC 879 for MSS).

The tunnel MTU is the underlay MTU minus the transport's encapsulation overhead; the MSS
that gateways clamp TCP SYNs to is the tunnel MTU minus the IPv4 and TCP headers.
"""

from __future__ import annotations

from polynimbus.tunnels import TRANSPORTS

IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
TCP_HEADER = 20


def tunnel_mtu(transport: str, underlay_mtu: int) -> int:
    """MTU of the tunnel interface in bytes (e.g. wireguard over 1500 -> 1440): the
    underlay MTU minus the overhead the transport declares
    (:attr:`polynimbus.tunnels.TunnelBackend.overhead`), at most its ``max_tunnel_mtu``.

    Raises:
        PolynimbusError: unknown transport.
    """
    backend = TRANSPORTS.get(transport)
    mtu = underlay_mtu - backend.overhead
    return mtu if backend.max_tunnel_mtu is None else min(mtu, backend.max_tunnel_mtu)


def tcp_mss(mtu: int) -> int:
    """Largest TCP segment payload for an IPv4 path of ``mtu`` bytes (``mtu - 40``)."""
    return mtu - IPV4_HEADER - TCP_HEADER
