"""``overlay.parallel``: several tunnels per peer pair, flows spread by a layer-4 hash."""

from __future__ import annotations

import subprocess

from polynimbus import names
from polynimbus.orchestrate import lab_up
from polynimbus.plan import build_plan
from polynimbus.tunnels.base import parallel_ifname
from polynimbus.verify.reachability import ping_all
from tests.integration.conftest import flows_per_tunnel

TWO_SITES = """name: {name}
overlay: {{topology: full-mesh, transport: {transport}, parallel: {parallel}}}
sites:
  - {{name: a, provider: aws, location: {{lat: 50.1, lon: 8.7}}, hosts: [h1]}}
  - {{name: b, provider: azure, location: {{lat: 52.4, lon: 4.9}}, hosts: [h1]}}
"""


def sh(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)


def test_two_wireguard_tunnels_per_pair_carry_flows_over_both(lab) -> None:
    name = "it-par-wg"
    intent = lab.intent(TWO_SITES.format(name=name, transport="wireguard", parallel=2))
    plan = build_plan(intent)
    assert plan.parallel == 2
    sdir = lab.state(name)
    assert lab_up(intent, sdir).changed
    assert all(p.reachable for p in ping_all(plan))
    second = lab_up(intent, sdir)
    assert not second.changed, [c.describe() for c in second.changes]

    a, b = plan.site("a"), plan.site("b")
    devs = [parallel_ifname(b.tunnel_if, k) for k in range(2)]
    route = sh(names.gateway_ns(name, "a"), "ip", "route", "show", b.block).stdout
    assert all(f"dev {parallel_ifname(a.tunnel_if, k)}" in route for k in range(2)), route

    # 16 TCP connections with distinct source ports: the layer-4 hash sends some over
    # each tunnel (all 16 on one tunnel has probability 2 * 2**-16)
    grew = flows_per_tunnel(name, b, devs)
    assert all(g > 50 for g in grew), grew
