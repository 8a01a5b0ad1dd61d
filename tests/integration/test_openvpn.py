"""The OpenVPN transport in the lab: a peer cannot send from another site's addresses;
``--rotate-keys`` restarts every tunnel with a new CA and the overlay is back; parallel
tunnels carry flows over each of them."""

from __future__ import annotations

import re
import subprocess

from polynimbus import names, procs
from polynimbus.orchestrate import lab_down, lab_up
from polynimbus.plan import build_plan
from polynimbus.tunnels.base import parallel_ifname
from polynimbus.verify.reachability import ping_all
from tests.integration.conftest import flows_per_tunnel, leftovers, three_sites
from tests.integration.test_parallel import TWO_SITES


def sh(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)


def in_echos(ns: str) -> int:
    """ICMP echo requests the kernel of ``ns`` received (``Icmp: InEchos``)."""
    text = sh(ns, "cat", "/proc/net/snmp").stdout
    head, values = [line.split()[1:] for line in text.splitlines() if line.startswith("Icmp:")]
    return int(values[head.index("InEchos")])


def daemons(ns: str) -> list[int]:
    """Pids of the openvpn processes running in namespace ``ns``."""
    inode = procs.netns_inode(ns)
    return sorted(
        p.pid for p in procs.processes() if p.netns_inode == inode and p.argv[:1] == ("openvpn",)
    )


def dropped(ns: str) -> int:
    """Packets the gateway's tunnel source check dropped."""
    text = sh(ns, "nft", "list", "table", "inet", "pn-openvpn").stdout
    m = re.search(r"counter packets (\d+)", text)
    assert m, text
    return int(m.group(1))


def test_a_peer_cannot_send_from_another_sites_addresses_and_rotation_restarts_all(lab):
    name = "it-ovpn-src"
    intent = lab.intent(three_sites(name, "full-mesh", "openvpn"))
    plan = build_plan(intent)
    sdir = lab.state(name)
    assert lab_up(intent, sdir).changed
    aws, os_, az = plan.site("aws"), plan.site("os"), plan.site("az")
    gw_aws, gw_os = names.gateway_ns(name, "aws"), names.gateway_ns(name, "os")
    target_ns = names.host_ns(name, "os", os_.hosts[0].name)
    target = os_.hosts[0].address

    # aws's gateway sends to a host of os from an address of az's block, through its
    # authenticated tunnel to os: os's gateway drops it before the host sees it ...
    spoof = az.block.replace(".0/24", ".99")
    assert sh(gw_aws, "ip", "addr", "add", f"{spoof}/32", "dev", "lo").returncode == 0
    echos, drops = in_echos(target_ns), dropped(gw_os)
    sh(gw_aws, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", spoof, target)
    assert in_echos(target_ns) == echos
    assert dropped(gw_os) >= drops + 3
    # ... while its own address passes (positive control, same run)
    assert (
        sh(gw_aws, "ping", "-c", "1", "-W", "1", "-I", aws.gateway_address, target).returncode == 0
    )
    assert in_echos(target_ns) == echos + 1

    # a second up removes the stray address and restarts nothing
    pids = daemons(gw_os)
    assert len(pids) == 2
    second = lab_up(intent, sdir)
    assert [c.action for c in second.changes] == ["delete"]
    assert daemons(gw_os) == pids

    # new CA and certificates: every daemon restarts, the overlay carries traffic again
    ca = (sdir / "pki" / "ca.pem").read_text()
    rotated = lab_up(intent, sdir, rotate_keys=True)
    restarted = [c for c in rotated.changes if c.resource.item.kind == "process"]
    assert len(restarted) == 2 * len(plan.tunnels)
    assert (sdir / "pki" / "ca.pem").read_text() != ca
    assert rotated.warnings == []
    assert [p for p in ping_all(plan) if not p.reachable] == []

    lab_down(name, sdir)
    assert leftovers(name, sdir) == []


def test_two_openvpn_tunnels_per_pair_carry_flows_over_both(lab):
    """``overlay.parallel: 2``: two daemons and TUN interfaces per peer pair, one multipath
    route; 16 TCP flows reach the far gateway through both (all on one: p = 2 * 2**-16)."""
    name = "it-ovpn-par"
    intent = lab.intent(TWO_SITES.format(name=name, transport="openvpn", parallel=2))
    plan = build_plan(intent)
    sdir = lab.state(name)
    assert lab_up(intent, sdir).changed
    assert all(p.reachable for p in ping_all(plan))
    assert not lab_up(intent, sdir).changed

    a, b = plan.site("a"), plan.site("b")
    gw_a, gw_b = names.gateway_ns(name, "a"), names.gateway_ns(name, "b")
    devs_b = [parallel_ifname(names.openvpn_if(name, a.site_id), k) for k in range(2)]
    route = sh(gw_a, "ip", "route", "show", b.block).stdout
    base = names.openvpn_if(name, b.site_id)
    assert all(f"dev {parallel_ifname(base, k)} " in route for k in range(2)), route
    assert len(daemons(gw_b)) == 2

    grew = flows_per_tunnel(name, b, devs_b)
    assert all(g > 50 for g in grew), grew

    lab_down(name, sdir)
    assert leftovers(name, sdir) == []
