"""The failover agent of a gateway as a node process (``overlay.failover``; policy in
:mod:`polynimbus.plan.failover`, the agent in :mod:`polynimbus.agent.failover`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from polynimbus.node import Process
from polynimbus.plan import failover
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.plan.standby import STANDBY_NODE
from polynimbus.tunnels.base import daemon

FAILOVER_CONFIG = "failover.json"
"""The failover agent's configuration file, in its node directory."""


def failover_config(
    plan: Plan,
    site: SitePlan,
    keys: Mapping[str, Any],
    devs: list[str],
    vip: str | None = None,
    node: str = "gateway",
) -> dict[str, Any]:
    """The configuration of ``site``'s failover agent (:mod:`polynimbus.agent.failover`):
    for each peer its public key, probe address (its gateway's own overlay address), the
    AllowedIPs it has normally, those it keeps while dead (its gateway's own /32, /128),
    and its detours (:func:`polynimbus.plan.failover.detours`) among ``site``'s peers.
    A peer site with two gateways (:mod:`polynimbus.plan.standby`) is two peers: the
    primary, under the site's name, whose first detour is the standby
    (``SITE/gateway-2``, normally holding only its own address).

    Args:
        vip: on a gateway of a two-gateway site, the site's shared gateway address: the
            agent records when it takes or releases it, and tells the peers it is READY
            only while it holds it (``node``: ``gateway`` or ``gateway-2``).

    Raises:
        KeyError: a key is missing.
    """
    me = plan.site_index(site.name)
    peers: dict[str, dict[str, Any]] = {}
    mine = {p.site for p in site.peers}
    for peer in site.peers:
        p = plan.sites[peer.site]
        keep = [f"{p.own_address}/32"]
        if p.gateway_address6:
            keep.append(f"{p.gateway_address6}/128")
        detours = [plan.sites[i].name for i in failover.detours(plan, me, peer.site) if i in mine]
        if p.standby is not None:  # gateways: 2: the standby first, it holds only itself
            sb, standby = p.standby, f"{p.name}/{STANDBY_NODE}"
            detours.insert(0, standby)
            peers[standby] = {
                "public_key": keys[sb.key].public,
                "probe": sb.address,
                "allowed": [f"{sb.address}/32"],
                "keep": [f"{sb.address}/32"],
                "detours": [],
            }
        peers[p.name] = {
            "public_key": keys[p.name].public,
            "probe": p.own_address,
            "allowed": sorted(x for d in peer.reaches for x in plan.prefixes(d)),
            "keep": keep,
            "detours": detours,
        }
    out: dict[str, Any] = {}
    if vip is not None:
        out = {"vip": vip, "node": node}
    return out | {
        "site": site.name,
        "interfaces": devs,
        "address": site.gateway_address,
        "port": plan.port + failover.PROBE_PORT_OFFSET,
        "interval_ms": failover.PROBE_INTERVAL_MS,
        "down_after": failover.DOWN_AFTER,
        "up_after_ms": failover.UP_AFTER_MS,
        "peers": peers,
    }


def failover_agent(
    plan: Plan,
    site: SitePlan,
    keys: Mapping[str, Any],
    devs: list[str],
    vip: str | None = None,
    node: str = "gateway",
) -> Process:
    """The failover agent of ``site``'s gateway as a node process (its configuration
    :func:`failover_config` as a file). ``python3`` is whichever Python runs polynimbus
    on the target (the lab: :func:`polynimbus.targets.lab.processes.launch_argv`)."""
    config = failover_config(plan, site, keys, devs, vip, node)
    text = json.dumps(config, indent=1, sort_keys=True)
    return daemon(
        ("python3", "-m", "polynimbus.agent.failover", FAILOVER_CONFIG),
        [(FAILOVER_CONFIG, text + "\n")],
    )
