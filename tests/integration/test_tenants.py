"""Tenants in a real lab: matrices, PMTU, live move with an open TCP connection."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import yaml

from polynimbus import names
from polynimbus.intent import load_intent
from polynimbus.move import move_host
from polynimbus.orchestrate import lab_up
from polynimbus.plan import build_plan

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tenants.yaml"
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def text_named(name: str) -> str:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["name"] = name
    return yaml.safe_dump(data, sort_keys=False)


def in_ns(ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
    )


def pn(*args: str, env_state: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, XDG_STATE_HOME=str(env_state))
    return subprocess.run(
        [str(VENV_BIN / "polynimbus"), *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_tenant_matrices_pmtu_and_a_live_move(lab, tmp_path: Path) -> None:
    name = "it-ten"
    path = lab.write(text_named(name))
    xdg = tmp_path / "xdg"
    lab.names.add(name)
    up = pn("up", str(path), env_state=xdg)
    assert up.returncode == 0, up.stderr
    sdir = xdg / "polynimbus" / name
    plan = build_plan(load_intent(path))
    acme = plan.tenant("acme")

    # verify: every tenant pair reaches (layer 2 marked), isolation holds, as JSON
    res = pn("verify", str(path), "--json", env_state=xdg)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    doc = json.loads(res.stdout)
    pairs = doc["tenants"]["pairs"]
    assert len(pairs) == 4 * 3 + 2 * 1 and all(p["reachable"] for p in pairs)
    l2 = {(p["src"], p["dst"]) for p in pairs if p["layer2"]}
    assert l2 == {("i3s/c1", "aws-fra/c2"), ("aws-fra/c2", "i3s/c1")}
    iso = doc["tenants"]["isolation"]
    assert {(i["src"], i["dst"]) for i in iso} >= {("acme", "globex"), ("globex", "acme")}
    assert all(i["ok"] and sum(i["control"].values()) > 0 for i in iso)
    # and the table form
    table = pn("verify", str(path), env_state=xdg)
    assert table.returncode == 0 and "Tenant acme" in table.stdout and "Isolation" in table.stdout

    # PMTU: a DF ping at the tenant MTU crosses (routed and layer 2); one byte more gets an
    # error at once, never a silent drop
    c1 = names.tenant_host_ns(name, "i3s", "acme", "c1")
    web1 = names.tenant_host_ns(name, "i3s", "acme", "web-1")
    size = plan.tenant_mtu - 28
    for src in (c1, web1):
        fits = in_ns(src, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", str(size), "172.16.0.50")
        assert fits.returncode == 0, fits.stdout + fits.stderr
        big = in_ns(
            src, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", str(size + 1), "172.16.0.50"
        )
        assert big.returncode != 0
        assert f"mtu={plan.tenant_mtu}" in (big.stdout + big.stderr), big.stdout + big.stderr

    # layer 2 across sites: c1 resolves c2 by ARP to c2's own MAC (no proxy in between),
    # and c1's broadcast reaches c2 on the other site
    c2 = names.tenant_host_ns(name, "aws-fra", "acme", "c2")
    c2_mac = acme.host("aws-fra/c2")[1].mac
    neigh = in_ns(c1, "ip", "neigh", "show", "172.16.0.50").stdout
    assert c2_mac in neigh.lower(), neigh
    cap = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            c2,
            "tcpdump",
            "-n",
            "-i",
            "eth0",
            "-c",
            "1",
            "-l",
            "icmp and dst host 172.16.0.255",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_listening(cap)
        in_ns(c1, "ping", "-b", "-c", "3", "-i", "0.2", "-W", "1", "172.16.0.255")
        got, _ = cap.communicate(timeout=10)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    assert "172.16.0.1 > 172.16.0.255" in got, got

    # move c1 to aws-fra while web-1 holds a TCP connection to it
    client: subprocess.Popen[str] | None = None
    server = subprocess.Popen(
        ["ip", "netns", "exec", c1, "iperf3", "-s", "-1", "-p", "5399"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        client = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                web1,
                "iperf3",
                "-c",
                "172.16.0.1",
                "-p",
                "5399",
                "-t",
                "6",
                "-b",
                "10M",
                "-J",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        mac_before = in_ns(c1, "cat", "/sys/class/net/eth0/address").stdout.strip()
        moved = pn("move", "acme:i3s/c1", "aws-fra", "--lab", name, "--json", env_state=xdg)
        assert moved.returncode == 0, moved.stderr
        result = json.loads(moved.stdout)
        out, err = client.communicate(timeout=30)
        assert client.returncode == 0, err + out[-1000:]
        report = json.loads(out)
        # the same connection carried data through the move, to the end
        intervals = [i["sum"]["bytes"] for i in report["intervals"]]
        assert len(intervals) >= 6 and all(b > 0 for b in intervals[-3:]), intervals
    finally:
        for proc in (server, client):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert result["host"] == "acme:aws-fra/c1"
    assert result["downtime_ms"] is not None and result["downtime_ms"] < 1000, result
    assert result["received"] > 10
    new_ns = names.tenant_host_ns(name, "aws-fra", "acme", "c1")
    assert in_ns(c1, "true").returncode != 0  # the old name is gone
    assert in_ns(new_ns, "cat", "/sys/class/net/eth0/address").stdout.strip() == mac_before
    addr = in_ns(new_ns, "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert "172.16.0.1/24" in addr
    # the lab's own intent follows; verify of it passes; up of it changes nothing
    after = pn("verify", "--lab", name, "--json", env_state=xdg)
    assert after.returncode == 0, after.stdout[-2000:] + after.stderr
    assert json.loads(after.stdout)["ok"]
    exported = pn("export", "--lab", name, env_state=xdg)
    assert exported.returncode == 0 and "aws-fra/c1" in exported.stdout
    again = lab_up(load_intent(_write(tmp_path / "after.yaml", exported.stdout)), sdir)
    assert not again.changed, [c.describe() for c in again.changes]
    # moving into a site the network does not span is refused with the way to extend it
    refused = pn("move", "acme:aws-fra/c1", "azure-weu", "--lab", name, env_state=xdg)
    assert refused.returncode == 1
    assert "does not span 'azure-weu'" in refused.stderr and "add azure-weu" in refused.stderr
    assert "Traceback" not in refused.stderr
    del acme


def test_an_intent_change_applied_to_its_nodes_only_is_complete(lab) -> None:
    """``lab_up(only_changes=True)`` (the API's writes): a new tenant host and a new tenant
    are built by reading and changing only the nodes they touch; a full up afterwards finds
    nothing to do, and drift elsewhere is left for that full up."""
    name = "it-tsc"
    data = yaml.safe_load(text_named(name))
    intent = lab.intent(yaml.safe_dump(data))
    sdir = lab.state(name)
    lab_up(intent, sdir)
    # drift elsewhere: a route of globex's router on azure-weu goes missing
    router = names.tenant_router_ns(name, "azure-weu", "globex")
    assert in_ns(router, "ip", "route", "del", "192.168.1.0/24").returncode == 0
    data["tenants"][0]["networks"][1]["hosts"].append("aws-fra/c3")
    data["tenants"].append(
        {
            "name": "initech",
            "networks": [
                {
                    "name": "n",
                    "subnet": "10.9.0.0/24",
                    "sites": ["i3s", "azure-weu"],
                    "hosts": ["i3s/a", "azure-weu/b"],
                }
            ],
        }
    )
    changed = lab.intent(yaml.safe_dump(data))
    scoped = lab_up(changed, sdir, only_changes=True)
    touched = {c.resource.node for c in scoped.changes}
    assert names.tenant_host_ns(name, "aws-fra", "acme", "c3") in touched
    assert router not in touched
    ping = in_ns(
        names.tenant_host_ns(name, "i3s", "initech", "a"), "ping", "-c", "1", "-W", "2", "10.9.0.2"
    )
    assert ping.returncode == 0, ping.stdout
    c3 = in_ns(
        names.tenant_host_ns(name, "aws-fra", "acme", "c3"),
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "172.16.0.1",
    )
    assert c3.returncode == 0, c3.stdout
    # an apply that did not finish leaves no "applied" mark: the next scoped write reads
    # everything (and so repairs the drift too)
    from polynimbus import state

    state.clear_applied(sdir)
    full = lab_up(changed, sdir, only_changes=True)
    assert [c.describe() for c in full.changes] == [
        f"create route 192.168.1.0/24 on {router}: missing"
    ]
    assert not lab_up(changed, sdir).changed


INJECT = r"""
import socket, struct, sys
src, dst, vni, target, mac = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
hw = bytes.fromhex(mac.replace(":", ""))
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + socket.inet_aton("172.16.0.99")
arp += b"\0" * 6 + socket.inet_aton(target)
frame = b"\xff" * 6 + hw + struct.pack("!H", 0x0806) + arp
payload = struct.pack("!BBHI", 0x08, 0, 0, vni << 8) + frame
udp = struct.pack("!HHHH", 40000, 8472, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x1234, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(5):
    s.sendto(ip + udp, (dst, 0))
"""

HUB = """name: {name}
overlay: {{topology: hub, hub: h, transport: wireguard}}
sites:
  - {{name: a, provider: aws, location: {{lat: 50.1, lon: 8.7}}, hosts: [q]}}
  - {{name: b, provider: azure, location: {{lat: 52.4, lon: 4.9}}, hosts: [r]}}
  - {{name: h, provider: openstack, location: {{lat: 43.6, lon: 7.0}}, hosts: [p]}}
tenants:
  - name: t
    networks:
      - {{name: net, subnet: 172.16.0.0/24, sites: [a, b], hosts: [a/x, b/y]}}
"""


def test_no_host_can_inject_tenant_vxlan_only_a_gateway_can(lab, tmp_path: Path) -> None:
    """Tenant VXLAN forged by a site host (on the target's LAN, on the transit hub, on the
    far site), with a peer gateway's source address and the tenant's VNI, never reaches the
    tenant; the same bytes from the real peer gateway do (the positive control)."""
    import sys

    name = "it-tinj"
    intent = lab.intent(HUB.format(name=name))
    lab_up(intent, lab.state(name))
    plan = build_plan(intent)
    vni = plan.tenant("t").networks[0].vni
    a_gw, b_gw = plan.site("a").gateway_address, plan.site("b").gateway_address
    script = tmp_path / "inject.py"
    script.write_text(INJECT)
    x = names.tenant_host_ns(name, "a", "t", "x")
    cap = subprocess.Popen(
        ["ip", "netns", "exec", x, "tcpdump", "-n", "-e", "-l", "-i", "eth0", "arp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    forgers = {
        "02:de:ad:00:00:01": names.host_ns(name, "h", "p"),  # the transit hub's LAN
        "02:de:ad:00:00:02": names.host_ns(name, "a", "q"),  # the target site's LAN
        "02:de:ad:00:00:03": names.host_ns(name, "b", "r"),  # the far site's LAN
    }
    control = "02:de:ad:00:00:0c"
    try:
        _wait_listening(cap)
        for mac, ns in forgers.items():
            res = in_ns(ns, sys.executable, str(script), b_gw, a_gw, str(vni), "172.16.0.1", mac)
            assert res.returncode == 0, res.stderr
        gw = names.gateway_ns(name, "b")
        res = in_ns(gw, sys.executable, str(script), b_gw, a_gw, str(vni), "172.16.0.1", control)
        assert res.returncode == 0, res.stderr
        time.sleep(1.5)
    finally:
        cap.terminate()
        seen, _ = cap.communicate(timeout=10)
    macs = {m for m in re.findall(r"(02:de:ad:00:00:[0-9a-f]{2})", seen)}
    assert macs == {control}, seen


def _wait_listening(proc: subprocess.Popen[str]) -> None:
    """Wait for tcpdump's "listening on" line (it writes it to stderr when capturing)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "listening on" in line:
            return
    raise AssertionError("tcpdump did not start")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_move_api_keeps_a_connection_and_measures_downtime(lab, tmp_path: Path) -> None:
    """The same move through the Python API, back and forth, with a probe chosen by the
    caller: the downtime is measured each way and the routers converge each time."""
    name = "it-tmv"
    intent = lab.intent(text_named(name))
    sdir = lab.state(name)
    lab_up(intent, sdir)
    there = move_host(intent, "acme:i3s/c1", "aws-fra", sdir, correspondent="acme:i3s/web-1")
    assert there.downtime_ms is not None and there.downtime_ms < 1000
    assert any("172.16.0.1/32" in c.describe() for c in there.changes), there.changes
    # without a state directory: the one the running lab was brought up with (not the
    # default one), found before anything changes
    back = move_host(there.intent, "acme:aws-fra/c1", "i3s")
    assert back.correspondent == "acme:aws-fra/c2"  # its network's other host
    assert back.downtime_ms is not None and back.downtime_ms < 1000
    # the moves converged only the nodes they changed: a full up finds nothing left to do
    full = lab_up(back.intent, sdir)
    assert not full.changed, [c.describe() for c in full.changes]
    ns = names.tenant_host_ns(name, "i3s", "acme", "c1")
    ping = in_ns(ns, "ping", "-c", "1", "-W", "2", "192.168.1.1")
    assert ping.returncode == 0
    assert re.search(r"1 received", ping.stdout)


def test_a_lab_is_ready_when_up_returns(lab) -> None:
    """No IPv6 address of the lab is still tentative (duplicate address detection) when
    up returns, so the first packet goes through: a chain's first ping was lost in CI."""
    from tests.integration.conftest import three_sites

    name = "it-ready"
    intent = lab.intent(
        three_sites(name, extra="").replace(
            "  transport: wireguard\n", "  transport: wireguard\n  ipv6: true\n"
        )
    )
    assert intent.dual_stack
    lab_up(intent, lab.state(name))
    spaces = [
        n
        for n in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True
        ).stdout.split()
        if n.startswith(f"pn.{name}.")
    ]
    tentative = [ns for ns in spaces if "tentative" in in_ns(ns, "ip", "-6", "addr").stdout]
    assert tentative == []
    plan = build_plan(intent)
    dst = plan.site("aws").hosts[0].address6
    first = in_ns(names.host_ns(name, "os", "app-1"), "ping", "-c", "1", "-W", "1", str(dst))
    assert first.returncode == 0, first.stdout + first.stderr
