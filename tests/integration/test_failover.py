"""Failover (issue 9): the internet path between two gateways cut while a ping every 10 ms
and a TCP flow cross it; traffic moves through the third site within a second and back
when the path heals. Positive control in the same test: with the two agents frozen, the
same cut stops the ping for as long as it lasts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from polynimbus import names
from polynimbus.agent.failover import ALL_HEARD
from polynimbus.events import read_events
from polynimbus.orchestrate import lab_up
from polynimbus.plan import build_plan
from polynimbus.targets.lab import faults, processes
from polynimbus.verify.gaps import FastPing
from tests.integration.test_cli import POLYNIMBUS

INTENT = """name: fo-t
overlay: {failover: true}
sites:
  - {name: a, provider: aws, hosts: [h1]}
  - {name: b, provider: azure, hosts: [h1]}
  - {name: c, provider: openstack, hosts: [h1]}
"""


def allowed_ips(ns: str, ifname: str) -> dict[str, list[str]]:
    res = subprocess.run(
        ["ip", "netns", "exec", ns, "wg", "show", ifname, "allowed-ips"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {k: sorted(v) for k, *v in (line.split() for line in res.stdout.splitlines())}


def agent_pids(lab: str, site: str) -> list[int]:
    ns = names.gateway_ns(lab, site)
    return [
        p.pid for p in processes.running([ns]).get(ns, []) if "polynimbus.agent.failover" in p.argv
    ]


def agents_heard(sdir: Path, agents: int, timeout_s: float = 10) -> None:
    """Wait until each of the lab's ``agents`` failover agents logged that every peer
    answers (before that, a silent peer gets the startup grace, not a failover)."""

    def done() -> bool:
        logs = list((sdir / "run").glob("*.python3-failover.json.log"))
        return len(logs) == agents and all(ALL_HEARD in f.read_text() for f in logs)

    assert wait_until(done, timeout_s), [
        f.read_text() for f in (sdir / "run").glob("*.python3-failover.json.log")
    ]


def wait_until(cond, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_a_cut_tunnel_fails_over_through_the_detour_and_back_within_a_second(lab) -> None:  # type: ignore[no-untyped-def]
    intent = lab.intent(INTENT)
    plan = build_plan(intent)
    sdir = lab.state(intent.name)
    lab_up(intent, sdir)
    a, b, c = plan.site("a"), plan.site("b"), plan.site("c")
    gw_a = names.gateway_ns(plan.name, "a")
    normal = allowed_ips(gw_a, a.tunnel_if)
    assert sorted(normal.values()) == [[b.block], [c.block]]
    src = names.host_ns(plan.name, "a", "h1")
    dst_ns = names.host_ns(plan.name, "b", "h1")
    # every agent has heard its peers before the cut (until then a silent peer gets the
    # agents' startup grace, 5 s: a cut during it was seen failing over too late in CI)
    agents_heard(sdir, len(plan.sites))

    server = subprocess.Popen(
        ["ip", "netns", "exec", dst_ns, "iperf3", "-s", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        client = subprocess.Popen(
            ["ip", "netns", "exec", src, "iperf3", "-c", b.hosts[0].address]
            + ["-t", "7", "-b", "100M", "-J"],  # paced: a flow at full speed starves 2 cores
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ping = FastPing(src, b.hosts[0].address)
        time.sleep(1.5)
        cut_at = time.time()
        assert faults.cut(plan.name, a.public_address, b.public_address)
        # a's gateway gives b's block to c, keeps b's gateway address on b's own tunnel
        moved = wait_until(
            lambda: (
                sorted(map(tuple, allowed_ips(gw_a, a.tunnel_if).values()))
                == sorted([(f"{b.gateway_address}/32",), tuple(sorted([b.block, c.block]))])
            ),
            2,
        )
        assert moved, allowed_ips(gw_a, a.tunnel_if)
        time.sleep(1.5)
        healed_at = time.time()
        assert faults.heal(plan.name, a.public_address, b.public_address)
        back = wait_until(lambda: allowed_ips(gw_a, a.tunnel_if) == normal, 3)
        assert back, allowed_ips(gw_a, a.tunnel_if)
        time.sleep(0.5)
        run = ping.stop()
        out, errs = client.communicate(timeout=20)
    finally:
        faults.heal(plan.name)
        server.kill()
        server.wait()
    assert client.returncode == 0, errs
    # the ping: answered before, during and after the cut; one gap at the cut, < 1 s
    assert run.gap_ms is not None and 200 < run.gap_ms < 1000, run  # seen, and recovered
    assert run.answered > 0.8 * run.sent, run
    assert run.redirects == 0, run  # the detour forwards quietly (send_redirects off)
    # the TCP flow kept going: bytes in every second of its 7
    intervals = json.loads(out)["intervals"]
    per_second = [i["sum"]["bytes"] for i in intervals]
    assert len(per_second) >= 7 and all(x > 0 for x in per_second), per_second
    # every move is an event: both ends failed over via c, then back
    events = [e for e in read_events(sdir) if e["ts"] >= cut_at - 0.5]
    kinds = {(e["kind"], e["site"], e["peer"], e["via"]) for e in events}
    assert ("failover", "a", "b", "c") in kinds and ("failover", "b", "a", "c") in kinds, events
    assert ("failback", "a", "b", None) in kinds and ("failback", "b", "a", None) in kinds
    first = min(e["ts"] for e in events if e["kind"] == "failover")
    assert first - cut_at < 1.0, (cut_at, events)
    assert all(e["ts"] >= healed_at for e in events if e["kind"] == "failback"), events

    # ... and in the metrics: a monitor's /metrics counts the agents' events
    monitor = subprocess.Popen(
        [POLYNIMBUS, "monitor", str(lab.write(INTENT)), "--state-dir", str(sdir)]
        + ["--metrics", "127.0.0.1:0", "--duration", "30"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert monitor.stderr is not None
        first = monitor.stderr.readline()
        url = re.search(r"metrics on (http://\S+/metrics)", first)
        assert url, first
        with urllib.request.urlopen(url.group(1), timeout=5) as r:
            metrics = r.read().decode()
    finally:
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(timeout=15) == 0
    for kind, site, peer in (("failover", "a", "b"), ("failback", "b", "a")):
        line = f'polynimbus_failover_events_total{{kind="{kind}",peer="{peer}",site="{site}"}}'
        assert line in metrics, metrics[-2000:]

    # positive control: the agents of a and b frozen, the same cut stops the ping
    frozen = agent_pids(plan.name, "a") + agent_pids(plan.name, "b")
    assert len(frozen) == 2
    ping = FastPing(src, b.hosts[0].address)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(0.3)
        faults.cut(plan.name, a.public_address, b.public_address)
        time.sleep(1.5)
        faults.heal(plan.name)
        time.sleep(0.5)
        stalled = ping.stop()
    finally:
        faults.heal(plan.name)
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert stalled.gap_ms is not None and stalled.gap_ms > 1400, stalled
    # and the agents pick up again: the plan's AllowedIPs once every peer answers
    assert wait_until(lambda: allowed_ips(gw_a, a.tunnel_if) == normal, 4)
    assert sorted(agent_pids(plan.name, "a") + agent_pids(plan.name, "b")) == sorted(frozen)
