"""Tunnel MTU and TCP MSS arithmetic (seed 004's MTU/MSS discussion; RFC 879 for MSS).

The tunnel MTU is the underlay MTU minus the transport's encapsulation overhead; the MSS
that gateways clamp TCP SYNs to is the tunnel MTU minus the IPv4 and TCP headers.
"""

from __future__ import annotations

IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
TCP_HEADER = 20

OVERHEAD: dict[str, int] = {
    # WireGuard over IPv4: outer IPv4 20 + UDP 8 + WireGuard data header 16 + Poly1305 tag 16.
    "wireguard": IPV4_HEADER + UDP_HEADER + 16 + 16,
    # VXLAN over IPv4 (RFC 7348): outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
    "vxlan": IPV4_HEADER + UDP_HEADER + 8 + 14,
}
"""Encapsulation overhead per transport over an IPv4 underlay, in bytes."""


def tunnel_mtu(transport: str, underlay_mtu: int) -> int:
    """MTU of the tunnel interface in bytes (e.g. wireguard over 1500 -> 1440).

    Raises:
        KeyError: unknown transport.
    """
    return underlay_mtu - OVERHEAD[transport]


def tcp_mss(mtu: int) -> int:
    """Largest TCP segment payload for an IPv4 path of ``mtu`` bytes (``mtu - 40``)."""
    return mtu - IPV4_HEADER - TCP_HEADER
