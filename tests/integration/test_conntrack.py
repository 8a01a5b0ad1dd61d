"""Gateways do not track overlay or tunnel packets (conntrack cost CPU on every packet, in
the user-space tunnel daemon's system calls), and still track and masquerade the LAN's
internet traffic (issue 8)."""

from __future__ import annotations

import subprocess

import pytest

from polynimbus import names
from polynimbus.orchestrate import lab_up
from polynimbus.plan import build_plan
from polynimbus.verify.reachability import ping_all

INTENT = """name: bn-ct-{t}
overlay: {{topology: full-mesh, transport: {t}}}
sites:
  - {{name: a, provider: aws, hosts: [h]}}
  - {{name: b, provider: azure, hosts: [h]}}
"""


def conntrack(ns: str) -> list[str]:
    """The conntrack entries of namespace ``ns`` (``/proc/net/nf_conntrack`` there)."""
    res = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/proc/net/nf_conntrack"],
        capture_output=True,
        text=True,
        check=True,
    )
    return res.stdout.splitlines()


@pytest.mark.parametrize("transport", ["wireguard", "vxlan"])
def test_overlay_and_tunnel_packets_are_untracked_internet_traffic_is_tracked(
    lab, transport: str
) -> None:
    intent = lab.intent(INTENT.format(t=transport))
    plan = build_plan(intent)
    lab_up(intent, lab.state(intent.name))
    assert all(p.reachable for p in ping_all(plan, count=2))
    a = plan.site("a")
    host = names.host_ns(plan.name, "a", a.hosts[0].name)
    ping = subprocess.run(
        ["ip", "netns", "exec", host, "ping", "-c", "1", "-W", "1", "192.0.2.1"],
        capture_output=True,
        check=False,
    )
    assert ping.returncode == 0  # the internet, masqueraded
    for site in plan.sites:
        entries = conntrack(names.gateway_ns(plan.name, site.name))
        others = [s for s in plan.sites if s.name != site.name]
        overlay = [
            e
            for e in entries
            if any(f"dst={h.address} " in e for s in others for h in s.hosts)
            or f"dport={plan.port} " in e
        ]
        assert overlay == [], f"{site.name} tracks overlay or tunnel packets: {overlay}"
    masq = [e for e in conntrack(names.gateway_ns(plan.name, "a")) if "dst=192.0.2.1 " in e]
    assert masq and f"dst={a.public_address} " in masq[0]  # the reply goes to the public address
