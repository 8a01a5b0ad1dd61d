"""The IPsec transport: strongSwan configuration, selectors, processes and their files,
parallel tunnels, the implementation choice, and the lab's environment assignments."""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass

import pytest

from polynimbus import capabilities
from polynimbus.errors import IntentError, PolynimbusError, Problem
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


def unchecked(monkeypatch, text: str) -> Plan:
    """The plan of ``text`` as if the planner did not refuse what IPsec cannot carry (to
    reach the renderer's safety net)."""
    monkeypatch.setattr(IpsecBackend, "plan_problems", lambda self, plan: [])
    plan = build_plan(load_intent_text(text))
    monkeypatch.undo()
    return plan


def refusal(text: str) -> list[Problem]:
    with pytest.raises(IntentError) as err:
        build_plan(load_intent_text(text))
    return err.value.problems


def test_a_gateway_with_two_transit_peers_is_refused_by_the_planner_with_a_path_and_hint():
    [problem] = refusal(FIVE_IN_A_ROW)
    assert problem.path == "overlay.transport"
    assert "one transit peer per gateway" in problem.message
    assert "(a1, b1)" in problem.message and "site 'c'" in problem.message
    assert problem.hint and "full-mesh" in problem.hint and "wireguard" in problem.hint
    # the same row on a transport that follows routes is planned
    build_plan(load_intent_text(FIVE_IN_A_ROW.replace("ipsec", "wireguard")))
    # four in a row: each inner gateway has one transit peer, fine
    four = "\n".join(line for line in FIVE_IN_A_ROW.splitlines() if "b2" not in line)
    plan = build_plan(load_intent_text(four + "\n"))
    assert not IpsecBackend().plan_problems(plan)
    for topology in ("full-mesh", "hub"):
        assert not IpsecBackend().plan_problems(plan_of(topology))


def test_the_renderer_still_refuses_a_plan_made_without_the_check(monkeypatch):
    plan = unchecked(monkeypatch, FIVE_IN_A_ROW)
    check_transit(plan, plan.site("a1"))  # one transit peer (c): fine
    with pytest.raises(PolynimbusError) as err:
        items_of(plan, "c")
    assert "a1" in err.value.message and "b1" in err.value.message
    assert err.value.hint and "full-mesh" in err.value.hint


def test_srv6_sids_in_the_tunnels_widen_a_side_and_more_than_two_sites_are_refused(monkeypatch):
    srv6 = three_sites("ip-unit", "full-mesh", "ipsec").replace(
        "  transport: ipsec\n", "  transport: ipsec\n  srv6: {carrier: tunnels}\n"
    )
    [problem] = refusal(srv6)
    assert problem.path == "overlay.srv6.carrier"
    assert "SRv6" in problem.message and "2 sites" in problem.message
    assert problem.hint and "carrier: underlay" in problem.hint
    plan = unchecked(monkeypatch, srv6)
    assert plan.sites[0].sid_block in plan.prefixes(0)
    site = plan.sites[1]
    assert offer(plan, 0, site) == ANY  # the SID block holds no address of the gateway
    with pytest.raises(PolynimbusError) as err:
        items_of(plan, site.name)
    assert "SRv6" in err.value.message and err.value.hint and "underlay" in err.value.hint
    under = plan_of(extra="  srv6: {carrier: underlay}\n")
    assert offer(under, 0, under.sites[1]) == under.prefixes(0)
    # two sites: one peer per gateway, SIDs in the tunnels are fine
    duo = build_plan(
        load_intent_text(
            "name: ip-duo\noverlay:\n  transport: ipsec\n  srv6: {carrier: tunnels}\n"
            "sites:\n  - {name: a, provider: aws, hosts: [h]}\n"
            "  - {name: b, provider: gcp, hosts: [h]}\n"
        )
    )
    assert len(duo.sites) == 2 and not IpsecBackend().plan_problems(duo)


def test_plan_validate_and_up_refuse_a_row_of_five_before_rendering(tmp_path):
    from typer.testing import CliRunner

    from polynimbus.cli.app import app

    f = tmp_path / "row.yaml"
    f.write_text(FIVE_IN_A_ROW)
    runner = CliRunner()
    for args in (["validate", str(f)], ["plan", str(f)], ["up", "--dry-run", str(f)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "overlay.transport: transport 'ipsec'" in result.output, args


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


def test_ike_and_esp_offer_aes_256_gcm_only():
    plan = plan_of("hub", extra="  parallel: 2\n")
    seen = 0
    for site in plan.sites:
        for k in range(plan.parallel):
            s = settings(render_swanctl_conf(plan, site, k))
            for p in site.peers:
                name = plan.sites[p.site].name
                ike = s[f"connections.{name}.proposals"]
                esp = s[f"connections.{name}.children.{name}.esp_proposals"]
                # one proposal each (no fallback), AES-256-GCM with a 16-byte ICV
                # (RFC 4106), then PRF HMAC-SHA-256 (IKE) and ECP-256 (RFC 5903)
                assert ike == "aes256gcm16-prfsha256-ecp256"
                assert esp == "aes256gcm16-ecp256"
                seen += 1
    assert seen == 2 * len(plan.tunnels) * plan.parallel


def test_rotate_keys_gives_a_new_ca_and_keys_and_restarts_every_daemon(tmp_path):
    plan = plan_of()
    backend = get_transport("ipsec")

    def digests(creds) -> dict[tuple[str, str], str]:
        return {
            (s.name, p.name): p.digest
            for s in plan.sites
            for p in backend.gateway_items(plan, s, creds, "libipsec")
            if isinstance(p, Process)
        }

    dry = backend.credentials(plan, tmp_path, dry_run=True)
    assert not (tmp_path / "pki").exists()  # a dry run writes nothing
    first = backend.credentials(plan, tmp_path)
    assert digests(dry) != digests(first)
    again = backend.credentials(plan, tmp_path)
    assert again == first and digests(again) == digests(first)  # nothing restarts
    rotated = backend.credentials(plan, tmp_path, rotate=True)
    for s in plan.sites:
        old, new = first[s.name], rotated[s.name]
        assert new.ca_pem != old.ca_pem
        assert new.cert_pem != old.cert_pem and new.key_pem != old.key_pem
    before, after = digests(first), digests(rotated)
    assert before.keys() == after.keys() and len(before) == len(plan.sites)
    assert all(before[k] != after[k] for k in before)  # every daemon restarts
    # the rotated credentials are kept, and the daemons carry them
    assert backend.credentials(plan, tmp_path) == rotated
    [proc] = [
        i
        for i in backend.gateway_items(plan, plan.sites[0], rotated, "libipsec")
        if isinstance(i, Process)
    ]
    files = dict(proc.files)
    inst = instance_name(plan, plan.sites[0])
    assert files[f"{inst}.key"].strip() == rotated[plan.sites[0].name].key_pem.strip()
    assert files[f"{inst}.ca.pem"].strip() == rotated[plan.sites[0].name].ca_pem.strip()
