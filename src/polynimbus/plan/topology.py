"""Overlay topologies: which gateways peer (seed 003 §3.1.3; seed 001 MST vs full mesh).

Sites are numbered 0..n-1 in file order. Every function returns the tunnels as sorted
``(a, b)`` pairs with ``a < b``, deterministically.

- ``full-mesh``: every pair, n(n-1)/2 tunnels (seed 003 §3.1.3 picks it for latency).
- ``hub``: every site to the hub, n-1 tunnels (seed 003's star).
- ``mst``: a minimum spanning tree of great-circle distances between the sites'
  ``location`` (seed 001: n-1 tunnels, so set-up grows linearly rather than quadratically).
  A site without a location weighs 1 km to every other site.

The planner itself holds tunnels as two index arrays (:func:`edge_arrays`,
:func:`full_mesh_arrays`): a 1,000-site full mesh has 499,500 of them.
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


def full_mesh_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``n(n-1)/2`` pairs as two ``int64`` arrays ``(a, b)``, sorted by ``(a, b)``."""
    a, b = np.triu_indices(n, 1)
    return a.astype(np.int64, copy=False), b.astype(np.int64, copy=False)


def edge_arrays(edges: Sequence[Edge]) -> tuple[np.ndarray, np.ndarray]:
    """``edges`` as two ``int64`` arrays ``(a, b)`` of shape ``(len(edges),)``."""
    m = len(edges)
    a = np.fromiter((e[0] for e in edges), dtype=np.int64, count=m)
    b = np.fromiter((e[1] for e in edges), dtype=np.int64, count=m)
    return a, b


def hub(n: int, hub_index: int) -> list[Edge]:
    """A star around ``hub_index``."""
    return sorted((min(hub_index, s), max(hub_index, s)) for s in range(n) if s != hub_index)


def _radians(locations: Sequence[Location]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(has, lat, lon)``: which sites have a location, and their latitude and longitude
    in radians (0 where unknown); each of shape ``(n,)``."""
    has = np.array([loc is not None for loc in locations], dtype=bool)
    lat = np.radians(np.array([loc[0] if loc else 0.0 for loc in locations], dtype=float))
    lon = np.radians(np.array([loc[1] if loc else 0.0 for loc in locations], dtype=float))
    return has, lat, lon


def distance_matrix(locations: Sequence[Location]) -> np.ndarray:
    """Great-circle distances (haversine), km, as an ``n x n`` float64 array.

    Pairs involving a site without a location weigh 1 km; the diagonal is 0.

    The arithmetic is the textbook haversine, one whole-matrix operation at a time, done
    in place in two ``n x n`` buffers (the same operations on the same layouts as
    allocating each intermediate, so the same bits; about 3x faster at n = 1,000 because
    fresh 8 MB arrays page-fault).
    """
    has, lat, lon = _radians(locations)
    coslat = np.cos(lat)
    d = np.subtract(lat[:, None], lat[None, :])  # dlat
    d /= 2
    np.sin(d, out=d)
    d **= 2  # sin(dlat/2)^2
    t = np.subtract(lon[:, None], lon[None, :])  # dlon
    t /= 2
    np.sin(t, out=t)
    t **= 2  # sin(dlon/2)^2
    c = np.multiply(coslat[:, None], coslat[None, :])
    c *= t
    del t
    d += c  # haversine of the central angle
    del c
    np.clip(d, 0.0, 1.0, out=d)
    np.sqrt(d, out=d)
    np.arcsin(d, out=d)
    d *= 2 * EARTH_RADIUS_KM
    unknown = ~(has[:, None] & has[None, :])
    d[unknown] = 1.0
    np.fill_diagonal(d, 0.0)
    result: np.ndarray = d
    return result


def edge_lengths(locations: Sequence[Location], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle length in km of each edge ``(a[k], b[k])`` (1.0 where a location is
    unknown), vectorised: a float64 array of shape ``a.shape``."""
    if len(a) == 0:
        return np.zeros(0)
    has, lat, lon = _radians(locations)
    h = (
        np.sin((lat[a] - lat[b]) / 2) ** 2
        + np.cos(lat[a]) * np.cos(lat[b]) * np.sin((lon[a] - lon[b]) / 2) ** 2
    )
    d = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    d[~(has[a] & has[b])] = 1.0
    result: np.ndarray = d
    return result


def great_circle_km(a: Location, b: Location) -> float:
    """Haversine distance between two locations in km (1.0 when either is unknown)."""
    if a is None or b is None:
        return 1.0
    return float(distance_matrix([a, b])[0, 1])


def mst(locations: Sequence[Location]) -> list[Edge]:
    """Minimum spanning tree over great-circle distances (Prim's algorithm, O(n^2)).

    Prim grows the tree from site 0; each step adds the outside site nearest the tree,
    the lowest index among equally near ones, through the tree site that first reached
    that distance. Ties are thus broken towards the lower site index, so the result is
    deterministic (and equal to earlier releases' for the same intent).

    Why numpy and not a graph library (issue 13), measured at 1,000 sites on the
    project's machine: the distance matrix is about 80% of the time; the Prim loop
    itself is about 10 ms. networkx needs the complete graph as 499,500 weighted edges:
    0.7 s to build it, 1.4-1.6 s for ``minimum_spanning_tree`` (Prim or Kruskal) and
    about 230 MB, against the 0.5 s plan goal. scipy's
    ``csgraph.minimum_spanning_tree`` is fast, but it reads a zero distance (two
    co-located sites) as "no edge" and breaks ties in the order of an unstable sort, so
    it cannot reproduce the tie-break above: plans with several sites without a location
    (all 1 km apart) would change tunnels.
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
