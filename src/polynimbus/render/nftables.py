"""The gateway's nftables ruleset (seed 003 §3.1.1 and Table 3.2).

- The gateway is the only node with a public address; from the internet it admits only the
  tunnel's UDP port, and that only from its peers' public addresses, plus ICMP, like the
  security groups of seed 003 Table 3.2. (VXLAN has no authentication and its VNIs are
  derivable from site names: a source filter is all that keeps strangers' frames out.)
- It masquerades its hosts' traffic to the internet (seed 003 §3.2.3.4).
- It forwards between its LAN and the tunnels, and between tunnels (transit).
- It clamps the MSS of TCP SYNs crossing a tunnel to the tunnel MTU minus 40 bytes (IPv4),
  minus 60 (IPv6, on a dual-stack overlay).
- An empty, timed set ``underlay_probe`` lets ``verify --throughput`` open one TCP port to
  one peer for a minute, and ``abw --channel underlay`` one UDP port (its probe
  receiver's); nothing else is ever opened.
- Overlay traffic and the tunnels' own packets bypass conntrack (``notrack`` at priority
  raw): the rules that admit them never ask for a connection state (the tunnel rule is
  stateless, LAN and tunnel traffic is accepted by interface), so tracking them only cost
  CPU on every packet, in each gateway. With a user-space tunnel that CPU is the daemon's:
  the kernel work of a packet it writes or sends runs in its system call. Only the LAN's
  traffic with the internet (masqueraded) and the rest of the internet's is tracked.

Targets compare the table structurally (``nft -j``), not by this text; the comment only
tells a person who reads the ruleset where it comes from.
"""

from __future__ import annotations

from ipaddress import ip_network

from polynimbus.names import LAN_BRIDGE, WAN_IF
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.tunnels import get_transport

TABLE = "polynimbus"
FAMILY = "inet"
COMMENT = "managed by polynimbus: changes are undone by the next up"
PROBE_SET = "underlay_probe"

_TEMPLATE = """table {family} {table} {{
\tcomment "{comment}"

\tset {probe} {{
\t\ttype ipv4_addr . inet_service
\t\tflags timeout
\t}}

\tchain prerouting {{
\t\ttype filter hook prerouting priority raw; policy accept;
{notrack_in}\t}}

\tchain output {{
\t\ttype filter hook output priority raw; policy accept;
{notrack_out}\t}}

\tchain input {{
\t\ttype filter hook input priority filter; policy drop;
\t\tiif "lo" accept
\t\tct state established,related accept
\t\tct state invalid drop
\t\tiifname "{lan}" accept
\t\tiifname "{tun}" accept
{input_extra}{tunnel_rule}
\t\tiifname "{wan}" meta l4proto {{ icmp, ipv6-icmp }} accept comment "ICMP"
\t\tiifname "{wan}" ip saddr . tcp dport @{probe} accept comment "verify --throughput"
\t\tiifname "{wan}" ip saddr . udp dport @{probe} accept comment "abw --channel underlay"
\t}}

\tchain forward {{
\t\ttype filter hook forward priority filter; policy drop;
{mss6}\t\toifname "{tun}" {v4only}tcp flags syn / syn,rst tcp option maxseg size > {mss} tcp option maxseg size set {mss} comment "MSS clamp"
\t\tiifname "{tun}" {v4only}tcp flags syn / syn,rst tcp option maxseg size > {mss} tcp option maxseg size set {mss} comment "MSS clamp"
{forward_extra}\t\tct state established,related accept
\t\tct state invalid drop
\t\tiifname "{lan}" accept
\t\tiifname "{tun}" oifname "{lan}" accept
\t\tiifname "{tun}" oifname "{tun}" accept comment "transit"
\t}}

\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\toifname "{wan}" ip saddr {block} masquerade
\t}}
}}
"""


def render_gateway_ruleset(
    plan: Plan,
    site: SitePlan,
    tunnel_ifname_pattern: str,
    forward_extra: str = "",
    input_extra: str = "",
) -> str:
    """The ``nft -f`` text of ``site``'s gateway (one ``inet polynimbus`` table).

    Args:
        tunnel_ifname_pattern: the tunnel interfaces as nft matches them (an exact name,
            or a wildcard such as ``vx*``).
        forward_extra: rules (tab-indented lines) put in the forward chain before the
            conntrack rules (SRv6 packets have no conntrack entry: the kernel drops it
            when it encapsulates or decapsulates).
        input_extra: rules added to the input chain (its NFV node's link).
    """
    tunnel_rule = _tunnel_rule(plan, site)
    notrack_in, notrack_out = _notrack_rules(plan, site, tunnel_ifname_pattern)
    return _TEMPLATE.format(
        notrack_in=notrack_in,
        notrack_out=notrack_out,
        family=FAMILY,
        table=TABLE,
        comment=COMMENT,
        probe=PROBE_SET,
        tunnel_rule=tunnel_rule,
        lan=LAN_BRIDGE,
        wan=WAN_IF,
        tun=tunnel_ifname_pattern,
        port=plan.port,
        transport=plan.transport,
        mss=plan.mss,
        block=site.block,
        forward_extra=forward_extra,
        v4only="meta nfproto ipv4 " if plan.ipv6 else "",
        mss6="".join(
            f'\t\t{d}ifname "{tunnel_ifname_pattern}" meta nfproto ipv6 tcp flags syn / syn,rst '
            f"tcp option maxseg size > {plan.mss - 20} tcp option maxseg size set "
            f'{plan.mss - 20} comment "MSS clamp (IPv6)"\n'
            for d in ("o", "i")
        )
        if plan.ipv6
        else "",
        input_extra=input_extra,
    )


def _tunnel_match(plan: Plan, site: SitePlan, peer_is: str = "saddr") -> str | None:
    """The match of the tunnels' UDP packets from the peers' public addresses
    (``peer_is="saddr"``) or to them (``"daddr"``), by
    :meth:`~polynimbus.tunnels.base.TunnelBackend.admitted`: ``ip saddr { PEERS } udp dport
    PORTS`` when every peer may use every port, else exact ``address . port`` pairs
    (OpenVPN: a port per tunnel); ``None`` without peers."""
    admitted = get_transport(plan.transport).admitted(plan, site)
    pairs = sorted(set(admitted), key=lambda x: (_addr_key(x[0]), x[1]))
    if not pairs:
        return None
    peers = sorted({a for a, _ in pairs}, key=_addr_key)
    ports = sorted({p for _, p in pairs})
    if len(pairs) == len(peers) * len(ports):
        dport = str(ports[0]) if len(ports) == 1 else "{ " + ", ".join(map(str, ports)) + " }"
        return f"ip {peer_is} {{ {', '.join(peers)} }} udp dport {dport}"
    return f"ip {peer_is} . udp dport {{ " + ", ".join(f"{a} . {p}" for a, p in pairs) + " }"


def _tunnel_rule(plan: Plan, site: SitePlan) -> str:
    """The input rule admitting the tunnels' UDP packets from the peers (:func:`_tunnel_match`)."""
    match = _tunnel_match(plan, site)
    if match is None:
        return "\t\t# no peers: the tunnel port stays closed"
    return f'\t\tiifname "{WAN_IF}" {match} accept comment "{plan.transport} tunnels from peers"'


def _notrack_rules(plan: Plan, site: SitePlan, tun: str) -> tuple[str, str]:
    """The rules of the raw-priority ``prerouting`` and ``output`` chains: conntrack is
    skipped by the tunnels' UDP packets exchanged with the peers (the tunnel rule's match;
    towards a peer, its port as destination), by everything through the tunnel interfaces
    and by what the LAN sends to the other sites' overlay prefixes. The LAN's traffic with
    the internet stays tracked (masquerade needs it), and so does the rest of the
    internet's (it is filtered by state)."""
    pre: list[str] = []
    out: list[str] = []
    inbound = _tunnel_match(plan, site, "saddr")
    outbound = _tunnel_match(plan, site, "daddr")
    if inbound is not None and outbound is not None:
        pre.append(f'iifname "{WAN_IF}" {inbound} notrack comment "tunnel packets"')
        out.append(f'oifname "{WAN_IF}" {outbound} notrack comment "tunnel packets"')
    pre.append(f'iifname "{tun}" notrack comment "overlay"')
    out.append(f'oifname "{tun}" notrack comment "overlay"')
    remote = [p for i, s in enumerate(plan.sites) if s.name != site.name for p in plan.prefixes(i)]
    for kw, v6 in (("ip", False), ("ip6", True)):
        nets = sorted({p for p in remote if (":" in p) == v6}, key=_net_key)
        if nets:
            pre.append(
                f'iifname "{LAN_BRIDGE}" {kw} daddr {{ {", ".join(nets)} }} notrack '
                'comment "overlay"'
            )
    return "".join(f"\t\t{r}\n" for r in pre), "".join(f"\t\t{r}\n" for r in out)


def _net_key(prefix: str) -> tuple[int, int]:
    net = ip_network(prefix)
    return int(net.network_address), net.prefixlen


def _addr_key(addr: str) -> tuple[int, ...]:
    return tuple(int(p) for p in addr.split("."))
