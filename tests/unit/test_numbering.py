"""Numbering plan of seed 003 §3.2.3.1, with overrides."""

from __future__ import annotations

import pytest

from polynimbus.errors import IntentError
from polynimbus.intent import load_intent, load_intent_text
from polynimbus.numbering import provider_block, underlay_indices
from polynimbus.plan import build_plan
from tests.conftest import EXAMPLES


def test_prestocloud_addresses_match_the_issue():
    plan = build_plan(load_intent(EXAMPLES / "prestocloud.yaml"))
    aws = plan.site("aws-fra")
    assert aws.block == "10.1.0.0/24"
    assert aws.hosts[0].address == "10.1.0.1"
    assert plan.site("azure-weu").gateway_address == "10.2.0.254"
    assert plan.site("i3s").hosts[1].address == "10.3.0.2"


def test_b_is_the_index_among_sites_of_the_same_provider():
    text = """name: t
sites:
  - {name: a, provider: aws}
  - {name: z, provider: azure}
  - {name: b, provider: aws}
  - {name: c, provider: edge}
"""
    plan = build_plan(load_intent_text(text))
    assert [s.block for s in plan.sites] == [
        "10.1.0.0/24",
        "10.2.0.0/24",
        "10.1.1.0/24",
        "10.6.0.0/24",
    ]


def test_overrides_subnet_and_host_address():
    text = """name: t
sites:
  - name: a
    provider: onprem
    subnet: 10.200.0.0/20
    hosts: [h1, {name: h2, address: 10.200.0.1}, h3]
"""
    plan = build_plan(load_intent_text(text))
    s = plan.sites[0]
    assert s.gateway_address == "10.200.15.254"
    # explicit addresses are kept; automatic ones skip them
    assert [h.address for h in s.hosts] == ["10.200.0.2", "10.200.0.1", "10.200.0.3"]


def test_257th_site_of_a_provider_cannot_be_numbered():
    sites = "".join(f"  - {{name: s{i}, provider: gcp}}\n" for i in range(257))
    with pytest.raises(IntentError) as exc:
        load_intent_text("name: t\nsites:\n" + sites)
    [p] = exc.value.problems
    assert p.path == "sites[256]"
    assert "at most 256 sites per provider" in p.message


def test_provider_block_rejects_non_slash8():
    from ipaddress import IPv4Network

    with pytest.raises(ValueError):
        provider_block(IPv4Network("10.0.0.0/16"), "aws", 0)


def test_underlay_index_is_stable_when_other_sites_go():
    a = build_plan(load_intent(EXAMPLES / "prestocloud.yaml"))
    text = (EXAMPLES / "prestocloud.yaml").read_text()
    # drop i3s (the first site): the others keep their public addresses
    cut = text.index("  - name: aws-fra")
    start = text.index("  - name: i3s")
    b = build_plan(load_intent_text(text[:start] + text[cut:]))
    assert b.site("aws-fra").public_address == a.site("aws-fra").public_address
    assert b.site("azure-weu").public_address == a.site("azure-weu").public_address


def test_underlay_indices_probe_on_collision():
    from ipaddress import IPv4Network

    from polynimbus.numbering import SiteNumbering

    def num(block: str) -> SiteNumbering:
        net = IPv4Network(block)
        return SiteNumbering(net, net.broadcast_address - 1, (), "x", False)

    space = IPv4Network("10.0.0.0/8")
    idx = underlay_indices([num("10.0.0.0/26"), num("10.0.0.64/26")], space)
    assert idx == [0, 1]
