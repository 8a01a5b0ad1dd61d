"""The IPsec transport: strongSwan configuration, selectors, processes and their files,
parallel tunnels, the implementation choice, and the lab's environment assignments."""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass

import pytest

from polynimbus import capabilities
from polynimbus.errors import PolynimbusError
from polynimbus.intent import load_intent_text
from polynimbus.node import Link, Process, Route
from polynimbus.plan import Plan, build_plan
from polynimbus.procs import Proc
from polynimbus.render.gateway import render_gateway
from polynimbus.render.nftables import render_gateway_ruleset
from polynimbus.targets.lab import processes
from polynimbus.tunnels import get_transport
from polynimbus.tunnels.ipsec import (
    ANY,
    CHARON,
    LIBIPSEC_MTU,
    IpsecBackend,
    check_transit,
    instance_name,
    offer,
    render_strongswan_conf,
    render_swanctl_conf,
)
from tests.integration.conftest import three_sites


@dataclass(frozen=True)
class Creds:
    """Stand-in credentials (PEM texts)."""

    ca_pem: str
    cert_pem: str
    key_pem: str


def plan_of(topology: str = "full-mesh", extra: str = "") -> Plan:
    text = three_sites("ip-unit", topology, "ipsec")
    if extra:
        text = text.replace("  transport: ipsec\n", f"  transport: ipsec\n{extra}")
    return build_plan(load_intent_text(text))


def creds_for(plan: Plan) -> dict[str, Creds]:
    return {s.name: Creds("CA", f"CERT {s.name}", f"SECRET-KEY {s.name}") for s in plan.sites}


def settings(text: str) -> dict[str, str]:
    """``key = value`` lines of a strongSwan settings text, by dotted section path."""
    out: dict[str, str] = {}
    path: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("{"):
            path.append(line[:-1].strip())
        elif line == "}":
            path.pop()
        else:
            k, _, v = line.partition("=")
            out[".".join([*path, k.strip()])] = v.strip()
    assert path == [], "unbalanced braces"
    return out


def items_of(plan: Plan, site: str) -> list:
    return IpsecBackend().gateway_items(plan, plan.site(site), creds_for(plan), "libipsec")


def test_registered_with_its_overhead_port_and_daemon():
    t = get_transport("ipsec")
    assert t.encrypted and t.default_port == 4500
    # 65 bytes on the wire, but libipsec carries 1400-byte packets at most
    assert t.overhead == 65
    assert t.daemons == frozenset({CHARON})
    plan = plan_of()
    assert plan.port == 4500 and plan.tunnel_mtu == LIBIPSEC_MTU == 1400
    # the cap holds over a jumbo underlay; below it, the overhead decides
    from polynimbus.plan.mtu import tunnel_mtu

    assert tunnel_mtu("ipsec", 9000) == 1400
    assert tunnel_mtu("ipsec", 1400) == 1335


def test_one_daemon_with_its_files_a_tun_device_and_routes_per_gateway():
    plan = plan_of()
    site = plan.site("aws")
    items = items_of(plan, "aws")
    [proc] = [i for i in items if isinstance(i, Process)]
    inst = instance_name(plan, site)
    assert proc.argv == (f"STRONGSWAN_CONF={inst}.conf", CHARON, "ipsec0")
    assert proc.name == processes.name_of(proc.argv) == "charon-systemd:ipsec0"
    files = dict(proc.files)
    suffixes = (".conf", ".swanctl.conf", ".ca.pem", ".pem", ".key")
    assert set(files) == {f"{inst}{s}" for s in suffixes}
    assert files[f"{inst}.key"] == "SECRET-KEY aws\n"
    assert "SECRET-KEY" not in repr(proc) and "SECRET-KEY" not in proc.digest
    [link] = [i for i in items if isinstance(i, Link)]
    assert link == Link("ipsec0", "tun", mtu=plan.tunnel_mtu, process=proc.name)
    routes = {r.dst for r in items if isinstance(r, Route)}
    others = [i for i, s in enumerate(plan.sites) if s.name != "aws"]
    assert routes == {p for i in others for p in plan.prefixes(i)}
    assert all(r.dev == "ipsec0" for r in items if isinstance(r, Route))


def test_a_changed_configuration_changes_the_digest():
    plan = plan_of()
    a = [i for i in items_of(plan, "aws") if isinstance(i, Process)][0]
    other = {**creds_for(plan), "aws": Creds("CA", "CERT aws", "ANOTHER KEY")}
    b = [
        i
        for i in IpsecBackend().gateway_items(plan, plan.site("aws"), other, "libipsec")
        if isinstance(i, Process)
    ][0]
    assert a.argv == b.argv and a.digest != b.digest


def test_strongswan_conf_keeps_the_daemon_to_its_own_files_ports_and_table():
    plan = plan_of()
    site = plan.site("os")
    inst = instance_name(plan, site)
    s = settings(render_strongswan_conf(plan, site, 0))
    assert s["charon.port_nat_t"] == "4500" and s["charon.port"] == "0"
    assert s["charon.plugins.vici.socket"] == f"unix://{inst}.vici"
    assert s["charon.load_modular"] == "no"
    plugins = s["charon.load"].split()
    assert plugins.index("kernel-libipsec") < plugins.index("kernel-netlink")
    assert "stroke" not in plugins  # it would read /etc/ipsec.secrets and /var/run
    assert s["charon.routing_table"] == "45000"
    assert s["charon.plugins.kernel-netlink.fwmark"] == "0x70736563/0xffffffff"
    assert s["charon.filelog.log.path"] == f"{inst}.log"
    assert s["charon-systemd.journal.default"] == "-1"
    load = s["charon.start-scripts.load"]
    assert f"--file {inst}.swanctl/swanctl.conf" in load and f"unix://{inst}.vici" in load
    assert f"rm -rf {inst}.swanctl" in load
    assert s["charon.stop-scripts.cleanup"] == f"rm -f {inst}.vici"


def test_each_connection_names_its_peer_its_address_and_the_ca():
    plan = plan_of()
    site = plan.site("aws")
    inst = instance_name(plan, site)
    s = settings(render_swanctl_conf(plan, site, 0))
    peers = {plan.sites[p.site].name for p in site.peers}
    assert {k.split(".")[1] for k in s if k.startswith("connections.")} == peers
    for name in peers:
        c = f"connections.{name}"
        assert s[f"{c}.remote.id"] == name and s[f"{c}.local.id"] == "aws"
        assert s[f"{c}.remote_addrs"] == plan.site(name).public_address
        assert s[f"{c}.local_addrs"] == site.public_address
        assert s[f"{c}.remote_port"] == s[f"{c}.local_port"] == "4500"
        assert s[f"{c}.encap"] == "yes"
        assert s[f"{c}.remote.cacerts"] == f"/proc/self/cwd/{inst}.ca.pem"
        assert s[f"{c}.children.{name}.start_action"] == "start"
    # the first of each pair (plan order) keeps trying, the other only answers
    me = plan.sites.index(site)
    for p in site.peers:
        name = plan.sites[p.site].name
        first = me < p.site
        assert s[f"connections.{name}.keyingtries"] == ("0" if first else "1")


def test_selectors_are_own_blocks_or_any_for_a_transit_and_match_on_both_ends():
    for topology in ("full-mesh", "hub", "mst"):
        plan = plan_of(topology)
        for site in plan.sites:
            s = settings(render_swanctl_conf(plan, site, 0))
            for p in site.peers:
                peer = plan.sites[p.site]
                child = f"connections.{peer.name}.children.{peer.name}"
                mine = s[f"{child}.local_ts"].split(",")
                theirs = s[f"{child}.remote_ts"].split(",")
                back = settings(render_swanctl_conf(plan, peer, 0))
                child_back = f"connections.{site.name}.children.{site.name}"
                assert back[f"{child_back}.remote_ts"].split(",") == mine
                assert back[f"{child_back}.local_ts"].split(",") == theirs
                if tuple(p.reaches) == (p.site,):
                    assert tuple(theirs) == plan.prefixes(p.site)
                else:
                    assert tuple(theirs) == ANY
    hub = plan_of("hub")
    spokes = [s for s in hub.sites if len(s.peers) == 1]
    assert spokes and all(offer(hub, s.peers[0].site, s) == ANY for s in spokes)


FIVE_IN_A_ROW = """name: ip-star
overlay:
  topology: mst
  transport: ipsec
sites:
  - {name: c, provider: aws, location: {lat: 0, lon: 0}, hosts: [h]}
  - {name: a1, provider: aws, location: {lat: 0, lon: 10}, hosts: [h]}
  - {name: a2, provider: aws, location: {lat: 0, lon: 20}, hosts: [h]}
  - {name: b1, provider: aws, location: {lat: 0, lon: -10}, hosts: [h]}
  - {name: b2, provider: aws, location: {lat: 0, lon: -20}, hosts: [h]}
"""


def test_a_gateway_with_two_transit_peers_is_refused_with_a_hint():
    plan = build_plan(load_intent_text(FIVE_IN_A_ROW))
    check_transit(plan, plan.site("a1"))  # one transit peer (c): fine
    with pytest.raises(PolynimbusError) as err:
        items_of(plan, "c")
    assert "a1" in err.value.message and "b1" in err.value.message
    assert err.value.hint and "full-mesh" in err.value.hint


def test_srv6_sids_in_the_tunnels_widen_a_side_and_more_than_two_sites_are_refused():
    plan = plan_of(extra="  srv6: {carrier: tunnels}\n")
    assert plan.sites[0].sid_block in plan.prefixes(0)
    site = plan.sites[1]
    assert offer(plan, 0, site) == ANY  # the SID block holds no address of the gateway
    with pytest.raises(PolynimbusError) as err:
        items_of(plan, site.name)
    assert "SRv6" in err.value.message and err.value.hint and "underlay" in err.value.hint
    under = plan_of(extra="  srv6: {carrier: underlay}\n")
    assert offer(under, 0, under.sites[1]) == under.prefixes(0)


def test_parallel_tunnels_are_daemons_on_consecutive_ports_with_multipath_routes():
    plan = plan_of(extra="  parallel: 3\n")
    site = plan.site("os")
    items = items_of(plan, "os")
    procs = [i for i in items if isinstance(i, Process)]
    assert [p.name for p in procs] == [f"charon-systemd:ipsec{k}" for k in range(3)]
    assert len({p.argv[0] for p in procs}) == 3  # a configuration each
    ports = [settings(render_strongswan_conf(plan, site, k))["charon.port_nat_t"] for k in range(3)]
    assert ports == ["4500", "4501", "4502"]
    remote = [
        settings(render_swanctl_conf(plan, site, k))["connections.aws.remote_port"]
        for k in range(3)
    ]
    assert remote == ports
    routes = [i for i in items if isinstance(i, Route)]
    assert routes and all(r.multipath == ("ipsec0", "ipsec1", "ipsec2") for r in routes)
    ruleset = render_gateway_ruleset(plan, site, IpsecBackend().ifname_pattern(plan, site))
    assert "udp dport { 4500, 4501, 4502 }" in ruleset and 'iifname "ipsec*"' in ruleset


def test_the_gateway_renders_with_the_transport(monkeypatch):
    monkeypatch.delenv("POLYNIMBUS_IPSEC", raising=False)
    plan = plan_of("hub")
    model = render_gateway(plan, plan.sites[0], creds_for(plan), "libipsec")
    kinds = {type(i).__name__ for i in model.items}
    assert {"Process", "Link", "Route", "NftTable"} <= kinds


def test_implementation_is_libipsec_unless_forced_and_kernel_is_refused(monkeypatch):
    b = IpsecBackend()
    monkeypatch.delenv("POLYNIMBUS_IPSEC", raising=False)
    assert b.implementation() == "libipsec"
    assert "kernel-libipsec" in b.implementation_note("libipsec")
    monkeypatch.setenv("POLYNIMBUS_IPSEC", "kernel")
    assert b.implementation() == "kernel"
    plan = plan_of()
    with pytest.raises(PolynimbusError) as err:
        b.gateway_items(plan, plan.sites[0], creds_for(plan), "kernel")
    assert err.value.hint and "libipsec" in err.value.hint


def test_kernel_esp_probe_reads_the_answer_of_a_throwaway_namespace(monkeypatch):
    monkeypatch.delenv("POLYNIMBUS_IPSEC", raising=False)
    seen: list[list[str]] = []

    def fake(rc: int):
        def run(argv, **kw):
            seen.append(argv)
            return subprocess.CompletedProcess(argv, rc, b"", b"")

        return run

    for rc, expected in ((0, True), (2, False)):
        capabilities.kernel_esp.cache_clear()
        monkeypatch.setattr(capabilities.os, "geteuid", lambda: 0)
        monkeypatch.setattr(capabilities.subprocess, "run", fake(rc))
        assert capabilities.kernel_esp() is expected
    assert seen[0][:2] == ["unshare", "--net"] and "esp" in seen[0]
    capabilities.kernel_esp.cache_clear()
    monkeypatch.setenv("POLYNIMBUS_IPSEC", "libipsec")
    assert capabilities.kernel_esp() is False and capabilities.ipsec_impl() == "libipsec"
    capabilities.kernel_esp.cache_clear()


def test_environment_assignments_in_argv_are_split_named_and_observed_back(monkeypatch):
    argv = ("STRONGSWAN_CONF=x.conf", "charon-systemd", "ipsec0")
    assert processes.split_env(argv) == ({"STRONGSWAN_CONF": "x.conf"}, argv[1:])
    assert processes.name_of(argv) == "charon-systemd:ipsec0"
    assert processes.split_env(("A=b",)) == ({}, ("A=b",))  # a program is left
    p = Proc(4242, ("charon-systemd", "ipsec0"), None)
    monkeypatch.setattr(processes, "environ_of", lambda pid: {"STRONGSWAN_CONF": "x.conf"})
    assert processes._wanted_argv(p, frozenset({argv})) == argv
    monkeypatch.setattr(processes, "environ_of", lambda pid: {"STRONGSWAN_CONF": "old.conf"})
    assert processes._wanted_argv(p, frozenset({argv})) == p.argv  # differs: restarted


def test_files_are_written_private(tmp_path):
    plan = plan_of()
    [proc] = [i for i in items_of(plan, "az") if isinstance(i, Process)]
    d = tmp_path / "node"
    processes.write_files(d, proc)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for name, _ in proc.files:
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600
