"""Overlay topologies: which gateways peer (seed 003 §3.1.3; seed 001 MST vs full mesh).

Sites are numbered 0..n-1 in file order. Every function returns the tunnels as sorted
``(a, b)`` pairs with ``a < b``, deterministically.

- ``full-mesh``: every pair, n(n-1)/2 tunnels (seed 003 §3.1.3 picks it for latency).
- ``hub``: every site to the hub, n-1 tunnels (seed 003's star).
- ``mst``: a minimum spanning tree of great-circle distances between the sites'
  ``location`` (seed 001: n-1 tunnels, so set-up grows linearly rather than quadratically).
  A site without a location weighs 1 km to every other site.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), km."""

Location = tuple[float, float] | None
Edge = tuple[int, int]


def full_mesh(n: int) -> list[Edge]:
    """All ``n(n-1)/2`` pairs."""
    return [(a, b) for a in range(n) for b in range(a + 1, n)]


def hub(n: int, hub_index: int) -> list[Edge]:
    """A star around ``hub_index``."""
    return sorted((min(hub_index, s), max(hub_index, s)) for s in range(n) if s != hub_index)


def distance_matrix(locations: Sequence[Location]) -> np.ndarray:
    """Great-circle distances (haversine), km, as an ``n x n`` array.

    Pairs involving a site without a location weigh 1 km; the diagonal is 0.
    """
    has = np.array([loc is not None for loc in locations], dtype=bool)
    lat = np.radians(np.array([loc[0] if loc else 0.0 for loc in locations], dtype=float))
    lon = np.radians(np.array([loc[1] if loc else 0.0 for loc in locations], dtype=float))
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    a = np.sin(dlat / 2) ** 2 + np.cos(lat)[:, None] * np.cos(lat)[None, :] * np.sin(dlon / 2) ** 2
    d = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    unknown = ~(has[:, None] & has[None, :])
    d[unknown] = 1.0
    np.fill_diagonal(d, 0.0)
    result: np.ndarray = d
    return result


def edge_lengths(locations: Sequence[Location], edges: Sequence[Edge]) -> list[float]:
    """Great-circle length in km of each edge (1.0 where a location is unknown), vectorised."""
    if not edges:
        return []
    a = np.fromiter((e[0] for e in edges), dtype=np.int64, count=len(edges))
    b = np.fromiter((e[1] for e in edges), dtype=np.int64, count=len(edges))
    has = np.array([loc is not None for loc in locations], dtype=bool)
    lat = np.radians(np.array([loc[0] if loc else 0.0 for loc in locations], dtype=float))
    lon = np.radians(np.array([loc[1] if loc else 0.0 for loc in locations], dtype=float))
    h = (
        np.sin((lat[a] - lat[b]) / 2) ** 2
        + np.cos(lat[a]) * np.cos(lat[b]) * np.sin((lon[a] - lon[b]) / 2) ** 2
    )
    d = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    d[~(has[a] & has[b])] = 1.0
    out: list[float] = d.tolist()
    return out


def great_circle_km(a: Location, b: Location) -> float:
    """Haversine distance between two locations in km (1.0 when either is unknown)."""
    if a is None or b is None:
        return 1.0
    return float(distance_matrix([a, b])[0, 1])


def mst(locations: Sequence[Location]) -> list[Edge]:
    """Minimum spanning tree over great-circle distances (Prim's algorithm, O(n^2)).

    Ties are broken towards the lower site index, so the result is deterministic.
    """
    n = len(locations)
    if n < 2:
        return []
    d = distance_matrix(locations)
    in_tree = np.zeros(n, dtype=bool)
    best = np.full(n, np.inf)
    parent = np.full(n, -1, dtype=np.int64)
    in_tree[0] = True
    best[:] = d[0]
    parent[:] = 0
    best[0] = np.inf
    edges: list[Edge] = []
    for _ in range(n - 1):
        cand = np.where(in_tree, np.inf, best)
        v = int(np.argmin(cand))
        u = int(parent[v])
        edges.append((min(u, v), max(u, v)))
        in_tree[v] = True
        closer = (~in_tree) & (d[v] < best)
        best[closer] = d[v][closer]
        parent[closer] = v
    return sorted(edges)


TOPOLOGIES: dict[str, Callable[..., list[Edge]]] = {"full-mesh": full_mesh, "hub": hub, "mst": mst}
"""Registered topology builders by name."""
