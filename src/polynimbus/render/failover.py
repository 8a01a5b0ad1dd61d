"""The failover agent of a gateway as a node process (``overlay.failover``; policy in
:mod:`polynimbus.plan.failover`, the agent in :mod:`polynimbus.agent.failover`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from polynimbus.node import Process
from polynimbus.plan import failover
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.tunnels.base import daemon

FAILOVER_CONFIG = "failover.json"
"""The failover agent's configuration file, in its node directory."""


def failover_config(
    plan: Plan, site: SitePlan, keys: Mapping[str, Any], devs: list[str]
) -> dict[str, Any]:
    """The configuration of ``site``'s failover agent (:mod:`polynimbus.agent.failover`):
    for each peer its public key, probe address (its gateway's overlay address), the
    AllowedIPs it has normally, those it keeps while dead (its gateway's own /32, /128),
    and its detours (:func:`polynimbus.plan.failover.detours`) among ``site``'s peers.

    Raises:
        KeyError: a key is missing.
    """
    me = plan.site_index(site.name)
    peers: dict[str, dict[str, Any]] = {}
    mine = {p.site for p in site.peers}
    for peer in site.peers:
        p = plan.sites[peer.site]
        keep = [f"{p.gateway_address}/32"]
        if p.gateway_address6:
            keep.append(f"{p.gateway_address6}/128")
        peers[p.name] = {
            "public_key": keys[p.name].public,
            "probe": p.gateway_address,
            "allowed": sorted(x for d in peer.reaches for x in plan.prefixes(d)),
            "keep": keep,
            "detours": [
                plan.sites[i].name for i in failover.detours(plan, me, peer.site) if i in mine
            ],
        }
    return {
        "site": site.name,
        "interfaces": devs,
        "address": site.gateway_address,
        "port": plan.port + failover.PROBE_PORT_OFFSET,
        "interval_ms": failover.PROBE_INTERVAL_MS,
        "down_after": failover.DOWN_AFTER,
        "up_after_ms": failover.UP_AFTER_MS,
        "peers": peers,
    }


def failover_agent(plan: Plan, site: SitePlan, keys: Mapping[str, Any], devs: list[str]) -> Process:
    """The failover agent of ``site``'s gateway as a node process (its configuration
    :func:`failover_config` as a file). ``python3`` is whichever Python runs polynimbus
    on the target (the lab: :func:`polynimbus.targets.lab.processes.launch_argv`)."""
    text = json.dumps(failover_config(plan, site, keys, devs), indent=1, sort_keys=True)
    return daemon(
        ("python3", "-m", "polynimbus.agent.failover", FAILOVER_CONFIG),
        [(FAILOVER_CONFIG, text + "\n")],
    )
