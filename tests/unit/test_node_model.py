"""The node model: structured identities, validation, and a transport added by one module."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from polynimbus.intent import load_intent_text
from polynimbus.keys import KeyPair
from polynimbus.node import Address, Item, Link, NftTable, Route, Rule, Seg6Encap, Seg6Local
from polynimbus.plan import build_plan
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.render.gateway import render_gateway
from polynimbus.tunnels import TRANSPORTS
from polynimbus.tunnels.base import TunnelBackend


def test_route_identity_is_family_table_destination_metric():
    r4 = Route("10.0.0.0/24", dev="eth0")
    r6 = Route("fd00::/64", dev="eth0", table=100)
    assert r4.ident() == (4, 254, "10.0.0.0/24", 0)
    assert r6.ident() == (6, 100, "fd00::/64", 1024)  # the kernel's IPv6 default metric
    assert Route("0.0.0.0/0", dev="eth0").dst == "default"
    assert Route("::/0", dev="eth0").dst == "default6"
    assert Route("10.0.0.7/24", dev="e").dst == "10.0.0.0/24"


def test_unreachable_routes_need_no_device_but_unicast_ones_do():
    assert Route("default6", table=100, type="unreachable", metric=4278198272).dev is None
    with pytest.raises(ValueError):
        Route("10.0.0.0/24")


def test_seg6_modes_and_actions_are_validated_not_silently_changed():
    with pytest.raises(ValueError, match="unknown seg6 mode"):
        Seg6Encap("encapp", ("fc00::1",))
    with pytest.raises(ValueError, match="unknown seg6local action"):
        Seg6Local("End.DT4x")
    with pytest.raises(ValueError):
        Seg6Encap("encap", ())
    e = Seg6Encap("encap", ("FC00:0:0::1", "fc00::2"))
    assert e.segs == ("fc00::1", "fc00::2")  # canonical text, travel order kept


def test_addresses_rules_and_links_compare_on_the_right_fields():
    assert Address("eth0", "FD00::0001/64").prefix == "fd00::1/64"
    assert Address("eth0", "fd00::1/64").family == 6
    a = Rule(6, 100, table=90, iif="eth0")
    b = Rule(6, 100, table=91, iif="eth0")
    assert a.ident() == b.ident() and a.spec() != b.spec()
    assert Link("x", "bridge", mtu=1500).spec() != Link("x", "bridge", mtu=9000).spec()


class NullBackend(TunnelBackend):
    """A made-up transport: what adding one takes."""

    name = "null-test"
    encrypted = False
    default_port = 9
    overhead = 100
    summary = "test only"
    vni_per_tunnel = True

    def ifname_pattern(self, plan: Plan, site: SitePlan) -> str:
        return "nul*"

    def gateway_items(
        self, plan: Plan, site: SitePlan, keys: Mapping[str, KeyPair], impl: str
    ) -> list[Item]:
        return [Link("nul0", "tun", mtu=plan.tunnel_mtu)]


def test_a_transport_registered_in_one_module_is_usable_end_to_end():
    TRANSPORTS.register("null-test")(NullBackend)
    try:
        text = (
            "name: t\noverlay: {transport: null-test}\nsites:\n"
            "  - {name: a, provider: aws, hosts: [h]}\n  - {name: b, provider: azure}\n"
        )
        plan = build_plan(load_intent_text(text))
        assert plan.port == 9 and plan.tunnel_mtu == 1400 and plan.mss == 1360
        assert [t.vni is not None for t in plan.tunnels] == [True]  # it asked for VNIs
        assert plan.to_dict()["sites"][0]["gateway"]["tunnel_interface"] is None
        model = render_gateway(plan, plan.sites[0], {})
        assert any(isinstance(i, Link) and i.name == "nul0" for i in model.items)
        [table] = model.of(NftTable)
        assert "udp dport 9 accept" in table.ruleset
    finally:
        TRANSPORTS._items.pop("null-test")
