"""The emulated multi-cloud lab, built for real in namespaces (needs root)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polynimbus import names, procs
from polynimbus.orchestrate import lab_down, lab_up
from polynimbus.plan import build_plan
from polynimbus.plan.model import Plan
from polynimbus.targets.lab import list_lab_namespaces
from polynimbus.tunnels import TRANSPORTS, get_transport
from polynimbus.verify.reachability import ping_all
from tests.integration.conftest import leftovers, three_sites

COMBOS = [(t, tr) for t in ("full-mesh", "hub", "mst") for tr in TRANSPORTS.names()]
"""Every registered transport over the three topologies."""


def sh(ns: str, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=check
    )


LISTEN_PORT = 2222


@contextlib.contextmanager
def listening(ns: str, port: int) -> Iterator[None]:
    """A TCP listener on every address of namespace ``ns``, for the duration."""
    code = (
        "import socket,time\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('0.0.0.0', {port})); s.listen(8); print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


def tcp_connects(ns: str, addr: str, port: int) -> bool:
    """Whether a TCP connection from ``ns`` to ``addr:port`` is accepted within 2 s."""
    code = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(('{addr}', {port}), timeout=2).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    return sh(ns, sys.executable, "-c", code).returncode == 0


def snapshot(lab_name: str) -> dict[str, object]:
    """Namespaces, interface indexes and tunnel process ids: what 'recreate nothing' keeps."""
    out: dict[str, object] = {}
    for ns in list_lab_namespaces(lab_name):
        out[ns] = sh(ns, "ip", "-o", "link", "show").stdout.split("\n")
    inodes = {procs.netns_inode(ns) for ns in list_lab_namespaces(lab_name)} - {None}
    out["pids"] = sorted(p.pid for p in procs.processes() if p.netns_inode in inodes)
    return out


@pytest.mark.parametrize("topology,transport", COMBOS, ids=[f"{a}-{b}" for a, b in COMBOS])
def test_topology_transport(lab, topology: str, transport: str) -> None:
    name = f"it-{topology[:4]}-{transport[:2]}"
    intent = lab.intent(three_sites(name, topology, transport))
    plan = build_plan(intent)
    sdir = lab.state(name)

    first = lab_up(intent, sdir)
    assert first.changed

    # all-pairs reachability
    pairs = ping_all(plan)
    assert len(pairs) == 4 * 3
    assert [p for p in pairs if not p.reachable] == []

    # a second up changes nothing and recreates nothing
    before = snapshot(name)
    second = lab_up(intent, sdir)
    assert not second.changed, [c.describe() for c in second.changes]
    assert snapshot(name) == before

    # the internet cannot reach a host, even with a route to it; it can ping the gateway
    inet = names.internet_ns(name)
    site = plan.site("aws")
    sh(inet, "ip", "route", "add", "10.0.0.0/8", "via", site.public_address, check=True)
    try:
        assert sh(inet, "ping", "-c", "2", "-W", "1", site.hosts[0].address).returncode != 0
        assert sh(inet, "ping", "-c", "1", "-W", "1", site.public_address).returncode == 0
    finally:
        sh(inet, "ip", "route", "del", "10.0.0.0/8")
    # ... and a port with a listener behind it is closed from the internet, open from the
    # gateway's own LAN (positive control in the same run)
    gw = names.gateway_ns(name, "aws")
    with listening(gw, LISTEN_PORT):
        host_ns = names.host_ns(name, "aws", site.hosts[0].name)
        assert tcp_connects(host_ns, site.gateway_address, LISTEN_PORT)
        assert not tcp_connects(inet, site.public_address, LISTEN_PORT)

    # hosts reach the internet, masqueraded by their gateway
    host_ns = names.host_ns(name, "aws", site.hosts[0].name)
    assert sh(host_ns, "ping", "-c", "1", "-W", "1", "192.0.2.1").returncode == 0

    # the wire: nothing of the overlay's packets in clear on an encrypted transport; the
    # unencrypted one (vxlan) is the positive control: the same check finds them there
    found = cleartext_hits(plan, inet, lab.tmp / f"{name}-cleartext.pcap")
    assert found["tunnel_packets"] > 0, f"the capture saw no tunnel traffic: {found}"
    if get_transport(transport).encrypted:
        assert found["pattern"] == 0, f"ping payloads crossed the internet in clear: {found}"
        assert found["address_pairs"] == [], f"inner headers crossed in clear: {found}"
    else:
        assert found["pattern"] > 0, f"the check missed cleartext payloads: {found}"
        assert len(found["address_pairs"]) == found["pairs"], found

    lab_down(name, sdir)
    assert leftovers(name, sdir) == []


def cleartext_hits(plan: Plan, inet: str, pcap: Path) -> dict[str, Any]:
    """What of the overlay's traffic crosses the internet in clear.

    Every host pings every host of the other sites with a fresh random 16-byte payload
    pattern (``ping -p``) while ``tcpdump -s 0`` captures whole packets on every interface
    of the internet namespace ``inet`` into ``pcap`` (removed afterwards). The raw capture
    is then searched for the pattern and for each pinged pair's inner source and
    destination addresses as 8 consecutive bytes (an inner IPv4 header's), whatever
    encapsulates them.

    Returns:
        ``pattern``: occurrences of the payload pattern; ``address_pairs``: the ``SRC>DST``
        inner address pairs found (requests and replies); ``pairs``: how many pairs were
        pinged; ``tunnel_packets``: captured UDP packets on the transport's ports (0: the
        capture saw no tunnel and proves nothing).
    """
    pattern = secrets.token_bytes(16)
    hosts = [
        (s.name, names.host_ns(plan.name, s.name, h.name), h.address)
        for s in plan.sites
        for h in s.hosts
    ]
    # the pairs across sites: a site's own hosts talk over its LAN, not the internet
    pairs = [(ns, a, b) for sa, ns, a in hosts for sb, _, b in hosts if sa != sb]
    cap = subprocess.Popen(
        ["ip", "netns", "exec", inet, "tcpdump", "-i", "any", "-n", "-s", "0", "-Z", "root"]
        + ["--immediate-mode", "-U", "-w", str(pcap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pings: list[subprocess.Popen[bytes]] = []
    try:
        assert cap.stderr is not None
        said = []
        for line in cap.stderr:  # "listening on any, ..." once the capture runs
            said.append(line)
            if "listening on" in line:
                break
        else:
            pytest.fail(f"tcpdump in {inet} did not start: {''.join(said)}")
        pings += [
            subprocess.Popen(
                ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "3", "-i", "0.1"]
                + ["-W", "1", "-p", pattern.hex(), dst],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for ns, _, dst in pairs
        ]
        failed = [p.args for p in pings if p.wait(timeout=10) != 0]
        assert failed == [], f"pings with the pattern got no reply: {failed}"
        time.sleep(0.1)
    finally:
        for p in pings:
            if p.poll() is None:
                p.kill()
                p.wait()
        cap.send_signal(signal.SIGINT)
        try:
            cap.wait(timeout=5)
        except subprocess.TimeoutExpired:
            cap.kill()
            cap.wait()
    try:
        raw = pcap.read_bytes()
        backend, n = get_transport(plan.transport), len(plan.sites)
        ports = {
            p for a in range(n) for b in range(a + 1, n) for p in backend.tunnel_ports(plan, a, b)
        }
        udp = "udp and (" + " or ".join(f"port {p}" for p in sorted(ports)) + ")"
        res = subprocess.run(
            ["tcpdump", "-r", str(pcap), "-n", "-q", udp],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        pcap.unlink(missing_ok=True)

    def packed(addr: str) -> bytes:
        return ipaddress.IPv4Address(addr).packed

    return {
        "pattern": raw.count(pattern),
        "address_pairs": [f"{a}>{b}" for _, a, b in pairs if packed(a) + packed(b) in raw],
        "tunnel_packets": len(res.stdout.splitlines()),
        "pairs": len(pairs),
    }


def test_converge_add_host_and_remove_site(lab) -> None:
    text = three_sites("it-conv")
    intent = lab.intent(text)
    sdir = lab.state("it-conv")
    lab_up(intent, sdir)
    pids_before = snapshot("it-conv")["pids"]

    grown = lab.intent(text.replace("hosts: [w-2]", "hosts: [w-2, w-3]"))
    res = lab_up(grown, sdir)
    assert {c.action for c in res.changes} == {"create"}
    assert {c.resource.node for c in res.changes} <= {"pn.it-conv.az.gateway", "pn.it-conv.az.w-3"}
    assert snapshot("it-conv")["pids"] == pids_before  # no tunnel process restarted
    assert all(p.reachable for p in ping_all(build_plan(grown)))

    start = text.index("  - name: az")
    shrunk = lab.intent(text[:start])
    res = lab_up(shrunk, sdir)
    assert "pn.it-conv.az.gateway" not in list_lab_namespaces("it-conv")
    assert all(p.reachable for p in ping_all(build_plan(shrunk)))
    assert not lab_up(shrunk, sdir).changed


def test_rotate_keys_keeps_reachability(lab) -> None:
    intent = lab.intent(three_sites("it-rot"))
    sdir = lab.state("it-rot")
    lab_up(intent, sdir)
    keyfile = sdir / "keys" / "os.key"
    old = keyfile.read_text()
    assert oct(keyfile.stat().st_mode & 0o777) == "0o600"
    res = lab_up(intent, sdir, rotate_keys=True)
    assert res.changed and keyfile.read_text() != old
    assert all(p.reachable for p in ping_all(build_plan(intent)))


def test_shaping_and_delay(lab) -> None:
    extra = ""
    text = three_sites("it-shape").replace(
        "    hosts: [w-1]\n", "    hosts: [w-1]\n    underlay: {rate: 50mbit, delay: 10ms}\n"
    )
    intent = lab.intent(text + extra)
    res = lab_up(intent, lab.state("it-shape"))
    gw = names.gateway_ns("it-shape", "aws")
    qdisc = sh(gw, "tc", "qdisc", "show", "dev", "wan0").stdout
    from polynimbus import capabilities

    if capabilities.netem():
        assert "netem" in qdisc
    else:
        assert any("delay emulation is unavailable" in w for w in res.warnings)
        assert "tbf" in qdisc and "50Mbit" in qdisc
    inet_q = sh(names.internet_ns("it-shape"), "tc", "qdisc", "show").stdout
    assert "tbf" in inet_q or "netem" in inet_q  # shaped in both directions


def test_two_labs_side_by_side(lab) -> None:
    a = lab.intent(three_sites("it-a"))
    b = lab.intent(three_sites("it-b", transport="vxlan"))
    lab_up(a, lab.state("it-a"))
    lab_up(b, lab.state("it-b"))
    lab_down("it-a", lab.state("it-a"))
    assert leftovers("it-a", lab.state("it-a")) == []
    assert list_lab_namespaces("it-b")
    assert all(p.reachable for p in ping_all(build_plan(b)))


def test_commands_refuse_without_root() -> None:
    import tempfile

    fd, name = tempfile.mkstemp(suffix=".yaml", dir="/tmp")
    os.write(fd, three_sites("it-nr").encode())
    os.close(fd)
    os.chmod(name, 0o644)
    path = Path(name)
    res = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            "from polynimbus.cli import main; main()",
            "up",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    path.unlink()
    assert res.returncode == 1, res.stderr
    assert "up needs root" in res.stderr


def test_a_running_lab_is_only_touched_through_its_own_state_dir(lab, tmp_path) -> None:
    """up and down given another state directory than the running lab's are refused and
    change nothing (the keys would otherwise be replaced); its own works."""
    from polynimbus import state
    from polynimbus.errors import StateError

    intent = lab.intent(three_sites("it-own"))
    mine, other = tmp_path / "mine", tmp_path / "other"
    lab_up(intent, mine)
    keys = sorted((mine / "keys").iterdir())
    before = {k.name: k.read_bytes() for k in keys}
    for call in (lambda: lab_up(intent, other), lambda: lab_down("it-own", other)):
        with pytest.raises(StateError, match=str(mine)):
            call()
        assert not other.exists()
        assert {k.name: k.read_bytes() for k in keys} == before
        assert list_lab_namespaces("it-own")
    assert not lab_up(intent, mine).changed
    lab_down("it-own", mine)
    assert state.recorded_state_dir("it-own") is None and not mine.exists()


def test_down_stops_a_daemon_whose_namespace_was_deleted_by_hand(lab, tmp_path) -> None:
    """A tunnel daemon outside every named namespace (its namespace deleted with ``ip netns
    del`` while it ran) is still the lab's: it runs in one of the lab's node directories.
    Left alone in the same run: a daemon of another lab's node directory, and a program
    that is no tunnel daemon in the lab's directory (a user's shell there)."""
    name = "it-orphan"
    intent = lab.intent(three_sites(name, transport="vxlan"))
    sdir = lab.state(name)
    lab_up(intent, sdir)
    ours = sdir / "daemons" / names.gateway_ns(name, "aws")
    theirs = tmp_path / "daemons" / names.gateway_ns("it-other", "aws")
    fake_daemon = tmp_path / "bin" / "openvpn"  # sleep(1) under a tunnel daemon's name
    fake_daemon.parent.mkdir()
    fake_daemon.symlink_to(shutil.which("sleep") or "/bin/sleep")
    started = []
    for cwd, ns, program in (
        (ours, "it-orphan-ns", str(fake_daemon)),
        (theirs, "it-other-ns", str(fake_daemon)),
        (ours, "it-shell-ns", "sleep"),
    ):
        cwd.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ip", "netns", "add", ns], check=True)
        started.append(subprocess.Popen(["ip", "netns", "exec", ns, program, "60"], cwd=cwd))
        time.sleep(0.2)
        subprocess.run(["ip", "netns", "del", ns], check=True)
    try:
        lab_down(name, sdir)
        deadline = time.monotonic() + 5
        while started[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started[0].poll() is not None  # ours: stopped
        assert started[1].poll() is None  # another lab's: still running
        assert started[2].poll() is None  # not a tunnel daemon: still running
    finally:
        for p in started:
            p.kill()
            p.wait()


def wg_go_receive_buffers(ns: str) -> list[int]:
    """``rb`` of every UDP socket of the wireguard-go daemons in ``ns`` (what the kernel
    reports: twice the size set), from ``ss``, an independent reader."""
    out = sh(ns, "ss", "-uamnp").stdout.splitlines()
    sizes = []
    for i, line in enumerate(out):
        if "wireguard-go" in line and i + 1 < len(out) and "skmem:(" in out[i + 1]:
            mem = out[i + 1].split("skmem:(", 1)[1].split(")", 1)[0]
            sizes += [int(f[2:]) for f in mem.split(",") if f.startswith("rb")]
    return sizes


def test_wireguard_go_sockets_get_large_buffers_and_up_repairs_them(lab) -> None:
    from polynimbus.capabilities import wireguard_impl
    from polynimbus.targets.lab import wireguard as lab_wg
    from polynimbus.tunnels.wireguard import USERSPACE_SOCKET_BUFFER

    if wireguard_impl() != "userspace":
        pytest.fail("this machine's WireGuard is the kernel's: the test is for wireguard-go")
    name = "it-wgbuf"
    intent = lab.intent(three_sites(name))
    plan = build_plan(intent)
    sdir = lab.state(name)
    lab_up(intent, sdir)
    gw = names.gateway_ns(name, "aws")
    sizes = wg_go_receive_buffers(gw)
    assert sizes and all(s == 2 * USERSPACE_SOCKET_BUFFER for s in sizes), sizes
    # drift: the daemon's sockets back at the host's default; up sees it and repairs it
    lab_wg.set_socket_buffer(gw, plan.site("aws").tunnel_if, 212992)
    assert all(s == 2 * 212992 for s in wg_go_receive_buffers(gw))
    repaired = lab_up(intent, sdir)
    assert [c.resource.kind for c in repaired.changes] == ["wgconf"], repaired.changes
    assert all(s == 2 * USERSPACE_SOCKET_BUFFER for s in wg_go_receive_buffers(gw))
