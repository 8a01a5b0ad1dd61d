"""WireGuard configuration of lab gateways, applied with ``wg syncconf`` (kernel module or
``wireguard-go``) and read back with ``wg showconf``, compared by meaning."""

from __future__ import annotations

import time
from pathlib import Path

from polynimbus.errors import ApplyError
from polynimbus.node import WireGuardConfig
from polynimbus.targets.lab import netns
from polynimbus.tunnels.wireguard import wg_digest

WG_SOCKET_DIR = Path("/var/run/wireguard")
"""Where ``wireguard-go`` keeps its control sockets (host-wide, not per namespace)."""
SOCKET_TIMEOUT_S = 5.0


def observe(ns: str, ifname: str) -> WireGuardConfig | None:
    """The live configuration of ``ifname`` in ``ns`` (digest only), or ``None``."""
    res = netns.run(["ip", "netns", "exec", ns, "wg", "showconf", ifname])
    if res.returncode != 0 or not res.stdout.strip():
        return None
    return WireGuardConfig(ifname, wg_digest(res.stdout), "")


def create(ns: str, item: WireGuardConfig, userspace: bool) -> None:
    """Apply ``item`` with ``wg syncconf``. The configuration holds the private key; it is
    handed over through a pipe, never written to a file.

    Raises:
        ApplyError: the control socket did not appear, or ``wg`` failed.
    """
    if userspace:
        sock = WG_SOCKET_DIR / f"{item.ifname}.sock"
        deadline = time.monotonic() + SOCKET_TIMEOUT_S
        while not sock.exists():
            if time.monotonic() > deadline:
                raise ApplyError(
                    f"wireguard-go has no control socket {sock} after {SOCKET_TIMEOUT_S:.0f} s",
                    "run up again; see the log in the state directory's run/",
                )
            time.sleep(0.02)
    # the configuration goes through a pipe: no file ever holds the private key
    netns.ns_exec(
        ns,
        ["wg", "syncconf", item.ifname, "/dev/stdin"],
        input_text=item.config,
        what=f"wg syncconf {item.ifname}",
    )
