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
  one peer for a minute; nothing else is ever opened.

Targets compare the table structurally (``nft -j``), not by this text; the comment only
tells a person who reads the ruleset where it comes from.
"""

from __future__ import annotations

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
    return _TEMPLATE.format(
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


def _tunnel_rule(plan: Plan, site: SitePlan) -> str:
    """The input rule admitting the tunnels' UDP packets from the peers' public addresses
    (:meth:`~polynimbus.tunnels.base.TunnelBackend.admitted`): ``ip saddr { PEERS } udp
    dport PORTS`` when every peer may use every port, else exact ``address . port`` pairs
    (OpenVPN: a port per tunnel)."""
    admitted = get_transport(plan.transport).admitted(plan, site)
    pairs = sorted(set(admitted), key=lambda x: (_addr_key(x[0]), x[1]))
    if not pairs:
        return "\t\t# no peers: the tunnel port stays closed"
    peers = sorted({a for a, _ in pairs}, key=_addr_key)
    ports = sorted({p for _, p in pairs})
    if len(pairs) == len(peers) * len(ports):
        dport = str(ports[0]) if len(ports) == 1 else "{ " + ", ".join(map(str, ports)) + " }"
        match = f"ip saddr {{ {', '.join(peers)} }} udp dport {dport}"
    else:
        match = "ip saddr . udp dport { " + ", ".join(f"{a} . {p}" for a, p in pairs) + " }"
    return f'\t\tiifname "{WAN_IF}" {match} accept comment "{plan.transport} tunnels from peers"'


def _addr_key(addr: str) -> tuple[int, ...]:
    return tuple(int(p) for p in addr.split("."))
