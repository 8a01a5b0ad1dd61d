"""Failover: the planner's detours and refusals, the agent's configuration and its
decisions (polynimbus.plan.failover, polynimbus.agent.failover), without a lab."""

from __future__ import annotations

import json

import pytest

from polynimbus.agent.failover import STARTUP_GRACE_S, FailoverAgent, wg_set_argv
from polynimbus.errors import IntentError
from polynimbus.intent import load_intent_text
from polynimbus.keys import KeyPair
from polynimbus.plan import build_plan
from polynimbus.plan.failover import DOWN_AFTER, PROBE_INTERVAL_MS, UP_AFTER_MS, detours
from polynimbus.render.failover import failover_config


def intent(n: int = 3, topology: str = "full-mesh", extra: str = "") -> str:
    hub = "  hub: s0\n" if topology == "hub" else ""
    sites = "".join(
        f"  - {{name: s{i}, provider: {['aws', 'azure', 'openstack', 'onprem'][i % 4]}, "
        f"hosts: [h]}}\n"
        for i in range(n)
    )
    return (
        f"name: t\noverlay:\n  topology: {topology}\n  failover: true\n{hub}{extra}sites:\n{sites}"
    )


def test_detours_of_a_full_mesh_are_every_other_site() -> None:
    plan = build_plan(load_intent_text(intent(4)))
    assert detours(plan, 0, 1) == [2, 3]
    assert detours(plan, 2, 3) == [0, 1]
    assert plan.to_dict()["failover"]["detours"][0] == {"a": "s0", "b": "s1", "via": ["s2", "s3"]}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (intent(2), "no detour site"),
        (intent(3, "hub"), "2 tunnel(s) have no detour"),
        (intent(3, extra="  transport: vxlan\n"), "not available with transport 'vxlan'"),
    ],
)
def test_the_planner_refuses_failover_it_cannot_do(text: str, words: str) -> None:
    with pytest.raises(IntentError) as exc:
        build_plan(load_intent_text(text))
    assert words in exc.value.render()
    assert "overlay.failover" in exc.value.render()


def test_without_failover_no_agent_and_no_plan_section() -> None:
    plan = build_plan(load_intent_text(intent(3).replace("  failover: true\n", "")))
    assert not plan.failover and "failover" not in plan.to_dict()


def _keys(plan) -> dict[str, KeyPair]:  # type: ignore[no-untyped-def]
    return {s.name: KeyPair(private=f"priv-{s.name}", public=f"pub-{s.name}") for s in plan.sites}


def test_agent_config_keeps_the_gateway_address_and_names_detours() -> None:
    plan = build_plan(load_intent_text(intent(3)))
    s0 = plan.sites[0]
    cfg = failover_config(plan, s0, _keys(plan), [s0.tunnel_if])
    assert cfg["address"] == s0.gateway_address and cfg["interfaces"] == [s0.tunnel_if]
    s1 = plan.sites[1]
    p = cfg["peers"]["s1"]
    assert p["probe"] == s1.gateway_address
    assert p["keep"] == [f"{s1.gateway_address}/32"]
    assert p["allowed"] == [s1.block]
    assert p["detours"] == ["s2"]
    assert p["public_key"] == "pub-s1"
    assert "priv" not in json.dumps(cfg)  # the agent never sees a private key


def ev(kind: str, peer: str, via: str | None) -> dict[str, object]:
    """An event of agent ``a`` (the only gateway of its site)."""
    return {"kind": kind, "site": "a", "gateway": "gateway", "peer": peer, "via": via}


def _config() -> dict:  # type: ignore[type-arg]
    return {
        "site": "a",
        "interfaces": ["wg0"],
        "interval_ms": PROBE_INTERVAL_MS,
        "down_after": DOWN_AFTER,
        "up_after_ms": UP_AFTER_MS,
        "peers": {
            "b": {"allowed": ["10.1.0.0/24"], "keep": ["10.1.0.254/32"], "detours": ["c", "d"]},
            "c": {"allowed": ["10.2.0.0/24"], "keep": ["10.2.0.254/32"], "detours": ["b", "d"]},
            "d": {"allowed": ["10.4.0.0/24"], "keep": ["10.4.0.254/32"], "detours": ["b", "c"]},
        },
    }


def _run(agent: FailoverAgent, start: float, end: float, answer: set[str]) -> list[dict]:  # type: ignore[type-arg]
    """Probe rounds every interval from ``start`` to ``end``; ``answer``: peers that answer."""
    events = []
    t = start
    step = PROBE_INTERVAL_MS / 1000
    while t < end - 1e-9:
        for peer in answer:
            agent.answered(peer, t + 0.001)
        events += agent.evaluate(t + 0.002)
        t += step
    return events


def test_a_silent_peer_fails_over_after_down_after_probes_and_back_after_up_after() -> None:
    agent = FailoverAgent(_config(), 0.0)
    assert _run(agent, 0, 1, {"b", "c", "d"}) == []
    assert agent.allowed_ips() == {
        "b": ["10.1.0.0/24"],
        "c": ["10.2.0.0/24"],
        "d": ["10.4.0.0/24"],
    }
    # b's last answer came at 0.901: dead once 300 ms pass without one, not before
    assert _run(agent, 1, 1.2, {"c", "d"}) == []
    events = _run(agent, 1.2, 1.3, {"c", "d"})
    assert events == [ev("failover", "b", "c")]
    assert agent.allowed_ips() == {
        "b": ["10.1.0.254/32"],  # probes still go straight to b
        "c": ["10.1.0.0/24", "10.2.0.0/24"],
        "d": ["10.4.0.0/24"],
    }
    # b answers again from t=3: back after a full second of answers, not before
    assert _run(agent, 3, 3.9, {"b", "c", "d"}) == []
    events = _run(agent, 3.9, 4.2, {"b", "c", "d"})
    assert events == [ev("failback", "b", None)]
    assert agent.allowed_ips()["b"] == ["10.1.0.0/24"]
    assert agent.allowed_ips()["c"] == ["10.2.0.0/24"]


def test_a_flapping_path_restarts_the_streak() -> None:
    agent = FailoverAgent(_config(), 0.0)
    _run(agent, 0, 1, {"b", "c", "d"})
    _run(agent, 1, 1.6, {"c", "d"})
    assert agent.allowed_ips()["b"] == ["10.1.0.254/32"]
    _run(agent, 1.6, 2.3, {"b", "c", "d"})  # 700 ms of answers
    _run(agent, 2.3, 2.5, {"c", "d"})  # a miss
    assert _run(agent, 2.5, 3.4, {"b", "c", "d"}) == []  # 900 ms: still on the detour
    assert agent.allowed_ips()["b"] == ["10.1.0.254/32"]
    assert _run(agent, 3.4, 3.7, {"b", "c", "d"})[0]["kind"] == "failback"


def test_the_detour_dying_moves_traffic_to_the_next_detour() -> None:
    agent = FailoverAgent(_config(), 0.0)
    _run(agent, 0, 1, {"b", "c", "d"})
    _run(agent, 1, 1.6, {"c", "d"})
    events = _run(agent, 1.6, 2.2, {"d"})
    assert ev("failover", "b", "d") in events
    assert ev("failover", "c", "d") in events
    assert agent.allowed_ips()["d"] == ["10.1.0.0/24", "10.2.0.0/24", "10.4.0.0/24"]


def test_no_detour_alive_leaves_the_prefixes_where_they_are() -> None:
    agent = FailoverAgent(_config(), 0.0)
    _run(agent, 0, 1, {"b", "c", "d"})
    events = _run(agent, 1, 2, set())
    assert all(e["via"] is None for e in events)
    assert agent.allowed_ips() == {
        "b": ["10.1.0.0/24"],
        "c": ["10.2.0.0/24"],
        "d": ["10.4.0.0/24"],
    }


def test_a_peer_that_never_answered_gets_the_startup_grace() -> None:
    agent = FailoverAgent(_config(), 0.0)
    assert _run(agent, 0, STARTUP_GRACE_S - 0.2, {"c", "d"}) == []
    events = _run(agent, STARTUP_GRACE_S - 0.2, STARTUP_GRACE_S + 0.3, {"c", "d"})
    assert events == [ev("failover", "b", "c")]


def test_wg_set_gives_prefixes_to_the_gaining_peer_first() -> None:
    argv = wg_set_argv(
        "wg0", {"b": "KB", "c": "KC"}, {"b": ["10.1.0.254/32"], "c": ["10.1.0.0/24", "10.2.0.0/24"]}
    )
    assert argv == [
        "wg", "set", "wg0",
        "peer", "KC", "allowed-ips", "10.1.0.0/24,10.2.0.0/24",
        "peer", "KB", "allowed-ips", "10.1.0.254/32",
    ]  # fmt: skip


def test_traffic_moves_back_only_when_both_ends_are_ready() -> None:
    agent = FailoverAgent(_config(), 0.0)
    _run(agent, 0, 1, {"b", "c", "d"})
    _run(agent, 1, 1.6, {"c", "d"})
    assert agent.ready("b", 1.6) is False  # what a's probes tell b: not yet
    agent.heard("b", False)  # b has not heard a for a second yet
    assert _run(agent, 1.6, 3.0, {"b", "c", "d"}) == []
    assert agent.ready("b", 3.0) is True  # a is ready: its probes say so
    assert agent.allowed_ips()["b"] == ["10.1.0.254/32"]
    agent.heard("b", True)
    events = agent.evaluate(3.01)
    assert events == [ev("failback", "b", None)]
    assert agent.allowed_ips()["b"] == ["10.1.0.0/24"]


def test_a_detour_that_lost_the_dead_peer_too_is_not_used() -> None:
    agent = FailoverAgent(_config(), 0.0)
    _run(agent, 0, 1, {"b", "c", "d"})
    agent.heard("c", True, frozenset({"b"}))  # c cannot reach b either
    events = _run(agent, 1, 1.6, {"c", "d"})
    assert events == [ev("failover", "b", "d")]
    assert agent.lost() == {"b"}
    agent.heard("d", True, frozenset({"b"}))  # now d lost b as well: no detour left
    events = agent.evaluate(1.65)
    assert events == [ev("failover", "b", None)]
    assert agent.allowed_ips()["b"] == ["10.1.0.0/24"]


def test_a_path_cut_one_way_is_dead_for_both_ends() -> None:
    agent = FailoverAgent(_config(), 0.0)
    _run(agent, 0, 1, {"b", "c", "d"})
    # b's probes still reach a, but a's do not reach b: b lost a, and says so
    agent.heard("b", False, frozenset({"a"}))
    events = agent.evaluate(1.01)
    assert events == [ev("failover", "b", "c")]
    # once b is ready to come back (it hears a again), a stale report does not flap
    _run(agent, 1.1, 2.2, {"b", "c", "d"})
    agent.heard("b", True, frozenset({"a"}))
    assert agent.evaluate(2.21)[0]["kind"] == "failback"
    assert agent.evaluate(2.22) == []


def test_a_restarted_agent_routes_around_peers_that_lost_it_without_events() -> None:
    agent = FailoverAgent(_config(), 0.0)
    agent.heard("b", False, frozenset({"a"}))  # b still routes around us (we were dead)
    agent.answered("b", 0.05)
    for peer in ("c", "d"):
        agent.answered(peer, 0.05)
    assert agent.evaluate(0.06) == []  # b's traffic goes via c, but nothing failed here
    assert agent.allowed_ips()["c"] == ["10.1.0.0/24", "10.2.0.0/24"]
    _run(agent, 0.1, 1.3, {"b", "c", "d"})
    agent.heard("b", True, frozenset())
    assert agent.evaluate(1.31) == []  # back on the direct tunnel, no failback event
    assert agent.allowed_ips()["b"] == ["10.1.0.0/24"]
    # a later, real failure of b is an event again
    assert _run(agent, 1.4, 2.0, {"c", "d"}) == [ev("failover", "b", "c")]


def _runner(applied: list[dict[str, list[str]]]):  # type: ignore[no-untyped-def]
    from polynimbus.agent.failover import Runner

    cfg = _config()
    for n, p in cfg["peers"].items():
        p["public_key"] = n.upper() * 43 + "="
        p["probe"] = f"127.0.0.{2 + ord(n) - ord('a')}"
    cfg["address"], cfg["port"] = "127.0.0.1", 0
    r = Runner(cfg, log=lambda line: None)

    def fake_set(want: dict[str, list[str]]) -> None:  # WireGuard, as the agent sets it
        applied.append(dict(want))
        r.applied = dict(want)

    r._set = fake_set  # type: ignore[method-assign]
    r.agent.started = 0.0
    return r


def test_a_quiet_detour_and_its_quiet_return_both_reach_wireguard() -> None:
    """Review finding: moves without an event (a restarted agent routing around a peer
    that still reports it lost) were never applied on the way back, so traffic stayed on
    the detour after the peer had moved back: a black hole."""
    applied: list[dict[str, list[str]]] = []
    r = _runner(applied)
    try:
        a = r.agent
        a.heard("b", False, frozenset({"a"}))
        t = 0.05
        while t < 1.5:
            for peer in "bcd":
                a.answered(peer, t)
            r.decide(t)
            t += 0.1
        assert r.applied is not None and r.applied["c"] == ["10.1.0.0/24", "10.2.0.0/24"]
        a.heard("b", True, frozenset())
        a.answered("b", t)
        r.decide(t)
        assert r.applied == {"b": ["10.1.0.0/24"], "c": ["10.2.0.0/24"], "d": ["10.4.0.0/24"]}
    finally:
        r.sock.close()


def test_a_standby_knows_its_own_name_in_its_peers_reports() -> None:
    """Review finding: a standby took its primary's loss (SITE) for its own
    (SITE/gateway-2) and routed around live peers."""
    agent = FailoverAgent(_config() | {"node": "gateway-2"}, 0.0)
    assert agent.me == "a/gateway-2"
    agent.heard("b", False, frozenset({"a"}))  # b lost the primary, not us
    for peer in "bcd":
        agent.answered(peer, 0.05)
    assert agent.evaluate(0.06) == []
    assert agent.allowed_ips()["b"] == ["10.1.0.0/24"]
    agent.heard("b", False, frozenset({"a/gateway-2"}))  # now b lost us
    agent.answered("b", 0.1)
    assert agent.evaluate(0.11)[0]["kind"] == "failover"
