"""Tenants under load in a real lab (issue 7, "Done means" 3 and 4).

- Isolation: two tenants with the same address ranges on the same sites; while tenant
  ``ta`` floods (ping flood, broadcast pings, ARP for absent addresses, UDP at line rate)
  addresses that tenant ``tb`` also uses, a capture in every ``tb`` namespace (hosts and
  routers) and on the provider hosts sees none of it. Positive controls in the same run:
  each part of the capture filter matches ``ta``'s own captures, every victim capture sees
  ``tb``'s (or the provider's) own traffic sent during the flood, and the internet sees
  tunnel packets but nothing in clear.
- Bandwidth: while ``ta`` sends UDP well above the tunnel's capacity, ``tb``'s single TCP
  flow gets at least 90% of its guaranteed rate; the same measurement with the gateway's
  htb removed shows ``tb`` collapsing (the test can fail).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from polynimbus import names
from polynimbus.orchestrate import lab_up
from polynimbus.plan import build_plan
from polynimbus.plan.model import Plan
from polynimbus.plan.tenants import TENANT_VXLAN_PORT, TenantPlan

# --------------------------------------------------------------------------- helpers


def netns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def sh(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(netns(ns, *argv), capture_output=True, text=True, check=check)


class Background:
    """Processes started by a test, each in its own session: all of them are killed (by
    their own process group id) when the block ends, whatever happened."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, text=True, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    # the group of our own child only (it leads its own session)
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@contextlib.contextmanager
def background() -> Iterator[Background]:
    bg = Background()
    try:
        yield bg
    finally:
        bg.close()


class Lines:
    """The lines of a process's output stream, read by a thread as they come."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float) -> str:
        """The first line from now on containing ``needle``.

        Raises:
            AssertionError: the stream ended or ``timeout`` seconds passed first.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {needle!r} within {timeout} s: {self.lines}") from None
            if line is None:
                raise AssertionError(f"output ended before {needle!r}: {self.lines}")
            self.lines.append(line)
            if needle in line:
                return line

    def rest(self, timeout: float) -> list[str]:
        """Every line, once the stream has ended (within ``timeout`` seconds)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"output still open after {timeout} s"
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        return self.lines


class Capture:
    """tcpdump on every interface of a namespace into a pcap file, with a capture filter;
    started only once tcpdump says it is listening."""

    def __init__(
        self, bg: Background, ns: str, pcap: Path, expr: str, count: int | None = None
    ) -> None:
        self.ns, self.pcap = ns, pcap
        argv = ["tcpdump", "-i", "any", "-n", "-U", "--immediate-mode", "-s", "96"]
        argv += ["-B", "8192", "-w", str(pcap)]
        if count:
            argv += ["-c", str(count)]
        self.proc = bg.start(netns(ns, *argv, expr), stderr=subprocess.PIPE)
        self.err = Lines(self.proc.stderr)
        self.err.wait_for("listening on", 10)
        self.summary = ""

    def stop(self) -> None:
        """Stop the capture; ``summary`` holds tcpdump's counters."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=20)
        self.summary = "\n".join(self.err.rest(10))

    @property
    def kernel_drops(self) -> int:
        m = re.search(r"(\d+) packets? dropped by kernel", self.summary)
        assert m, f"no tcpdump summary for {self.ns}: {self.summary!r}"
        return int(m.group(1))

    def count(self, expr: str) -> int:
        res = subprocess.run(
            ["tcpdump", "-r", str(self.pcap), "-n", expr],
            capture_output=True,
            text=True,
            check=True,
        )
        return sum(1 for line in res.stdout.splitlines() if line.strip())


def tenant_namespaces(plan: Plan, t: TenantPlan) -> list[str]:
    """Every namespace of tenant ``t``: its routers and its hosts."""
    out = [names.tenant_router_ns(plan.name, s, t.name) for s in t.sites]
    out += [names.tenant_host_ns(plan.name, h.site, t.name, h.name) for _, h in t.hosts()]
    return out


def arp_from(macs: list[str]) -> str:
    """A filter for ARP packets whose sender hardware address is one of ``macs`` (on
    ``-i any`` there is no Ethernet header to match: the ARP body carries the MAC)."""
    parts = []
    for mac in sorted(set(macs)):
        hexs = mac.replace(":", "")
        parts.append(f"(arp[8:4] = 0x{hexs[:8]} and arp[12:2] = 0x{hexs[8:]})")
    return "(arp and (" + " or ".join(parts) + "))"


def tenant_macs(t: TenantPlan) -> list[str]:
    return [h.mac for _, h in t.hosts()] + [n.router_mac for n in t.networks]


# --------------------------------------------------------------------------- isolation

ISO_LAB = "tiso-flood"
ISO_INTENT = f"""name: {ISO_LAB}
overlay:
  topology: full-mesh
  transport: wireguard
sites:
  - name: x
    provider: openstack
    location: {{lat: 43.6, lon: 7.0}}
    hosts: [p1]
  - name: y
    provider: aws
    location: {{lat: 50.1, lon: 8.7}}
    hosts: [p2]
tenants:
  - name: ta
    networks:
      - {{name: front, subnet: 192.168.1.0/24, sites: [x], hosts: [x/h1, x/h2]}}
      - {{name: shared, subnet: 172.16.0.0/24, sites: [x, y], hosts: [x/c1, y/c2]}}
  - name: tb
    networks:
      - {{name: front, subnet: 192.168.1.0/24, sites: [x], hosts: [x/h1, x/h2]}}
      - {{name: shared, subnet: 172.16.0.0/24, sites: [x, y], hosts: [x/c1, y/c2]}}
"""
FLOOD_SECONDS = 6
A_PING_SIZE = 1111  # ICMP payload of every ping of ta's: IPv4 total length 1139
B_PING_SIZE = 222  # of the victims' own control pings: IPv4 total length 250
A_UDP_PORT = 5301
A_ICMP = f"(icmp and ip[2:2] = {A_PING_SIZE + 28})"
A_UDP = (
    f"(udp port {A_UDP_PORT} or tcp port {A_UDP_PORT} or (udp and ip[2:2] = {A_PING_SIZE + 28}))"
)
OWN = f"(icmp and ip[2:2] = {B_PING_SIZE + 28})"
TENANT_NETS = "net 192.168.0.0/16 or net 172.16.0.0/12 or net 169.254.0.0/16"


def test_a_flooding_tenant_is_invisible_to_the_other_tenant(lab, tmp_path: Path) -> None:
    intent = lab.intent(ISO_INTENT)
    plan = build_plan(intent)
    lab_up(intent, lab.state(ISO_LAB))
    ta, tb = plan.tenant("ta"), plan.tenant("tb")
    a_ns = {
        (h.site, h.name): names.tenant_host_ns(ISO_LAB, h.site, "ta", h.name) for _, h in ta.hosts()
    }
    b_ns = {
        (h.site, h.name): names.tenant_host_ns(ISO_LAB, h.site, "tb", h.name) for _, h in tb.hosts()
    }
    providers = {
        h.name: names.host_ns(ISO_LAB, s.name, h.name) for s in plan.sites for h in s.hosts
    }
    p2_addr = plan.site("y").hosts[0].address
    a_arp = arp_from(tenant_macs(ta))
    a_sig = f"({A_ICMP} or {A_UDP} or {a_arp})"
    victims = tenant_namespaces(plan, tb) + sorted(providers.values())
    assert len(victims) == 8

    with background() as bg:
        # every capture is listening before anything is sent
        caps = {ns: Capture(bg, ns, tmp_path / f"{ns}.pcap", f"{a_sig} or {OWN}") for ns in victims}
        a_caps = {
            ns: Capture(bg, ns, tmp_path / f"{ns}.pcap", a_sig, count=200_000)
            for ns in tenant_namespaces(plan, ta)
        }
        inet = names.internet_ns(ISO_LAB)
        clear = Capture(bg, inet, tmp_path / "inet-clear.pcap", f"not udp port {plan.port}")
        tunnel = Capture(bg, inet, tmp_path / "inet-wg.pcap", f"udp port {plan.port}", count=2000)

        srv = bg.start(
            netns(a_ns["y", "c2"], "iperf3", "-s", "-1", "-p", str(A_UDP_PORT), "--forceflush"),
            stdout=subprocess.PIPE,
        )
        Lines(srv.stdout).wait_for("Server listening", 10)
        w = str(FLOOD_SECONDS)
        s = str(A_PING_SIZE)
        floods = {
            # ping flood on a routed network, and across sites through the transit network
            "flood h1->h2": bg.start(
                netns(a_ns["x", "h1"], "ping", "-q", "-f", "-s", s, "-w", w, "192.168.1.2"),
                stdout=subprocess.PIPE,
            ),
            "flood c2->h1": bg.start(
                netns(a_ns["y", "c2"], "ping", "-q", "-f", "-s", s, "-w", w, "192.168.1.1"),
                stdout=subprocess.PIPE,
            ),
            # broadcasts on the routed network and on the stretched one (crosses sites)
            "bcast front": bg.start(
                netns(
                    a_ns["x", "h2"],
                    "ping",
                    "-q",
                    "-b",
                    "-i",
                    "0.002",
                    "-s",
                    s,
                    "-w",
                    w,
                    "192.168.1.255",
                ),
                stdout=subprocess.PIPE,
            ),
            "bcast shared": bg.start(
                netns(
                    a_ns["x", "c1"],
                    "ping",
                    "-q",
                    "-b",
                    "-i",
                    "0.002",
                    "-s",
                    s,
                    "-w",
                    w,
                    "172.16.0.255",
                ),
                stdout=subprocess.PIPE,
            ),
            # broadcast ARP for addresses nobody has (ARP retried for the whole flood)
            "arp front": bg.start(
                netns(a_ns["x", "h1"], "ping", "-q", "-i", "0.2", "-w", w, "192.168.1.77"),
                stdout=subprocess.PIPE,
            ),
            "arp shared": bg.start(
                netns(a_ns["x", "c1"], "ping", "-q", "-i", "0.2", "-w", w, "172.16.0.77"),
                stdout=subprocess.PIPE,
            ),
        }
        # UDP at line rate to 172.16.0.2, which tb's c2 also has, across the tunnel
        udp = bg.start(
            netns(
                a_ns["x", "c1"],
                *("iperf3", "-c", "172.16.0.2", "-p", str(A_UDP_PORT), "-u", "-b", "0"),
                *("-l", str(A_PING_SIZE), "-t", str(FLOOD_SECONDS - 1), "-J"),
            ),
            stdout=subprocess.PIPE,
        )
        time.sleep(0.5)
        # the victims' own traffic, sent while ta floods: each victim capture must see it
        own = [
            bg.start(
                netns(
                    b_ns["x", "h1"],
                    "ping",
                    "-q",
                    "-b",
                    "-i",
                    "0.1",
                    "-s",
                    str(B_PING_SIZE),
                    "-w",
                    "4",
                    "192.168.1.255",
                )
            ),
            bg.start(
                netns(
                    b_ns["y", "c2"],
                    "ping",
                    "-q",
                    "-b",
                    "-i",
                    "0.1",
                    "-s",
                    str(B_PING_SIZE),
                    "-w",
                    "4",
                    "172.16.0.255",
                )
            ),
            bg.start(
                netns(
                    providers["p1"],
                    "ping",
                    "-q",
                    "-i",
                    "0.1",
                    "-s",
                    str(B_PING_SIZE),
                    "-w",
                    "4",
                    p2_addr,
                )
            ),
        ]
        results = {k: p.communicate(timeout=FLOOD_SECONDS + 20)[0] for k, p in floods.items()}
        udp_out, _ = udp.communicate(timeout=FLOOD_SECONDS + 20)
        for p in own:
            p.wait(timeout=10)
        time.sleep(0.5)
        for c in [*caps.values(), *a_caps.values(), clear, tunnel]:
            c.stop()

    # the floods really ran
    sent = {
        k: re.search(r"(\d+) packets transmitted, (\d+) received", v) for k, v in results.items()
    }
    figures = {k: (int(m.group(1)), int(m.group(2))) for k, m in sent.items() if m}
    report = json.loads(udp_out)
    udp_mbps = report["end"]["sum"]["bits_per_second"] / 1e6
    print(
        f"\nta's floods (sent, received) in {FLOOD_SECONDS} s: {figures}; UDP {udp_mbps:.0f} Mbit/s"
    )
    assert figures["flood h1->h2"][1] > 1000 and figures["flood c2->h1"][1] > 100, figures
    assert figures["bcast shared"][0] > 500, figures
    assert udp_mbps > 20, report["end"]["sum"]

    # positive controls: every part of the signature matches ta's traffic where it goes
    a_seen = {
        ns: {
            part: c.count(expr) for part, expr in (("icmp", A_ICMP), ("udp", A_UDP), ("arp", a_arp))
        }
        for ns, c in a_caps.items()
    }
    print(f"ta's own captures: {a_seen}")
    c2, h2 = a_ns["y", "c2"], a_ns["x", "h2"]
    assert a_seen[c2]["icmp"] > 0 and a_seen[c2]["udp"] > 0 and a_seen[c2]["arp"] > 0, a_seen
    assert a_seen[h2]["icmp"] > 0 and a_seen[h2]["arp"] > 0, a_seen
    assert all(sum(v.values()) > 0 for v in a_seen.values()), a_seen

    # the victims: their own traffic seen during the flood, nothing of ta's, no loss
    b_seen = {ns: (c.count(OWN), c.count(a_sig), c.kernel_drops) for ns, c in caps.items()}
    print(f"victims (own packets, ta's packets, kernel drops): {b_seen}")
    assert all(own >= 10 for own, _, _ in b_seen.values()), b_seen
    assert {ns: n for ns, (_, n, _) in b_seen.items() if n} == {}, b_seen
    assert all(d == 0 for _, _, d in b_seen.values()), b_seen

    # the internet: tunnel packets, and nothing of a tenant in clear
    in_clear = {
        "tenant addresses": clear.count(TENANT_NETS),
        "tenant VXLAN": clear.count(f"udp port {TENANT_VXLAN_PORT}"),
        "ta's pings": clear.count(A_ICMP),
    }
    print(f"internet: {tunnel.count('')} tunnel packets captured, in clear: {in_clear}")
    assert tunnel.count("") >= 2000
    assert in_clear == dict.fromkeys(in_clear, 0), in_clear


# --------------------------------------------------------------------------- bandwidth

BW_LAB = "tbw-share"
UNDERLAY_MBIT = 100
A_RATE_MBIT = 50
B_RATE_MBIT = 30
A_OFFERED = "200M"  # 2x the underlay, 2.1x the tunnel's capacity (93 Mbit/s)
B_SECONDS = 10
B_OMIT = 3  # TCP warm-up under the flood, left out of the figure
BW_INTENT = f"""name: {BW_LAB}
overlay:
  topology: full-mesh
  transport: wireguard
sites:
  - name: s1
    provider: openstack
    location: {{lat: 43.6, lon: 7.0}}
    underlay: {{rate: {UNDERLAY_MBIT}mbit}}
  - name: s2
    provider: aws
    location: {{lat: 50.1, lon: 8.7}}
    underlay: {{rate: {UNDERLAY_MBIT}mbit}}
tenants:
  - name: ta
    rate: {A_RATE_MBIT}mbit
    networks:
      - {{name: net, subnet: 192.168.1.0/24, sites: [s1, s2], hosts: [s1/h1, s2/h2]}}
  - name: tb
    rate: {B_RATE_MBIT}mbit
    networks:
      - {{name: net, subnet: 192.168.1.0/24, sites: [s1, s2], hosts: [s1/h1, s2/h2]}}
"""


def class_bytes(gw: str, dev: str) -> dict[str, tuple[int, int]]:
    """``{classid: (bytes sent, packets dropped)}`` of the htb classes on ``dev``."""
    out = sh(gw, "tc", "-s", "class", "show", "dev", dev).stdout
    found = re.findall(r"class htb (\S+) .*?\n\s*Sent (\d+) bytes \d+ pkt \(dropped (\d+)", out)
    return {cid: (int(b), int(d)) for cid, b, d in found}


def tenant_blind_drops(plan: Plan) -> dict[str, int]:
    """Losses no shaping can prevent, counted on the path: packets the sending gateway's
    tunnel device dropped (wireguard-go not reading in time) and datagrams the receiving
    gateway's socket dropped (wireguard-go not receiving in time): both mean the machine's
    CPU, not the tenants' shares, was short."""
    s1, s2 = names.gateway_ns(plan.name, "s1"), names.gateway_ns(plan.name, "s2")
    link = json.loads(
        sh(s1, "ip", "-s", "-j", "link", "show", "dev", plan.site("s1").tunnel_if).stdout
    )
    snmp = sh(s2, "cat", "/proc/net/snmp").stdout.splitlines()
    udp = [line.split()[1:] for line in snmp if line.startswith("Udp:")]
    return {
        "s1_tunnel_tx_dropped": int(link[0]["stats64"]["tx"]["dropped"]),
        "s2_udp_rcvbuf_errors": int(dict(zip(udp[0], udp[1], strict=True))["RcvbufErrors"]),
    }


def measure(plan: Plan, label: str) -> dict[str, Any]:
    """tb's single TCP flow s1 -> s2 while ta sends UDP s1 -> s2 above the tunnel's
    capacity, the whole measured window inside ta's flood.

    tb connects first (during ta's flood its SYN could be lost, and the flow would only
    start once the flood is over); ta starts at once, runs past tb's end; tb's first
    ``B_OMIT`` seconds are left out.
    """
    lab_name = plan.name
    a1, a2 = (names.tenant_host_ns(lab_name, s, "ta", h) for s, h in (("s1", "h1"), ("s2", "h2")))
    b1, b2 = (names.tenant_host_ns(lab_name, s, "tb", h) for s, h in (("s1", "h1"), ("s2", "h2")))
    gw, dev = names.gateway_ns(lab_name, "s1"), plan.site("s1").tunnel_if
    ta, tb = plan.tenant("ta"), plan.tenant("tb")
    a_cls, b_cls = f"1:{ta.tenant_id:x}", f"1:{tb.tenant_id:x}"
    with background() as bg:
        for ns, port in ((a2, 5401), (b2, 5402)):
            srv = bg.start(
                netns(ns, "iperf3", "-s", "-1", "-p", str(port), "--forceflush"),
                stdout=subprocess.PIPE,
            )
            Lines(srv.stdout).wait_for("Server listening", 10)
        b_argv = ["iperf3", "-c", "192.168.1.2", "-p", "5402", "-f", "m", "--forceflush"]
        b_argv += ["-t", str(B_SECONDS), "-O", str(B_OMIT)]
        b = bg.start(netns(b1, *b_argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        b_out = Lines(b.stdout)
        b_out.wait_for("connected to", 10)
        a_argv = ["iperf3", "-c", "192.168.1.2", "-p", "5401", "-u", "-b", A_OFFERED]
        a_argv += ["-l", "1300", "-t", str(B_OMIT + B_SECONDS + 3), "-J"]
        a = bg.start(netns(a1, *a_argv), stdout=subprocess.PIPE)
        b_out.wait_for("(omitted)", 10)  # first omitted second
        time.sleep(B_OMIT - 1)
        before, t0, blind0 = class_bytes(gw, dev), time.monotonic(), tenant_blind_drops(plan)
        b_out.wait_for("receiver", B_OMIT + B_SECONDS + 30)
        after, t1, blind1 = class_bytes(gw, dev), time.monotonic(), tenant_blind_drops(plan)
        b.wait(timeout=30)
        a_report = json.loads(a.communicate(timeout=60)[0])
    receiver = next(line for line in b_out.lines if line.rstrip().endswith("receiver"))
    m = re.search(r"([\d.]+) Mbits/sec", receiver)
    assert m, b_out.lines
    seconds = [
        float(x.group(1))
        for line in b_out.lines
        if "sec" in line and "omitted" not in line and "sender" not in line
        if (x := re.search(r"([\d.]+) Mbits/sec", line))
    ]
    figures: dict[str, Any] = {
        "label": label,
        "tb_tcp_mbps": float(m.group(1)),
        "tb_each_second": seconds[:-1],
        "ta_offered_mbps": round(a_report["end"]["sum"]["bits_per_second"] / 1e6, 1),
        "ta_lost_percent": round(a_report["end"]["sum"]["lost_percent"], 1),
        **{k: blind1[k] - blind0[k] for k in blind0},
    }
    if before:  # the htb is there: what each class carried during tb's window
        span = t1 - t0
        for who, cls in (("ta", a_cls), ("tb", b_cls)):
            sent = after[cls][0] - before[cls][0]
            figures[f"{who}_class_mbps"] = round(sent * 8 / span / 1e6, 1)
            figures[f"{who}_class_drops"] = after[cls][1] - before[cls][1]
    print(f"\n{label}: {figures}")
    figures["tb_output"] = "\n".join(b_out.lines)  # for assertion messages
    return figures


def test_a_tenant_keeps_its_rate_while_another_floods_the_tunnel(lab) -> None:
    intent = lab.intent(BW_INTENT)
    plan = build_plan(intent)
    lab_up(intent, lab.state(BW_LAB))
    gw, dev = names.gateway_ns(BW_LAB, "s1"), plan.site("s1").tunnel_if
    tb = plan.tenant("tb")
    guaranteed = B_RATE_MBIT * 0.9
    # the tenant's VXLAN packets land in its class: check the shaping is what we measure
    classes = class_bytes(gw, dev)
    assert f"1:{tb.tenant_id:x}" in classes and f"1:{plan.tenant('ta').tenant_id:x}" in classes
    assert f"1:{tb.tenant_id:x}" in sh(gw, "nft", "list", "table", "inet", "pn-tenants").stdout

    # A 2-core machine shared with other work can stall wireguard-go long enough for its
    # socket to drop packets of every tenant alike (see tenant_blind_drops), and one TCP
    # flow can take seconds to recover: one more attempt is allowed, and every attempt is
    # reported.
    attempts = []
    for attempt in range(2):
        shaped = measure(plan, f"shaped (htb on the tunnel), attempt {attempt + 1}")
        attempts.append({k: v for k, v in shaped.items() if k != "tb_output"})
        assert shaped["ta_lost_percent"] > 50, f"ta did not flood the tunnel: {shaped}"
        assert shaped["ta_class_drops"] > 0, f"ta's class never overflowed: {shaped}"
        if shaped["tb_tcp_mbps"] >= guaranteed:
            break
    assert shaped["tb_tcp_mbps"] >= guaranteed, (
        f"tb's TCP got {shaped['tb_tcp_mbps']} Mbit/s < 90% of {B_RATE_MBIT} "
        f"while ta flooded: {attempts}\n{shaped['tb_output']}"
    )
    # tb's packets went through tb's class (the TCP figure is goodput: less headers), and
    # ta, flooding, still had its own guarantee
    assert shaped["tb_class_mbps"] >= shaped["tb_tcp_mbps"], attempts
    assert shaped["ta_class_mbps"] >= A_RATE_MBIT * 0.9, attempts

    # control: the same measurement without the tenants' htb; tb must collapse
    sh(gw, "tc", "qdisc", "del", "dev", dev, "root")
    unshaped = measure(plan, "control (htb removed)")
    assert unshaped["ta_lost_percent"] > 50, f"ta did not flood the tunnel: {unshaped}"
    assert unshaped["tb_tcp_mbps"] < B_RATE_MBIT * 0.5, (
        f"without the htb tb still got {unshaped['tb_tcp_mbps']} Mbit/s: the test cannot "
        f"tell shaping from no shaping: {unshaped}; shaped: {attempts}"
    )
