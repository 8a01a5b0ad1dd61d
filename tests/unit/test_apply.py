"""The apply engine against the fake target: idempotence, convergence, interruption."""

from __future__ import annotations

import pytest

from polynimbus.apply import apply, diff
from polynimbus.intent import load_intent, load_intent_text
from polynimbus.keys import generate
from polynimbus.node import Address, Link, Netns, Route, WireGuardConfig
from polynimbus.plan import build_plan
from polynimbus.render.lab import render_lab
from polynimbus.resources import Resource
from polynimbus.targets.fake import FakeTarget
from tests.conftest import EXAMPLES


def desired(text: str | None = None):
    intent = load_intent_text(text) if text else load_intent(EXAMPLES / "prestocloud.yaml")
    plan = build_plan(intent)
    keys = {s.name: KEYS.setdefault(s.name, generate()) for s in plan.sites}
    return plan, render_lab(plan, keys)


KEYS: dict = {}


def test_second_apply_changes_nothing():
    plan, want = desired()
    t = FakeTarget()
    first = apply(t, plan.name, want)
    assert first.counts()["create"] == len(want)
    second = apply(t, plan.name, want)
    assert not second.changed


def test_creation_order_respects_dependencies():
    plan, want = desired()
    t = FakeTarget()
    apply(t, plan.name, want)
    order = {key: i for i, (_, key) in enumerate(t.ops)}
    for r in want:
        for dep in r.dependencies():
            if dep in order:
                assert order[dep] < order[r.key], (dep, r.key)


def test_adding_a_host_touches_only_its_resources():
    text = (EXAMPLES / "prestocloud.yaml").read_text()
    plan, want = desired(text)
    t = FakeTarget()
    apply(t, plan.name, want)
    t.ops.clear()
    plan2, want2 = desired(text.replace("hosts: [worker-3]", "hosts: [worker-3, worker-4]"))
    res = apply(t, plan2.name, want2)
    on_gateway = [
        c.resource for c in res.changes if c.resource.node == "pn.prestocloud.azure-weu.gateway"
    ]
    # the new veth pair is keyed by its smaller end, the gateway's port h2
    assert [(r.kind, r.item.ident()) for r in on_gateway] == [("link", ("h2",))]
    assert {c.resource.node for c in res.changes} == {
        "pn.prestocloud.azure-weu.gateway",
        "pn.prestocloud.azure-weu.worker-4",
    }
    assert res.counts() == {"create": 5, "update": 0, "delete": 0}


def test_removing_a_site_deletes_only_what_is_gone():
    text = (EXAMPLES / "prestocloud.yaml").read_text()
    plan, want = desired(text)
    t = FakeTarget()
    apply(t, plan.name, want)
    start = text.index("  - name: azure-weu")
    plan2, want2 = desired(text[:start])
    res = apply(t, plan2.name, want2)
    deleted = [c.resource for c in res.changes if c.action == "delete"]
    # namespaces of the removed site go; their contents are not deleted one by one
    assert {r.node for r in deleted if r.kind == "netns"} == {
        "pn.prestocloud.azure-weu.gateway",
        "pn.prestocloud.azure-weu.worker-3",
    }
    assert all(
        r.node not in ("pn.prestocloud.azure-weu.gateway",) or r.kind == "netns" for r in deleted
    )
    # deletions come before creations and updates
    actions = [c.action for c in res.changes]
    assert actions == sorted(actions, key=lambda a: a != "delete")
    assert not apply(t, plan2.name, want2).changed


def test_interrupted_apply_completes_on_rerun():
    plan, want = desired()
    victim = next(r.key for r in want if r.kind == "route")
    t = FakeTarget(fail_on=victim)
    with pytest.raises(RuntimeError):
        apply(t, plan.name, want)
    assert victim not in t.state
    t.fail_on = None
    res = apply(t, plan.name, want)
    assert res.changed and victim in t.state
    assert not apply(t, plan.name, want).changed


def test_recreated_link_reapplies_its_addresses():
    link = Resource("n", Link("eth0", "bridge", mtu=1500))
    addr = Resource("n", Address("eth0", "10.0.0.1/24"))
    ns = Resource("n", Netns())
    actual = {r.key: r for r in (ns, Resource("n", Link("eth0", "bridge", mtu=9000)), addr)}
    changes = diff([ns, link, addr], actual)
    assert [(c.action, c.resource.kind) for c in changes] == [
        ("update", "link"),
        ("create", "addr"),
    ]


def test_identical_prefixes_in_two_tables_do_not_collide():
    a = Resource("n", Route("10.0.0.0/24", table=100, dev="eth0"))
    b = Resource("n", Route("10.0.0.0/24", table=200, dev="eth0"))
    c = Resource("n", Route("10.0.0.0/24", dev="eth0"))
    assert len({a.key, b.key, c.key}) == 3
    assert diff([a, b, c], {a.key: a, b.key: b, c.key: c}) == []


def test_fake_target_keeps_no_payload_so_a_payload_only_change_is_invisible():
    """The fake stores what a kernel keeps; a difference carried only by a payload field
    cannot be seen, one carried by a compared field is."""
    t = FakeTarget()
    first = WireGuardConfig("wg0", "digest-1", "PrivateKey = secret-1")
    apply(t, "lab", [Resource("n", Netns()), Resource("n", first)])
    observed = t.observe("lab", [])[("wgconf", "n", ("wg0",))].item
    assert isinstance(observed, WireGuardConfig) and observed.config == ""
    same_meaning = WireGuardConfig("wg0", "digest-1", "PrivateKey = secret-2")
    assert not apply(t, "lab", [Resource("n", Netns()), Resource("n", same_meaning)]).changed
    other = WireGuardConfig("wg0", "digest-2", "PrivateKey = secret-1")
    assert apply(t, "lab", [Resource("n", Netns()), Resource("n", other)]).changed


def test_duplicate_desired_keys_are_rejected():
    r = Resource("n", Netns())
    with pytest.raises(ValueError):
        diff([r, r], {})


def test_scoped_apply_changes_what_changed_and_leaves_drift_elsewhere():
    """``apply(nodes=changed_nodes(old, new))``: the change is made in full (both ends of a
    new veth pair), the rest of the lab is neither read nor touched (drift there stays for
    a plain apply)."""
    from polynimbus.apply import changed_nodes

    text = (EXAMPLES / "prestocloud.yaml").read_text()
    plan, want = desired(text)
    t = FakeTarget()
    apply(t, plan.name, want)
    # drift on another site: a route goes missing
    victim = next(r for r in want if r.kind == "route" and "i3s" in r.node)
    del t.state[victim.key]
    plan2, want2 = desired(text.replace("hosts: [worker-3]", "hosts: [worker-3, worker-4]"))
    nodes = changed_nodes(want, want2)
    assert nodes == {"pn.prestocloud.azure-weu.gateway", "pn.prestocloud.azure-weu.worker-4"}
    scoped = apply(t, plan2.name, want2, nodes=nodes)
    assert scoped.counts() == {"create": 5, "update": 0, "delete": 0}
    assert victim.key not in t.state  # not this change's business
    full = apply(t, plan2.name, want2)
    assert [c.resource.key for c in full.changes] == [victim.key]
    assert changed_nodes(want2, want2) == set()


def test_changed_nodes_sees_a_payload_change():
    """Desired states are compared before canonicalisation: a firewall table whose text
    changed is a change of its node (its compared field is still empty then)."""
    from polynimbus.apply import changed_nodes
    from polynimbus.node import NftTable

    a = [Resource("gw", NftTable("inet", "t", "table inet t {}\n"))]
    b = [Resource("gw", NftTable("inet", "t", "table inet t { chain c {} }\n"))]
    assert changed_nodes(a, b) == {"gw"}
    assert changed_nodes(a, a) == set()


def test_scope_closure_brings_far_ends_and_vxlan_riders_one_step():
    """A pair with an end in scope brings its far end (recreating the pair drops the far
    end's addresses); a router whose VXLAN rides a gateway in scope comes too; nothing is
    followed further."""
    from polynimbus.node import VethPeer, VxlanParams
    from polynimbus.orchestrate import scope_closure

    res = [
        Resource("gw", Link("h1", "veth", peer=VethPeer("host1", "eth0", None))),
        Resource("host1", Link("eth1", "veth", peer=VethPeer("far", "eth0", None))),
        Resource(
            "router", Link("v0", "vxlan", vxlan=VxlanParams(7, 8472, "10.0.0.1", underlay="gw"))
        ),
        Resource(
            "other", Link("v0", "vxlan", vxlan=VxlanParams(7, 8472, "10.0.0.2", underlay="gw2"))
        ),
    ]
    assert scope_closure({"gw"}, res) == {"gw", "host1", "router"}
    assert scope_closure(set(), res) == set()


def test_an_intent_is_taken_as_applied_only_after_its_apply_succeeded(tmp_path):
    from polynimbus import state

    state.save_intent(tmp_path, "name: x\n")
    assert state.kept_intent_applied(tmp_path) is None  # saved, never applied
    state.mark_applied(tmp_path, "name: x\n")
    assert state.kept_intent_applied(tmp_path) == "name: x\n"
    state.clear_applied(tmp_path)  # a new apply starts
    assert state.kept_intent_applied(tmp_path) is None
    state.mark_applied(tmp_path, "name: x\n")
    state.save_intent(tmp_path, "name: y\n")  # changed beside polynimbus
    assert state.kept_intent_applied(tmp_path) is None
