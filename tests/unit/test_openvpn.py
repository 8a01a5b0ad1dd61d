"""The OpenVPN transport: configuration text, ports and roles, files, rotation."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from polynimbus import names
from polynimbus.intent import load_intent_text
from polynimbus.node import Link, NftTable, Process, Route
from polynimbus.plan import Plan, build_plan
from polynimbus.render.gateway import render_gateway
from polynimbus.render.nftables import render_gateway_ruleset
from polynimbus.targets.lab.processes import write_files
from polynimbus.tunnels import get_transport
from polynimbus.tunnels.openvpn import render_openvpn_config, tunnel_port
from tests.integration.conftest import three_sites


@dataclass(frozen=True)
class Creds:
    """Stand-in credentials (PEM texts)."""

    ca_pem: str
    cert_pem: str
    key_pem: str


def plan_of(topology: str = "full-mesh", extra: str = "") -> Plan:
    text = three_sites("ov-unit", topology, "openvpn")
    if extra:
        text = text.replace("  transport: openvpn\n", f"  transport: openvpn\n{extra}")
    return build_plan(load_intent_text(text))


def creds_for(plan: Plan, tag: str = "") -> dict[str, Creds]:
    return {
        s.name: Creds(f"CA{tag}", f"CERT {s.name}{tag}", f"KEY {s.name}{tag}") for s in plan.sites
    }


def options(text: str) -> dict[str, str]:
    """The configuration's ``option value`` lines (inline blocks and comments left out)."""
    out: dict[str, str] = {}
    inline = False
    for line in text.splitlines():
        if line.startswith("<") and not line.startswith("</"):
            inline = True
        elif line.startswith("</"):
            inline = False
        elif not inline and line and not line.startswith("#"):
            k, _, v = line.partition(" ")
            out[k] = v
    return out


def test_overhead_gives_the_tunnel_mtu_and_mss():
    plan = plan_of()
    # IPv4 20 + UDP 8 + P_DATA_V2 opcode/peer-id 4 + packet ID 4 + GCM tag 16
    assert get_transport("openvpn").overhead == 52
    assert plan.tunnel_mtu == 1448 and plan.mss == 1408
    assert plan.port == 1194


def test_both_ends_of_a_tunnel_agree_on_ports_roles_and_names():
    plan = plan_of()
    creds = creds_for(plan)
    a, b = 0, 2
    sa, sb = plan.sites[a], plan.sites[b]
    ca = options(render_openvpn_config(plan, sa, b, 0, creds))
    cb = options(render_openvpn_config(plan, sb, a, 0, creds))
    # one port at both ends, where the client sends
    assert ca["lport"] == cb["lport"] == str(tunnel_port(plan, a, b)) == "1195"
    assert cb["remote"] == f"{sa.public_address} {ca['lport']}"
    assert "remote" not in ca  # the server answers, the client starts every session
    # the lower index is the TLS server; each accepts only the other, in its role
    assert "tls-server" in ca and "tls-client" in cb
    assert ca["dh"] == "none" and "dh" not in cb
    assert ca["verify-x509-name"] == f"{sb.name} name"
    assert cb["verify-x509-name"] == f"{sa.name} name"
    assert ca["remote-cert-tls"] == "client" and cb["remote-cert-tls"] == "server"
    # each names its interface after the peer
    assert ca["dev"] == names.openvpn_if(plan.name, sb.site_id)
    assert cb["dev"] == names.openvpn_if(plan.name, sa.site_id)
    for c in (ca, cb):
        assert c["data-ciphers"] == "AES-256-GCM"
        assert c["tls-version-min"] == "1.3"
        assert c["tun-mtu"] == str(plan.tunnel_mtu)
        assert c["dev-type"] == "tun" and c["proto"] == "udp4"
        assert "persist-tun" in c


def test_a_gateway_listens_on_a_distinct_port_per_tunnel_where_its_peer_sends():
    plan = plan_of(extra="  parallel: 3\n")
    creds = creds_for(plan)
    for i, site in enumerate(plan.sites):
        ports = set()
        for p in site.peers:
            for k in range(plan.parallel):
                mine = options(render_openvpn_config(plan, site, p.site, k, creds))
                theirs = options(render_openvpn_config(plan, plan.sites[p.site], i, k, creds))
                ports.add(mine["lport"])
                server, client = (mine, theirs) if i < p.site else (theirs, mine)
                assert client["remote"].split()[1] == server["lport"]
        assert len(ports) == 2 * 3, site.name


def test_the_key_and_certificates_are_inline_in_the_one_file():
    plan = plan_of()
    creds = creds_for(plan)
    text = render_openvpn_config(plan, plan.sites[1], 0, 0, creds)
    assert "<ca>\nCA\n</ca>" in text
    assert "<cert>\nCERT aws\n</cert>" in text
    assert "<key>\nKEY aws\n</key>" in text
    assert "KEY os" not in text  # never another gateway's key


def test_gateway_items_per_peer_process_tun_and_routes():
    plan = plan_of()
    site = plan.site("aws")
    model = render_gateway(plan, site, creds_for(plan), "default")
    procs = model.of(Process)
    links = [link for link in model.of(Link) if link.type == "tun"]
    assert len(procs) == len(links) == len(site.peers)
    for proc, link in zip(procs, links, strict=True):
        assert proc.argv == ("openvpn", "--config", f"{link.name}.conf", "--dev", link.name)
        assert proc.name == f"openvpn:{link.name}" and link.process == proc.name
        assert link.mtu == plan.tunnel_mtu
        [(fname, text)] = proc.files
        assert fname == f"{link.name}.conf" and f"dev {link.name}\n" in text
        assert len(proc.digest) == 16
        assert "KEY aws" not in repr(proc)  # the payload is never shown
    routes = {r.dst: r.dev for r in model.of(Route) if r.dev and r.dev.startswith("ov")}
    for p in site.peers:
        peer = plan.sites[p.site]
        assert routes[peer.block] == names.openvpn_if(plan.name, peer.site_id)
    assert "files" not in str(model.to_dict())


def test_parallel_tunnels_spread_flows_by_multipath_routes():
    plan = plan_of(extra="  parallel: 2\n")
    site = plan.site("aws")
    model = render_gateway(plan, site, creds_for(plan), "default")
    tuns = [link.name for link in model.of(Link) if link.type == "tun"]
    assert len(tuns) == 2 * len(site.peers) == len(set(tuns))
    assert all(len(t) <= names.IFNAMSIZ for t in tuns)
    for p in site.peers:
        peer = plan.sites[p.site]
        [route] = [r for r in model.of(Route) if r.dst == peer.block]
        base = names.openvpn_if(plan.name, peer.site_id)
        assert route.multipath == (base, f"{base}p1")
    assert ("net.ipv4.fib_multipath_hash_policy", "1") in [
        (s.key, s.value) for s in model.items if s.kind == "sysctl"
    ]


def test_transit_prefixes_ride_the_hub_tunnel():
    plan = plan_of("hub")
    spoke = plan.site("aws")  # hub is os
    model = render_gateway(plan, spoke, creds_for(plan), "default")
    hub_if = names.openvpn_if(plan.name, plan.site("os").site_id)
    dests = {r.dst: r.dev for r in model.of(Route) if r.dev == hub_if}
    assert set(dests) == {plan.site("os").block, plan.site("az").block}


def test_firewall_admits_each_tunnel_port_only_from_its_peer():
    plan = plan_of(extra="  parallel: 2\n")
    site = plan.site("aws")
    backend = get_transport("openvpn")
    text = render_gateway_ruleset(plan, site, backend.ifname_pattern(plan, site))
    [rule] = [line.strip() for line in text.splitlines() if "tunnels from peers" in line]
    creds = creds_for(plan)
    for p in site.peers:
        peer = plan.sites[p.site]
        for k in range(2):
            port = options(render_openvpn_config(plan, site, p.site, k, creds))["lport"]
            assert f"{peer.public_address} . {port}" in rule
    elements = rule.split("{", 1)[1].split("}", 1)[0].split(",")
    assert len(elements) == 2 * len(site.peers)  # nothing else


def test_same_credentials_same_digest_new_credentials_restart():
    plan = plan_of()
    site = plan.site("az")
    first = render_gateway(plan, site, creds_for(plan), "default").of(Process)
    again = render_gateway(plan, site, creds_for(plan), "default").of(Process)
    rotated = render_gateway(plan, site, creds_for(plan, "'"), "default").of(Process)
    assert [p.digest for p in first] == [p.digest for p in again]
    assert all(a.digest != b.digest for a, b in zip(first, rotated, strict=True))
    assert [p.argv for p in first] == [p.argv for p in rotated]  # same process, restarted


def test_the_target_writes_the_files_owner_only(tmp_path):
    plan = plan_of()
    site = plan.site("os")
    [proc, *_] = render_gateway(plan, site, creds_for(plan), "default").of(Process)
    old = os.umask(0)
    try:
        d = tmp_path / "daemons" / "node"
        write_files(d, proc)
    finally:
        os.umask(old)
    [(fname, text)] = proc.files
    path = d / fname
    assert path.read_text() == text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


def test_the_gateway_checks_tunnel_sources_so_srv6_leaves_with_its_own():
    plan = plan_of()
    site = plan.site("aws")
    model = render_gateway(plan, site, creds_for(plan), "default")
    [table] = [t for t in model.of(NftTable) if t.table == "pn-openvpn"]
    pattern = get_transport("openvpn").ifname_pattern(plan, site)
    assert f'iifname "{pattern}" fib saddr . iif oif missing counter drop' in table.ruleset
    assert "priority raw" in table.ruleset
    assert get_transport("openvpn").checks_source
    solo = build_plan(
        load_intent_text(
            "name: solo\noverlay: {transport: openvpn}\nsites:\n  - {name: a, provider: aws}\n"
        )
    )
    items = render_gateway(solo, solo.sites[0], creds_for(solo), "default").of(NftTable)
    assert [t.table for t in items] == ["polynimbus"]  # no tunnels, nothing to check


def test_credentials_are_kept_between_runs_and_rotated_on_demand(tmp_path):
    plan = plan_of()
    backend = get_transport("openvpn")
    site = plan.site("aws")

    def digests(creds) -> list[str]:
        return [p.digest for p in render_gateway(plan, site, creds, "default").of(Process)]

    dry = backend.credentials(plan, tmp_path, dry_run=True)
    assert not (tmp_path / "pki").exists()  # a dry run writes nothing
    first = backend.credentials(plan, tmp_path)
    assert digests(dry) != digests(first)
    key = tmp_path / "pki" / "gw.aws.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    again = backend.credentials(plan, tmp_path)
    assert again == first and digests(again) == digests(first)  # nothing restarts
    rotated = backend.credentials(plan, tmp_path, rotate=True)
    assert rotated["aws"].ca_pem != first["aws"].ca_pem
    assert rotated["aws"].key_pem != first["aws"].key_pem
    assert all(a != b for a, b in zip(digests(first), digests(rotated), strict=True))
    text = render_openvpn_config(plan, site, 0, 0, rotated)
    assert rotated["aws"].key_pem.strip() in text and rotated["os"].key_pem.strip() not in text
