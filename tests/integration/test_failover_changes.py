"""Changes without disturbance during a failover (issue 9): while the tunnel a-b is cut and
the agents carry its traffic through c, ``verify`` reports no drift and an ``up`` (the same
intent, then one more host at c) leaves the moved AllowedIPs as they are: a ping every
10 ms from a to b sees no gap. Positive control in the same test: with the agent's
declaration not trusted (its digest altered), the same ``up`` puts the planned AllowedIPs
back on the dead tunnel."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from polynimbus import names
from polynimbus.agent.failover import MOVED_FILE, locked
from polynimbus.orchestrate import desired_lab, lab_drift, lab_up
from polynimbus.plan import build_plan
from polynimbus.targets.lab import LabTarget, faults
from polynimbus.verify.gaps import FastPing
from tests.integration.test_failover import agent_pids, agents_heard, allowed_ips, wait_until

INTENT = """name: uf-t
overlay: {failover: true}
sites:
  - {name: a, provider: aws, hosts: [h1]}
  - {name: b, provider: azure, hosts: [h1]}
  - {name: c, provider: openstack, hosts: [HOSTS]}
"""
MAX_GAP_MS = 100.0


def test_an_up_during_a_failover_keeps_the_detour_and_disturbs_nothing(lab) -> None:  # type: ignore[no-untyped-def]
    intent = lab.intent(INTENT.replace("HOSTS", "h1"))
    plan = build_plan(intent)
    sdir = lab.state(intent.name)
    lab_up(intent, sdir)
    a, b, c = plan.site("a"), plan.site("b"), plan.site("c")
    gw_a, gw_b = names.gateway_ns(plan.name, "a"), names.gateway_ns(plan.name, "b")
    normal = allowed_ips(gw_a, a.tunnel_if)
    detour_a = sorted([(f"{b.gateway_address}/32",), tuple(sorted([b.block, c.block]))])
    detour_b = sorted([(f"{a.gateway_address}/32",), tuple(sorted([a.block, c.block]))])

    def moved() -> bool:
        return (
            sorted(map(tuple, allowed_ips(gw_a, a.tunnel_if).values())) == detour_a
            and sorted(map(tuple, allowed_ips(gw_b, b.tunnel_if).values())) == detour_b
        )

    src = names.host_ns(plan.name, "a", "h1")
    agents_heard(sdir, len(plan.sites))  # before: the agents' startup grace
    try:
        assert faults.cut(plan.name, a.public_address, b.public_address)
        assert wait_until(moved, 2), allowed_ips(gw_a, a.tunnel_if)
        assert lab_drift(intent, sdir) == []  # the agents' work is no drift

        # the same intent again: nothing to do, the detour stays, the ping goes on
        ping = FastPing(src, b.hosts[0].address)
        time.sleep(0.3)
        result = lab_up(intent, sdir)
        assert not result.changed, [ch.describe() for ch in result.changes]
        assert moved()
        # a change of a's WireGuard interface applied while it is failed over
        desired, _ = desired_lab(plan, sdir, dry_run=True)
        (wg_a,) = [r for r in desired if r.kind == "wgconf" and r.node == gw_a]
        LabTarget(sdir).create(wg_a)
        assert moved()
        time.sleep(0.3)
        run = ping.stop()
        assert run.answered > 0 and run.gap_ms is not None and run.gap_ms < MAX_GAP_MS, run

        # one more host at c: its changes are made, the detour stays, the ping goes on
        bigger = lab.intent(INTENT.replace("HOSTS", "h1, h2"))
        ping = FastPing(src, b.hosts[0].address)
        time.sleep(0.3)
        result = lab_up(bigger, sdir)
        assert result.changed
        assert moved()
        time.sleep(0.3)
        run = ping.stop()
        assert run.answered > 0 and run.gap_ms is not None and run.gap_ms < MAX_GAP_MS, run
        assert lab_drift(bigger, sdir) == []

        # positive control: a's declaration not trusted (digest altered), the up resets a's
        # AllowedIPs to the plan; a's agent is paused (outside its lock) so that it cannot
        # put them back before they are read
        (pid,) = agent_pids(plan.name, "a")
        directory = Path(os.readlink(f"/proc/{pid}/cwd"))
        with locked(directory):
            os.kill(pid, signal.SIGSTOP)
        try:
            declared = json.loads((directory / MOVED_FILE).read_text())
            assert declared["peers"], declared
            (directory / MOVED_FILE).write_text(json.dumps(declared | {"digest": "altered"}))
            result = lab_up(bigger, sdir)
            # (b's and c's agents may move too meanwhile: a's is silent)
            wgconf = [(ch.resource.kind, ch.resource.node) for ch in result.changes]
            assert ("wgconf", gw_a) in wgconf, result.changes
            assert allowed_ips(gw_a, a.tunnel_if) == normal
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        faults.heal(plan.name)
