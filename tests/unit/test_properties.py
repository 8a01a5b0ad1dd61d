"""Property tests: any valid intent yields non-overlapping addresses and a connected
overlay whose routes reach every site from every site.

The intents mix numbering-plan sites with ``subnet:`` overrides (anywhere in
``address_space``, near the plan's own ``10.A.B.0/24`` blocks too, /20 to /30, several
sharing one /24) and hosts with ``address:`` overrides; some use an address space other
than a /8, where every site needs ``subnet:`` (seed 003 §3.2.3.1, generalised in
:mod:`polynimbus.numbering`).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from polynimbus.intent.models import PROVIDER_CODES, Intent
from polynimbus.plan import build_plan

PROVIDERS = sorted(PROVIDER_CODES)
SPACES = [IPv4Network("10.0.0.0/8"), IPv4Network("172.16.0.0/12"), IPv4Network("192.168.0.0/16")]

site_st = st.fixed_dictionaries(
    {
        "provider": st.sampled_from(PROVIDERS),
        "hosts": st.integers(min_value=0, max_value=4),
        "location": st.one_of(st.none(), st.tuples(st.floats(-89, 89), st.floats(-179, 179))),
        "subnet": st.booleans(),
    }
)


def _plan_block(space: IPv4Network, provider: str, index: int) -> IPv4Network:
    """The numbering plan's block, written out independently of the planner."""
    return IPv4Network(
        f"{space.network_address + (PROVIDER_CODES[provider] << 16) + (index << 8)}/24"
    )


@st.composite
def _subnet(draw: st.DrawFn, space: IPv4Network, taken: list[IPv4Network]) -> IPv4Network:
    """A block inside ``space``, /20 to /30, overlapping none of ``taken``; often right next
    to the numbering plan's blocks (octet A a provider code) or in a /24 already cut."""
    plen = draw(st.integers(max(20, space.prefixlen), 30))
    near = [b for b in taken if b.prefixlen >= 24]
    if near and draw(st.booleans()):
        base = int(draw(st.sampled_from(near)).network_address) & ~0xFF  # that /24
        offset = draw(st.integers(0, 255))
    else:
        a = draw(st.sampled_from([0, *PROVIDER_CODES.values(), 7, 200, 255]))
        offset = (a << 16) + draw(st.integers(0, 2**16 - 1))
        base = int(space.network_address)
    size = 2 ** (32 - plen)
    start, span = int(space.network_address), space.num_addresses
    at = ((base + offset) & ~(size - 1)) - start
    # past each block in the way, to the next aligned free one (wrapping in the space)
    for _ in range(64):
        net = IPv4Network((start + at % span, plen))
        clash = [t for t in taken if net.overlaps(t)]
        if not clash:
            return net
        end = max(int(t.broadcast_address) for t in clash) + 1 - start
        at = max(at % span + size, -(-end // size) * size)
    assume(False)
    raise AssertionError("unreachable")


@st.composite
def _hosts(draw: st.DrawFn, count: int, block: IPv4Network) -> list[Any]:
    """``count`` hosts (fewer if the block is too small), some with an explicit ``address:``
    inside ``block`` other than the network, broadcast and gateway (last usable) addresses."""
    usable = block.num_addresses - 3  # minus network, broadcast, gateway
    count = min(count, usable)
    explicit = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    offsets = draw(
        st.lists(
            st.integers(1, usable), min_size=sum(explicit), max_size=sum(explicit), unique=True
        )
    )
    it = iter(offsets)
    return [
        {"name": f"h{j}", "address": str(block.network_address + next(it))} if e else f"h{j}"
        for j, e in enumerate(explicit)
    ]


@st.composite
def intents(draw: st.DrawFn) -> Intent:
    sites = draw(st.lists(site_st, min_size=1, max_size=14))
    topology = draw(st.sampled_from(["full-mesh", "hub", "mst"]))
    transport = draw(st.sampled_from(["wireguard", "vxlan"]))
    space = draw(st.sampled_from(SPACES[:1] * 4 + SPACES[1:]))
    plan8 = space.prefixlen == 8  # the numbering plan needs a /8; otherwise all subnet:
    # the numbering plan's blocks first (B counts every site of the provider), then subnets
    blocks: list[IPv4Network | None] = []
    per_provider: dict[str, int] = {}
    for s in sites:
        index = per_provider.get(s["provider"], 0)
        per_provider[s["provider"]] = index + 1
        blocks.append(
            None if s["subnet"] or not plan8 else _plan_block(space, s["provider"], index)
        )
    taken = [b for b in blocks if b is not None]
    for i, b in enumerate(blocks):
        if b is None:
            blocks[i] = draw(_subnet(space, taken))
            taken.append(blocks[i])  # type: ignore[arg-type]
    specs = []
    for i, (s, block) in enumerate(zip(sites, blocks, strict=True)):
        assert block is not None
        spec: dict[str, Any] = {
            "name": f"s{i}",
            "provider": s["provider"],
            "hosts": draw(_hosts(s["hosts"], block)),
        }
        if s["subnet"] or not plan8:
            spec["subnet"] = str(block)
        if s["location"]:
            spec["location"] = {"lat": s["location"][0], "lon": s["location"][1]}
        specs.append(spec)
    data: dict[str, Any] = {
        "name": "prop",
        "overlay": {"topology": topology, "transport": transport, "address_space": str(space)},
        "sites": specs,
    }
    if topology == "hub":
        data["overlay"]["hub"] = f"s{draw(st.integers(0, len(sites) - 1))}"
    return Intent.model_validate(data)


@settings(max_examples=200, deadline=None)
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
        ends = {block.network_address, block.broadcast_address}
        assert IPv4Address(s.gateway_address) not in ends
        assert all(IPv4Address(h.address) not in ends for h in s.hosts)
    publics = [s.public_address for s in plan.sites]
    assert len(set(publics)) == len(publics)


@settings(max_examples=200, deadline=None)
@given(intents())
def test_overrides_are_kept(intent: Intent) -> None:
    plan = build_plan(intent)
    for spec, s in zip(intent.sites, plan.sites, strict=True):
        if spec.subnet is not None:
            assert s.block == str(spec.subnet)
        for h, hp in zip(spec.hosts, s.hosts, strict=True):
            assert hp.name == h.name
            if h.address is not None:
                assert hp.address == str(h.address)


@settings(max_examples=200, deadline=None)
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
