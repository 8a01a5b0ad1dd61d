"""The failover agent of a WireGuard gateway (``overlay.failover``; policy in
:mod:`polynimbus.plan.failover`).

Run as ``python -m polynimbus.agent.failover CONFIG.json`` inside the gateway's network
namespace. It probes every peer gateway through the tunnel (UDP echo between the gateways'
overlay addresses, every ``interval_ms``) and answers the peers' probes. When a peer misses
``down_after`` probes in a row, its prefixes move to a live *detour* peer by changing
WireGuard's cryptokey routing (``wg set IF peer KEY allowed-ips ...``, wg(8)): the detour
peer's AllowedIPs gain them, the dead peer keeps only its gateway address (``keep``), so the
probes still go straight through the dead tunnel and see it heal. Kernel routes stay as
they are: every overlay prefix already points at the WireGuard interface. After
``up_after_ms`` of answered probes the prefixes move back.

Why a probe of our own rather than FRR with BFD: on one WireGuard interface with many
peers, the peer a packet goes to is chosen by AllowedIPs, not by the route's next hop, so a
routing daemon's route change alone would not move traffic; the agent changes the one
thing that decides, from a probe that travels the same tunnel as the traffic.

Every change is logged on stdout and appended to the lab's event log
(:mod:`polynimbus.events`) as ``{"kind": "failover" | "failback", "site", "gateway",
"peer", "via"}`` (``gateway``: ``gateway``, or ``gateway-2`` for a standby). On a gateway
of a site with two gateways (``"vip"`` and ``"node"`` in the config,
:mod:`polynimbus.render.standby`), so is each move of the site's gateway address:
``{"kind": "takeover" | "release", "site", "gateway", "peer": "gateway" | "gateway-2"}``.
Moves that are not failures (a restarted agent routing around peers that still report it
lost, until both ends are READY) are made without events.

While traffic takes a detour, the agent declares what it moved in ``moved.json`` in its
working directory (:func:`declaration`): the lab target (:mod:`polynimbus.targets.lab.wireguard`)
then leaves those AllowedIPs as they are on a ``polynimbus up`` and reports no drift, instead
of putting the planned ones back on a dead tunnel (issue 9: changes without disturbance,
during a failover too).

Config (JSON, rendered by :meth:`polynimbus.tunnels.wireguard.WireGuardBackend.gateway_items`)::

    {"site": "aws", "interfaces": ["wg..."], "address": "10.1.0.254", "port": 52820,
     "interval_ms": 100, "down_after": 3, "up_after_ms": 1000,
     "peers": {"azure": {"public_key": "...", "probe": "10.2.0.254",
                         "allowed": ["10.2.0.0/24"], "keep": ["10.2.0.254/32"],
                         "detours": ["os"]}}}
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAGIC = b"PNFO"
REQUEST, REPLY = 1, 2
_HEADER = struct.Struct("!4sBIB")  # magic, type, sequence number, flags
READY = 1
"""Flag of a probe or answer: the sender would carry this peer's traffic on the direct
tunnel now (it never lost the peer, or has heard it answer for ``up_after_ms``)."""
STARTUP_GRACE_S = 5.0
"""A peer that has never answered is declared dead only after this long, s: the peers'
agents and tunnels come up at their own pace."""
RECONCILE_S = 0.2
"""While traffic takes a detour, how often the agent compares WireGuard's AllowedIPs with
what it wants, s (a ``polynimbus up`` in between puts the planned ones back). The ``up``
that revives a dead gateway of a two-gateway site does that while the standby still holds
the hosts' gateway address: the hosts' answers then come from a peer whose AllowedIPs
lack them until the agent puts them back (with 1 s, revival gaps up to 858 ms were
measured; one ``wg show`` per interface every 0.2 s costs little, and only then)."""
IP_FREEBIND = 15  # linux/in.h: bind before the address is configured
ALL_HEARD = "every peer answers"
"""Logged once every peer has answered (before, a silent peer gets the startup grace)."""
WG_TIMEOUT_S = 5.0
"""Longest a ``wg`` command may take, s (a hung control socket must not hang the agent)."""
MOVED_FILE = "moved.json"
"""The agent's declaration of the AllowedIPs it moved (:func:`declaration`), in its working
directory (the lab: its node directory, :func:`polynimbus.targets.lab.processes.files_dir`)."""
DIGEST_ENV = "POLYNIMBUS_DIGEST"
"""The digest the lab started the agent with, in its environment
(:data:`polynimbus.targets.lab.processes.DIGEST_ENV`)."""


@dataclass
class PeerState:
    """What the agent knows of one peer: ``alive`` is ``None`` until its first answer;
    times are ``time.monotonic()`` seconds."""

    name: str
    alive: bool | None = None
    last_answer: float | None = None
    streak_since: float | None = None
    via: str | None = None
    peer_ready: bool = True
    peer_lost: frozenset[str] = frozenset()
    quiet: bool = False


@dataclass
class FailoverAgent:
    """The agent's decisions, without sockets: feed it answers and ticks, it says which
    AllowedIPs each peer must have.

    Args:
        config: the parsed configuration (module docstring).
        started: ``time.monotonic()`` at start.
    """

    config: Mapping[str, Any]
    started: float
    peers: dict[str, PeerState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.peers = {name: PeerState(name) for name in self.config["peers"]}

    @property
    def me(self) -> str:
        """This gateway's name in its peers' probes (their lost lists): the site, or
        ``SITE/gateway-2`` for the standby of a two-gateway site."""
        node = self.config.get("node", "gateway")
        return self.config["site"] if node == "gateway" else f"{self.config['site']}/{node}"

    @property
    def interval_s(self) -> float:
        return float(self.config["interval_ms"]) / 1000

    def answered(self, peer: str, now: float) -> None:
        """``peer`` was heard through the tunnel at ``now``: it answered a probe, or
        probed us (either proves the path works in its direction; a path that works one
        way only is caught by the peer's report, :meth:`heard`)."""
        st = self.peers[peer]
        if st.last_answer is None or now - st.last_answer > 1.5 * self.interval_s:
            st.streak_since = now  # a probe went unanswered in between: a new streak
        st.last_answer = now

    def heard(self, peer: str, ready: bool, lost: frozenset[str] = frozenset()) -> None:
        """A probe or answer came from ``peer``, with its :data:`READY` flag and the
        peers it has lost (:meth:`lost`): it is no detour to those, and if it lost us
        (and is not ready to come back) the tunnel is dead for us too, even if its
        packets reach us (a path cut one way only)."""
        st = self.peers[peer]
        st.peer_ready, st.peer_lost = ready, lost

    def lost(self) -> frozenset[str]:
        """The peers this agent considers dead, which its probes and answers carry."""
        return frozenset(st.name for st in self.peers.values() if st.alive is False)

    def ready(self, peer: str, now: float) -> bool:
        """Whether this agent would carry ``peer``'s traffic on their direct tunnel now:
        the :data:`READY` flag it sends to ``peer``. Both ends move back only when both
        are ready, within one probe's round trip of each other: WireGuard drops what
        arrives from a peer whose AllowedIPs lack the source, so an end moving back alone
        would black-hole the other's traffic until it follows."""
        st = self.peers[peer]
        return st.alive is not False or self._streak_done(st, now)

    def _streak_done(self, st: PeerState, now: float) -> bool:
        silent = now - (st.last_answer if st.last_answer is not None else self.started)
        return (
            st.streak_since is not None
            and silent <= 1.5 * self.interval_s
            and now - st.streak_since >= float(self.config["up_after_ms"]) / 1000
        )

    def evaluate(self, now: float) -> list[dict[str, Any]]:
        """Update every peer's liveness at ``now``; returns the events (failover,
        failback) it caused, in peer order."""
        down_s = int(self.config["down_after"]) * self.interval_s
        events: list[dict[str, Any]] = []
        for st in self.peers.values():
            silent = now - (st.last_answer if st.last_answer is not None else self.started)
            if st.alive is None:
                if st.last_answer is not None and self.me in st.peer_lost:
                    # we are back (a revived gateway, a restarted agent) and the peer
                    # still routes around us: not in use until both are READY; not a
                    # failover of a tunnel that carried traffic, so no event
                    st.alive, st.quiet = False, True
                elif st.last_answer is not None:
                    st.alive = True
                elif silent > STARTUP_GRACE_S:
                    st.alive = False
            elif st.alive and (silent > down_s or (self.me in st.peer_lost and not st.peer_ready)):
                st.alive = False
            elif not st.alive and st.peer_ready and self._streak_done(st, now):
                st.alive = True
                if not st.quiet:
                    events.append(self._event("failback", st, None))
                st.via, st.quiet = None, False
        events += self._choose_detours()  # every time: a detour may lose its own path
        return events

    def _choose_detours(self) -> list[dict[str, Any]]:
        events = []
        for st in self.peers.values():
            if st.alive is not False:
                continue
            detours = self.config["peers"][st.name].get("detours", [])
            via = next(
                (
                    d
                    for d in detours
                    if d in self.peers
                    and self.peers[d].alive
                    and st.name not in self.peers[d].peer_lost
                ),
                None,
            )
            if via != st.via:
                st.via = via
                if not st.quiet:
                    events.append(self._event("failover", st, via))
        return events

    def _event(self, kind: str, st: PeerState, via: str | None) -> dict[str, Any]:
        return {
            "kind": kind,
            "site": self.config["site"],
            "gateway": self.config.get("node", "gateway"),
            "peer": st.name,
            "via": via,
        }

    def allowed_ips(self) -> dict[str, list[str]]:
        """Peer name -> the AllowedIPs it must have now (sorted)."""
        peers = self.config["peers"]
        out: dict[str, list[str]] = {}
        for name, st in self.peers.items():
            out[name] = list(peers[name]["keep"] if st.via else peers[name]["allowed"])
        for name, st in self.peers.items():
            if st.via:
                out[st.via] += peers[name]["allowed"]
        return {k: sorted(set(v)) for k, v in out.items()}


def wg_set_argv(
    interface: str, keys: Mapping[str, str], want: Mapping[str, list[str]]
) -> list[str]:
    """``wg set`` command line giving each peer in ``want`` its AllowedIPs (``keys``: peer
    name -> public key). Peers gaining prefixes come first, so a prefix moves from one peer
    to the other without a moment with neither."""
    argv = ["wg", "set", interface]
    order = sorted(want, key=lambda n: len(want[n]), reverse=True)
    for name in order:
        argv += ["peer", keys[name], "allowed-ips", ",".join(want[name])]
    return argv


def declaration(
    config: Mapping[str, Any], digest: str, want: Mapping[str, list[str]]
) -> dict[str, Any]:
    """What the agent declares it moved (:data:`MOVED_FILE`): ``{"digest": digest,
    "interfaces": [...], "peers": {PUBLIC_KEY: {"planned": [...], "now": [...]}}}``, only
    the peers whose AllowedIPs (``want``: peer name -> sorted list) differ from the plan
    (the config's ``allowed``); ``peers`` is empty when all are back. ``digest`` identifies
    the agent's config (the lab target trusts the file only while the agent it started
    with that digest runs, and while ``planned`` is what it would apply)."""
    peers = {
        config["peers"][name]["public_key"]: {
            "planned": sorted(config["peers"][name]["allowed"]),
            "now": list(ips),
        }
        for name, ips in sorted(want.items())
        if sorted(ips) != sorted(config["peers"][name]["allowed"])
    }
    return {"digest": digest, "interfaces": list(config["interfaces"]), "peers": peers}


def write_declaration(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a 0600 temporary file renamed over it),
    so a reader sees the old or the new declaration, never half of one.

    Raises:
        OSError: the directory is not writable.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, sort_keys=True)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(directory: Path, timeout_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock(2)`` on ``directory`` for the block: the agent while it
    declares and applies, the lab target while it reads the declaration and applies a
    change, so neither undoes the other's (a move declared between the lab's read and its
    ``wg set`` would otherwise be overwritten with a stale one). A directory that cannot be
    opened (removed under a stopping agent) is not locked: the agent goes on.

    Raises:
        TimeoutError: ``timeout_s`` given and the lock still held after it (an agent
            stopped inside it, a hung ``wg``): the caller goes on without it.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        if timeout_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"{directory} stayed locked {timeout_s} s") from None
                    time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def read_allowed_ips(interface: str, keys: Mapping[str, str]) -> dict[str, list[str]]:
    """Peer name -> its AllowedIPs now (``wg show IF allowed-ips``); peers not found are
    left out.

    Raises:
        subprocess.CalledProcessError: ``wg`` failed.
    """
    res = subprocess.run(
        ["wg", "show", interface, "allowed-ips"],
        capture_output=True,
        text=True,
        check=True,
        timeout=WG_TIMEOUT_S,
    )
    by_key = {v: k for k, v in keys.items()}
    out: dict[str, list[str]] = {}
    for line in res.stdout.splitlines():
        key, *ips = line.split()
        if key in by_key:
            out[by_key[key]] = sorted(i for i in ips if i != "(none)")
    return out


class Runner:
    """The agent's sockets, probes, clock and WireGuard calls around :class:`FailoverAgent`.

    Args:
        config: the parsed configuration.
        log: where to write human-readable lines (stdout for the daemon).
        record: called with each event (the lab's event log), or ``None``.
        moved: where to declare the moved AllowedIPs (:data:`MOVED_FILE`), or ``None``.
        digest: the config's digest written in the declaration.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        log: Callable[[str], None] = print,
        record: Callable[[dict[str, Any]], None] | None = None,
        moved: Path | None = None,
        digest: str = "",
    ) -> None:
        self.config = config
        self.moved = moved
        self.digest = digest
        self.declared: dict[str, Any] | None = None
        self.log = log
        self.record = record
        self.agent = FailoverAgent(config, time.monotonic())
        self.keys = {n: p["public_key"] for n, p in config["peers"].items()}
        self.by_address = {p["probe"]: n for n, p in config["peers"].items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        self.sock.bind((config["address"], int(config["port"])))
        self.sock.setblocking(False)
        self.seq = 0
        self.stopping = False
        self.applied: dict[str, list[str]] | None = None
        self.retry_at = 0.0
        self.all_heard = False
        self.vip: str | None = config.get("vip")
        self.node: str = config.get("node", "gateway")
        self.holds_vip: bool | None = None

    def ready(self, peer: str, now: float) -> bool:
        """The READY flag sent to ``peer``: :meth:`FailoverAgent.ready`, and on the primary
        of a two-gateway site only while it holds the site's gateway address (the peers
        move the site's prefixes back to it then, not before: the hosts still send
        through the standby)."""
        if self.vip is not None and self.node == "gateway" and not self.holds_vip:
            return False
        return self.agent.ready(peer, now)

    def watch_vip(self) -> None:
        """On a gateway of a two-gateway site, record when it takes (``takeover``) or
        releases (``release``) the site's gateway address (keepalived moves it): the
        address is ours when a socket can bind it."""
        if self.vip is None:
            return
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((self.vip, 0))
            holds = True
        except OSError:
            holds = False
        finally:
            probe.close()
        if holds == self.holds_vip or (self.holds_vip is None and not holds):
            self.holds_vip = holds
            return
        self.holds_vip = holds
        kind = "takeover" if holds else "release"
        self.log(f"{kind}: {self.node} {'holds' if holds else 'left'} {self.vip}")
        if self.record is not None:
            self.record(
                {
                    "kind": kind,
                    "site": self.config["site"],
                    "gateway": self.node,
                    "peer": self.node,
                    "via": None,
                }
            )

    def probe_all(self) -> None:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        now = time.monotonic()
        for name, peer in self.config["peers"].items():
            flags = READY if self.ready(name, now) else 0
            packet = _HEADER.pack(MAGIC, REQUEST, self.seq, flags) + self._lost_payload()
            # no route yet, or the tunnel refuses: an unanswered probe
            with contextlib.suppress(OSError):
                self.sock.sendto(packet, (peer["probe"], int(self.config["port"])))

    def _lost_payload(self) -> bytes:
        """What follows the header: the names of the peers this agent has lost, one per
        line (a detour that lost the dead peer too must not be used)."""
        return "\n".join(sorted(self.agent.lost())).encode()

    def receive(self, now: float) -> None:
        while True:
            try:
                data, (addr, port) = self.sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(data) < _HEADER.size:
                continue
            magic, kind, seq, flags = _HEADER.unpack_from(data)
            if magic != MAGIC or addr not in self.by_address:
                continue
            peer = self.by_address[addr]
            lost = frozenset(data[_HEADER.size :].decode(errors="replace").split("\n")) - {""}
            self.agent.heard(peer, bool(flags & READY), lost)
            if kind == REQUEST:
                self.agent.answered(peer, now)
                mine = READY if self.ready(peer, now) else 0
                with contextlib.suppress(OSError):
                    reply = _HEADER.pack(MAGIC, REPLY, seq, mine) + self._lost_payload()
                    self.sock.sendto(reply, (addr, port))
            elif kind == REPLY and (self.seq - seq) & 0xFFFFFFFF < int(self.config["down_after"]):
                # a late answer still counts, up to the probes that make a tunnel dead:
                # under load a tunnel is slow, not dead
                self.agent.answered(peer, now)

    def declare(self, want: Mapping[str, list[str]]) -> None:
        """Declare ``want`` (:func:`declaration`) in :attr:`moved` when it changed."""
        if self.moved is None:
            return
        data = declaration(self.config, self.digest, want) | {"pid": os.getpid()}
        if data == self.declared:
            return
        try:
            write_declaration(self.moved, data)
            self.declared = data
        except OSError as exc:
            self.log(f"cannot write {self.moved}: {exc}")
            self.declared = None

    def apply(self, force: bool = False) -> None:
        want = self.agent.allowed_ips()
        if not force and self.applied == want:
            return
        with locked(self.moved.parent) if self.moved is not None else contextlib.nullcontext():
            self.declare(want)  # first: a lab's up in between keeps what the agent wants
            self._set(want)

    def _set(self, want: dict[str, list[str]]) -> None:
        for interface in self.config["interfaces"]:
            try:
                have = read_allowed_ips(interface, self.keys)
                diff = {n: ips for n, ips in want.items() if have.get(n) != ips}
                if diff:
                    subprocess.run(
                        wg_set_argv(interface, self.keys, diff),
                        capture_output=True,
                        text=True,
                        check=True,
                        timeout=WG_TIMEOUT_S,
                    )
            except (OSError, subprocess.SubprocessError) as exc:
                self.log(f"cannot set {interface}: {exc}")
                self.applied = None
                return
        self.applied = want

    def decide(self, now: float, reconcile: bool = False) -> None:
        """Evaluate the peers at ``now``, log and record what changed, and apply it
        (``reconcile``: also compare WireGuard's state while on a detour)."""
        events = self.agent.evaluate(now)
        if not self.all_heard and all(st.alive for st in self.agent.peers.values()):
            self.all_heard = True  # from now on a silent peer fails over within 0.4 s
            self.log(f"{ALL_HEARD}: {len(self.agent.peers)} peer(s)")
        for event in events:
            tunnel = f"tunnel {event['site']}-{event['peer']}"
            if event["kind"] == "failback":
                self.log(f"failback: {tunnel} answers again, traffic back on it")
            elif event["via"]:
                self.log(f"failover: {tunnel} dead, traffic via {event['via']}")
            else:
                self.log(f"failover: {tunnel} dead, and no detour alive")
            if self.record is not None:
                self.record(event)
        pending = self.agent.allowed_ips() != self.applied and now >= self.retry_at
        if events or reconcile or pending:  # a quiet move has no event, but must be made
            self.apply(force=reconcile)
            if self.applied is None:  # wg failed (interface not there yet): retry later
                self.retry_at = now + RECONCILE_S

    def run(self) -> None:
        """Probe, decide and apply until SIGTERM/SIGINT: a round of probes every
        ``interval_ms``, a decision after each round and after each packet received (a
        peer's READY flag moves traffic back at once)."""
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        interval = self.agent.interval_s
        next_probe = time.monotonic()
        next_reconcile = next_probe + RECONCILE_S
        self.log(f"failover agent of {self.config['site']}: probing {len(self.keys)} peer(s)")
        if self.moved is not None:  # nothing moved yet: an earlier agent's moves are not ours
            with locked(self.moved.parent):
                self.declare(self.agent.allowed_ips())
        while not self.stopping:
            now = time.monotonic()
            if now >= next_probe:
                # while traffic takes a detour, check that nobody (an up) put it back
                degraded = any(st.via for st in self.agent.peers.values())
                reconcile = degraded and now >= next_reconcile
                self.watch_vip()
                self.decide(now, reconcile)
                if reconcile or not degraded:
                    next_reconcile = now + RECONCILE_S
                self.probe_all()
                next_probe += interval
                if next_probe < now:  # we were descheduled: do not burst
                    next_probe = now + interval
            if sel.select(max(0.0, next_probe - time.monotonic())):
                now = time.monotonic()
                self.receive(now)
                self.decide(now)
        sel.close()
        self.sock.close()
        if self.moved is not None:  # no agent, no declaration: the lab applies the plan
            with locked(self.moved.parent), contextlib.suppress(OSError):
                self.moved.unlink()

    def stop(self, *_: object) -> None:
        self.stopping = True


def _recorder() -> Callable[[dict[str, Any]], None] | None:
    from polynimbus.events import STATE_DIR_ENV, append_event

    state_dir = os.environ.get(STATE_DIR_ENV)
    if not state_dir:
        return None

    def record(event: dict[str, Any]) -> None:
        detail = {k: v for k, v in event.items() if k != "kind"}
        try:
            append_event(Path(state_dir), event["kind"], **detail)
        except OSError as exc:
            print(f"cannot record the event: {exc}", flush=True)

    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m polynimbus.agent.failover CONFIG.json``. Exit 0 on SIGTERM
    or SIGINT, 2 on a bad command line or configuration."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m polynimbus.agent.failover CONFIG.json", file=sys.stderr)
        return 2
    try:
        raw = Path(args[0]).read_bytes()
        config = json.loads(raw)
    except (OSError, ValueError) as exc:
        print(f"cannot read {args[0]}: {exc}", file=sys.stderr)
        return 2

    def log(line: str) -> None:
        print(time.strftime("%H:%M:%S ") + line, flush=True)

    digest = os.environ.get(DIGEST_ENV) or hashlib.sha256(raw).hexdigest()
    moved = Path(args[0]).resolve().parent / MOVED_FILE
    runner = Runner(config, log, _recorder(), moved, digest)
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
