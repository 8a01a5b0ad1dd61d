"""Tenants: plan (addresses, VNIs, MACs, routes, MTU), rendering, move's pure parts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polynimbus import names
from polynimbus.apply import diff
from polynimbus.errors import IntentError
from polynimbus.intent import load_intent, load_intent_text
from polynimbus.move import MoveError, downtime_from, moved_intent, parse_target
from polynimbus.node import Link, NftTable, Qdisc, TrafficClass
from polynimbus.plan import build_plan
from polynimbus.plan.tenants import router_routes, transit_address
from polynimbus.render.gateway import render_gateway
from polynimbus.render.tenants import (
    DEFAULT_CLASS,
    ROOT_CLASS,
    class_rates,
    render_tenant_site,
    tunnel_capacity,
)
from polynimbus.resources import Resource
from tests.golden.regenerate import test_keys as golden_keys

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tenants.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def intent_of(data: dict):
    return load_intent_text(yaml.safe_dump(data))


def test_hosts_are_numbered_in_order_around_the_given_addresses() -> None:
    data = example()
    data["tenants"][0]["networks"][1]["hosts"] = [
        "i3s/a",
        {"name": "i3s/b", "address": "172.16.0.1"},
        "aws-fra/c",
    ]
    plan = build_plan(intent_of(data))
    shared = plan.tenant("acme").networks[1]
    assert [h.address for h in shared.hosts] == ["172.16.0.2", "172.16.0.1", "172.16.0.3"]
    assert shared.router_address == "172.16.0.254"
    assert shared.layer2 and shared.sites == ("i3s", "aws-fra")


def test_tenants_may_reuse_ranges_and_get_distinct_vnis() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    acme, globex = plan.tenants
    assert acme.networks[0].subnet == globex.networks[0].subnet == "192.168.1.0/24"
    vnis = [t.transit_vni for t in plan.tenants] + [n.vni for t in plan.tenants for n in t.networks]
    assert len(set(vnis)) == len(vnis)
    assert all(2**23 <= v <= 2**24 - 2 for v in vnis)


def test_ids_vnis_and_macs_do_not_move_when_other_tenants_change() -> None:
    before = build_plan(load_intent(EXAMPLE)).tenant("globex")
    data = example()
    data["tenants"].insert(0, {"name": "newcomer", "networks": []})
    data["tenants"][1]["networks"].insert(
        0, {"name": "x", "subnet": "10.9.0.0/24", "sites": ["i3s"]}
    )
    after = build_plan(intent_of(data)).tenant("globex")
    assert (before.tenant_id, before.transit_vni) == (after.tenant_id, after.transit_vni)
    assert [n.vni for n in before.networks] == [n.vni for n in after.networks]
    assert before.networks[0].hosts == after.networks[0].hosts


def test_a_host_keeps_its_mac_and_address_on_another_site() -> None:
    intent = load_intent(EXAMPLE)
    moved = moved_intent(intent, "acme", "i3s", "c1", "aws-fra")
    a = build_plan(intent).tenant("acme").host("i3s/c1")[1]
    b = build_plan(moved).tenant("acme").host("aws-fra/c1")[1]
    assert (a.mac, a.address) == (b.mac, b.address)
    assert a.mac.startswith("02:70:6e:")


def test_move_errors_say_how_to_extend_the_network() -> None:
    intent = load_intent(EXAMPLE)
    with pytest.raises(MoveError) as e:
        moved_intent(intent, "acme", "i3s", "c1", "azure-weu")
    assert "does not span 'azure-weu'" in e.value.message
    assert "add azure-weu to sites: of network 'shared'" in (e.value.hint or "")
    with pytest.raises(MoveError, match="no tenant"):
        moved_intent(intent, "nobody", "i3s", "c1", "aws-fra")
    with pytest.raises(MoveError, match="no host"):
        moved_intent(intent, "acme", "i3s", "nope", "aws-fra")
    with pytest.raises(MoveError, match="already on"):
        moved_intent(intent, "acme", "i3s", "c1", "i3s")
    with pytest.raises(MoveError, match="no site named"):
        moved_intent(intent, "acme", "i3s", "c1", "mars")
    for bad in ("acme/i3s/c1", "acme:i3s", "i3s/c1"):
        with pytest.raises(MoveError, match="bad host") as e:
            parse_target(bad)
        assert "TENANT:SITE/HOST" in (e.value.hint or "")


def test_moving_onto_a_taken_name_is_an_intent_error() -> None:
    data = example()
    data["tenants"][0]["networks"][1]["hosts"].append("aws-fra/c1")
    with pytest.raises(IntentError) as e:
        moved_intent(intent_of(data), "acme", "i3s", "c1", "aws-fra")
    assert any("listed twice" in p.message for p in e.value.problems)


def test_downtime_is_the_longest_gap_between_replies_less_one_interval() -> None:
    text = "\n".join(
        f"[{t:.6f}] 64 bytes from 172.16.0.1: icmp_seq={k} ttl=64 time=0.5 ms"
        for k, t in enumerate([100.0, 100.01, 100.02, 100.09, 100.10])
    )
    received, downtime = downtime_from(text)
    assert received == 5
    assert downtime == pytest.approx(60.0, abs=0.5)
    assert downtime_from("no replies at all") == (0, None)
    # a host that never came back: replies only before the move, the probe stopped later
    received, downtime = downtime_from(text, end=102.10)
    assert received == 5
    assert downtime == pytest.approx(1990.0, abs=0.5)


def test_routes_reach_remote_networks_and_stretched_hosts_on_their_site() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    order = [s.name for s in plan.sites]
    acme = plan.tenant("acme")
    i3s, fra = transit_address(0), transit_address(1)
    assert transit_address(0) == "169.254.0.1"
    # i3s has both networks; c2 of the stretched one sits on aws-fra
    assert router_routes(acme, "i3s", order) == [("172.16.0.50/32", fra)]
    # aws-fra: front lives on i3s, c1 of shared too
    assert router_routes(acme, "aws-fra", order) == [
        ("192.168.1.0/24", i3s),
        ("172.16.0.1/32", i3s),
    ]


def test_tenant_mtu_is_the_tunnel_mtu_less_vxlan() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    assert plan.tunnel_mtu == 1440  # WireGuard over a 1500-byte underlay
    assert plan.tenant_mtu == 1390
    assert plan.to_dict()["tenants"][0]["mtu"] == 1390


def _gateway_items(plan, site):
    return render_gateway(plan, plan.site(site), golden_keys(plan)).items


def test_gateway_shapes_each_tenant_with_a_class_and_a_priority_rule() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    site = plan.site("aws-fra")
    items = _gateway_items(plan, "aws-fra")
    qdisc = [i for i in items if isinstance(i, Qdisc) and i.type == "htb"]
    assert qdisc == [Qdisc(site.tunnel_if, "htb", default_class=DEFAULT_CLASS)]
    classes = {c.minor: c for c in items if isinstance(c, TrafficClass)}
    cap = tunnel_capacity(plan, site)
    assert cap is not None and 0.9 * 200e6 < cap < 200e6 * 1440 / 1514
    acme, globex = plan.tenants
    assert classes[ROOT_CLASS].rate_bps == classes[ROOT_CLASS].ceil_bps == cap
    # a rate counts the tenant's packets: the class adds their VXLAN headers (1440/1390)
    assert classes[acme.tenant_id].rate_bps == 100_000_000 * 1440 // 1390 // 8 * 8
    assert classes[globex.tenant_id].rate_bps == 50_000_000 * 1440 // 1390 // 8 * 8
    assert classes[acme.tenant_id].ceil_bps == cap  # borrows up to the capacity
    tenants = classes[acme.tenant_id].rate_bps + classes[globex.tenant_id].rate_bps
    assert classes[DEFAULT_CLASS].rate_bps == (cap - tenants) // 8 * 8
    table = next(i for i in items if isinstance(i, NftTable) and i.table == "pn-tenants")
    assert f"meta priority set 1:{acme.tenant_id:x}" in table.ruleset
    assert str(acme.networks[1].vni) in table.ruleset
    assert f'iifname != "{site.tunnel_if}" udp dport 8472 drop' in table.ruleset


def test_no_shaping_without_rates_and_nothing_without_tenants() -> None:
    data = example()
    for t in data["tenants"]:
        t.pop("rate")
    plan = build_plan(intent_of(data))
    items = _gateway_items(plan, "aws-fra")
    assert not [i for i in items if isinstance(i, Qdisc | TrafficClass) and i.type != "tbf"]
    assert any(isinstance(i, NftTable) and i.table == "pn-tenants" for i in items)
    # every gateway guards tenant VXLAN, one without tenants of its own too (a transit)
    data["tenants"] = [t for t in data["tenants"] if t["name"] == "acme"]
    items = _gateway_items(build_plan(intent_of(data)), "azure-weu")
    assert any(isinstance(i, NftTable) and i.table == "pn-tenants" for i in items)
    data.pop("tenants")
    items = _gateway_items(build_plan(intent_of(data)), "aws-fra")
    assert not any(isinstance(i, NftTable) and i.table == "pn-tenants" for i in items)


def test_router_ports_ride_the_gateway_and_hosts_keep_their_macs() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    acme = plan.tenant("acme")
    res = render_tenant_site(plan, acme, plan.site("aws-fra"))
    router = names.tenant_router_ns(plan.name, "aws-fra", "acme")
    links = {r.item.name: r for r in res if isinstance(r.item, Link)}
    vx = links["v1"].item
    assert vx.vxlan.underlay == names.gateway_ns(plan.name, "aws-fra")
    assert vx.vxlan.local == plan.site("aws-fra").gateway_address
    assert vx.master == "n1" and vx.mtu == 1390
    assert links["n1"].item.mac == acme.networks[1].router_mac
    fdb = [r.item for r in res if r.kind == "fdb"]
    assert {(f.dev, f.dst) for f in fdb} == {("tr0", "10.3.0.254"), ("v1", "10.3.0.254")}
    c2 = acme.host("aws-fra/c2")[1]
    host_ns = names.tenant_host_ns(plan.name, "aws-fra", "acme", "c2")
    pair = links["n1h1"] if "n1h1" in links else links["eth0"]
    macs = {pair.item.mac, pair.item.peer.mac}
    assert c2.mac in macs
    assert {pair.node, pair.item.peer.node} == {router, host_ns}


def test_recreating_a_root_qdisc_reapplies_its_classes() -> None:
    plan = build_plan(load_intent(EXAMPLE))
    items = _gateway_items(plan, "aws-fra")
    node = "gw"
    desired = [Resource(node, i) for i in items if isinstance(i, Qdisc | TrafficClass)]
    desired += [Resource(node, Link(plan.site("aws-fra").tunnel_if, "tun"))]
    actual = {r.key: r for r in desired}
    q = next(r for r in desired if isinstance(r.item, Qdisc) and r.item.type == "htb")
    actual[q.key] = Resource(node, Qdisc(q.item.dev, "htb", default_class=1))
    changes = diff(desired, actual)
    kinds = [(c.action, c.resource.kind) for c in changes]
    assert kinds[0] == ("update", "qdisc")
    assert kinds.count(("create", "class")) == 4


def test_a_site_outside_a_stretched_network_routes_only_what_its_origin_lacks() -> None:
    data = example()
    data["tenants"][0]["networks"].append(
        {"name": "far", "subnet": "10.50.0.0/24", "sites": ["azure-weu"], "hosts": ["azure-weu/f"]}
    )
    plan = build_plan(intent_of(data))
    order = [s.name for s in plan.sites]
    routes = router_routes(plan.tenant("acme"), "azure-weu", order)
    # the subnet to its origin (i3s, which has c1); c2 away from the origin gets a /32
    assert routes == [
        ("192.168.1.0/24", transit_address(0)),
        ("172.16.0.0/24", transit_address(0)),
        ("172.16.0.50/32", transit_address(1)),
    ]


def test_oversubscribed_rates_are_scaled_in_proportion() -> None:
    """On a tunnel that carries less than the tenants' classes want (a transit site
    carries other sites' tenants: validation only checks a tenant's own sites), every class
    shrinks by the same factor and the provider overlay keeps its share."""
    plan = build_plan(load_intent(EXAMPLE))
    rates = class_rates(plan, list(plan.tenants), 100_000_000)
    assert sum(rates.values()) <= 95_000_000
    assert rates["acme"] / rates["globex"] == pytest.approx(2.0, rel=1e-3)
    roomy = class_rates(plan, list(plan.tenants), 1_000_000_000)
    assert roomy["acme"] == 100_000_000 * 1440 // 1390 // 8 * 8


def test_isolation_reports_what_a_leak_delivers_and_needs_its_control(monkeypatch) -> None:
    """verify's isolation logic on a fake lab whose counters the fake keeps: a leak from
    globex to acme's c2 shows as received probes for that pair only; without the control
    ping counting, every pair fails."""
    from polynimbus.verify import tenants as vt

    plan = build_plan(load_intent(EXAMPLE))
    members = [m for ms in vt._groups(plan).values() for m in ms]
    globex = {m.ns for m in vt._groups(plan)["globex"]}
    c2 = names.tenant_host_ns(plan.name, "aws-fra", "acme", "c2")
    counts: dict[str, int] = {}
    state = {"control_counts": True}

    def fake_fping(ns, targets, count, what):
        if "control" in what and state["control_counts"]:
            for m in members:
                if m.control_ns == ns and m.address in targets:
                    counts[m.ns] = counts.get(m.ns, 0) + 1
        if ns in globex and "isolation" in what and "172.16.0.50" in targets:
            counts[c2] = counts.get(c2, 0) + 1  # the leak
        return {t: [None] for t in targets}

    monkeypatch.setattr(vt, "_fping", fake_fping)
    monkeypatch.setattr(vt, "in_echos", lambda ns: counts.get(ns, 0))
    res = {(i.src, i.dst): i for i in vt.tenant_isolation(plan)}
    assert res[("globex", "acme")].received["aws-fra/c2"] == 2  # from both globex hosts
    assert not res[("globex", "acme")].ok
    assert res[("acme", "globex")].ok
    assert set(res[("(provider)", "acme")].received.values()) == {0}
    assert all(v == 1 for v in res[("(provider)", "acme")].control.values())
    state["control_counts"] = False
    counts.clear()
    assert not any(i.ok for i in vt.tenant_isolation(plan))


def test_tenants_are_shaped_where_their_traffic_crosses() -> None:
    """In a hub topology a tenant between two spokes is shaped at both spokes and at the
    hub it crosses, and nowhere else (a full mesh: only at its own sites)."""
    from polynimbus.plan.tenants import crossing_tenants

    hub = {
        "name": "hubx",
        "overlay": {"topology": "hub", "hub": "h"},
        "sites": [
            {"name": n, "provider": p, "underlay": {"rate": "200mbit"}}
            for n, p in (("h", "aws"), ("s1", "azure"), ("s2", "gcp"), ("s3", "edge"))
        ],
        "tenants": [
            {
                "name": "t1",
                "rate": "50mbit",
                "networks": [{"name": "n", "subnet": "10.9.0.0/24", "sites": ["s1", "s2"]}],
            },
            {
                "name": "t2",
                "rate": "50mbit",
                "networks": [{"name": "n", "subnet": "10.9.0.0/24", "sites": ["h", "s3"]}],
            },
        ],
    }
    plan = build_plan(intent_of(hub))
    got = {s.name: [t.name for t in crossing_tenants(plan, s.name)] for s in plan.sites}
    assert got == {"h": ["t1", "t2"], "s1": ["t1"], "s2": ["t1"], "s3": ["t2"]}
    hub["overlay"] = {"topology": "full-mesh"}
    plan = build_plan(intent_of(hub))
    got = {s.name: [t.name for t in crossing_tenants(plan, s.name)] for s in plan.sites}
    assert got == {"h": ["t2"], "s1": ["t1"], "s2": ["t1"], "s3": ["t2"]}
