"""The node model: what one node (a gateway, a host, a router) must look like.

One typed description shared by every target. The lab applies it into a network namespace;
an agent on a real gateway will apply the same model to its own host; a cloud target will
apply the cloud half. It is modelled on tailscale's ``wgengine/router.Config`` (handed
whole to an idempotent ``Set``) and on Calico Felix's per-concern managers (routes per
table, rules, FDB, nftables, each diffed against the kernel).

A node's desired state is a set of **items**. Every item has a structured identity
(:meth:`Item.ident`), so two tenants' identical prefixes in different routing tables never
collide: a route is ``(family, table, destination, metric)``, an address
``(interface, prefix)``, a rule ``(family, priority)``. Items are compared on their other
fields (:meth:`Item.spec`); fields that only carry creation data (a configuration file
whose meaning is summarised by a digest) are excluded from comparison.

==============  ==========================================  ==============================
kind            identity                                    compared
==============  ==========================================  ==============================
``netns``       ``()``                                      (exists)
``sysctl``      ``(key,)``                                  value
``process``     ``(name,)``                                 argv
``link``        ``(name,)``                                 type, mtu, up, master, MAC,
                                                            VXLAN and veth peer parameters
``addr``        ``(ifname, prefix)``                        (exists)
``route``       ``(family, table, dst, metric)``            type, dev, via, onlink, encap
``rule``        ``(family, priority)``                      selectors and table
``fdb``         ``(dev, mac, dst)``                         (exists)
``qdisc``       ``(dev, parent)``                           kind and parameters
``class``       ``(dev, minor)``                            parent, rate and ceil
``nft``         ``(family, table)``                         the table as the kernel holds it
``wgconf``      ``(ifname,)``                               the configuration's meaning
``tunsrc``      ``()``                                      the SRv6 encapsulation source
==============  ==========================================  ==============================

Sources: rtnetlink(7) for routes, rules and neighbours; RFC 8986 §4 for the SRv6
behaviours (``seg6local`` actions) and RFC 8754 for the SRH (``seg6`` encapsulation).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

IPV4_DEFAULT_METRIC = 0
IPV6_DEFAULT_METRIC = 1024
"""The kernel's metric for a route added without one (IPv4 0, IPv6 1024), rtnetlink(7)."""

MAIN_TABLE = 254
"""The main routing table (``RT_TABLE_MAIN``)."""

Family = Literal[4, 6]

SEG6_MODES = ("encap", "inline", "l2encap")
"""``seg6`` encapsulation modes this kernel has (T.Encaps, T.Insert, T.Encaps.L2)."""

SEG6LOCAL_ACTIONS: dict[str, int] = {
    "End": 1,
    "End.X": 2,
    "End.T": 3,
    "End.DX2": 4,
    "End.DX6": 5,
    "End.DX4": 6,
    "End.DT6": 7,
    "End.DT4": 8,
    "End.B6": 9,
    "End.B6.Encaps": 10,
    "End.BM": 11,
    "End.S": 12,
    "End.AS": 13,
    "End.AM": 14,
    "End.BPF": 15,
    "End.DT46": 16,
}
"""``seg6local`` behaviours by name, with the kernel's ``SEG6_LOCAL_ACTION_*`` numbers
(RFC 8986 §4; ``include/uapi/linux/seg6_local.h``)."""


def family_of(prefix: str) -> Family:
    """4 or 6 for an address, a prefix or ``default``/``default6``.

    Raises:
        ValueError: not an address or prefix.
    """
    if prefix == "default":
        return 4
    if prefix == "default6":
        return 6
    return 4 if ipaddress.ip_network(prefix, strict=False).version == 4 else 6


def _norm_prefix(prefix: str) -> str:
    """``default``, ``default6`` or the canonical ``net/len`` of ``prefix``."""
    if prefix in ("default", "default6"):
        return prefix
    net = ipaddress.ip_network(prefix, strict=False)
    if net.prefixlen == 0:
        return "default" if net.version == 4 else "default6"
    return str(net)


class Item:
    """Base class of the node model's items. Subclasses are frozen dataclasses.

    Class attributes:
        kind: the item kind (the table in the module docstring).
        rank: creation order between kinds (deletion runs in reverse).
    """

    kind: ClassVar[str]
    rank: ClassVar[int]
    _payload_fields: ClassVar[frozenset[str]] = frozenset()

    def ident(self) -> tuple[Any, ...]:
        """The item's identity within its node and kind."""
        raise NotImplementedError

    def spec(self) -> tuple[tuple[str, Any], ...]:
        """Compared fields as sorted ``(name, value)`` pairs (identity and payload left out)."""
        idents = set(self._ident_fields())
        return tuple(
            sorted(
                (f.name, getattr(self, f.name))
                for f in fields(self)  # type: ignore[arg-type]
                if f.name not in idents and f.name not in self._payload_fields
            )
        )

    def _ident_fields(self) -> tuple[str, ...]:
        return ()

    def sub_rank(self) -> int:
        """Order within a kind (e.g. bridges before the ports that join them)."""
        return 0

    def depends(self) -> list[tuple[str, tuple[Any, ...]]]:
        """``(kind, ident)`` of items on the same node this one needs first."""
        return []

    def label(self) -> str:
        """Short text naming the item, e.g. ``route 10.1.0.0/24 table 254``."""
        return f"{self.kind} {' '.join(str(p) for p in self.ident())}".strip()


@dataclass(frozen=True, slots=True)
class Netns(Item):
    """The node itself, where the target makes nodes (a namespace in the lab)."""

    kind: ClassVar[str] = "netns"
    rank: ClassVar[int] = 0

    def ident(self) -> tuple[Any, ...]:
        return ()

    def label(self) -> str:
        return "namespace"


@dataclass(frozen=True, slots=True)
class Sysctl(Item):
    """A kernel parameter of the node, e.g. ``net.ipv4.ip_forward`` = ``"1"``."""

    key: str
    value: str
    kind: ClassVar[str] = "sysctl"
    rank: ClassVar[int] = 1

    def ident(self) -> tuple[Any, ...]:
        return (self.key,)

    def _ident_fields(self) -> tuple[str, ...]:
        return ("key",)


@dataclass(frozen=True, slots=True)
class Process(Item):
    """A long-running process the node needs (e.g. ``wireguard-go`` for a TUN interface,
    ``openvpn`` for a tunnel).

    A process may come with files (its configuration, certificates, keys): the target
    writes them, mode 0600, into a directory of the node's own and starts the process
    there, so ``argv`` names them by relative path. ``digest`` identifies the command
    line and files; the target records it with the process it starts (the lab: in its
    environment, ``POLYNIMBUS_DIGEST``) and reads it back, so a changed configuration
    restarts the process (see :func:`polynimbus.tunnels.base.daemon`).

    Attributes:
        name: its identity on the node, ``BASENAME:LASTARG`` of ``argv``, e.g.
            ``wireguard-go:wg1a2b010000``.
        argv: the command line.
        files: ``(relative name, text)`` pairs written before the start (payload: they
            may hold private keys, never shown).
        digest: what the process was started with; ``""`` when it has no files.
    """

    name: str
    argv: tuple[str, ...]
    files: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    digest: str = ""
    kind: ClassVar[str] = "process"
    rank: ClassVar[int] = 2
    _payload_fields: ClassVar[frozenset[str]] = frozenset({"files"})

    def ident(self) -> tuple[Any, ...]:
        return (self.name,)

    def _ident_fields(self) -> tuple[str, ...]:
        return ("name",)


@dataclass(frozen=True, slots=True)
class VethPeer:
    """The other end of a veth pair: its node, name, bridge (``master``) and MAC address
    (``mac``, see :attr:`Link.mac`)."""

    node: str
    name: str
    master: str | None = None
    mac: str | None = None


@dataclass(frozen=True, slots=True)
class VxlanParams:
    """VXLAN device parameters (RFC 7348).

    Attributes:
        vni: 24-bit VXLAN network identifier.
        port: UDP destination port.
        local: local underlay address.
        remote: the one remote endpoint, or ``None`` when FDB entries give the remotes.
        learning: whether the device learns remote MACs from received frames.
        underlay: the node whose network carries the device's UDP packets, when it is not
            the device's own (a tenant router's VXLAN port rides its gateway's overlay:
            the device is made there and moved, its socket stays; the lab's namespaces).
    """

    vni: int
    port: int
    local: str | None
    remote: str | None = None
    learning: bool = False
    underlay: str | None = None


MANAGED_MAC_PREFIX = "02:70:6e:"
"""MAC addresses polynimbus sets start with this locally administered prefix (``pn``)."""

LinkType = Literal["loopback", "bridge", "veth", "vxlan", "wireguard", "tun", "external"]


@dataclass(frozen=True, slots=True)
class Link(Item):
    """A network interface.

    Attributes:
        name: interface name (at most 15 bytes, see :mod:`polynimbus.names`).
        type: ``loopback``, ``bridge``, ``veth``, ``vxlan``, ``wireguard``, ``tun`` or
            ``external`` (provided by the environment: the node only sets MTU and state).
        mtu: bytes, or ``None`` to leave it.
        up: administrative state.
        master: the bridge it is a port of.
        impl: ``kernel`` or ``userspace`` for WireGuard (userspace needs a
            :class:`Process` called ``process``).
        process: the :class:`Process` that creates this interface, if any.
        vxlan: VXLAN parameters for ``type="vxlan"``.
        peer: the other end for ``type="veth"``.
        mac: the MAC address polynimbus sets, or ``None`` to leave the kernel's. Only
            addresses of the form ``02:70:6e:..`` (:data:`MANAGED_MAC_PREFIX`) are read
            back, so a kernel-chosen address never differs from ``None``.
    """

    name: str
    type: LinkType
    mtu: int | None = None
    up: bool = True
    master: str | None = None
    impl: str | None = None
    process: str | None = None
    vxlan: VxlanParams | None = None
    peer: VethPeer | None = None
    mac: str | None = None
    kind: ClassVar[str] = "link"
    rank: ClassVar[int] = 3

    def ident(self) -> tuple[Any, ...]:
        return (self.name,)

    def _ident_fields(self) -> tuple[str, ...]:
        return ("name",)

    def sub_rank(self) -> int:
        return {"loopback": 0, "bridge": 1, "external": 2}.get(self.type, 3)

    def depends(self) -> list[tuple[str, tuple[Any, ...]]]:
        deps: list[tuple[str, tuple[Any, ...]]] = []
        if self.master:
            deps.append(("link", (self.master,)))
        if self.process:
            deps.append(("process", (self.process,)))
        return deps

    def label(self) -> str:
        return f"link {self.name} ({self.type})"


@dataclass(frozen=True, slots=True)
class Address(Item):
    """An IPv4 or IPv6 address with its prefix length on an interface (``10.1.0.254/24``).

    IPv6 addresses are added without duplicate address detection (``nodad``).
    """

    ifname: str
    prefix: str
    kind: ClassVar[str] = "addr"
    rank: ClassVar[int] = 4

    def __post_init__(self) -> None:
        iface = ipaddress.ip_interface(self.prefix)
        object.__setattr__(self, "prefix", str(iface))

    @property
    def family(self) -> Family:
        """4 or 6."""
        return 4 if ipaddress.ip_interface(self.prefix).version == 4 else 6

    def ident(self) -> tuple[Any, ...]:
        return (self.ifname, self.prefix)

    def _ident_fields(self) -> tuple[str, ...]:
        return ("ifname", "prefix")

    def depends(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [("link", (self.ifname,))]

    def label(self) -> str:
        return f"address {self.prefix} on {self.ifname}"


@dataclass(frozen=True, slots=True)
class Seg6Encap:
    """``encap seg6``: steer into an SR policy (RFC 8986 §5.1 H.Encaps, §5.3 H.Insert).

    Attributes:
        mode: ``encap`` (outer IPv6 header + SRH), ``inline`` (SRH inserted, IPv6 only)
            or ``l2encap``.
        segs: the segment list in **travel order** (first SID visited first), as the
            ``ip`` command takes it; targets convert to wire order (RFC 8754 §2).
    """

    mode: str
    segs: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.mode not in SEG6_MODES:
            raise ValueError(f"unknown seg6 mode {self.mode!r}; known: {', '.join(SEG6_MODES)}")
        if not self.segs:
            raise ValueError("a segment list needs at least one SID")
        segs = tuple(str(ipaddress.IPv6Address(s)) for s in self.segs)
        object.__setattr__(self, "segs", segs)


@dataclass(frozen=True, slots=True)
class Seg6Local:
    """A ``seg6local`` SRv6 behaviour bound to a SID (RFC 8986 §4).

    Attributes:
        action: ``End``, ``End.X``, ``End.T``, ``End.DX4``, ``End.DX6``, ``End.DT6``...
        nh4: IPv4 next hop (End.DX4).
        nh6: IPv6 next hop (End.X, End.DX6).
        table: routing table (End.T, End.DT6).
    """

    action: str
    nh4: str | None = None
    nh6: str | None = None
    table: int | None = None

    def __post_init__(self) -> None:
        if self.action not in SEG6LOCAL_ACTIONS:
            raise ValueError(
                f"unknown seg6local action {self.action!r}; known: " + ", ".join(SEG6LOCAL_ACTIONS)
            )
        if self.nh6 is not None:
            object.__setattr__(self, "nh6", str(ipaddress.IPv6Address(self.nh6)))


RouteType = Literal["unicast", "unreachable", "blackhole", "prohibit"]


@dataclass(frozen=True, slots=True)
class Route(Item):
    """A route in any routing table, IPv4 or IPv6, optionally with an encapsulation.

    Attributes:
        dst: ``net/len``, ``default`` (IPv4) or ``default6`` (IPv6); normalised.
        table: routing table id (254 = main).
        metric: priority; ``None`` means the kernel's default for the family (0 or 1024).
        type: ``unicast``, ``unreachable``, ``blackhole`` or ``prohibit``.
        dev: outgoing interface (``unicast``).
        via: gateway address, or ``None`` for an on-link route.
        onlink: the gateway is on the link even without a matching prefix.
        encap: a :class:`Seg6Encap` or :class:`Seg6Local`, or ``None``.
        mtu: the path MTU of the route in bytes (``RTAX_MTU``), or ``None``.
        multipath: for an equal-cost multipath route, every outgoing interface (each
            on-link, weight 1; ``dev`` is the first); the kernel picks one per flow by
            hash (``net.ipv4.fib_multipath_hash_policy`` 1: layer 4). Empty otherwise.
    """

    dst: str
    table: int = MAIN_TABLE
    metric: int | None = None
    type: RouteType = "unicast"
    dev: str | None = None
    via: str | None = None
    onlink: bool = False
    encap: Seg6Encap | Seg6Local | None = None
    mtu: int | None = None
    multipath: tuple[str, ...] = ()
    family: Family = field(default=4, init=False)
    kind: ClassVar[str] = "route"
    rank: ClassVar[int] = 5

    def __post_init__(self) -> None:
        dst = _norm_prefix(self.dst)
        fam = family_of(dst)
        object.__setattr__(self, "dst", dst)
        object.__setattr__(self, "family", fam)
        if self.metric is None:
            m = IPV4_DEFAULT_METRIC if fam == 4 else IPV6_DEFAULT_METRIC
            object.__setattr__(self, "metric", m)
        if self.multipath:
            if len(self.multipath) < 2 or self.via or self.encap:
                raise ValueError(f"route {dst}: multipath needs 2+ devices, no via or encap")
            object.__setattr__(self, "dev", self.multipath[0])
        if self.type == "unicast" and self.dev is None:
            raise ValueError(f"route {dst}: a unicast route needs dev")

    def ident(self) -> tuple[Any, ...]:
        return (self.family, self.table, self.dst, self.metric)

    def _ident_fields(self) -> tuple[str, ...]:
        return ("family", "table", "dst", "metric")

    def depends(self) -> list[tuple[str, tuple[Any, ...]]]:
        if self.multipath:
            return [("link", (d,)) for d in self.multipath]
        return [("link", (self.dev,))] if self.dev else []

    def label(self) -> str:
        table = "" if self.table == MAIN_TABLE else f" table {self.table}"
        return f"route {self.dst}{table}"


@dataclass(frozen=True, slots=True)
class Rule(Item):
    """A policy routing rule (``ip rule``), identified by family and priority.

    Attributes:
        family: 4 or 6.
        priority: rule priority (lower first).
        table: the table to look up.
        iif, oif: incoming / outgoing interface selectors.
        src, dst: prefix selectors (``net/len``).
        fwmark: firewall mark selector.
        ipproto: IP protocol number selector (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
        sport, dport: transport port selectors (one port each).
    """

    family: Family
    priority: int
    table: int
    iif: str | None = None
    oif: str | None = None
    src: str | None = None
    dst: str | None = None
    fwmark: int | None = None
    ipproto: int | None = None
    sport: int | None = None
    dport: int | None = None
    kind: ClassVar[str] = "rule"
    rank: ClassVar[int] = 5

    def __post_init__(self) -> None:
        for name in ("src", "dst"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, str(ipaddress.ip_network(v, strict=False)))

    def ident(self) -> tuple[Any, ...]:
        return (self.family, self.priority)

    def _ident_fields(self) -> tuple[str, ...]:
        return ("family", "priority")

    def depends(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [("link", (d,)) for d in (self.iif, self.oif) if d]

    def label(self) -> str:
        return f"rule {self.priority} (IPv{self.family})"


@dataclass(frozen=True, slots=True)
class FdbEntry(Item):
    """A bridge forwarding entry on a VXLAN device: frames for ``mac`` go to ``dst``.

    ``00:00:00:00:00:00`` is the default entry (flooding: broadcast and unknown unicast go
    to every such ``dst``), the head-end replication of RFC 7348 §4.2 without multicast.
    """

    dev: str
    mac: str
    dst: str
    kind: ClassVar[str] = "fdb"
    rank: ClassVar[int] = 5

    def ident(self) -> tuple[Any, ...]:
        return (self.dev, self.mac.lower(), self.dst)

    def _ident_fields(self) -> tuple[str, ...]:
        return ("dev", "mac", "dst")

    def depends(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [("link", (self.dev,))]

    def label(self) -> str:
        return f"fdb {self.mac} dst {self.dst} on {self.dev}"


@dataclass(frozen=True, slots=True)
class Qdisc(Item):
    """The root queueing discipline of an interface.

    Attributes:
        dev: the interface.
        type: ``tbf`` (rate), ``netem`` (delay, and rate) or ``htb`` (a tree of
            :class:`TrafficClass` es, RFC-less but see tc-htb(8)).
        rate_bps: rate in bit/s, a multiple of 8 (the kernel keeps bytes/s).
        limit_bytes: tbf queue length in bytes.
        burst_bytes: tbf bucket size in bytes (not compared: the kernel keeps it in time
            units, so it does not read back exactly).
        delay_ms: netem one-way delay in ms.
        default_class: htb: the minor of the class unclassified packets go to.
    """

    dev: str
    type: Literal["tbf", "netem", "htb"]
    rate_bps: int | None = None
    limit_bytes: int | None = None
    burst_bytes: int | None = None
    delay_ms: float | None = None
    default_class: int | None = None
    parent: str = "root"
    kind: ClassVar[str] = "qdisc"
    rank: ClassVar[int] = 6
    _payload_fields: ClassVar[frozenset[str]] = frozenset({"burst_bytes"})

    def __post_init__(self) -> None:
        if self.rate_bps is not None and self.rate_bps % 8:
            raise ValueError(f"qdisc on {self.dev}: rate {self.rate_bps} bit/s is not whole bytes")

    def ident(self) -> tuple[Any, ...]:
        return (self.dev, self.parent)

    def _ident_fields(self) -> tuple[str, ...]:
        return ("dev", "parent")

    def depends(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [("link", (self.dev,))]

    def label(self) -> str:
        return f"qdisc {self.type} on {self.dev}"


@dataclass(frozen=True, slots=True)
class TrafficClass(Item):
    """A class of the ``htb`` root qdisc (handle ``1:``) of an interface (tc-htb(8)).

    Packets reach a leaf class when their priority (``skb->priority``, set by nftables
    ``meta priority set 1:MINOR``) names it; others go to the qdisc's default class.

    Attributes:
        dev: the interface.
        minor: the class id is ``1:minor`` (hex in tc's notation).
        parent: the parent class's minor, or ``0`` for the root.
        rate_bps: guaranteed rate in bit/s (whole bytes).
        ceil_bps: the most it may take when others are idle, bit/s (whole bytes).
    """

    dev: str
    minor: int
    parent: int
    rate_bps: int
    ceil_bps: int
    kind: ClassVar[str] = "class"
    rank: ClassVar[int] = 7

    def ident(self) -> tuple[Any, ...]:
        return (self.dev, self.minor)

    def _ident_fields(self) -> tuple[str, ...]:
        return ("dev", "minor")

    def sub_rank(self) -> int:
        return 0 if self.parent == 0 else 1

    def depends(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [("qdisc", (self.dev, "root"))]

    def label(self) -> str:
        return f"traffic class 1:{self.minor:x} on {self.dev}"


@dataclass(frozen=True, slots=True)
class NftTable(Item):
    """One nftables table, loaded whole from ``ruleset`` (``nft -f`` text).

    Compared on ``canonical``: the table as the kernel lists it (``nft -j``, handles
    removed), which the target computes for the desired text and reads for the live
    table. ``ruleset`` is the payload and is not compared as text.
    """

    family: str
    table: str
    ruleset: str = field(repr=False)
    canonical: str | None = field(default=None, repr=False)
    kind: ClassVar[str] = "nft"
    rank: ClassVar[int] = 6
    _payload_fields: ClassVar[frozenset[str]] = frozenset({"ruleset"})

    def ident(self) -> tuple[Any, ...]:
        return (self.family, self.table)

    def _ident_fields(self) -> tuple[str, ...]:
        return ("family", "table")

    def label(self) -> str:
        return f"nftables table {self.family} {self.table}"


@dataclass(frozen=True, slots=True)
class WireGuardConfig(Item):
    """The ``wg setconf`` configuration of a WireGuard interface.

    Compared on ``digest`` (its meaning: keys, port, peers, allowed IPs) and
    ``socket_buffer``; ``config`` is the payload (it holds the private key: never shown).

    Attributes:
        socket_buffer: receive and send buffer of a user-space implementation's UDP
            sockets, bytes (``SO_RCVBUF``/``SO_SNDBUF`` as set; the kernel reports twice
            that), or ``None`` to leave them (kernel WireGuard has no socket to tune).
    """

    ifname: str
    digest: str
    config: str = field(repr=False)
    socket_buffer: int | None = None
    kind: ClassVar[str] = "wgconf"
    rank: ClassVar[int] = 7
    _payload_fields: ClassVar[frozenset[str]] = frozenset({"config"})

    def ident(self) -> tuple[Any, ...]:
        return (self.ifname,)

    def _ident_fields(self) -> tuple[str, ...]:
        return ("ifname",)

    def depends(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [("link", (self.ifname,))]

    def label(self) -> str:
        return f"wireguard config of {self.ifname}"


@dataclass(frozen=True, slots=True)
class TunnelSource(Item):
    """The source address of the outer IPv6 header that SRv6 encapsulation (T.Encaps,
    RFC 8986 §5.1) writes on this node (``ip sr tunsrc``); one per node."""

    address: str
    kind: ClassVar[str] = "tunsrc"
    rank: ClassVar[int] = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", str(ipaddress.IPv6Address(self.address)))

    def ident(self) -> tuple[Any, ...]:
        return ()

    def label(self) -> str:
        return f"SRv6 tunnel source {self.address}"


KINDS: dict[str, type[Item]] = {
    c.kind: c
    for c in (
        Netns,
        Sysctl,
        Process,
        Link,
        Address,
        Route,
        Rule,
        FdbEntry,
        Qdisc,
        TrafficClass,
        NftTable,
        WireGuardConfig,
        TunnelSource,
    )
}
"""Item classes by kind."""


@dataclass
class NodeModel:
    """Everything one node must have, whatever the target.

    Attributes:
        items: the node's items; identities (kind, ident) must be unique.
    """

    items: list[Item] = field(default_factory=list)

    def add(self, *items: Item) -> NodeModel:
        """Append ``items``; returns ``self`` for chaining."""
        self.items.extend(items)
        return self

    def of(self, kind: type[Item]) -> list[Any]:
        """The items of one class, in order."""
        return [i for i in self.items if isinstance(i, kind)]

    def to_dict(self) -> dict[str, Any]:
        """The model as a document: ``{"items": [{"kind": K, FIELD: VALUE...}]}`` in
        order, payload fields (configuration texts, which may hold secrets) left out."""
        out = []
        for item in self.items:
            d: dict[str, Any] = {"kind": item.kind}
            for f in fields(item):  # type: ignore[arg-type]
                if f.name in type(item)._payload_fields:
                    continue
                v = getattr(item, f.name)
                d[f.name] = _plain(v)
            out.append(d)
        return {"items": out}


def _plain(v: Any) -> Any:
    if hasattr(v, "__dataclass_fields__"):
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v
