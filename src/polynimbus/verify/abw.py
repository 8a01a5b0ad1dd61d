"""Available bandwidth between two sites' gateways with SLoPS (seed 003 §4.3.3, Pathload).

The controller (this module) starts a receiver in the destination gateway's namespace and
a sender in the source's (:mod:`polynimbus.verify.abw_agent`, one process each, driven
over their stdin and stdout: the control channel never crosses the measured path). Then:

1. Three trains of back-to-back packets give the asymptotic dispersion rate (ADR), which
   lies between the available bandwidth and the capacity: the search runs in
   [0, :data:`ADR_MARGIN` × ADR] and the streams are sized from it.
2. Fleets of up to :data:`STREAMS` periodic streams probe one rate each; every stream's
   one-way delays are judged increasing or not (PCT and PDT), the fleet above, below or
   grey (:mod:`polynimbus.verify.slops`; a fleet stops as soon as the streams still to
   come could not change its verdict), and a binary search narrows [Rmin, Rmax] until it is
   within :data:`RELATIVE` of its middle, or the time (:data:`DEADLINE_S`) or byte budget
   runs out (then ``converged`` is false).

``underlay``: from the source gateway's public address to the destination's, over the
emulated internet (the destination's firewall admits the receiver's UDP port from the
source only, through the timed ``underlay_probe`` set, for the measurement).
``overlay``: between the gateways' overlay addresses, through the tunnel.

Rates are IP-layer bit/s (the probes' IPv4 and UDP headers included); ``bytes_sent`` is
every probe packet's IP bytes, trains included; the control channel (pipes) sends none.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Literal

from polynimbus import names
from polynimbus.errors import LabNotFoundError, VerifyError
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.render.nftables import FAMILY, PROBE_SET, TABLE
from polynimbus.verify import slops
from polynimbus.verify.proc import STUCK_HINT, ns_argv, run_in_ns

Channel = Literal["overlay", "underlay"]
CHANNELS: tuple[Channel, ...] = ("overlay", "underlay")

AGENT = Path(__file__).with_name("abw_agent.py")
TRAINS = 2
"""Back-to-back trains sent for the ADR."""
TRAIN_PACKETS = 24
"""Packets in a train (more than the tight link's bucket holds: see render.gateway)."""
ADR_MARGIN = 1.2
"""The search's upper end: this times the highest train dispersion rate."""
LEADS = 2
"""Full-size packets sent back to back at the start of each stream: they empty a token
bucket of up to two frames on the tight link (the lab's tbf, render.gateway), which would
otherwise let the stream's start through above the link's rate and hide a small excess."""
STREAMS = 4
"""Streams per fleet (Pathload: 12; fewer, for the byte budget: 3 of 4 decide)."""
RELATIVE = 0.08
"""The search stops when [Rmin, Rmax] is this narrow relative to its middle."""
MIN_RESOLUTION_BPS = 100_000.0
"""... or this narrow in bit/s."""
DEADLINE_S = 9.0
"""The estimate gives up (not converged) after this long, s."""
MAX_FLEETS = 14
"""... or after this many fleets (those whose every stream was disturbed included)."""
DRAIN_S = 0.06
"""After a stream, the receiver waits at most this long for its last packets (the tight
link's queue holds at most 50 ms: render.gateway.TBF_LATENCY_MS), s."""
GAP_NS = 2_000_000
"""Idle time between two streams, ns, after the receiver had the first one's last packet
(the queue it built is gone by then: Pathload waits so that streams do not overlap)."""
AGENT_TIMEOUT_S = 10.0
"""Longest wait for one answer of an agent, s."""
PROBE_TIMEOUT_S = 60
"""Lifetime of the firewall element admitting the probes (underlay), s."""
NFT_TIMEOUT_S = 5.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AbwResult:
    """One estimate: the range holding the available bandwidth from ``src`` to ``dst``.

    Attributes:
        low_bps, high_bps: the range, IP-layer bit/s (``high_bps`` is the search's upper
            end, :data:`ADR_MARGIN` × ADR, when no fleet was above).
        seconds: how long the estimate took, agents' start and stop included, s.
        bytes_sent: every probe packet's IP bytes (trains and fleets; none for control).
        converged: the range narrowed to :data:`RELATIVE` before the deadline.
        adr_bps: the trains' dispersion rate, bit/s; fleets: fleets sent; streams_discarded:
            streams the sender's scheduling disturbed; packet_bytes: IP size of the periodic
            probes, bytes (a link's rate counts its own headers too: an Ethernet link of
            capacity C carries C · packet_bytes / (packet_bytes + 14) of them).
    """

    src: str
    dst: str
    channel: Channel
    low_bps: float
    high_bps: float
    seconds: float
    bytes_sent: int
    converged: bool
    adr_bps: float | None
    fleets: int
    streams_discarded: int
    packet_bytes: int

    @property
    def estimate_bps(self) -> float:
        """The middle of the range, bit/s."""
        return (self.low_bps + self.high_bps) / 2

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``abw --json``."""
        return asdict(self)


class _Agent:
    """One agent process in a namespace, spoken to in JSON lines."""

    def __init__(self, ns: str, what: str, *args: str) -> None:
        self.what = what
        self.ns = ns
        self.stopped = False
        try:
            self.proc = subprocess.Popen(
                ns_argv(ns, sys.executable, "-I", "-S", str(AGENT), *args),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            raise VerifyError(f"the abw {what} could not be started: {exc}") from None

    def read(self) -> dict[str, Any]:
        """The agent's next answer.

        Raises:
            VerifyError: it exited, said something that is not JSON, or took longer than
                :data:`AGENT_TIMEOUT_S`.
        """
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, AGENT_TIMEOUT_S)
        if line is None:
            self.stop()
            raise VerifyError(
                f"the abw {self.what} in {self.ns} did not answer within {AGENT_TIMEOUT_S:g} s",
                STUCK_HINT,
            )
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict) or "error" in obj:
            said = self.stop()
            raise VerifyError(
                f"the abw {self.what} in {self.ns} failed: "
                f"{(obj or {}).get('error') if isinstance(obj, dict) else said or 'no output'}"
            )
        return obj

    def ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Send one command and read its answer (see :meth:`read`)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except OSError:
            said = self.stop()
            raise VerifyError(
                f"the abw {self.what} in {self.ns} exited: {said or 'no output'}"
            ) from None
        return self.read()

    def stop(self) -> str:
        """End the agent (end of its stdin, then kill) and wait for it; what it said on
        stderr (``""`` when it was stopped already)."""
        if self.stopped:
            return ""
        self.stopped = True
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        said = self.proc.stderr.read().strip() if self.proc.stderr else ""
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        return said


def _readline(f: IO[str], timeout: float) -> str | None:
    """One line of ``f`` within ``timeout`` s, or ``None`` (end of file: ``""``)."""
    import select

    ready, _, _ = select.select([f], [], [], timeout)
    return f.readline() if ready else None


def endpoints(plan: Plan, src: SitePlan, dst: SitePlan, channel: Channel) -> tuple[str, str, int]:
    """The probe's source and destination addresses and largest UDP payload (bytes) on
    ``channel``: the gateways' public addresses and the underlay MTU, or their overlay
    addresses and the tunnel MTU."""
    if channel == "underlay":
        return src.public_address, dst.public_address, plan.underlay_mtu - slops.IP_UDP_HEADERS
    return src.gateway_address, dst.gateway_address, plan.tunnel_mtu - slops.IP_UDP_HEADERS


def _nft_probe(ns: str, verb: str, src_addr: str, port: int) -> subprocess.CompletedProcess[str]:
    life = f" timeout {PROBE_TIMEOUT_S}s" if verb == "add" else ""
    element = f"{{ {src_addr} . {port}{life} }}"
    return run_in_ns(
        ns,
        ["nft", verb, "element", FAMILY, TABLE, PROBE_SET, element],
        NFT_TIMEOUT_S,
        f"nft in {ns}",
    )


def resolve_sites(plan: Plan, src: str, dst: str) -> tuple[SitePlan, SitePlan]:
    """The two sites of an estimate.

    Raises:
        VerifyError: an unknown site (the known ones in the hint), or the same site twice.
    """
    known = [s.name for s in plan.sites]
    for name in (src, dst):
        if name not in known:
            raise VerifyError(
                f"no site named {name!r} in the lab {plan.name!r}", "sites: " + ", ".join(known)
            )
    if src == dst:
        raise VerifyError(
            f"SITE1 and SITE2 are both {src!r}: abw measures the path between two sites",
            "sites: " + ", ".join(known),
        )
    return plan.site(src), plan.site(dst)


def estimate(
    plan: Plan,
    src: str,
    dst: str,
    channel: Channel = "underlay",
    progress: Progress | None = None,
    deadline_s: float = DEADLINE_S,
) -> AbwResult:
    """Estimate the available bandwidth from ``src``'s gateway to ``dst``'s (site names)
    with SLoPS (seed 003 §4.3.3; Jain and Dovrolis, PAM 2002).

    Args:
        channel: ``underlay`` (public addresses, no tunnel) or ``overlay`` (through it).
        progress: called with a line of text before each step.
        deadline_s: give up after this long (the result is then not converged), s.

    Raises:
        VerifyError: an unknown site or the same one twice, a bad channel, an agent that
            failed or hung, the probe port that could not be opened.
        LabNotFoundError: a gateway's namespace is missing (the lab is not up).
    """
    if channel not in CHANNELS:
        raise VerifyError(f"unknown channel {channel!r}", "use --channel overlay or underlay")
    a, b = resolve_sites(plan, src, dst)
    from polynimbus.targets.lab import list_lab_namespaces

    gw_a, gw_b = names.gateway_ns(plan.name, a.name), names.gateway_ns(plan.name, b.name)
    live = set(list_lab_namespaces(plan.name))
    if gw_a not in live or gw_b not in live:
        raise LabNotFoundError(f"the lab {plan.name!r} is not up", "run: polynimbus up FILE")
    say = progress or (lambda _t: None)
    start = time.monotonic()
    src_addr, dst_addr, max_payload = endpoints(plan, a, b, channel)
    agents: list[_Agent] = []
    opened: int | None = None
    try:
        say("starting the receiver and the sender")
        recv = _Agent(gw_b, "receiver", "recv", dst_addr)
        agents.append(recv)
        port = int(recv.read()["port"])
        if channel == "underlay":
            res = _nft_probe(gw_b, "add", src_addr, port)
            if res.returncode != 0:
                raise VerifyError(
                    f"could not open UDP port {port} for {src_addr} on the gateway of "
                    f"{b.name}: nft: {res.stderr.strip().splitlines()[0] if res.stderr else ''}",
                    "the gateway's ruleset is not the planned one; polynimbus up FILE repairs it",
                )
            opened = port
        send = _Agent(gw_a, "sender", "send", src_addr, dst_addr, str(port))
        agents.append(send)
        send.read()
        return _search(plan, a, b, channel, send, recv, max_payload, say, start, start + deadline_s)
    finally:
        for agent in reversed(agents):
            agent.stop()
        if opened is not None:
            # the element expires by itself after PROBE_TIMEOUT_S if this fails
            with contextlib.suppress(VerifyError):
                _nft_probe(gw_b, "delete", src_addr, opened)


def _search(
    plan: Plan,
    a: SitePlan,
    b: SitePlan,
    channel: Channel,
    send: _Agent,
    recv: _Agent,
    max_payload: int,
    say: Progress,
    start: float,
    deadline: float,
) -> AbwResult:
    sent_bytes = 0
    tag = 0
    packet = max_payload + slops.IP_UDP_HEADERS

    def fleet_bytes(reply: dict[str, Any]) -> int:
        n = sum(len(s) for s in reply["sent"])
        return int(reply["bytes"]) + n * slops.IP_UDP_HEADERS

    say(f"{TRAINS} packet trains for the dispersion rate")
    adrs = []
    for _ in range(TRAINS):
        tag += 1
        reply = send.ask({"op": "train", "tag": tag, "n": TRAIN_PACKETS, "size": max_payload})
        sent_bytes += fleet_bytes(reply)
        pkts = recv.ask({"op": "collect", "tag": tag, "wait_s": DRAIN_S})["pkts"]
        rate = slops.dispersion_rate([p[3] for p in pkts], packet)
        if rate is not None:
            adrs.append(rate)
    if not adrs:
        raise VerifyError(
            f"no probe packet from {a.name} reached {b.name} over the {channel}",
            "is the lab up and healthy? polynimbus verify FILE tells",
        )
    adr = max(adrs)
    search = slops.RateSearch(0.0, ADR_MARGIN * adr, MIN_RESOLUTION_BPS, RELATIVE)
    discarded = attempts = 0
    probe = packet
    while (rate := search.next_rate()) is not None:
        if time.monotonic() > deadline or attempts >= MAX_FLEETS:
            break
        attempts += 1
        duration = slops.stream_duration(rate, search.rmin, search.rmax)
        k, payload, period = slops.stream_shape(rate, adr, max_payload, duration_s=duration)
        probe = payload + slops.IP_UDP_HEADERS
        say(
            f"fleet {search.fleets + 1}: {rate / 1e6:.1f} Mbit/s "
            f"(range {search.rmin / 1e6:.1f}-{search.rmax / 1e6:.1f})"
        )
        trends: list[slops.Trend] = []
        verdict: slops.Verdict | None = None
        for s in range(STREAMS):
            tag += 1
            reply = send.ask(
                {
                    "op": "fleet",
                    "tag": tag,
                    "streams": 1,
                    "k": k,
                    "size": payload,
                    "period_ns": period,
                    "gap_ns": GAP_NS,
                    "idle_first": s > 0,
                    "leads": LEADS,
                    "lead_size": max_payload,
                }
            )
            sent_bytes += fleet_bytes(reply)
            collect = {"op": "collect", "tag": tag, "wait_s": DRAIN_S, "expect": LEADS + k}
            got = {seq: t_recv - t_sent for _, seq, t_sent, t_recv in recv.ask(collect)["pkts"]}
            trend = slops.judge_stream(reply["sent"][0], got, period, LEADS)
            if trend is None:
                discarded += 1
            else:
                trends.append(trend)
            verdict = slops.fleet_decided(trends, STREAMS - 1 - s)
            if verdict is not None:
                break
        if verdict is None:
            continue  # every stream disturbed: probe the same rate again
        search.record(rate, verdict)
    low, high = search.estimate()
    return AbwResult(
        src=a.name,
        dst=b.name,
        channel=channel,
        low_bps=low,
        high_bps=high,
        seconds=time.monotonic() - start,
        bytes_sent=sent_bytes,
        converged=search.converged,
        adr_bps=adr,
        fleets=search.fleets,
        streams_discarded=discarded,
        packet_bytes=probe,
    )
