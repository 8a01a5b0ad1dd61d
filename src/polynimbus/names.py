"""The one place where generated names are decided.

Linux interface names are at most 15 bytes (IFNAMSIZ - 1). Namespace names have no such
limit. ``wireguard-go`` keeps its control socket at ``/var/run/wireguard/IFNAME.sock``,
shared by all namespaces, so tunnel interface names must be unique on the *host*; every
other interface only needs to be unique inside its own namespace.

Scheme (``LAB`` is the intent's ``name``; ``TAG`` = first 4 hex digits of SHA-256(LAB);
``SID`` = a site's id, 6 hex digits: its block's offset in ``address_space``):

=====================  =====================================  ===========  ===========
what                   name                                   where        unique on
=====================  =====================================  ===========  ===========
internet namespace     ``pn.LAB.internet``                    host         host
gateway namespace      ``pn.LAB.SITE.gateway``                host         host
host namespace         ``pn.LAB.SITE.HOST``                   host         host
gateway WAN link       ``wan0``                               gateway      namespace
internet-side link     ``uSID`` (7 chars)                     internet     namespace
site LAN bridge        ``lan0``                               gateway      namespace
standby gateway        ``pn.LAB.SITE.gateway-2``              host         host
two-gateway LAN switch ``pn.LAB.SITE.lan`` (bridge ``lan0``;  host         host
                       ports ``g1``, ``g2``, ``hN``)
gateway <-> switch     ``lan1`` (member of the gateway's      gateway      namespace
                       ``lan0``)
standby WireGuard      ``wgTAGSIDb`` (13 chars)               gateway-2    host
standby's uplink       ``uSIDb`` (8 chars)                    internet     namespace
host port on the LAN   ``hN`` (N: host offset in the block)   gateway      namespace
host NIC               ``eth0``                               host         namespace
WireGuard interface    ``wgTAGSID`` (12 chars)                gateway      host
OpenVPN to peer        ``ovTAGSID`` of the peer (12 chars)    gateway      namespace
VXLAN tunnel to peer   ``vxSID`` of the peer (8 chars)        gateway      namespace
NFV node namespace     ``pn.LAB.SITE.nfv``                    host         host
function namespace     ``pn.LAB.SITE.SERVICE``                host         host
gateway <-> NFV node   ``nfv0`` (gateway), ``core0`` (NFV)    both         namespace
connector <-> SR-aware ``aFFFF`` (NFV), ``nfv0`` (function)   both         namespace
connector <-> legacy   ``cKKKw``/``cKKKe`` (NFV), ``wKKK``/   both         namespace
                       ``eKKK`` (function), per chain
tenant router          ``pn.LAB.SITE.TENANT.router``          host         host
tenant host            ``pn.LAB.SITE.TENANT.HOST``            host         host
router transit port    ``tr0`` (VXLAN, socket in the gateway) router       namespace
tenant network K       ``nK`` (bridge, the router's address)  router       namespace
stretched network K    ``vK`` (VXLAN port of ``nK``)          router       namespace
tenant host port       ``nKhI`` (I: host index in network K)  router       namespace
=====================  =====================================  ===========  ===========

Tenant namespaces have five dot-separated parts, site hosts four: they cannot collide.

Site and host names are DNS-like labels (``[a-z0-9-]``, no dots), so the dots in namespace
names cannot be confused, and one lab's prefix ``pn.LAB.`` never matches another lab.
"""

from __future__ import annotations

import hashlib
import re

IFNAMSIZ = 15
"""Longest Linux interface name, in bytes."""

NAME_RE = re.compile(r"\A[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?\Z")
"""Site, host and lab names: 1-32 characters, lowercase letters, digits, inner hyphens."""

RESERVED_HOST_NAMES = frozenset({"gateway", "gw", "nfv"})
"""Host names that would collide with the gateway's or the NFV node's node name."""

WAN_IF = "wan0"
NFV_IF = "nfv0"
"""The gateway's link to its NFV node, and an SR-aware function's link to the connector."""
CORE_IF = "core0"
"""The NFV node's link to its gateway."""
LAN_BRIDGE = "lan0"
HOST_IF = "eth0"
SWITCH_LINK_IF = "lan1"
"""A two-gateway site's gateway: its port to the LAN switch, member of its ``lan0``."""
NS_PREFIX = "pn"


def lab_tag(lab: str) -> str:
    """4 hex digits identifying a lab on the host (first 16 bits of SHA-256 of its name)."""
    return hashlib.sha256(lab.encode()).hexdigest()[:4]


def lab_prefix(lab: str) -> str:
    """Prefix of every namespace of a lab, e.g. ``pn.prestocloud.``."""
    return f"{NS_PREFIX}.{lab}."


def internet_ns(lab: str) -> str:
    """Namespace playing the public internet."""
    return f"{lab_prefix(lab)}internet"


def gateway_ns(lab: str, site: str) -> str:
    """Namespace of a site's gateway."""
    return f"{lab_prefix(lab)}{site}.gateway"


def host_ns(lab: str, site: str, host: str) -> str:
    """Namespace of one host of a site."""
    return f"{lab_prefix(lab)}{site}.{host}"


def nfv_ns(lab: str, site: str) -> str:
    """Namespace of a site's NFV node (exec target ``SITE/nfv``)."""
    return host_ns(lab, site, "nfv")


def service_ns(lab: str, site: str, service: str) -> str:
    """Namespace of a network function (exec target ``SITE/SERVICE``)."""
    return host_ns(lab, site, service)


def wireguard_if(lab: str, site_id: str) -> str:
    """Host-unique WireGuard interface name of a gateway (12 chars)."""
    return check_ifname(f"wg{lab_tag(lab)}{site_id}")


def standby_wireguard_if(lab: str, site_id: str) -> str:
    """Host-unique WireGuard interface name of a site's standby gateway (13 chars: the
    primary's and ``b``)."""
    return check_ifname(f"{wireguard_if(lab, site_id)}b")


def standby_ns(lab: str, site: str) -> str:
    """Namespace of a site's standby gateway (``gateways: 2``; exec target
    ``SITE/gateway-2``)."""
    return host_ns(lab, site, "gateway-2")


def switch_ns(lab: str, site: str) -> str:
    """Namespace of a two-gateway site's LAN switch (its bridge and every port)."""
    return host_ns(lab, site, "lan")


def standby_uplink_if(site_id: str) -> str:
    """Interface in the internet namespace towards a site's standby gateway (8 chars)."""
    return check_ifname(f"u{site_id}b")


def switch_port_if(node: str) -> str:
    """A port of a two-gateway site's LAN switch: ``g1``/``g2`` for the gateways
    (``node`` ``gateway``/``gateway-2``), ``hN`` for hosts (:func:`host_port_if`)."""
    return check_ifname("g2" if node == "gateway-2" else "g1")


def wireguard_if_prefix(lab: str) -> str:
    """Prefix shared by all the lab's WireGuard interfaces (used by ``down`` to find leftovers)."""
    return f"wg{lab_tag(lab)}"


def openvpn_if(lab: str, peer_site_id: str) -> str:
    """OpenVPN TUN interface in a gateway towards one peer (12 chars; parallel tunnels add
    ``pK``). Unique in its namespace (one per peer); the lab's tag lets ``down`` and the
    tests tell the lab's daemons from another lab's (OpenVPN keeps nothing host-wide)."""
    return check_ifname(f"{openvpn_if_prefix(lab)}{peer_site_id}")


def openvpn_if_prefix(lab: str) -> str:
    """Prefix shared by all the lab's OpenVPN interfaces."""
    return f"ov{lab_tag(lab)}"


def vxlan_if(peer_site_id: str) -> str:
    """VXLAN interface in a gateway towards one peer (8 chars)."""
    return check_ifname(f"vx{peer_site_id}")


def uplink_if(site_id: str) -> str:
    """Interface in the internet namespace towards one gateway (7 chars)."""
    return check_ifname(f"u{site_id}")


def host_port_if(host_offset: int) -> str:
    """Gateway-side port of a host's veth pair, enslaved to the LAN bridge."""
    return check_ifname(f"h{host_offset}")


def check_ifname(name: str) -> str:
    """Return ``name`` if it is a valid Linux interface name.

    Raises:
        ValueError: longer than 15 bytes, empty, or containing ``/``, ``:`` or whitespace.
    """
    if not name or len(name.encode()) > IFNAMSIZ or re.search(r"[/:\s]", name):
        raise ValueError(f"invalid interface name {name!r} (at most {IFNAMSIZ} bytes)")
    return name


TRANSIT_IF = "tr0"
"""A tenant router's port on its transit network (VXLAN)."""


def tenant_router_ns(lab: str, site: str, tenant: str) -> str:
    """Namespace of a tenant's virtual router on a site."""
    return f"{lab_prefix(lab)}{site}.{tenant}.router"


def tenant_host_ns(lab: str, site: str, tenant: str, host: str) -> str:
    """Namespace of a tenant host (exec target ``TENANT:SITE/HOST``)."""
    return f"{lab_prefix(lab)}{site}.{tenant}.{host}"


def tenant_bridge_if(index: int) -> str:
    """Bridge of tenant network ``index`` in the tenant's router."""
    return check_ifname(f"n{index}")


def tenant_vxlan_if(index: int) -> str:
    """VXLAN port of stretched tenant network ``index`` in the tenant's router."""
    return check_ifname(f"v{index}")


def tenant_port_if(index: int, host_index: int) -> str:
    """Router-side port of host ``host_index`` of tenant network ``index``."""
    return check_ifname(f"n{index}h{host_index}")
