"""The two gateways of a ``gateways: 2`` site (pure; policy in :mod:`polynimbus.plan.standby`).

Each gateway is rendered by :func:`polynimbus.render.gateway.render_gateway` from a *view*
of its site (:func:`gateway_view`): the site's plan with that gateway's own LAN address,
public address, tunnel interface and key in place of the site's, so the tunnels, the
firewall and the failover agent need no other change. Each also runs keepalived
(:func:`keepalived_process`) for the site's gateway address.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from polynimbus.node import Process
from polynimbus.plan.model import SitePlan
from polynimbus.plan.standby import STANDBY_NODE, VRRP_ADVERT_MS
from polynimbus.tunnels.base import daemon

KEEPALIVED_CONFIG = "keepalived.conf"
"""keepalived's configuration file, in its node directory."""
PRIMARY_PRIORITY = 200
STANDBY_PRIORITY = 100
PREEMPT_DELAY_S = 1.5
"""How long a returning primary leaves the virtual address to the standby, s: longer than
the peers' :data:`polynimbus.plan.failover.UP_AFTER_MS`, so that when it takes the address
back the peers have heard it answer long enough and move the site's prefixes back at its
first READY probe (it sends READY only while it holds the address)."""


def node_name(standby: bool) -> str:
    """The node name of a site's primary (``gateway``) or standby (``gateway-2``)."""
    return STANDBY_NODE if standby else "gateway"


def gateway_view(
    site: SitePlan, keys: Mapping[str, Any], standby: bool
) -> tuple[SitePlan, Mapping[str, Any]]:
    """``site`` and ``keys`` as one of its two gateways sees them: its own LAN address as
    ``gateway_address`` (the shared one is keepalived's), and for the standby its public
    address, internet address, tunnel interface and key pair under the site's name.

    Raises:
        ValueError: ``site`` has no standby.
        KeyError: the standby's key is missing.
    """
    sb = site.standby
    if sb is None:
        raise ValueError(f"site {site.name} has one gateway")
    if not standby:
        return dataclasses.replace(site, gateway_address=sb.primary_address), keys
    view = dataclasses.replace(
        site,
        gateway_address=sb.address,
        public_address=sb.public_address,
        internet_address=sb.internet_address,
        tunnel_if=sb.tunnel_if,
    )
    return view, {**keys, site.name: keys[sb.key]}


def keepalived_config(site: SitePlan, lan_if: str, standby: bool) -> str:
    """keepalived.conf(5) of one gateway of ``site``: one VRRPv3 instance on ``lan_if``
    advertising every :data:`~polynimbus.plan.standby.VRRP_ADVERT_MS`, the site's gateway
    address as a /32 labelled ``LAN:vip`` (the lab leaves labelled addresses to their
    daemon), priority 200 (primary) or 100 (standby); the primary takes the address back
    :data:`PREEMPT_DELAY_S` after it returns. No scripts.

    Raises:
        ValueError: ``site`` has no standby.
    """
    sb = site.standby
    if sb is None:
        raise ValueError(f"site {site.name} has one gateway")
    node = node_name(standby)
    prio = STANDBY_PRIORITY if standby else PRIMARY_PRIORITY
    return (
        f"# polynimbus: {site.name}/{node}\n"
        "global_defs {\n"
        f"\trouter_id {site.name}-{node}\n"
        "\tvrrp_version 3\n"
        "\tdynamic_interfaces\n"
        "\tvrrp_garp_master_delay 0\n"
        "\tvrrp_garp_master_repeat 3\n"
        "\tenable_script_security\n"
        "\tscript_user root\n"
        "}\n"
        f"vrrp_instance {site.name} {{\n"
        "\tstate BACKUP\n"
        f"\tinterface {lan_if}\n"
        f"\tvirtual_router_id {sb.vrid}\n"
        f"\tpriority {prio}\n"
        f"\tadvert_int {VRRP_ADVERT_MS / 1000:g}\n"
        f"\tpreempt_delay {PREEMPT_DELAY_S:g}\n"
        "\tvirtual_ipaddress {\n"
        f"\t\t{site.gateway_address}/32 dev {lan_if} label {lan_if}:vip\n"
        "\t}\n"
        "}\n"
    )


def keepalived_process(site: SitePlan, lan_if: str, standby: bool) -> Process:
    """keepalived for one gateway of ``site`` as a node process: in the foreground (``-n``),
    VRRP only, logging to stdout, its pid files in its own directory (relative names)."""
    return daemon(
        (
            "keepalived",
            "-n",
            "-l",
            "-G",
            "-P",
            "-p",
            "keepalived.pid",
            "-r",
            "vrrp.pid",
            "-f",
            KEEPALIVED_CONFIG,
        ),
        [(KEEPALIVED_CONFIG, keepalived_config(site, lan_if, standby))],
    )
