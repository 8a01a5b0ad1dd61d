"""SRv6 service chains as node models (pure): the gateways' part, the NFV node, the
functions. Wherever they run; the lab's scaffold only wires them.

- **Gateway** (seed 002's edge router): dual-stack LAN; its SIDs End.DX4 and End.DX6
  (RFC 8986 §4.6, §4.5: decapsulate, route on the inner destination); one policy rule per
  chain direction it is the ingress of (``iif lan0``, source, destination, protocol,
  port; ``ip rule`` selectors) looking up a table whose route pushes the first sub-path
  (T.Encaps, RFC 8986 §5.1); the SR domain closed at its edge (RFC 8754 §5.1: SRv6 to
  ``5f00::/16`` from the internet or the LAN is dropped; with ``carrier: underlay`` only
  the peers' public addresses may send it); counters per SID and per classifier for
  ``verify`` and ``trace``; the MSS of chain endpoints clamped for the extra headers.
- **NFV node** (seed 002 §III): the SR/VNF connector. SR-aware functions' SIDs are routed
  to them; each SR-unaware function's SIDs are an emulated End.AS static proxy: End.DX4 or
  End.DX6 towards the function's interface for that chain and direction (W for forward
  traffic, E for replies), with a next-hop selector (docs/design.md, SRv6); what comes
  back on the other interface of the pair is matched by ``ip rule iif`` and
  re-encapsulated with the rest of the segment list (univocal mapping, seed 002 §II-C).
- **Function**: SR-aware: End on its SIDs; SR-unaware: IP forwarding with policy routing,
  so a packet that came in on W leaves by E and the other way round; a firewall's rules
  in a forward chain; counters per chain and direction.
"""

from __future__ import annotations

from ipaddress import IPv6Network, ip_interface

from polynimbus import names
from polynimbus.node import (
    Address,
    Item,
    Link,
    NftTable,
    NodeModel,
    Process,
    Route,
    Rule,
    Seg6Encap,
    Seg6Local,
    Sysctl,
    TunnelSource,
)
from polynimbus.numbering import SID_SPACE
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.plan.srv6 import (
    DX4,
    DX6,
    FUNCTION_BASE,
    NFV_LINK6,
    NFV_LOCATOR,
    PROXY_BASE,
    ChainDirection,
    ServicePlan,
    gateway_sid,
    locator,
)

FUNCTION_TABLE = "pn-function"
"""nftables table (``inet``) in a function's namespace: its counters and rules."""
GATEWAY_SRV6_TABLE = "pn-srv6"
"""nftables table (``inet``) of a gateway's SRv6 chains: SR domain filter, marks,
conntrack bypass, MSS clamps, counters."""
NFV_TABLE = "pn-nfv"
"""nftables table (``inet``) on an NFV node: counters per SID."""
DECAP_MARK = 0x5F6
"""Firewall mark a gateway puts on packets to its decapsulating SIDs, so that their inner
packets may be forwarded to the LAN whatever interface they arrived on."""
PROTOCOLS = {"tcp": 6, "udp": 17}
LINK_ICMPV6 = (
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "mld-listener-query",
    "mld-listener-report",
    "mld2-listener-report",
)
GW_NFV = str(NFV_LINK6.network_address + 1)
NFV_GW = str(NFV_LINK6.network_address + 2)


def _ipproto(protocol: str | None, family: str) -> int | None:
    if protocol is None:
        return None
    if protocol == "icmp":
        return 1 if family == "ipv4" else 58
    return PROTOCOLS[protocol]


def _addr(prefixed: str) -> str:
    return str(ip_interface(prefixed).ip)


def _nft_match(c: ChainDirection, src: str, dst: str) -> str:
    """nft selectors of one classifier (inner addresses, protocol, ports)."""
    fam = "ip" if c.family == "ipv4" else "ip6"
    out = f"{fam} saddr {src} {fam} daddr {dst}"
    if c.protocol == "icmp":
        out += " meta l4proto " + ("icmp" if c.family == "ipv4" else "ipv6-icmp")
    elif c.protocol:
        out += f" meta l4proto {c.protocol}"
        if c.dport:
            out += f" th dport {c.dport}"
        if c.sport:
            out += f" th sport {c.sport}"
    return out


def tunnel_source(plan: Plan, site: SitePlan, node: str) -> str:
    """The outer source address of ``node`` (``gateway`` or ``nfv``) in ``site``: the
    gateway's public IPv6 with ``carrier: underlay`` (so that peers' SR domain filters
    admit it), else ``::1`` of the node's locator."""
    assert plan.srv6 is not None and site.sid_block is not None
    if plan.srv6.carrier == "underlay" and site.public_address6:
        return site.public_address6
    which = 1 if node == "gateway" else NFV_LOCATOR
    return str(IPv6Network(locator(site.sid_block, which)).network_address + 1)


def counter_comment(*parts: str) -> str:
    """The comment that names a counter rule (``verify`` and ``trace`` read it back)."""
    return "pn " + " ".join(parts)


def gateway_srv6(
    plan: Plan, site: SitePlan, wan_if: str, tun_pattern: str, checks_source: bool = True
) -> tuple[list[Item], str, str]:
    """A gateway's dual-stack and SRv6 items.

    Everything that depends on the chains is in the items (routes, rules, the ``inet
    pn-srv6`` table); the two texts for the gateway's own ``inet polynimbus`` table only
    depend on the site having SRv6 (so adding or removing a chain never reloads it).

    Args:
        tun_pattern: the tunnel interfaces as nftables matches them.
        checks_source: whether the transport admits only its peer's source addresses
            (WireGuard's AllowedIPs): then SRv6 leaving by a tunnel gets this gateway's
            source (End keeps the outer source of whoever encapsulated; the SRH does not
            cover it).

    Returns:
        ``(items, forward_rules, input_rules)``: node model items, and rules for the
        gateway table's forward and input chains
        (:func:`polynimbus.render.nftables.render_gateway_ruleset`).
    """
    items: list[Item] = []
    lan = names.LAN_BRIDGE
    if plan.ipv6 or plan.srv6 is not None:
        items.append(Sysctl("net.ipv6.conf.all.forwarding", "1"))
    if site.gateway_address6 and site.block6:
        plen = IPv6Network(site.block6).prefixlen
        items.append(Address(lan, f"{site.gateway_address6}/{plen}"))
    sr = plan.srv6
    if sr is None or site.sid_block is None:
        return items, "", ""
    # an SRH addressed to one of the gateway's own addresses is never processed
    items.append(Sysctl("net.ipv6.conf.all.seg6_enabled", "0"))
    if site.public_address6 and site.internet_address6:
        items += [
            Address(wan_if, f"{site.public_address6}/64"),
            Route("default6", dev=wan_if, via=site.internet_address6),
        ]
    source = tunnel_source(plan, site, "gateway")
    items.append(TunnelSource(source))
    dx4, dx6 = gateway_sid(site.sid_block, DX4), gateway_sid(site.sid_block, DX6)
    items += [
        Route(f"{dx4}/128", dev=lan, encap=Seg6Local("End.DX4", nh4="0.0.0.0")),
        Route(f"{dx6}/128", dev=lan, encap=Seg6Local("End.DX6", nh6="::")),
    ]
    has_nfv = site.name in sr.nfv_sites
    if has_nfv:
        items += [
            Address(names.NFV_IF, f"{GW_NFV}/64"),
            Route(locator(site.sid_block, NFV_LOCATOR), dev=names.NFV_IF, via=NFV_GW),
        ]
    # Ingress classification (seed 002's edge router), counters and per-chain rules.
    encap_dev = wan_if  # the outer packet is routed again on its own destination
    ingress: list[str] = []
    egress: list[str] = []
    clamps: list[str] = []
    untracked: list[str] = []
    for c in sr.chains:
        fam = 4 if c.family == "ipv4" else 6
        src, dst = c.src[0], c.dst[0]
        if c.ingress == site.name:
            first = c.subpaths[0][1]
            items += [
                Rule(
                    family=fam,  # type: ignore[arg-type]
                    priority=c.priority,
                    table=c.table,
                    iif=lan,
                    src=src,
                    dst=dst,
                    ipproto=_ipproto(c.protocol, c.family),
                    dport=c.dport,
                    sport=c.sport,
                ),
                Route(dst, table=c.table, dev=encap_dev, encap=Seg6Encap("encap", first)),
            ]
            # the outer packet, on its first SID (one per chain and direction)
            ingress.append(
                f'\t\tiifname "{lan}" ip6 daddr {first[0]} counter comment '
                f'"{counter_comment("ingress", c.chain, c.direction)}"'
            )
        if c.egress == site.name:
            # the inner packet, decapsulated here (marked), with the chain's selectors
            egress.append(
                f"\t\tmeta mark {DECAP_MARK:#x} {_nft_match(c, src, dst)} counter comment "
                f'"{counter_comment("egress", c.chain, c.direction)}"'
            )
        if site.name in (c.ingress, c.egress):
            kw = "ip" if c.family == "ipv4" else "ip6"
            for a, b in ((src, dst), (dst, src)):
                clamp = (
                    f"\t\t{kw} saddr {a} {kw} daddr {b} tcp flags syn / syn,rst "
                    f"tcp option maxseg size > {c.mss} tcp option maxseg size set "
                    f'{c.mss} comment "MSS clamp, chain {c.chain}"'
                )
                if clamp not in clamps:
                    clamps.append(clamp)
                untrack = (
                    f"\t\t{kw} saddr {a} {kw} daddr {b} notrack comment "
                    f'"chain {c.chain}: traffic between its endpoints bypasses conntrack"'
                )
                if untrack not in untracked:
                    untracked.append(untrack)
    marks = [
        f"\t\tip6 daddr {sid} meta mark set {DECAP_MARK:#x} counter comment "
        f'"{counter_comment("sid", sid, behaviour)}"'
        for sid, behaviour in ((dx4, "End.DX4"), (dx6, "End.DX6"))
    ]
    if sr.carrier == "underlay":
        peers = sorted(
            s.public_address6
            for s in plan.sites
            if s.name != site.name and s.public_address6 and s.sid_block
        )
        allowed = f"ip6 saddr != {{ {', '.join(peers)} }} " if peers else ""
        closure = [
            f'\t\tiifname "{wan_if}" ip6 daddr {SID_SPACE} {allowed}counter drop '
            'comment "SR domain: SRv6 only from peer gateways (RFC 8754 5.1)"'
        ]
    else:
        closure = [
            f'\t\tiifname "{wan_if}" ip6 daddr {SID_SPACE} counter drop '
            'comment "SR domain: SRv6 only through the tunnels (RFC 8754 5.1)"'
        ]
    closure.append(
        f'\t\tiifname "{lan}" ip6 daddr {SID_SPACE} counter drop '
        'comment "SR domain: hosts are not SR nodes"'
    )
    table = (
        f"table inet {GATEWAY_SRV6_TABLE} {{\n"
        '\tcomment "managed by polynimbus: SRv6 chains of this gateway"\n\n'
        "\tchain prerouting {\n"
        "\t\ttype filter hook prerouting priority raw; policy accept;\n"
        + "\n".join(closure + marks + untracked)
        + "\n\t}\n\n"
        "\tchain mss {\n"
        "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
        + ("\n".join(clamps) if clamps else "\t\t# no chain starts or ends here")
        + "\n\t}\n\n"
        "\tchain counters {\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        + ("\n".join(ingress + egress) if ingress or egress else "\t\t# no chain here")
        + "\n\t}\n"
        "}\n"
    )
    items.append(NftTable("inet", GATEWAY_SRV6_TABLE, table))
    forward = []
    if sr.carrier == "tunnels" and checks_source:
        forward.append(
            f'\t\toifname "{tun_pattern}" ip6 daddr {SID_SPACE} ip6 saddr set {source} '
            'comment "SRv6 leaves with our source: the tunnel admits only ours"'
        )
    forward += [
        f'\t\tmeta mark {DECAP_MARK:#x} oifname "{lan}" accept comment "decapsulated by a SID"',
        f'\t\tiifname {{ "{lan}", "{tun_pattern}" }} ip6 daddr {SID_SPACE} accept '
        f'comment "SRv6 (the SR domain is closed in table {GATEWAY_SRV6_TABLE})"',
    ]
    accept_nfv = ""
    if has_nfv:
        forward += [
            f'\t\tiifname "{names.NFV_IF}" accept comment "from the NFV node"',
            f'\t\toifname "{names.NFV_IF}" ip6 daddr {SID_SPACE} accept comment "to the NFV node"',
        ]
        accept_nfv = f'\t\tiifname "{names.NFV_IF}" accept\n'
    return items, "\n".join(forward) + "\n", accept_nfv


def host_routes(
    plan: Plan, site: SitePlan, host_address: str, host_address6: str | None
) -> list[Item]:
    """Routes of one host towards the other ends of its chains, with the chain's path MTU
    (so a too-large packet is fragmented or refused at the source, with PMTU discovery,
    instead of being dropped after encapsulation, where its sender would never hear)."""
    from ipaddress import ip_address, ip_network

    sr = plan.srv6
    if sr is None:
        return []
    ends: list[tuple[str, int]] = []
    for c in sr.chains:
        mine = host_address if c.family == "ipv4" else host_address6
        if mine is None:
            continue
        # each direction from its sender (a symmetric chain's replies have their own)
        if ip_address(mine) in ip_network(c.src[0]):
            ends.append((c.dst[0], c.path_mtu))
    # a route covers what no more specific route takes: its MTU is the smallest of the
    # chains whose far end contains it (a /32 inside a chained /24 gets the /24's too)
    best: dict[str, int] = {}
    for dst, _ in ends:
        net = ip_network(dst)
        best[dst] = min(
            m
            for there, m in ends
            if ip_network(there).version == net.version and net.subnet_of(ip_network(there))  # type: ignore[arg-type]
        )
    out: list[Item] = []
    for dst, mtu in sorted(best.items()):
        v6 = ":" in dst
        via = site.gateway_address6 if v6 else site.gateway_address
        assert via is not None
        out.append(Route(dst, dev=names.HOST_IF, via=via, mtu=mtu))
    return out


def _direction_segments(c: ChainDirection, pusher: str) -> tuple[str, ...]:
    for who, segs in c.subpaths:
        if who == pusher:
            return segs
    raise KeyError(pusher)


def render_nfv(plan: Plan, site: SitePlan) -> NodeModel:
    """The NFV node of ``site``: the SR/VNF connector (seed 002 §III).

    Raises:
        ValueError: the plan has no SRv6 part or ``site`` no SID block.
    """
    sr = plan.srv6
    if sr is None or site.sid_block is None:
        raise ValueError(f"site {site.name} has no SRv6 plan")
    core = names.CORE_IF
    model = NodeModel().add(
        Sysctl("net.ipv4.ip_forward", "1"),
        Sysctl("net.ipv6.conf.all.forwarding", "1"),
        Sysctl("net.ipv4.conf.all.rp_filter", "0"),
        Sysctl("net.ipv4.conf.default.rp_filter", "0"),
        Link("lo", "loopback"),
        Address(core, f"{NFV_GW}/64"),
        Route("default6", dev=core, via=GW_NFV),
        TunnelSource(tunnel_source(plan, site, "nfv")),
    )
    counters: list[str] = []
    by_chain: dict[str, list[ChainDirection]] = {}
    for c in sr.chains:
        by_chain.setdefault(c.chain, []).append(c)
    for svc in sr.services:
        if svc.site != site.name:
            continue
        if svc.mode == "sr-aware":
            prefix = IPv6Network(locator(site.sid_block, NFV_LOCATOR))
            fprefix = IPv6Network((int(prefix.network_address) | (svc.fid << 48), 80))
            model.add(
                Address(svc.aware_if, svc.aware6[0]),
                Route(str(fprefix), dev=svc.aware_if, via=_addr(svc.aware6[1])),
            )
            continue
        for link in svc.links:
            for side in (0, 1):
                model.add(
                    Address(link.nfv_if[side], link.nfv4[side]),
                    Address(link.nfv_if[side], link.nfv6[side]),
                )
            for c in by_chain.get(link.chain, []):
                d = 0 if c.direction == "forward" else 1
                into, back = (0, 1) if d == 0 else (1, 0)  # forward enters W, leaves E
                hop = next(h for h in c.hops if h.node == svc.name)
                v4 = c.family == "ipv4"
                sel = (link.selector4 if v4 else link.selector6)[d]
                fn_addr = _addr((link.fn4 if v4 else link.fn6)[into])
                proxy = Seg6Local("End.DX4", nh4=sel) if v4 else Seg6Local("End.DX6", nh6=sel)
                model.add(
                    Route(f"{sel}/{32 if v4 else 128}", dev=link.nfv_if[into], via=fn_addr),
                    Route(f"{hop.sid}/128", dev=link.nfv_if[into], encap=proxy),
                )
                table = PROXY_BASE + 2 * link.k + back
                fam = 4 if c.family == "ipv4" else 6
                rest = _direction_segments(c, svc.name)
                # only what goes to the chain's destination: End.DX4/DX6 of a next proxy
                # on this node looks its selector up with this same incoming interface
                model.add(
                    Rule(
                        family=fam,  # type: ignore[arg-type]
                        priority=table,
                        table=table,
                        iif=link.nfv_if[back],
                        dst=c.dst[0],
                    ),
                    Route(
                        "default" if fam == 4 else "default6",
                        table=table,
                        dev=core,
                        encap=Seg6Encap("encap", rest),
                    ),
                )
                counters.append(
                    f'\t\tip6 daddr {hop.sid} counter comment "'
                    f'{counter_comment("sid", hop.sid, "End.AS", svc.name, c.chain, c.direction)}"'
                )
                for src in c.src:
                    for dst in c.dst:
                        counters.append(
                            f'\t\tiifname "{link.nfv_if[back]}" {_nft_match(c, src, dst)} '
                            f'counter comment "'
                            f'{counter_comment("return", svc.name, c.chain, c.direction)}"'
                        )
    for c in sr.chains:
        for h in c.hops:
            if h.site == site.name and h.behaviour == "End":
                counters.append(
                    f'\t\tip6 daddr {h.sid} counter comment "'
                    f'{counter_comment("sid", h.sid, "End", h.node, c.chain, c.direction)}"'
                )
    model.add(NftTable("inet", NFV_TABLE, _counter_table(NFV_TABLE, counters)))
    return model


def _counter_table(table: str, counters: list[str], extra: str = "") -> str:
    body = "\n".join(counters) if counters else "\t\t# no chain passes here"
    return (
        f"table inet {table} {{\n"
        '\tcomment "managed by polynimbus: changes are undone by the next up"\n\n'
        "\tchain prerouting {\n"
        "\t\ttype filter hook prerouting priority raw; policy accept;\n"
        f"{body}\n"
        "\t}\n"
        f"{extra}"
        "}\n"
    )


def render_function(plan: Plan, svc: ServicePlan) -> NodeModel:
    """A network function's namespace (see the module docstring)."""
    sr = plan.srv6
    assert sr is not None
    model = NodeModel().add(
        Sysctl("net.ipv4.ip_forward", "1" if svc.forward else "0"),
        Sysctl("net.ipv6.conf.all.forwarding", "1" if svc.forward else "0"),
        Sysctl("net.ipv4.conf.all.rp_filter", "0"),
        Sysctl("net.ipv4.conf.default.rp_filter", "0"),
        Link("lo", "loopback"),
    )
    counters: list[str] = []
    if svc.mode == "sr-aware":
        model.add(
            Address(names.NFV_IF, svc.aware6[1]),
            Route("default6", dev=names.NFV_IF, via=_addr(svc.aware6[0])),
        )
        for c in sr.chains:
            for h in c.hops:
                if h.node == svc.name:
                    if svc.forward:
                        model.add(Route(f"{h.sid}/128", dev=names.NFV_IF, encap=Seg6Local("End")))
                    counters.append(
                        f'\t\tip6 daddr {h.sid} counter comment "'
                        f'{counter_comment("function", svc.name, c.chain, c.direction)}"'
                    )
    else:
        by_chain: dict[str, list[ChainDirection]] = {}
        for c in sr.chains:
            by_chain.setdefault(c.chain, []).append(c)
        for link in svc.links:
            for side in (0, 1):
                other = 1 - side
                table = FUNCTION_BASE + 2 * link.k + other
                model.add(
                    Address(link.fn_if[side], link.fn4[side]),
                    Address(link.fn_if[side], link.fn6[side]),
                    Rule(family=4, priority=table, table=table, iif=link.fn_if[side]),
                    Rule(family=6, priority=table, table=table, iif=link.fn_if[side]),
                    Route(
                        "default", table=table, dev=link.fn_if[other], via=_addr(link.nfv4[other])
                    ),
                    Route(
                        "default6",
                        table=table,
                        dev=link.fn_if[other],
                        via=_addr(link.nfv6[other]),
                    ),
                )
            for c in by_chain.get(link.chain, []):
                into = 0 if c.direction == "forward" else 1
                for src in c.src:
                    for dst in c.dst:
                        counters.append(
                            f'\t\tiifname "{link.fn_if[into]}" {_nft_match(c, src, dst)} '
                            f'counter comment "'
                            f'{counter_comment("function", svc.name, c.chain, c.direction)}"'
                        )
    ifs = [names.NFV_IF] if svc.mode == "sr-aware" else [i for x in svc.links for i in x.fn_if]
    if ifs:
        # Everything else that enters the function (verify: no traffic outside a chain
        # reaches it), neighbour discovery and multicast listener reports left out.
        counters.append(
            f"\t\ticmpv6 type {{ {', '.join(LINK_ICMPV6)} }} accept comment "
            '"link-local neighbour discovery"'
        )
        counters.append(
            f"\t\tiifname {{ {', '.join(f'{chr(34)}{i}{chr(34)}' for i in ifs)} }} counter "
            f'comment "{counter_comment("entered", svc.name)}"'
        )
    extra = ""
    if svc.function == "firewall":
        rules = "\n".join(f"\t\t{r}" for r in svc.rules)
        extra = (
            "\n\tchain forward {\n"
            "\t\ttype filter hook forward priority filter; policy accept;\n"
            f"{rules}\n"
            "\t}\n"
        )
    model.add(NftTable("inet", FUNCTION_TABLE, _counter_table(FUNCTION_TABLE, counters, extra)))
    if svc.function == "command" and svc.command:
        import os

        argv = svc.command
        model.add(Process(f"{os.path.basename(argv[0])}:{argv[-1]}", argv))
    return model
