"""Encrypted transports side by side, in the lab and point to point (issue 8). Needs root.

Each polynimbus transport host to host in the lab, and the same daemons point to point
between two bare namespaces.

Point to point ("p2p"): two bare namespaces joined by one veth, each daemon configured by
hand for its best case (tunnel MTU 1420, big socket buffers where the daemon has an
option for them): wireguard-go + wg; OpenVPN 2.6 in TLS mode with AES-256-GCM
(certificates made here with ``cryptography``); Nebula (nebula-cert); strongSwan 5.9
(charon-systemd, IKEv2 with a pre-shared key, kernel-libipsec user-space ESP in UDP,
AES-256-GCM; MTU 1400, the most kernel-libipsec reads).

Lab: for every registered encrypted transport, a two-site lab (``bn-*``) built by
``lab_up`` as ``polynimbus up`` builds it, host to host; with ``--parallel 1,2`` once per
value of ``overlay.parallel`` (skipped with a message while the intent does not have it).

Each round runs every case once, in a shuffled order, with one TCP flow and with
``--flows`` flows (iperf3 -P). Per test: throughput (iperf3's receiver), CPU of the
tunnel daemons (utime + stime from /proc/PID/stat over the test, as % of one core per
Gbit/s) and UDP receive-buffer errors (``RcvbufErrors`` of /proc/net/snmp, summed over the
daemons' namespaces). Median and range over rounds; ratios are taken round by round.

Every namespace and process this script makes is removed at the end, also on failure or
Ctrl-C: p2p namespaces are ``bnp2p-*``, labs ``bn-*``; nothing else is touched.

    python bench/encrypted.py [--rounds 5] [--seconds 5] [--flows 4] [--parallel 1,2]
        [--only wireguard,openvpn,nebula] [--no-lab] [--no-p2p] [--veth] [--gateways]
        [--variant tracked|nonft|brnf|bigbuf|LABEL=CMD]... [--p2p-env DAEMON:NAME=VALUE]...
        [--rate 150M]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from polynimbus import names, procs
from polynimbus.errors import PolynimbusError
from polynimbus.intent import load_intent_text
from polynimbus.orchestrate import lab_down, lab_up
from polynimbus.plan import build_plan
from polynimbus.tunnels import TRANSPORTS, get_transport

P2P_MTU = 1420
"""Tunnel MTU of the point-to-point daemons (as in the issue's measurement)."""
SOCKBUF = 4 * 1024 * 1024
"""Socket buffers asked of the p2p daemons that have an option for them (bytes; the
host's ``net.core.rmem_max``/``wmem_max`` cap what a plain SO_RCVBUF gets)."""
UNDER = ("10.231.0.1", "10.231.0.2")
"""Underlay addresses of the p2p namespaces' veth (/30)."""
IPERF_PORT = 5417
LAB_INTENT = """name: {name}
overlay: {{topology: full-mesh, transport: {transport}{extra}}}
sites:
  - {{name: a, provider: aws, hosts: [h]}}
  - {{name: b, provider: azure, hosts: [h]}}
"""
DAEMON_OF = {
    "wireguard": "wireguard-go",
    "openvpn": "openvpn",
    "nebula": "nebula",
    "ipsec": "strongswan",
}
"""The daemon each lab transport runs, by transport name (p2p cases are named so)."""
P2P_SKIPPED: dict[str, str] = {}
"""Daemons left out of the p2p part, with the reason printed."""
DAEMON_BINARY = {"strongswan": "charon-systemd"}
"""The program of a p2p daemon whose name is not its program's."""
LIBIPSEC_MTU = 1400
"""strongSwan's kernel-libipsec reads at most 1400-byte packets from its TUN device, whatever
the device's MTU (its ``TUN_DEFAULT_MTU``): its p2p tunnel MTU."""


def sh(
    *argv: str,
    ns: str | None = None,
    check: bool = True,
    timeout: float = 30,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``argv`` (in namespace ``ns``, with ``env`` added) and return its stdout."""
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    res = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **env} if env else None,
    )
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) of ``pid`` so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rcvbuf_errors(pid: int) -> int:
    """UDP RcvbufErrors of the network namespace ``pid`` runs in."""
    try:
        with open(f"/proc/{pid}/net/snmp") as f:
            lines = [ln.split() for ln in f if ln.startswith("Udp:")]
    except OSError:
        return 0
    head, vals = lines[0], lines[1]
    return int(vals[head.index("RcvbufErrors")])


@dataclass
class Case:
    """One path to measure: iperf3 from ``src_ns`` to ``dst`` (served in ``dst_ns``)."""

    name: str
    kind: str  # "p2p", "lab" or "veth"
    transport: str  # the daemon (p2p) or the polynimbus transport (lab)
    src_ns: str
    dst_ns: str
    dst: str
    mtu: int | None
    daemon_pids: Callable[[], list[int]] = field(default=lambda: [])


@dataclass
class Sample:
    bps: float
    cpu_pct_per_gbps: float | None  # the tunnel daemons
    rcvbuf_errors: int
    retransmits: int
    iperf_pct_per_gbps: float | None = None  # both iperf3 ends (the TCP stacks' share)


def iperf(case: Case, flows: int, seconds: int, rate: str | None = None) -> Sample:
    """One iperf3 test of ``case`` with ``flows`` TCP flows (each at most ``rate``, iperf3's
    ``-b``, when given)."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", case.dst_ns, "iperf3", "-s", "-p", str(IPERF_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        pids = case.daemon_pids()
        cpu0 = {p: proc_cpu_s(p) for p in pids}
        err0 = {p: rcvbuf_errors(p) for p in _one_per_netns(pids)}
        srv0 = proc_cpu_s(server.pid)
        t0 = time.monotonic()
        client = subprocess.Popen(
            ["ip", "netns", "exec", case.src_ns, "iperf3", "-c", case.dst, "-p", str(IPERF_PORT)]
            + ["-t", str(seconds), "-P", str(flows), "-J"]
            + (["-b", rate] if rate else []),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            out, _ = client.communicate(timeout=seconds + 15)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()
            out = '{"error": "no answer in time"}'
        wall = time.monotonic() - t0
        cpu = sum(proc_cpu_s(p) - c for p, c in cpu0.items())
        srv = proc_cpu_s(server.pid) - srv0
        errs = sum(rcvbuf_errors(p) - e for p, e in err0.items())
        doc = json.loads(out or "{}")
        if "error" in doc or "end" not in doc:
            print(f"  {case.name}: iperf3 failed: {doc.get('error', 'no result')}", flush=True)
            return Sample(0.0, None, errs, 0, None)
        bps = float(doc["end"]["sum_received"]["bits_per_second"])
        retr = int(doc["end"]["sum_sent"].get("retransmits", 0))
        per = (cpu / wall * 100) / (bps / 1e9) if pids and bps > 0 else None
        cli = doc["end"].get("cpu_utilization_percent", {}).get("host_total", 0.0)
        iper = (cli + srv / wall * 100) / (bps / 1e9) if bps > 0 else None
        return Sample(bps, per, errs, retr, iper)
    finally:
        server.kill()
        server.wait()


def _one_per_netns(pids: list[int]) -> list[int]:
    seen: dict[int, int] = {}
    for p in pids:
        with contextlib.suppress(OSError):
            seen.setdefault(os.stat(f"/proc/{p}/ns/net").st_ino, p)
    return list(seen.values())


# ---------------------------------------------------------------- point to point


class P2P:
    """Two bare namespaces ``bnp2p-T-a``/``-b`` joined by a veth, and one daemon in each."""

    def __init__(self, daemon: str, workdir: Path, env: dict[str, str] | None = None, idx: int = 0):
        self.daemon = daemon
        self.env = env or {}
        self.idx = idx
        self.ns = (f"bnp2p-{daemon[:3]}{idx}-a", f"bnp2p-{daemon[:3]}{idx}-b")
        self.dir = workdir / f"{daemon}{idx}"
        self.dir.mkdir(parents=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.overlay: tuple[str, str] = ("", "")
        self.mtu = P2P_MTU

    def make_namespaces(self) -> None:
        for ns in self.ns:
            remove_ns(ns)
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", "u0", "netns", self.ns[0], "type", "veth", "peer", "u0",
           "netns", self.ns[1])  # fmt: skip
        for ns, addr in zip(self.ns, UNDER, strict=True):
            sh("ip", "addr", "add", f"{addr}/30", "dev", "u0", ns=ns)
            sh("ip", "link", "set", "u0", "up", ns=ns)

    def spawn(self, ns: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.dir / f"{ns}.log", "ab")  # noqa: SIM115 (kept by the process)
        self.procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env, **(env or {})},
                start_new_session=True,
            )
        )

    def pids(self) -> list[int]:
        """PIDs of the daemons (``ip netns exec`` execs them, so the same PIDs)."""
        return [p.pid for p in self.procs if p.poll() is None]

    def start(self) -> None:
        self.make_namespaces()
        getattr(self, f"_start_{self.daemon.replace('-', '_')}")()
        self._wait_reachable()

    def _wait_reachable(self, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{self.daemon} exited; see {self.dir}")
            res = subprocess.run(
                ["ip", "netns", "exec", self.ns[0], "ping", "-c1", "-W1", self.overlay[1]],
                capture_output=True,
                check=False,
            )
            if res.returncode == 0:
                return
        raise RuntimeError(f"{self.daemon} p2p tunnel did not come up; see {self.dir}")

    # wireguard-go: Debian's build sets no socket buffer of its own (the host default)
    def _start_wireguard_go(self) -> None:
        self.overlay = ("10.232.0.1", "10.232.0.2")
        keys = []
        for _ in self.ns:
            priv = sh("wg", "genkey").strip()
            pub = subprocess.run(
                ["wg", "pubkey"], input=priv, capture_output=True, text=True, check=True
            ).stdout.strip()
            keys.append((priv, pub))
        for i, ns in enumerate(self.ns):
            ifname = f"bnp2pwg{self.idx}{'ab'[i]}"
            self.spawn(ns, ["wireguard-go", "-f", ifname])
            sock = Path(f"/var/run/wireguard/{ifname}.sock")
            deadline = time.monotonic() + 5
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            keyfile = self.dir / f"{ifname}.key"
            keyfile.write_text(keys[i][0] + "\n")
            keyfile.chmod(0o600)
            sh("wg", "set", ifname, "private-key", str(keyfile), "listen-port", "51820",
               "peer", keys[1 - i][1], "endpoint", f"{UNDER[1 - i]}:51820",
               "allowed-ips", f"{self.overlay[1 - i]}/32", ns=ns)  # fmt: skip
            sh("ip", "addr", "add", f"{self.overlay[i]}/24", "dev", ifname, ns=ns)
            sh("ip", "link", "set", ifname, "mtu", str(P2P_MTU), "up", ns=ns)

    # OpenVPN 2.6, TLS (p2p mode, one TLS server and one client), AES-256-GCM, no DCO
    def _start_openvpn(self) -> None:
        self.overlay = ("10.233.0.1", "10.233.0.2")
        make_pki(self.dir)
        for i, ns in enumerate(self.ns):
            role = ["--tls-server", "--dh", "none"] if i == 0 else ["--tls-client"]
            role += ["--remote-cert-tls", "client" if i == 0 else "server"]
            self.spawn(ns, [
                "openvpn", "--dev-type", "tun", "--dev", f"bnp2povpn{self.idx}{'ab'[i]}",
                "--proto", "udp", "--local", UNDER[i], "--lport", "1194",
                "--remote", UNDER[1 - i], "--rport", "1194",
                "--ifconfig", self.overlay[i], self.overlay[1 - i],
                "--tun-mtu", str(P2P_MTU), "--txqueuelen", "1000",
                "--ca", str(self.dir / "ca.crt"), "--cert", str(self.dir / f"{'ab'[i]}.crt"),
                "--key", str(self.dir / f"{'ab'[i]}.key"), *role,
                "--data-ciphers", "AES-256-GCM", "--disable-dco",
                "--sndbuf", str(SOCKBUF), "--rcvbuf", str(SOCKBUF), "--fast-io",
                "--ping", "10", "--verb", "1", "--mute-replay-warnings",
            ])  # fmt: skip

    # Nebula: no lighthouse, the peer in static_host_map
    def _start_nebula(self) -> None:
        self.overlay = ("10.234.0.1", "10.234.0.2")
        d = self.dir
        sh("nebula-cert", "ca", "-name", "bn-bench", "-out-crt", str(d / "ca.crt"),
           "-out-key", str(d / "ca.key"))  # fmt: skip
        for i, ns in enumerate(self.ns):
            n = "ab"[i]
            sh("nebula-cert", "sign", "-name", n, "-ip", f"{self.overlay[i]}/24",
               "-ca-crt", str(d / "ca.crt"), "-ca-key", str(d / "ca.key"),
               "-out-crt", str(d / f"{n}.crt"), "-out-key", str(d / f"{n}.key"))  # fmt: skip
            conf = {
                "pki": {
                    "ca": str(d / "ca.crt"),
                    "cert": str(d / f"{n}.crt"),
                    "key": str(d / f"{n}.key"),
                },  # fmt: skip
                "static_host_map": {self.overlay[1 - i]: [f"{UNDER[1 - i]}:4242"]},
                "lighthouse": {"am_lighthouse": False, "hosts": []},
                "listen": {
                    "host": UNDER[i],
                    "port": 4242,
                    "read_buffer": SOCKBUF,
                    "write_buffer": SOCKBUF,
                },  # fmt: skip
                "punchy": {"punch": False},
                "cipher": "aes",
                "tun": {"dev": f"bnp2pneb{self.idx}{n}", "mtu": P2P_MTU, "tx_queue": 1000},
                "logging": {"level": "warning"},
                "firewall": {
                    "outbound": [{"port": "any", "proto": "any", "host": "any"}],
                    "inbound": [{"port": "any", "proto": "any", "host": "any"}],
                },
            }
            (d / f"{n}.yml").write_text(json.dumps(conf))  # JSON is YAML
            self.spawn(ns, ["nebula", "-config", str(d / f"{n}.yml")])

    # strongSwan 5.9: charon-systemd (IKEv2, PSK) with kernel-libipsec (user-space ESP in
    # UDP 4500 over TUN ipsec0), one per namespace with its own strongswan.conf and VICI
    # socket; AES-256-GCM as the lab's ipsec transport
    def _start_strongswan(self) -> None:
        self.overlay = ("10.235.0.1", "10.235.0.2")
        self.mtu = LIBIPSEC_MTU
        d = self.dir
        for i, ns in enumerate(self.ns):
            n, peer = "ab"[i], "ab"[1 - i]
            sh("ip", "addr", "add", f"{self.overlay[i]}/32", "dev", "lo", ns=ns)
            (d / f"{n}.conf").write_text(
                "charon {\n"
                "    load_modular = no\n"
                "    load = random nonce openssl kdf pem pkcs1 pkcs8 x509 pubkey "
                "kernel-libipsec kernel-netlink socket-default vici\n"
                "    port = 0\n    port_nat_t = 4500\n    install_virtual_ip = no\n"
                "    threads = 16\n    replay_window = 1024\n"
                f"    plugins {{\n        vici {{\n            socket = unix://{d}/{n}.vici\n"
                "        }\n        socket-default {\n            use_ipv6 = no\n        }\n"
                "    }\n"
                f"    filelog {{\n        log {{\n            path = {d}/{n}.charon.log\n"
                "            default = 1\n        }\n    }\n"
                "}\ncharon-systemd {\n    journal {\n        default = -1\n    }\n}\n"
            )
            (d / f"{n}.swanctl.conf").write_text(
                "connections {\n    p2p {\n        version = 2\n"
                f"        local_addrs = {UNDER[i]}\n        remote_addrs = {UNDER[1 - i]}\n"
                "        local_port = 4500\n        remote_port = 4500\n        encap = yes\n"
                "        mobike = no\n        proposals = aes256gcm16-prfsha256-ecp256\n"
                f"        local {{\n            auth = psk\n            id = {n}\n        }}\n"
                f"        remote {{\n            auth = psk\n            id = {peer}\n        }}\n"
                "        children {\n            p2p {\n                mode = tunnel\n"
                f"                local_ts = {self.overlay[i]}/32\n"
                f"                remote_ts = {self.overlay[1 - i]}/32\n"
                "                esp_proposals = aes256gcm16-ecp256\n"
                f"                start_action = {'start' if i == 0 else 'none'}\n"
                "            }\n        }\n    }\n}\n"
                "secrets {\n    ike-1 {\n        id-1 = a\n        id-2 = b\n"
                '        secret = "bn-bench-not-a-secret"\n    }\n}\n'
            )
            self.spawn(ns, ["charon-systemd"], env={"STRONGSWAN_CONF": str(d / f"{n}.conf")})
        for n in "ab":
            vici = d / f"{n}.vici"
            deadline = time.monotonic() + 10
            while not vici.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        for i in (1, 0):  # the responder first, then the initiator starts its CHILD_SA
            n = "ab"[i]
            sh("swanctl", "--load-all", "--noprompt", "--file", str(d / f"{n}.swanctl.conf"),
               "--uri", f"unix://{d}/{n}.vici", ns=self.ns[i],
               env={"STRONGSWAN_CONF": str(d / f"{n}.conf")})  # fmt: skip

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in self.ns:
            remove_ns(ns)


def remove_ns(ns: str) -> None:
    """Delete namespace ``ns`` (one of ours) after stopping what still runs in it."""
    ino = procs.netns_inode(ns)
    if ino is None:
        return
    procs.stop([p.pid for p in procs.processes() if p.netns_inode == ino])
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def make_pki(d: Path) -> None:
    """A CA and two certificates (``a``: TLS server, ``b``: TLS client) in ``d``, P-256."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("bn-bench-ca"))
        .issuer_name(name("bn-bench-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cn, eku in (("a", ExtendedKeyUsageOID.SERVER_AUTH), ("b", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, True, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (d / f"{cn}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, d / f"{cn}.key")


# ---------------------------------------------------------------- the lab


@dataclass
class Lab:
    transport: str
    parallel: int | None
    name: str
    state_dir: Path
    case: Case | None = None
    variant: tuple[str, str] | None = None  # (label, shell command run after up)
    gw_case: Case | None = None


def lab_intent_text(name: str, transport: str, parallel: int | None) -> str:
    extra = f", parallel: {parallel}" if parallel is not None else ""
    return LAB_INTENT.format(name=name, transport=transport, extra=extra)


def parallel_supported() -> str | None:
    """None when intents accept ``overlay.parallel``, else why not."""
    try:
        load_intent_text(lab_intent_text("bn-check", "wireguard", 2))
    except (PolynimbusError, ValueError) as exc:
        return str(exc).splitlines()[0]
    return None


def start_lab(lab: Lab) -> None:
    intent = load_intent_text(lab_intent_text(lab.name, lab.transport, lab.parallel))
    plan = build_plan(intent)
    lab_up(intent, lab.state_dir)
    gws = [names.gateway_ns(lab.name, s.name) for s in plan.sites]
    dst = next(s for s in plan.sites if s.name == "b").hosts[0].address

    if lab.variant is not None:
        label, cmd = lab.variant
        if cmd:
            subprocess.run(cmd, shell=True, check=True, env={**os.environ, "LAB": lab.name})
        else:
            BUILTIN_VARIANTS[label][1](gws)

    def pids() -> list[int]:
        inodes = {procs.netns_inode(g) for g in gws}
        return [
            p.pid
            for p in procs.processes()
            if p.netns_inode in inodes and os.path.basename(p.argv[0]) != "iperf3"
        ]

    label = lab.transport + (f" parallel {lab.parallel}" if lab.parallel is not None else "")
    if lab.variant is not None:
        label += f" [{lab.variant[0]}]"
    b = next(s for s in plan.sites if s.name == "b")
    lab.gw_case = Case(f"{label} lab gw-gw", "labgw", lab.transport, gws[0], gws[1],
                       b.gateway_address, plan.tunnel_mtu, pids)  # fmt: skip
    lab.case = Case(
        f"{label} lab",
        "lab",
        lab.transport,
        names.host_ns(lab.name, "a", "h"),
        names.host_ns(lab.name, "b", "h"),
        dst,
        plan.tunnel_mtu,
        pids,
    )


def reachable(case: Case, timeout_s: float = 15) -> None:
    """Wait until ``case.dst`` answers a ping from ``case.src_ns``.

    Raises:
        RuntimeError: no answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        res = subprocess.run(
            ["ip", "netns", "exec", case.src_ns, "ping", "-c1", "-W1", case.dst],
            capture_output=True,
            check=False,
        )
        if res.returncode == 0:
            return
    raise RuntimeError(f"{case.dst} does not answer from {case.src_ns}")


def _in_gateways(gws: list[str], *argv: str) -> None:
    for g in gws:
        sh(*argv, ns=g)


def _flush_notrack(gws: list[str]) -> None:
    for g in gws:
        for chain in ("prerouting", "output"):
            sh("nft", "flush", "chain", "inet", "polynimbus", chain, ns=g)


def _bridge_nf_off(gws: list[str]) -> None:
    for g in gws:
        for fam in ("iptables", "ip6tables", "arptables"):
            sh("sysctl", "-qw", f"net.bridge.bridge-nf-call-{fam}=0", ns=g)


def _force_socket_buffers(gws: list[str], size: int = SOCKBUF) -> None:
    """Give every UDP socket of the daemons in ``gws`` ``size``-byte buffers from outside:
    ``pidfd_getfd(2)`` takes a copy of the socket's descriptor (root may), and
    ``SO_RCVBUFFORCE``/``SO_SNDBUFFORCE`` ignore ``rmem_max``. An experiment only (a daemon
    that rebinds its socket, as wireguard-go on ``wg setconf``, loses it)."""
    import ctypes
    import socket

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd_getfd = 438  # x86_64 syscall number
    inodes = {procs.netns_inode(g) for g in gws}
    for p in procs.processes():
        if p.netns_inode not in inodes or os.path.basename(p.argv[0]) == "iperf3":
            continue
        udp = set()
        for f in ("udp", "udp6"):
            with contextlib.suppress(OSError), open(f"/proc/{p.pid}/net/{f}") as fh:
                udp |= {int(line.split()[9]) for line in fh.readlines()[1:]}
        pidfd = os.pidfd_open(p.pid)
        try:
            for fd in os.listdir(f"/proc/{p.pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{p.pid}/fd/{fd}")
                except OSError:
                    continue
                if not link.startswith("socket:[") or int(link[8:-1]) not in udp:
                    continue
                copy = libc.syscall(pidfd_getfd, pidfd, int(fd), 0)
                if copy < 0:
                    raise OSError(ctypes.get_errno(), "pidfd_getfd")
                sock = socket.socket(fileno=copy)
                sock.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE
                sock.setsockopt(socket.SOL_SOCKET, 32, size)  # SO_SNDBUFFORCE
                sock.close()
        finally:
            os.close(pidfd)


BUILTIN_VARIANTS: dict[str, tuple[str, Callable[[list[str]], None]]] = {
    "tracked": (
        "the gateways' notrack chains emptied (the ruleset before issue 8)",
        _flush_notrack,
    ),
    "nonft": (
        "no nftables ruleset in the gateways",
        lambda g: _in_gateways(g, "nft", "flush", "ruleset"),
    ),
    "brnf": ("bridge netfilter off in the gateways (bridge-nf-call-*=0)", _bridge_nf_off),
    "bigbuf": ("4 MiB UDP socket buffers forced on the running daemons", _force_socket_buffers),
}
"""``--variant NAME`` without a command: experiments on a lab after ``up``."""


# ---------------------------------------------------------------- report


def fmt_range(vs: list[float], scale: float = 1, digits: int = 2) -> str:
    return f"{min(vs) / scale:.{digits}f}-{max(vs) / scale:.{digits}f}"


def report(cases: list[Case], flows_list: list[int], got: dict[tuple[str, int], list[Sample]],
           skipped: list[str]) -> None:  # fmt: skip
    print()
    print(
        "| path | MTU | flows | Gbit/s median | range | daemons' CPU, % of a core per Gbit/s "
        "| iperf3's (both ends) | UDP RcvbufErrors per test | TCP retransmits |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for c in cases:
        for fl in flows_list:
            ss = got[(c.name, fl)]
            bps = [s.bps for s in ss]
            cpus = [s.cpu_pct_per_gbps for s in ss if s.cpu_pct_per_gbps is not None]
            cpu = f"{statistics.median(cpus):.0f}" if cpus else "-"
            icpus = [s.iperf_pct_per_gbps for s in ss if s.iperf_pct_per_gbps is not None]
            icpu = f"{statistics.median(icpus):.0f}" if icpus else "-"
            print(
                f"| {c.name} | {c.mtu or '-'} | {fl} | {statistics.median(bps) / 1e9:.2f} "
                f"| {fmt_range(bps, 1e9)} | {cpu} | {icpu} "
                f"| {statistics.median(s.rcvbuf_errors for s in ss):.0f} "
                f"| {statistics.median(s.retransmits for s in ss):.0f} |"
            )
    print()
    print("Ratios, round by round (median, range):")

    def ratio(a: str, b: str, fl: int) -> list[float]:
        xs, ys = got.get((a, fl)), got.get((b, fl))
        if not xs or not ys:
            return []
        return [x.bps / y.bps for x, y in zip(xs, ys, strict=True) if y.bps > 0]

    def line(label: str, rs: list[float]) -> None:
        if rs:
            print(f"  {label}: {statistics.median(rs):.2f} ({fmt_range(rs)})")

    p2p = {c.transport: c.name for c in cases if c.kind == "p2p" and "[" not in c.name}
    labs = [c for c in cases if c.kind == "lab" and "[" not in c.name]
    names_ = {c.name for c in cases}
    for fl in flows_list:
        for c in cases:
            if c.kind == "veth":
                continue
            d = DAEMON_OF.get(c.transport)
            if c.kind != "p2p" and d in p2p:
                line(f"{c.name} / {d} p2p, {fl} flow(s)", ratio(c.name, p2p[d], fl))
            base = re.sub(r" \[[^]]*\]", "", c.name)
            if base != c.name and base in names_:
                line(f"{c.name} / {base}, {fl} flow(s)", ratio(c.name, base, fl))
    if "nebula" in p2p and labs:
        for fl in flows_list:
            best_per_round = [
                max(got[(c.name, fl)][i].bps for c in labs if c.transport != "vxlan")
                for i in range(len(got[(labs[0].name, fl)]))
            ]
            neb = [s.bps for s in got[(p2p["nebula"], fl)]]
            line(
                f"fastest encrypted lab transport / nebula p2p, {fl} flow(s)",
                [b / n for b, n in zip(best_per_round, neb, strict=True) if n > 0],
            )
    by_t: dict[str, dict[int, str]] = {}
    for c in labs:
        par = c.name.split(" parallel ")
        if len(par) == 2:
            by_t.setdefault(c.transport, {})[int(par[1].split()[0])] = c.name
    for t, m in by_t.items():
        if 1 in m and 2 in m:
            for fl in flows_list:
                line(f"{t} lab parallel 2 / parallel 1, {fl} flow(s)", ratio(m[2], m[1], fl))
    for s in skipped:
        print(f"  skipped: {s}")


# ---------------------------------------------------------------- main


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C, so the clean-up runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--flows", type=int, default=4, help="the multi-flow test's flows")
    ap.add_argument(
        "--parallel",
        default="",
        help="comma-separated overlay.parallel values for the labs (e.g. 1,2); "
        "default: the intent's default only",
    )
    ap.add_argument(
        "--only", default="", help="comma-separated transports/daemons to run (default: all)"
    )
    ap.add_argument("--no-lab", action="store_true")
    ap.add_argument("--no-p2p", action="store_true")
    ap.add_argument("--veth", action="store_true", help="also plain veth between the p2p pair")
    ap.add_argument(
        "--gateways",
        action="store_true",
        help="also gateway to gateway through the tunnel in each lab (no LAN, no forwarding)",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=CMD|NAME",
        help="an extra lab per transport (first --parallel value only), changed after up by "
        "the shell command CMD (the lab's name in $LAB) or by a built-in NAME: "
        + "; ".join(f"{k}: {v[0]}" for k, v in BUILTIN_VARIANTS.items()),
    )
    ap.add_argument(
        "--rate",
        default=None,
        help="cap each flow (iperf3 -b, e.g. 150M) to compare CPU per Gbit/s below saturation",
    )
    ap.add_argument(
        "--p2p-env",
        action="append",
        default=[],
        metavar="DAEMON:NAME=VALUE[,...]",
        help="an extra p2p case of DAEMON with these environment variables "
        "(e.g. wireguard-go:GOMAXPROCS=1)",
    )
    ap.add_argument("--seed", type=int, default=8)
    args = ap.parse_args()
    only = {x for x in args.only.split(",") if x}

    def wanted(*nm: str) -> bool:
        return not only or any(n in only for n in nm)

    for tool in ("iperf3", "ip", "wg"):
        if shutil.which(tool) is None:
            raise SystemExit(f"missing {tool}")
    skipped: list[str] = []
    daemons: list[tuple[str, dict[str, str]]] = []
    if not args.no_p2p:
        for d in ("wireguard-go", "openvpn", "nebula", "strongswan"):
            t = next((k for k, v in DAEMON_OF.items() if v == d), d)
            if not wanted(d, t):
                continue
            if d in P2P_SKIPPED:
                skipped.append(f"{d} p2p: {P2P_SKIPPED[d]}")
            elif shutil.which(DAEMON_BINARY.get(d, d)) is None:
                skipped.append(f"{d} p2p: {DAEMON_BINARY.get(d, d)} is not installed")
            else:
                daemons.append((d, {}))
                for v in args.p2p_env:
                    who, _, assign = v.partition(":")
                    if who == d:
                        daemons.append((d, dict(kv.split("=", 1) for kv in assign.split(","))))
    labs: list[Lab] = []
    if not args.no_lab:
        pars: list[int | None] = [None]
        if args.parallel:
            why = parallel_supported()
            if why is None:
                pars = [int(x) for x in args.parallel.split(",")]
            else:
                skipped.append(f"--parallel: the intent has no overlay.parallel yet ({why})")
        for t in TRANSPORTS.names():
            if not wanted(t, DAEMON_OF.get(t, t)):
                continue
            if not get_transport(t).encrypted:
                skipped.append(f"{t} lab: not encrypted")
                continue
            for par in pars:
                suffix = f"{par}" if par is not None else ""
                labs.append(Lab(t, par, f"bn-{t[:3]}{suffix}", Path()))
                for i, v in enumerate(args.variant if par == pars[0] else []):
                    label, _, cmd = v.partition("=")
                    if not cmd and label not in BUILTIN_VARIANTS:
                        raise SystemExit(
                            f"--variant {v}: give LABEL=CMD or one of {', '.join(BUILTIN_VARIANTS)}"
                        )
                    labs.append(Lab(t, par, f"bn-{t[:3]}{suffix}v{i}", Path(), None, (label, cmd)))
    flows_list = [1] if args.flows == 1 else [1, args.flows]
    rng = random.Random(args.seed)
    p2ps: list[P2P] = []
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="bn-enc-") as tmp, terminate_as_interrupt():
        try:
            for idx, (d, env) in enumerate(daemons):
                p = P2P(d, Path(tmp), env, idx)
                p2ps.append(p)
                p.start()
                label = f"{d} p2p" + (
                    f" [{','.join(f'{k}={v}' for k, v in env.items())}]" if env else ""
                )
                cases.append(Case(label, "p2p", d, p.ns[0], p.ns[1], p.overlay[1],
                                  p.mtu, p.pids))  # fmt: skip
            if args.veth and p2ps:
                p = p2ps[0]
                cases.append(Case("plain veth", "veth", "-", p.ns[0], p.ns[1], UNDER[1], 1500))
            for lab in labs:
                lab.state_dir = Path(tmp) / lab.name
                try:
                    start_lab(lab)
                    assert lab.case is not None and lab.gw_case is not None
                    reachable(lab.case)
                except (PolynimbusError, RuntimeError, subprocess.CalledProcessError) as exc:
                    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    skipped.append(f"{lab.name} ({lab.transport}) lab: {why}")
                    print(f"skipping the {lab.transport} lab {lab.name}: {why}", flush=True)
                    continue
                cases.append(lab.case)
                if args.gateways:
                    cases.append(lab.gw_case)
            got: dict[tuple[str, int], list[Sample]] = {
                (c.name, fl): [] for c in cases for fl in flows_list
            }
            print(
                f"{dt.date.today()}: {args.rounds} interleaved rounds, {args.seconds} s per "
                f"test, flows {flows_list}; cases: {', '.join(c.name for c in cases)}",
                flush=True,
            )
            for r in range(args.rounds):
                order = [(c, fl) for c in cases for fl in flows_list]
                rng.shuffle(order)
                for c, fl in order:
                    s = iperf(c, fl, args.seconds, args.rate)
                    got[(c.name, fl)].append(s)
                    cpu = f"{s.cpu_pct_per_gbps:.0f}" if s.cpu_pct_per_gbps else "-"
                    icpu = f"{s.iperf_pct_per_gbps:.0f}" if s.iperf_pct_per_gbps else "-"
                    print(
                        f"round {r + 1} {c.name:28} P{fl} {s.bps / 1e9:6.2f} Gbit/s "
                        f"cpu/Gbit {cpu:>4} iperf3 {icpu:>4} rcvbuf-err {s.rcvbuf_errors:6d} "
                        f"retr {s.retransmits}",
                        flush=True,
                    )
            report(cases, flows_list, got, skipped)
        finally:
            for p in p2ps:
                p.stop()
            for lab in labs:
                if lab.state_dir != Path():
                    with contextlib.suppress(Exception):
                        lab_down(lab.name, lab.state_dir)


if __name__ == "__main__":
    main()
