"""The plan: a frozen, serialisable description of the whole overlay.

Same intent, same plan, byte for byte. ``Plan.to_dict()`` is the ``plan --json`` document;
its shape is documented in ``docs/plan-schema.md`` and versioned by ``schema``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PLAN_SCHEMA = "polynimbus.plan/v1"


@dataclass(frozen=True, slots=True)
class HostPlan:
    """A host: ``name``, overlay ``address`` (dotted quad), offset in its block."""

    name: str
    address: str
    offset: int


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
        peers: the gateway's tunnels, by peer index.
        location: ``(lat, lon)`` in degrees, or ``None``.
        rate_bps: shaped underlay rate in bit/s, or ``None``.
        delay_ms: emulated one-way underlay delay in ms, or ``None``.
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
    peers: tuple[PeerPlan, ...]
    location: tuple[float, float] | None
    rate_bps: int | None
    delay_ms: float | None


@dataclass(frozen=True, slots=True)
class TunnelPlan:
    """An overlay edge between sites ``a < b`` (indices), with its great-circle length."""

    a: int
    b: int
    distance_km: float
    vni: int | None


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
        tunnels: sorted by ``(a, b)``.
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
    tunnels: tuple[TunnelPlan, ...]

    def site(self, name: str) -> SitePlan:
        """The site called ``name``.

        Raises:
            KeyError: no such site.
        """
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def routes(self, site: SitePlan) -> list[dict[str, Any]]:
        """A gateway's overlay routes: ``[{prefix, via, next_hop, transit}]`` by peer.

        ``via`` is the peer site carrying the prefix, ``next_hop`` its gateway's overlay
        address, ``transit`` True when the destination is not the peer itself.
        """
        out = []
        for peer in site.peers:
            via = self.sites[peer.site]
            for d in peer.reaches:
                out.append(
                    {
                        "prefix": self.sites[d].block,
                        "destination": self.sites[d].name,
                        "via": via.name,
                        "next_hop": via.gateway_address,
                        "transit": d != peer.site,
                    }
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``plan --json`` document (schema :data:`PLAN_SCHEMA`, docs/plan-schema.md)."""
        sites = []
        for s in self.sites:
            sites.append(
                {
                    "name": s.name,
                    "provider": s.provider,
                    "region": s.region,
                    "site_id": s.site_id,
                    "block": s.block,
                    "location": {"lat": s.location[0], "lon": s.location[1]}
                    if s.location
                    else None,
                    "gateway": {
                        "address": s.gateway_address,
                        "public_address": s.public_address,
                        "internet_address": s.internet_address,
                        "tunnel_interface": s.tunnel_if if self.transport == "wireguard" else None,
                        "peers": [
                            {
                                "site": self.sites[p.site].name,
                                "endpoint": f"{self.sites[p.site].public_address}:{self.port}",
                                "allowed_ips": [self.sites[d].block for d in p.reaches],
                                "vni": p.vni,
                            }
                            for p in s.peers
                        ],
                        "routes": self.routes(s),
                    },
                    "hosts": [{"name": h.name, "address": h.address} for h in s.hosts],
                    "underlay": {"rate_bps": s.rate_bps, "delay_ms": s.delay_ms},
                }
            )
        return {
            "schema": PLAN_SCHEMA,
            "name": self.name,
            "overlay": {
                "topology": self.topology,
                "transport": self.transport,
                "hub": self.hub,
                "address_space": self.address_space,
                "port": self.port,
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
