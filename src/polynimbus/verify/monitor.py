"""Continuous probing of a running lab: RTT and loss per path and channel, tunnel counters,
WireGuard handshake ages; the series in SQLite, the latest values as Prometheus metrics.

The measurement follows seed 003 §4.2 (figures 4.3-4.7): one ICMP echo a second on each
path, through the overlay (the tunnels) and over the public internet (the underlay), at
the same time, so that the channels can be compared sample by sample.

Paths (:func:`probe_paths`): every gateway pair (sites ``a < b`` in file order, probed
from ``a``) over both channels, overlay address to overlay address and public address
to public address; plus a deterministic sample of inter-site host pairs (overlay).

Probing is cheap by construction: one raw ICMP socket per source namespace and source
address, opened once inside the namespace (:func:`~polynimbus.targets.lab.netns.in_netns`;
a socket keeps its namespace), all of them driven by one ``epoll`` loop in this process;
the kernel stamps each reply on arrival (``SO_TIMESTAMPNS``) and filters out every ICMP
type but echo replies (``ICMP_FILTER``). No process is started per probe. A probe is lost
when no reply was read before the path's next probe, or when the reply's kernel timestamp
is more than one interval after the send; a loop descheduled for over an interval skips
the probes it missed rather than bursting them (:attr:`Monitor.skipped`).

Storage (:func:`open_db`): ``STATE_DIR/monitor.sqlite`` (0600, WAL), tables

- ``paths(id, path, channel, src, dst)`` and ``samples(ts, path_id, rtt_ms)``: ``ts`` the
  send time (Unix s), ``rtt_ms`` NULL for a lost probe; the view ``series`` joins them
  into ``(ts, path, channel, src, dst, rtt_ms)``;
- ``tunnels(ts, site, interface, rx_bytes, tx_bytes, rx_packets, tx_packets)``: the
  gateways' tunnel interface counters, read every ``counters_s``;
- ``events(ts, site, peer, kind, detail)``: failover and other events, written by
  :func:`record_event` (from any process); the gateway agents' own log,
  ``STATE_DIR/events.jsonl`` (:mod:`polynimbus.events`), is counted beside it;
- ``abw(ts, src, dst, channel, low_bps, high_bps)``: available-bandwidth estimates,
  written by :func:`record_abw` (from any process).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import random
import re
import select
import socket
import sqlite3
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polynimbus import names
from polynimbus.errors import LabNotFoundError, StateError, VerifyError
from polynimbus.plan.model import Plan
from polynimbus.targets.lab.netns import in_netns, list_lab_namespaces
from polynimbus.targets.lab.wireguard import WG_SOCKET_DIR

DB_FILE = "monitor.sqlite"
"""The monitor's database, in the lab's state directory."""
LOSS_WINDOW = 60
"""``polynimbus_probe_loss_ratio`` is over each path's last this many probes."""
COUNTERS_S = 10.0
"""Default period of the tunnel counter and handshake reads, in s."""
DEFAULT_HOSTS = 6
"""Inter-site host pairs probed by default (a deterministic sample)."""
SCHEDULER_TICK_S = 0.01
"""Sends are spread over each interval and batched: the loop sends every probe due within
the next tick, in s, then sleeps."""
MAX_SLEEP_S = 0.1
"""Longest sleep of the probing loop, in s (how soon it notices :meth:`Monitor.stop`)."""
BUSY_TIMEOUT_MS = 5000

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SOL_RAW = 255
ICMP_FILTER = 1
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0

SCHEMA = """
CREATE TABLE IF NOT EXISTS paths (
  id INTEGER PRIMARY KEY, path TEXT NOT NULL, channel TEXT NOT NULL,
  src TEXT NOT NULL, dst TEXT NOT NULL, UNIQUE (path, channel));
CREATE TABLE IF NOT EXISTS samples (ts REAL NOT NULL, path_id INTEGER NOT NULL, rtt_ms REAL);
CREATE INDEX IF NOT EXISTS samples_ts ON samples (ts);
CREATE VIEW IF NOT EXISTS series AS
  SELECT s.ts AS ts, p.path AS path, p.channel AS channel, p.src AS src, p.dst AS dst,
         s.rtt_ms AS rtt_ms
  FROM samples s JOIN paths p ON p.id = s.path_id;
CREATE TABLE IF NOT EXISTS tunnels (
  ts REAL NOT NULL, site TEXT NOT NULL, interface TEXT NOT NULL,
  rx_bytes INTEGER, tx_bytes INTEGER, rx_packets INTEGER, tx_packets INTEGER);
CREATE TABLE IF NOT EXISTS events (
  ts REAL NOT NULL, site TEXT NOT NULL DEFAULT '', peer TEXT NOT NULL DEFAULT '',
  kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS abw (
  ts REAL NOT NULL, src TEXT NOT NULL, dst TEXT NOT NULL, channel TEXT NOT NULL,
  low_bps REAL, high_bps REAL);
"""


# ---------------------------------------------------------------------------- storage
def db_path(state_dir: Path) -> Path:
    """``STATE_DIR/monitor.sqlite``."""
    return Path(state_dir) / DB_FILE


def open_db(state_dir: Path) -> sqlite3.Connection:
    """The monitor's database in ``state_dir``, created (0600, WAL, schema) if missing.

    Safe from several processes at once (WAL; writers wait up to 5 s for each other).

    Raises:
        StateError: ``state_dir`` does not exist (the lab was never brought up there), or
            the database cannot be opened.
    """
    sdir = Path(state_dir)
    if not sdir.is_dir():
        raise StateError(
            f"no state directory {sdir}",
            "bring the lab up first (polynimbus up FILE), or give its --state-dir",
        )
    path = db_path(sdir)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = NORMAL")
        con.executescript(SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open {path}: {exc}", "check the state directory") from None
    return con


def record_event(
    state_dir: Path,
    kind: str,
    detail: str = "",
    *,
    site: str = "",
    peer: str = "",
    ts: float | None = None,
) -> None:
    """Record one event (e.g. ``kind="failover"``, ``site="aws"``, ``peer="az"``) in the
    monitor's database of ``state_dir``; a running monitor counts it in
    ``polynimbus_failover_events_total{site,peer,kind}``. Callable from any process.

    Args:
        ts: Unix time in s (default: now).

    Raises:
        StateError: as :func:`open_db`.
    """
    con = open_db(state_dir)
    try:
        with con:
            con.execute(
                "INSERT INTO events (ts, site, peer, kind, detail) VALUES (?, ?, ?, ?, ?)",
                (time.time() if ts is None else ts, site, peer, kind, detail),
            )
    finally:
        con.close()


def record_abw(
    state_dir: Path,
    src: str,
    dst: str,
    channel: str,
    low_bps: float | None,
    high_bps: float | None,
    ts: float | None = None,
) -> None:
    """Record an available-bandwidth estimate of path ``src`` -> ``dst`` (site names) over
    ``channel`` (``overlay`` or ``underlay``): the range ``low_bps`` .. ``high_bps`` in
    bit/s (Pathload's, seed 003 §4.3.3; ``None``: unknown bound). A running monitor
    exposes the latest as ``polynimbus_abw_bps{src,dst,channel,bound="low"|"high"}``.
    Callable from any process.

    Raises:
        StateError: as :func:`open_db`.
    """
    con = open_db(state_dir)
    try:
        with con:
            con.execute(
                "INSERT INTO abw (ts, src, dst, channel, low_bps, high_bps) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time() if ts is None else ts, src, dst, channel, low_bps, high_bps),
            )
    finally:
        con.close()


@dataclass(frozen=True)
class Sample:
    """One stored probe: ``ts`` send time (Unix s), ``rtt_ms`` ``None`` when lost."""

    ts: float
    path: str
    channel: str
    src: str
    dst: str
    rtt_ms: float | None


def read_samples(state_dir: Path, since_s: float | None = None) -> list[Sample]:
    """The stored probes of the last ``since_s`` seconds (all when ``None``), by time.

    Raises:
        StateError: no state directory, or no monitor database in it.
    """
    path = db_path(state_dir)
    if not path.is_file():
        raise StateError(
            f"no monitor data in {state_dir}",
            "run polynimbus monitor FILE first (it stores its series there)",
        )
    con = open_db(state_dir)
    try:
        cut = time.time() - since_s if since_s is not None else float("-inf")
        rows = con.execute(
            "SELECT ts, path, channel, src, dst, rtt_ms FROM series WHERE ts >= ? "
            "ORDER BY ts, path, channel",
            (cut,),
        ).fetchall()
    finally:
        con.close()
    return [Sample(*r) for r in rows]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``2d`` or a plain number of seconds -> seconds (> 0).

    Raises:
        ValueError: anything else (the message says what is accepted).
    """
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"bad duration {text!r}: write e.g. 90s, 30m, 1h or 2d")
    return float(m.group(1)) * _UNIT_S[m.group(2) or "s"]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT`` too) -> ``(host, port)``.

    Raises:
        ValueError: not of that form, or a port outside 0-65535.
    """
    m = re.match(r"^\[?([^\[\]]*?)\]?:(\d+)$", text.strip())
    if not m or not m.group(1) or int(m.group(2)) > 65535:
        raise ValueError(f"bad address {text!r}: write HOST:PORT, e.g. 127.0.0.1:9464")
    return m.group(1), int(m.group(2))


# ---------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class ProbePath:
    """One probed path.

    Attributes:
        path: ``SRC->DST`` (nodes as ``SITE/gateway`` or ``SITE/HOST``).
        channel: ``overlay`` (through the tunnels) or ``underlay`` (public addresses).
        src, dst: the nodes.
        src_site, dst_site: their sites.
        ns: the namespace the probe leaves from.
        src_addr, dst_addr: IPv4 addresses (dotted quads).
    """

    path: str
    channel: str
    src: str
    dst: str
    src_site: str
    dst_site: str
    ns: str
    src_addr: str
    dst_addr: str


def probe_paths(plan: Plan, hosts: int = DEFAULT_HOSTS, seed: int = 0) -> list[ProbePath]:
    """The paths :class:`Monitor` probes: each gateway pair ``a < b`` (file order, probed
    from ``a``) over the overlay (gateway overlay address to gateway overlay address) and
    the underlay (public address to public address); then ``hosts`` inter-site host pairs
    (overlay), drawn without replacement with ``random.Random(seed)`` from all ordered
    inter-site host pairs (all of them when fewer).

    Raises:
        ValueError: ``hosts`` < 0.
    """
    if hosts < 0:
        raise ValueError("hosts must be >= 0")
    out: list[ProbePath] = []
    sites = plan.sites
    for i, a in enumerate(sites):
        for b in sites[i + 1 :]:
            src, dst = f"{a.name}/gateway", f"{b.name}/gateway"
            ns = names.gateway_ns(plan.name, a.name)
            for channel, sa, da in (
                ("overlay", a.gateway_address, b.gateway_address),
                ("underlay", a.public_address, b.public_address),
            ):
                out.append(
                    ProbePath(f"{src}->{dst}", channel, src, dst, a.name, b.name, ns, sa, da)
                )
    pairs = [
        (a, ha, b, hb)
        for a in sites
        for ha in a.hosts
        for b in sites
        if b.name != a.name
        for hb in b.hosts
    ]
    chosen = pairs if hosts >= len(pairs) else random.Random(seed).sample(pairs, hosts)
    for a, ha, b, hb in chosen:
        src, dst = f"{a.name}/{ha.name}", f"{b.name}/{hb.name}"
        ns = names.host_ns(plan.name, a.name, ha.name)
        out.append(
            ProbePath(
                f"{src}->{dst}", "overlay", src, dst, a.name, b.name, ns, ha.address, hb.address
            )
        )
    return out


def check_lab_up(plan: Plan) -> None:
    """Every gateway and probed host namespace of ``plan`` exists.

    Raises:
        LabNotFoundError: the lab is not up, or only partly.
    """
    present = set(list_lab_namespaces(plan.name))
    if not present:
        raise LabNotFoundError(f"lab {plan.name!r} is not up", "run: polynimbus up FILE")
    missing = [
        names.gateway_ns(plan.name, s.name)
        for s in plan.sites
        if names.gateway_ns(plan.name, s.name) not in present
    ]
    if missing:
        raise LabNotFoundError(
            f"lab {plan.name!r} is only partly up: no {', '.join(missing[:3])}",
            "run: polynimbus up FILE (it completes the lab)",
        )


# ---------------------------------------------------------------------------- ICMP
def _checksum_fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    return _checksum_fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


_ECHO = struct.Struct("!BBHHH")
_TIMESPEC = struct.Struct("qq")


def probe_packet(base: int, ident: int, seq: int, payload: bytes) -> bytes:
    """The monitor's echo request: ``base`` is the one's-complement sum of the request
    with sequence and checksum 0 (:meth:`Monitor._template`); adding ``seq`` and folding
    gives the checksum without summing the packet again."""
    c = base + seq
    c = (c & 0xFFFF) + (c >> 16)
    c = (c & 0xFFFF) + (c >> 16)
    return _ECHO.pack(ICMP_ECHO_REQUEST, 0, ~c & 0xFFFF, ident, seq) + payload


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request (type 8) with identifier ``ident``, sequence ``seq``, payload."""
    body = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq) + payload
    return body[:2] + struct.pack("!H", icmp_checksum(body)) + body[4:]


def _raw_socket(ns: str, src_addr: str) -> socket.socket:
    """A non-blocking raw ICMP socket in ``ns`` bound to ``src_addr``, receiving echo
    replies only, kernel-timestamped."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        try:
            s.bind((src_addr, 0))
            s.setsockopt(
                SOL_RAW, ICMP_FILTER, struct.pack("I", 0xFFFFFFFF ^ (1 << ICMP_ECHO_REPLY))
            )
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        return s

    return in_netns(ns, make)


# ---------------------------------------------------------------------------- tunnels
@dataclass
class TunnelCounters:
    """One tunnel interface's counters (bytes, packets) as last read."""

    site: str
    interface: str
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


@dataclass
class Handshake:
    """A WireGuard peer's latest handshake: ``age_s`` seconds ago (``None``: never)."""

    site: str
    peer: str
    interface: str
    age_s: float | None


def parse_uapi(text: str) -> list[dict[str, str]]:
    """WireGuard's cross-platform ``get=1`` answer -> one dict per peer (the interface's
    own keys before the first ``public_key`` are dropped; ``allowed_ip`` may repeat:
    the last one is kept, which is enough to tell peers apart here)."""
    peers: list[dict[str, str]] = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "public_key":
            peers.append({})
        if peers and key:
            peers[-1][key] = value
    return peers


def wg_uapi_get(ifname: str, timeout_s: float = 1.0) -> str:
    """Ask ``wireguard-go``'s control socket of ``ifname`` for its state (no process
    started; the socket is host-wide).

    Raises:
        OSError: no such socket or the daemon did not answer.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(WG_SOCKET_DIR / f"{ifname}.sock"))
        s.sendall(b"get=1\n\n")
        buf = b""
        while not buf.endswith(b"\n\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode("utf-8", "replace")


class TunnelReader:
    """Reads the gateways' tunnel interface counters and WireGuard handshake ages, cheaply:
    each gateway's ``/proc/net/dev`` is opened once from a thread inside its namespace
    (the file keeps that namespace whichever thread reads it later) and read again from
    the start; handshakes come from ``wireguard-go``'s control socket. No process is
    started. Thread-safe; each read is reused for ``max_age_s``."""

    def __init__(self, plan: Plan) -> None:
        from polynimbus.tunnels import get_transport

        self.plan = plan
        backend = get_transport(plan.transport)
        self.patterns = {s.name: backend.ifname_pattern(plan, s) for s in plan.sites}
        self.by_public = {s.public_address: s.name for s in plan.sites}
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._at = float("-inf")
        self.counters: list[TunnelCounters] = []
        self.handshakes: list[Handshake] = []

    def read(self, max_age_s: float = 1.0) -> tuple[list[TunnelCounters], list[Handshake]]:
        """The counters and handshakes, read again when older than ``max_age_s``."""
        with self._lock:
            if time.monotonic() - self._at >= max_age_s:
                self._read()
                self._at = time.monotonic()
            return list(self.counters), list(self.handshakes)

    def _dev(self, ns: str) -> str:
        fd = self._fds.get(ns)
        if fd is None:
            fd = self._fds[ns] = in_netns(
                ns, lambda: os.open("/proc/thread-self/net/dev", os.O_RDONLY | os.O_CLOEXEC)
            )
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode("ascii", "replace")

    def _read(self) -> None:
        counters: list[TunnelCounters] = []
        handshakes: list[Handshake] = []
        now = time.time()
        for s in self.plan.sites:
            ns = names.gateway_ns(self.plan.name, s.name)
            try:
                text = self._dev(ns)
            except OSError:  # a gateway gone: no counters for it
                self._drop(ns)
                continue
            for name, st in parse_net_dev(text).items():
                if not fnmatch.fnmatchcase(name, self.patterns[s.name]):
                    continue
                counters.append(TunnelCounters(s.name, name, *st))
                if self.plan.transport == "wireguard":
                    handshakes += self._handshakes(s.name, name, now)
        self.counters, self.handshakes = counters, handshakes

    def _handshakes(self, site: str, ifname: str, now: float) -> list[Handshake]:
        try:
            peers = parse_uapi(wg_uapi_get(ifname))
        except OSError:
            return []  # kernel WireGuard or the daemon restarting: no handshake ages
        out = []
        for p in peers:
            host = p.get("endpoint", "").rsplit(":", 1)[0].strip("[]")
            peer = self.by_public.get(host, host or p.get("public_key", "?")[:8])
            sec = int(p.get("last_handshake_time_sec", "0") or 0)
            nsec = int(p.get("last_handshake_time_nsec", "0") or 0)
            age = now - (sec + nsec / 1e9) if sec else None
            out.append(Handshake(site, peer, ifname, age))
        return out

    def _drop(self, ns: str) -> None:
        fd = self._fds.pop(ns, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Close every file."""
        with self._lock:
            for ns in list(self._fds):
                self._drop(ns)


def parse_net_dev(text: str) -> dict[str, tuple[int, int, int, int]]:
    """``/proc/net/dev`` -> ``{interface: (rx_bytes, tx_bytes, rx_packets, tx_packets)}``."""
    out = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        f = rest.split()
        if sep and len(f) >= 10:
            out[name.strip()] = (int(f[0]), int(f[8]), int(f[1]), int(f[9]))
    return out


# ---------------------------------------------------------------------------- monitor
@dataclass
class PathState:
    """What the monitor knows of one path now (for the metrics)."""

    last_rtt_ms: float | None = None
    sent: int = 0
    lost: int = 0
    window: deque[bool] = field(default_factory=lambda: deque(maxlen=LOSS_WINDOW))

    @property
    def loss_ratio(self) -> float | None:
        """Lost fraction of the last :data:`LOSS_WINDOW` probes (``None``: none yet)."""
        return sum(self.window) / len(self.window) if self.window else None


class Monitor:
    """Probes ``paths`` every ``interval_s``, stores the series in ``state_dir`` and keeps
    the latest values for :class:`MetricsCollector`.

    Use :meth:`open`, then :meth:`run` (until :meth:`stop` or ``duration_s``), then
    :meth:`close` (or use it as a context manager).

    Args:
        interval_s: seconds between two probes of a path (also each probe's timeout).
        counters_s: seconds between two stored reads of the tunnel counters.

    Raises:
        ValueError: ``interval_s`` <= 0.
    """

    def __init__(
        self,
        plan: Plan,
        state_dir: Path,
        paths: Sequence[ProbePath],
        interval_s: float = 1.0,
        counters_s: float = COUNTERS_S,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.plan = plan
        self.state_dir = Path(state_dir)
        self.paths = list(paths)
        self.interval_s = interval_s
        self.counters_s = counters_s
        self.states = [PathState() for _ in self.paths]
        self.tunnels = TunnelReader(plan)
        self._stop = threading.Event()
        self._cookie = os.urandom(4)
        self._socks: dict[tuple[str, str], socket.socket] = {}
        self._db: sqlite3.Connection | None = None
        self._path_ids: list[int] = []
        self._pending_seq = [-1] * len(self.paths)
        self._pending_tx = [0] * len(self.paths)
        self._rows: list[tuple[float, int, float | None]] = []
        self._timeout_ns = int(interval_s * 1e9)
        self.rounds = 0
        self.skipped = 0
        """Probes not sent because the loop was descheduled for over an interval."""

    # -- lifecycle
    def __enter__(self) -> Monitor:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the database and one raw socket per (namespace, source address).

        Raises:
            StateError: as :func:`open_db`.
            VerifyError: a socket could not be opened (not root, a namespace gone).
        """
        self._db = open_db(self.state_dir)
        with self._db:
            for p in self.paths:
                self._db.execute(
                    "INSERT OR IGNORE INTO paths (path, channel, src, dst) VALUES (?, ?, ?, ?)",
                    (p.path, p.channel, p.src, p.dst),
                )
        ids = dict(
            ((path, ch), i)
            for i, path, ch in self._db.execute("SELECT id, path, channel FROM paths")
        )
        self._path_ids = [ids[(p.path, p.channel)] for p in self.paths]
        for p in self.paths:
            key = (p.ns, p.src_addr)
            if key not in self._socks:
                try:
                    self._socks[key] = _raw_socket(p.ns, p.src_addr)
                except PermissionError:
                    raise VerifyError(
                        "cannot open a raw ICMP socket", "run polynimbus monitor as root"
                    ) from None
                except OSError as exc:
                    raise VerifyError(
                        f"cannot open a probe socket in {p.ns} from {p.src_addr}: {exc}",
                        "is the lab up? run: polynimbus up FILE",
                    ) from None

    def close(self) -> None:
        """Store what is left, close the sockets, the netlink connections and the database."""
        for s in self._socks.values():
            s.close()
        self._socks.clear()
        self.tunnels.close()
        if self._db is not None:
            self._flush()
            self._db.close()
            self._db = None

    def stop(self) -> None:
        """Ask :meth:`run` to return (from a signal handler or another thread)."""
        self._stop.set()

    # -- the loop
    def run(
        self,
        duration_s: float | None = None,
        on_round: Callable[[int], None] | None = None,
    ) -> None:
        """Probe until :meth:`stop` or for ``duration_s`` seconds.

        Each interval sends one echo request per path, spread evenly over the interval
        (no burst on the shared internet router); replies are taken as they arrive. The
        results of an interval are stored in one transaction at its end. ``on_round`` is
        called with the number of finished intervals.

        Raises:
            ValueError: no path to probe.
        """
        n = len(self.paths)
        if n == 0:
            raise ValueError("no path to probe")
        sock_of = [self._socks[(p.ns, p.src_addr)] for p in self.paths]
        by_fd: dict[int, tuple[socket.socket, dict[tuple[int, bytes], int]]] = {}
        for i, p in enumerate(self.paths):
            s = sock_of[i]
            fdmap = by_fd.setdefault(s.fileno(), (s, {}))[1]
            fdmap[(i & 0xFFFF, socket.inet_aton(p.dst_addr))] = i
        payloads = [self._cookie + struct.pack("!I", i) for i in range(n)]
        idents = [i & 0xFFFF for i in range(n)]
        bases = [self._template(idents[i], payloads[i])[1] for i in range(n)]
        dests = [(p.dst_addr, 0) for p in self.paths]
        sendto = [s.sendto for s in sock_of]
        pending_seq, pending_tx, time_ns = self._pending_seq, self._pending_tx, time.time_ns
        ep = select.epoll()
        for fd in by_fd:
            ep.register(fd, select.EPOLLIN)
        t0 = time.monotonic()
        end = t0 + duration_s if duration_s is not None else None
        gap = self.interval_s / n
        nxt = 0  # next probe to send, counted from t0 over all rounds
        next_counters = t0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                behind = now - (t0 + nxt * gap)
                if behind > self.interval_s:
                    # descheduled for over an interval (a busy machine): skip the missed
                    # probes rather than send them in a burst, where each path's previous
                    # probe would be taken for lost a few microseconds after it left
                    missed = int(behind / gap)
                    nxt += missed
                    self.skipped += missed
                    self.rounds = nxt // n
                # send what is due, batched: one wake-up per tick (hot loop: locals only)
                while t0 + nxt * gap <= now + SCHEDULER_TICK_S:
                    i = nxt % n
                    if pending_seq[i] >= 0:  # the previous probe got no reply in time: lost
                        self._result(i, None)
                    seq = (nxt // n) & 0xFFFF
                    pkt = probe_packet(bases[i], idents[i], seq, payloads[i])
                    pending_seq[i] = seq
                    pending_tx[i] = time_ns()
                    # no route (a link down): lost, as a ping's would be; try/except, not
                    # contextlib.suppress, whose context manager costs more than the send
                    try:  # noqa: SIM105
                        sendto[i](pkt, dests[i])
                    except OSError:
                        pass
                    nxt += 1
                    if nxt % n == 0:
                        self.rounds += 1
                        self._flush()
                        if on_round is not None:
                            on_round(self.rounds)
                if now >= next_counters:
                    self._store_counters()
                    next_counters = now + self.counters_s
                wait = min(t0 + nxt * gap, next_counters) - time.monotonic()
                if end is not None:
                    wait = min(wait, end - time.monotonic())
                for fd, _ in ep.poll(max(0.0, min(wait, MAX_SLEEP_S))):
                    self._drain(*by_fd[fd])
        finally:
            ep.close()

    @staticmethod
    def _template(ident: int, payload: bytes) -> tuple[bytes, int]:
        """The request with sequence 0 and checksum 0, and its one's-complement sum
        without the sequence (the checksum of sequence ``q`` follows by adding ``q``)."""
        body = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, 0) + payload
        if len(body) % 2:
            body += b"\0"
        return body, sum(struct.unpack(f"!{len(body) // 2}H", body))

    def _drain(self, s: socket.socket, fdmap: dict[tuple[int, bytes], int]) -> None:
        recvmsg, cookie, pending_seq = s.recvmsg, self._cookie, self._pending_seq
        while True:
            try:
                data, anc, _, _ = recvmsg(256, 64)
            except OSError:  # EAGAIN: drained
                return
            ihl = (data[0] & 0x0F) * 4
            # the filter passes echo replies only; the cookie tells ours from other pings
            if data[ihl + 8 : ihl + 12] != cookie:
                continue
            i = fdmap.get((data[ihl + 4] << 8 | data[ihl + 5], data[12:16]))
            if i is None or pending_seq[i] != (data[ihl + 6] << 8 | data[ihl + 7]):
                continue  # late (already counted lost) or not ours
            rx = 0
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(value)
                    rx = sec * 1_000_000_000 + nsec
            if not rx:
                rx = time.time_ns()
            rtt_ns = max(0, rx - self._pending_tx[i])
            self._result(i, rtt_ns / 1e6 if rtt_ns <= self._timeout_ns else None)

    def _result(self, i: int, rtt_ms: float | None) -> None:
        st = self.states[i]
        st.sent += 1
        st.window.append(rtt_ms is None)
        if rtt_ms is None:
            st.lost += 1
        else:
            st.last_rtt_ms = rtt_ms
        self._rows.append((self._pending_tx[i] / 1e9, self._path_ids[i], rtt_ms))
        self._pending_seq[i] = -1

    def _flush(self) -> None:
        if not self._rows or self._db is None:
            return
        rows, self._rows = self._rows, []
        with self._db:
            self._db.executemany("INSERT INTO samples (ts, path_id, rtt_ms) VALUES (?, ?, ?)", rows)

    def _store_counters(self) -> None:
        counters, _ = self.tunnels.read(max_age_s=0.0)
        if self._db is None or not counters:
            return
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT INTO tunnels VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (now, c.site, c.interface, c.rx_bytes, c.tx_bytes, c.rx_packets, c.tx_packets)
                    for c in counters
                ],
            )


# ---------------------------------------------------------------------------- metrics
class MetricsCollector:
    """A ``prometheus_client`` collector: builds every metric at scrape time from the
    monitor's memory, the tunnel reader (at most 1 s old) and the database's ``events``
    and ``abw`` tables, so probing never pays for the metrics.

    Metrics: ``polynimbus_rtt_ms`` (last answered probe, ms), ``polynimbus_probe_loss_ratio``
    (last :data:`LOSS_WINDOW` probes), ``polynimbus_probes_total``,
    ``polynimbus_probes_lost_total`` (labels ``path, channel, src, dst``);
    ``polynimbus_tunnel_{rx,tx}_{bytes,packets}_total`` (``site, interface``);
    ``polynimbus_handshake_age_seconds`` (``site, peer, interface``; WireGuard only);
    ``polynimbus_abw_bps`` (``src, dst, channel, bound``: ``low``/``high``, bit/s);
    ``polynimbus_failover_events_total`` (``site, peer, kind``; ``site`` is
    ``SITE/gateway-2`` for the standby gateway of a two-gateway site).
    """

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.monitor
        labels = ["path", "channel", "src", "dst"]
        rtt = GaugeMetricFamily(
            "polynimbus_rtt_ms", "Round-trip time of the last answered probe, ms", labels=labels
        )
        loss = GaugeMetricFamily(
            "polynimbus_probe_loss_ratio",
            f"Lost fraction of the path's last {LOSS_WINDOW} probes",
            labels=labels,
        )
        sent = CounterMetricFamily("polynimbus_probes", "Probes sent and settled", labels=labels)
        lost = CounterMetricFamily("polynimbus_probes_lost", "Probes lost", labels=labels)
        for p, st in zip(m.paths, list(m.states), strict=True):
            values = [p.path, p.channel, p.src, p.dst]
            if st.last_rtt_ms is not None:
                rtt.add_metric(values, st.last_rtt_ms)
            ratio = st.loss_ratio
            if ratio is not None:
                loss.add_metric(values, ratio)
            sent.add_metric(values, st.sent)
            lost.add_metric(values, st.lost)
        yield from (rtt, loss, sent, lost)

        counters, handshakes = m.tunnels.read(max_age_s=1.0)
        for attr, what in (
            ("rx_bytes", "Bytes received"),
            ("tx_bytes", "Bytes sent"),
            ("rx_packets", "Packets received"),
            ("tx_packets", "Packets sent"),
        ):
            fam = CounterMetricFamily(
                f"polynimbus_tunnel_{attr}",
                f"{what} by the tunnel interface",
                labels=["site", "interface"],
            )
            for c in counters:
                fam.add_metric([c.site, c.interface], getattr(c, attr))
            yield fam
        hs = GaugeMetricFamily(
            "polynimbus_handshake_age_seconds",
            "Seconds since the peer's latest WireGuard handshake",
            labels=["site", "peer", "interface"],
        )
        for h in handshakes:
            if h.age_s is not None:
                hs.add_metric([h.site, h.peer, h.interface], h.age_s)
        yield hs

        abw = GaugeMetricFamily(
            "polynimbus_abw_bps",
            "Latest available-bandwidth estimate (Pathload-style range), bit/s",
            labels=["src", "dst", "channel", "bound"],
        )
        events = CounterMetricFamily(
            "polynimbus_failover_events",
            "Failover events recorded",
            labels=["site", "peer", "kind"],
        )
        counts = _agent_events(m.state_dir)
        with contextlib.suppress(StateError, sqlite3.Error):
            con = open_db(m.state_dir)
            try:
                for src, dst, ch, low, high in con.execute(
                    "SELECT a.src, a.dst, a.channel, a.low_bps, a.high_bps FROM abw a "
                    "JOIN (SELECT src, dst, channel, MAX(ts) AS ts FROM abw "
                    "GROUP BY src, dst, channel) l USING (src, dst, channel, ts)"
                ):
                    if low is not None:
                        abw.add_metric([src, dst, ch, "low"], low)
                    if high is not None:
                        abw.add_metric([src, dst, ch, "high"], high)
                for site, peer, kind, n in con.execute(
                    "SELECT site, peer, kind, COUNT(*) FROM events GROUP BY site, peer, kind"
                ):
                    counts[(site, peer, kind)] = counts.get((site, peer, kind), 0) + n
            finally:
                con.close()
        for key, n in counts.items():
            events.add_metric(list(key), n)
        yield abw
        yield events


def _agent_events(state_dir: Path) -> dict[tuple[str, str, str], int]:
    """Failover events the gateway agents logged in ``STATE_DIR/events.jsonl``
    (:mod:`polynimbus.events`), counted by ``(site, peer, kind)``."""
    from polynimbus.events import read_events

    out: dict[tuple[str, str, str], int] = {}
    try:
        for e in read_events(state_dir):
            site, gateway = str(e.get("site", "")), str(e.get("gateway", "gateway"))
            if gateway != "gateway":  # a two-gateway site's standby: its exec target name
                site = f"{site}/{gateway}"
            key = (site, str(e.get("peer", "")), str(e.get("kind", "")))
            out[key] = out.get(key, 0) + 1
    except OSError:
        pass  # unreadable: no agent events this scrape
    return out


def serve_metrics(monitor: Monitor, host: str, port: int) -> tuple[Any, Any]:
    """Serve ``/metrics`` for ``monitor`` on ``host:port`` from a daemon thread, with the
    process's own CPU and memory (``process_*``) beside the monitor's metrics.

    Returns:
        ``(server, thread)``: ``server.shutdown()`` stops it.

    Raises:
        VerifyError: the address is taken or cannot be bound.
    """
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(MetricsCollector(monitor))
    try:
        return start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise VerifyError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
            "choose another address with --metrics HOST:PORT",
        ) from None


def paths_summary(paths: Iterable[ProbePath]) -> dict[str, int]:
    """Number of probed paths by kind: ``gateway-overlay``, ``gateway-underlay``, ``host``."""
    out = {"gateway-overlay": 0, "gateway-underlay": 0, "host": 0}
    for p in paths:
        if p.src.endswith("/gateway"):
            out[f"gateway-{p.channel}"] += 1
        else:
            out["host"] += 1
    return out
