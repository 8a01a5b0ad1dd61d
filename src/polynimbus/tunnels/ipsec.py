"""IPsec transport: strongSwan (IKEv2, ``swanctl``) with ESP in UDP, one ``charon`` per
gateway and parallel tunnel.

Seed 003 §3.2.4 builds its overlay on OpenVPN and IPsec with a CA of its own and a
certificate per gateway (§3.2.4.2); polynimbus signs them with :mod:`polynimbus.pki`, the
CA the ``openvpn`` transport shares. Each gateway runs ``charon-systemd`` (the IKE daemon
of strongSwan 5.9, in the foreground, with no pid file), configured by a
``strongswan.conf`` of its own (strongswan.conf(5), found through ``STRONGSWAN_CONF``)
whose start script loads a ``swanctl.conf`` (swanctl.conf(5)) over the daemon's own VICI
socket. Everything sits in the node's file directory; nothing is read from or written to
``/etc`` or ``/run``.

ESP implementation (:meth:`IpsecBackend.implementation`):

- ``libipsec``: strongSwan's user-space ESP (``kernel-libipsec`` plugin), for kernels
  without ESP, like this lab's. The plugin makes a TUN device named ``ipsecN`` (the name is
  fixed in the plugin: ``ipsec%d``, the kernel picks N, lowest free in the gateway's
  namespace; TUN devices are per namespace and nothing host-wide is keyed by the name, so
  several labs never collide); the overlay routes go over it like any TUN tunnel. ESP is
  always encapsulated in UDP (RFC 3948): libipsec handles no raw ESP.
- ``kernel``: the kernel's ESP (XFRM) with one XFRM interface per parallel tunnel
  (``if_id``); designed (docs/design.md, "IPsec") but not rendered yet, the node model has
  no XFRM interfaces: forcing it (``POLYNIMBUS_IPSEC=kernel``) is an error with a hint.

Per gateway and parallel index ``k`` (``plan.parallel`` tunnels per peer pair): one daemon
with its TUN device, IKE and ESP-in-UDP on UDP port ``plan.port + k`` at both ends
(``port_nat_t``, ``local_port`` and ``remote_port``: IKE starts there, RFC 7296 §2.23, from
the first message, so the gateway's firewall, which admits and leaves untracked only that
port from the peers, sees nothing else), one connection per peer with one CHILD_SA
(tunnel mode):

- identities: IKE ID = the site name, as the certificate's SAN DNS has it; each
  connection names its peer (``remote.id``) and the CA (``remote.cacerts``), and its
  public address: a gateway accepts only its own peers, with a certificate of this lab's
  CA;
- traffic selectors: each side offers its own blocks when the peer routes only them
  through it, else ``0.0.0.0/0, ::/0`` (it is the peer's transit: routes decide), both
  ends configured alike, so the negotiation (RFC 7296 §2.9) changes nothing. Exact
  transit blocks (WireGuard's AllowedIPs) are out: strongSwan 5.9's kernel-libipsec
  refuses an outgoing policy whose source selector holds no local address
  (:func:`offer`). libipsec picks the SA of an outgoing packet by its selectors, most
  specific first: a gateway may have one transit peer only (:func:`transit_problems`,
  which the planner reports, so ``validate``, ``plan`` and ``up`` refuse; full-mesh and
  hub qualify, a tree whose inner site has two transit peers does not), and SRv6 carried
  by the tunnels (its SID blocks make every side :data:`ANY`) fits 2 sites only. A
  gateway drops an incoming packet outside the selectors (a source the peer may not
  send, where the peer is not a transit);
- routes: polynimbus renders them (over the ``ipsecN`` devices, multipath when
  ``parallel`` > 1). kernel-libipsec installs a route per CHILD_SA whatever
  ``install_routes`` says (strongSwan 5.9.8); the daemon is told to put them in a table of
  its own (:data:`CHARON_TABLE`) behind a rule that matches no packet
  (:data:`CHARON_FWMARK`), so they never compete with the node model's;
- who initiates: both sides (``start_action = start``) so whichever starts last connects
  at once; the first (by site order) also retries forever and restarts a dead peer
  (``keyingtries = 0``, ``dpd_action = restart``), the other clears. A restarted daemon
  sends INITIAL_CONTACT, so its peer drops the old SAs at once (RFC 7296 §2.4). Both
  starting at the same moment may leave two IKE_SAs for a pair, both working;
- algorithms: IKE AES-256-GCM, PRF HMAC-SHA-256, ECP-256 (RFC 5903); ESP AES-256-GCM with
  16-byte ICV (RFC 4106), PFS with ECP-256 on rekeying; ECDSA P-256 certificates.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from polynimbus.errors import PolynimbusError, Problem
from polynimbus.names import lab_tag
from polynimbus.node import Item, Link, Process
from polynimbus.tunnels.base import TRANSPORTS, TunnelBackend, daemon, ecmp_routes, parallel_ifname

if TYPE_CHECKING:
    from polynimbus.plan.model import PeerPlan, Plan, SitePlan

CHARON = "charon-systemd"
"""The IKE daemon (Debian package charon-systemd): foreground, no pid file, no arguments."""
TUN_PREFIX = "ipsec"
"""kernel-libipsec names its TUN device ``ipsec%d`` (hard-coded in the plugin)."""
CHARON_TABLE = 45000
"""Routing table the daemon puts its own per-CHILD_SA routes in (``charon.routing_table``)."""
CHARON_RULE_PRIORITY = 32700
"""Priority of the daemon's rule towards :data:`CHARON_TABLE` (``routing_table_prio``)."""
CHARON_FWMARK = "0x70736563/0xffffffff"
"""The only packets the daemon's rule sends to :data:`CHARON_TABLE`: a mark no one sets
(``charon.plugins.kernel-netlink.fwmark``), so its routes are never used."""
PLUGINS = (
    "random nonce openssl kdf pem pkcs1 pkcs8 x509 pubkey "
    "kernel-libipsec kernel-netlink socket-default vici"
)
"""Plugins the daemon loads, in order (kernel-libipsec before kernel-netlink, so user-space
ESP is the IPsec backend; kernel-netlink still provides addresses and routes). Nothing
else: no plugin reads host files."""
SWANCTL_PLUGINS = "pem pkcs1 pkcs8 x509 openssl"
"""Plugins ``swanctl`` loads to read the certificates and the key."""
IKE_PROPOSAL = "aes256gcm16-prfsha256-ecp256"
ESP_PROPOSAL = "aes256gcm16-ecp256"
THREADS = 16
"""Worker threads of a daemon. kernel-libipsec keeps about six busy for good (TUN reader,
ESP in and out, sender, receiver, netlink events), VICI needs one per client: 8 deadlocks
the start script."""
REPLAY_WINDOW = 1024
"""ESP anti-replay window, packets (RFC 4303 §3.4.3; strongSwan's default is 32): a real
underlay may reorder more than 32 packets at a few hundred Mbit/s, and a wider window
costs nothing measurable here (docs/design.md, IPsec)."""
RETRANSMIT_TIMEOUT_S = 0.5
RETRANSMIT_BASE = 1.5
RETRANSMIT_TRIES = 6
"""IKE retransmissions after 0.5, 0.75, 1.1, 1.7, 2.5 and 3.8 s, then a failure after
about 16 s in all (the defaults wait 4 s first and 165 s in all: slow for a lab that
starts its daemons before their network)."""
DPD_DELAY_S = 10
"""Seconds without a packet from a peer after which the daemon checks it is alive."""
LIBIPSEC_MTU = 1400
"""Largest packet kernel-libipsec reads from its TUN device, bytes: the plugin sets the
device's MTU to 1400 (``TUN_DEFAULT_MTU``) and reads into a buffer of that size whatever
the MTU becomes later; a longer packet is cut and dropped as invalid."""
NETWORK_WAIT_S = 2.0
"""Longest wait of a starting daemon for its network before it loads its connections, s
(the lab target stops a daemon that ignores SIGTERM for 3 s)."""
MAX_PARALLEL = 8
"""Most tunnels per peer pair (one daemon and TUN device each)."""


class GatewayCredentials(Protocol):
    """What a gateway's daemon needs from :mod:`polynimbus.pki`: PEM texts."""

    @property
    def ca_pem(self) -> str: ...
    @property
    def cert_pem(self) -> str: ...
    @property
    def key_pem(self) -> str: ...


def instance_name(plan: Plan, site: SitePlan, k: int = 0) -> str:
    """The host-unique name of ``site``'s ``k``-th daemon: ``sw`` + the lab's tag + the
    site's id (12 characters, ``pK`` added for ``k`` > 0). Its files are named after it."""
    return parallel_ifname(f"sw{lab_tag(plan.name)}{site.site_id}", k)


def tun_name(k: int) -> str:
    """The TUN device of the ``k``-th daemon of a gateway (they start in order, and the
    kernel gives each the lowest free ``ipsecN``)."""
    return f"{TUN_PREFIX}{k}"


ANY = ("0.0.0.0/0", "::/0")
"""The traffic selector of a transit side: routes decide."""


def _holds_local_address(site: SitePlan, prefix: str) -> bool:
    """Whether ``prefix`` holds one of ``site``'s gateway overlay addresses."""
    net = ipaddress.ip_network(prefix)
    for addr in (site.gateway_address, site.gateway_address6):
        if addr and ipaddress.ip_address(addr) in net:
            return True
    return False


def offer(plan: Plan, owner: int, to: SitePlan) -> tuple[str, ...]:
    """The traffic selector of the gateway of site index ``owner``'s side of its tunnel
    with ``to``: ``owner``'s own prefixes when ``to`` routes only them through it and each
    holds an address of ``owner``'s gateway, else :data:`ANY` (routes decide): ``owner``
    is ``to``'s transit, or its prefixes include its SRv6 SID block (SRv6 carried by the
    tunnels), which holds no address.

    Why not the exact blocks routed through ``owner`` (WireGuard's AllowedIPs)? Each pair
    of selectors becomes a libipsec policy, and strongSwan 5.9's kernel-libipsec refuses
    an outgoing policy whose source selector holds no local address (it wants one as
    the source of its route; strongSwan pull request 1766): a transit block never holds
    one of the transit gateway's addresses. A /0 selector passes (it holds 127.0.0.1).

    Raises:
        KeyError: ``to`` has no tunnel to ``owner``.
    """
    for p in to.peers:
        if p.site == owner:
            return _side(plan, owner, p.reaches)
    raise KeyError(f"site {to.name} has no tunnel to site index {owner}")


def _side(
    plan: Plan, owner: int, reaches: tuple[int, ...], tight: dict[int, bool] | None = None
) -> tuple[str, ...]:
    """:func:`offer` for the tunnel to site index ``owner`` routing ``reaches``;
    ``tight`` caches, by site index, whether each own prefix holds a gateway address."""
    if tuple(reaches) != (owner,):
        return ANY
    own = plan.prefixes(owner)
    if tight is None or owner not in tight:
        ok = all(_holds_local_address(plan.sites[owner], x) for x in own)
        if tight is None:
            return own if ok else ANY
        tight[owner] = ok
    return own if tight[owner] else ANY


def wide_peers(plan: Plan, site: SitePlan, tight: dict[int, bool] | None = None) -> list[PeerPlan]:
    """``site``'s peers whose side of the tunnel is :data:`ANY` (see :func:`offer`)."""
    return [p for p in site.peers if _side(plan, p.site, p.reaches, tight) == ANY]


def _sids_in_tunnels(plan: Plan) -> bool:
    return plan.srv6 is not None and plan.srv6.carrier == "tunnels"


def transit_problems(plan: Plan) -> list[Problem]:
    """The gateways libipsec cannot serve (see :func:`check_transit`), as intent problems:
    one for a gateway with two transit peers or more (``overlay.transport``: a tree's inner
    site), one for SRv6 carried by the tunnels on a gateway with two peers or more
    (``overlay.srv6.carrier``: the SID blocks widen every side). Each names the first
    such gateway and how many others there are."""
    transit: list[tuple[SitePlan, list[str]]] = []
    sids: list[tuple[SitePlan, list[str]]] = []
    srv6 = _sids_in_tunnels(plan)
    tight: dict[int, bool] = {}
    for site in plan.sites:
        if len(site.peers) < 2:
            continue
        wide = wide_peers(plan, site, tight)
        if len(wide) < 2:
            continue
        names = [plan.sites[p.site].name for p in wide]
        through = [plan.sites[p.site].name for p in wide if tuple(p.reaches) != (p.site,)]
        if len(through) > 1 or not srv6:
            transit.append((site, through if len(through) > 1 else names))
        if srv6:
            sids.append((site, names))

    def where(found: list[tuple[SitePlan, list[str]]], what: str) -> str:
        site, peers = found[0]
        more = len(found) - 1
        also = f", and {more} other gateway{'s' if more > 1 else ''} likewise" if more else ""
        listed = ", ".join(peers)
        return f"the gateway of site {site.name!r} has {len(peers)} {what} ({listed}){also}"

    why = (
        "kernel-libipsec, strongSwan's user-space ESP, picks a tunnel by its selectors, "
        "not by routes"
    )
    out: list[Problem] = []
    if transit:
        out.append(
            Problem(
                "overlay.transport",
                f"transport 'ipsec' can route through one transit peer per gateway only ({why}),"
                f" but in this {plan.topology} {where(transit, 'transit peers')}",
                "use a transport that follows routes (wireguard, openvpn), or topology: "
                "full-mesh or hub",
            )
        )
    if sids:
        out.append(
            Problem(
                "overlay.srv6.carrier",
                "transport 'ipsec' carries SRv6 in its tunnels between 2 sites only: the SID "
                f"blocks make every tunnel's selectors 0.0.0.0/0 ({why}), and "
                f"{where(sids, 'peers')}",
                "set srv6: {carrier: underlay}, or use a transport that follows routes "
                "(wireguard, openvpn)",
            )
        )
    return out


def check_transit(plan: Plan, site: SitePlan) -> None:
    """Refuse a gateway with two peers or more whose side is :data:`ANY` (see
    :func:`offer`). :func:`polynimbus.plan.build_plan` refuses such a plan already
    (:meth:`IpsecBackend.plan_problems`); this is the renderer's safety net for a plan
    made otherwise.

    libipsec picks the SA of an outgoing packet by its selectors alone (the most
    specific first): a peer's own blocks are specific, an :data:`ANY` side is not; two of
    those would be a tie that no route can break.

    Raises:
        PolynimbusError: the gateway has two such peers or more (with a hint).
    """
    wide = [plan.sites[p.site].name for p in wide_peers(plan, site)]
    if len(wide) > 1:
        sids = _sids_in_tunnels(plan)
        why = "carry SRv6 SIDs or lead to other sites" if sids else "lead to other sites"
        raise PolynimbusError(
            f"ipsec: the gateway of site {site.name} has {len(wide)} peers whose tunnels "
            f"{why} ({', '.join(wide)}); strongSwan's user-space ESP (kernel-libipsec) "
            "can route through one such peer per gateway only",
            "use a transport that follows routes (wireguard, openvpn)"
            + (", or srv6: {carrier: underlay}" if sids else ", or topology full-mesh or hub"),
        )


def _files(inst: str) -> dict[str, str]:
    """The file names of daemon ``inst``, relative to its working directory."""
    return {
        "conf": f"{inst}.conf",
        "swanctl": f"{inst}.swanctl.conf",
        "vici": f"{inst}.vici",
        "ca": f"{inst}.ca.pem",
        "cert": f"{inst}.pem",
        "key": f"{inst}.key",
        "dir": f"{inst}.swanctl",
        "log": f"{inst}.log",
    }


def render_strongswan_conf(plan: Plan, site: SitePlan, k: int) -> str:
    """The ``strongswan.conf`` of ``site``'s ``k``-th daemon (strongswan.conf(5); settings
    under ``charon``, which ``charon-systemd`` falls back to)."""
    inst = instance_name(plan, site, k)
    f = _files(inst)
    # swanctl loads private keys only from the "private" folder beside its swanctl.conf
    # (the secrets section holds passphrases): a folder of the daemon's own, with links,
    # removed once loaded; the VICI socket goes when the daemon stops (charon leaves it)
    # the lab starts daemons before it makes their network: wait (at most
    # NETWORK_WAIT_S) until the gateway can reach a peer from its public address, so that
    # the first IKE message goes out at once rather than on a retransmission
    peer = plan.sites[site.peers[0].site].public_address if site.peers else None
    wait = (
        f"for i in $(seq {int(NETWORK_WAIT_S * 100)}); do ip route get {peer} from "
        f"{site.public_address} >/dev/null 2>&1 && break; sleep 0.01; done; "
        if peer
        else ""
    )
    load = wait + (
        f"umask 077 && mkdir -p {f['dir']}/private && "
        f"ln -sfn ../{f['swanctl']} {f['dir']}/swanctl.conf && "
        f"ln -sfn ../../{f['key']} {f['dir']}/private/{f['key']} && "
        f"swanctl --load-all --noprompt --file {f['dir']}/swanctl.conf "
        f"--uri unix://{f['vici']} 2>&1 | grep -v '^opening directory'; rm -rf {f['dir']}"
    )
    return f"""# polynimbus: strongSwan of the gateway of site {site.name} in {plan.name}, \
tunnel {k + 1} of {plan.parallel}
charon {{
    load_modular = no
    load = {PLUGINS}
    port = 0
    port_nat_t = {plan.port + k}
    install_virtual_ip = no
    routing_table = {CHARON_TABLE}
    routing_table_prio = {CHARON_RULE_PRIORITY}
    threads = {THREADS}
    replay_window = {REPLAY_WINDOW}
    retransmit_timeout = {RETRANSMIT_TIMEOUT_S}
    retransmit_base = {RETRANSMIT_BASE}
    retransmit_tries = {RETRANSMIT_TRIES}
    plugins {{
        vici {{
            socket = unix://{f["vici"]}
        }}
        kernel-netlink {{
            fwmark = {CHARON_FWMARK}
        }}
        socket-default {{
            use_ipv6 = no
        }}
    }}
    filelog {{
        log {{
            path = {f["log"]}
            default = 1
            time_format = %b %e %T
            time_add_ms = yes
            flush_line = yes
        }}
    }}
    start-scripts {{
        load = {load}
    }}
    stop-scripts {{
        cleanup = rm -f {f["vici"]}
    }}
}}
charon-systemd {{
    journal {{
        default = -1
    }}
}}
swanctl {{
    load = {SWANCTL_PLUGINS}
}}
"""


def render_swanctl_conf(plan: Plan, site: SitePlan, k: int) -> str:
    """The ``swanctl.conf`` of ``site``'s ``k``-th daemon (swanctl.conf(5)): a connection
    per peer (see the module docstring). The certificates are read by ``swanctl`` from
    the daemon's working directory (``/proc/self/cwd``: ``swanctl`` prefixes relative
    names with its own directories); the key from ``INST.swanctl/private`` (see
    :func:`render_strongswan_conf`)."""
    inst = instance_name(plan, site, k)
    f = _files(inst)
    me = plan.site_index(site.name)
    lines = [
        f"# polynimbus: IKEv2 connections of site {site.name} in {plan.name}, "
        f"tunnel {k + 1} of {plan.parallel}",
        "connections {",
    ]
    for peer in site.peers:
        p = plan.sites[peer.site]
        first = me < peer.site
        remote_ts = ",".join(offer(plan, peer.site, site))
        local_ts = ",".join(offer(plan, me, p))
        lines += [
            f"    {p.name} {{",
            "        version = 2",
            f"        local_addrs = {site.public_address}",
            f"        remote_addrs = {p.public_address}",
            f"        local_port = {plan.port + k}",
            f"        remote_port = {plan.port + k}",
            "        encap = yes",
            "        mobike = no",
            f"        proposals = {IKE_PROPOSAL}",
            f"        dpd_delay = {DPD_DELAY_S}s",
            f"        keyingtries = {0 if first else 1}",
            "        send_cert = always",
            "        local {",
            "            auth = pubkey",
            f"            id = {site.name}",
            f"            certs = /proc/self/cwd/{f['cert']}",
            "        }",
            "        remote {",
            "            auth = pubkey",
            f"            id = {p.name}",
            f"            cacerts = /proc/self/cwd/{f['ca']}",
            "        }",
            "        children {",
            f"            {p.name} {{",
            "                mode = tunnel",
            f"                local_ts = {local_ts}",
            f"                remote_ts = {remote_ts}",
            f"                esp_proposals = {ESP_PROPOSAL}",
            "                start_action = start",
            f"                dpd_action = {'restart' if first else 'clear'}",
            "                close_action = none",
            "            }",
            "        }",
            "    }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _pem(text: str) -> str:
    return text.strip() + "\n"


def charon_process(plan: Plan, site: SitePlan, k: int, creds: Mapping[str, Any]) -> Process:
    """``site``'s ``k``-th daemon with its files: ``STRONGSWAN_CONF=INST.conf
    charon-systemd ipsecK``. The leading assignment goes into the daemon's environment
    (the lab target passes it, :mod:`polynimbus.targets.lab.processes`). The last argument
    is only a label (``charon-systemd`` takes no arguments): the TUN device the daemon
    makes, which is how the lab tells which process serves a TUN device; the process
    name, ``charon-systemd:ipsecK``, is unique in its node only, so the daemon logs to
    ``INST.log`` in its own directory, not to the lab's per-name log.

    Raises:
        KeyError: ``site`` has no credentials.
    """
    inst = instance_name(plan, site, k)
    f = _files(inst)
    own: GatewayCredentials = creds[site.name]
    files = [
        (f["conf"], render_strongswan_conf(plan, site, k)),
        (f["swanctl"], render_swanctl_conf(plan, site, k)),
        (f["ca"], _pem(own.ca_pem)),
        (f["cert"], _pem(own.cert_pem)),
        (f["key"], _pem(own.key_pem)),
    ]
    tun = tun_name(k)
    return daemon((f"STRONGSWAN_CONF={f['conf']}", CHARON, tun), files)


@TRANSPORTS.register("ipsec")
class IpsecBackend(TunnelBackend):
    """Encrypted tunnels with IPsec: strongSwan IKEv2, ESP in UDP (kernel or libipsec)."""

    name = "ipsec"
    encrypted = True
    tools = {CHARON: "charon-systemd", "swanctl": "strongswan-swanctl"}
    default_port = 4500  # IANA ipsec-nat-t (RFC 3948), IKE too (RFC 7296 §2.23)
    # on the wire: outer IPv4 20 + UDP 8 (RFC 3948) + ESP SPI 4 + sequence 4 + GCM IV 8
    # (RFC 4106 §3.1) + pad length 1 + next header 1 + padding to 4 bytes 0..3 (RFC 4303
    # §2.4) + ICV 16 = 65
    overhead = 20 + 8 + 4 + 4 + 8 + 1 + 1 + 3 + 16
    max_tunnel_mtu = LIBIPSEC_MTU  # the most libipsec carries, whatever the underlay
    summary = "IPsec, encrypted (strongSwan IKEv2 with the lab's CA, ESP AES-256-GCM in UDP)"
    checks_source = False  # a transit side's selector is 0.0.0.0/0 (see offer)
    daemons = frozenset({CHARON})
    credential_dirs = ("pki",)
    max_parallel = MAX_PARALLEL

    def implementation(self) -> str:
        """``libipsec`` unless ``POLYNIMBUS_IPSEC=kernel`` (see the module docstring: the
        kernel's ESP is detected, :func:`polynimbus.capabilities.kernel_esp`, but not
        rendered yet)."""
        return (
            "kernel" if os.environ.get("POLYNIMBUS_IPSEC", "").lower() == "kernel" else "libipsec"
        )

    def implementation_note(self, impl: str) -> str:
        from polynimbus.capabilities import kernel_esp

        if impl == "kernel":
            return "IPsec: kernel ESP (XFRM interfaces), strongSwan IKEv2 (forced)"
        why = (
            "the kernel has ESP, but polynimbus does not render XFRM interfaces yet"
            if kernel_esp()
            else "this kernel has no ESP (XFRM)"
        )
        return (
            f"IPsec: strongSwan IKEv2 with user-space ESP (kernel-libipsec over TUN ipsecN, "
            f"ESP in UDP): {why}"
        )

    def required_tools(self, impl: str) -> dict[str, str]:
        return dict(self.tools)

    def plan_problems(self, plan: Plan) -> list[Problem]:
        """A gateway with two transit peers, or SRv6 in the tunnels beyond 2 sites
        (:func:`transit_problems`)."""
        return transit_problems(plan)

    def credentials(
        self, plan: Plan, state_dir: Path, rotate: bool = False, dry_run: bool = False
    ) -> Mapping[str, Any]:
        """A certificate and key per gateway, signed by the lab's CA
        (:class:`polynimbus.pki.CertificateAuthority` in ``state_dir``, shared with
        OpenVPN).

        Raises:
            KeyFileError: a stored certificate or key is unsafe or corrupt.
        """
        from polynimbus.pki import CertificateAuthority, public_addresses

        ca = CertificateAuthority(state_dir, plan.name)
        return ca.ensure(public_addresses(plan), rotate=rotate, dry_run=dry_run)

    def ifname_pattern(self, plan: Plan, site: SitePlan) -> str:
        return f"{TUN_PREFIX}*"

    def gateway_items(
        self, plan: Plan, site: SitePlan, creds: Mapping[str, Any], impl: str
    ) -> list[Item]:
        """``plan.parallel`` daemons, each with its TUN device; overlay routes over all of
        them (multipath when several: :func:`~polynimbus.tunnels.base.ecmp_routes`).

        Raises:
            PolynimbusError: ``impl`` is ``kernel`` (not rendered yet).
        """
        if impl == "kernel":
            raise PolynimbusError(
                "IPsec with kernel ESP needs XFRM interfaces, which polynimbus does not render yet",
                "unset POLYNIMBUS_IPSEC (or set it to libipsec): strongSwan's user-space "
                "ESP works on every kernel",
            )
        out: list[Item] = []
        if not site.peers:
            return out
        check_transit(plan, site)
        devs = [tun_name(k) for k in range(plan.parallel)]
        for k, dev in enumerate(devs):
            proc = charon_process(plan, site, k, creds)
            mtu = min(plan.tunnel_mtu, LIBIPSEC_MTU)
            out += [proc, Link(dev, "tun", mtu=mtu, process=proc.name)]
        for peer in site.peers:
            for d in peer.reaches:
                out += ecmp_routes(plan.prefixes(d), devs)
        return out
