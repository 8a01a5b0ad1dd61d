"""OpenVPN transport: OpenVPN 2.6 in TLS mode, one point-to-point process per tunnel.

Seed 003 §3.2.4: X.509 certificates for OpenVPN, a CA and a certificate per gateway
(§3.2.4.2, made here with ``cryptography`` by :mod:`polynimbus.pki` instead of Easy-RSA),
and a configuration per gateway and role (§3.2.4.1). Instead of the seed's client/server
pairs with pushed routes and ``iroute`` (§3.2.4.3), each tunnel is an OpenVPN
point-to-point instance (no ``--mode server``): one ``openvpn`` process per peer pair and
parallel index, on both gateways, each with its own TUN interface; routes stay with the
node model, exactly as for WireGuard (a TUN interface is layer 3: ``dev`` only, no ``via``).

Per tunnel between sites of plan indices ``i < j`` (``k``-th of ``plan.parallel``):

- roles: the gateway of ``i`` is the TLS server (``--tls-server``, ECDH: ``--dh none``)
  and has no ``--remote``: it answers; ``j``'s is the client and starts every TLS session
  (two ends that both start sessions, restarted at different moments as by
  ``up --rotate-keys``, were seen to wait for each other until the handshake window ran
  out);
- ports: both ends of the tunnel use port ``plan.port + (i + j - 1) * plan.parallel + k``
  (:func:`tunnel_port`), distinct among a gateway's tunnels;
- authentication: both certificates are signed by the lab's CA; each side accepts only
  its intended peer's (``--verify-x509-name PEER name``, the certificate's CN) in its
  role (``--remote-cert-tls``), TLS 1.3 only;
- data channel: AES-256-GCM only (``--data-ciphers``), negotiated in 2.6's point-to-point
  NCP, data channel v2 packets;
- the configuration, CA certificate, gateway certificate and key are one file (inline
  ``<ca>``, ``<cert>``, ``<key>``), written 0600 by the target beside the process
  (:func:`polynimbus.tunnels.base.daemon`); its digest restarts the process when the
  file changes (``up --rotate-keys`` makes a new CA and certificates).

OpenVPN in point-to-point mode does not filter inner source addresses by peer
(WireGuard's AllowedIPs). The gateway does, in its table ``inet pn-openvpn``
(:func:`source_filter`): a packet that came in through a tunnel is dropped unless the
route back to its source leaves through that tunnel (a reverse-path check, nftables
``fib saddr . iif oif missing``; multipath routes count every tunnel of theirs). The
overlay's routes are those of a tree or a full mesh, so they are symmetric: every source
a peer may send from is routed to it. So ``checks_source`` is True, and SRv6 leaving by
a tunnel takes this gateway's outer source (see ``render/srv6.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polynimbus.names import openvpn_if, openvpn_if_prefix
from polynimbus.node import Item, Link, NftTable
from polynimbus.tunnels.base import TRANSPORTS, TunnelBackend, daemon, ecmp_routes, parallel_ifname

if TYPE_CHECKING:
    from polynimbus.pki import GatewayCert
    from polynimbus.plan.model import Plan, SitePlan

CIPHER = "AES-256-GCM"
"""The only data-channel cipher offered and accepted."""
PING_S = 1
"""Seconds without a packet sent after which a keepalive is sent (``--ping``)."""
PING_RESTART_S = 5
"""Seconds without a packet received after which the tunnel restarts its TLS session: how
long a client takes to notice that its server's daemon restarted (the server does not
start sessions). The daemons of a server killed, the next ``up`` had the tunnels back
after 8.4 s (about 22 s with 20 s)."""
RETRY_MAX_S = 5
"""Longest pause between two attempts of a restarting tunnel, s (OpenVPN doubles its pause
after each failed attempt, up to 300 s by default)."""
HAND_WINDOW_S = 10
"""Seconds a TLS handshake may take before the tunnel starts over (OpenVPN's default is 60:
two peers restarted at different moments, as by ``up --rotate-keys``, could otherwise wait
that long for each other)."""
SOCKET_BUFFER = 4 * 1024 * 1024
"""UDP socket send and receive buffers, bytes (``--sndbuf``/``--rcvbuf``)."""
TXQUEUELEN = 1000
"""Transmit queue of the TUN interface, packets (OpenVPN's default is 100)."""
MAX_PARALLEL = 8
"""Most tunnels per peer pair (one process and TUN interface each)."""


def tunnel_port(plan: Plan, a: int, b: int, k: int = 0) -> int:
    """The UDP port of the ``k``-th tunnel between the sites of indices ``a`` and ``b``, at
    both ends: ``port + (a + b - 1) * parallel + k``. Symmetric, so each end knows the
    other's; distinct among one gateway's tunnels (for a fixed ``a``, ``a + b`` differs with
    ``b``)."""
    return plan.port + (a + b - 1) * plan.parallel + k


def tunnels_pattern(plan: Plan) -> str:
    """Every OpenVPN interface of the lab, as nftables matches them."""
    return f"{openvpn_if_prefix(plan.name)}*"


def tunnel_ifnames(plan: Plan, peer: SitePlan) -> list[str]:
    """A gateway's TUN interfaces towards ``peer``, one per parallel tunnel."""
    base = openvpn_if(plan.name, peer.site_id)
    return [parallel_ifname(base, k) for k in range(plan.parallel)]


SOURCE_TABLE = "pn-openvpn"
"""The gateway's nftables table (family ``inet``) that checks the tunnels' sources."""


def source_filter(plan: Plan, site: SitePlan) -> NftTable:
    """The ``inet pn-openvpn`` table of ``site``'s gateway: packets that came in through a
    tunnel whose source is not routed back through that tunnel are dropped, IPv4 and IPv6,
    at the ``raw`` priority of ``prerouting`` (before conntrack and the filter)."""
    pattern = tunnels_pattern(plan)
    ruleset = (
        f"table inet {SOURCE_TABLE} {{\n"
        '\tcomment "managed by polynimbus: a tunnel takes only the sources routed to it"\n'
        "\tchain prerouting {\n"
        "\t\ttype filter hook prerouting priority raw; policy accept;\n"
        f'\t\tiifname "{pattern}" fib saddr . iif oif missing counter drop '
        'comment "source not routed through this tunnel"\n'
        "\t}\n"
        "}\n"
    )
    return NftTable("inet", SOURCE_TABLE, ruleset)


def _pem(text: str) -> str:
    return text.strip() + "\n"


def render_openvpn_config(
    plan: Plan,
    site: SitePlan,
    peer_index: int,
    k: int,
    creds: Mapping[str, Any],
    me: int | None = None,
) -> str:
    """The configuration file of ``site``'s ``k``-th tunnel to the site of index
    ``peer_index`` (openvpn(8) 2.6 options, one a line, certificates and key inline).

    Args:
        creds: :class:`~polynimbus.pki.GatewayCert` by site name; only ``site``'s is
            read.
        me: ``site``'s index in ``plan.sites`` when the caller knows it.

    Raises:
        KeyError: ``site`` has no credentials.
    """
    me = plan.site_index(site.name) if me is None else me
    peer = plan.sites[peer_index]
    port = tunnel_port(plan, me, peer_index, k)
    server = me < peer_index
    ifname = tunnel_ifnames(plan, peer)[k]
    own: GatewayCert = creds[site.name]
    role = "server" if server else "client"
    lines = [
        f"# polynimbus: gateway of site {site.name} in {plan.name}, tunnel {k} to site "
        f"{peer.name} (TLS {role})",
        "dev-type tun",
        f"dev {ifname}",
        "proto udp4",
        f"lport {port}",
        f"tls-{role}",
        # the server answers (the firewall admits only the peer's address to its port) and
        # uses ECDH only; the client starts every TLS session
        "dh none" if server else f"remote {peer.public_address} {port}",
        "tls-version-min 1.3",
        f"verify-x509-name {peer.name} name",
        f"remote-cert-tls {'client' if server else 'server'}",
        f"data-ciphers {CIPHER}",
        f"tun-mtu {plan.tunnel_mtu}",
        "mssfix 0",  # the gateway's firewall clamps TCP MSS to the tunnel MTU
        f"txqueuelen {TXQUEUELEN}",
        f"sndbuf {SOCKET_BUFFER}",
        f"rcvbuf {SOCKET_BUFFER}",
        f"ping {PING_S}",
        f"ping-restart {PING_RESTART_S}",
        f"connect-retry 1 {RETRY_MAX_S}",
        f"hand-window {HAND_WINDOW_S}",
        "tls-timeout 1",
        "persist-tun",  # a TLS restart keeps the interface, its MTU and its routes
        "persist-key",
        "verb 3",
        "<ca>",
        _pem(own.ca_pem) + "</ca>",
        "<cert>",
        _pem(own.cert_pem) + "</cert>",
        "<key>",
        _pem(own.key_pem) + "</key>",
    ]
    return "\n".join(lines) + "\n"


@TRANSPORTS.register("openvpn")
class OpenVpnBackend(TunnelBackend):
    """Encrypted tunnels with OpenVPN 2.6 (TLS, AES-256-GCM), one process per tunnel."""

    name = "openvpn"
    encrypted = True
    tools = {"openvpn": "openvpn"}
    default_port = 1194  # IANA
    # outer IPv4 20 + UDP 8 + data channel v2 AEAD: opcode/peer-id 4 + packet ID 4 + GCM
    # tag 16 (OpenVPN 2.6 src/openvpn/crypto.h, "P_DATA_V2 GCM data channel crypto
    # format"); TUN mode: no inner Ethernet header; no compression framing byte
    overhead = 20 + 8 + 4 + 4 + 16
    summary = "OpenVPN 2.6, encrypted (TLS with the lab's CA, AES-256-GCM; a process per tunnel)"
    checks_source = True  # by the gateway: source_filter
    daemons = frozenset({"openvpn"})
    credential_dirs = ("pki",)
    max_parallel = MAX_PARALLEL
    # a started tunnel carries traffic after about 2 s: a first send before the gateway's
    # routes exist restarts it (1 s pause), then TLS, then up to 1 s of OpenVPN's timer
    ready_timeout_s = 10.0

    def credentials(
        self, plan: Plan, state_dir: Path, rotate: bool = False, dry_run: bool = False
    ) -> Mapping[str, Any]:
        """A certificate and key per gateway, signed by the lab's CA
        (:class:`polynimbus.pki.CertificateAuthority` in ``state_dir``).

        Raises:
            KeyFileError: a stored certificate or key is unsafe or corrupt.
        """
        from polynimbus.pki import CertificateAuthority, public_addresses

        ca = CertificateAuthority(state_dir, plan.name)
        return ca.ensure(public_addresses(plan), rotate=rotate, dry_run=dry_run)

    def ifname_pattern(self, plan: Plan, site: SitePlan) -> str:
        return tunnels_pattern(plan)

    def tunnel_ports(self, plan: Plan, a: int, b: int) -> list[int]:
        return [tunnel_port(plan, a, b, k) for k in range(plan.parallel)]

    def port_range(self, port: int, parallel: int, sites: int) -> tuple[int, int]:
        # the highest pair of indices, a + b = 2 * sites - 3 (see tunnel_port)
        return port, port + max(2 * sites - 4, 0) * parallel + parallel - 1

    def admitted(self, plan: Plan, site: SitePlan) -> list[tuple[str, int]]:
        """Each peer to its own tunnels' ports only (:func:`tunnel_port`)."""
        me = plan.site_index(site.name)
        return [
            (plan.sites[p.site].public_address, tunnel_port(plan, me, p.site, k))
            for p in site.peers
            for k in range(plan.parallel)
        ]

    def gateway_items(
        self, plan: Plan, site: SitePlan, creds: Mapping[str, Any], impl: str
    ) -> list[Item]:
        """Per peer and parallel index, an ``openvpn`` process with its file and the TUN
        interface it makes; overlay routes over the peer's interfaces (multipath when
        several: :func:`~polynimbus.tunnels.base.ecmp_routes`), and the source check of
        the tunnels (:func:`source_filter`)."""
        out: list[Item] = [source_filter(plan, site)] if site.peers else []
        me = plan.site_index(site.name)
        for peer in site.peers:
            devs = tunnel_ifnames(plan, plan.sites[peer.site])
            for k, ifname in enumerate(devs):
                conf = f"{ifname}.conf"
                text = render_openvpn_config(plan, site, peer.site, k, creds, me)
                proc = daemon(("openvpn", "--config", conf, "--dev", ifname), [(conf, text)])
                out += [proc, Link(ifname, "tun", mtu=plan.tunnel_mtu, process=proc.name)]
            for d in peer.reaches:
                out += ecmp_routes(plan.prefixes(d), devs)
        return out
