"""The tunnel backend (transport) interface and its registry.

A transport is one module in this package: it declares its name, its encapsulation
overhead (which the planner turns into the tunnel MTU and TCP MSS), the tools it runs,
whether it encrypts, its default UDP port, and renders one gateway's tunnel items. Adding
a transport means adding a module to this package that registers itself; nothing else
changes (the package imports every module in it; the intent accepts its name, the planner
sizes its MTU and allocates VNIs if it asks, the renderers and targets use it).

This package sits beside the stages: it imports no stage at run time (the plan types are
only named in annotations), so the intent and plan stages may use the registry.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from polynimbus.errors import Problem
from polynimbus.node import Item, Process, Route
from polynimbus.registry import Registry

if TYPE_CHECKING:
    from polynimbus.plan.model import Plan, SitePlan

IFNAMSIZ = 15
"""Longest interface name Linux takes, in characters."""


def daemon(argv: Sequence[str], files: Iterable[tuple[str, str]] = ()) -> Process:
    """A tunnel daemon as a node process: ``argv`` started in the node's file directory,
    where ``files`` (``(relative name, text)``) are written first, 0600 (they may hold
    private keys); leading ``NAME=value`` words of ``argv`` go into its environment. Its
    name is ``BASENAME:LASTARG`` of the program; its digest (16 hex digits) covers the
    command line and every file, so a changed configuration restarts it.
    """
    argv = tuple(argv)
    files = tuple(sorted(files))
    canon = json.dumps([argv, files])
    digest = hashlib.sha256(canon.encode()).hexdigest()[:16]
    i = 0  # leading NAME=value words are the process's environment (env(1) style)
    while i < len(argv) - 1 and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", argv[i]):
        i += 1
    name = f"{argv[i].rsplit('/', 1)[-1]}:{argv[-1]}"
    return Process(name, argv, files=files, digest=digest)


def parallel_ifname(base: str, k: int) -> str:
    """The name of the ``k``-th (0-based) of parallel tunnel interfaces whose first is
    ``base``: ``base`` itself for ``k`` 0, else ``base`` + ``p`` + ``k`` in base 36, so all
    of them match the nftables pattern ``base*`` and stay as host-unique as ``base``.

    Raises:
        ValueError: ``k`` outside 0..35, or ``base`` longer than :data:`IFNAMSIZ` - 2.
    """
    if not 0 <= k < 36:
        raise ValueError(f"parallel tunnel index {k} outside 0..35")
    if len(base) > IFNAMSIZ - 2:
        raise ValueError(f"{base!r}: too long for parallel tunnel names (13 characters max)")
    if k == 0:
        return base
    return f"{base}p{'0123456789abcdefghijklmnopqrstuvwxyz'[k]}"


def ecmp_routes(prefixes: Iterable[str], devs: Sequence[str]) -> list[Route]:
    """Routes for ``prefixes`` through every interface of ``devs`` (on-link, TUN or
    point-to-point tunnels): a plain route for one device, an equal-cost multipath route
    for several (the gateway hashes each flow on its layer-4 header:
    ``net.ipv4.fib_multipath_hash_policy`` 1, ``net.ipv6.fib_multipath_hash_policy`` 1,
    set by :func:`polynimbus.render.gateway.render_gateway` when ``plan.parallel`` > 1).
    """
    if len(devs) == 1:
        return [Route(p, dev=devs[0]) for p in prefixes]
    return [Route(p, multipath=tuple(devs)) for p in prefixes]


class TunnelBackend:
    """What every transport declares and provides.

    Class attributes:
        name: the transport's name in intents (``overlay.transport``).
        encrypted: whether the tunnel encrypts (the integration tests check the wire).
        needs_keys: whether gateways need key pairs.
        tools: commands the backend runs, each with the Debian package providing it.
        default_port: UDP port when the intent gives none.
        overhead: bytes of encapsulation added to each inner packet over an IPv4 underlay.
        summary: one line for ``--help`` and error hints.
        vni_per_tunnel: whether the planner allocates a VNI to each tunnel.
        gateway_interface: whether a gateway has one tunnel interface for all its peers
            (its host-unique name is ``SitePlan.tunnel_if``), rather than one per peer.
        checks_source: whether the tunnel admits from a peer only packets whose source is
            routed to that peer (WireGuard's AllowedIPs).
        daemons: basenames of the programs the backend runs as node processes (the lab
            finds them in a lab's namespaces, to diff and to remove them).
        max_parallel: the most tunnels per peer pair it can run (``overlay.parallel``).
        credential_dirs: subdirectories of the state directory holding its credentials
            (removed when the lab moves to another transport).
        max_tunnel_mtu: the largest inner packet the implementation carries, bytes (e.g.
            strongSwan's libipsec: 1400), or ``None``; caps the tunnel MTU.
        carries_ipv6: whether it carries IPv6 inside (a dual-stack overlay, SRv6); the
            intent check refuses a dual-stack overlay on a transport that does not.
        ready_timeout_s: how long ``up`` waits, at most, for the tunnels of a daemon it
            (re)started to carry traffic (a TLS or IKE handshake after the start); 0 when
            they carry it at once (WireGuard's handshake rides the first packet).
        supports_failover: whether its gateways can run the failover agent
            (``overlay.failover``, :mod:`polynimbus.plan.failover`).
    """

    name: ClassVar[str]
    encrypted: ClassVar[bool]
    needs_keys: ClassVar[bool] = False
    tools: ClassVar[dict[str, str]] = {}
    default_port: ClassVar[int]
    overhead: ClassVar[int]
    summary: ClassVar[str] = ""
    vni_per_tunnel: ClassVar[bool] = False
    gateway_interface: ClassVar[bool] = False
    checks_source: ClassVar[bool] = False
    daemons: ClassVar[frozenset[str]] = frozenset()
    max_parallel: ClassVar[int] = 1
    max_tunnel_mtu: ClassVar[int | None] = None
    credential_dirs: ClassVar[tuple[str, ...]] = ()
    carries_ipv6: ClassVar[bool] = True
    ready_timeout_s: ClassVar[float] = 0.0
    supports_failover: ClassVar[bool] = False

    def plan_problems(self, plan: Plan) -> list[Problem]:
        """What this transport cannot carry in ``plan``, which only the planned topology
        shows (e.g. a gateway routing through two transit peers): problems with the YAML
        path of the setting to change and a hint. :func:`polynimbus.plan.build_plan` raises
        them as an :class:`~polynimbus.errors.IntentError`, so ``validate``, ``plan`` and
        ``up --dry-run`` refuse the intent before anything is rendered. Default: none."""
        return []

    def required_tools(self, impl: str) -> dict[str, str]:
        """Commands needed with implementation ``impl``, each with its Debian package."""
        return dict(self.tools)

    def implementation(self) -> str:
        """The implementation this machine will use (detected, not assumed), e.g.
        WireGuard's ``kernel`` or ``userspace``; ``default`` where there is one only."""
        return "default"

    def implementation_note(self, impl: str) -> str:
        """One line for ``polynimbus plan``: what ``impl`` is and why it was chosen."""
        return self.summary

    def default_parallel(self, cores: int) -> int:
        """Tunnels per peer pair when the intent gives no ``overlay.parallel``: 1, unless
        the backend's implementation is bound to one core per tunnel and the gateway has
        more (seed 004 spreads IPsec over cores for that reason)."""
        return 1

    def credentials(
        self, plan: Plan, state_dir: Path, rotate: bool = False, dry_run: bool = False
    ) -> Mapping[str, Any]:
        """Per-site credentials for :meth:`gateway_items`, kept in ``state_dir``: created
        when missing, all new with ``rotate``; a dry run writes nothing (stand-ins).
        Default: WireGuard key pairs (:class:`polynimbus.keys.KeyStore`) when
        ``needs_keys``, else none.

        Raises:
            KeyFileError: a stored credential is unsafe or corrupt.
        """
        from polynimbus.keys import KeyStore, generate

        if not self.needs_keys:
            return {}
        sites = [s.name for s in plan.sites]
        sites += [s.standby.key for s in plan.sites if s.standby]  # gateways: 2
        if not dry_run:
            return KeyStore(state_dir).ensure(sites, rotate=rotate)
        stored = {} if rotate else KeyStore(state_dir).load(sites)
        return {s: stored.get(s) or generate() for s in sites}

    def ifname_pattern(self, plan: Plan, site: SitePlan) -> str:
        """The gateway's tunnel interfaces as nftables matches them (name or ``prefix*``)."""
        raise NotImplementedError

    def tunnel_ports(self, plan: Plan, a: int, b: int) -> list[int]:
        """UDP ports of the tunnels between the sites of indices ``a`` and ``b`` (one per
        parallel tunnel, the same at both ends): by default ``port`` .. ``port + parallel
        - 1``."""
        return [plan.port + k for k in range(plan.parallel)]

    def port_range(self, port: int, parallel: int, sites: int) -> tuple[int, int]:
        """The lowest and highest UDP port any tunnel uses, from the overlay's ``port``,
        ``parallel`` tunnels per pair and the number of ``sites`` (an intent can be checked
        before it is planned)."""
        return port, port + parallel - 1

    def admitted(self, plan: Plan, site: SitePlan) -> list[tuple[str, int]]:
        """``(peer public address, UDP port)`` pairs the gateway's firewall admits from the
        internet for its tunnels: by default every peer to ``port`` .. ``port + parallel
        - 1`` (a transport with a port per tunnel gives its own)."""
        ports = range(plan.port, plan.port + plan.parallel)
        out = [(plan.sites[p.site].public_address, k) for p in site.peers for k in ports]
        standbys = [plan.sites[p.site].standby for p in site.peers]
        return out + [(sb.public_address, k) for sb in standbys if sb for k in ports]

    def gateway_items(
        self, plan: Plan, site: SitePlan, creds: Mapping[str, Any], impl: str
    ) -> list[Item]:
        """Tunnel links, overlay routes (transit included), processes and configuration of
        ``site``'s gateway, without knowing where the gateway runs; ``plan.parallel``
        tunnels per peer pair.

        Args:
            creds: :meth:`credentials` by site name.
            impl: :meth:`implementation`'s choice.
        """
        raise NotImplementedError


TRANSPORTS: Registry[type[TunnelBackend]] = Registry("transport")


def get_transport(name: str) -> TunnelBackend:
    """An instance of the transport called ``name``.

    Raises:
        PolynimbusError: unknown transport (lists the known ones).
    """
    return TRANSPORTS.get(name)()
