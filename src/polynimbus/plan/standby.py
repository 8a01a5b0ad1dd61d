"""A site with two gateways (``gateways: 2``; issue 9): an active gateway and a standby.

The hosts keep one gateway address, the site's ``gateway_address`` (the last usable of its
block), which becomes a VRRP virtual address (RFC 5798, keepalived) held by whichever
gateway is alive; each gateway has its own LAN address beside it (the primary the
second-last usable, the standby the third-last). Both gateways have their own public
address, WireGuard key and tunnel interface, and a tunnel to every other gateway:
normally the site's prefixes are in the primary's AllowedIPs at every peer, the standby's
peer holds only the standby's own address. When the primary dies, the peers' failover
agents (:mod:`polynimbus.plan.failover`) see its probes go unanswered and move the site's
prefixes to the standby, their first detour for it, while the standby's keepalived takes
the virtual address; both take 300-400 ms.

This module is pure: the standby's numbering, and what the planner must refuse.
"""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING

from polynimbus.errors import Problem
from polynimbus.names import standby_wireguard_if
from polynimbus.numbering import UNDERLAY_SPACE, underlay_pair

if TYPE_CHECKING:
    from polynimbus.intent.models import Intent
    from polynimbus.plan.model import StandbyPlan

STANDBY_KEY_SUFFIX = ".2"
"""A standby's credentials are named ``SITE.2`` (site names have no dots)."""
STANDBY_NODE = "gateway-2"
"""The standby's node name (namespace ``pn.LAB.SITE.gateway-2``, exec target
``SITE/gateway-2``)."""
SWITCH_NODE = "lan"
"""The node holding a two-gateway site's LAN bridge (``pn.LAB.SITE.lan``): the LAN must
outlive either gateway."""
VRRP_ADVERT_MS = 100
"""Interval between two VRRP advertisements of the master, ms: the backup takes over
after about 3 of them are missed (RFC 5798 §6.1: Master_Down_Interval = 3 x interval +
skew), 300-400 ms."""


def standby_addresses(block: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    """(primary's own, standby's own) LAN addresses in ``block``: the second-last and
    third-last usable addresses (``.253`` and ``.252`` in a /24; ``.254`` is the virtual
    one)."""
    last = int(block.broadcast_address) - 1
    return IPv4Address(last - 1), IPv4Address(last - 2)


def vrid(site: str) -> int:
    """The site's VRRP virtual router id, 1-255 (SHA-256 of its name): the LAN is the
    site's own, so any id would do; this one is stable."""
    return 1 + int.from_bytes(hashlib.sha256(site.encode()).digest()[:4], "big") % 255


def standby_indices(primaries: list[int], wanted: list[bool]) -> list[int | None]:
    """The underlay /31 index of each standby gateway (``None`` where ``wanted`` is
    False): the primary's index plus half the underlay space, probing upward past every
    index already used. Primaries are numbered first, so a standby never moves another
    site's addresses.

    Args:
        primaries: each site's underlay index (:func:`polynimbus.numbering.underlay_indices`).
        wanted: whether each site has a standby.
    """
    size = UNDERLAY_SPACE.num_addresses // 2
    used = set(primaries)
    out: list[int | None] = []
    for idx, want in zip(primaries, wanted, strict=True):
        if not want:
            out.append(None)
            continue
        k = (idx + size // 2) % size
        while k in used:
            k = (k + 1) % size
        used.add(k)
        out.append(k)
    return out


def standby_plan(lab: str, site: str, site_id: str, block: IPv4Network, index: int) -> StandbyPlan:
    """The standby gateway of ``site`` (block ``block``) at underlay index ``index``."""
    from polynimbus.plan.model import StandbyPlan

    primary, own = standby_addresses(block)
    inet, public = underlay_pair(index)
    return StandbyPlan(
        key=site + STANDBY_KEY_SUFFIX,
        address=str(own),
        primary_address=str(primary),
        public_address=str(public),
        internet_address=str(inet),
        tunnel_if=standby_wireguard_if(lab, site_id),
        vrid=vrid(site),
    )


def standby_problems(intent: Intent, blocks: list[IPv4Network | None]) -> list[Problem]:
    """Why the intent's ``gateways: 2`` sites cannot be planned: without
    ``overlay.failover: true``, on a transport other than WireGuard, with tenants, IPv6,
    SRv6, services, chains or parallel tunnels (not yet), with a block too small or hosts on
    the gateways' own addresses, or a host named like the standby or the LAN switch.

    Args:
        blocks: each site's block (``None`` where numbering failed).

    Returns:
        Problems at ``sites[i].gateways`` (or the host), each with a hint.
    """
    out: list[Problem] = []
    ov = intent.overlay
    for i, site in enumerate(intent.sites):
        if site.gateways < 2:
            continue
        path = f"sites[{i}].gateways"
        if not ov.failover:
            out.append(
                Problem(path, "two gateways need overlay.failover: true", "add failover: true")
            )
        if ov.transport != "wireguard":
            out.append(
                Problem(
                    path,
                    f"two gateways are not available with transport {ov.transport!r}",
                    "use transport: wireguard, or gateways: 1",
                )
            )
        if intent.tenants or intent.uses_srv6 or intent.dual_stack or (ov.parallel or 1) > 1:
            out.append(
                Problem(
                    path,
                    "two gateways do not work with tenants, IPv6, SRv6, services, chains or "
                    "parallel tunnels yet",
                    "use gateways: 1, or remove those",
                )
            )
        for k, host in enumerate(site.hosts):
            if host.name in (STANDBY_NODE, SWITCH_NODE):
                out.append(
                    Problem(
                        f"sites[{i}].hosts[{k}]",
                        f"host name {host.name!r} is the node name of the standby gateway "
                        "or of the LAN switch of a site with two gateways",
                        "rename the host",
                    )
                )
        block = blocks[i]
        if block is None:
            continue
        if block.num_addresses < 8:
            out.append(
                Problem(
                    path,
                    f"block {block} is too small for two gateways and their shared address",
                    "use a subnet of /29 or larger",
                )
            )
    return out


def host_conflicts(site_index: int, block: IPv4Network, hosts: list[IPv4Address]) -> list[Problem]:
    """Hosts numbered on the two gateways' own addresses (:func:`standby_addresses`)."""
    mine = set(standby_addresses(block))
    return [
        Problem(
            f"sites[{site_index}].hosts[{k}]",
            f"{addr} is a gateway's own address in a site with two gateways",
            "the gateways take the last three usable addresses: give the host another "
            "address, or use a larger subnet",
        )
        for k, addr in enumerate(hosts)
        if addr in mine
    ]
