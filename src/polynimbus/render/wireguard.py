"""WireGuard configuration in ``wg setconf`` format (wg(8) CONFIGURATION FILE FORMAT).

One interface per gateway; one ``[Peer]`` per tunnel whose ``AllowedIPs`` are the blocks
routed through that peer, transit included (see :mod:`polynimbus.plan.routes`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from polynimbus.keys import KeyPair
from polynimbus.plan.model import Plan, SitePlan

PERSISTENT_KEEPALIVE_S = 25
"""Keepalive interval in seconds, so NAT mappings on the way stay open."""


def render_wg_config(plan: Plan, site: SitePlan, keys: Mapping[str, KeyPair]) -> str:
    """The ``wg setconf`` text for ``site``'s gateway.

    Args:
        keys: key pair by site name; every peer's must be present.

    Raises:
        KeyError: a key is missing.
    """
    lines = [
        f"# polynimbus: gateway of site {site.name} in {plan.name}",
        "[Interface]",
        f"PrivateKey = {keys[site.name].private}",
        f"ListenPort = {plan.port}",
    ]
    for peer in site.peers:
        p = plan.sites[peer.site]
        lines += [
            "",
            f"# {p.name}",
            "[Peer]",
            f"PublicKey = {keys[p.name].public}",
            f"Endpoint = {p.public_address}:{plan.port}",
            "AllowedIPs = " + ", ".join(plan.sites[d].block for d in peer.reaches),
            f"PersistentKeepalive = {PERSISTENT_KEEPALIVE_S}",
        ]
    return "\n".join(lines) + "\n"


def parse_wg_config(text: str) -> dict[str, object]:
    """Canonical form of a ``wg setconf``/``wg showconf`` text, for comparison.

    Returns:
        ``{"private_key", "listen_port", "peers": {public_key: {endpoint, allowed_ips,
        keepalive}}}`` with allowed IPs sorted.
    """
    iface: dict[str, str] = {}
    peers: dict[str, dict[str, object]] = {}
    current: dict[str, str] | None = None
    section = ""
    entries: list[dict[str, str]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            section = line.strip("[]").lower()
            if section == "peer":
                current = {}
                entries.append(current)
            continue
        k, _, v = line.partition("=")
        k, v = k.strip().lower(), v.strip()
        if section == "interface":
            iface[k] = v
        elif current is not None:
            current[k] = (current.get(k, "") + "," + v).strip(",") if k == "allowedips" else v
    for e in entries:
        peers[e.get("publickey", "")] = {
            "endpoint": e.get("endpoint"),
            "allowed_ips": sorted(
                a.strip() for a in e.get("allowedips", "").split(",") if a.strip()
            ),
            "keepalive": int(e["persistentkeepalive"])
            if e.get("persistentkeepalive", "off") not in ("", "off")
            else None,
        }
    return {
        "private_key": iface.get("privatekey"),
        "listen_port": int(iface["listenport"]) if "listenport" in iface else None,
        "peers": peers,
    }


def wg_digest(text: str) -> str:
    """16 hex digits identifying a WireGuard configuration's meaning (not its layout)."""
    canon = json.dumps(parse_wg_config(text), sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]
