"""Renderers, keys and generated names."""

from __future__ import annotations

import os
import stat

from polynimbus import names
from polynimbus.intent import load_intent, load_intent_text
from polynimbus.keys import KeyStore, from_private_text, generate
from polynimbus.node import Address, Link
from polynimbus.plan import build_plan
from polynimbus.render.lab import render_lab
from polynimbus.render.nftables import render_gateway_ruleset
from polynimbus.tunnels.wireguard import parse_wg_config, render_wg_config, wg_digest
from tests.conftest import EXAMPLES


def test_wg_digest_ignores_layout_but_not_meaning():
    plan = build_plan(load_intent(EXAMPLES / "federation.yaml"))
    keys = {s.name: generate() for s in plan.sites}
    text = render_wg_config(plan, plan.sites[1], keys)
    # what `wg showconf` prints: no comments, AllowedIPs possibly split, other spacing
    showconf = "\n".join(
        line.replace(" = ", "=") for line in text.splitlines() if not line.startswith("#")
    )
    assert wg_digest(showconf) == wg_digest(text)
    assert wg_digest(text.replace("51820", "51821")) != wg_digest(text)
    peers = parse_wg_config(text)["peers"]
    [hub_peer] = peers.values()
    assert len(hub_peer["allowed_ips"]) == 4  # aalto + the three transit spokes


def test_nft_ruleset_admits_the_tunnel_port_only_from_peers():
    plan = build_plan(load_intent(EXAMPLES / "prestocloud.yaml"))
    site = plan.sites[0]
    text = render_gateway_ruleset(plan, site, site.tunnel_if)
    wan_rules = [
        line.strip() for line in _chain(text, "input").splitlines() if 'iifname "wan0"' in line
    ]
    peers = sorted(plan.sites[p.site].public_address for p in site.peers)
    assert len(peers) == 2
    tunnel = [r for r in wan_rules if "udp dport 51820" in r]
    assert tunnel == [
        f'iifname "wan0" ip saddr {{ {", ".join(peers)} }} udp dport 51820 accept '
        'comment "wireguard tunnels from peers"'
    ]
    assert site.public_address not in tunnel[0]
    assert sum("icmp" in r for r in wan_rules) == 1
    # the timed set is empty unless verify --throughput (TCP) or abw (UDP) opens a port
    assert [r.split(" accept")[0] for r in wan_rules if "@underlay_probe" in r] == [
        'iifname "wan0" ip saddr . tcp dport @underlay_probe',
        'iifname "wan0" ip saddr . udp dport @underlay_probe',
    ]
    assert len(wan_rules) == 4
    assert "policy drop" in text and "masquerade" in text
    assert "maxseg size set 1400" in text


def _chain(ruleset: str, name: str) -> str:
    """The body of chain ``name`` in an ``nft -f`` text."""
    return ruleset.split(f"\tchain {name} {{\n", 1)[1].split("\n\t}", 1)[0]


def test_overlay_and_tunnel_packets_skip_conntrack_internet_traffic_does_not():
    """The gateway's filter never asks the state of overlay or tunnel packets, so they are
    not tracked (conntrack cost CPU on every packet, in the tunnel daemon's system calls);
    the LAN's internet traffic stays tracked for masquerade, the internet's for its state."""
    plan = build_plan(load_intent(EXAMPLES / "prestocloud.yaml"))
    site = plan.sites[0]
    text = render_gateway_ruleset(plan, site, site.tunnel_if)
    pre, out = _chain(text, "prerouting"), _chain(text, "output")
    assert "type filter hook prerouting priority raw; policy accept;" in pre
    assert "type filter hook output priority raw; policy accept;" in out
    peers = ", ".join(sorted(plan.sites[p.site].public_address for p in site.peers))
    others = ", ".join(s.block for s in plan.sites if s.name != site.name)
    rules = [line.strip() for line in (pre + "\n" + out).splitlines() if "notrack" in line]
    assert rules == [
        f'iifname "wan0" ip saddr {{ {peers} }} udp dport 51820 notrack comment "tunnel packets"',
        f'iifname "{site.tunnel_if}" notrack comment "overlay"',
        f'iifname "lan0" ip daddr {{ {others} }} notrack comment "overlay"',
        f'oifname "wan0" ip daddr {{ {peers} }} udp dport 51820 notrack comment "tunnel packets"',
        f'oifname "{site.tunnel_if}" notrack comment "overlay"',
    ]
    assert site.block not in others  # the LAN's own block (its gateway, the internet) is tracked
    assert "masquerade" in _chain(text, "postrouting")


def test_a_dual_stack_overlay_skips_conntrack_for_ipv6_overlay_prefixes_too():
    text = "name: ds\noverlay: {ipv6: true}\nsites:\n" + "".join(
        f"  - {{name: {n}, provider: aws, hosts: [h]}}\n" for n in ("a", "b", "c")
    )
    plan = build_plan(load_intent_text(text))
    site = plan.sites[0]
    pre = _chain(render_gateway_ruleset(plan, site, site.tunnel_if), "prerouting")
    [v6] = [line.strip() for line in pre.splitlines() if "ip6 daddr" in line]
    remote6 = [s.block6 for s in plan.sites[1:]]
    assert all(remote6) and all(b in v6 for b in remote6)
    assert site.block6 not in v6


def test_a_site_without_peers_opens_no_tunnel_port():
    plan = build_plan(load_intent_text("name: solo\nsites:\n  - {name: a, provider: aws}\n"))
    text = render_gateway_ruleset(plan, plan.sites[0], plan.sites[0].tunnel_if)
    assert [line for line in text.splitlines() if "udp dport" in line] == [
        '\t\tiifname "wan0" ip saddr . udp dport @underlay_probe accept '
        'comment "abw --channel underlay"'
    ]  # only abw's timed set, empty until abw opens one port to one peer


def test_keys_are_private_reused_and_rotated(tmp_path):
    store = KeyStore(tmp_path)
    first = store.ensure(["a", "b"])
    path = tmp_path / "keys" / "a.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert from_private_text(path.read_text()).public == first["a"].public
    assert store.ensure(["a", "b"]) == first
    rotated = store.ensure(["a", "b"], rotate=True)
    assert rotated["a"].public != first["a"].public
    assert first["a"].private not in repr(first)


def test_generated_interface_names_fit_and_wireguard_names_are_host_unique():
    sites = "".join(
        f"  - {{name: site-number-{i:03d}, provider: edge, hosts: [h]}}\n" for i in range(200)
    )
    text = "name: a-rather-long-lab-name-of-32ch\nsites:\n" + sites
    plan = build_plan(load_intent_text(text))
    resources = render_lab(
        plan, {s.name: generate() for s in plan.sites[:0]} or {s.name: KEY for s in plan.sites}
    )
    ifnames = {r.item.name for r in resources if isinstance(r.item, Link)}
    ifnames |= {r.item.ifname for r in resources if isinstance(r.item, Address)}
    ifnames |= {r.item.peer.name for r in resources if isinstance(r.item, Link) and r.item.peer}
    assert all(len(n.encode()) <= names.IFNAMSIZ for n in ifnames)
    wg = [s.tunnel_if for s in plan.sites]
    assert len(set(wg)) == len(wg)


KEY = generate()


def test_check_ifname_rejects_long_names():
    import pytest

    with pytest.raises(ValueError):
        names.check_ifname("x" * 16)
