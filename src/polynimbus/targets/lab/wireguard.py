"""WireGuard configuration of lab gateways (kernel module or ``wireguard-go``), applied
with ``wg syncconf`` to a new interface and with a ``wg set`` of only what differs to a
running one (so traffic through the peers that stay is not disturbed), read back with
``wg showconf``, compared by meaning.

``wireguard-go`` has no option for its UDP socket buffers, so the lab sets them on the
daemon's own sockets (``WireGuardConfig.socket_buffer``): ``pidfd_getfd(2)`` takes a copy
of each UDP socket descriptor of the daemon (root may), and ``SO_RCVBUFFORCE`` /
``SO_SNDBUFFORCE`` set the size beyond ``net.core.rmem_max``. The daemon binds its sockets
anew when its port changes (``wg syncconf``), so they are set after every configuration,
and read back (``SO_RCVBUF``) when the lab is observed.

A gateway's failover agent (:mod:`polynimbus.agent.failover`) moves AllowedIPs while a
tunnel is dead and declares them (:data:`~polynimbus.agent.failover.MOVED_FILE`). Issue 9
asks for changes without disturbance, during a failover too: an ``up`` that put the
planned AllowedIPs back on a dead peer would black-hole its site's traffic until the agent
reconciles, and ``verify`` would report the agent's work as drift. So the lab honours the
declaration (:func:`declared`), only while it is trustworthy: the agent runs in the
namespace with the digest written in it, and (when applying) the declaration's planned
AllowedIPs are the rendered ones (else the plan changed under the agent, which restarts
anyway: the plan is applied as it is).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import ipaddress
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from polynimbus.agent.failover import MOVED_FILE, locked
from polynimbus.errors import ApplyError
from polynimbus.node import WireGuardConfig
from polynimbus.render.failover import FAILOVER_CONFIG
from polynimbus.targets.lab import netns, processes
from polynimbus.tunnels.wireguard import parse_wg_config, wg_digest

SYS_PIDFD_GETFD = 438
"""``pidfd_getfd`` in Linux's common syscall table (Linux >= 5.6)."""
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

WG_SOCKET_DIR = Path("/var/run/wireguard")
"""Where ``wireguard-go`` keeps its control sockets (host-wide, not per namespace)."""
SOCKET_TIMEOUT_S = 5.0


def _daemon_pid(ns: str, ifname: str) -> int | None:
    """The ``wireguard-go`` serving ``ifname`` in ``ns``, or ``None`` (kernel WireGuard)."""
    for p in processes.running([ns]).get(ns, []):
        if os.path.basename(p.argv[0]) == "wireguard-go" and p.argv[-1] == ifname:
            return p.pid
    return None


@contextlib.contextmanager
def _udp_sockets(pid: int) -> Iterator[list[socket.socket]]:
    """Copies of the UDP sockets of process ``pid`` (closed on exit; the originals stay)."""
    udp: set[int] = set()
    for table in ("udp", "udp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            udp |= {int(line.split()[9]) for line in f.readlines()[1:]}
    libc = ctypes.CDLL(None, use_errno=True)
    copies: list[socket.socket] = []
    pidfd = os.pidfd_open(pid)
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if not link.startswith("socket:[") or int(link[8:-1]) not in udp:
                continue
            copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(fd), 0)
            if copy < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"pidfd_getfd on wireguard-go {pid}: {os.strerror(err)}")
            copies.append(socket.socket(fileno=copy))
        yield copies
    finally:
        os.close(pidfd)
        for c in copies:
            c.close()


def socket_buffer(ns: str, ifname: str) -> int | None:
    """The smallest receive buffer (as set, bytes) of the UDP sockets of the
    ``wireguard-go`` serving ``ifname``; ``None`` without such a daemon or socket."""
    pid = _daemon_pid(ns, ifname)
    if pid is None:
        return None
    try:
        with _udp_sockets(pid) as socks:
            sizes = [s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2 for s in socks]
    except OSError:
        return None
    return min(sizes) if sizes else None


def set_socket_buffer(ns: str, ifname: str, size: int) -> None:
    """Give every UDP socket of the ``wireguard-go`` serving ``ifname`` ``size``-byte receive
    and send buffers.

    Raises:
        ApplyError: no such daemon, or the kernel refused (e.g. ``pidfd_getfd`` before
            Linux 5.6, or a ptrace policy forbidding it).
    """
    pid = _daemon_pid(ns, ifname)
    if pid is None:
        raise ApplyError(f"no wireguard-go serves {ifname} in {ns}", "run up again")
    deadline = time.monotonic() + SOCKET_TIMEOUT_S
    try:
        while True:  # the daemon opens its sockets once its interface is up
            with _udp_sockets(pid) as socks:
                for s in socks:
                    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
                    s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
            if socks or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    except OSError as exc:
        raise ApplyError(
            f"cannot set the UDP buffers of wireguard-go for {ifname} in {ns}: {exc}",
            "pidfd_getfd needs Linux >= 5.6 and ptrace rights over the daemon "
            "(kernel.yama.ptrace_scope 0, or 1-2 with CAP_SYS_PTRACE)",
        ) from None


AGENT = f"python3:{FAILOVER_CONFIG}"
"""The node model's name of a gateway's failover agent process."""
Moves = dict[str, dict[str, list[str]]]
"""Public key -> ``{"planned": [...], "now": [...]}``: AllowedIPs a failover agent moved."""


def _prefixes(ips: object) -> list[str]:
    """``ips`` (a list of prefixes) in canonical form, sorted; raises ValueError if it is none."""
    if not isinstance(ips, list):
        raise ValueError(ips)
    return sorted(str(ipaddress.ip_network(str(x), strict=False)) for x in ips)


def parse_moves(data: object, digest: str, ifname: str, pid: int | None = None) -> Moves:
    """The moves of a failover agent's declaration ``data`` (parsed JSON,
    :func:`polynimbus.agent.failover.declaration`) that apply to interface ``ifname``,
    when it was written by the agent running with ``digest`` (and, given ``pid``, by that
    very process: an agent killed before it could remove its file leaves one with the same
    digest for its successor); ``{}`` otherwise (another agent's, another interface's,
    malformed)."""
    if not digest or not isinstance(data, dict) or data.get("digest") != digest:
        return {}
    if pid is not None and data.get("pid") != pid:
        return {}
    if ifname not in (data.get("interfaces") or []) or not isinstance(data.get("peers"), dict):
        return {}
    try:
        return {
            str(key): {"planned": _prefixes(m["planned"]), "now": _prefixes(m["now"])}
            for key, m in data["peers"].items()
        }
    except (KeyError, TypeError, ValueError):
        return {}


LOCK_TIMEOUT_S = 2.0
"""Longest the lab waits for a failover agent's lock, s; then it applies the plan as it is
(an agent stopped inside its lock must not hang ``up``)."""


@contextlib.contextmanager
def declared(ns: str, ifname: str, lock: bool = False) -> Iterator[Moves]:
    """The moves the failover agent running in ``ns`` declares for ``ifname``
    (:func:`parse_moves`; ``{}`` without an agent or a declaration), for the block;
    with ``lock``, the agent does not move anything during it
    (:func:`polynimbus.agent.failover.locked`)."""
    moves: Moves = {}
    with contextlib.ExitStack() as stack:
        for p in processes.running([ns]).get(ns, []):
            if processes.name_of(p.argv) != AGENT:
                continue
            try:
                directory = Path(os.readlink(f"/proc/{p.pid}/cwd"))
                if lock:
                    stack.enter_context(locked(directory, timeout_s=LOCK_TIMEOUT_S))
                data = json.loads((directory / MOVED_FILE).read_text())
            except (OSError, ValueError, TimeoutError):
                break  # no usable declaration: the plan is applied as it is
            moves = parse_moves(data, processes.digest_of(p.pid), ifname, p.pid)
            break
        yield moves


def _digest(parsed: dict[str, Any]) -> str:
    """:func:`wg_digest` of a configuration already parsed (:func:`parse_wg_config`)."""
    return hashlib.sha256(json.dumps(parsed, sort_keys=True).encode()).hexdigest()[:16]


def as_planned(live: dict[str, Any], moves: Moves) -> dict[str, Any]:
    """``live`` (:func:`parse_wg_config`) with the moved peers' AllowedIPs reported as the
    planned ones, when every moved peer it has holds exactly what the agent declared
    (``now``); else ``live`` as it is (a drift, or the agent has not finished)."""
    peers = live["peers"]
    found = {k: m for k, m in moves.items() if k in peers}
    if not found or any(_prefixes(peers[k]["allowed_ips"]) != m["now"] for k, m in found.items()):
        return live
    return live | {
        "peers": peers | {k: peers[k] | {"allowed_ips": m["planned"]} for k, m in found.items()}
    }


def kept(moves: Moves, want: dict[str, Any]) -> dict[str, list[str]]:
    """Public key -> AllowedIPs to keep instead of ``want``'s (:func:`parse_wg_config` of
    the rendered configuration): the agent's ``now``, when each moved peer ``want`` has is
    planned as the agent believes; ``{}`` when one is not (the plan changed)."""
    peers = want["peers"]
    found = {k: m for k, m in moves.items() if k in peers}
    if any(_prefixes(peers[k]["allowed_ips"]) != m["planned"] for k, m in found.items()):
        return {}
    return {k: m["now"] for k, m in found.items()}


def observe(ns: str, ifname: str) -> WireGuardConfig | None:
    """The live configuration of ``ifname`` in ``ns`` (digest and, with ``wireguard-go``,
    its sockets' buffer), or ``None``. AllowedIPs a running failover agent moved and
    declared are read as the planned ones (:func:`as_planned`): no drift, nothing to
    change during a failover."""
    res = netns.run(["ip", "netns", "exec", ns, "wg", "showconf", ifname])
    if res.returncode != 0 or not res.stdout.strip():
        return None
    digest = wg_digest(res.stdout)
    with declared(ns, ifname) as moves:
        if moves:
            digest = _digest(as_planned(parse_wg_config(res.stdout), moves))
    return WireGuardConfig(ifname, digest, "", socket_buffer(ns, ifname))


_KNOWN_KEYS = frozenset(
    {"privatekey", "listenport", "publickey", "endpoint", "allowedips", "persistentkeepalive"}
)
"""The settings (lower case) :func:`changes` applies; a configuration with another one is
applied whole with ``wg syncconf``."""


def _live(ns: str, ifname: str) -> dict[str, Any] | None:
    """The live configuration of ``ifname`` (:func:`parse_wg_config`), or ``None`` when it
    has none yet (no private key: a new interface) or cannot be read."""
    res = netns.run(["ip", "netns", "exec", ns, "wg", "showconf", ifname])
    if res.returncode != 0:
        return None
    live: dict[str, Any] = parse_wg_config(res.stdout)
    return live if live["private_key"] else None


def changes(
    live: dict[str, Any], config: str, moves: Moves | None = None
) -> tuple[list[str], str | None] | None:
    """The ``wg set`` arguments that turn ``live`` (:func:`parse_wg_config`'s form) into
    ``config`` (``wg setconf`` text) touching only what differs, and the private key to
    hand over on its standard input (when it changes, else ``None``); ``([], None)`` when
    nothing differs; ``None`` when ``config`` has a setting this does not handle (then
    ``wg syncconf`` applies it whole).

    Why not ``wg syncconf`` on a running interface: it always gives the listen port (so
    ``wireguard-go`` closes its UDP sockets and binds new ones), and it replaces every
    peer's allowed IPs (each peer is briefly without any): packets arriving or leaving
    then are lost. Measured here: a peer added and removed 100 times on two gateways under a
    ping every 2 ms between them lost 15 of 13,357 pings with ``wg syncconf``, none of
    17,678 with this. A peer whose allowed IPs change still gets them replaced (wg(8) of
    wireguard-tools 1.0.20210914 has no incremental form); peers that stay as they are are
    not touched. The peers a failover agent moved (``moves``, see :func:`kept`) keep the
    agent's AllowedIPs.
    """
    keys = {
        line.split("=", 1)[0].strip().lower()
        for line in (raw.split("#", 1)[0] for raw in config.splitlines())
        if "=" in line
    }
    if not keys <= _KNOWN_KEYS:
        return None
    want: dict[str, Any] = parse_wg_config(config)
    for pub, ips in kept(moves or {}, want).items():
        want["peers"][pub] = want["peers"][pub] | {"allowed_ips": ips}
    argv: list[str] = []
    key = None
    if want["private_key"] != live["private_key"]:
        argv += ["private-key", "/dev/stdin"]
        key = f"{want['private_key']}\n"
    if want["listen_port"] != live["listen_port"]:
        argv += ["listen-port", str(want["listen_port"] or 0)]
    peers, now = want["peers"], live["peers"]
    for pub in sorted(set(now) - set(peers)):
        argv += ["peer", pub, "remove"]
    for pub, peer in peers.items():
        if now.get(pub) == peer:
            continue
        argv += ["peer", pub]
        if peer["endpoint"]:
            argv += ["endpoint", peer["endpoint"]]
        argv += ["allowed-ips", ",".join(peer["allowed_ips"])]
        argv += ["persistent-keepalive", str(peer["keepalive"] or "off")]
    return argv, key


def create(ns: str, item: WireGuardConfig, userspace: bool) -> None:
    """Apply ``item``: on a new interface with ``wg syncconf``; on a configured one with
    one ``wg set`` of what differs (:func:`changes`), so that peers left as they are keep
    their sessions, and the daemon its sockets, and the AllowedIPs a failover agent moved
    stay moved (read and set while the agent waits, :func:`declared`). The private key is
    handed over through a pipe, never written to a file or a command line.

    Raises:
        ApplyError: the control socket did not appear, or ``wg`` failed.
    """
    if userspace:
        sock = WG_SOCKET_DIR / f"{item.ifname}.sock"
        deadline = time.monotonic() + SOCKET_TIMEOUT_S
        while not sock.exists():
            if time.monotonic() > deadline:
                raise ApplyError(
                    f"wireguard-go has no control socket {sock} after {SOCKET_TIMEOUT_S:.0f} s",
                    "run up again; see the log in the state directory's run/",
                )
            time.sleep(0.02)
    with declared(ns, item.ifname, lock=True) as moves:
        live = _live(ns, item.ifname)
        update = None if live is None else changes(live, item.config, moves)
        if update is None:
            # the configuration goes through a pipe: no file ever holds the private key
            netns.ns_exec(
                ns,
                ["wg", "syncconf", item.ifname, "/dev/stdin"],
                input_text=item.config,
                what=f"wg syncconf {item.ifname}",
            )
        elif update[0]:
            argv, key = update
            netns.ns_exec(
                ns, ["wg", "set", item.ifname, *argv], input_text=key, what=f"wg set {item.ifname}"
            )
    if item.socket_buffer is not None and userspace:
        set_socket_buffer(ns, item.ifname, item.socket_buffer)
