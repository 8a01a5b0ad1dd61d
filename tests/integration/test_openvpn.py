"""The OpenVPN transport in the lab: a peer cannot send from another site's addresses;
``--rotate-keys`` restarts every tunnel with a new CA and the overlay is back."""

from __future__ import annotations

import re
import subprocess

from polynimbus import names
from polynimbus.orchestrate import lab_down, lab_up
from polynimbus.plan import build_plan
from polynimbus.verify.reachability import ping_all
from tests.integration.conftest import leftovers, three_sites


def sh(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)


def in_echos(ns: str) -> int:
    """ICMP echo requests the kernel of ``ns`` received (``Icmp: InEchos``)."""
    text = sh(ns, "cat", "/proc/net/snmp").stdout
    head, values = [line.split()[1:] for line in text.splitlines() if line.startswith("Icmp:")]
    return int(values[head.index("InEchos")])


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
    pids = sorted(p for p in sh(gw_os, "pgrep", "-x", "openvpn").stdout.split())
    second = lab_up(intent, sdir)
    assert [c.action for c in second.changes] == ["delete"]
    assert sorted(sh(gw_os, "pgrep", "-x", "openvpn").stdout.split()) == pids

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
