"""The SRv6 plan (issue 6): dual-stack numbering, SID layout, stable ids, sub-paths, MSS,
prefixes and AllowedIPs, the ``srv6`` part of ``plan --json``."""

from __future__ import annotations

import hashlib
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from polynimbus.errors import IntentError
from polynimbus.intent.load import load_intent, load_intent_text
from polynimbus.keys import generate
from polynimbus.numbering import ipv6_address, ipv6_prefix, sid_block
from polynimbus.plan import Plan
from polynimbus.plan.build import build_plan
from polynimbus.plan.srv6 import (
    DX4,
    DX6,
    ChainDirection,
    chain_ids,
    chain_mss,
    gateway_sid,
    link_ids,
    service_ids,
    split_subpaths,
)
from polynimbus.tunnels.wireguard import parse_wg_config, render_wg_config
from tests.conftest import EXAMPLES

EXAMPLE = EXAMPLES / "service-chain.yaml"
DECAPSULATING = {"End.DX4", "End.DX6", "End.AS"}


def example_data() -> dict[str, Any]:
    """examples/service-chain.yaml as plain data, to make variants of."""
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def plan_of(data: dict[str, Any]) -> Plan:
    return build_plan(load_intent_text(yaml.safe_dump(data, sort_keys=False)))


def groups(addr: str) -> list[int]:
    """The eight 16-bit groups of an IPv6 address."""
    packed = IPv6Address(addr).packed
    return [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]


def directions(plan: Plan, chain: str) -> dict[str, ChainDirection]:
    assert plan.srv6 is not None
    return {c.direction: c for c in plan.srv6.chains if c.chain == chain}


def behaviours(plan: Plan) -> dict[str, str]:
    assert plan.srv6 is not None
    return {s.sid: s.behaviour for s in plan.srv6.sids}


# --- numbering: the same digits in IPv4, IPv6 and the SID block -------------------------


@pytest.mark.parametrize(
    ("block", "prefix"),
    [
        ("10.3.0.0/24", "fd00:3:0::/64"),
        ("10.12.0.0/24", "fd00:12:0::/64"),  # digits, not values: 12 is 0x12
        ("10.255.7.0/24", "fd00:255:7::/64"),
        ("10.1.0.128/25", "fd00:1:0:128::/64"),  # a /25 keeps its last octet
        ("10.1.0.0/25", "fd00:1:0::/64"),
        ("10.2.0.0/23", "fd00:2:0::/64"),
    ],
)
def test_ipv6_prefix_takes_the_blocks_digits(block: str, prefix: str) -> None:
    assert IPv6Network(ipv6_prefix(IPv4Network(block))) == IPv6Network(prefix)


@pytest.mark.parametrize(
    ("addr", "block", "want"),
    [
        ("10.3.0.2", "10.3.0.0/24", "fd00:3:0::2"),  # the example
        ("10.12.0.254", "10.12.0.0/24", "fd00:12:0::254"),
        ("10.1.0.130", "10.1.0.128/25", "fd00:1:0:128::130"),
        ("10.2.1.5", "10.2.0.0/23", "fd00:2:0::1:5"),  # larger than /24: last two octets
        ("10.2.0.9", "10.2.0.0/23", "fd00:2:0::0:9"),
    ],
)
def test_ipv6_address_takes_the_addresss_digits(addr: str, block: str, want: str) -> None:
    got = ipv6_address(IPv4Address(addr), IPv4Network(block))
    assert IPv6Address(got) == IPv6Address(want)
    assert IPv6Address(got) in IPv6Network(ipv6_prefix(IPv4Network(block)))


@pytest.mark.parametrize(
    ("block", "want"),
    [
        ("10.3.0.0/24", "5f00:3:0::/48"),
        ("10.12.34.0/24", "5f00:12:34::/48"),
        ("10.1.0.128/25", "5f00:1:0::/48"),  # both halves of a /24 share one SID block
        ("10.1.0.0/25", "5f00:1:0::/48"),
        ("10.2.0.0/23", "5f00:2:0::/48"),
    ],
)
def test_sid_block_takes_the_blocks_digits(block: str, want: str) -> None:
    got = IPv6Network(sid_block(IPv4Network(block)))
    assert got == IPv6Network(want)
    assert got.subnet_of(IPv6Network("5f00::/16"))


def test_two_halves_of_a_24_cannot_both_have_an_sid_block() -> None:
    data = example_data()
    data["sites"][0]["subnet"] = "10.9.0.0/25"
    data["sites"][1]["subnet"] = "10.9.0.128/25"
    with pytest.raises(IntentError) as err:
        plan_of(data)
    [p] = err.value.problems
    assert p.path == "sites[1]"
    assert "would share the SID block 5f00:9::/48 with sites[0] ('paris')" in p.message


def test_every_host_and_gateway_has_its_ipv6_twin() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    assert plan.ipv6
    for s in plan.sites:
        o = IPv4Network(s.block).network_address.packed
        assert s.block6 is not None and s.gateway_address6 is not None
        assert IPv6Network(s.block6) == IPv6Network(f"fd00:{o[1]}:{o[2]}::/64")
        assert IPv6Network(s.sid_block or "") == IPv6Network(f"5f00:{o[1]}:{o[2]}::/48")
        for addr, addr6 in [(h.address, h.address6) for h in s.hosts] + [
            (s.gateway_address, s.gateway_address6)
        ]:
            a = IPv4Address(addr).packed
            assert IPv6Address(addr6 or "") == IPv6Address(f"fd00:{a[1]}:{a[2]}::{a[3]}")


# --- SID layout ----------------------------------------------------------------------------


def test_gateway_sids_are_d4_and_d6_in_locator_1() -> None:
    assert gateway_sid("5f00:3:7::/48", DX4) == "5f00:3:7:1::d4"
    assert gateway_sid("5f00:3:7::/48", DX6) == "5f00:3:7:1::d6"
    plan = build_plan(load_intent(EXAMPLE))
    assert plan.srv6 is not None
    gw = [s for s in plan.srv6.sids if s.node == "gateway"]
    assert len(gw) == 2 * len(plan.sites)
    for s in gw:
        block = plan.site(s.site).sid_block
        assert block is not None
        want = "::d4" if s.behaviour == "End.DX4" else "::d6"
        assert s.sid == str(IPv6Network(block)[0] + (1 << 64) + int(IPv6Address(want)))
        assert IPv6Address(s.sid) in IPv6Network((IPv6Network(block)[0] + (1 << 64), 64))
        assert s.service is None and s.chain is None and s.direction is None


def test_function_sids_are_5f00_a_b_2_f_c_0_d() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    assert plan.srv6 is not None
    intent = load_intent(EXAMPLE)
    fids = service_ids(s.name for s in intent.services)
    cids = chain_ids(c.name for c in intent.chains)
    fn = [s for s in plan.srv6.sids if s.node != "gateway"]
    # two chains, both symmetric, two functions each
    assert len(fn) == 2 * 2 * 2
    for s in fn:
        assert s.service is not None and s.chain is not None
        o = IPv4Network(plan.site(s.site).block).network_address.packed
        d = 1 if s.direction == "forward" else 2
        assert groups(s.sid) == [
            0x5F00,
            int(str(o[1]), 16),
            int(str(o[2]), 16),
            2,
            fids[s.service],
            cids[s.chain],
            0,
            d,
        ]
        mode = plan.srv6.service(s.service).mode
        assert (s.behaviour, s.node) == (
            ("End.AS", "nfv") if mode == "sr-unaware" else ("End", s.service)
        )
    assert len({s.sid for s in plan.srv6.sids}) == len(plan.srv6.sids)


# --- stable ids ----------------------------------------------------------------------------


def _chain_facts(plan: Plan) -> dict[tuple[str, str], Any]:
    """Everything a chain direction owns: SIDs, segment lists, table, rule priority, links."""
    assert plan.srv6 is not None
    out: dict[tuple[str, str], Any] = {}
    for c in plan.srv6.chains:
        links = sorted(
            (link.service, link.k, link.nfv_if, link.fn_if, link.selector4, link.selector6)
            for svc in plan.srv6.services
            for link in svc.links
            if link.chain == c.chain
        )
        out[(c.chain, c.direction)] = (
            c.segments,
            c.subpaths,
            c.table,
            c.priority,
            c.mss,
            tuple(links),
        )
    return out


def _with_chains(names: list[str], alternate: bool = True) -> dict[str, Any]:
    """The example with chains ``names``, each made after one of its two chains (chosen by
    the name, so that a chain is the same whichever others there are), or the first."""
    data = example_data()
    proto = data["chains"] if alternate else data["chains"][:1]
    data["chains"] = [
        {**proto[sum(map(ord, name)) % len(proto)], "name": name, "match": _port_of(name)}
        for name in names
    ]
    return data


def _port_of(name: str) -> dict[str, Any]:
    """A TCP port per chain name, so that chains between the same hosts do not overlap."""
    digest = hashlib.sha256(name.encode()).digest()
    return {"protocol": "tcp", "port": 1024 + int.from_bytes(digest[:4], "big") % 60000}


def test_adding_or_removing_a_chain_keeps_the_others() -> None:
    base = _chain_facts(plan_of(_with_chains(["web-v4", "web-v6"])))
    more = _chain_facts(plan_of(_with_chains(["web-v4", "extra", "web-v6"])))
    less = _chain_facts(plan_of(_with_chains(["web-v6"])))
    assert {k: v for k, v in more.items() if k[0] != "extra"} == base
    assert less == {k: v for k, v in base.items() if k[0] == "web-v6"}


def _raw(names: list[str]) -> list[int]:
    """Each name's id when alone (its hash slot, before any probing)."""
    return [chain_ids([n])[n] for n in names] + [service_ids([n])[n] for n in names]


chain_name = st.from_regex(r"\A[a-z][a-z0-9]{0,8}\Z")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(chain_name, min_size=2, max_size=6, unique=True), st.data())
def test_property_a_chain_added_or_removed_leaves_the_others_untouched(
    names: list[str], data: st.DataObject
) -> None:
    # ids hash the names and probe on collision: with distinct hash slots no chain moves
    # (collisions are the subject of test_ids_collision_renumbers_an_existing_chain)
    drop = data.draw(st.sampled_from(names))
    assume(len(set(_raw(names))) == 2 * len(names))
    assume(len({link_ids([("fw", n)])[("fw", n)] for n in names}) == len(names))
    full = _chain_facts(plan_of(_with_chains(names)))
    rest = [n for n in names if n != drop]
    fewer = _chain_facts(plan_of(_with_chains(rest)))
    assert fewer == {k: v for k, v in full.items() if k[0] != drop}


def test_an_id_depends_on_its_own_name_only() -> None:
    # 'c12' and 'c133' hash to the same 13-bit chain id (found by search): neither moves
    # when the other comes, and together they are a validation error
    assert chain_ids(["c12"])["c12"] == chain_ids(["c133"])["c133"]
    assert chain_ids(["c12", "other"])["c12"] == chain_ids(["c12"])["c12"]
    with pytest.raises(IntentError) as exc:
        plan_of(_with_chains(["c133", "c12"]))
    [problem] = exc.value.problems
    assert problem.path == "chains[1].name" and "hash to the same chain id" in problem.message
    assert "rename one of them" in (problem.hint or "")


def test_ids_do_not_depend_on_file_order() -> None:
    a = _chain_facts(plan_of(_with_chains(["b", "a", "c"], alternate=False)))
    b = _chain_facts(plan_of(_with_chains(["c", "b", "a"], alternate=False)))
    assert a == b


# --- sub-paths -----------------------------------------------------------------------------


def test_split_subpaths_cuts_after_each_proxy() -> None:
    segs = ["s0", "s1", "s2", "s3", "egress"]
    assert split_subpaths(["gateway", "p0", "p2"], segs, {0, 2}) == (
        ("gateway", ("s0",)),
        ("p0", ("s1", "s2")),
        ("p2", ("s3", "egress")),
    )
    assert split_subpaths(["gateway"], segs, set()) == (("gateway", tuple(segs)),)
    # a proxy as the last function: its sub-path is the egress SID alone
    assert split_subpaths(["gateway", "p3"], segs, {3}) == (
        ("gateway", ("s0", "s1", "s2", "s3")),
        ("p3", ("egress",)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(["sr-aware", "sr-unaware"]), min_size=1, max_size=5),
    st.sampled_from(["ipv4", "ipv6"]),
    st.booleans(),
)
def test_property_subpaths_of_any_chain(modes: list[str], family: str, symmetric: bool) -> None:
    data = example_data()
    data["services"] = [{"name": f"f{i}", "site": "oregon", "mode": m} for i, m in enumerate(modes)]
    data["chains"] = [
        {
            "name": "c",
            "from": "paris/client",
            "to": "tokyo",
            "through": [f"f{i}" for i in range(len(modes))],
            "family": family,
            "symmetric": symmetric,
        }
    ]
    plan = plan_of(data)
    beh = behaviours(plan)
    dirs = directions(plan, "c")
    assert set(dirs) == ({"forward", "reverse"} if symmetric else {"forward"})
    for c in dirs.values():
        flat = tuple(s for _, segs in c.subpaths for s in segs)
        assert flat == c.segments
        assert beh[c.segments[-1]] == ("End.DX4" if family == "ipv4" else "End.DX6")
        assert c.segments[-1] == c.hops[-1].sid and c.hops[-1].kind == "egress"
        for _, segs in c.subpaths:
            assert segs, "an empty sub-path"
            assert beh[segs[-1]] in DECAPSULATING
            assert all(beh[s] == "End" for s in segs[:-1])
        unaware = [h.node for h in c.hops if h.behaviour == "End.AS"]
        assert [p for p, _ in c.subpaths] == ["gateway", *unaware]


def test_reverse_direction_visits_the_functions_backwards_with_direction_2() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    for name in ("web-v4", "web-v6"):
        d = directions(plan, name)
        fwd, rev = d["forward"], d["reverse"]
        fwd_fns = [h.node for h in fwd.hops if h.kind == "function"]
        rev_fns = [h.node for h in rev.hops if h.kind == "function"]
        assert rev_fns == fwd_fns[::-1]
        assert (rev.ingress, rev.egress) == (fwd.egress, fwd.ingress)
        assert (rev.src, rev.dst) == (fwd.dst, fwd.src)
        assert all(groups(h.sid)[7] == 1 for h in fwd.hops if h.kind == "function")
        assert all(groups(h.sid)[7] == 2 for h in rev.hops if h.kind == "function")
        # same function, same chain: the SIDs differ only in the direction
        for h in rev.hops[:-1]:
            [twin] = [f for f in fwd.hops if f.node == h.node]
            assert groups(h.sid)[:7] == groups(twin.sid)[:7]
        assert rev.hops[-1].site == fwd.ingress
        assert rev.table == fwd.table + 1 and rev.priority == fwd.priority + 1


def test_a_port_is_the_dport_forward_and_the_sport_of_replies() -> None:
    data = example_data()
    data["chains"][0]["match"] = {"protocol": "udp", "port": 5201}
    data["chains"][1]["symmetric"] = False
    plan = plan_of(data)
    d = directions(plan, "web-v4")
    assert (d["forward"].protocol, d["forward"].dport, d["forward"].sport) == ("udp", 5201, None)
    assert (d["reverse"].protocol, d["reverse"].dport, d["reverse"].sport) == ("udp", None, 5201)
    assert set(directions(plan, "web-v6")) == {"forward"}


# --- MSS -----------------------------------------------------------------------------------


def test_chain_mss_arithmetic() -> None:
    two = [("gateway", ("a",)), ("fw", ("b", "c"))]
    # carrier MTU - outer IPv6 40 - SRH 8 - 16 per SID of the longest sub-path - inner - TCP 20
    assert chain_mss(1440, two, "ipv4") == 1440 - 40 - 8 - 16 * 2 - 20 - 20 == 1320
    assert chain_mss(1440, two, "ipv6") == 1440 - 40 - 8 - 16 * 2 - 40 - 20 == 1300
    assert chain_mss(1500, [("gateway", ("a",) * 5)], "ipv4") == 1500 - 48 - 80 - 40


@pytest.mark.parametrize(
    ("carrier", "transport"), [("tunnels", "wireguard"), ("underlay", "vxlan")]
)
def test_chain_mss_in_the_plan_uses_the_carriers_mtu(carrier: str, transport: str) -> None:
    data = example_data()
    data["overlay"]["srv6"]["carrier"] = carrier
    data["overlay"]["transport"] = transport
    plan = plan_of(data)
    assert plan.srv6 is not None
    mtu = plan.tunnel_mtu if carrier == "tunnels" else plan.underlay_mtu
    for c in plan.srv6.chains:
        longest = max(len(s) for _, s in c.subpaths)
        inner = 20 if c.family == "ipv4" else 40
        assert c.mss == mtu - 40 - 8 - 16 * longest - inner - 20


# --- prefixes, routes and AllowedIPs -------------------------------------------------------


def _wg_allowed(plan: Plan) -> dict[str, set[str]]:
    keys = {s.name: generate() for s in plan.sites}
    out: dict[str, set[str]] = {}
    for s in plan.sites:
        conf = parse_wg_config(render_wg_config(plan, s, keys))
        peers = conf["peers"]
        assert isinstance(peers, dict)
        out[s.name] = {ip for p in peers.values() for ip in p["allowed_ips"]}
    return out


def test_tunnels_carrier_routes_the_ipv6_64_and_the_sid_48() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    allowed = _wg_allowed(plan)
    for i, s in enumerate(plan.sites):
        assert plan.prefixes(i) == (s.block, s.block6, s.sid_block)
        others = [o for o in plan.sites if o.name != s.name]
        assert allowed[s.name] == {p for o in others for p in (o.block, o.block6, o.sid_block)}
        prefixes = {r["prefix"] for r in plan.routes(s)}
        assert prefixes == allowed[s.name]


def test_underlay_carrier_keeps_the_sid_block_out_of_the_tunnels() -> None:
    data = example_data()
    data["overlay"]["srv6"]["carrier"] = "underlay"
    plan = plan_of(data)
    allowed = _wg_allowed(plan)
    for i, s in enumerate(plan.sites):
        assert s.sid_block is not None
        assert plan.prefixes(i) == (s.block, s.block6)
        assert not any(ip.startswith("5f00:") for ip in allowed[s.name])
        assert any(ip.startswith("fd00:") for ip in allowed[s.name])
        assert s.public_address6 and IPv6Address(s.public_address6) in IPv6Network("2001:db8::/32")
        dumped = plan.to_dict()["sites"][i]["gateway"]
        assert not any(ip.startswith("5f00:") for p in dumped["peers"] for ip in p["allowed_ips"])


def test_routes_of_ipv6_prefixes_have_an_ipv6_next_hop() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    for s in plan.sites:
        for r in plan.routes(s):
            if ":" in r["prefix"]:
                assert r["next_hop"] == plan.site(r["via"]).gateway_address6


# --- plan --json ----------------------------------------------------------------------------


def test_to_dict_lists_every_sid_with_its_behaviour() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    assert plan.srv6 is not None
    doc = plan.to_dict()
    assert doc["ipv6"] is True
    sr = doc["srv6"]
    listed = {s["sid"]: s for s in sr["sids"]}
    assert len(listed) == len(sr["sids"]) == 2 * 3 + 8
    assert listed == {
        s.sid: {
            "sid": s.sid,
            "site": s.site,
            "node": s.node,
            "behaviour": s.behaviour,
            "service": s.service,
            "chain": s.chain,
            "direction": s.direction,
        }
        for s in plan.srv6.sids
    }
    assert {s["behaviour"] for s in sr["sids"]} == {"End.DX4", "End.DX6", "End", "End.AS"}
    for c in sr["chains"]:
        for sid in c["segments"]:
            assert sid in listed, f"segment {sid} of {c['chain']} is not listed"
        assert [s for p in c["subpaths"] for s in p["segments"]] == c["segments"]
    assert sr["sid_blocks"] == {s.name: s.sid_block for s in plan.sites}
    assert sr["nfv_sites"] == ["oregon"]
    fw = next(s for s in sr["services"] if s["name"] == "fw")
    assert {i["chain"] for i in fw["interfaces"]} == {"web-v4", "web-v6"}
    for s in doc["sites"]:
        assert s["block6"] and s["sid_block"] and s["gateway"]["address6"]
        assert all(h["address6"] for h in s["hosts"])
    assert plan.to_json() == build_plan(load_intent(EXAMPLE)).to_json()


def test_a_plan_without_srv6_has_no_ipv6_or_srv6_keys() -> None:
    plan = build_plan(load_intent(EXAMPLES / "aws-regions.yaml"))
    assert not plan.ipv6 and plan.srv6 is None
    doc = plan.to_dict()
    assert "srv6" not in doc and "ipv6" not in doc
    for i, s in enumerate(plan.sites):
        assert plan.prefixes(i) == (s.block,)
        assert {"block6", "sid_block"}.isdisjoint(doc["sites"][i])
        assert "address6" not in doc["sites"][i]["gateway"]
    assert ":" not in "".join(a for ips in _wg_allowed(plan).values() for a in ips)


def test_ipv6_without_srv6_is_dual_stack_without_sids() -> None:
    data = yaml.safe_load((EXAMPLES / "aws-regions.yaml").read_text())
    data.setdefault("overlay", {})["ipv6"] = True
    plan = plan_of(data)
    assert plan.ipv6 and plan.srv6 is None
    for i, s in enumerate(plan.sites):
        assert s.sid_block is None and s.block6
        assert plan.prefixes(i) == (s.block, s.block6)


# --- validation details found while writing these tests ---------------------------------------


def test_partial_semantics_know_invalid_services() -> None:
    text = (
        "name: p\n"
        "sites:\n"
        "  - {name: a, provider: aws, hosts: [x]}\n"
        "  - {name: b, provider: aws, hosts: [y]}\n"
        "services:\n"
        "  - {name: mon, site: b, mode: sr-awre}\n"
        "chains:\n"
        "  - {name: c, from: a/x, to: b/y, through: [mon]}\n"
    )
    with pytest.raises(IntentError) as err:
        load_intent_text(text)
    messages = [p.message for p in err.value.problems]
    assert any("sr-awre" in m for m in messages)
    assert not any("no service named 'mon'" in m for m in messages), messages


def test_semantic_problems_are_in_file_order() -> None:
    text = (
        "name: p\n"
        "overlay:\n"
        "  topology: full-mesh\n"
        "  ipv6: false\n"
        "sites:\n"
        "  - {name: a, provider: aws, hosts: [x]}\n"
        "  - {name: b, provider: aws, hosts: [y]}\n"
        "services:\n"
        "  - {name: fw, site: a, mode: sr-aware}\n"
        "chains:\n"
        "  - {name: c, from: a/x, to: a, through: [fw]}\n"
    )
    with pytest.raises(IntentError) as err:
        load_intent_text(text)
    lines = [p.line or 0 for p in err.value.problems]
    assert len(lines) == 2
    assert lines == sorted(lines)


def test_sid_text_matches_its_groups() -> None:
    # a guard on the helpers themselves: SIDs are printed in canonical RFC 5952 form
    plan = build_plan(load_intent(EXAMPLE))
    assert plan.srv6 is not None
    for s in plan.srv6.sids:
        assert s.sid == str(IPv6Address(s.sid))
        assert re.fullmatch(r"5f00:[0-9a-f:]+", s.sid)
