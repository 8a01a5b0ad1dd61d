"""Typed models of an intent file (YAML).

An intent says *what* the user wants: sites (one gateway each), their hosts, and how the
overlay joins them. It says nothing about how; the planner decides that. Unknown keys are
errors (a typo must not be silently ignored). See ``examples/prestocloud.yaml`` for a
commented reference.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from polynimbus.names import NAME_RE
from polynimbus.tunnels import TRANSPORTS

PROVIDER_CODES: dict[str, int] = {
    "aws": 1,
    "azure": 2,
    "openstack": 3,
    "gcp": 4,
    "onprem": 5,
    "edge": 6,
}
"""Octet A of the numbering plan 10.A.B.C per provider (seed 003 §3.2.3.1, Table 3.1)."""

Provider = Literal["aws", "azure", "openstack", "gcp", "onprem", "edge"]
Topology = Literal["full-mesh", "hub", "mst"]
Transport = str
"""A transport registered in :data:`polynimbus.tunnels.TRANSPORTS` (wireguard, vxlan...)."""

_RATE_RE = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps)?\s*$", re.I
)
_RATE_UNITS = {
    None: 1,
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "tbit": 10**12,
    # tc's convention: "bps" is bytes per second.
    "bps": 8,
    "kbps": 8 * 10**3,
    "mbps": 8 * 10**6,
    "gbps": 8 * 10**9,
}
_DELAY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s)?\s*$")
_DELAY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, None: 1.0}


def parse_rate(text: str | int | float) -> int:
    """Parse a tc-style rate (``200mbit``, ``1gbit``, ``5mbps`` = 5 MB/s) into bit/s.

    Raises:
        ValueError: not a rate, or not positive.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
        unit = None
    else:
        m = _RATE_RE.match(str(text))
        if not m:
            raise ValueError(f"{text!r} is not a rate; write e.g. 200mbit, 1gbit or 500kbit")
        value, unit = float(m.group(1)), (m.group(2) or None)
    bps = int(value * _RATE_UNITS[unit.lower() if unit else None])
    if bps <= 0:
        raise ValueError("a rate must be positive")
    return bps


def parse_delay(text: str | int | float) -> float:
    """Parse a delay (``20ms``, ``0.5s``, ``300us``; a bare number is ms) into milliseconds.

    Raises:
        ValueError: not a delay, or negative.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    m = _DELAY_RE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a delay; write e.g. 20ms")
    return float(m.group(1)) * _DELAY_UNITS[m.group(2)]


def _check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid {what} name: use 1-32 lowercase letters, digits and "
            "inner hyphens"
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Location(_Model):
    """Where a site is, in decimal degrees (WGS 84). Used by ``topology: mst``."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class UnderlaySpec(_Model):
    """Emulated conditions of a site's internet link (lab only).

    ``rate`` is shaped with tbf in both directions; ``delay`` needs the kernel's netem.
    """

    rate: str | None = None
    delay: str | None = None

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None:
            parse_rate(v)
        return v

    @field_validator("delay")
    @classmethod
    def _delay(cls, v: str | None) -> str | None:
        if v is not None:
            parse_delay(v)
        return v

    @property
    def rate_bps(self) -> int | None:
        """Shaped rate in bit/s, or ``None``."""
        return parse_rate(self.rate) if self.rate is not None else None

    @property
    def delay_ms(self) -> float | None:
        """One-way delay to add in ms, or ``None``."""
        return parse_delay(self.delay) if self.delay is not None else None


class HostSpec(_Model):
    """A host (VM) of a site. Written as a bare name or ``{name: X, address: A}``."""

    name: str
    address: IPv4Address | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "host")


class SiteSpec(_Model):
    """A site: one cloud network (VPC, VNet, OpenStack network) with its gateway.

    Attributes:
        gateways: 1 (default) or 2. With 2, a standby gateway (exec target
            ``SITE/gateway-2``) takes over the hosts' gateway address (VRRP with keepalived)
            and the tunnels (the failover agents) when the active one dies, within 1 s
            (issue 9); needs ``overlay.failover: true`` and WireGuard
            (:func:`polynimbus.plan.standby.standby_problems`).
    """

    name: str
    provider: Provider
    region: str | None = None
    location: Location | None = None
    subnet: IPv4Network | None = None
    hosts: list[HostSpec] = Field(default_factory=list)
    underlay: UnderlaySpec | None = None
    gateways: int = Field(1, ge=1, le=2)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "site")


class SRv6Spec(_Model):
    """SRv6 settings of the overlay.

    Attributes:
        carrier: ``tunnels`` (default): SRv6 packets ride inside the encrypted site-to-site
            tunnels; ``underlay``: clear IPv6 over the internet between gateways (seed 000).
    """

    carrier: Literal["tunnels", "underlay"] = "tunnels"


class Overlay(_Model):
    """How the gateways are joined.

    Attributes:
        topology: ``full-mesh`` (every pair), ``hub`` (every gateway to ``hub``), ``mst``
            (minimum spanning tree of great-circle distances).
        transport: a registered transport: ``wireguard`` (encrypted) or ``vxlan`` (not
            encrypted); see :mod:`polynimbus.tunnels`.
        address_space: the overlay's range; every site block lies inside it.
        hub: the hub site, with ``topology: hub``.
        port: UDP port of the transport (default: the transport's, 51820 for WireGuard,
            4789 for VXLAN).
        underlay_mtu: MTU of the underlay path between gateways, in bytes.
        ipv6: dual-stack overlay (``fd00:A:B::/64`` beside ``10.A.B.0/24``); by default on
            when the intent has ``srv6``, services or chains.
        srv6: how SRv6 service chains are carried (see :class:`SRv6Spec`).
        parallel: tunnels per peer pair (1-16, at most the transport's ``max_parallel``:
            8 for the encrypted ones), flows spread over them by a layer-4 hash (seed 004:
            encryption on several cores); default:
            :meth:`polynimbus.tunnels.base.TunnelBackend.default_parallel` (1 for every
            transport today: measured gains need several flows and free cores).
        failover: run a failover agent on every gateway; a tunnel that stops answering
            its probes for 300 ms has its traffic moved through a detour site, and moved
            back when it heals (:mod:`polynimbus.plan.failover`). WireGuard only; every
            tunnel needs a detour (full mesh of three sites or more).
    """

    topology: Topology = "full-mesh"
    transport: Transport = "wireguard"
    address_space: IPv4Network = IPv4Network("10.0.0.0/8")
    hub: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    underlay_mtu: int = Field(default=1500, ge=1280, le=9000)
    ipv6: bool | None = None
    srv6: SRv6Spec | None = None
    parallel: int | None = Field(default=None, ge=1, le=16)
    failover: bool = False

    @field_validator("transport")
    @classmethod
    def _transport(cls, v: str) -> str:
        known = TRANSPORTS.names()
        if v not in known:
            expected = " or ".join(repr(k) for k in known)
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}", {"expected": expected}
            )
        return v

    @property
    def effective_port(self) -> int:
        """The UDP port in use: ``port`` or the transport's default."""
        return self.port if self.port is not None else TRANSPORTS.get(self.transport).default_port


ServiceMode = Literal["sr-aware", "sr-unaware"]
ServiceFunction = Literal["forward", "firewall", "command"]
Family = Literal["ipv4", "ipv6"]


def _both_families() -> list[Family]:
    return ["ipv4", "ipv6"]


class ServiceSpec(_Model):
    """A network function, in its own namespace on its site's NFV node (seed 002 §III).

    Attributes:
        name: unique among services; also the exec target ``SITE/NAME``.
        site: the site whose NFV node runs it.
        mode: ``sr-aware`` (terminates its SID itself: End, RFC 8986 §4.1) or
            ``sr-unaware`` (a legacy function behind the SR/VNF connector's static proxy,
            seed 002 §II-B).
        function: ``forward`` (plain forwarding), ``firewall`` (nftables ``rules``, applied
            to the chain's inner packets; sr-unaware only) or ``command`` (``command`` runs
            in the namespace).
        rules: nftables rule statements of a firewall (``tcp dport 5201 drop``), in order.
        command: the program of a ``command`` function (a string split like a shell
            would, or a list), run in the function's namespace for the lab's lifetime.
        forward: whether the kernel forwards packets through the function (an sr-unaware
            function must: that is how packets return to the connector).
        families: the inner address families it can carry.
    """

    name: str
    site: str
    mode: ServiceMode
    function: ServiceFunction = "forward"
    rules: list[str] = Field(default_factory=list)
    command: str | list[str] | None = None
    forward: bool = True
    families: list[Family] = Field(default_factory=lambda: _both_families(), min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "service")


class MatchSpec(_Model):
    """Which traffic of a chain's endpoints is steered (default: all of it).

    Attributes:
        protocol: ``tcp``, ``udp`` or ``icmp``.
        port: destination port (tcp or udp); replies of a symmetric chain match it as
            their source port.
    """

    protocol: Literal["tcp", "udp", "icmp"] | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class ChainSpec(_Model):
    """A service chain: traffic from ``from`` to ``to`` steered through ``through``.

    Attributes:
        name: unique among chains.
        source: ``from:``, ``SITE/HOST`` or ``SITE`` (all its hosts).
        to: ``SITE/HOST`` or ``SITE``.
        through: service names, in order; each at most once.
        family: ``ipv4`` (IPv4 inside IPv6, decapsulated by End.DX4) or ``ipv6``
            (all-IPv6, End.DX6), seed 000 §III.
        symmetric: replies go back through the functions in reverse order.
        match: protocol and destination port to steer (default: everything).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    source: str = Field(alias="from")
    to: str
    through: list[str] = Field(min_length=1)
    family: Family = "ipv4"
    symmetric: bool = False
    match: MatchSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "chain")


class TenantHostSpec(_Model):
    """A tenant host: ``SITE/HOST``, or ``{name: SITE/HOST, address: A}``.

    Without ``address`` it takes the next free of .1, .2, ... of its network's subnet,
    in the order listed.
    """

    name: str
    address: IPv4Address | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        site, sep, host = v.partition("/")
        if not sep:
            raise ValueError(f"{v!r} is not SITE/HOST; write e.g. i3s/web-1")
        _check_name(site, "site")
        _check_name(host, "host")
        return v

    @property
    def site(self) -> str:
        """The site part of ``SITE/HOST``."""
        return self.name.partition("/")[0]

    @property
    def host(self) -> str:
        """The host part of ``SITE/HOST``."""
        return self.name.partition("/")[2]


class NetworkSpec(_Model):
    """A tenant network: one IPv4 subnet, on one site (routed) or stretched over several
    at layer 2 (one broadcast domain, seed 004 §III).

    Attributes:
        name: unique within the tenant.
        subnet: the tenant's own range; other tenants may use the same one.
        sites: the sites it spans, at least one; the first is its origin.
        hosts: ``SITE/HOST`` entries, each on a site of ``sites``.
    """

    name: str
    subnet: IPv4Network
    sites: list[str] = Field(min_length=1)
    hosts: list[TenantHostSpec] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "network")

    @property
    def layer2(self) -> bool:
        """Whether the network is stretched over more than one site."""
        return len(self.sites) > 1


class TenantSpec(_Model):
    """A tenant (seed 001 §2-3): its own networks and address space, isolated from the
    other tenants in traffic and in bandwidth.

    Attributes:
        name: unique among tenants; the exec target is ``TENANT:SITE/HOST``.
        rate: the bandwidth guaranteed to the tenant on every tunnel it uses (tc rate,
            e.g. ``100mbit``); it may borrow up to the tunnel's capacity when others are
            idle. Needs ``underlay.rate`` on the tenant's sites (the capacity).
        networks: the tenant's networks.
        id: the tenant's id, 1-32767 (its traffic class on the tunnels); by default hashed
            from its name. Give one when two tenants' hashed ids collide.
    """

    name: str
    rate: str | None = None
    networks: list[NetworkSpec] = Field(default_factory=list)
    id: int | None = Field(default=None, ge=1, le=0x7FFF)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "tenant")

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None:
            parse_rate(v)
        return v

    @property
    def rate_bps(self) -> int | None:
        """The guaranteed rate in bit/s, or ``None``."""
        return parse_rate(self.rate) if self.rate is not None else None

    @property
    def sites(self) -> list[str]:
        """The sites of the tenant's networks, in first-seen order."""
        out: list[str] = []
        for n in self.networks:
            for s in n.sites:
                if s not in out:
                    out.append(s)
        return out


class Intent(_Model):
    """A whole intent file."""

    name: str
    overlay: Overlay = Field(default_factory=Overlay)
    sites: list[SiteSpec] = Field(min_length=1)
    services: list[ServiceSpec] = Field(default_factory=list)
    chains: list[ChainSpec] = Field(default_factory=list)
    tenants: list[TenantSpec] = Field(default_factory=list)

    @property
    def uses_srv6(self) -> bool:
        """Whether the intent steers traffic with SRv6 (``srv6``, services or chains)."""
        return self.overlay.srv6 is not None or bool(self.services) or bool(self.chains)

    @property
    def dual_stack(self) -> bool:
        """Whether the overlay carries IPv6 beside IPv4 (``overlay.ipv6``, or SRv6 in use)."""
        if self.overlay.ipv6 is not None:
            return self.overlay.ipv6
        return self.uses_srv6

    @property
    def carrier(self) -> str:
        """``tunnels`` or ``underlay`` (see :class:`SRv6Spec`)."""
        return self.overlay.srv6.carrier if self.overlay.srv6 else "tunnels"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "lab")
