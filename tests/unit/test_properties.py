"""Property tests: any valid intent yields non-overlapping addresses and a connected
overlay whose routes reach every site from every site."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from polynimbus.intent.models import PROVIDER_CODES, Intent
from polynimbus.plan import build_plan

PROVIDERS = sorted(PROVIDER_CODES)

site_st = st.fixed_dictionaries(
    {
        "provider": st.sampled_from(PROVIDERS),
        "hosts": st.integers(min_value=0, max_value=4),
        "location": st.one_of(st.none(), st.tuples(st.floats(-89, 89), st.floats(-179, 179))),
    }
)


@st.composite
def intents(draw: st.DrawFn) -> Intent:
    sites = draw(st.lists(site_st, min_size=1, max_size=14))
    topology = draw(st.sampled_from(["full-mesh", "hub", "mst"]))
    transport = draw(st.sampled_from(["wireguard", "vxlan"]))
    data = {
        "name": "prop",
        "overlay": {"topology": topology, "transport": transport},
        "sites": [
            {
                "name": f"s{i}",
                "provider": s["provider"],
                "hosts": [f"h{j}" for j in range(s["hosts"])],
                **(
                    {"location": {"lat": s["location"][0], "lon": s["location"][1]}}
                    if s["location"]
                    else {}
                ),
            }
            for i, s in enumerate(sites)
        ],
    }
    if topology == "hub":
        data["overlay"]["hub"] = f"s{draw(st.integers(0, len(sites) - 1))}"
    return Intent.model_validate(data)


@settings(max_examples=150, deadline=None)
@given(intents())
def test_addresses_never_overlap(intent: Intent) -> None:
    plan = build_plan(intent)
    blocks = [IPv4Network(s.block) for s in plan.sites]
    for i, a in enumerate(blocks):
        for b in blocks[i + 1 :]:
            assert not a.overlaps(b)
    addrs = [IPv4Address(s.gateway_address) for s in plan.sites]
    addrs += [IPv4Address(h.address) for s in plan.sites for h in s.hosts]
    assert len(set(addrs)) == len(addrs)
    for s, block in zip(plan.sites, blocks, strict=True):
        assert IPv4Address(s.gateway_address) in block
        assert all(IPv4Address(h.address) in block for h in s.hosts)
    publics = [s.public_address for s in plan.sites]
    assert len(set(publics)) == len(publics)


@settings(max_examples=150, deadline=None)
@given(intents())
def test_routes_reach_every_site_from_every_site(intent: Intent) -> None:
    plan = build_plan(intent)
    n = len(plan.sites)
    if plan.topology == "full-mesh":
        assert len(plan.tunnels) == n * (n - 1) // 2
    else:
        assert len(plan.tunnels) == n - 1
    adjacent = {(t.a, t.b) for t in plan.tunnels} | {(t.b, t.a) for t in plan.tunnels}
    # next hop tables: site -> destination -> peer
    nh = [{d: p.site for p in s.peers for d in p.reaches} for s in plan.sites]
    for src in range(n):
        assert set(nh[src]) == set(range(n)) - {src}
        for dst in range(n):
            here, hops = src, 0
            while here != dst:
                nxt = nh[here][dst]
                assert (here, nxt) in adjacent  # only over real tunnels
                here, hops = nxt, hops + 1
                assert hops < n, "routing loop"
