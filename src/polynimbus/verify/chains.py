"""Proving SRv6 service chains: reachability through each chain, each function's counters,
and that traffic outside every chain never enters a function.

Evidence comes from nftables counters the renderers put on the path
(:mod:`polynimbus.render.srv6`): at the ingress gateway, on the encapsulated packet's first
SID (one per chain and direction: the classifier pushed this chain's list); in each
function's namespace (per chain and direction); on the connector's return interface; at
the egress gateway, on the decapsulated packet with the chain's inner selectors.
Counters are read before and after a probe and compared, so only the probe's packets are
counted (verify runs nothing else in the lab meanwhile).

The probe of a chain is what the chain steers, from its first source host to its first
destination host: a ping (unless ``match`` asks for TCP or UDP only) and a bulk TCP
transfer with iperf3 (unless it asks for ICMP or UDP only); a UDP chain gets datagrams to
an echo responder on its port (the echoes are its reverse direction). A bulk transfer
matters: encapsulation adds 40 + 8 + 16·n bytes, and a path that passes pings can still
carry no full-size segment (RFC 8754 §3 overhead). Replies of a symmetric chain are
its reverse direction, so one probe proves both.
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from polynimbus import names
from polynimbus.errors import VerifyError
from polynimbus.plan.model import Plan
from polynimbus.plan.srv6 import ChainDirection
from polynimbus.render.srv6 import FUNCTION_TABLE, GATEWAY_SRV6_TABLE, NFV_TABLE
from polynimbus.verify.proc import STUCK_HINT, ns_argv, run_in_ns
from polynimbus.verify.throughput import iperf3

PING_COUNT = 3
IPERF_SECONDS = 1
DEFAULT_TCP_PORT = 5201
COUNTERS_TIMEOUT_S = 10.0

Counters = dict[str, int]
"""Packets per counter comment (``pn ...``) of one namespace."""


@dataclass(frozen=True)
class HopResult:
    """One stop of a chain direction, as the probe found it.

    Attributes:
        kind: ``ingress``, ``function``, ``proxy`` (the connector re-encapsulating what
            an SR-unaware function sent back) or ``egress``.
        site: the site.
        node: ``gateway`` or the function's name.
        behaviour: what happens there (``classify + T.Encaps``, ``End``, ``End.AS``,
            ``End.DX4``...).
        sid: the SID (``None`` at the ingress).
        segments: the segment list pushed there (ingress and proxies), travel order.
        packets: packets the probe added to the hop's counter.
    """

    kind: str
    site: str
    node: str
    behaviour: str
    sid: str | None
    segments: tuple[str, ...]
    packets: int


@dataclass
class ChainResult:
    """One direction of one chain.

    Attributes:
        chain, direction, family: as planned.
        src, dst: ``SITE/HOST`` of the probe's endpoints (sender of this direction first).
        ping: whether the ping probe got replies (``None``: not probed).
        tcp_bps: the bulk TCP transfer's rate in bit/s (``None``: not probed).
        udp_echoed: UDP datagrams echoed back of :data:`UDP_COUNT` (``None``: not probed).
        hops: ingress, each function in order, egress.
        errors: what failed, one text each.
    """

    chain: str
    direction: str
    family: str
    src: str
    dst: str
    ping: bool | None = None
    tcp_bps: float | None = None
    udp_echoed: int | None = None
    hops: list[HopResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No error: the probe passed and every hop counted it."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """The chain's entry of ``verify --json``."""
        return {
            "chain": self.chain,
            "direction": self.direction,
            "family": self.family,
            "src": self.src,
            "dst": self.dst,
            "ok": self.ok,
            "ping": self.ping,
            "tcp_bps": self.tcp_bps,
            "udp_echoed": self.udp_echoed,
            "hops": [
                {
                    "kind": h.kind,
                    "site": h.site,
                    "node": h.node,
                    "behaviour": h.behaviour,
                    "sid": h.sid,
                    "segments": list(h.segments),
                    "packets": h.packets,
                }
                for h in self.hops
            ],
            "errors": list(self.errors),
        }


@dataclass
class IsolationResult:
    """Traffic outside every chain, and what it added to the functions' counters.

    Attributes:
        pairs: ``(src, dst, family)`` probed with ping (none of them in a chain for ICMP).
        entered: packets that entered each function meanwhile (should be 0).
        control: packets that entered each function during the chain probes of the same
            run (the positive control: the same counter does count chain traffic; every
            function a chain passes through must show some).
    """

    pairs: list[tuple[str, str, str]] = field(default_factory=list)
    entered: dict[str, int] = field(default_factory=dict)
    control: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing entered a function, and each function in a chain counted its probe."""
        return not any(self.entered.values()) and all(self.control.values())


_COMMENT = re.compile(r"^pn ")


def read_counters(ns: str, table: str) -> Counters:
    """Packets per ``pn ...`` counter comment in table ``inet TABLE`` of ``ns``.

    Raises:
        VerifyError: nft failed (the lab is not up, or the table is missing).
    """
    res = run_in_ns(
        ns,
        ["nft", "-j", "list", "table", "inet", table],
        COUNTERS_TIMEOUT_S,
        f"reading counters in {ns}",
    )
    if res.returncode != 0:
        raise VerifyError(
            f"cannot read the counters of table inet {table} in {ns}: {res.stderr.strip()}",
            "is the lab up? polynimbus up FILE repairs it",
        )
    out: Counters = {}
    for entry in json.loads(res.stdout).get("nftables", []):
        rule = entry.get("rule")
        if not rule or not _COMMENT.match(rule.get("comment", "")):
            continue
        for expr in rule.get("expr", []):
            c = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(c, dict):
                out[rule["comment"]] = out.get(rule["comment"], 0) + int(c.get("packets", 0))
    return out


def _nodes(plan: Plan) -> list[tuple[str, str]]:
    """Every (namespace, table) holding chain counters."""
    sr = plan.srv6
    assert sr is not None
    out = [
        (names.gateway_ns(plan.name, s.name), GATEWAY_SRV6_TABLE) for s in plan.sites if s.sid_block
    ]
    out += [(names.nfv_ns(plan.name, s), NFV_TABLE) for s in sr.nfv_sites]
    out += [(names.service_ns(plan.name, v.site, v.name), FUNCTION_TABLE) for v in sr.services]
    return out


def snapshot(plan: Plan) -> dict[str, Counters]:
    """Counters of every chain node, by namespace (read in parallel)."""
    nodes = _nodes(plan)
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda n: read_counters(*n), nodes))
    return {ns: c for (ns, _), c in zip(nodes, got, strict=True)}


def _delta(before: dict[str, Counters], after: dict[str, Counters], ns: str, key: str) -> int:
    return after.get(ns, {}).get(key, 0) - before.get(ns, {}).get(key, 0)


def _first_host(plan: Plan, site_name: str, prefixes: tuple[str, ...], family: str) -> Any:
    """The host an endpoint names (``SITE/HOST``: its /32 or /128), else the site's first."""
    site = plan.site(site_name)
    for h in site.hosts:
        addr = h.address if family == "ipv4" else h.address6
        if f"{addr}/32" in prefixes or f"{addr}/128" in prefixes:
            return h
    return site.hosts[0]


def hop_results(
    plan: Plan, c: ChainDirection, before: dict[str, Counters], after: dict[str, Counters]
) -> list[HopResult]:
    """The hops of ``c`` with the packets the probe added at each."""
    lab = plan.name
    first = c.subpaths[0][1]
    out = [
        HopResult(
            "ingress",
            c.ingress,
            "gateway",
            "classify, T.Encaps",
            None,
            first,
            _delta(
                before,
                after,
                names.gateway_ns(lab, c.ingress),
                f"pn ingress {c.chain} {c.direction}",
            ),
        )
    ]
    pushed = dict(c.subpaths)
    sr = plan.srv6
    assert sr is not None
    for h in c.hops:
        if h.kind == "function":
            ns = names.service_ns(lab, h.site, h.node)
            packets = _delta(before, after, ns, f"pn function {h.node} {c.chain} {c.direction}")
            svc = sr.service(h.node)
            if h.behaviour == "End.AS":
                what = f"End.AS: proxy decapsulates to the sr-unaware {svc.function}"
            else:
                what = f"End: sr-aware {svc.function}"
            out.append(HopResult("function", h.site, h.node, what, h.sid, (), packets))
            if h.behaviour == "End.AS":
                nfv = names.nfv_ns(lab, h.site)
                back = _delta(before, after, nfv, f"pn return {h.node} {c.chain} {c.direction}")
                out.append(
                    HopResult(
                        "proxy",
                        h.site,
                        "nfv",
                        f"back from {h.node}: re-encapsulate (T.Encaps)",
                        None,
                        pushed.get(h.node, ()),
                        back,
                    )
                )
        else:
            ns = names.gateway_ns(lab, h.site)
            packets = _delta(before, after, ns, f"pn egress {c.chain} {c.direction}")
            out.append(HopResult("egress", h.site, "gateway", h.behaviour, h.sid, (), packets))
    return out


def _ping(src_ns: str, addr: str, family: str) -> bool:
    argv = ["ping", "-6" if family == "ipv6" else "-4", "-c", str(PING_COUNT), "-i", "0.2"]
    res = run_in_ns(src_ns, [*argv, "-W", "1", "-q", addr], 15.0, f"ping {addr} from {src_ns}")
    m = re.search(r"(\d+) received", res.stdout)
    return bool(m and int(m.group(1)) > 0)


def probe_chain(
    plan: Plan, chain: str, progress: Callable[[str], None] | None = None
) -> list[ChainResult]:
    """Send the chain's probe and read every hop's counters (see the module docstring).

    Returns:
        one result per direction of ``chain`` (forward, then reverse when symmetric).

    Raises:
        VerifyError: the plan has no such chain, or a probe could not run.
    """
    sr = plan.srv6
    dirs = [c for c in (sr.chains if sr else ()) if c.chain == chain]
    if not dirs:
        known = ", ".join(sr.chain_names()) if sr else ""
        raise VerifyError(
            f"no chain named {chain!r}",
            f"chains: {known}" if known else "the intent has no chains",
        )
    fwd = dirs[0]
    src_host = _first_host(plan, fwd.ingress, fwd.src, fwd.family)
    dst_host = _first_host(plan, fwd.egress, fwd.dst, fwd.family)
    src_ns = names.host_ns(plan.name, fwd.ingress, src_host.name)
    dst_ns = names.host_ns(plan.name, fwd.egress, dst_host.name)
    dst_addr = dst_host.address if fwd.family == "ipv4" else dst_host.address6
    results = [
        ChainResult(
            c.chain,
            c.direction,
            c.family,
            *(
                (f"{fwd.ingress}/{src_host.name}", f"{fwd.egress}/{dst_host.name}")
                if c.direction == "forward"
                else (f"{fwd.egress}/{dst_host.name}", f"{fwd.ingress}/{src_host.name}")
            ),
        )
        for c in dirs
    ]
    before = snapshot(plan)
    proto = fwd.protocol
    ping_ok: bool | None = None
    rate: float | None = None
    echoed: int | None = None
    if proto in (None, "icmp"):
        if progress:
            progress(f"chain {chain}: ping {dst_addr}")
        ping_ok = _ping(src_ns, dst_addr, fwd.family)
    if proto in (None, "tcp"):
        if progress:
            progress(f"chain {chain}: bulk TCP transfer to {dst_addr}")
        port = fwd.dport or DEFAULT_TCP_PORT
        try:
            rate = iperf3(src_ns, dst_ns, dst_addr, IPERF_SECONDS, port=port)
        except VerifyError as exc:
            for r in results:
                r.errors.append(f"bulk TCP transfer failed: {exc.message}")
    elif proto == "udp":
        if progress:
            progress(f"chain {chain}: UDP datagrams to an echo responder on {dst_addr}")
        echoed = _udp_probe(src_ns, dst_ns, dst_addr, fwd.dport or DEFAULT_TCP_PORT)
    after = snapshot(plan)
    for r, c in zip(results, dirs, strict=True):
        r.ping, r.tcp_bps, r.udp_echoed = ping_ok, rate, echoed
        if ping_ok is False:
            r.errors.append(f"ping {r.src} -> {r.dst} got no reply")
        if echoed is not None and echoed < UDP_COUNT // 2:
            r.errors.append(f"{echoed} of {UDP_COUNT} UDP datagrams came back")
        r.hops = hop_results(plan, c, before, after)
        for h in r.hops:
            if h.packets <= 0:
                where = f"{h.site}/{h.node} ({h.kind})"
                r.errors.append(f"{where} did not see the probe")
    return results


UDP_COUNT = 20
UDP_ECHO = """
import socket, sys, time
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, port))
print("ready", flush=True)
s.settimeout(5.0)
for _ in range(n):
    try:
        data, peer = s.recvfrom(2048)
    except OSError:
        break
    s.sendto(data, peer)
"""
UDP_SEND = """
import socket, sys, time
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
got = 0
for i in range(n):
    s.sendto(b"pn-probe %d " % i + b"x" * 500, (addr, port))
    try:
        s.recvfrom(2048)
        got += 1
    except OSError:
        pass
print(got)
"""


def _udp_probe(src_ns: str, dst_ns: str, addr: str, port: int) -> int:
    """:data:`UDP_COUNT` datagrams of 512 bytes to an echo responder started in
    ``dst_ns`` on ``addr``/``port``; returns how many echoes came back (the echoes are
    the reverse direction of a symmetric chain).

    Raises:
        VerifyError: the responder or the sender could not run.
    """
    echo = subprocess.Popen(
        ns_argv(dst_ns, sys.executable, "-c", UDP_ECHO, addr, str(port), str(UDP_COUNT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert echo.stdout is not None
        ready, _, _ = select.select([echo.stdout], [], [], 10.0)
        if not ready or echo.stdout.readline().strip() != "ready":
            said = echo.stderr.read().strip() if echo.stderr else ""
            raise VerifyError(
                f"the UDP echo responder in {dst_ns} on {addr}:{port} did not start: "
                f"{said or 'no output'}",
                f"is port {port} taken in {dst_ns}? polynimbus exec can look",
            )
        res = run_in_ns(
            src_ns,
            [sys.executable, "-c", UDP_SEND, addr, str(port), str(UDP_COUNT)],
            30.0,
            f"UDP probe from {src_ns}",
        )
        if res.returncode != 0:
            raise VerifyError(f"UDP probe from {src_ns} failed: {res.stderr.strip()}", STUCK_HINT)
        return int(res.stdout.strip() or 0)
    finally:
        echo.kill()
        echo.wait()


def isolation(plan: Plan, progress: Callable[[str], None] | None = None) -> IsolationResult:
    """Ping every host pair (both families) whose ICMP no chain steers in either direction
    (the echo reply of a one-way chain's destination is steered), and count what entered
    each function meanwhile: it must be nothing."""
    sr = plan.srv6
    assert sr is not None
    hosts = [(s, h) for s in plan.sites for h in s.hosts]
    pairs: list[tuple[Any, Any, str]] = []
    for fam in ("ipv4", "ipv6") if plan.ipv6 else ("ipv4",):
        for s1, h1 in hosts:
            for s2, h2 in hosts:
                if s1.name == s2.name:
                    continue
                a = h1.address if fam == "ipv4" else h1.address6
                b = h2.address if fam == "ipv4" else h2.address6
                if a is None or b is None:
                    continue
                # neither the echo request nor its reply may be steered
                if not any(
                    _steers_icmp(c, a, b, fam) or _steers_icmp(c, b, a, fam) for c in sr.chains
                ):
                    pairs.append(((s1, h1), (s2, h2), fam))
    result = IsolationResult()
    if not pairs:
        return result
    by_source: dict[tuple[str, str, str], list[str]] = {}
    for (s1, h1), (s2, h2), fam in pairs:
        addr = h2.address if fam == "ipv4" else h2.address6
        by_source.setdefault((s1.name, h1.name, fam), []).append(addr)
        result.pairs.append((f"{s1.name}/{h1.name}", f"{s2.name}/{h2.name}", fam))
    if progress:
        progress(f"isolation: pinging {len(pairs)} host pairs outside every chain")
    before = snapshot(plan)

    def fping(key: tuple[str, str, str]) -> None:
        site, host, _ = key
        ns = names.host_ns(plan.name, site, host)
        argv = ["fping", "-q", "-C", "2", "-p", "20", "-t", "500", "-r", "0", *by_source[key]]
        run_in_ns(ns, argv, 20.0, f"fping from {site}/{host}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fping, by_source))
    after = snapshot(plan)
    for v in sr.services:
        ns = names.service_ns(plan.name, v.site, v.name)
        result.entered[v.name] = _delta(before, after, ns, f"pn entered {v.name}")
    return result


def _steers_icmp(c: ChainDirection, a: str, b: str, family: str) -> bool:
    """Whether chain direction ``c`` steers an ICMP packet from ``a`` to ``b``."""
    from ipaddress import ip_address, ip_network

    if c.family != family or c.protocol not in (None, "icmp"):
        return False
    return any(ip_address(a) in ip_network(s) for s in c.src) and any(
        ip_address(b) in ip_network(d) for d in c.dst
    )


def verify_chains(
    plan: Plan, progress: Callable[[str], None] | None = None
) -> tuple[list[ChainResult], IsolationResult]:
    """Probe every chain (:func:`probe_chain`) and check isolation (:func:`isolation`).

    Raises:
        VerifyError: a probe or counter read could not run.
    """
    if plan.srv6 is None or not plan.srv6.chains:
        return [], IsolationResult()
    iso = isolation(plan, progress)
    results: list[ChainResult] = []
    before = snapshot(plan)
    for name in plan.srv6.chain_names():
        results += probe_chain(plan, name, progress)
    after = snapshot(plan)
    used = {h.node for c in plan.srv6.chains for h in c.hops if h.kind == "function"}
    for v in plan.srv6.services:
        if v.name in used:
            ns = names.service_ns(plan.name, v.site, v.name)
            iso.control[v.name] = _delta(before, after, ns, f"pn entered {v.name}")
    return results, iso
