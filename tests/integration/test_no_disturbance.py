"""Changes without disturbance (issue 9): adding or removing a site, a host or a chain
while traffic flows between two other sites loses none of that traffic and restarts no
process that did not need it.

A ping every 10 ms runs from site ``a``'s host to site ``b``'s (``ping -D -O``) while the
intent is re-applied with one change; every sequence number it sent must be answered
(no gap, sent = received but for the last one or two still in flight when it is
stopped), and its answers must span the apply. Every process running in the lab's
namespaces (tunnel daemons, and whatever else the lab runs there) keeps its PID unless its
own namespace went; every ``wireguard-go`` keeps its UDP sockets and every WireGuard peer
that stays its session (a gateway whose peers change gets only those, with ``wg set``);
only the resources the change adds, removes or alters are written, on the namespaces it
concerns. Each change is also seen to happen (the new site or host answers, the removed
one is gone, the peers changed), so the checks cannot pass by a change that did nothing,
and the ping check is shown to see a gap: 200 ms of dropped forwarding on ``a``'s gateway
(positive control). Sites are applied as the CLI's ``up`` does (everything observed),
hosts and the chain's removal as the API does (``only_changes``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from polynimbus import names, procs, state
from polynimbus.apply import ApplyResult
from polynimbus.intent import Intent, load_intent_text
from polynimbus.orchestrate import desired_lab, lab_up
from polynimbus.plan import build_plan
from polynimbus.resources import Key
from polynimbus.targets.lab import list_lab_namespaces
from tests.integration.conftest import srv6_or_refusal

PROVIDERS = {"a": "aws", "b": "azure", "c": "gcp", "d": "openstack"}
INTERVAL_S = 0.01
"""The ping's interval (10 ms, as the issue asks)."""
SETTLE_S = 0.15
"""Ping before and after each change (so a gap at either edge of the apply is seen)."""


def intent_text(
    name: str, sites: str = "abc", c_hosts: int = 1, srv6: bool = False, chain: bool = False
) -> str:
    """Full-mesh WireGuard over ``sites`` (one host ``h1`` each, ``c_hosts`` on ``c``;
    ``a``'s internet link shaped, so its gateway has qdiscs that must stay);
    ``srv6``: with a service on ``c``; ``chain``: a chain from ``c/h1`` to ``a/h1`` through
    it, for UDP port 5300 only."""
    lines = [f"name: {name}", "overlay:", "  topology: full-mesh", "  transport: wireguard"]
    if srv6:
        lines.append("  srv6: {carrier: tunnels}")
    lines.append("sites:")
    for s in sites:
        hosts = ", ".join(f"h{i}" for i in range(1, (c_hosts if s == "c" else 1) + 1))
        shaped = ", underlay: {rate: 500mbit}" if s == "a" else ""  # a qdisc to keep
        lines.append(f"  - {{name: {s}, provider: {PROVIDERS[s]}, hosts: [{hosts}]{shaped}}}")
    if srv6:
        lines += ["services:", "  - {name: svc, site: c, mode: sr-aware, function: forward}"]
    if chain:
        lines += [
            "chains:",
            "  - {name: ch, from: c/h1, to: a/h1, through: [svc],",
            "     match: {protocol: udp, port: 5300}}",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class PingReport:
    """What a ``ping -D -O`` saw: packets sent (its summary), sequence numbers answered,
    and the sequence numbers missing below the last answered one (gaps)."""

    sent: int
    answered: dict[int, float]
    gaps: list[int]
    output: str

    @property
    def unanswered(self) -> int:
        return self.sent - len(self.answered)

    def describe(self) -> str:
        gaps = self.gaps
        shown = f"{gaps[:10]}{'...' if len(gaps) > 10 else ''}"
        return f"sent {self.sent}, answered {len(self.answered)}, gaps {len(gaps)} {shown}"


REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", re.M)
SUMMARY = re.compile(r"(\d+) packets transmitted")


def parse_ping(output: str) -> PingReport:
    """The :class:`PingReport` of a ``ping -D -O -n`` output (its summary included)."""
    answered = {int(m.group(2)): float(m.group(1)) for m in REPLY.finditer(output)}
    m = SUMMARY.search(output)
    assert m, f"no ping summary in:\n{output[-500:]}"
    sent = int(m.group(1))
    last = max(answered, default=0)
    gaps = [s for s in range(1, last + 1) if s not in answered]
    return PingReport(sent, answered, gaps, output)


@dataclass
class Pinger:
    """A running ping (its PID) and, once it has stopped, its report."""

    pid: int
    report: PingReport | None = None


@contextmanager
def pinging(ns: str, address: str) -> Iterator[Pinger]:
    """A ping every 10 ms from namespace ``ns`` to ``address`` for the block (plus
    :data:`SETTLE_S` either side); its report is set on exit."""
    argv = ["ip", "netns", "exec", ns, "ping", "-D", "-O", "-n", "-i", str(INTERVAL_S)]
    # into a file: a pipe nobody reads fills up (64 KiB, 800 lines) and stops the ping
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([*argv, address], stdout=out, text=True)
        pinger = Pinger(proc.pid)  # ip netns exec execs ping: one process
        try:
            time.sleep(SETTLE_S)
            yield pinger
            time.sleep(SETTLE_S)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
        out.seek(0)
        pinger.report = parse_ping(out.read())


def report_of(pinger: Pinger) -> PingReport:
    assert pinger.report is not None
    return pinger.report


def assert_no_loss(report: PingReport, start: float, end: float, what: str) -> None:
    """Every packet answered: no gap, and at most the last two (in flight when ping was
    stopped) unanswered; and answers from before ``start`` and after ``end`` (seconds
    since the epoch), so that the ping covered the change."""
    stamps = report.answered.values()
    covered = min(stamps, default=end) < start and max(stamps, default=start) > end
    assert covered, f"{what}: the ping did not cover the change: {report.describe()}"
    assert not report.gaps, f"{what}: lost packets: {report.describe()}"
    assert report.unanswered <= 2, f"{what}: {report.describe()}"


def lab_processes(lab: str, mine: set[int]) -> dict[tuple[str, tuple[str, ...]], int]:
    """Every process running in one of ``lab``'s namespaces (tunnel daemons and anything
    else the lab runs there), but those of ``mine``: ``{(namespace, argv): pid}``."""
    inodes = {procs.netns_inode(ns): ns for ns in list_lab_namespaces(lab)}
    inodes.pop(None, None)
    return {
        (inodes[p.netns_inode], p.argv): p.pid
        for p in procs.processes()
        if p.netns_inode in inodes and p.pid not in mine
    }


def assert_no_restart(
    before: dict[tuple[str, tuple[str, ...]], int],
    after: dict[tuple[str, tuple[str, ...]], int],
    spaces: list[str],
    what: str,
) -> None:
    """Every process of ``before`` whose namespace is still among ``spaces`` runs on with
    its PID."""
    kept = {k: pid for k, pid in before.items() if k[0] in spaces}
    assert kept, f"{what}: no process to check"
    moved = {k: (pid, after.get(k)) for k, pid in kept.items() if after.get(k) != pid}
    assert not moved, f"{what}: restarted or gone (old pid, new pid): {moved}"


def udp_sockets(pid: int) -> frozenset[int]:
    """The inodes of the UDP sockets process ``pid`` holds (a daemon that rebinds, as
    ``wireguard-go`` does when it is given its listen port again, holds new ones)."""
    udp: set[int] = set()
    for table in ("udp", "udp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            udp |= {int(line.split()[9]) for line in f.readlines()[1:]}
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and int(link[8:-1]) in udp:
            held.add(int(link[8:-1]))
    return frozenset(held)


def tunnel_sockets(
    running: dict[tuple[str, tuple[str, ...]], int],
) -> dict[tuple[str, tuple[str, ...]], frozenset[int]]:
    """The UDP sockets of each ``wireguard-go`` of ``running``."""
    return {k: udp_sockets(pid) for k, pid in running.items() if k[1][0].endswith("wireguard-go")}


def assert_writes_only(
    result: ApplyResult,
    existing: set[str],
    changed: set[Key],
    nodes: set[str],
    links: set[str],
    what: str,
) -> None:
    """Of the namespaces that were there before and after the change (``existing``), only
    ``nodes`` were written, and on them no process, namespace or qdisc was (re)created or
    removed, no link but ``links`` (``"NODE IFNAME"``) touched, and nothing written that
    the change leaves as it was (``changed``: the keys of the resources it adds, removes
    or changes; a flush-then-add, or a resource re-applied because its link was
    recreated, would write others)."""
    for c in result.changes:
        r = c.resource
        if r.node not in existing:
            continue
        assert r.node in nodes, f"{what}: {c.describe()}"
        assert r.key in changed, f"{what}: wrote what did not change: {c.describe()}"
        assert r.kind not in ("process", "netns", "qdisc"), f"{what}: {c.describe()}"
        if r.kind == "link":
            assert f"{r.node} {r.item.ident()[0]}" in links, f"{what}: {c.describe()}"


def ns_ok(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)


def answers(ns: str, address: str) -> bool:
    """Whether ``address`` answers a ping from ``ns`` within 2 s."""
    return ns_ok(ns, "ping", "-n", "-c", "1", "-W", "2", address).returncode == 0


def wg_peers(ns: str, ifname: str) -> int:
    """Number of peers of WireGuard interface ``ifname`` in ``ns`` (``wg show all`` would
    list every ``wireguard-go`` on the host: their sockets are host-wide)."""
    res = ns_ok(ns, "wg", "show", ifname, "peers")
    assert res.returncode == 0, res.stderr
    return len(res.stdout.split())


def wg_sessions(lab: str, spaces: set[str]) -> dict[tuple[str, str], int]:
    """The time of the latest handshake (s since the epoch) with each peer of every
    WireGuard interface of the gateways in ``spaces``: ``{(namespace, peer key): time}``.
    A peer whose session is kept keeps its time; ``wg setconf`` (or a restarted daemon)
    drops every session, and the next packet makes a new handshake."""
    out: dict[tuple[str, str], int] = {}
    prefix = names.wireguard_if_prefix(lab)
    for ns in sorted(spaces):
        if not ns.endswith(".gateway"):
            continue
        links = ns_ok(ns, "ip", "-o", "link", "show").stdout
        for ifname in re.findall(rf"^\d+: ({re.escape(prefix)}\w*)[:@]", links, re.M):
            res = ns_ok(ns, "wg", "show", ifname, "latest-handshakes")
            for line in res.stdout.splitlines():
                key, stamp = line.split()
                out[(ns, key)] = int(stamp)
    return out


@contextmanager
def forwarding_dropped(ns: str, seconds: float) -> Iterator[None]:
    """Drop everything ``ns`` forwards for ``seconds`` (a table of its own, removed after)."""
    table = "nd-control"
    ruleset = (
        f"table inet {table} {{\n  chain f {{\n"
        "    type filter hook forward priority -300; policy drop;\n  }\n}\n"
    )
    res = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    try:
        time.sleep(seconds)
        yield
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", table])


@dataclass
class Step:
    """One change: its name, the intent after it, whether it is applied as the API does
    (``only_changes``), the namespaces it adds and removes, the namespaces present before
    and after that it may write (``writes``), and the links it may add or remove there."""

    what: str
    text: str
    only_changes: bool
    coming: set[str]
    going: set[str]
    writes: set[str]
    links: set[str]


def kept_intent(sdir: Path) -> Intent:
    """The intent the lab's last up applied (kept in its state directory)."""
    text = state.kept_intent_applied(sdir)
    assert text is not None
    return load_intent_text(text)


def change_without_disturbance(
    lab: str, sdir: Path, step: Step, intent: Intent, src: str, dst: str
) -> ApplyResult:
    """Apply ``step`` while ``src`` pings ``dst`` every 10 ms; check that no packet was
    lost, no process restarted, and only the namespaces the step may write were written."""
    before_spaces = set(list_lab_namespaces(lab))
    assert step.going <= before_spaces and not step.coming & before_spaces, step.what
    was = {r.key: r.item for r in desired_lab(build_plan(kept_intent(sdir)), sdir, dry_run=True)[0]}
    now = {r.key: r.item for r in desired_lab(build_plan(intent), sdir, dry_run=True)[0]}
    changed = {k for k in was.keys() | now.keys() if was.get(k) != now.get(k)}
    sessions = wg_sessions(lab, before_spaces)
    assert sessions and all(sessions.values()), f"{step.what}: no tunnel up: {sessions}"
    with pinging(src, dst) as pinger:
        before = lab_processes(lab, {pinger.pid})
        sockets = tunnel_sockets(before)
        start = time.time()
        result = lab_up(intent, sdir, only_changes=step.only_changes)
        end = time.time()
        after = lab_processes(lab, {pinger.pid})
    assert_no_loss(report_of(pinger), start, end, step.what)
    spaces = set(list_lab_namespaces(lab))
    assert_no_restart(before, after, spaces, step.what)
    # nor did a tunnel daemon rebind its sockets (a packet arriving then is lost)
    assert sockets and all(sockets.values()), f"{step.what}: no tunnel socket: {sockets}"
    kept = tunnel_sockets({k: pid for k, pid in after.items() if k in sockets})
    rebound = {k[0]: (sockets[k], v) for k, v in kept.items() if v != sockets[k]}
    assert not rebound, f"{step.what}: tunnel sockets replaced (old, new): {rebound}"
    # every peer that stays keeps its WireGuard session (no wg setconf, no new key)
    renewed = wg_sessions(lab, spaces)
    dropped = {k: (t, renewed[k]) for k, t in sessions.items() if renewed.get(k, t) != t}
    assert not dropped, f"{step.what}: sessions renewed (old, new handshake): {dropped}"
    # the change happened, and wrote only where it had to
    assert result.changed, step.what
    assert step.coming <= spaces and not step.going & spaces, step.what
    existing = before_spaces & spaces
    assert_writes_only(result, existing, changed, step.writes, step.links, step.what)
    return result


def test_sites_and_hosts_come_and_go_without_disturbing_other_traffic(lab) -> None:
    name = "nd-1"
    sdir = lab.state(name)
    base = intent_text(name)
    lab_up(lab.intent(base), sdir)
    plan4 = build_plan(lab.intent(intent_text(name, sites="abcd", c_hosts=2)))
    a_h1, d_h1 = names.host_ns(name, "a", "h1"), names.host_ns(name, "d", "h1")
    c_h2 = names.host_ns(name, "c", "h2")
    b_addr = plan4.site("b").hosts[0].address
    d_addr = plan4.site("d").hosts[0].address
    c2_addr = plan4.site("c").hosts[1].address
    a_gw, a_wg = names.gateway_ns(name, "a"), plan4.site("a").tunnel_if
    c_gw = names.gateway_ns(name, "c")
    gateways = {names.gateway_ns(name, s) for s in "abc"}
    assert answers(a_h1, b_addr)

    # positive control: 200 ms without forwarding on a's gateway is seen as a gap
    with pinging(a_h1, b_addr) as pinger, forwarding_dropped(a_gw, 0.2):
        pass
    control = report_of(pinger)
    assert len(control.gaps) >= 10, f"the check misses an outage: {control.describe()}"

    # sites as the CLI's up applies them (everything observed), hosts as the API does
    internet = names.internet_ns(name)
    d_gw = names.gateway_ns(name, "d")
    steps = [
        Step("add site d", intent_text(name, "abcd"), False, {d_gw, d_h1}, set(),
             gateways | {internet}, set()),
        Step("remove site d", base, False, set(), {d_gw, d_h1}, gateways | {internet}, set()),
        Step("add host c/h2", intent_text(name, c_hosts=2), True, {c_h2}, set(), {c_gw},
             {f"{c_gw} h2"}),
        Step("remove host c/h2", base, True, set(), {c_h2}, {c_gw}, {f"{c_gw} h2"}),
    ]  # fmt: skip
    for step in steps:
        peers = wg_peers(a_gw, a_wg)
        change_without_disturbance(name, sdir, step, lab.intent(step.text), a_h1, b_addr)
        if step.what == "add site d":  # a's peers changed, its wireguard-go stayed
            assert answers(a_h1, d_addr), step.what
            assert wg_peers(a_gw, a_wg) == peers + 1, step.what
        elif step.what == "remove site d":
            assert wg_peers(a_gw, a_wg) == peers - 1, step.what
        elif step.what == "add host c/h2":
            assert answers(a_h1, c2_addr), step.what


def test_a_chain_comes_and_goes_without_disturbing_other_traffic(lab) -> None:
    name = "nd-2"
    sdir = lab.state(name)
    base = intent_text(name, srv6=True)
    srv6_or_refusal(lab, base, sdir)  # without SRv6: up refused, nothing changed
    lab_up(lab.intent(base), sdir)
    chained = intent_text(name, srv6=True, chain=True)
    plan = build_plan(lab.intent(chained))
    assert plan.srv6 is not None
    a_h1 = names.host_ns(name, "a", "h1")
    b_addr = plan.site("b").hosts[0].address
    assert answers(a_h1, b_addr)
    # the chain's ends (a, c), its source host and c's network functions; never b
    writes = {names.gateway_ns(name, s) for s in "ac"} | {names.host_ns(name, "c", "h1")}
    writes |= {names.nfv_ns(name, "c"), names.service_ns(name, "c", "svc")}
    for step in (
        Step("add chain", chained, False, set(), set(), writes, set()),
        Step("remove chain", base, True, set(), set(), writes, set()),
    ):
        result = change_without_disturbance(name, sdir, step, lab.intent(step.text), a_h1, b_addr)
        assert any(c.resource.kind == "route" for c in result.changes), step.what


def _config(private: str, port: int, peers: dict[str, str]) -> str:
    """A ``wg setconf`` text: ``peers`` by public key, each with its allowed IPs."""
    lines = ["[Interface]", f"PrivateKey = {private}", f"ListenPort = {port}"]
    for i, (pub, ips) in enumerate(peers.items()):
        lines += ["[Peer]", f"PublicKey = {pub}", f"Endpoint = 198.18.0.{i}:51820"]
        lines += [f"AllowedIPs = {ips}", "PersistentKeepalive = 25"]
    return "\n".join(lines) + "\n"


def test_a_running_wireguard_interface_gets_only_what_differs() -> None:
    """:func:`polynimbus.targets.lab.wireguard.changes`, pure: the ``wg set`` of a change
    names only the peers it adds, removes or alters, never the listen port or the key
    that stay (``wg syncconf`` would give all of them again)."""
    from polynimbus.targets.lab.wireguard import changes
    from polynimbus.tunnels.wireguard import parse_wg_config

    base = {"PB=": "10.2.0.0/24", "PC=": "10.4.0.0/24"}
    live = parse_wg_config(_config("KA=", 51820, base))
    assert changes(live, _config("KA=", 51820, base)) == ([], None)
    argv, key = changes(live, _config("KA=", 51820, {**base, "PD=": "10.3.0.0/24"})) or ([], "")
    assert key is None
    assert argv == ["peer", "PD=", "endpoint", "198.18.0.2:51820"] + [
        "allowed-ips", "10.3.0.0/24", "persistent-keepalive", "25"
    ]  # fmt: skip
    argv, key = changes(live, _config("KA=", 51820, {"PB=": base["PB="]})) or ([], "")
    assert (argv, key) == (["peer", "PC=", "remove"], None)
    grown = {"PB=": "10.2.0.0/24, 10.3.0.0/24", "PC=": base["PC="]}
    argv, key = changes(live, _config("KA=", 51820, grown)) or ([], "")
    assert argv[:2] == ["peer", "PB="] and "10.2.0.0/24,10.3.0.0/24" in argv and "PC=" not in argv
    argv, key = changes(live, _config("KN=", 51821, base)) or ([], "")
    assert argv == ["private-key", "/dev/stdin", "listen-port", "51821"] and key == "KN=\n"
    # a setting it does not know: the whole configuration goes through wg syncconf
    assert changes(live, _config("KA=", 51820, base) + "PresharedKey = X=\n") is None
