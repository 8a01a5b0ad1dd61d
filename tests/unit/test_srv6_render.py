"""Rendering SRv6 chains (issue 6) over examples/service-chain.yaml and its variants: the
NFV node's static proxy, the functions' policy routing, the gateways' classification and
their nftables text."""

from __future__ import annotations

import os
import re
import subprocess
from collections import defaultdict
from ipaddress import IPv6Network, ip_interface
from pathlib import Path
from typing import Any

import pytest
import yaml

from polynimbus import names
from polynimbus.intent.load import load_intent_text
from polynimbus.keys import KeyPair, generate
from polynimbus.node import Address, Item, Link, NftTable, Route, Rule, Seg6Encap, Seg6Local
from polynimbus.plan import Plan
from polynimbus.plan.build import build_plan
from polynimbus.plan.srv6 import ChainDirection, ProxyLink, ServicePlan
from polynimbus.render.lab import render_lab
from tests.conftest import EXAMPLES

EXAMPLE = EXAMPLES / "service-chain.yaml"
VARIANTS = [
    (carrier, transport)
    for carrier in ("tunnels", "underlay")
    for transport in ("wireguard", "vxlan")
]


def variant(carrier: str = "tunnels", transport: str = "wireguard", **chain0: Any) -> str:
    """The example's YAML with another carrier/transport and ``chain0`` set on chains[0]."""
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    data["overlay"]["srv6"]["carrier"] = carrier
    data["overlay"]["transport"] = transport
    data["chains"][0].update(chain0)
    return yaml.safe_dump(data, sort_keys=False)


def lab(text: str) -> tuple[Plan, dict[str, list[Item]]]:
    """The plan and every node's items (keyed by namespace name)."""
    plan = build_plan(load_intent_text(text))
    keys: dict[str, KeyPair] = {s.name: generate() for s in plan.sites}
    nodes: dict[str, list[Item]] = defaultdict(list)
    for r in render_lab(plan, keys, impl="kernel"):
        nodes[r.node].append(r.item)
    return plan, nodes


@pytest.fixture(scope="module")
def example() -> tuple[Plan, dict[str, list[Item]]]:
    return lab(EXAMPLE.read_text())


def of(items: list[Item], kind: type[Any]) -> list[Any]:
    return [i for i in items if isinstance(i, kind)]


def _addr(prefixed: str) -> str:
    return str(ip_interface(prefixed).ip)


def unaware_cases(plan: Plan) -> list[tuple[ServicePlan, ProxyLink, ChainDirection]]:
    """Every (SR-unaware function, its link for a chain, a direction of that chain)."""
    assert plan.srv6 is not None
    out = []
    for svc in plan.srv6.services:
        if svc.mode != "sr-unaware":
            continue
        for link in svc.links:
            for c in plan.srv6.chains:
                if c.chain == link.chain:
                    out.append((svc, link, c))
    return out


def test_the_example_has_what_these_tests_need(example: tuple[Plan, Any]) -> None:
    plan, _ = example
    assert plan.srv6 is not None
    cases = unaware_cases(plan)
    assert {(c.family, c.direction) for _, _, c in cases} == {
        ("ipv4", "forward"),
        ("ipv4", "reverse"),
        ("ipv6", "forward"),
        ("ipv6", "reverse"),
    }
    assert {s.mode for s in plan.srv6.services} == {"sr-aware", "sr-unaware"}


def test_nfv_decapsulates_each_proxy_sid_towards_the_function(example: Any) -> None:
    plan, nodes = example
    assert plan.srv6 is not None
    for svc, link, c in unaware_cases(plan):
        nfv = nodes[names.nfv_ns(plan.name, svc.site)]
        routes = of(nfv, Route)
        [hop] = [h for h in c.hops if h.node == svc.name]
        side = 0 if c.direction == "forward" else 1  # W for forward, E for replies
        d = 0 if c.direction == "forward" else 1
        [sid_route] = [r for r in routes if r.dst == f"{hop.sid}/128"]
        assert sid_route.table == 254 and sid_route.dev == link.nfv_if[side]
        assert isinstance(sid_route.encap, Seg6Local)
        if c.family == "ipv4":
            assert sid_route.encap.action == "End.DX4"
            sel, plen, via = link.selector4[d], 32, _addr(link.fn4[side])
            assert sid_route.encap.nh4 == sel
        else:
            assert sid_route.encap.action == "End.DX6"
            sel, plen, via = link.selector6[d], 128, _addr(link.fn6[side])
            assert sid_route.encap.nh6 == sel
        # the selector is routed via the function's address on that interface
        [sel_route] = [r for r in routes if r.dst == f"{sel}/{plen}"]
        assert (sel_route.table, sel_route.dev, sel_route.via, sel_route.encap) == (
            254,
            link.nfv_if[side],
            via,
            None,
        )
        # and that interface of the NFV node holds the other end of the function's link
        assert Address(link.nfv_if[side], link.nfv4[side]) in nfv
        assert Address(link.nfv_if[side], link.nfv6[side]) in nfv


def test_selectors_are_unique_per_link_and_direction(example: Any) -> None:
    plan, _ = example
    links = {link.k: link for _, link, _ in unaware_cases(plan)}
    sel4 = [link.selector4[d] for link in links.values() for d in (0, 1)]
    sel6 = [link.selector6[d] for link in links.values() for d in (0, 1)]
    assert len(links) == 2
    assert len(set(sel4)) == len(sel4) == 4 and len(set(sel6)) == len(sel6) == 4


def test_nfv_reencapsulates_what_comes_back_with_the_rest_of_the_list(example: Any) -> None:
    plan, nodes = example
    for svc, link, c in unaware_cases(plan):
        nfv = nodes[names.nfv_ns(plan.name, svc.site)]
        back = 1 if c.direction == "forward" else 0  # comes back on E (forward) or W
        fam = 4 if c.family == "ipv4" else 6
        [rule] = [r for r in of(nfv, Rule) if r.iif == link.nfv_if[back] and r.family == fam]
        table = rule.table
        assert table not in (254, 255, 253) and rule.priority < 32766  # before main
        in_table = [r for r in of(nfv, Route) if r.table == table]
        [default] = [r for r in in_table if r.dst == ("default" if fam == 4 else "default6")]
        assert isinstance(default.encap, Seg6Encap) and default.encap.mode == "encap"
        # the remaining segments, in travel order: the hops after this function
        i = [h.node for h in c.hops].index(svc.name)
        rest = [h.sid for h in c.hops[i + 1 :]]
        assert list(default.encap.segs) == rest[: len(default.encap.segs)]
        [(_, pushed)] = [(p, s) for p, s in c.subpaths if p == svc.name]
        assert default.encap.segs == pushed
        assert default.dev == names.CORE_IF
        # only packets to the direction's destination: the re-encapsulated packet (to a
        # SID) and a next proxy's selector lookup come in on this interface too
        assert rule.dst == c.dst[0]


def test_one_function_serves_several_chains_by_distinct_interfaces(example: Any) -> None:
    plan, _ = example
    assert plan.srv6 is not None
    fw = plan.srv6.service("fw")
    assert len(fw.links) == 2
    ifs = [i for link in fw.links for i in (*link.nfv_if, *link.fn_if)]
    assert len(set(ifs)) == len(ifs)
    assert len({link.k for link in fw.links}) == 2


def test_function_namespace_routes_w_to_e_and_e_to_w(example: Any) -> None:
    plan, nodes = example
    assert plan.srv6 is not None
    for svc in plan.srv6.services:
        items = nodes[names.service_ns(plan.name, svc.site, svc.name)]
        if svc.mode == "sr-aware":
            end = [r for r in of(items, Route) if isinstance(r.encap, Seg6Local)]
            mine = {h.sid for c in plan.srv6.chains for h in c.hops if h.node == svc.name}
            assert {r.dst for r in end} == {f"{s}/128" for s in mine}
            assert {r.encap.action for r in end} == {"End"}
            continue
        rules = of(items, Rule)
        routes = of(items, Route)
        for link in svc.links:
            for into, out in ((0, 1), (1, 0)):
                for fam, dflt, nfv in ((4, "default", link.nfv4), (6, "default6", link.nfv6)):
                    [rule] = [r for r in rules if r.iif == link.fn_if[into] and r.family == fam]
                    [route] = [r for r in routes if r.table == rule.table and r.dst == dflt]
                    assert route.dev == link.fn_if[out], (svc.name, link.chain, into, fam)
                    assert route.via == _addr(nfv[out])
                    assert rule.priority < 32766


def test_every_generated_interface_name_fits_ifnamsiz(example: Any) -> None:
    for text in (EXAMPLE.read_text(), variant("underlay", "vxlan")):
        _, nodes = lab(text)
        seen = set()
        for items in nodes.values():
            for it in items:
                if isinstance(it, Link):
                    seen.add(it.name)
                    if it.peer is not None:
                        seen.add(it.peer.name)
                elif isinstance(it, Address):
                    seen.add(it.ifname)
                elif isinstance(it, Route) and it.dev:
                    seen.add(it.dev)
                elif isinstance(it, Rule) and it.iif:
                    seen.add(it.iif)
        assert len(seen) > 10
        long = [n for n in seen if len(n.encode()) > 15]
        assert not long


@pytest.mark.parametrize(
    ("match", "family", "ipproto"),
    [
        ({"protocol": "tcp", "port": 5201}, "ipv4", 6),
        ({"protocol": "udp", "port": 53}, "ipv6", 17),
        ({"protocol": "icmp"}, "ipv4", 1),
        ({"protocol": "icmp"}, "ipv6", 58),
        (None, "ipv4", None),
    ],
)
def test_ingress_gateway_classifies_with_protocol_and_port(
    match: dict[str, Any] | None, family: str, ipproto: int | None
) -> None:
    plan, nodes = lab(variant(match=match, family=family))
    assert plan.srv6 is not None
    port = (match or {}).get("port")
    fam = 4 if family == "ipv4" else 6
    for c in plan.srv6.chains:
        if c.chain != "web-v4":
            continue
        for site in plan.sites:
            gw = nodes[names.gateway_ns(plan.name, site.name)]
            rules = [r for r in of(gw, Rule) if r.table == c.table]
            if site.name != c.ingress:
                assert rules == []
                continue
            [rule] = rules
            assert (rule.family, rule.iif, rule.ipproto) == (fam, names.LAN_BRIDGE, ipproto)
            assert (rule.src, rule.dst) == (c.src[0], c.dst[0])
            want = (port, None) if c.direction == "forward" else (None, port)
            assert (rule.dport, rule.sport) == want
            [route] = [r for r in of(gw, Route) if r.table == c.table]
            assert route.dst == c.dst[0]
            assert isinstance(route.encap, Seg6Encap)
            assert route.encap.segs == c.subpaths[0][1]


def test_egress_gateway_decapsulates_with_its_sids(example: Any) -> None:
    plan, nodes = example
    for site in plan.sites:
        gw = nodes[names.gateway_ns(plan.name, site.name)]
        local = {
            r.encap.action: r.dst
            for r in of(gw, Route)
            if isinstance(r.encap, Seg6Local) and r.table == 254
        }
        base = IPv6Network(site.sid_block or "")[0] + (1 << 64)  # locator 1: the gateway
        assert local == {"End.DX4": f"{base + 0xD4}/128", "End.DX6": f"{base + 0xD6}/128"}


def _rulesets(text: str) -> dict[str, str]:
    _, nodes = lab(text)
    return {
        f"{node}:{t.table}": t.ruleset for node, items in nodes.items() for t in of(items, NftTable)
    }


@pytest.mark.parametrize(("carrier", "transport"), VARIANTS)
def test_nft_text_of_every_node_is_accepted_by_nft(
    carrier: str, transport: str, tmp_path: Path
) -> None:
    """Like tests/golden's check, over the gateways' whole rulesets (with their SRv6
    chains) and the NFV node's and functions' tables."""
    if os.geteuid() != 0:
        pytest.fail("this check needs root (nft -c talks to the kernel); make test runs as root")
    rulesets = _rulesets(variant(carrier, transport))
    gateways = [k for k in rulesets if k.endswith(".gateway:polynimbus")]
    srv6 = [k for k in rulesets if k.endswith(".gateway:pn-srv6")]
    assert len(gateways) == 3 and len(srv6) == 3 and len(rulesets) == 3 + 3 + 1 + 2
    for key, text in rulesets.items():
        if key in srv6:
            assert "chain prerouting" in text and "chain counters" in text
        path = tmp_path / f"{key.replace(':', '_')}.nft"
        path.write_text(text)
        res = subprocess.run(
            ["unshare", "--net", "nft", "-c", "-f", str(path)], capture_output=True, text=True
        )
        assert res.returncode == 0, f"{key}: {res.stderr}"


@pytest.mark.parametrize("carrier", ["tunnels", "underlay"])
def test_the_sr_domain_is_closed_at_the_wan(carrier: str) -> None:
    plan, _ = lab(variant(carrier))
    rulesets = _rulesets(variant(carrier))
    for site in plan.sites:
        text = rulesets[f"{names.gateway_ns(plan.name, site.name)}:pn-srv6"]
        [drop] = [
            line.strip()
            for line in text.splitlines()
            if 'iifname "wan0" ip6 daddr 5f00::/16' in line and "drop" in line
        ]
        peers = sorted(s.public_address6 or "" for s in plan.sites if s.name != site.name)
        if carrier == "underlay":
            assert all(peers) and f"ip6 saddr != {{ {', '.join(peers)} }}" in drop
        else:
            assert "saddr" not in drop


@pytest.mark.parametrize("transport", ["wireguard", "vxlan"])
def test_ipv6_mss_clamp_fits_the_tunnel(transport: str) -> None:
    plan, _ = lab(variant("tunnels", transport))
    for key, text in _rulesets(variant("tunnels", transport)).items():
        if not key.endswith(":polynimbus"):
            continue
        for line in text.splitlines():
            m = re.search(r"maxseg size set (\d+)", line)
            if m is None or re.search(r"\bip (saddr|daddr)\b|nfproto ipv4", line):
                continue  # IPv4 only
            assert int(m.group(1)) <= plan.tunnel_mtu - 40 - 20, line


def test_host_route_mtu_covers_nested_chain_prefixes(tmp_path: Path) -> None:
    """A host's route to one host inside a chained site takes the smallest path MTU of
    every chain whose far end contains it: the /32 of c/s gets the site chain's 1360,
    not only its own chain's 1376 (UDP to c/s follows the site chain)."""
    from polynimbus.render.srv6 import host_routes

    text = """name: m1
sites:
  - {name: a, provider: aws, hosts: [h1]}
  - {name: b, provider: azure, hosts: [m]}
  - {name: c, provider: gcp, hosts: [s, t]}
services:
  - {name: fw, site: b, mode: sr-unaware}
  - {name: mon, site: b, mode: sr-aware}
chains:
  - {name: big, from: a/h1, to: c, through: [fw, mon], match: {protocol: udp}}
  - {name: small, from: a/h1, to: c/s, through: [fw], match: {protocol: tcp}}
  - {name: six, from: a/h1, to: c/s, through: [fw], family: ipv6}
"""
    plan = build_plan(load_intent_text(text))
    assert plan.srv6 is not None
    mtu = {(c.chain, c.direction): c.path_mtu for c in plan.srv6.chains}
    assert mtu[("big", "forward")] < mtu[("small", "forward")]
    a = plan.site("a")
    h = a.hosts[0]
    got = {r.dst: r.mtu for r in host_routes(plan, a, h.address, h.address6)}
    c = plan.site("c")
    s = c.hosts[0]
    assert got == {
        c.block: mtu[("big", "forward")],
        f"{s.address}/32": mtu[("big", "forward")],
        f"{s.address6}/128": mtu[("six", "forward")],
    }
    # every chain here is one-way: replies take the plain path, the far end keeps its MTU
    t = c.hosts[1]
    assert host_routes(plan, c, t.address, t.address6) == []
    # a symmetric chain gives the far end the route back
    sym_text = text.replace("{protocol: udp}}", "{protocol: udp}, symmetric: true}")
    sym = build_plan(load_intent_text(sym_text))
    back = {r.dst: r.mtu for r in host_routes(sym, sym.site("c"), t.address, t.address6)}
    assert back == {f"{h.address}/32": mtu[("big", "forward")]}
