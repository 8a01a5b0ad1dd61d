"""The nebula transport: networks and addresses, certificate subnets, configuration,
node items, and the CA and certificates in the state directory (real nebula-cert)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest
import yaml

from polynimbus.errors import IntentError, KeyFileError, PlanError
from polynimbus.intent import load_intent_text
from polynimbus.node import Address, Link, Process, Route
from polynimbus.plan import Plan, build_plan
from polynimbus.render.gateway import render_gateway
from polynimbus.tunnels import get_transport
from polynimbus.tunnels.nebula import (
    UNSAFE_ROUTE_METRIC,
    NebulaCredentials,
    ensure_credentials,
    lighthouse,
    nebula_address,
    nebula_if,
    nebula_networks,
    parse_cert,
    public_of_key,
    render_config,
    served_prefixes,
    tunnel_ifnames,
)
from tests.integration.conftest import three_sites

needs_cert = pytest.mark.skipif(shutil.which("nebula-cert") is None, reason="no nebula-cert")


def plan_of(topology: str = "full-mesh", extra: str = "", name: str = "nb-unit") -> Plan:
    text = three_sites(name, topology, "nebula")
    if extra:
        text = text.replace("  transport: nebula\n", f"  transport: nebula\n{extra}")
    return build_plan(load_intent_text(text))


def fake_creds(plan: Plan, tag: str = "") -> dict[str, NebulaCredentials]:
    return {
        s.name: NebulaCredentials(
            f"CA{tag}",
            tuple(f"CERT {s.name} {k}{tag}" for k in range(plan.parallel)),
            tuple(f"KEY {s.name} {k}{tag}" for k in range(plan.parallel)),
        )
        for s in plan.sites
    }


def config(plan: Plan, site: str, k: int = 0, tag: str = "") -> dict:
    text = render_config(plan, plan.site(site), fake_creds(plan, tag), k)
    return yaml.safe_load(text)


# ------------------------------------------------------------------ numbering


def test_overhead_gives_the_tunnel_mtu():
    plan = plan_of()
    assert get_transport("nebula").overhead == 60  # IPv4 20 + UDP 8 + header 16 + tag 16
    assert plan.tunnel_mtu == 1500 - 60
    assert plan.port == 4242


def test_networks_avoid_the_numbering_plan():
    plan = plan_of(extra="  parallel: 3\n")
    nets = nebula_networks(plan)
    assert nets == [IPv4Network(n) for n in ("100.64.0.0/15", "100.66.0.0/15", "100.68.0.0/15")]
    taken = [IPv4Network(plan.address_space), IPv4Network("198.18.0.0/15")]
    taken.append(IPv4Network("169.254.0.0/16"))
    assert not any(n.overlaps(t) for n in nets for t in taken)
    # an address space over the shared range: the next free /15s
    wide = dataclasses.replace(plan, address_space="100.64.0.0/11")
    assert nebula_networks(wide)[0] == IPv4Network("100.96.0.0/15")
    over = dataclasses.replace(plan, address_space="96.0.0.0/3")
    assert nebula_networks(over)[0] == IPv4Network("172.16.0.0/15")
    with pytest.raises(PlanError, match="free /15") as exc:
        nebula_networks(dataclasses.replace(plan, address_space="0.0.0.0/0"))
    assert exc.value.hint


def test_addresses_are_unique_inside_the_network_and_stable():
    plan = plan_of(extra="  parallel: 2\n")
    for k, net in enumerate(nebula_networks(plan)):
        addrs = [nebula_address(plan, s, k) for s in plan.sites]
        assert len({a.ip for a in addrs}) == len(addrs)
        for a in addrs:
            assert a.network == net and a.ip not in (net.network_address, net.broadcast_address)
    # removing a site does not renumber the others (their underlay /31 stays)
    text = three_sites("nb-unit", "full-mesh", "nebula")
    smaller = build_plan(load_intent_text(text[: text.index("  - name: az")]))
    for s in smaller.sites:
        assert nebula_address(smaller, s) == nebula_address(plan, plan.site(s.name))


def test_interface_names_are_host_unique_and_short():
    plan = plan_of(extra="  parallel: 8\n")
    other = plan_of(extra="  parallel: 8\n", name="nb-other")
    mine = {d for s in plan.sites for d in tunnel_ifnames(plan, s)}
    theirs = {d for s in other.sites for d in tunnel_ifnames(other, s)}
    assert len(mine) == 3 * 8 and not mine & theirs
    assert all(len(d) <= 15 for d in mine | theirs)
    s = plan.sites[0]
    assert tunnel_ifnames(plan, s)[0] == nebula_if(plan.name, s.site_id)
    backend = get_transport("nebula")
    assert backend.ifname_pattern(plan, s) == nebula_if(plan.name, s.site_id) + "*"
    assert backend.ifname_pattern(plan_of(), s) == nebula_if(plan.name, s.site_id)


# ------------------------------------------------------------------ certificates' subnets


def test_served_prefixes_follow_the_routes():
    mesh = plan_of()
    for s in mesh.sites:
        assert served_prefixes(mesh, s) == [s.block]
    hub = plan_of("hub")
    assert served_prefixes(hub, hub.site("os")) == sorted(
        (s.block for s in hub.sites), key=IPv4Network
    )
    assert served_prefixes(hub, hub.site("aws")) == [hub.site("aws").block]
    # MST: whichever site is in the middle serves the blocks it forwards
    mst = plan_of("mst")
    for s in mst.sites:
        forwarded = {
            mst.sites[d].block
            for p in s.peers
            for q in mst.sites[p.site].peers
            if mst.sites[q.site].name == s.name
            for d in q.reaches
        }
        assert set(served_prefixes(mst, s)) == forwarded | {s.block}


def test_dual_stack_is_refused():
    # by the intent check, on the line of the transport
    with pytest.raises(IntentError) as bad:
        plan_of(extra="  ipv6: true\n")
    [problem] = bad.value.problems
    assert problem.path == "overlay.transport" and "IPv4 only" in problem.message
    assert "wireguard" in (problem.hint or "")
    # and by the backend, for a plan made some other way
    plan = dataclasses.replace(plan_of(), ipv6=True)
    with pytest.raises(PlanError, match="IPv4 only") as exc:
        get_transport("nebula").gateway_items(plan, plan.sites[0], fake_creds(plan), "userspace")
    assert "wireguard" in (exc.value.hint or "")
    with pytest.raises(PlanError, match="IPv4 only"):
        ensure_credentials(plan, Path("/nonexistent"))


# ------------------------------------------------------------------ configuration


def test_config_lists_peers_routes_and_firewall():
    plan = plan_of("hub")
    hub = config(plan, "os")
    spoke = config(plan, "aws")
    addr = {s.name: str(nebula_address(plan, s).ip) for s in plan.sites}
    assert hub["lighthouse"] == {"am_lighthouse": True, "interval": 60, "hosts": []}
    assert spoke["lighthouse"]["hosts"] == [addr["os"]]
    assert not spoke["lighthouse"]["am_lighthouse"]
    # the spoke knows the hub only, and routes everything through it
    assert spoke["static_host_map"] == {addr["os"]: [f"{plan.site('os').public_address}:4242"]}
    assert {(r["route"], r["via"]) for r in spoke["tun"]["unsafe_routes"]} == {
        (plan.site("os").block, addr["os"]),
        (plan.site("az").block, addr["os"]),
    }
    assert {r["metric"] for r in spoke["tun"]["unsafe_routes"]} == {UNSAFE_ROUTE_METRIC}
    # inbound only from the peers' certificates
    assert spoke["firewall"]["inbound"] == [{"port": "any", "proto": "any", "host": "os"}]
    assert [r["host"] for r in hub["firewall"]["inbound"]] == ["aws", "az"]
    assert spoke["tun"]["mtu"] == plan.tunnel_mtu
    assert spoke["tun"]["dev"] == tunnel_ifnames(plan, plan.site("aws"))[0]
    assert spoke["punchy"] == {"punch": False, "respond": False}
    assert spoke["relay"] == {"am_relay": False, "use_relays": False}
    assert spoke["pki"] == {"ca": "CA", "cert": "CERT aws 0", "key": "KEY aws 0"}


def test_lighthouse_is_named_only_by_its_peers():
    plan = plan_of("mst")
    lh = lighthouse(plan)
    assert lh.name == plan.sites[0].name
    for s in plan.sites:
        hosts = config(plan, s.name)["lighthouse"]["hosts"]
        peers = {plan.sites[p.site].name for p in s.peers}
        assert hosts == ([str(nebula_address(plan, lh).ip)] if lh.name in peers else [])


def test_parallel_daemons_use_their_own_port_network_and_metric():
    plan = plan_of(extra="  parallel: 2\n")
    c1 = config(plan, "aws", k=1)
    assert c1["listen"]["port"] == plan.port + 1
    assert c1["tun"]["dev"] == tunnel_ifnames(plan, plan.site("aws"))[1]
    peer = str(nebula_address(plan, plan.site("os"), 1).ip)
    assert peer in c1["static_host_map"]
    assert c1["static_host_map"][peer] == [f"{plan.site('os').public_address}:{plan.port + 1}"]
    assert {r["metric"] for r in c1["tun"]["unsafe_routes"]} == {UNSAFE_ROUTE_METRIC + 1}
    assert IPv4Interface(peer + "/15").network == nebula_networks(plan)[1]


# ------------------------------------------------------------------ node items


def test_gateway_items_name_the_process_after_its_tun():
    plan = plan_of(extra="  parallel: 2\n")
    site = plan.site("aws")
    items = get_transport("nebula").gateway_items(plan, site, fake_creds(plan), "userspace")
    procs = [i for i in items if isinstance(i, Process)]
    links = [i for i in items if isinstance(i, Link)]
    devs = tunnel_ifnames(plan, site)
    assert [p.argv for p in procs] == [("nebula", "-config", d) for d in devs]
    # the lab finds a TUN's process by its last argument
    assert [p.name for p in procs] == [f"nebula:{d}" for d in devs]
    assert [(ln.name, ln.type, ln.process, ln.mtu) for ln in links] == [
        (d, "tun", f"nebula:{d}", plan.tunnel_mtu) for d in devs
    ]
    assert [p.files[0][0] for p in procs] == devs
    addrs = [i for i in items if isinstance(i, Address)]
    assert addrs == [Address(d, str(nebula_address(plan, site, k))) for k, d in enumerate(devs)]
    routes = {r.dst: r for r in items if isinstance(r, Route)}
    assert set(routes) == {plan.site("os").block, plan.site("az").block}
    assert all(r.multipath == tuple(devs) and r.metric == 0 for r in routes.values())


def test_a_changed_credential_changes_the_digest_and_no_secret_leaks():
    plan = plan_of()
    site = plan.sites[0]
    backend = get_transport("nebula")
    a = backend.gateway_items(plan, site, fake_creds(plan), "userspace")
    b = backend.gateway_items(plan, site, fake_creds(plan, "x"), "userspace")
    pa = next(i for i in a if isinstance(i, Process))
    pb = next(i for i in b if isinstance(i, Process))
    assert pa.digest and pa.digest != pb.digest
    model = render_gateway(plan, site, fake_creds(plan), "userspace")
    doc = json.dumps(model.to_dict())
    assert "KEY " not in doc and "KEY" not in repr(fake_creds(plan)[site.name])


def test_gateway_firewall_admits_the_daemons_ports_from_peers_only():
    plan = plan_of("hub", extra="  parallel: 2\n")
    model = render_gateway(plan, plan.site("aws"), fake_creds(plan), "userspace")
    rules = next(i for i in model.items if i.kind == "nft").ruleset
    hub = plan.site("os").public_address
    assert f"ip saddr {{ {hub} }} udp dport {{ 4242, 4243 }} accept" in rules
    assert plan.site("az").public_address not in rules
    assert f'iifname "{nebula_if(plan.name, plan.site("aws").site_id)}*"' in rules


# ------------------------------------------------------------------ credentials


def modes(d: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in sorted(d.iterdir())}


@needs_cert
def test_credentials_are_made_private_reused_and_rotated(tmp_path):
    plan = plan_of("hub")
    first = ensure_credentials(plan, tmp_path)
    d = tmp_path / "nebula"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert set(modes(d).values()) == {0o600}
    assert set(modes(d)) == {"ca.crt", "ca.key"} | {
        f"{s.name}.0.{e}" for s in plan.sites for e in ("crt", "key")
    }
    hub = parse_cert(first["os"].certs[0])
    ca = parse_cert(first["os"].ca)
    assert ca.is_ca and hub.issuer == ca.fingerprint
    assert hub.name == "os" and hub.ips == (str(nebula_address(plan, plan.site("os"))),)
    assert list(hub.subnets) == served_prefixes(plan, plan.site("os"))
    assert public_of_key(first["os"].keys[0]) == hub.public_key
    # the second run reuses everything
    assert ensure_credentials(plan, tmp_path) == first
    # rotation: a new CA and new certificates
    rotated = ensure_credentials(plan, tmp_path, rotate=True)
    assert rotated["os"].ca != first["os"].ca
    assert all(rotated[s].certs != first[s].certs for s in first)


@needs_cert
def test_credentials_match_nebula_cert_print(tmp_path):
    plan = plan_of("hub")
    ensure_credentials(plan, tmp_path)
    path = tmp_path / "nebula" / "os.0.crt"
    out = subprocess.run(
        ["nebula-cert", "print", "-json", "-path", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    printed = json.loads(out.stdout)
    mine = parse_cert(path.read_text())
    assert printed["fingerprint"] == mine.fingerprint
    assert printed["details"]["ips"] == list(mine.ips)
    assert printed["details"]["subnets"] == list(mine.subnets)
    assert printed["details"]["issuer"] == mine.issuer
    assert printed["details"]["publicKey"] == mine.public_key.hex()


@needs_cert
def test_a_plan_change_resigns_only_what_changed_and_drops_old_sites(tmp_path):
    mesh = plan_of()
    first = ensure_credentials(mesh, tmp_path)
    hub = plan_of("hub")
    second = ensure_credentials(hub, tmp_path)
    assert second["os"].ca == first["os"].ca  # same CA
    assert second["os"].certs != first["os"].certs  # the hub now serves transit
    assert second["aws"].certs == first["aws"].certs  # a spoke serves its block only
    text = three_sites("nb-unit", "full-mesh", "nebula")
    smaller = build_plan(load_intent_text(text[: text.index("  - name: az")]))
    ensure_credentials(smaller, tmp_path)
    assert not any(n.startswith("az.") for n in os.listdir(tmp_path / "nebula"))


@needs_cert
def test_a_dry_run_writes_nothing(tmp_path):
    plan = plan_of()
    before = set(os.listdir("/tmp"))
    creds = ensure_credentials(plan, tmp_path, dry_run=True)
    assert set(creds) == {s.name for s in plan.sites}
    assert list(tmp_path.iterdir()) == []
    assert {n for n in set(os.listdir("/tmp")) - before if "nebula" in n} == set()
    # with stored credentials, a dry run uses them; a dry rotation does not touch them
    stored = ensure_credentials(plan, tmp_path)
    snapshot = {p.name: p.read_text() for p in (tmp_path / "nebula").iterdir()}
    assert ensure_credentials(plan, tmp_path, dry_run=True) == stored
    assert ensure_credentials(plan, tmp_path, rotate=True, dry_run=True) != stored
    assert {p.name: p.read_text() for p in (tmp_path / "nebula").iterdir()} == snapshot


@needs_cert
def test_unsafe_or_corrupt_credentials_are_refused(tmp_path):
    plan = plan_of()
    ensure_credentials(plan, tmp_path)
    d = tmp_path / "nebula"
    key = d / "os.0.key"
    key.chmod(0o644)
    with pytest.raises(KeyFileError, match="0644"):
        ensure_credentials(plan, tmp_path)
    key.chmod(0o600)
    # another certificate's key
    key.write_text((d / "aws.0.key").read_text())
    with pytest.raises(KeyFileError, match="not the key"):
        ensure_credentials(plan, tmp_path)
    (d / "os.0.crt").write_text("garbage")
    with pytest.raises(KeyFileError, match="corrupt") as exc:
        ensure_credentials(plan, tmp_path)
    assert "--rotate-keys" in (exc.value.hint or "")
    ensure_credentials(plan, tmp_path, rotate=True)  # rotation replaces them
    d.chmod(0o755)
    with pytest.raises(KeyFileError, match="0755"):
        ensure_credentials(plan, tmp_path)
