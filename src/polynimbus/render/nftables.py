"""The gateway's nftables ruleset (seed 003 §3.1.1 and Table 3.2).

- The gateway is the only node with a public address; from the internet it admits only the
  tunnel's UDP port and ICMP, like the security groups of seed 003 Table 3.2.
- It masquerades its hosts' traffic to the internet (seed 003 §3.2.3.4).
- It forwards between its LAN and the tunnels, and between tunnels (transit).
- It clamps the MSS of TCP SYNs crossing a tunnel to the tunnel MTU minus 40 bytes.
- An empty, timed set ``underlay_probe`` lets ``verify --throughput`` open one TCP port to
  one peer for a minute; nothing else is ever opened.

The ruleset's digest is stored in the table's comment, so a target can tell whether the
running ruleset is the planned one without parsing it.
"""

from __future__ import annotations

import hashlib
import re

from polynimbus.names import LAN_BRIDGE, WAN_IF
from polynimbus.plan.model import Plan, SitePlan

TABLE = "polynimbus"
FAMILY = "inet"
COMMENT_PREFIX = "polynimbus:"
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
\t\tiifname "{wan}" udp dport {port} accept comment "{transport} tunnels"
\t\tiifname "{wan}" meta l4proto {{ icmp, ipv6-icmp }} accept comment "ICMP"
\t\tiifname "{wan}" ip saddr . tcp dport @{probe} accept comment "verify --throughput"
\t}}

\tchain forward {{
\t\ttype filter hook forward priority filter; policy drop;
\t\toifname "{tun}" tcp flags syn / syn,rst tcp option maxseg size > {mss} tcp option maxseg size set {mss} comment "MSS clamp"
\t\tiifname "{tun}" tcp flags syn / syn,rst tcp option maxseg size > {mss} tcp option maxseg size set {mss} comment "MSS clamp"
\t\tct state established,related accept
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


def render_gateway_ruleset(plan: Plan, site: SitePlan, tunnel_ifname_pattern: str) -> str:
    """The ``nft -f`` text of ``site``'s gateway, its digest in the table comment.

    Args:
        tunnel_ifname_pattern: the tunnel interfaces as nft matches them (an exact name,
            or a wildcard such as ``vx*``).
    """
    body = _TEMPLATE.format(
        family=FAMILY,
        table=TABLE,
        comment="{comment}",
        probe=PROBE_SET,
        lan=LAN_BRIDGE,
        wan=WAN_IF,
        tun=tunnel_ifname_pattern,
        port=plan.port,
        transport=plan.transport,
        mss=plan.mss,
        block=site.block,
    )
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    return body.replace("{comment}", COMMENT_PREFIX + digest)


def ruleset_digest(text: str) -> str | None:
    """The digest in a ruleset's table comment (as rendered or as ``nft list`` prints it)."""
    m = re.search(r'comment "' + re.escape(COMMENT_PREFIX) + r'([0-9a-f]+)"', text)
    return m.group(1) if m else None
