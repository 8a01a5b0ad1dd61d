"""Topologies and routes with transit."""

from __future__ import annotations

import random

from polynimbus.intent import load_intent, load_intent_text
from polynimbus.plan import build_plan
from polynimbus.plan.routes import _bfs_next_hops, _tree_next_hops, transit_reach
from polynimbus.plan.topology import edge_arrays, full_mesh, great_circle_km, hub, mst
from tests.conftest import EXAMPLES


def test_full_mesh_and_hub_counts():
    assert len(full_mesh(5)) == 10
    assert hub(5, 2) == [(0, 2), (1, 2), (2, 3), (2, 4)]


def test_great_circle_paris_london():
    # Paris - London is about 344 km
    assert 340 < great_circle_km((48.8566, 2.3522), (51.5074, -0.1278)) < 348


def test_mst_of_aws_regions():
    plan = build_plan(load_intent(EXAMPLES / "aws-regions.yaml"))
    edges = {frozenset((plan.sites[t.a].name, plan.sites[t.b].name)) for t in plan.tunnels}
    assert len(edges) == 6
    assert frozenset(("paris", "london")) in edges
    assert frozenset(("tokyo", "sydney")) in edges
    assert frozenset(("paris", "sydney")) not in edges


def test_mst_site_without_location_weighs_one():
    # the site without a location is 1 km from everyone, so it becomes the star's centre
    edges = mst([(0.0, 0.0), (0.0, 90.0), None, (45.0, 45.0)])
    assert edges == [(0, 2), (1, 2), (2, 3)]


def test_hub_routes_transit_the_hub():
    plan = build_plan(load_intent(EXAMPLES / "federation.yaml"))
    cern = plan.site("hip-cern")
    routes = plan.routes(cern)
    assert {r["via"] for r in routes} == {"aalto"}
    transit = [r for r in routes if r["transit"]]
    assert {r["destination"] for r in transit} == {"hpi", "orange-pl", "nec-hd"}
    [peer] = cern.peers
    # AllowedIPs of the hub peer carry every other site's block
    assert len(peer.reaches) == 4


def test_tree_and_bfs_routing_agree_on_a_path():
    # 0-1-2-3 path: from 0 everything goes via 1; from 2, 0 and 1 via 1, 3 direct
    edges = [(0, 1), (1, 2), (2, 3)]
    tree = transit_reach(4, edges)
    assert tree[0] == [(1, (1, 2, 3))]
    assert tree[2] == [(1, (0, 1)), (3, (3,))]
    a, b = edge_arrays(edges)
    assert (_bfs_next_hops(4, a, b) == _tree_next_hops(4, a, b)).all()


def test_tree_and_bfs_routing_agree_on_random_trees():
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 60):
        # a random tree: each site joins an earlier one; then relabel the sites
        label = list(range(n))
        rng.shuffle(label)
        edges = sorted(tuple(sorted((label[v], label[rng.randrange(v)]))) for v in range(1, n))
        a, b = edge_arrays(edges)
        tree = _tree_next_hops(n, a, b)
        assert tree is not None
        assert (tree == _bfs_next_hops(n, a, b)).all()


def test_bfs_routing_of_a_cycle_breaks_ties_to_the_lower_peer():
    # a 4-cycle 0-1-2-3-0: from 0, site 2 is two hops either way; it goes via 1
    edges = [(0, 1), (0, 3), (1, 2), (2, 3)]
    assert transit_reach(4, edges)[0] == [(1, (1, 2)), (3, (3,))]
    assert transit_reach(4, edges)[2] == [(1, (0, 1)), (3, (3,))]


def test_disconnected_overlay_reaches_only_its_component():
    reach = transit_reach(4, [(0, 1), (2, 3)])
    assert reach[0] == [(1, (1,))]
    assert reach[3] == [(2, (2,))]


def test_plan_is_deterministic():
    text = (EXAMPLES / "aws-regions.yaml").read_text()
    assert (
        build_plan(load_intent_text(text)).to_json() == build_plan(load_intent_text(text)).to_json()
    )


def test_vxlan_vnis_unique_and_stable():
    text = (
        (EXAMPLES / "prestocloud.yaml")
        .read_text()
        .replace("transport: wireguard", "transport: vxlan")
    )
    plan = build_plan(load_intent_text(text))
    vnis = [t.vni for t in plan.tunnels]
    assert len(set(vnis)) == len(vnis) and all(1 <= v < 2**24 for v in vnis)
    assert plan.tunnel_mtu == 1450 and plan.mss == 1410
