"""Routes with transit: for each gateway, which peer carries traffic to each other site.

Traffic between sites that do not peer transits the gateways in between (hub, mst).
The result is, per site, a list of ``(peer, reached_sites)``: the peer's tunnel carries
the blocks of every site in ``reached_sites`` (this is also the peer's WireGuard
AllowedIPs). Routing follows shortest paths in hops; ties go to the lower site index.

Trees (hub, mst) use one rooted traversal and slices of its pre-order (O(n) per gateway
with C-speed slicing); a full mesh routes everything direct; other graphs use BFS.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

Edge = tuple[int, int]
Reach = list[tuple[int, tuple[int, ...]]]
"""Per gateway: ``[(peer, (site, ...)), ...]`` ordered by peer index."""


def adjacency(n: int, edges: Sequence[Edge]) -> list[list[int]]:
    """Sorted neighbour lists."""
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    for lst in adj:
        lst.sort()
    return adj


def transit_reach(n: int, edges: Sequence[Edge]) -> list[Reach]:
    """For each site, the sites reached through each of its peers.

    Returns:
        ``reach[s] = [(peer, sites), ...]``; the union of ``sites`` over peers is every
        site other than ``s`` reachable in the overlay.
    """
    if n == 0:
        return []
    if len(edges) == n * (n - 1) // 2:
        return [[(p, (p,)) for p in range(n) if p != s] for s in range(n)]
    adj = adjacency(n, edges)
    if len(edges) == n - 1 and _connected(adj):
        return _tree_reach(adj)
    return _bfs_reach(adj)


def _connected(adj: list[list[int]]) -> bool:
    seen = {0}
    todo = [0]
    while todo:
        v = todo.pop()
        for w in adj[v]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return len(seen) == len(adj)


def _tree_reach(adj: list[list[int]]) -> list[Reach]:
    n = len(adj)
    parent = [-1] * n
    order: list[int] = []
    tin = [0] * n
    tout = [0] * n
    # Iterative DFS from 0 giving pre-order; subtree(v) = order[tin[v]:tout[v]].
    visited = [False] * n
    visited[0] = True
    order.append(0)
    stack = [(0, iter(adj[0]))]
    while stack:
        v, it = stack[-1]
        for w in it:
            if not visited[w]:
                visited[w] = True
                parent[w] = v
                tin[w] = len(order)
                order.append(w)
                stack.append((w, iter(adj[w])))
                break
        else:
            tout[v] = len(order)
            stack.pop()
    out: list[Reach] = []
    for s in range(n):
        reach: Reach = []
        for p in adj[s]:
            if p == parent[s]:
                sites = tuple(sorted(order[: tin[s]] + order[tout[s] :]))
            else:
                sites = tuple(sorted(order[tin[p] : tout[p]]))
            reach.append((p, sites))
        out.append(reach)
    return out


def _bfs_reach(adj: list[list[int]]) -> list[Reach]:
    n = len(adj)
    out: list[Reach] = []
    for s in range(n):
        first_hop = [-1] * n
        first_hop[s] = s
        q: deque[int] = deque()
        for p in adj[s]:
            first_hop[p] = p
            q.append(p)
        while q:
            v = q.popleft()
            for w in adj[v]:
                if first_hop[w] == -1:
                    first_hop[w] = first_hop[v]
                    q.append(w)
        groups: dict[int, list[int]] = {p: [] for p in adj[s]}
        for d in range(n):
            if d != s and first_hop[d] != -1:
                groups[first_hop[d]].append(d)
        out.append([(p, tuple(groups[p])) for p in adj[s]])
    return out
