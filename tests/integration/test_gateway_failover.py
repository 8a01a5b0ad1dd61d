"""Two gateways (issue 9): the active gateway of a ``gateways: 2`` site dies while a ping
every 10 ms and a TCP flow cross it; the standby takes the hosts' gateway address and the
tunnels within a second. ``up`` revives the dead one, which takes over again. Positive
control in the same test: with the standby's keepalived frozen, the same death stops the
ping for as long as it lasts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from polynimbus import names
from polynimbus.events import read_events
from polynimbus.orchestrate import lab_up
from polynimbus.plan import build_plan
from polynimbus.targets.lab import faults, processes
from polynimbus.verify.gaps import FastPing
from tests.integration.test_failover import agents_heard

INTENT = """name: g2-t
overlay: {failover: true}
sites:
  - {name: a, provider: aws, hosts: [h1]}
  - {name: b, provider: azure, hosts: [h1], gateways: 2}
  - {name: c, provider: openstack, hosts: [h1]}
"""


def holds(ns: str, address: str) -> bool:
    res = subprocess.run(
        ["ip", "-n", ns, "-o", "addr", "show", "to", f"{address}/32"],
        capture_output=True,
        text=True,
        check=True,
    )
    return address in res.stdout


def allowed_ips(ns: str, ifname: str) -> dict[str, list[str]]:
    res = subprocess.run(
        ["ip", "netns", "exec", ns, "wg", "show", ifname, "allowed-ips"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {k: sorted(v) for k, *v in (line.split() for line in res.stdout.splitlines())}


def pids_of(ns: str, what: str) -> list[int]:
    return [p.pid for p in processes.running([ns]).get(ns, []) if what in " ".join(p.argv)]


def wait_until(cond, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_the_standby_takes_over_a_dead_gateway_within_a_second(lab) -> None:  # type: ignore[no-untyped-def]
    intent = lab.intent(INTENT)
    plan = build_plan(intent)
    sdir = lab.state(intent.name)
    lab_up(intent, sdir)
    a, b = plan.site("a"), plan.site("b")
    assert b.standby is not None
    primary, standby = names.gateway_ns(plan.name, "b"), names.standby_ns(plan.name, "b")
    vip = b.gateway_address
    gw_a = names.gateway_ns(plan.name, "a")
    src, dst = names.host_ns(plan.name, "a", "h1"), names.host_ns(plan.name, "b", "h1")
    assert wait_until(lambda: holds(primary, vip), 5)
    assert not holds(standby, vip)
    # keepalived's address is its own: a second up changes nothing (and keeps it)
    again = lab_up(intent, sdir)
    assert not again.changed, [c.describe() for c in again.changes]
    assert holds(primary, vip)
    normal = allowed_ips(gw_a, a.tunnel_if)
    assert sorted(normal.values()) == sorted(
        [[b.block], [f"{b.standby.address}/32"], [plan.site("c").block]]
    )
    agents_heard(sdir, len(plan.sites) + 1)  # a standby too; before: the startup grace

    server = subprocess.Popen(
        ["ip", "netns", "exec", dst, "iperf3", "-s", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        # paced: a flow at full speed starves the agents' probes on 2 cores
        client = subprocess.Popen(
            ["ip", "netns", "exec", src, "iperf3", "-c", b.hosts[0].address]
            + ["-t", "6", "-b", "100M", "-J"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ping = FastPing(src, b.hosts[0].address)
        time.sleep(1.5)
        killed_at = time.time()
        assert faults.kill_node(primary)
        assert wait_until(lambda: holds(standby, vip), 2)
        time.sleep(2.5)
        run = ping.stop()
        out, errs = client.communicate(timeout=20)
    finally:
        server.kill()
        server.wait()
    assert client.returncode == 0, errs
    # the ping: answered before and after the death; one gap, < 1 s
    assert run.gap_ms is not None and 100 < run.gap_ms < 1000, run
    assert run.answered > 0.5 * run.sent, run  # (a loaded 2-core host drops some)
    reach = subprocess.run(
        ["ip", "netns", "exec", src, "ping", "-c", "3", "-i", "0.1", "-W", "1", b.hosts[0].address],
        capture_output=True,
    )
    assert reach.returncode == 0  # answered after the death: the gap was not the tail
    # the TCP flow kept going: bytes in every second of its 6
    per_second = [i["sum"]["bytes"] for i in json.loads(out)["intervals"]]
    assert len(per_second) >= 6 and all(x > 0 for x in per_second), per_second
    # a's gateway gave b's block to the standby, kept the primary's own address on it
    moved = allowed_ips(gw_a, a.tunnel_if)
    assert [b.block, f"{b.standby.address}/32"] in moved.values(), moved
    assert [f"{b.standby.primary_address}/32"] in moved.values(), moved
    # every move is an event: the standby's takeover, a's and c's failovers to it
    events = [e for e in read_events(sdir) if e["ts"] >= killed_at - 0.05]
    kinds = {(e["kind"], e["site"], e["peer"], e["via"]) for e in events}
    assert ("takeover", "b", "gateway-2", None) in kinds, events
    assert ("failover", "a", "b", "b/gateway-2") in kinds, events
    assert ("failover", "c", "b", "b/gateway-2") in kinds, events
    assert max(e["ts"] for e in events) - killed_at < 1.0, (killed_at, events)

    # up revives the primary, which takes the address and the tunnels back, < 1 s apart
    ping = FastPing(src, b.hosts[0].address)
    lab_up(intent, sdir)
    assert wait_until(lambda: holds(primary, vip) and not holds(standby, vip), 4)
    assert wait_until(lambda: allowed_ips(gw_a, a.tunnel_if) == normal, 2)
    time.sleep(0.3)
    back = ping.stop()
    assert back.gap_ms is not None and back.gap_ms < 1000, back
    assert ("takeover", "b", "gateway", None) in {
        (e["kind"], e["site"], e["peer"], e["via"]) for e in read_events(sdir, since=killed_at)
    }

    # positive control: the standby's keepalived frozen, the same death stops the ping
    frozen = pids_of(standby, "keepalived")
    assert frozen
    ping = FastPing(src, b.hosts[0].address)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(0.3)
        faults.kill_node(primary)
        time.sleep(1.5)
        assert not holds(standby, vip)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert wait_until(lambda: holds(standby, vip), 2)  # and it takes over once thawed
    time.sleep(0.5)
    stalled = ping.stop()
    assert stalled.gap_ms is not None and stalled.gap_ms > 1300, stalled
