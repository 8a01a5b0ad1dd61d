"""SRv6 service chains: SIDs, segment lists, classification and the connector's mapping.

Pure; follows seed 002 (NFV node, SR/VNF connector, univocal mapping §II-C), seed 000
(chains across regions, IPv4-over-IPv6 and all-IPv6), RFC 8986 (behaviours) and RFC 9602
(the SID block ``5f00::/16``).

Addressing:

- each site owns ``5f00:A:B::/48`` (:func:`polynimbus.numbering.sid_block`); its gateway
  takes the locator ``5f00:A:B:1::/64`` and its NFV node ``5f00:A:B:2::/64``;
- gateway SIDs: ``...:1::d4`` End.DX4 and ``...:1::d6`` End.DX6 (decapsulate and deliver
  to the site, RFC 8986 §4.6/§4.5);
- function SIDs: ``5f00:A:B:2:F:C:0:D`` where ``F`` is the service's id, ``C`` the chain's
  and ``D`` the direction (1 forward, 2 reverse). An SR-aware function terminates its SID
  with End (RFC 8986 §4.1); an SR-unaware one sits behind the connector's static proxy
  (End.AS, emulated as End.DX4/End.DX6 towards the function and a re-encapsulation chosen
  by the interface the packet comes back on: docs/design.md, "Service chains with SRv6").

A decapsulating SID must be the last of its list, so a chain's segment list is cut after
each proxy SID into *sub-paths*: the ingress gateway pushes the first, each proxy the next.

Ids (service ``F``, chain ``C``, connector link ``k``) hash the names (SHA-256,
:func:`polynimbus.numbering.stable_id`): an id depends on its own name only, so adding or
removing a chain never renumbers the others; two names with one id are a validation
error (rename one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any

from polynimbus.errors import PlanError
from polynimbus.numbering import chain_id, id_collisions, link_id, service_id
from polynimbus.plan.mtu import IPV4_HEADER, IPV6_HEADER, TCP_HEADER

if TYPE_CHECKING:
    from polynimbus.intent.models import Intent
    from polynimbus.plan.model import SitePlan

SRH_FIXED = 8
"""Bytes of an SRH without segments (RFC 8754 §2)."""
SEGMENT = 16
"""Bytes per segment in an SRH."""

GATEWAY_LOCATOR = 1
NFV_LOCATOR = 2
DX4 = 0xD4
DX6 = 0xD6
RULE_BASE = 1000
"""Gateway classification rules and tables: ``RULE_BASE + 2*C + direction``."""
PROXY_BASE = 10000
"""Connector return rules and tables: ``PROXY_BASE + 2*k + side``."""
FUNCTION_BASE = 20000
"""Tables in an SR-unaware function's namespace: ``FUNCTION_BASE + 2*k + side``."""

NFV_LINK6 = IPv6Network("fdff:ffff::/64")
"""Gateway <-> NFV node link (``::1`` gateway, ``::2`` NFV node); never leaves the site."""
AWARE_LINK6 = "fdff:a:{f:x}::/64"
"""Connector <-> SR-aware function link (``::1`` connector, ``::2`` function)."""
UNAWARE_LINK6 = "fdff:b:{k:x}:{side}::/64"
"""Connector <-> SR-unaware function links, W (side 0) and E (side 1)."""
UNAWARE_LINK4 = IPv4Network("169.254.0.0/17")
"""IPv4 of the connector <-> function links: a /30 per side, ``2*k + side``."""
SELECTOR4 = IPv4Network("169.254.128.0/17")
"""Per (link, direction) next-hop selectors of End.DX4 (``nh4``), see docs/design.md."""
SELECTOR6 = "fdff:c::{k:x}:{d}"
"""Per (link, direction) next-hop selectors of End.DX6 (``nh6``)."""

DIRECTIONS = ("forward", "reverse")


def _ids(names: Iterable[str], fn: Callable[[str], int], what: str) -> dict[str, int]:
    """``fn(name)`` for each name (:func:`polynimbus.numbering.stable_id`).

    Raises:
        PlanError: two names share an id (validation reports it first, with its path).
    """
    out = {n: fn(n) for n in sorted(set(names))}
    clash = id_collisions(sorted((n, v) for n, v in out.items()))
    if clash:
        a, b = clash[0]
        raise PlanError(f"{what} {a!r} and {b!r} have the same id", "rename one of them")
    return out


def function_sid(block: str, fid: int, cid: int, direction: int) -> str:
    """``5f00:A:B:2:F:C:0:D`` (direction 1 forward, 2 reverse)."""
    base = int(IPv6Network(block).network_address) | (NFV_LOCATOR << 64)
    return str(IPv6Address(base | (fid << 48) | (cid << 32) | direction))


def gateway_sid(block: str, behaviour: int) -> str:
    """``5f00:A:B:1::d4`` (End.DX4) or ``...::d6`` (End.DX6)."""
    base = int(IPv6Network(block).network_address) | (GATEWAY_LOCATOR << 64)
    return str(IPv6Address(base | behaviour))


def locator(block: str, which: int) -> str:
    """The /64 locator ``which`` (1 gateway, 2 NFV node) of SID block ``block``."""
    base = int(IPv6Network(block).network_address) | (which << 64)
    return str(IPv6Network((base, 64)))


@dataclass(frozen=True, slots=True)
class SidPlan:
    """One SID and what it does.

    Attributes:
        sid: the address.
        site: its site.
        node: ``gateway``, ``nfv`` or the service's name (an SR-aware function).
        behaviour: ``End``, ``End.DX4``, ``End.DX6`` or ``End.AS`` (static proxy,
            emulated: decapsulate to the function, re-encapsulate on return).
        service, chain, direction: what it serves (``None`` for a gateway's).
    """

    sid: str
    site: str
    node: str
    behaviour: str
    service: str | None = None
    chain: str | None = None
    direction: str | None = None


@dataclass(frozen=True, slots=True)
class ProxyLink:
    """An SR-unaware function's interface pair for one chain (seed 002 §II-C, W and E).

    Forward traffic enters the function on W and leaves on E; reverse traffic the other
    way. Names are per namespace: ``cKKKw``/``cKKKe`` on the NFV node, ``wKKK``/``eKKK`` in
    the function (``KKK`` the link id in hex).

    Attributes:
        service, chain: names.
        k: link id, unique on the NFV node.
        nfv_if, fn_if: ``(W, E)`` interface names on each side.
        nfv4, fn4: ``(W, E)`` IPv4 addresses with prefix length (``/30``).
        nfv6, fn6: ``(W, E)`` IPv6 addresses with prefix length (``/64``).
        selector4, selector6: next-hop selectors per direction (forward, reverse).
    """

    service: str
    chain: str
    k: int
    nfv_if: tuple[str, str]
    fn_if: tuple[str, str]
    nfv4: tuple[str, str]
    fn4: tuple[str, str]
    nfv6: tuple[str, str]
    fn6: tuple[str, str]
    selector4: tuple[str, str]
    selector6: tuple[str, str]


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """A network function (see :class:`polynimbus.intent.models.ServiceSpec`).

    Attributes:
        fid: its id (16 bits in SIDs).
        links: for SR-unaware functions, one :class:`ProxyLink` per chain through it.
        aware_if: the connector's interface to an SR-aware function (``aNNNN``).
        aware6: ``(connector, function)`` IPv6 of that link, with prefix length.
    """

    name: str
    site: str
    mode: str
    function: str
    rules: tuple[str, ...]
    command: tuple[str, ...]
    forward: bool
    families: tuple[str, ...]
    fid: int
    links: tuple[ProxyLink, ...] = ()
    aware_if: str = ""
    aware6: tuple[str, str] = ("", "")


@dataclass(frozen=True, slots=True)
class Hop:
    """One stop of a chain direction: ``kind`` ``function`` or ``egress``."""

    kind: str
    site: str
    node: str
    sid: str
    behaviour: str


@dataclass(frozen=True, slots=True)
class ChainDirection:
    """One direction of a chain, from the gateway that classifies it to the one that
    decapsulates it.

    Attributes:
        chain, direction: ``direction`` is ``forward`` or ``reverse`` (replies).
        family: ``ipv4`` or ``ipv6`` (the inner packets).
        ingress, egress: site names.
        src, dst: the classified prefixes (inner addresses).
        protocol: ``tcp``/``udp``/``icmp`` or ``None``; dport, sport: ports or ``None``.
        hops: the functions in order, then the egress decapsulation.
        segments: the whole segment list, in travel order.
        subpaths: ``[(pusher, segments)]``: who encapsulates (``gateway`` or a service's
            name) and with which list (travel order; the last SID decapsulates).
        table, priority: the ingress gateway's classification table and rule priority.
        mss: the TCP MSS clamped for the chain's endpoints, bytes.
        path_mtu: the largest inner packet the chain carries, bytes: the carrier MTU minus
            the longest sub-path's encapsulation (the endpoints' hosts get it as the MTU
            of their route to each other, so larger packets are fragmented or refused at
            the source instead of being lost on the way).
    """

    chain: str
    direction: str
    family: str
    ingress: str
    egress: str
    src: tuple[str, ...]
    dst: tuple[str, ...]
    protocol: str | None
    dport: int | None
    sport: int | None
    hops: tuple[Hop, ...]
    segments: tuple[str, ...]
    subpaths: tuple[tuple[str, tuple[str, ...]], ...]
    table: int
    priority: int
    mss: int
    path_mtu: int


@dataclass(frozen=True, slots=True)
class SRv6Plan:
    """Everything SRv6 in a plan.

    Attributes:
        carrier: ``tunnels`` or ``underlay``.
        blocks: SID block per site name.
        nfv_sites: sites with an NFV node (those with services), in file order.
        services: in file order.
        chains: every direction of every chain, in file order.
        sids: every SID, gateways first, in site order.
    """

    carrier: str
    blocks: dict[str, str]
    nfv_sites: tuple[str, ...]
    services: tuple[ServicePlan, ...]
    chains: tuple[ChainDirection, ...]
    sids: tuple[SidPlan, ...] = field(default=())

    def service(self, name: str) -> ServicePlan:
        """The service called ``name``.

        Raises:
            KeyError: no such service.
        """
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def chain_names(self) -> list[str]:
        """Chain names in file order."""
        out: list[str] = []
        for c in self.chains:
            if c.chain not in out:
                out.append(c.chain)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``srv6`` part of ``plan --json`` (docs/plan-schema.md)."""
        return {
            "carrier": self.carrier,
            "sid_blocks": dict(self.blocks),
            "nfv_sites": list(self.nfv_sites),
            "sids": [
                {
                    "sid": s.sid,
                    "site": s.site,
                    "node": s.node,
                    "behaviour": s.behaviour,
                    "service": s.service,
                    "chain": s.chain,
                    "direction": s.direction,
                }
                for s in self.sids
            ],
            "services": [
                {
                    "name": s.name,
                    "site": s.site,
                    "mode": s.mode,
                    "function": s.function,
                    "families": list(s.families),
                    "interfaces": [
                        {"chain": link.chain, "w": link.fn_if[0], "e": link.fn_if[1]}
                        for link in s.links
                    ],
                }
                for s in self.services
            ],
            "chains": [
                {
                    "chain": c.chain,
                    "direction": c.direction,
                    "family": c.family,
                    "ingress": c.ingress,
                    "egress": c.egress,
                    "src": list(c.src),
                    "dst": list(c.dst),
                    "protocol": c.protocol,
                    "dport": c.dport,
                    "sport": c.sport,
                    "segments": list(c.segments),
                    "subpaths": [{"pusher": p, "segments": list(s)} for p, s in c.subpaths],
                    "tcp_mss": c.mss,
                    "path_mtu": c.path_mtu,
                }
                for c in self.chains
            ],
        }


def encap_overhead(n_segments: int) -> int:
    """Bytes T.Encaps adds for ``n_segments`` SIDs: outer IPv6 40 + SRH 8 + 16 each."""
    return IPV6_HEADER + SRH_FIXED + SEGMENT * n_segments


def chain_mss(
    carrier_mtu: int, subpaths: Iterable[tuple[str, tuple[str, ...]]], family: str
) -> int:
    """Largest TCP payload through a chain: the carrier MTU minus the longest
    sub-path's encapsulation, the inner IP header and TCP's (bytes)."""
    longest = max(len(s) for _, s in subpaths)
    inner = IPV4_HEADER if family == "ipv4" else IPV6_HEADER
    return carrier_mtu - encap_overhead(longest) - inner - TCP_HEADER


def split_subpaths(
    pushers: list[str], segments: list[str], proxies: set[int]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Cut ``segments`` after each proxy SID (indices in ``proxies``).

    ``pushers[0]`` pushes the first sub-path; the proxy ending sub-path ``j`` pushes
    sub-path ``j + 1`` (``pushers[j + 1]``).
    """
    out: list[tuple[str, tuple[str, ...]]] = []
    current: list[str] = []
    who = 0
    for i, sid in enumerate(segments):
        current.append(sid)
        if i in proxies:
            out.append((pushers[who], tuple(current)))
            current = []
            who += 1
    if current:
        out.append((pushers[who], tuple(current)))
    return tuple(out)


def unaware_link(service: str, chain: str, k: int) -> ProxyLink:
    """The addresses and names of link ``k`` (see :class:`ProxyLink`)."""
    base4 = int(UNAWARE_LINK4.network_address)
    nfv4, fn4, nfv6, fn6, sel4, sel6 = [], [], [], [], [], []
    for side in (0, 1):
        net = base4 + 4 * (2 * k + side)
        nfv4.append(f"{IPv4Address(net + 1)}/30")
        fn4.append(f"{IPv4Address(net + 2)}/30")
        p6 = IPv6Network(UNAWARE_LINK6.format(k=k, side=side))
        nfv6.append(f"{p6.network_address + 1}/64")
        fn6.append(f"{p6.network_address + 2}/64")
        sel4.append(str(IPv4Address(int(SELECTOR4.network_address) + 2 * k + side)))
        sel6.append(str(IPv6Address(SELECTOR6.format(k=k, d=side + 1))))
    return ProxyLink(
        service=service,
        chain=chain,
        k=k,
        nfv_if=(f"c{k:03x}w", f"c{k:03x}e"),
        fn_if=(f"w{k:03x}", f"e{k:03x}"),
        nfv4=(nfv4[0], nfv4[1]),
        fn4=(fn4[0], fn4[1]),
        nfv6=(nfv6[0], nfv6[1]),
        fn6=(fn6[0], fn6[1]),
        selector4=(sel4[0], sel4[1]),
        selector6=(sel6[0], sel6[1]),
    )


def link_ids(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Link id ``k`` per ``(service, chain)`` on one NFV node (12 bits).

    Raises:
        PlanError: two links of the node share an id.
    """
    keyed = {f"{s}|{c}": (s, c) for s, c in pairs}
    ids = _ids(keyed, lambda key: link_id(*keyed[key]), "connector links")
    return {keyed[n]: v for n, v in ids.items()}


def service_ids(names: Iterable[str]) -> dict[str, int]:
    """Service id ``F`` per name (16 bits; 5th group of its SIDs)."""
    return _ids(names, service_id, "services")


def chain_ids(names: Iterable[str]) -> dict[str, int]:
    """Chain id ``C`` per name (13 bits: rules, tables and SIDs)."""
    return _ids(names, chain_id, "chains")


def _endpoint(value: str, sites: dict[str, SitePlan], family: str) -> tuple[str, tuple[str, ...]]:
    """(site, prefixes) of a chain endpoint ``SITE/HOST`` or ``SITE``."""
    site_name, _, host = value.partition("/")
    site = sites[site_name]
    if family == "ipv4":
        if host:
            h = next(h for h in site.hosts if h.name == host)
            return site_name, (f"{h.address}/32",)
        return site_name, (site.block,)
    if host:
        h = next(h for h in site.hosts if h.name == host)
        return site_name, (f"{h.address6}/128",)
    assert site.block6 is not None
    return site_name, (site.block6,)


def build_srv6(intent: Intent, sites: tuple[SitePlan, ...], carrier_mtu: int) -> SRv6Plan:
    """The SRv6 part of the plan for a validated ``intent``.

    Args:
        sites: the planned sites (with their IPv6 numbering and SID blocks).
        carrier_mtu: MTU in bytes of the path the SRv6 packets take between gateways
            (the tunnel MTU with ``carrier: tunnels``, the underlay MTU otherwise).
    """
    by_name = {s.name: s for s in sites}
    blocks = {s.name: s.sid_block for s in sites if s.sid_block}
    fids = service_ids(s.name for s in intent.services)
    cids = chain_ids(c.name for c in intent.chains)
    specs = {s.name: s for s in intent.services}

    # Connector links: one per (sr-unaware service, chain through it), per NFV node.
    pairs_by_site: dict[str, list[tuple[str, str]]] = {}
    for c in intent.chains:
        for name in c.through:
            svc = specs[name]
            if svc.mode == "sr-unaware":
                pairs_by_site.setdefault(svc.site, []).append((name, c.name))
    links: dict[tuple[str, str], ProxyLink] = {}
    for pairs in pairs_by_site.values():
        for (svc_name, chain_name), k in link_ids(pairs).items():
            links[(svc_name, chain_name)] = unaware_link(svc_name, chain_name, k)

    services = []
    for spec in intent.services:
        fid = fids[spec.name]
        command: tuple[str, ...] = ()
        if spec.command:
            import shlex

            command = tuple(
                shlex.split(spec.command) if isinstance(spec.command, str) else spec.command
            )
        services.append(
            ServicePlan(
                name=spec.name,
                site=spec.site,
                mode=spec.mode,
                function=spec.function,
                rules=tuple(spec.rules),
                command=command,
                forward=spec.forward,
                families=tuple(spec.families),
                fid=fid,
                links=tuple(
                    links[(spec.name, c.name)]
                    for c in intent.chains
                    if (spec.name, c.name) in links
                ),
                aware_if=f"a{fid:04x}" if spec.mode == "sr-aware" else "",
                aware6=(
                    f"{IPv6Network(AWARE_LINK6.format(f=fid)).network_address + 1}/64",
                    f"{IPv6Network(AWARE_LINK6.format(f=fid)).network_address + 2}/64",
                )
                if spec.mode == "sr-aware"
                else ("", ""),
            )
        )

    sids: list[SidPlan] = []
    for s in sites:
        if s.sid_block is None:
            continue
        sids.append(SidPlan(gateway_sid(s.sid_block, DX4), s.name, "gateway", "End.DX4"))
        sids.append(SidPlan(gateway_sid(s.sid_block, DX6), s.name, "gateway", "End.DX6"))

    directions: list[ChainDirection] = []
    function_sids: list[SidPlan] = []
    for c in intent.chains:
        cid = cids[c.name]
        src_site, src = _endpoint(c.source, by_name, c.family)
        dst_site, dst = _endpoint(c.to, by_name, c.family)
        protocol = c.match.protocol if c.match else None
        port = c.match.port if c.match else None
        todo: list[
            tuple[
                int, str, str, tuple[str, ...], tuple[str, ...], list[str], int | None, int | None
            ]
        ] = [(0, src_site, dst_site, src, dst, list(c.through), port, None)]
        if c.symmetric:
            todo.append((1, dst_site, src_site, dst, src, list(reversed(c.through)), None, port))
        for d, ingress, egress, s_pref, d_pref, through, dport, sport in todo:
            segments: list[str] = []
            pushers = ["gateway"]
            proxies: set[int] = set()
            hops: list[Hop] = []
            for name in through:
                spec = specs[name]
                block = blocks[spec.site]
                sid = function_sid(block, fids[name], cid, d + 1)
                if spec.mode == "sr-unaware":
                    behaviour, node = "End.AS", "nfv"
                    proxies.add(len(segments))
                    pushers.append(name)
                else:
                    behaviour, node = "End", name
                segments.append(sid)
                hops.append(Hop("function", spec.site, name, sid, behaviour))
                function_sids.append(
                    SidPlan(sid, spec.site, node, behaviour, name, c.name, DIRECTIONS[d])
                )
            last = "End.DX4" if c.family == "ipv4" else "End.DX6"
            egress_sid = gateway_sid(blocks[egress], DX4 if c.family == "ipv4" else DX6)
            segments.append(egress_sid)
            hops.append(Hop("egress", egress, "gateway", egress_sid, last))
            subpaths = split_subpaths(pushers, segments, proxies)
            directions.append(
                ChainDirection(
                    chain=c.name,
                    direction=DIRECTIONS[d],
                    family=c.family,
                    ingress=ingress,
                    egress=egress,
                    src=s_pref,
                    dst=d_pref,
                    protocol=protocol,
                    dport=dport,
                    sport=sport,
                    hops=tuple(hops),
                    segments=tuple(segments),
                    subpaths=subpaths,
                    table=RULE_BASE + 2 * cid + d,
                    priority=RULE_BASE + 2 * cid + d,
                    mss=chain_mss(carrier_mtu, subpaths, c.family),
                    path_mtu=carrier_mtu - encap_overhead(max(len(s) for _, s in subpaths)),
                )
            )
    sids += sorted(function_sids, key=lambda x: (x.site, x.sid))
    nfv_sites = tuple(s.name for s in sites if any(v.site == s.name for v in intent.services))
    return SRv6Plan(
        carrier=intent.carrier,
        blocks=blocks,
        nfv_sites=nfv_sites,
        services=tuple(services),
        chains=tuple(directions),
        sids=tuple(sids),
    )
