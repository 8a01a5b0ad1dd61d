"""SRv6 service chains in real namespaces (issue 6).

- every combination of family (IPv4 inside IPv6, all-IPv6) x carrier (tunnels, underlay)
  x function mode (SR-aware, SR-unaware) x symmetric or not, proved by ``verify``: each
  direction's probe passes (ping and a bulk TCP transfer) and every hop counted it;
- a firewall function's rule applies end to end through the chain;
- the SR domain is closed (RFC 8754 §5.1): a crafted SRv6 packet from the internet never
  delivers its inner packet, the same packet from a peer does (positive control);
- adding or removing a chain touches only that chain's items; down leaves nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polynimbus import names
from polynimbus.orchestrate import lab_up
from polynimbus.plan import build_plan
from polynimbus.plan.srv6 import DX4, gateway_sid
from tests.conftest import EXAMPLES

CLI = [sys.executable, "-c", "from polynimbus.cli import main; main()"]


def matrix_intent(name: str, carrier: str, transport: str = "wireguard") -> str:
    """Three sites; four host pairs a_i -> c_i, each with an IPv4 and an IPv6 chain:
    pair 1 SR-unaware symmetric, 2 SR-aware symmetric, 3 SR-unaware one-way, 4 SR-aware
    one-way (8 chains, 12 directions)."""
    chains = []
    for i, (svc, sym) in enumerate(
        [("legacy", True), ("aware", True), ("legacy", False), ("aware", False)], 1
    ):
        for fam in ("ipv4", "ipv6"):
            chains.append(
                f"""  - name: c{i}-{fam[-2:]}
    from: a/h{i}
    to: c/h{i}
    through: [{svc}]
    family: {fam}
    symmetric: {str(sym).lower()}
"""
            )
    return f"""name: {name}
overlay:
  transport: {transport}
  srv6: {{carrier: {carrier}}}
sites:
  - {{name: a, provider: aws, hosts: [h1, h2, h3, h4]}}
  - {{name: b, provider: azure, hosts: [m]}}
  - {{name: c, provider: gcp, hosts: [h1, h2, h3, h4]}}
services:
  - {{name: legacy, site: b, mode: sr-unaware, function: forward}}
  - {{name: aware, site: b, mode: sr-aware, function: forward}}
chains:
{"".join(chains)}"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "carrier,transport", [("tunnels", "wireguard"), ("underlay", "wireguard"), ("tunnels", "vxlan")]
)
def test_every_chain_combination_is_proved_by_verify(lab, carrier: str, transport: str) -> None:
    name = f"it-ch-{carrier[:2]}-{transport[:2]}"
    path = lab.write(matrix_intent(name, carrier, transport), f"{name}.yaml")
    sdir = lab.state(name)
    up = run_cli("up", str(path), "--state-dir", str(sdir))
    assert up.returncode == 0, up.stderr
    res = run_cli("verify", str(path), "--state-dir", str(sdir), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["ok"]
    seen = {(c["chain"], c["direction"]) for c in report["chains"]}
    expected = {(f"c{i}-{f}", "forward") for i in range(1, 5) for f in ("v4", "v6")}
    expected |= {(f"c{i}-{f}", "reverse") for i in (1, 2) for f in ("v4", "v6")}
    assert seen == expected
    for c in report["chains"]:
        assert c["ok"], c
        assert c["ping"] is True and c["tcp_bps"] > 0, c
        kinds = [h["kind"] for h in c["hops"]]
        svc = "legacy" if c["chain"][1] in "13" else "aware"
        # an SR-unaware function: proxy decapsulates, function, connector re-encapsulates
        expect = ["function", "proxy"] if svc == "legacy" else ["function"]
        assert kinds == ["ingress", *expect, "egress"], c
        assert all(h["packets"] > 0 for h in c["hops"]), c
    assert {p["family"] for p in report["pairs"]} == {"ipv4", "ipv6"}
    assert all(p["reachable"] for p in report["pairs"])
    # traffic outside every chain (h1 <-> m, ...) was probed and entered no function
    assert report["isolation"]["ok"] and report["isolation"]["pairs"]
    assert set(report["isolation"]["entered"]) == {"legacy", "aware"}


def test_verify_fails_when_a_function_stops_forwarding_or_traffic_leaks(lab) -> None:
    """Negative controls for the counters: traffic outside every chain steered into a
    function by hand fails the isolation check; a function that stops forwarding fails
    its chains."""
    name = "it-ch-broken"
    text = matrix_intent(name, "tunnels")
    path = lab.write(text, f"{name}.yaml")
    sdir = lab.state(name)
    assert run_cli("up", str(path), "--state-dir", str(sdir)).returncode == 0
    plan = build_plan(lab.intent(text))
    assert plan.srv6 is not None
    c1 = next(c for c in plan.srv6.chains if c.chain == "c1-v4" and c.direction == "forward")
    a_h2 = plan.site("a").hosts[1].address
    m = plan.site("b").hosts[0].address
    gw = names.gateway_ns(name, "a")
    # steer a/h2 -> b/m (outside every chain) into the legacy function by hand
    for cmd in (
        [
            "ip",
            "route",
            "add",
            f"{m}/32",
            "table",
            "777",
            "encap",
            "seg6",
            "mode",
            "encap",
            "segs",
            c1.segments[0],
            "dev",
            "wan0",
        ],
        ["ip", "rule", "add", "pref", "777", "iif", "lan0", "from", a_h2, "to", m, "lookup", "777"],
    ):
        subprocess.run(["ip", "netns", "exec", gw, *cmd], check=True)
    res = run_cli("verify", str(path), "--state-dir", str(sdir), "--json")
    assert res.returncode == 1, res.stdout
    iso = json.loads(res.stdout)["isolation"]
    assert not iso["ok"] and iso["entered"]["legacy"] > 0 and iso["entered"]["aware"] == 0
    subprocess.run(["ip", "netns", "exec", gw, "ip", "rule", "del", "pref", "777"], check=True)
    fn = names.service_ns(name, "b", "legacy")
    subprocess.run(
        ["ip", "netns", "exec", fn, "sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True
    )
    res = run_cli("verify", str(path), "--state-dir", str(sdir), "--json")
    assert res.returncode == 1
    report = json.loads(res.stdout)
    bad = {(c["chain"], c["direction"]) for c in report["chains"] if not c["ok"]}
    assert ("c1-v4", "forward") in bad and ("c3-v4", "forward") in bad
    assert all(c["ok"] for c in report["chains"] if c["chain"].endswith("v6"))
    broken = next(c for c in report["chains"] if c["chain"] == "c1-v4")
    assert any("did not see the probe" in e for e in broken["errors"]), broken


def _iperf(client: str, server: str, addr: str, port: int) -> bool:
    srv = subprocess.Popen(
        ["ip", "netns", "exec", server, "iperf3", "-s", "-1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        res = subprocess.run(
            ["ip", "netns", "exec", client, "iperf3", "-c", addr, "-p", str(port), "-t", "1"]
            + ["--connect-timeout", "1500"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return res.returncode == 0
    finally:
        srv.kill()
        srv.wait()


def test_the_example_firewall_blocks_its_port_end_to_end_through_the_chain(lab) -> None:
    name = "it-ch-fw"
    text = (
        (EXAMPLES / "service-chain.yaml")
        .read_text()
        .replace("name: service-chain", f"name: {name}")
    )
    path = lab.write(text, f"{name}.yaml")
    sdir = lab.state(name)
    assert run_cli("up", str(path), "--state-dir", str(sdir)).returncode == 0
    client = names.host_ns(name, "paris", "client")
    server = names.host_ns(name, "tokyo", "server")
    plan = build_plan(lab.intent(text))
    srv = plan.site("tokyo").hosts[0]
    for addr in (srv.address, srv.address6):
        assert addr is not None
        assert _iperf(client, server, addr, 5201), f"port 5201 to {addr} must pass"
        assert not _iperf(client, server, addr, 5202), f"port 5202 to {addr} must be blocked"
    # the trace shows the path: ingress, fw (proxy), connector, mon, egress; given the lab
    # by name, it reads the intent the lab's up kept
    assert (sdir / "intent.yaml").stat().st_mode & 0o777 == 0o600
    res = run_cli("trace", "web-v4", "--lab", name, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    fwd = json.loads(res.stdout)[0]
    assert [(h["node"], h["kind"]) for h in fwd["hops"]] == [
        ("gateway", "ingress"),
        ("fw", "function"),
        ("nfv", "proxy"),
        ("mon", "function"),
        ("gateway", "egress"),
    ]
    res = run_cli("trace", str(path), "no-such-chain")
    assert res.returncode == 1 and "no chain named 'no-such-chain'" in res.stderr
    assert "web-v4" in res.stderr and "Traceback" not in res.stderr


SENDER = """
import sys
from scapy.all import IP, UDP, IPv6, IPv6ExtHdrSegmentRouting, Raw, send
src, sid, inner_dst, marker = sys.argv[1:5]
pkt = (
    IPv6(src=src, dst=sid)
    / IPv6ExtHdrSegmentRouting(addresses=[sid], segleft=0, lastentry=0, nh=4)
    / IP(src="10.99.99.99", dst=inner_dst)
    / UDP(sport=4444, dport=9999)
    / Raw(marker.encode())
)
send(pkt, count=3, inter=0.05, verbose=False)
"""


def _capture(ns: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "timeout",
            str(seconds),
            "tcpdump",
            "-l",
            "-n",
            "-A",
            "-i",
            "eth0",
            "udp",
            "port",
            "9999",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _send(ns: str, src: str, sid: str, inner: str, marker: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, src, sid, inner, marker],
        check=True,
        timeout=30,
    )


@pytest.mark.parametrize("carrier", ["tunnels", "underlay"])
def test_the_sr_domain_is_closed_to_the_internet(lab, carrier: str) -> None:
    """RFC 8754 §5.1: an SRv6 packet to a gateway's End.DX4 SID, sent from the internet
    (a non-peer address), never delivers its inner packet to the site's host; the same
    packet from a peer gateway does (positive control, in the same capture)."""
    name = f"it-ch-dom-{carrier[:2]}"
    text = matrix_intent(name, carrier)
    path = lab.write(text, f"{name}.yaml")
    sdir = lab.state(name)
    assert run_cli("up", str(path), "--state-dir", str(sdir)).returncode == 0
    plan = build_plan(lab.intent(text))
    c = plan.site("c")
    assert c.sid_block is not None
    sid = gateway_sid(c.sid_block, DX4)
    host = c.hosts[0]
    inet = names.internet_ns(name)
    a_gw = names.gateway_ns(name, "a")
    a = plan.site("a")
    # a source address on the internet router that is no gateway's
    subprocess.run(
        ["ip", "-n", inet, "addr", "add", "2001:db8:ffff::66/128", "dev", "lo"], check=True
    )
    if carrier == "tunnels":
        # the internet needs a route to the SID for the attack to reach the gateway
        uplink = names.uplink_if(c.site_id)
        subprocess.run(
            ["ip", "-n", inet, "-6", "addr", "add", "2001:db8:eeee::1/64", "dev", uplink],
            check=True,
        )
        subprocess.run(
            [
                "ip",
                "-n",
                names.gateway_ns(name, "c"),
                "-6",
                "addr",
                "add",
                "2001:db8:eeee::2/64",
                "dev",
                "wan0",
            ],
            check=True,
        )
        subprocess.run(
            ["ip", "-n", inet, "-6", "route", "add", c.sid_block, "via", "2001:db8:eeee::2"],
            check=True,
        )
        peer_src = a.gateway_address6
    else:
        peer_src = a.public_address6
    assert peer_src is not None
    cap = _capture(names.host_ns(name, "c", host.name), 8)
    time.sleep(1.0)
    _send(inet, "2001:db8:ffff::66", sid, host.address, "FROM-THE-INTERNET")
    _send(a_gw, peer_src, sid, host.address, "FROM-A-PEER")
    out, _ = cap.communicate(timeout=20)
    assert "FROM-A-PEER" in out, "positive control: the peer's packet must arrive"
    assert "FROM-THE-INTERNET" not in out
    # the gateway counted and dropped it at its edge
    res = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            names.gateway_ns(name, "c"),
            "nft",
            "list",
            "chain",
            "inet",
            "polynimbus",
            "srv6_prerouting",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    drop = next(line for line in res.stdout.splitlines() if "wan0" in line and "drop" in line)
    assert "packets 0 " not in drop, drop


def test_adding_and_removing_a_chain_touches_only_that_chain(lab) -> None:
    name = "it-ch-add"
    full = matrix_intent(name, "tunnels")
    intent_full = lab.intent(full)
    sdir = lab.state(name)
    # without chain c2-v6
    start = full.replace(
        "  - name: c2-v6\n    from: a/h2\n    to: c/h2\n    through: [aware]\n"
        "    family: ipv6\n    symmetric: true\n",
        "",
    )
    assert start != full
    assert lab_up(lab.intent(start), sdir).changed
    before = {
        (p.pid, tuple(p.argv))
        for p in __import__("polynimbus").procs.processes()
        if p.argv and p.argv[0].endswith("wireguard-go")
    }
    plan = build_plan(intent_full)
    assert plan.srv6 is not None
    c2 = [c for c in plan.srv6.chains if c.chain == "c2-v6"]
    own = {str(c.table) for c in c2} | {s for c in c2 for s in c.segments}
    own |= {d for c in c2 for d in c.dst}
    for intent, what in ((intent_full, "add"), (lab.intent(start), "remove")):
        result = lab_up(intent, sdir)
        assert result.changed, what
        for ch in result.changes:
            item = ch.resource.item
            if item.kind == "nft":
                continue  # counters and classifiers live in whole tables, reloaded
            text = repr(item)
            assert any(o in text for o in own), f"{what} touched {ch.describe()}"
    after = {
        (p.pid, tuple(p.argv))
        for p in __import__("polynimbus").procs.processes()
        if p.argv and p.argv[0].endswith("wireguard-go")
    }
    assert before & after == before, "no tunnel process was restarted"


def test_down_removes_nfv_nodes_and_functions(lab, tmp_path: Path) -> None:
    name = "it-ch-down"
    path = lab.write(matrix_intent(name, "tunnels"), f"{name}.yaml")
    sdir = lab.state(name)
    assert run_cli("up", str(path), "--state-dir", str(sdir)).returncode == 0
    from polynimbus.targets.lab import list_lab_namespaces

    spaces = list_lab_namespaces(name)
    assert names.nfv_ns(name, "b") in spaces
    assert names.service_ns(name, "b", "legacy") in spaces
    res = run_cli("down", str(path), "--state-dir", str(sdir))
    assert res.returncode == 0, res.stderr
    assert list_lab_namespaces(name) == []


def test_a_command_function_runs_its_program_and_converges(lab) -> None:
    """An SR-unaware ``command`` function: its program runs in the function's namespace,
    a second up neither restarts nor duplicates it, the chain still works through it
    (the kernel forwards), and down stops it."""
    name = "it-ch-cmd"
    text = matrix_intent(name, "tunnels").replace(
        "  - {name: legacy, site: b, mode: sr-unaware, function: forward}",
        '  - {name: legacy, site: b, mode: sr-unaware, function: command, command: "sleep 86399"}',
    )
    assert "sleep 86399" in text
    intent = lab.intent(text)
    sdir = lab.state(name)
    assert lab_up(intent, sdir).changed
    from polynimbus import procs

    def sleepers() -> list[int]:
        fn = procs.netns_inode(names.service_ns(name, "b", "legacy"))
        return [
            p.pid for p in procs.processes() if p.argv == ("sleep", "86399") and p.netns_inode == fn
        ]

    first = sleepers()
    assert len(first) == 1
    second = lab_up(intent, sdir)
    assert not second.changed, [c.describe() for c in second.changes]
    assert sleepers() == first
    path = lab.write(text, f"{name}.yaml")
    res = run_cli("trace", str(path), "c1-v4", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert run_cli("down", str(path), "--state-dir", str(sdir)).returncode == 0
    assert sleepers() == []
