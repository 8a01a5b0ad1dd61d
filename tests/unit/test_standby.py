"""Two gateways per site (``gateways: 2``): the standby's numbering, the planner's refusals,
and how the tunnels, the agents, keepalived and the lab see it (polynimbus.plan.standby,
polynimbus.render.standby), without a lab."""

from __future__ import annotations

import time

import pytest

from polynimbus import names
from polynimbus.agent.failover import Runner
from polynimbus.errors import IntentError
from polynimbus.intent import load_intent_text
from polynimbus.keys import KeyPair
from polynimbus.node import Address, Link, NftTable, Process
from polynimbus.plan import build_plan
from polynimbus.plan.standby import standby_indices
from polynimbus.render.failover import failover_config
from polynimbus.render.gateway import render_gateway
from polynimbus.render.lab import render_lab
from polynimbus.render.standby import gateway_view, keepalived_config
from polynimbus.tunnels.wireguard import parse_wg_config, render_wg_config

INTENT = """name: t2
overlay: {{failover: true{extra}}}
sites:
  - {{name: a, provider: aws, hosts: [h1]}}
  - {{name: b, provider: azure, hosts: [h1, h2], gateways: 2{site}}}
  - {{name: c, provider: openstack, hosts: [h1]}}
"""


def plan_of(extra: str = "", site: str = ""):  # type: ignore[no-untyped-def]
    return build_plan(load_intent_text(INTENT.format(extra=extra, site=site)))


def keys_of(plan) -> dict[str, KeyPair]:  # type: ignore[no-untyped-def]
    names_ = [s.name for s in plan.sites] + [s.standby.key for s in plan.sites if s.standby]
    return {n: KeyPair(private=f"priv-{n}", public=f"pub-{n}") for n in names_}


def test_the_standby_has_its_own_addresses_and_one_gateway_sites_have_none() -> None:
    plan = plan_of()
    a, b, c = plan.sites
    assert a.standby is None and c.standby is None
    sb = b.standby
    assert sb is not None
    assert b.gateway_address == "10.2.0.254"  # the hosts' gateway: the shared address
    assert (sb.primary_address, sb.address) == ("10.2.0.253", "10.2.0.252")
    assert b.own_address == "10.2.0.253" and a.own_address == a.gateway_address
    publics = [s.public_address for s in plan.sites] + [sb.public_address]
    assert len(set(publics)) == 4
    assert sb.public_address != b.public_address and sb.key == "b.2"
    assert sb.tunnel_if == b.tunnel_if + "b" and len(sb.tunnel_if) <= names.IFNAMSIZ
    assert 1 <= sb.vrid <= 255
    d = plan.to_dict()
    assert d["sites"][1]["standby"]["public_address"] == sb.public_address
    assert "standby" not in d["sites"][0]


def test_one_gateway_sites_keep_their_addresses_when_another_gets_a_standby() -> None:
    one = build_plan(
        load_intent_text(INTENT.format(extra="", site="").replace(", gateways: 2", ""))
    )
    two = plan_of()
    for x, y in zip(one.sites, two.sites, strict=True):
        assert (x.public_address, x.gateway_address, x.tunnel_if) == (
            y.public_address,
            y.gateway_address,
            y.tunnel_if,
        )


def test_standby_indices_skip_every_used_index() -> None:
    half = 2**16 // 2
    assert standby_indices([0, half, 5], [True, False, True]) == [half + 1, None, half + 5]


@pytest.mark.parametrize(
    ("extra", "site", "path", "words"),
    [
        (", failover: false", "", "sites[1].gateways", "failover: true"),
        (", transport: vxlan", "", "sites[1].gateways", "transport 'vxlan'"),
        (", parallel: 2", "", "sites[1].gateways", "parallel"),
        ("", ", subnet: 10.9.0.0/30", "sites[1].gateways", "too small"),
        ("", ", subnet: 10.9.0.248/29", "sites[1].hosts", "own address"),
    ],
)
def test_the_planner_refuses_what_two_gateways_cannot_do(
    extra: str, site: str, path: str, words: str
) -> None:
    text = INTENT.format(extra=extra, site=site)
    if "248/29" in site:  # 6 usable: h1-h4 .249-.252, .253 the primary's, .254 shared
        text = text.replace("[h1, h2], gateways", "[h1, h2, h3, h4], gateways")
    elif "/30" in site:  # 2 usable: h1 and the shared address
        text = text.replace("[h1, h2], gateways", "[h1], gateways")
    with pytest.raises(IntentError) as err:
        build_plan(load_intent_text(text))
    assert any(p.path.startswith(path) and words in p.message for p in err.value.problems), [
        (p.path, p.message) for p in err.value.problems
    ]


def test_a_host_named_like_the_standby_is_refused() -> None:
    text = INTENT.format(extra="", site="").replace("[h1, h2]", "[h1, gateway-2]")
    with pytest.raises(IntentError) as err:
        build_plan(load_intent_text(text))
    assert [p.path for p in err.value.problems] == ["sites[1].hosts[1]"]


def test_other_gateways_peer_with_the_standby_holding_only_its_own_address() -> None:
    plan = plan_of()
    keys = keys_of(plan)
    a, b = plan.site("a"), plan.site("b")
    conf = parse_wg_config(render_wg_config(plan, a, keys))
    peers = conf["peers"]  # type: ignore[index]
    assert peers["pub-b"]["allowed_ips"] == [b.block]
    assert peers["pub-b.2"]["allowed_ips"] == ["10.2.0.252/32"]
    assert peers["pub-b.2"]["endpoint"] == f"{b.standby.public_address}:{plan.port}"
    # the standby is a full member: its own key, every other site's block
    view, vkeys = gateway_view(b, keys, standby=True)
    sconf = parse_wg_config(render_wg_config(plan, view, vkeys))
    assert sconf["private_key"] == "priv-b.2"
    assert sorted(p["allowed_ips"][0] for p in sconf["peers"].values()) == sorted(  # type: ignore[attr-defined]
        [plan.site("a").block, plan.site("c").block]
    )


def test_remote_agents_detour_the_primary_to_the_standby_first() -> None:
    plan = plan_of()
    a = plan.site("a")
    cfg = failover_config(plan, a, keys_of(plan), [a.tunnel_if])
    b = cfg["peers"]["b"]
    assert b["probe"] == "10.2.0.253" and b["keep"] == ["10.2.0.253/32"]
    assert b["detours"] == ["b/gateway-2", "c"]
    assert cfg["peers"]["b/gateway-2"]["allowed"] == ["10.2.0.252/32"]
    assert "vip" not in cfg


def test_each_gateway_runs_keepalived_with_its_own_lan_address() -> None:
    plan = plan_of()
    keys = keys_of(plan)
    b = plan.site("b")
    for standby, own, prio in ((False, "10.2.0.253/24", 200), (True, "10.2.0.252/24", 100)):
        model = render_gateway(plan, b, keys, standby=standby)
        addrs = [i.prefix for i in model.items if isinstance(i, Address)]
        assert own in addrs and "10.2.0.254/24" not in addrs
        procs = {i.name: i for i in model.items if isinstance(i, Process)}
        conf = dict(procs["keepalived:keepalived.conf"].files)["keepalived.conf"]
        assert f"priority {prio}" in conf and "10.2.0.254/32 dev lan0 label lan0:vip" in conf
        agent = dict(procs["python3:failover.json"].files)["failover.json"]
        assert '"vip": "10.2.0.254"' in agent
    assert "priority 200" in keepalived_config(b, "lan0", standby=False)


def test_every_gateway_admits_the_standby_public_address() -> None:
    plan = plan_of()
    keys = keys_of(plan)
    b = plan.site("b")
    model = render_gateway(plan, plan.site("a"), keys)
    (table,) = [i for i in model.items if isinstance(i, NftTable)]
    assert b.standby is not None and b.standby.public_address in table.ruleset


def test_the_lab_puts_the_lan_in_a_switch_and_both_gateways_on_it() -> None:
    plan = plan_of()
    res = render_lab(plan, keys_of(plan))
    sw = names.switch_ns(plan.name, "b")
    nodes = {r.node for r in res}
    assert {sw, names.standby_ns(plan.name, "b"), names.gateway_ns(plan.name, "b")} <= nodes
    veths = [r for r in res if isinstance(r.item, Link) and r.item.type == "veth"]
    on_switch = {
        r.item.name if r.node == sw else r.item.peer.name  # type: ignore[union-attr]
        for r in veths
        if sw in (r.node, r.item.peer.node)  # type: ignore[union-attr]
    }
    assert on_switch == {"g1", "g2", "h1", "h2"}
    # one-gateway sites are as before: their hosts on the gateway's bridge
    assert names.switch_ns(plan.name, "a") not in nodes


def _runner(vip: str | None, node: str, events: list[dict]) -> Runner:  # type: ignore[type-arg]
    plan = plan_of()
    b = plan.site("b")
    view, keys = gateway_view(b, keys_of(plan), standby=node == "gateway-2")
    cfg = failover_config(plan, view, keys, [view.tunnel_if], vip, node)
    cfg["address"], cfg["port"] = "127.0.0.1", 0  # a free port on loopback
    return Runner(cfg, log=lambda line: None, record=events.append)


def test_the_agent_records_takeover_and_release_of_the_shared_address() -> None:
    events: list[dict] = []  # type: ignore[type-arg]
    runner = _runner("127.0.0.1", "gateway-2", events)  # an address this host holds
    try:
        runner.watch_vip()
        runner.watch_vip()  # once per change
        assert events == [
            {
                "kind": "takeover",
                "site": "b",
                "gateway": "gateway-2",
                "peer": "gateway-2",
                "via": None,
            }
        ]
        runner.vip = "192.0.2.77"  # not ours: released
        runner.watch_vip()
        assert [e["kind"] for e in events] == ["takeover", "release"]
    finally:
        runner.sock.close()
    events.clear()
    runner = _runner("192.0.2.77", "gateway-2", events)
    try:
        runner.watch_vip()  # never held: nothing to record
        assert events == [] and runner.holds_vip is False
    finally:
        runner.sock.close()


def test_a_primary_is_ready_for_its_peers_only_while_it_holds_the_address() -> None:
    now = time.monotonic()
    primary = _runner("192.0.2.77", "gateway", [])
    standby = _runner("192.0.2.77", "gateway-2", [])
    try:
        for r in (primary, standby):
            r.watch_vip()
        assert not primary.ready("a", now)  # without the address: not READY
        assert standby.ready("a", now)  # the standby's readiness is the agent's own
        primary.vip = "127.0.0.1"
        primary.watch_vip()
        assert primary.ready("a", now)
    finally:
        primary.sock.close()
        standby.sock.close()
