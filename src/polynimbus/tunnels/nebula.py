"""Nebula transport: Debian's nebula 1.6, one daemon per gateway (and per parallel tunnel).

Nebula (slackhq/nebula) is a user-space mesh VPN over UDP: Noise IX handshakes between
nodes whose certificates a nebula CA signed, AES-256-GCM data packets, a TUN interface per
node. The lab's gateways become nebula nodes:

- **CA and certificates** (``nebula-cert ca``, ``nebula-cert sign`` per gateway and
  parallel tunnel), kept in ``STATE_DIR/nebula/`` (directory 0700, every file 0600) by
  :func:`ensure_credentials`; ``up --rotate-keys`` makes a new CA and new certificates, and
  the daemons restart because their configuration's digest changes. A certificate carries
  the gateway's nebula address and, as ``-subnets``, every IPv4 prefix the gateway serves
  (:func:`served_prefixes`: its own block, and on hub and MST the blocks it forwards).
- **Addresses**: nebula needs each node's address inside one nebula network on its TUN.
  That network must not meet the plan's numbering: :func:`nebula_networks` takes the first
  /15 of 100.64.0.0/10 (RFC 6598; then 172.16.0.0/12) that overlaps none of the address
  space, the emulated underlay (198.18.0.0/15), TEST-NET-1 and 169.254.0.0/16 (tenants'
  transit, SRv6 links). A gateway's address is the network's ``1 + i``-th, ``i`` being the
  index of its underlay /31, which the numbering plan keeps when other sites come and go
  (:func:`nebula_address`); a plan whose public addresses are not the lab's uses the
  site's position in the plan instead.
- **Routes**: the sites' blocks are nebula ``tun.unsafe_routes`` via the peer's nebula
  address. Nebula 1.6 installs those routes itself (proto boot, no ``install: false``
  before 1.7), so each is given metric :data:`UNSAFE_ROUTE_METRIC` + k (parallel daemons
  would otherwise collide on the same key and the second would exit) and the node model
  declares the polynimbus route (metric 0, ``proto 250``: what apply observes) over all the
  gateway's nebula interfaces (:func:`~polynimbus.tunnels.base.ecmp_routes`).
- **Discovery**: none needed: ``static_host_map`` lists every peer's public address and
  port. The hub (topology ``hub``) or else the first site is the lighthouse
  (``am_lighthouse``); its peers name it in ``lighthouse.hosts``; punching and relays off.
- **Firewall** (nebula's own, on the decrypted packets): outbound anything; inbound only
  from the certificates of the gateway's peers (``host: PEER``), any protocol: the overlay
  carries whatever the sites' hosts send, transit and tenants' VXLAN (UDP 8472 between
  gateway addresses) included. Another node signed by the same CA that is not a peer
  (a stolen certificate, a gateway of another topology) is dropped.
- **Source check**: nebula drops an inbound packet whose source is neither the peer's
  nebula address nor in its certificate's subnets, and an outbound one whose source is not
  in the node's own certificate (WireGuard's AllowedIPs): ``checks_source`` is True.
  A gateway's own packets to another site leave from its nebula address unless bound to
  its overlay address (``ping -I``); on hub and MST they reach its direct peers only.
- **Parallel tunnels** (``overlay.parallel: N``): N daemons per gateway, the k-th on port
  ``plan.port + k``, TUN ``base`` + ``pK`` (:func:`~polynimbus.tunnels.base.parallel_ifname`),
  nebula network k, talking to the peers' k-th; flows are spread over them by the
  layer-4 multipath hash. Nebula's own multi-queue (``routines``) is not used: with one
  peer pair the outer 4-tuple is fixed, so SO_REUSEPORT hands every received packet to
  the same socket and routine (only the sending side spreads); see docs/design.md.

Not carried: IPv6 (nebula 1.6 certificates, addresses and unsafe routes are IPv4 only), so
a dual-stack or SRv6 plan is refused. The Noise IX handshake's first message carries the
initiator's certificate in clear (name, nebula address, subnets): a passive observer of
the underlay learns which blocks a gateway serves; data packets are encrypted.

Sources: nebula 1.6.1 ``examples/config.yml`` and nebula.yml(5) (Debian
``/usr/share/doc/nebula/examples/config.yml``), nebula-cert(1); behaviours checked by hand
on this machine (route installation, firewall and source checks, relative paths).
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from polynimbus import names
from polynimbus.errors import CapabilityError, KeyFileError, PlanError
from polynimbus.keys import write_private_file
from polynimbus.node import Address, Item, Link
from polynimbus.tunnels.base import TRANSPORTS, TunnelBackend, daemon, ecmp_routes, parallel_ifname

if TYPE_CHECKING:
    from polynimbus.plan.model import Plan, SitePlan

DEFAULT_PORT = 4242
"""Nebula's customary UDP port (its example configuration's)."""
NETWORK_PREFIXLEN = 15
"""Size of a nebula network: one address per underlay /31 (65,536) plus the network's."""
NETWORK_RANGES = (IPv4Network("100.64.0.0/10"), IPv4Network("172.16.0.0/12"))
"""Where nebula networks are taken from, in order (RFC 6598 shared space, then RFC 1918)."""
AVOID = (
    IPv4Network("198.18.0.0/15"),  # the emulated underlay (numbering.UNDERLAY_SPACE)
    IPv4Network("192.0.2.0/24"),  # the emulated internet's service address
    IPv4Network("169.254.0.0/16"),  # tenants' transit, SRv6 links
)
"""Ranges a nebula network never overlaps, besides the plan's address space."""
UNSAFE_ROUTE_METRIC = 1000
"""Metric of the routes nebula installs itself for its unsafe routes (+ k for the k-th
parallel daemon); polynimbus's own routes (metric 0) take precedence."""
SOCKET_BUFFER = 8 * 1024 * 1024
"""UDP receive and send buffers, bytes (``listen.read_buffer``/``write_buffer``; nebula
forces them past ``rmem_max``). The defaults overflowed under one TCP flow."""
TX_QUEUE = 5000
"""TUN transmit queue, packets (``tun.tx_queue``; nebula's default 500 dropped packets
under one TCP flow here, which TCP saw as losses)."""
BATCH = 64
"""Packets read per ``recvmmsg`` (``listen.batch``; nebula's default, 128 measured no
better)."""
ROUTINES = 1
"""Reader threads per daemon (``routines``): see the module docstring."""
CIPHER = "aes"
"""Data cipher, AES-256-GCM (``cipher``; must be the same on every node)."""
CA_DURATION_H = 8760
"""Validity of a CA, hours (nebula-cert's default: one year); certificates end with it."""
RENEW_BEFORE_S = 30 * 24 * 3600
"""A CA closer than this to its end is replaced (with every certificate) on ``up``."""
CERT_TIMEOUT_S = 30.0
MAX_PARALLEL = 8
"""Most nebula daemons per gateway (``overlay.parallel``)."""


def nebula_if(lab: str, site_id: str) -> str:
    """A gateway's first nebula TUN interface, ``nbTAGSID`` (12 chars, host-unique like
    the WireGuard name: the lab's tag and the site's id); parallel ones add ``pK``."""
    return names.check_ifname(f"nb{names.lab_tag(lab)}{site_id}")


def tunnel_ifnames(plan: Plan, site: SitePlan) -> list[str]:
    """``site``'s nebula interfaces, one per parallel tunnel."""
    base = nebula_if(plan.name, site.site_id)
    return [parallel_ifname(base, k) for k in range(plan.parallel)]


def require_ipv4(plan: Plan) -> None:
    """Refuse a plan nebula 1.6 cannot carry.

    Raises:
        PlanError: the overlay is dual-stack (or carries SRv6).
    """
    if plan.ipv6:
        raise PlanError(
            "the nebula transport carries IPv4 only (nebula 1.6 certificates, addresses and "
            "routes are IPv4), but this overlay is dual-stack (ipv6, srv6, services or chains)",
            "set overlay.transport: wireguard, or overlay.ipv6: false without SRv6",
        )


def nebula_networks(plan: Plan) -> list[IPv4Network]:
    """The nebula networks of the ``plan.parallel`` daemons of every gateway (the k-th
    daemon's is the k-th): /15s of :data:`NETWORK_RANGES` that overlap neither
    ``plan.address_space`` nor :data:`AVOID`, in address order.

    Raises:
        PlanError: not enough of them are free (an address space over those ranges).
    """
    space = IPv4Network(plan.address_space)
    out: list[IPv4Network] = []
    for r in NETWORK_RANGES:
        for net in r.subnets(new_prefix=NETWORK_PREFIXLEN):
            if net.overlaps(space) or any(net.overlaps(a) for a in AVOID):
                continue
            out.append(net)
            if len(out) == plan.parallel:
                return out
    raise PlanError(
        f"the nebula transport needs {plan.parallel} free /{NETWORK_PREFIXLEN} for its "
        f"networks in {' or '.join(map(str, NETWORK_RANGES))}, but address_space "
        f"{space} leaves {len(out)}",
        "choose an address_space outside 100.64.0.0/10 (the default 10.0.0.0/8 is)",
    )


def _address_index(plan: Plan, site: SitePlan) -> int:
    """The gateway's index for its nebula address: its underlay /31 (stable), else its
    position in the plan."""
    base = IPv4Network("198.18.0.0/15")
    pub = IPv4Address(site.public_address)
    if pub in base:
        return (int(pub) - int(base.network_address)) >> 1
    return next(i for i, s in enumerate(plan.sites) if s.name == site.name)


def nebula_address(plan: Plan, site: SitePlan, k: int = 0) -> IPv4Interface:
    """The nebula address (with the network's length) of ``site``'s ``k``-th daemon."""
    net = nebula_networks(plan)[k]
    return IPv4Interface((int(net.network_address) + 1 + _address_index(plan, site), net.prefixlen))


def _peer_entry(plan: Plan, of: int, towards: int) -> tuple[int, ...]:
    """The sites gateway ``of`` routes through its peer ``towards`` (``()`` if none);
    peers are sorted by index, so a binary search finds the entry."""
    peers = plan.sites[of].peers
    i = bisect.bisect_left(peers, towards, key=lambda p: p.site)
    if i < len(peers) and peers[i].site == towards:
        return peers[i].reaches
    return ()


def served_prefixes(plan: Plan, site: SitePlan) -> list[str]:
    """The IPv4 prefixes ``site``'s gateway serves, its certificate's ``-subnets``: its own
    block and every block one of its peers routes through it (transit on hub and MST).
    Sorted by address."""
    me = plan.site_index(site.name)
    sites = {me}
    if plan.topology != "full-mesh":  # a full mesh routes everything direct
        for p in site.peers:
            sites.update(_peer_entry(plan, p.site, me))
    prefixes = {x for d in sites for x in plan.prefixes(d) if ":" not in x}
    return sorted(prefixes, key=lambda x: IPv4Network(x))


def lighthouse(plan: Plan) -> SitePlan:
    """The lighthouse: the hub, else the first site."""
    if plan.hub is not None:
        return plan.site(plan.hub)
    return plan.sites[0]


# ------------------------------------------------------------------------ credentials


@dataclass(frozen=True)
class NebulaCredentials:
    """One gateway's nebula PKI material, PEM texts.

    Attributes:
        ca: the lab's CA certificate.
        certs: the gateway's certificate for each parallel daemon (k-th for the k-th).
        keys: the matching X25519 private keys (never shown).
    """

    ca: str
    certs: tuple[str, ...]
    keys: tuple[str, ...] = field(repr=False)

    def __repr__(self) -> str:  # never show a private key
        return f"NebulaCredentials(certs={len(self.certs)})"


@dataclass(frozen=True)
class _Wanted:
    name: str
    ip: str
    subnets: tuple[str, ...]


def _wanted(plan: Plan) -> dict[str, _Wanted]:
    """Certificate details by file stem ``SITE.K``."""
    out = {}
    for s in plan.sites:
        subnets = tuple(served_prefixes(plan, s))
        for k in range(plan.parallel):
            out[f"{s.name}.{k}"] = _Wanted(s.name, str(nebula_address(plan, s, k)), subnets)
    return out


def _nebula_cert(args: list[str], cwd: Path) -> None:
    """Run ``nebula-cert ARGS`` in ``cwd``.

    Raises:
        CapabilityError: nebula-cert is not installed.
        KeyFileError: it failed.
    """
    exe = shutil.which("nebula-cert")
    if exe is None:
        raise CapabilityError(
            "nebula-cert is missing (the nebula transport signs its certificates with it)",
            "apt-get install nebula",
        )
    try:
        res = subprocess.run(
            [exe, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=CERT_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KeyFileError(f"nebula-cert {args[0]} failed: {exc}", None) from None
    if res.returncode != 0:
        err = (res.stderr or res.stdout).strip().splitlines()
        raise KeyFileError(
            f"nebula-cert {args[0]} failed: {err[-1] if err else f'exit {res.returncode}'}",
            "check that the nebula package is intact (nebula-cert -version)",
        )


def _check_private_dir(path: Path) -> None:
    """Refuse a credentials directory that is a link, not ours, or not 0700.

    Raises:
        KeyFileError: it is.
    """
    st = os.lstat(path)
    hint = f"remove {path}; polynimbus creates it again (with a new CA)"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise KeyFileError(f"{path} is not a directory (a symbolic link or a file)", hint)
    if st.st_uid != os.geteuid():
        raise KeyFileError(f"{path} belongs to uid {st.st_uid}, not to you", hint)
    if stat.S_IMODE(st.st_mode) != 0o700:
        raise KeyFileError(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}, not 0700", f"chmod 700 {path}"
        )


_ROTATE = "run 'polynimbus up --rotate-keys' to make a new CA and certificates"


def _read_private(path: Path) -> str:
    """The text of credential file ``path`` after checking it is a regular 0600 file of
    ours (not followed if a link).

    Raises:
        FileNotFoundError: it does not exist.
        KeyFileError: it is unsafe or unreadable.
    """
    hint = _ROTATE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}", hint) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise KeyFileError(f"{path} is not a regular file of yours", hint)
        if stat.S_IMODE(st.st_mode) != 0o600:
            raise KeyFileError(
                f"{path} has mode {stat.S_IMODE(st.st_mode):04o}, not 0600",
                f"chmod 600 {path} if it was never readable by others; else {hint}",
            )
        return f.read(1 << 20).decode("ascii", errors="replace")


@dataclass(frozen=True)
class CertInfo:
    """What a nebula certificate says (its protobuf ``RawNebulaCertificateDetails``).

    Attributes:
        name: the node's name (here: the site's).
        ips: its nebula addresses, ``a.b.c.d/len``.
        subnets: the prefixes it may serve (unsafe routes), ``a.b.c.d/len``.
        not_after: end of validity, Unix seconds.
        public_key: the node's X25519 (or the CA's Ed25519) public key, raw bytes.
        is_ca: whether it is a CA certificate.
        issuer: hex SHA-256 of the signing CA's certificate (empty for a CA).
        fingerprint: hex SHA-256 of this certificate (what ``issuer`` names).
    """

    name: str
    ips: tuple[str, ...]
    subnets: tuple[str, ...]
    not_after: int
    public_key: bytes
    is_ca: bool
    issuer: str
    fingerprint: str


def _pem_body(text: str, label: str) -> bytes:
    """The bytes of the PEM block ``label`` in ``text``.

    Raises:
        ValueError: no such block, or bad base64.
    """
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if begin not in text or end not in text:
        raise ValueError(f"no {label} block")
    body = text.split(begin, 1)[1].split(end, 1)[0]
    return base64.b64decode("".join(body.split()), validate=True)


def _varint(b: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if i >= len(b) or shift > 63:
            raise ValueError("truncated varint")
        x = b[i]
        i += 1
        out |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return out, i


def _fields(b: bytes) -> list[tuple[int, int | bytes]]:
    """Protobuf fields of ``b`` as ``(number, value)``: varints as ints, length-delimited
    as bytes (the only wire types nebula certificates use)."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(b, i)
            out.append((number, v))
        elif wire == 2:
            n, i = _varint(b, i)
            if i + n > len(b):
                raise ValueError("truncated field")
            out.append((number, b[i : i + n]))
            i += n
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


def _cidrs(packed: list[int]) -> tuple[str, ...]:
    """``ip, mask, ip, mask...`` (uint32 each) as ``a.b.c.d/len``."""
    if len(packed) % 2:
        raise ValueError("odd address list")
    return tuple(
        str(IPv4Interface((packed[i], bin(packed[i + 1]).count("1"))))
        for i in range(0, len(packed), 2)
    )


def parse_cert(pem: str) -> CertInfo:
    """Decode a nebula 1.x certificate (``NEBULA CERTIFICATE`` PEM, protobuf
    ``RawNebulaCertificate``: details 1, signature 2; nebula ``cert/cert.proto``). The
    signature is not checked here (nebula checks it when it loads the certificate).

    Raises:
        ValueError: not a nebula certificate.
    """
    raw = _pem_body(pem, "NEBULA CERTIFICATE")
    details = next((v for n, v in _fields(raw) if n == 1 and isinstance(v, bytes)), None)
    if details is None:
        raise ValueError("no certificate details")
    name, pub, issuer = "", b"", b""
    ips: list[int] = []
    subnets: list[int] = []
    not_after, is_ca = 0, False
    for n, v in _fields(details):
        if n == 1 and isinstance(v, bytes):
            name = v.decode()
        elif n in (2, 3):
            vals: list[int] = []
            if isinstance(v, bytes):  # packed
                j = 0
                while j < len(v):
                    x, j = _varint(v, j)
                    vals.append(x)
            else:
                vals.append(v)
            (ips if n == 2 else subnets).extend(vals)
        elif n == 6 and isinstance(v, int):
            not_after = v
        elif n == 7 and isinstance(v, bytes):
            pub = v
        elif n == 8 and isinstance(v, int):
            is_ca = bool(v)
        elif n == 9 and isinstance(v, bytes):
            issuer = v
    return CertInfo(
        name,
        _cidrs(ips),
        _cidrs(subnets),
        not_after,
        pub,
        is_ca,
        issuer.hex(),
        hashlib.sha256(raw).hexdigest(),
    )


def public_of_key(pem: str) -> bytes:
    """The public key of a nebula private key: X25519 (a host's, 32 bytes) or Ed25519 (a
    CA's, 64 bytes: seed and public key).

    Raises:
        ValueError: not a nebula private key.
    """
    if "NEBULA ED25519 PRIVATE KEY" in pem:
        raw = _pem_body(pem, "NEBULA ED25519 PRIVATE KEY")
        if len(raw) != 64:
            raise ValueError("an Ed25519 key is 64 bytes")
        seed = Ed25519PrivateKey.from_private_bytes(raw[:32])
        return seed.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    raw = _pem_body(pem, "NEBULA X25519 PRIVATE KEY")
    if len(raw) != 32:
        raise ValueError("an X25519 key is 32 bytes")
    key = X25519PrivateKey.from_private_bytes(raw)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class _Store:
    """The CA and certificates in ``DIR`` (``STATE_DIR/nebula``): ``ca.crt``, ``ca.key``,
    ``SITE.K.crt``, ``SITE.K.key``. Read and checked in Python (no nebula-cert run when
    nothing changes)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.texts: dict[str, str] = {}
        self.info: dict[str, CertInfo] = {}

    def read_pair(self, stem: str) -> None:
        """Read ``STEM.crt`` and ``STEM.key`` if both exist, and check they belong together.

        Raises:
            KeyFileError: a file is unsafe or corrupt, or the key is not the certificate's.
        """
        try:
            crt = _read_private(self.dir / f"{stem}.crt")
            key = _read_private(self.dir / f"{stem}.key")
        except FileNotFoundError:
            return
        try:
            info = parse_cert(crt)
            pub = public_of_key(key)
        except ValueError as exc:
            raise KeyFileError(f"{self.dir}/{stem}: corrupt ({exc})", _ROTATE) from None
        if pub != info.public_key:
            raise KeyFileError(f"{self.dir}/{stem}.key is not the key of {stem}.crt", _ROTATE)
        self.texts[f"{stem}.crt"], self.texts[f"{stem}.key"] = crt, key
        self.info[stem] = info

    def ca_usable(self, now: float) -> bool:
        ca = self.info.get("ca")
        return ca is not None and ca.is_ca and ca.not_after - now > RENEW_BEFORE_S

    def cert_usable(self, stem: str, want: _Wanted) -> bool:
        c, ca = self.info.get(stem), self.info.get("ca")
        return (
            c is not None
            and ca is not None
            and c.issuer == ca.fingerprint
            and c.name == want.name
            and c.ips == (want.ip,)
            and c.subnets == want.subnets
        )


def ensure_credentials(
    plan: Plan, state_dir: Path, rotate: bool = False, dry_run: bool = False
) -> dict[str, NebulaCredentials]:
    """Every gateway's nebula credentials, by site name, kept in ``STATE_DIR/nebula``.

    A missing or ending CA (and, with ``rotate``, the CA in any case) is made anew, and
    with it every certificate; a certificate whose name, address or subnets no longer
    match the plan is signed again (with a new key). Certificates of sites (or parallel
    tunnels) no longer in the plan are removed. ``nebula-cert`` works in a private
    temporary directory (0700), removed after; its output is written into place with
    :func:`polynimbus.keys.write_private_file` (0600 from the first byte). A dry run reads
    what is stored and signs stand-ins in the temporary directory only: it writes nothing.

    Raises:
        PlanError: the plan is dual-stack, or no nebula network is free.
        KeyFileError: the directory or a file is unsafe or corrupt, or nebula-cert failed.
        CapabilityError: nebula-cert is missing (only when something must be signed).
    """
    require_ipv4(plan)
    wanted = _wanted(plan)
    directory = state_dir / "nebula"
    store = _Store(directory)
    exists = os.path.lexists(directory)
    if exists:
        _check_private_dir(directory)
        if not rotate:
            for stem in ["ca", *wanted]:
                store.read_pair(stem)
    now = time.time()
    new_ca = not store.ca_usable(now)
    todo = [s for s, w in wanted.items() if new_ca or not store.cert_usable(s, w)]
    if todo:
        with tempfile.TemporaryDirectory(prefix="polynimbus-nebula-") as tmp:
            work = Path(tmp)  # mkdtemp: 0700
            if new_ca:
                _nebula_cert(
                    ["ca", "-name", f"polynimbus {plan.name}", "-duration", f"{CA_DURATION_H}h"]
                    + ["-out-crt", "ca.crt", "-out-key", "ca.key"],
                    work,
                )
                store.texts["ca.crt"] = (work / "ca.crt").read_text()
                store.texts["ca.key"] = (work / "ca.key").read_text()
            else:
                write_private_file(work / "ca.crt", store.texts["ca.crt"])
                write_private_file(work / "ca.key", store.texts["ca.key"])
            for stem in todo:
                w = wanted[stem]
                args = ["sign", "-name", w.name, "-ip", w.ip]
                if w.subnets:
                    args += ["-subnets", ",".join(w.subnets)]
                _nebula_cert([*args, "-out-crt", f"{stem}.crt", "-out-key", f"{stem}.key"], work)
                store.texts[f"{stem}.crt"] = (work / f"{stem}.crt").read_text()
                store.texts[f"{stem}.key"] = (work / f"{stem}.key").read_text()
    if not dry_run:
        if not exists:
            os.mkdir(directory, 0o700)
            os.chmod(directory, 0o700)
            _check_private_dir(directory)
        _write_store(store, directory, ["ca"] * new_ca + todo, set(wanted))
    out: dict[str, NebulaCredentials] = {}
    for s in plan.sites:
        stems = [f"{s.name}.{k}" for k in range(plan.parallel)]
        out[s.name] = NebulaCredentials(
            store.texts["ca.crt"],
            tuple(store.texts[f"{x}.crt"] for x in stems),
            tuple(store.texts[f"{x}.key"] for x in stems),
        )
    return out


def _write_store(store: _Store, directory: Path, written: list[str], keep: set[str]) -> None:
    """Write the new pairs (certificate after key: a pair is only read whole), then remove
    the pairs of ``SITE.K`` stems not in ``keep``.

    Raises:
        KeyFileError: a file cannot be written.
    """
    try:
        for stem in written:
            for ext in ("key", "crt"):
                write_private_file(directory / f"{stem}.{ext}", store.texts[f"{stem}.{ext}"])
    except OSError as exc:
        raise KeyFileError(
            f"cannot write the nebula credentials in {directory}: {exc.strerror or exc}",
            f"check {directory} (mode 0700, yours)",
        ) from None
    for entry in os.listdir(directory):
        stem, dot, ext = entry.rpartition(".")
        if dot and ext in ("crt", "key") and stem != "ca" and "." in stem and stem not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / entry)


# ------------------------------------------------------------------------ configuration


def render_config(plan: Plan, site: SitePlan, creds: Mapping[str, Any], k: int = 0) -> str:
    """The nebula.yml(5) text of ``site``'s ``k``-th daemon, PKI inline (it holds the
    private key: the target writes it 0600).

    Args:
        creds: :class:`NebulaCredentials` by site name; only ``site``'s is read.

    Raises:
        KeyError: ``site`` has no credentials.
    """
    own: NebulaCredentials = creds[site.name]
    dev = tunnel_ifnames(plan, site)[k]
    port = plan.port + k
    lh = lighthouse(plan)
    peers = [plan.sites[p.site] for p in site.peers]
    static_hosts = {
        str(nebula_address(plan, p, k).ip): [f"{p.public_address}:{port}"] for p in peers
    }
    unsafe = [
        {
            "route": prefix,
            "via": str(nebula_address(plan, plan.sites[peer.site], k).ip),
            "metric": UNSAFE_ROUTE_METRIC + k,
        }
        for peer in site.peers
        for d in peer.reaches
        for prefix in plan.prefixes(d)
    ]
    am_lighthouse = lh.name == site.name
    config = {
        "pki": {"ca": own.ca, "cert": own.certs[k], "key": own.keys[k]},
        "static_host_map": static_hosts,
        "lighthouse": {
            "am_lighthouse": am_lighthouse,
            "interval": 60,
            "hosts": []
            if am_lighthouse or lh.name not in {p.name for p in peers}
            else [str(nebula_address(plan, lh, k).ip)],
        },
        "listen": {
            "host": "0.0.0.0",  # the WAN address may come after the process
            "port": port,
            "batch": BATCH,
            "read_buffer": SOCKET_BUFFER,
            "write_buffer": SOCKET_BUFFER,
        },
        "routines": ROUTINES,
        "punchy": {"punch": False, "respond": False},
        "relay": {"am_relay": False, "use_relays": False},
        "cipher": CIPHER,
        "tun": {
            "disabled": False,
            "dev": dev,
            "drop_local_broadcast": True,
            "drop_multicast": True,
            "tx_queue": TX_QUEUE,
            "mtu": plan.tunnel_mtu,
            "routes": [],
            "unsafe_routes": unsafe,
        },
        "logging": {"level": "info", "format": "text"},
        "firewall": {
            "outbound": [{"port": "any", "proto": "any", "host": "any"}],
            "inbound": [{"port": "any", "proto": "any", "host": p.name} for p in peers],
        },
    }
    head = (
        f"# polynimbus: nebula {k} of the gateway of site {site.name} in {plan.name}\n"
        "# (generated; changes are undone by the next up)\n"
    )
    return head + yaml.dump(config, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing multi-line strings (PEM) as literal blocks."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


@TRANSPORTS.register("nebula")
class NebulaBackend(TunnelBackend):
    """Encrypted tunnels with nebula (user space over TUN), its own CA and lighthouse."""

    name = "nebula"
    encrypted = True
    tools = {"nebula": "nebula", "nebula-cert": "nebula"}
    default_port = DEFAULT_PORT
    # outer IPv4 20 + UDP 8 + nebula header 16 + AES-GCM tag 16
    overhead = 20 + 8 + 16 + 16
    summary = "nebula 1.6, encrypted (user space over TUN, its own CA and lighthouse)"
    # one TUN for every peer, but not named SitePlan.tunnel_if (WireGuard's name)
    gateway_interface = False
    checks_source = True
    daemons = frozenset({"nebula"})
    credential_dirs = ("nebula",)
    max_parallel = MAX_PARALLEL
    carries_ipv6 = False  # nebula 1.6: IPv4 certificates, addresses and unsafe routes
    # a (re)started daemon's first packet to a peer starts a handshake (retried every
    # 100 ms, backing off linearly): up waits until the gateways answer through it
    ready_timeout_s = 10.0

    def implementation(self) -> str:
        return "userspace"

    def implementation_note(self, impl: str) -> str:
        return (
            "nebula (user space over TUN, AES-256-GCM): its own CA in the state directory, "
            "a lighthouse at the hub or first site, static host map, IPv4 only"
        )

    def credentials(
        self, plan: Plan, state_dir: Path, rotate: bool = False, dry_run: bool = False
    ) -> Mapping[str, Any]:
        """:func:`ensure_credentials`."""
        return ensure_credentials(plan, state_dir, rotate=rotate, dry_run=dry_run)

    def ifname_pattern(self, plan: Plan, site: SitePlan) -> str:
        base = nebula_if(plan.name, site.site_id)
        return base if plan.parallel == 1 else f"{base}*"

    def gateway_items(
        self, plan: Plan, site: SitePlan, creds: Mapping[str, Any], impl: str
    ) -> list[Item]:
        """Per parallel tunnel k: the ``nebula`` process (``nebula -config DEV``: its
        configuration file is named like its TUN, so the process is named
        ``nebula:DEV``), its TUN link and nebula address; then the overlay routes over every
        TUN (multipath when several), transit included.

        Raises:
            PlanError: a dual-stack plan, or no free nebula network.
        """
        require_ipv4(plan)
        devs = tunnel_ifnames(plan, site)
        out: list[Item] = []
        for k, dev in enumerate(devs):
            proc = daemon(("nebula", "-config", dev), [(dev, render_config(plan, site, creds, k))])
            out += [
                proc,
                Link(dev, "tun", mtu=plan.tunnel_mtu, process=proc.name),
                Address(dev, str(nebula_address(plan, site, k))),
            ]
        for peer in site.peers:
            for d in peer.reaches:
                out += ecmp_routes(plan.prefixes(d), devs)
        return out
