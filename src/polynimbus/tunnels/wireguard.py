"""WireGuard transport: one interface per gateway, one peer per tunnel.

Uses the kernel module where the kernel has one, else ``wireguard-go`` (user space, over
TUN), started as a :class:`~polynimbus.node.Process` of the gateway. Configuration is in
``wg setconf`` format (wg(8), CONFIGURATION FILE FORMAT), applied to a new interface with
``wg syncconf`` and to a running one with a ``wg set`` of only what changed
(:mod:`polynimbus.targets.lab.wireguard`), which drive both. One ``[Peer]`` per tunnel;
its ``AllowedIPs`` are the blocks routed through that peer, transit included (see
:mod:`polynimbus.plan.routes`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from polynimbus.node import Item, Link, Process, WireGuardConfig
from polynimbus.tunnels.base import TRANSPORTS, TunnelBackend, ecmp_routes, parallel_ifname

if TYPE_CHECKING:
    from polynimbus.keys import KeyPair
    from polynimbus.plan.model import Plan, SitePlan

PERSISTENT_KEEPALIVE_S = 25
"""Keepalive interval in seconds, so NAT mappings on the way stay open."""
USERSPACE_SOCKET_BUFFER = 4 * 1024 * 1024
"""UDP socket buffers of ``wireguard-go``, bytes. Debian's wireguard-go sets none, so its
sockets keep the host's ``net.core.rmem_default`` (208 KB), which a namespace cannot
change: under one TCP flow the receiving daemon dropped 15,000-44,000 datagrams per 5 s
(every one a TCP retransmit); with 4 MiB, none, and the lab ran 1.12-1.48x faster
(docs/benchmarks.md, "Encrypted transports"). The lab target sets it on the daemon's own
sockets (:mod:`polynimbus.targets.lab.wireguard`)."""


def render_wg_config(plan: Plan, site: SitePlan, keys: Mapping[str, KeyPair], k: int = 0) -> str:
    """The ``wg setconf`` text for ``site``'s gateway (its ``k``-th parallel interface:
    port ``plan.port + k``, towards the peers' ``k``-th).

    Args:
        keys: key pair by site name; every peer's must be present.

    Raises:
        KeyError: a key is missing.
    """
    port = plan.port + k
    lines = [
        f"# polynimbus: gateway of site {site.name} in {plan.name}",
        "[Interface]",
        f"PrivateKey = {keys[site.name].private}",
        f"ListenPort = {port}",
    ]
    for peer in site.peers:
        p = plan.sites[peer.site]
        lines += [
            "",
            f"# {p.name}",
            "[Peer]",
            f"PublicKey = {keys[p.name].public}",
            f"Endpoint = {p.public_address}:{port}",
            "AllowedIPs = " + ", ".join(x for d in peer.reaches for x in plan.prefixes(d)),
            f"PersistentKeepalive = {PERSISTENT_KEEPALIVE_S}",
        ]
        if p.standby is not None:  # gateways: 2: its standby holds only its own address
            lines += [
                "",
                f"# {p.name}/gateway-2",
                "[Peer]",
                f"PublicKey = {keys[p.standby.key].public}",
                f"Endpoint = {p.standby.public_address}:{port}",
                f"AllowedIPs = {p.standby.address}/32",
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


def userspace_process(ifname: str) -> Process:
    """The ``wireguard-go`` process that creates and serves TUN interface ``ifname``."""
    return Process(f"wireguard-go:{ifname}", ("wireguard-go", "-f", ifname))


@TRANSPORTS.register("wireguard")
class WireGuardBackend(TunnelBackend):
    """Encrypted tunnels with WireGuard (kernel or ``wireguard-go``)."""

    name = "wireguard"
    encrypted = True
    needs_keys = True
    tools = {"wg": "wireguard-tools"}
    default_port = 51820
    # outer IPv4 20 + UDP 8 + WireGuard data header 16 + Poly1305 tag 16
    overhead = 20 + 8 + 16 + 16
    summary = "WireGuard, encrypted (kernel module or wireguard-go)"
    gateway_interface = True
    checks_source = True
    daemons = frozenset({"wireguard-go"})
    credential_dirs = ("keys",)
    max_parallel = 8
    supports_failover = True

    def required_tools(self, impl: str) -> dict[str, str]:
        tools = dict(self.tools)
        if impl == "userspace":
            tools["wireguard-go"] = "wireguard-go"
        return tools

    def implementation(self) -> str:
        from polynimbus import capabilities

        return capabilities.wireguard_impl()

    def implementation_note(self, impl: str) -> str:
        if impl == "kernel":
            return "kernel WireGuard module"
        return "wireguard-go (user space over TUN): this kernel has no WireGuard module"

    def ifname_pattern(self, plan: Plan, site: SitePlan) -> str:
        return site.tunnel_if if plan.parallel == 1 else f"{site.tunnel_if}*"

    def gateway_items(
        self, plan: Plan, site: SitePlan, creds: Mapping[str, Any], impl: str
    ) -> list[Item]:
        """One WireGuard interface per parallel tunnel (``plan.parallel``; port
        ``plan.port + k``), each with every peer; overlay routes over all of them
        (multipath when several: :func:`~polynimbus.tunnels.base.ecmp_routes`)."""
        devs = [parallel_ifname(site.tunnel_if, k) for k in range(plan.parallel)]
        out: list[Item] = []
        for k, ifname in enumerate(devs):
            config = render_wg_config(plan, site, creds, k)
            if impl == "userspace":
                proc = userspace_process(ifname)
                out += [
                    proc,
                    Link(ifname, "wireguard", mtu=plan.tunnel_mtu, impl=impl, process=proc.name),
                ]
            else:
                out.append(Link(ifname, "wireguard", mtu=plan.tunnel_mtu, impl=impl))
            buffer = USERSPACE_SOCKET_BUFFER if impl == "userspace" else None
            out.append(WireGuardConfig(ifname, wg_digest(config), config, buffer))
        for peer in site.peers:
            for d in peer.reaches:
                out += ecmp_routes(plan.prefixes(d), devs)
        return out
