"""The real lab's observed state against the render, drift, the node model's kinds in real
namespaces, and the firewall against a crafted VXLAN frame."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from polynimbus import capabilities, names
from polynimbus.apply import apply, diff
from polynimbus.node import (
    Address,
    FdbEntry,
    Link,
    Netns,
    Qdisc,
    Route,
    Rule,
    Seg6Encap,
    Seg6Local,
    Sysctl,
    VethPeer,
    VxlanParams,
)
from polynimbus.orchestrate import desired_lab, lab_up
from polynimbus.plan import build_plan
from polynimbus.resources import Resource
from polynimbus.targets.lab import LabTarget
from tests.conftest import EXAMPLES
from tests.integration.conftest import srv6_or_refusal, three_sites

SHAPED = "    underlay: {rate: 200000001bit}\n"
"""A shaped underlay whose rate is not a whole number of bytes per second."""


def shaped(text: str, name: str, transport: str) -> str:
    """``text`` renamed, with ``transport``, and its first site's underlay shaped."""
    lines = text.splitlines(keepends=True)
    out, first_site_done = [], False
    for line in lines:
        if line.startswith("name:"):
            line = f"name: {name}\n"
        if line.strip().startswith("transport:"):
            line = f"  transport: {transport}\n"
        out.append(line)
        if not first_site_done and line.strip().startswith("hosts:"):
            out.append(SHAPED)
            first_site_done = True
    return "".join(out)


CASES = [
    (e, t)
    for e in ("prestocloud", "federation", "aws-regions", "service-chain", "tenants")
    for t in ("wireguard", "vxlan")
]


@pytest.mark.parametrize("example,transport", CASES, ids=[f"{e}-{t}" for e, t in CASES])
def test_observed_lab_equals_the_render(lab, example: str, transport: str) -> None:
    """Every example, both transports, one site shaped: after up, what the lab target reads
    back from the kernel equals the render item by item, and a second up says no change."""
    name = f"it-obs-{example[:5]}-{transport[:2]}"
    text = shaped((EXAMPLES / f"{example}.yaml").read_text(), name, transport)
    assert "transport: " + transport in text and "200000001bit" in text
    intent = lab.intent(text)
    sdir = lab.state(name)
    if intent.uses_srv6:
        srv6_or_refusal(lab, text, sdir)
    assert lab_up(intent, sdir).changed
    plan = build_plan(intent)
    desired, _ = desired_lab(plan, sdir)
    target = LabTarget(state_dir=sdir)
    desired = target.canonicalise(desired)
    observed = target.observe(plan.name, desired)
    mismatched = [
        (r.describe(), r.spec, observed[r.key].spec)
        for r in desired
        if r.key in observed and observed[r.key].spec != r.spec
    ]
    assert mismatched == []
    assert [r.describe() for r in desired if r.key not in observed] == []
    assert diff(desired, observed) == []
    second = lab_up(intent, sdir)
    assert not second.changed, [c.describe() for c in second.changes]


def test_drift_is_repaired_by_up_and_reported_by_verify(lab) -> None:
    path = lab.write(three_sites("it-drift"))
    sdir = lab.state("it-drift")
    cli = [sys.executable, "-c", "from polynimbus.cli import main; main()"]
    up = [*cli, "up", str(path), "--state-dir", str(sdir)]
    verify = [*cli, "verify", str(path), "--state-dir", str(sdir)]
    assert subprocess.run(up, capture_output=True).returncode == 0
    clean = subprocess.run(verify, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    gw = names.gateway_ns("it-drift", "aws")
    subprocess.run(["ip", "netns", "exec", gw, "nft", "flush", "ruleset"], check=True)
    inet_gw = names.gateway_ns("it-drift", "az")
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            inet_gw,
            "nft",
            "insert",
            "rule",
            "inet",
            "polynimbus",
            "input",
            "tcp",
            "dport",
            "22",
            "accept",
        ],
        check=True,
    )
    # a link-scope route of ours added by hand: up must be able to delete it
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            gw,
            "ip",
            "route",
            "add",
            "10.77.0.0/24",
            "dev",
            "lan0",
            "proto",
            "250",
        ],
        check=True,
    )
    drifted = subprocess.run(verify, capture_output=True, text=True)
    assert drifted.returncode == 1
    assert "drift" in drifted.stdout and "nftables table inet polynimbus" in drifted.stdout
    assert gw in drifted.stdout and inet_gw in drifted.stdout
    assert "route 10.77.0.0/24" in drifted.stdout
    repaired = subprocess.run(up, capture_output=True, text=True)
    assert repaired.returncode == 0, repaired.stderr
    assert "1 created, 1 updated, 1 deleted" in repaired.stdout, repaired.stdout
    again = subprocess.run(verify, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout


def node_model_resources(lab_name: str, srv6: bool = True) -> list[Resource]:
    """Two nodes using every kind of the node model the lab can apply: IPv6 addresses, an
    SRv6 encap route and seg6local SIDs in their own table, an unreachable default, a
    policy rule, a VXLAN device with FDB entries, a shaped veth, a sysctl. Without
    ``srv6`` (a kernel without it), the same less the routes with an SRv6 encapsulation,
    ``10.9.0.0/24`` being a plain route through ``192.0.2.2``."""
    a, b = f"pn.{lab_name}.a", f"pn.{lab_name}.b"
    peer = VethPeer(b, "eth0")
    every = [
        Resource(a, Netns()),
        Resource(b, Netns()),
        Resource(a, Sysctl("net.ipv6.conf.all.forwarding", "1")),
        Resource(a, Sysctl("net.ipv6.conf.all.seg6_enabled", "1")),
        Resource(a, Link("lo", "loopback")),
        Resource(b, Link("lo", "loopback")),
        Resource(a, Link("eth0", "veth", mtu=1600, peer=peer)),
        Resource(a, Address("eth0", "fd00:12::1/64")),
        Resource(a, Address("eth0", "192.0.2.1/30")),
        Resource(b, Address("eth0", "fd00:12::2/64")),
        Resource(b, Address("eth0", "192.0.2.2/30")),
        Resource(
            a,
            Route("10.9.0.0/24", dev="eth0", encap=Seg6Encap("encap", ("fc00:b::1", "fc00:b::e"))),
        ),
        Resource(
            a,
            Route(
                "fc00:a::e/128", table=90, dev="eth0", encap=Seg6Local("End.DX4", nh4="192.0.2.2")
            ),
        ),
        Resource(
            a, Route("fc00:a::d/128", table=90, dev="eth0", encap=Seg6Local("End.DT6", table=100))
        ),
        Resource(a, Route("fc00:a::1/128", table=90, dev="eth0", encap=Seg6Local("End"))),
        Resource(a, Route("default6", table=100, type="unreachable", metric=4278198272)),
        Resource(a, Rule(6, 1000, table=90, dst="fc00:a::/48")),
        Resource(a, Rule(4, 1001, table=100, iif="eth0")),
        Resource(
            a,
            Link("vx9", "vxlan", mtu=1450, vxlan=VxlanParams(vni=99, port=4789, local="192.0.2.1")),
        ),
        Resource(a, FdbEntry("vx9", "00:00:00:00:00:00", "192.0.2.2")),
        Resource(a, FdbEntry("vx9", "00:00:00:00:00:00", "192.0.2.3")),
        Resource(
            a, Qdisc("eth0", "tbf", rate_bps=80_000_000, limit_bytes=532_768, burst_bytes=32_768)
        ),
    ]
    if srv6:
        return every
    plain = Resource(a, Route("10.9.0.0/24", dev="eth0", via="192.0.2.2"))
    return [
        plain if r.item.ident() == plain.item.ident() else r
        for r in every
        if not (isinstance(r.item, Route) and r.item.encap and r.item.dst != "10.9.0.0/24")
    ]


def test_every_node_model_kind_round_trips_through_the_kernel(tmp_path: Path) -> None:
    """On a kernel without SRv6, every kind but the SRv6 encapsulations (those are
    refused: :func:`tests.integration.test_capabilities.test_srv6_agrees_with_the_kernel`)."""
    lab_name = "it-node"
    target = LabTarget(state_dir=tmp_path)
    srv6 = capabilities.srv6()
    want = node_model_resources(lab_name, srv6)
    try:
        first = apply(target, lab_name, want)
        assert first.counts()["create"] == len(want)
        second = apply(target, lab_name, want)
        assert not second.changed, [c.describe() for c in second.changes]
        # the kernel really holds them: ip sees the SIDs and the segment list in travel order
        a = f"pn.{lab_name}.a"
        routes = subprocess.run(
            ["ip", "netns", "exec", a, "ip", "-6", "route", "show", "table", "90"],
            capture_output=True,
            text=True,
        ).stdout
        v4 = subprocess.run(
            ["ip", "netns", "exec", a, "ip", "route", "show", "10.9.0.0/24"],
            capture_output=True,
            text=True,
        ).stdout
        if srv6:
            assert "End.DX4 nh4 192.0.2.2" in routes and "End.DT6 table 100" in routes
            assert "segs 2 [ fc00:b::1 fc00:b::e ]" in v4
        else:
            assert routes.strip() == "" and "via 192.0.2.2 dev eth0" in v4, routes + v4
        # a changed segment list (without SRv6: path MTU) is an update of that one route
        new = Route("10.9.0.0/24", dev="eth0", encap=Seg6Encap("encap", ("fc00:b::e",)))
        if not srv6:
            new = Route("10.9.0.0/24", dev="eth0", via="192.0.2.2", mtu=1400)
        changed = [
            Resource(r.node, new)
            if isinstance(r.item, Route) and r.item.dst == "10.9.0.0/24"
            else r
            for r in want
        ]
        third = apply(target, lab_name, changed)
        assert [(c.action, c.resource.item.ident()) for c in third.changes] == [
            ("update", (4, 254, "10.9.0.0/24", 0))
        ]
        # removing a rule and an FDB entry deletes exactly those
        fewer = [
            r
            for r in changed
            if not isinstance(r.item, Rule | FdbEntry)
            or r.item.ident() not in ((6, 1000), ("vx9", "00:00:00:00:00:00", "192.0.2.3"))
        ]
        fourth = apply(target, lab_name, fewer)
        assert sorted(c.action for c in fourth.changes) == ["delete", "delete"]
        assert not apply(target, lab_name, fewer).changed
    finally:
        target.destroy(lab_name)


def test_vxlan_frames_from_a_non_peer_never_reach_the_lan(lab) -> None:
    """A VXLAN frame with the right VNI sent from an internet address that is not a peer is
    dropped by the gateway; the same frame from the peer gateway reaches the host (positive
    control in the same capture)."""
    intent = lab.intent(three_sites("it-inject", transport="vxlan"))
    plan = build_plan(intent)
    lab_up(intent, lab.state("it-inject"))
    target, peer = plan.site("aws"), plan.site("os")
    gw = names.gateway_ns(plan.name, "aws")
    vx = names.vxlan_if(peer.site_id)
    [tunnel] = [p for p in target.peers if plan.sites[p.site].name == "os"]
    mac = subprocess.run(
        ["ip", "netns", "exec", gw, "cat", f"/sys/class/net/{vx}/address"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    host = target.hosts[0]
    host_ns = names.host_ns(plan.name, "aws", host.name)

    def frame(inner_src: str) -> str:
        pkt = (
            VXLAN(flags=0x08, vni=tunnel.vni)
            / Ether(src="02:00:00:00:00:01", dst=mac)
            / IP(src=inner_src, dst=host.address)
            / ICMP()
        )
        return bytes(pkt).hex()

    def send(ns: str, src: str, payload: str) -> None:
        code = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(('{src}', 0))\n"
            f"dst = ('{target.public_address}', {plan.port})\n"
            "for _ in range(3): s.sendto(bytes.fromhex(sys.argv[1]), dst)\n"
        )
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, payload], check=True)

    cap = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            host_ns,
            "tcpdump",
            "-i",
            names.HOST_IF,
            "-n",
            "-l",
            "--immediate-mode",
            "icmp[icmptype] == 8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        time.sleep(1.0)
        send(names.internet_ns(plan.name), "192.0.2.1", frame("10.250.250.1"))
        send(names.gateway_ns(plan.name, "os"), peer.public_address, frame("10.250.250.2"))
        time.sleep(1.0)
    finally:
        cap.terminate()
        out, _ = cap.communicate(timeout=5)
    assert "10.250.250.2 >" in out, out  # the peer's frame arrived: the capture works
    assert "10.250.250.1 >" not in out, out
