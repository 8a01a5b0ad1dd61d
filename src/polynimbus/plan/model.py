"""The plan: a frozen, serialisable description of the whole overlay.

Same intent, same plan, byte for byte. ``Plan.to_dict()`` is the ``plan --json`` document;
its shape is documented in ``docs/plan-schema.md`` and versioned by ``schema``.

A gateway's peers (:class:`Peers`) and the plan's tunnels (:class:`Tunnels`) are compact
read-only sequences backed by numpy arrays: their :class:`PeerPlan` and :class:`TunnelPlan`
items are made on access (equal, not identical, from one access to the next). A 1,000-site
full mesh has a million peer records and half a million tunnels (issue 5).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from polynimbus.tunnels import TRANSPORTS

if TYPE_CHECKING:
    import numpy as np

    from polynimbus.plan.routes import SiteRoutes
    from polynimbus.plan.srv6 import SRv6Plan
    from polynimbus.plan.tenants import TenantPlan

PLAN_SCHEMA = "polynimbus.plan/v1"

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class HostPlan:
    """A host: ``name``, overlay ``address`` (dotted quad), offset in its block, and its
    IPv6 twin ``address6`` on a dual-stack overlay (``None`` otherwise)."""

    name: str
    address: str
    offset: int
    address6: str | None = None


@dataclass(frozen=True, slots=True)
class PeerPlan:
    """One tunnel seen from a gateway.

    Attributes:
        site: index of the peer site in :attr:`Plan.sites`.
        reaches: indices of every site whose block is routed through this tunnel (the
            peer itself first is not guaranteed; sorted by index). These blocks are the
            peer's WireGuard AllowedIPs.
        vni: VXLAN network identifier of the tunnel (``None`` for WireGuard).
    """

    site: int
    reaches: tuple[int, ...]
    vni: int | None


@dataclass(frozen=True, slots=True)
class StandbyPlan:
    """The standby gateway of a site with ``gateways: 2`` (:mod:`polynimbus.plan.standby`).

    Attributes:
        key: its credentials' name (``SITE.2``: site names have no dots).
        address: its own LAN address (the third-last usable of the block).
        primary_address: the active gateway's own LAN address (the second-last); the
            site's ``gateway_address`` is the VRRP virtual address the two share.
        public_address, internet_address: its /31 on the emulated internet.
        tunnel_if: its WireGuard interface name (host-unique).
        vrid: the VRRP virtual router id of the site (1-255).
    """

    key: str
    address: str
    primary_address: str
    public_address: str
    internet_address: str
    tunnel_if: str
    vrid: int


@dataclass(frozen=True, slots=True)
class SitePlan:
    """One site and its gateway.

    Attributes:
        name, provider, region: from the intent.
        site_id: 6 hex digits, unique in the plan (see :mod:`polynimbus.names`).
        block: the site's block, ``A.B.C.D/LEN``.
        gateway_address: the gateway's overlay address (last usable of ``block``).
        public_address: the gateway's underlay (public) address.
        internet_address: the emulated internet router's end of the gateway's /31.
        tunnel_if: the gateway's WireGuard interface name (host-unique).
        hosts: the site's hosts.
        peers: the gateway's tunnels, by peer index (a :class:`Peers` from the planner).
        location: ``(lat, lon)`` in degrees, or ``None``.
        rate_bps: shaped underlay rate in bit/s, or ``None``.
        delay_ms: emulated one-way underlay delay in ms, or ``None``.
        block6: the site's IPv6 /64 on a dual-stack overlay, else ``None``.
        gateway_address6: the gateway's IPv6 overlay address, else ``None``.
        sid_block: the site's SRv6 SID block (``5f00:A:B::/48``) when SRv6 is used.
        public_address6, internet_address6: the underlay's IPv6 (``carrier: underlay``).
        standby: the standby gateway (``gateways: 2``), else ``None``.
    """

    name: str
    provider: str
    region: str | None
    site_id: str
    block: str
    gateway_address: str
    public_address: str
    internet_address: str
    tunnel_if: str
    hosts: tuple[HostPlan, ...]
    peers: Sequence[PeerPlan]
    location: tuple[float, float] | None
    rate_bps: int | None
    delay_ms: float | None
    block6: str | None = None
    gateway_address6: str | None = None
    sid_block: str | None = None
    public_address6: str | None = None
    internet_address6: str | None = None
    standby: StandbyPlan | None = None

    @property
    def own_address(self) -> str:
        """The active gateway's own overlay address: ``gateway_address``, or with a
        standby the primary's own LAN address (``gateway_address`` is then virtual)."""
        return self.standby.primary_address if self.standby else self.gateway_address


@dataclass(frozen=True, slots=True)
class TunnelPlan:
    """An overlay edge between sites ``a < b`` (indices), with its great-circle length."""

    a: int
    b: int
    distance_km: float
    vni: int | None


class _ArraySequence(Sequence[_T]):
    """A read-only sequence whose items are made on access, from arrays it marks read-only.

    Equal to any sequence (a tuple too) with equal items; hashes like the tuple of its
    items. Indexing takes negative indices and slices (a slice gives a tuple).

    Raises:
        IndexError: an index out of range.
    """

    __slots__ = ()

    def _item(self, i: int) -> _T:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> _T: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[_T, ...]: ...
    def __getitem__(self, i: int | slice) -> _T | tuple[_T, ...]:
        n = len(self)
        if isinstance(i, slice):
            return tuple(self._item(k) for k in range(*i.indices(n)))
        k = i.__index__()
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"index {i} out of range for {n} items")
        return self._item(k)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(x == y for x, y in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"


class Peers(_ArraySequence[PeerPlan]):
    """A gateway's peers, by peer index: a read-only sequence of :class:`PeerPlan`.

    Backed by the site's :class:`~polynimbus.plan.routes.SiteRoutes` (int32 arrays) and
    ``vnis``, an int64 array of shape ``(len(peers),)`` (VXLAN) or ``None``. Iterating a
    full mesh site's peers makes 999 small objects at 1,000 sites, the plan holds none.
    """

    __slots__ = ("_routes", "_vnis")

    def __init__(self, routes: SiteRoutes, vnis: np.ndarray | None = None) -> None:
        if vnis is not None:
            vnis.flags.writeable = False
        self._routes = routes
        self._vnis = vnis

    def __len__(self) -> int:
        return len(self._routes.peers)

    def _item(self, i: int) -> PeerPlan:
        r = self._routes
        return PeerPlan(
            int(r.peers[i]), r.reaches(i), None if self._vnis is None else int(self._vnis[i])
        )

    def __iter__(self) -> Iterator[PeerPlan]:
        r = self._routes
        peers: list[int] = r.peers.tolist()
        vnis: list[int | None] = [None] * len(peers) if self._vnis is None else self._vnis.tolist()
        if r.dests is None or r.bounds is None:
            for p, v in zip(peers, vnis, strict=True):
                yield PeerPlan(p, (p,), v)
            return
        dests, bounds = r.dests, r.bounds.tolist()
        for i, (p, v) in enumerate(zip(peers, vnis, strict=True)):
            reaches: list[int] = dests[bounds[i] : bounds[i + 1]].tolist()
            yield PeerPlan(p, tuple(reaches), v)


class Tunnels(_ArraySequence[TunnelPlan]):
    """The plan's tunnels, sorted by ``(a, b)``: a read-only sequence of :class:`TunnelPlan`.

    Backed by arrays of shape ``(m,)``: ``a`` and ``b`` (site indices, ``a < b``),
    ``km`` (float64, great-circle length) and ``vnis`` (int64, VXLAN) or ``None``.
    """

    __slots__ = ("_a", "_b", "_km", "_vnis")

    def __init__(
        self, a: np.ndarray, b: np.ndarray, km: np.ndarray, vnis: np.ndarray | None = None
    ) -> None:
        for x in (a, b, km, vnis):
            if x is not None:
                x.flags.writeable = False
        self._a, self._b, self._km, self._vnis = a, b, km, vnis

    def __len__(self) -> int:
        return len(self._a)

    def _item(self, i: int) -> TunnelPlan:
        return TunnelPlan(
            int(self._a[i]),
            int(self._b[i]),
            float(self._km[i]),
            None if self._vnis is None else int(self._vnis[i]),
        )

    def __iter__(self) -> Iterator[TunnelPlan]:
        a: list[int] = self._a.tolist()
        b: list[int] = self._b.tolist()
        km: list[float] = self._km.tolist()
        vnis: list[int | None] = [None] * len(a) if self._vnis is None else self._vnis.tolist()
        for x in zip(a, b, km, vnis, strict=True):
            yield TunnelPlan(*x)


@dataclass(frozen=True, slots=True)
class Plan:
    """The whole plan.

    Attributes:
        name: the lab / deployment name.
        topology, transport, hub: from the intent (``hub`` is a site name or ``None``).
        address_space: the overlay range.
        port: the transport's UDP port.
        underlay_mtu, tunnel_mtu, mss: bytes.
        sites: in file order.
        tunnels: sorted by ``(a, b)`` (a :class:`Tunnels` from the planner).
        ipv6: whether the overlay is dual-stack.
        srv6: the SRv6 plan (SIDs, services, chains), or ``None``.
        tenants: the tenants' networks, routers and rates (:mod:`polynimbus.plan.tenants`).
        parallel: tunnels per peer pair (``overlay.parallel`` or the transport's default);
            they take UDP ports ``port`` .. ``port + parallel - 1``.
        failover: gateways run failover agents (:mod:`polynimbus.plan.failover`).
    """

    name: str
    topology: str
    transport: str
    hub: str | None
    address_space: str
    port: int
    underlay_mtu: int
    tunnel_mtu: int
    mss: int
    sites: tuple[SitePlan, ...]
    tunnels: Sequence[TunnelPlan]
    ipv6: bool = False
    srv6: SRv6Plan | None = None
    tenants: tuple[TenantPlan, ...] = ()
    parallel: int = 1
    failover: bool = False

    @property
    def tenant_mtu(self) -> int:
        """MTU of every tenant interface, bytes (:func:`polynimbus.plan.tenants.tenant_mtu`)."""
        from polynimbus.plan.tenants import tenant_mtu

        return tenant_mtu(self.tunnel_mtu)

    def tenant(self, name: str) -> TenantPlan:
        """The tenant called ``name``.

        Raises:
            KeyError: no such tenant.
        """
        for t in self.tenants:
            if t.name == name:
                return t
        raise KeyError(name)

    def prefixes(self, index: int) -> tuple[str, ...]:
        """The overlay prefixes of site ``index`` routed through the tunnels: its block,
        its IPv6 /64 (dual stack) and its SID block (SRv6 carried by the tunnels)."""
        s = self.sites[index]
        out = [s.block]
        if s.block6:
            out.append(s.block6)
        if s.sid_block and self.srv6 is not None and self.srv6.carrier == "tunnels":
            out.append(s.sid_block)
        return tuple(out)

    def site(self, name: str) -> SitePlan:
        """The site called ``name``.

        Raises:
            KeyError: no such site.
        """
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def site_index(self, name: str) -> int:
        """The index in ``sites`` of the site called ``name``.

        Raises:
            KeyError: no such site.
        """
        for i, s in enumerate(self.sites):
            if s.name == name:
                return i
        raise KeyError(name)

    def routes(self, site: SitePlan) -> list[dict[str, Any]]:
        """A gateway's overlay routes: ``[{prefix, via, next_hop, transit}]`` by peer.

        ``via`` is the peer site carrying the prefix, ``next_hop`` its gateway's overlay
        address (its IPv6 address for IPv6 prefixes), ``transit`` True when the
        destination is not the peer itself.
        """
        out = []
        for peer in site.peers:
            via = self.sites[peer.site]
            for d in peer.reaches:
                for prefix in self.prefixes(d):
                    out.append(
                        {
                            "prefix": prefix,
                            "destination": self.sites[d].name,
                            "via": via.name,
                            "next_hop": via.gateway_address6
                            if ":" in prefix and via.gateway_address6
                            else via.gateway_address,
                            "transit": d != peer.site,
                        }
                    )
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``plan --json`` document (schema :data:`PLAN_SCHEMA`, docs/plan-schema.md)."""
        backend = TRANSPORTS.get(self.transport)()
        one_interface = backend.gateway_interface
        sites = []
        for i, s in enumerate(self.sites):
            extra: dict[str, Any] = {}
            if s.block6:
                extra["block6"] = s.block6
            if s.sid_block:
                extra["sid_block"] = s.sid_block
            if s.standby:
                sb = s.standby
                extra["standby"] = {
                    "address": sb.address,
                    "primary_address": sb.primary_address,
                    "public_address": sb.public_address,
                    "internet_address": sb.internet_address,
                    "tunnel_interface": sb.tunnel_if,
                    "vrid": sb.vrid,
                }
            sites.append(
                {
                    **extra,
                    "name": s.name,
                    "provider": s.provider,
                    "region": s.region,
                    "site_id": s.site_id,
                    "block": s.block,
                    "location": {"lat": s.location[0], "lon": s.location[1]}
                    if s.location
                    else None,
                    "gateway": {
                        **({"address6": s.gateway_address6} if s.gateway_address6 else {}),
                        **({"public_address6": s.public_address6} if s.public_address6 else {}),
                        "address": s.gateway_address,
                        "public_address": s.public_address,
                        "internet_address": s.internet_address,
                        "tunnel_interface": s.tunnel_if if one_interface else None,
                        "peers": [
                            {
                                "site": self.sites[p.site].name,
                                "endpoint": f"{self.sites[p.site].public_address}:"
                                f"{backend.tunnel_ports(self, i, p.site)[0]}",
                                "allowed_ips": [x for d in p.reaches for x in self.prefixes(d)],
                                "vni": p.vni,
                            }
                            for p in s.peers
                        ],
                        "routes": self.routes(s),
                    },
                    "hosts": [
                        {"name": h.name, "address": h.address}
                        | ({"address6": h.address6} if h.address6 else {})
                        for h in s.hosts
                    ],
                    "underlay": {"rate_bps": s.rate_bps, "delay_ms": s.delay_ms},
                }
            )
        out: dict[str, Any] = {}
        if self.ipv6:
            out["ipv6"] = True
        if self.failover:
            from polynimbus.plan import failover

            out["failover"] = {
                "probe_interval_ms": failover.PROBE_INTERVAL_MS,
                "down_after": failover.DOWN_AFTER,
                "up_after_ms": failover.UP_AFTER_MS,
                "detours": [
                    {
                        "a": self.sites[t.a].name,
                        "b": self.sites[t.b].name,
                        "via": [self.sites[i].name for i in failover.detours(self, t.a, t.b)],
                    }
                    for t in self.tunnels
                ],
            }
        if self.srv6 is not None:
            out["srv6"] = self.srv6.to_dict()
        if self.tenants:
            from polynimbus.plan.tenants import tenants_to_dict

            out["tenants"] = tenants_to_dict(self.tenants, self.tenant_mtu)
        return out | {
            "schema": PLAN_SCHEMA,
            "name": self.name,
            "overlay": {
                "topology": self.topology,
                "transport": self.transport,
                "hub": self.hub,
                "address_space": self.address_space,
                "port": self.port,
                "parallel": self.parallel,
                "underlay_mtu": self.underlay_mtu,
                "tunnel_mtu": self.tunnel_mtu,
                "tcp_mss": self.mss,
            },
            "sites": sites,
            "tunnels": [
                {
                    "a": self.sites[t.a].name,
                    "b": self.sites[t.b].name,
                    "distance_km": round(t.distance_km, 1),
                    "vni": t.vni,
                }
                for t in self.tunnels
            ],
        }

    def to_json(self) -> str:
        """``to_dict()`` as indented JSON with sorted keys and a final newline."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
