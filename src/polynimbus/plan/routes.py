"""Routes with transit: for each gateway, which peer carries traffic to each other site.

Traffic between sites that do not peer transits the gateways in between (hub, mst).
Per site, each peer's tunnel carries the blocks of a set of sites (this is also the
peer's WireGuard AllowedIPs). Routing follows shortest paths in hops; ties go to the
lower site index (seed 003 §3.2.3.2: every overlay prefix to the gateway, transit
through intermediate gateways).

Trees (hub, mst) use one depth-first traversal from site 0, whose pre-order puts every
subtree in one slice, so a gateway's routes are slices and one stable sort (numpy); other
graphs use networkx's breadth-first search per site (imported only then). A full mesh
routes everything direct and needs no traversal (nor networkx, nor any per-pair Python
object: its 1,000-site table would be a million).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Edge = tuple[int, int]
Reach = list[tuple[int, tuple[int, ...]]]
"""Per gateway: ``[(peer, (site, ...)), ...]`` ordered by peer index."""


@dataclass(frozen=True, slots=True, eq=False)
class SiteRoutes:
    """One gateway's routing table, compact.

    Attributes:
        peers: ``(k,)`` int32, the peer sites' indices, ascending.
        dests: ``(r,)`` int32, the sites reached through each peer, grouped by peer in
            ``peers`` order and ascending within a group; ``None`` when every peer
            reaches only itself (full mesh).
        bounds: ``(k + 1,)`` int64 offsets: peer ``i`` reaches
            ``dests[bounds[i]:bounds[i + 1]]``; ``None`` with ``dests``.
    """

    peers: np.ndarray
    dests: np.ndarray | None
    bounds: np.ndarray | None

    def reaches(self, i: int) -> tuple[int, ...]:
        """Sites reached through the ``i``-th peer, ascending."""
        if self.dests is None or self.bounds is None:
            return (int(self.peers[i]),)
        out: list[int] = self.dests[self.bounds[i] : self.bounds[i + 1]].tolist()
        return tuple(out)


def route_table(n: int, a: np.ndarray, b: np.ndarray) -> list[SiteRoutes]:
    """Every gateway's routes for the overlay with tunnels ``(a[k], b[k])``.

    Args:
        n: number of sites.
        a, b: ``(m,)`` integer arrays, ``a[k] < b[k]``, no duplicate pair.

    Returns:
        ``n`` tables, by site index. The union of a table's reached sites is every other
        site reachable in the overlay.
    """
    if n == 0:
        return []
    if len(a) == n * (n - 1) // 2:  # complete graph: everything direct
        everyone = np.arange(n, dtype=np.int32)
        return [SiteRoutes(_frozen(np.delete(everyone, s)), None, None) for s in range(n)]
    hops = next_hops(n, a, b)
    # Per row: destinations sorted by next hop, then by index (stable); -1 (self,
    # unreachable) sorts first and is dropped.
    order = np.argsort(hops, axis=1, kind="stable").astype(np.int32)
    peers = _neighbours(n, a, b)
    out: list[SiteRoutes] = []
    for s in range(n):
        row = order[s]
        sorted_hops = hops[s, row]
        first = int(np.searchsorted(sorted_hops, 0))
        dests = row[first:]
        bounds = np.searchsorted(sorted_hops[first:], peers[s])
        bounds = np.append(bounds, len(dests)).astype(np.int64)
        out.append(SiteRoutes(_frozen(peers[s]), _frozen(dests.copy()), _frozen(bounds)))
    return out


def next_hops(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Next-hop matrix: ``hops[s, d]`` is the peer of ``s`` whose tunnel carries ``d``.

    Shape ``(n, n)``, int32; -1 on the diagonal and where ``d`` is unreachable. A tree
    takes the depth-first path (:func:`_tree_next_hops`), any other graph breadth-first
    searches (:func:`_bfs_next_hops`); both give the same answer on a tree.
    """
    if n > 0 and len(a) == n - 1:
        hops = _tree_next_hops(n, a, b)
        if hops is not None:
            return hops
    return _bfs_next_hops(n, a, b)


def transit_reach(n: int, edges: Sequence[Edge]) -> list[Reach]:
    """For each site, the sites reached through each of its peers (Python objects; the
    planner uses the compact :func:`route_table`).

    Returns:
        ``reach[s] = [(peer, sites), ...]``; the union of ``sites`` over peers is every
        site other than ``s`` reachable in the overlay.
    """
    a = np.array([e[0] for e in edges], dtype=np.int64)
    b = np.array([e[1] for e in edges], dtype=np.int64)
    return [[(int(p), t.reaches(i)) for i, p in enumerate(t.peers)] for t in route_table(n, a, b)]


def _frozen(x: np.ndarray) -> np.ndarray:
    x.flags.writeable = False
    return x


def _neighbours(n: int, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Ascending int32 neighbour arrays, by site."""
    ends = np.concatenate((a, b))
    other = np.concatenate((b, a)).astype(np.int32)
    order = np.lexsort((other, ends))
    cuts = np.searchsorted(ends[order], np.arange(n + 1))
    sorted_other = other[order]
    return [sorted_other[cuts[s] : cuts[s + 1]] for s in range(n)]


def _graph(n: int, a: np.ndarray, b: np.ndarray) -> Any:
    """A networkx graph of the sites ``0..n-1`` and the tunnels ``(a[k], b[k])``."""
    import networkx as nx  # 0.17 s to import: only plans that need a traversal pay it

    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(a.tolist(), b.tolist(), strict=True))
    return g


def _tree_next_hops(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """:func:`next_hops` of a tree, or ``None`` if the graph is not connected.

    One depth-first traversal from site 0 gives each site's parent and its pre-order
    position ``tin`` (a plain loop: it runs on every plan of a hub or MST, and importing
    networkx for it would cost the CLI about 0.1 s); the subtree of ``v`` is the pre-order
    slice ``tin[v] : tin[v] + size[v]``. From ``s``, a destination goes to the child whose
    subtree holds it, anything else to the parent.
    """
    nbrs = [x.tolist() for x in _neighbours(n, a, b)]
    parent = np.full(n, -1, dtype=np.int32)
    seen = [False] * n
    seen[0] = True
    order = [0]
    stack = [(0, iter(nbrs[0]))]
    while stack:  # iterative pre-order DFS, neighbours in index order
        u, it = stack[-1]
        for v in it:
            if not seen[v]:
                seen[v] = True
                parent[v] = u
                order.append(v)
                stack.append((v, iter(nbrs[v])))
                break
        else:
            stack.pop()
    if len(order) != n:
        return None
    pre = np.array(order, dtype=np.int64)
    tin = np.empty(n, dtype=np.int64)
    tin[pre] = np.arange(n)
    size = np.ones(n, dtype=np.int64)
    par = parent.tolist()
    for v in reversed(order[1:]):
        size[par[v]] += size[v]
    children: list[list[int]] = [[] for _ in range(n)]
    for v in order[1:]:
        children[par[v]].append(v)
    hops = np.empty((n, n), dtype=np.int32)
    by_pos = np.empty(n, dtype=np.int32)
    for s in range(n):
        by_pos.fill(par[s])  # -1 at the root: only its own position keeps it, reset below
        for c in children[s]:
            by_pos[tin[c] : tin[c] + size[c]] = c
        by_pos[tin[s]] = -1
        hops[s] = by_pos[tin]
    return hops


def _bfs_next_hops(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`next_hops` by a breadth-first search from every site (networkx
    ``bfs_edges``, neighbours in index order): the first hop of the first path found."""
    import networkx as nx

    g = _graph(n, a, b)
    hops = np.full((n, n), -1, dtype=np.int32)
    for s in range(n):
        first = [-1] * n
        for u, v in nx.bfs_edges(g, s, sort_neighbors=sorted):
            first[v] = v if u == s else first[u]
        hops[s] = first
    return hops
