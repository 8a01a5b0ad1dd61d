"""Measurement helpers for the SRv6 service-chain benchmarks (issue 6). Needs root.

Two benchmarks are built on this module:

* a campaign (seed 000): TCP and UDP throughput (``iperf3_tcp``, ``iperf3_udp``) and RTT
  (``ping_rtt``), with and without the chain, N runs each, mean with a 95 % confidence
  interval (``mean_ci``), drawn as grouped bars with CI error bars (``plot_bars``);
* seed 002's methodology: UDP with 1024-byte payloads at rising packet rates R [packet/s]
  (``run_udp_rate``), success ratio S(R) = delivered/sent at the sink and CPU load U(R)
  (``cpu_sampler``), U = m R + k fitted on the no-loss region (``linear_fit``), the partial
  drop rate at 0.5 % loss found SRPerf-style (``pdr_search``), and the S(R) / U(R) plots
  of several configurations on the same axes (``plot_rate_curves``).

Everything that runs in a namespace is started with ``ip netns exec NS ...``.

Traffic generator: why our own and not ``iperf3 -u``
----------------------------------------------------
``run_udp_rate`` starts a small Python sender and a Python sink (this file, run as
``chainlib.py _gen ...`` / ``chainlib.py _sink ...``). The sender paces against the
monotonic clock: at every turn it sends the packets that are due by now (at most 256
back to back) and sleeps until the next one is due when it is ahead, so it does not spin
at low rates. The sink counts datagrams and, on SIGTERM, reports JSON (its count plus
the namespace's UDP receive-buffer drops, so an overloaded sink can be told apart from
loss on the path). The sender's count is what was handed to the kernel (send errors are
not counted as sent).

Measured on this 2-core machine (1024-byte payload, 2 s runs, 2026-11):

* Maximum rate of this generator: about 250k packet/s on loopback (248.9k of 250k
  requested) and 205k-217k packet/s across one veth pair between two namespaces (IPv4
  and IPv6 alike); it holds the requested rate exactly up to 200k packet/s there. At
  the maximum the sender uses one whole core, because its ``send`` also runs the
  receive path of the other namespace (see below). Above that ``rate_pps`` (achieved)
  stays below the offered rate: always check it. The sink kept up in every veth run
  (``sink_drops`` 0); on loopback with an offered 400k packet/s it dropped 5 %.
* ``iperf3 -u -l 1024 -b ...`` (3.12) over the same veth topped out at 165k-184k
  packet/s and reported 14-20 % loss at offered 200k-250k packet/s where the Python
  sink saw none (seed 002 also found its receive counts inaccurate); its CPU use cannot
  be separated from its start-up (control connection, JSON) either. So the Python pair
  is used for S(R)/U(R): exact sent and received counts over exactly the sending window.
  ``iperf3_udp`` is kept for the seed-000 campaign.

CPU accounting on this machine
------------------------------
``cpu_sampler`` reads /proc/stat (machine-wide) and /proc/PID/stat of the generator and
sink. On this 2-core machine the generator, the sink, the forwarding path and anything
else running (other people's tests!) share the same two cores, so U(R) is the busy time
of the whole machine during the sending window, in % of one core (0-200 %). Compare
configurations measured interleaved in the same run, never absolute numbers across runs.
``run_udp_rate(..., gen_cpu=0, sink_cpu=1)`` pins the children if wanted.

Surprises worth knowing:

* The busy columns of /proc/stat are sampled per timer tick and under-counted the paced
  generator by up to a third (busy 75 % while generator + sink alone used 99 %); idle
  time is exact on this NO_HZ kernel, so busy = CPUs x wall - idle, and the tick columns
  only split it (``softirq_pct``).
* Packets sent into a veth are received, forwarded through every namespace of the chain
  and queued on the sink's socket in NET_RX softirq, which mostly runs in the *sender's*
  context when its ``send`` system call re-enables bottom halves; that time is charged
  to the sender (its /proc/PID/stat). So ``busy - generator - sink``
  (``CpuSample.rest_pct``) is *not* the forwarding cost (it is ksoftirqd, this parent
  and background, 10-25 % here), and a longer chain shows up as a busier generator.
  ``softirq_pct`` (receive and forwarding work of every namespace, wherever it ran) is
  the better proxy for the forwarding cost; all are reported.
* For the same reason the path rarely drops: a slower path slows the sender down
  (back-pressure through its own CPU) instead of losing packets, so at "saturation" the
  achieved rate falls short of R while S(R) stays near 100 %. Plot achieved vs offered
  rate and CPU per delivered packet too (``no_loss_fit`` skips rates not reached).

Self-demo (creates and always deletes namespaces x7-a and x7-b, writes PNGs)::

    .venv/bin/python bench/chainlib.py [--out /tmp/chainlib-demo]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

THIS = Path(__file__).resolve()
CLK_TCK = os.sysconf("SC_CLK_TCK")  # /proc/stat and /proc/PID/stat count in these ticks

# ---------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------


def _t_central(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3/4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if df % 2 == 0:
        term = total = 1.0
        for j in range(1, df // 2):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        return s * total
    if df == 1:
        return 2 * theta / math.pi
    term = total = math.cos(theta)
    for j in range(2, (df + 1) // 2):
        term *= c2 * (2 * j - 2) / (2 * j - 1)
        total += term
    return 2 / math.pi * (theta + s * total)


def t_quantile(confidence: float, df: int) -> float:
    """Two-sided Student's t critical value: t such that P(|T| <= t) = ``confidence``.

    Exact (closed form for integer df, then bisection); e.g. 12.706 for df=1 and 2.045 for
    df=29 at 0.95. Above df=1000 the normal quantile is used (difference < 0.1 %).
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    if df < 1:
        raise ValueError("df must be >= 1")
    if df > 1000:
        return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    lo, hi = 0.0, 1.0
    while _t_central(hi, df) < confidence:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if _t_central(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its Student's t confidence interval (same unit as values).

    The interval is ``mean +- half_width``. One value gives a half-width of NaN (no
    spread can be estimated); no value raises ValueError.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if n == 1:
        return mean, math.nan
    sd = statistics.stdev(values)
    return mean, t_quantile(confidence, n - 1) * sd / math.sqrt(n)


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line y = m x + k; returns (m, k, r2).

    Units: m is [y unit per x unit] (for U(R): % of a core per packet/s; multiply by
    1000 for %/kpps as in seed 002's Table I), k is [y unit]. r2 is the coefficient of
    determination (1.0 when every point is on the line).
    """
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    if len(set(xs)) < 2:
        raise ValueError("linear_fit needs at least two distinct x values")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    m = sxy / sxx
    k = my - m * mx
    ss_res = sum((y - (m * x + k)) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1.0 if ss_tot == 0 else 1 - ss_res / ss_tot
    return m, k, r2


# ---------------------------------------------------------------------------------------
# CPU accounting
# ---------------------------------------------------------------------------------------


def _proc_stat() -> tuple[int, int, int, int]:
    """(number of CPUs, idle + iowait ticks, busy ticks, softirq ticks) from /proc/stat.

    busy = user + nice + system + irq + softirq + steal (guest time is inside user). On
    this NO_HZ kernel idle and iowait are exact (nanosecond idle accounting) while the busy
    columns are sampled at each timer tick, which under-counts a CPU that runs in short
    bursts between sleeps (the paced generator) by up to a third; so the busy *total* is
    taken from idle time and the tick columns only split it.
    """
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    fields = [int(v) for v in lines[0].split()[1:]]
    ncpu = sum(1 for line in lines[1:] if re.match(r"cpu\d", line))
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return ncpu, idle + iowait, user + nice + system + irq + softirq + steal, softirq


def _pid_ticks(pid: int) -> int | None:
    """utime + stime ticks of a process (None if it is gone; a zombie still answers)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])  # fields 14 (utime) and 15 (stime)


@dataclass
class CpuSample:
    """CPU used during a ``cpu_sampler`` block. Times in seconds, loads in % of one core.

    On this 2-core machine loads range 0-200 %. ``procs`` maps a role ("generator",
    "sink", ...) to the CPU seconds of the processes registered with ``watch``.
    """

    wall_s: float = 0.0
    busy_s: float = 0.0
    softirq_s: float = 0.0
    procs: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0
    _stat0: tuple[int, int, int, int] = (0, 0, 0, 0)
    _watched: dict[int, tuple[str, int]] = field(default_factory=dict)

    def watch(self, pid: int, role: str) -> None:
        """Count the CPU of process ``pid`` from now on under ``role`` (roles add up)."""
        ticks = _pid_ticks(pid)
        if ticks is not None:
            self._watched[pid] = (role, ticks)
            self.procs.setdefault(role, 0.0)

    def unwatch(self, pid: int) -> None:
        """Stop counting ``pid`` now; call it before the process is reaped (a zombie's
        /proc/PID/stat still holds its final times), e.g. after ``os.waitid(...WNOWAIT)``."""
        entry = self._watched.pop(pid, None)
        if entry is None:
            return
        role, t0 = entry
        t1 = _pid_ticks(pid)
        if t1 is not None:
            self.procs[role] += (t1 - t0) / CLK_TCK

    def _start(self) -> None:
        self._stat0 = _proc_stat()
        self._t0 = time.monotonic()

    def _stop(self) -> None:
        for pid in list(self._watched):
            self.unwatch(pid)
        self.wall_s = time.monotonic() - self._t0
        ncpu, idle, busy, soft = (b - a for a, b in zip(self._stat0, _proc_stat(), strict=True))
        ncpu += self._stat0[0]
        self.busy_s = max(0.0, ncpu * self.wall_s - idle / CLK_TCK)
        self.softirq_s = self.busy_s * soft / busy if busy > 0 else 0.0

    def _pct(self, seconds: float) -> float:
        return 100.0 * seconds / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def busy_pct(self) -> float:
        """Whole-machine busy time (CPUs x wall - idle), % of one core: U(R) of seed 002."""
        return self._pct(self.busy_s)

    @property
    def softirq_pct(self) -> float:
        """Softirq time (packet receive/forwarding in every namespace), % of one core."""
        return self._pct(self.softirq_s)

    def proc_pct(self, role: str) -> float:
        """CPU of the processes watched under ``role``, % of one core."""
        return self._pct(self.procs.get(role, 0.0))

    @property
    def rest_pct(self) -> float:
        """busy - all watched processes, % of one core. Not the forwarding cost on a
        tick-accounting kernel (softirq run in a process's context is charged to it)."""
        return self._pct(self.busy_s - sum(self.procs.values()))


@contextlib.contextmanager
def cpu_sampler() -> Iterator[CpuSample]:
    """Measure CPU spent during the ``with`` block; yields a ``CpuSample``.

    The sample is filled when the block ends: ``busy_pct`` (user + system + irq + softirq
    of the whole machine), ``softirq_pct``, ``proc_pct(role)`` for processes registered
    with ``sample.watch(pid, role)``, and ``rest_pct`` = busy - watched processes. All in %
    of one core, so 0-200 % on this 2-core machine, where the generator, the sink and the
    forwarding path share the same two cores (see the module docstring). busy is
    CPUs x wall - idle (idle is exact here); softirq is busy times the softirq share of
    the tick-sampled busy columns. Resolution: 1/CLK_TCK = 10 ms of CPU per process
    counter, so use windows of a second or more.
    """
    sample = CpuSample()
    sample._start()
    try:
        yield sample
    finally:
        sample._stop()


# ---------------------------------------------------------------------------------------
# UDP constant-rate generator and sink (children: this file run as "_gen" / "_sink")
# ---------------------------------------------------------------------------------------

GEN_BATCH = 256  # most packets sent back to back before the clock is read again
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; Python 3.11 lacks the name


def _udp_counters(family: int) -> tuple[int, int]:
    """(datagrams delivered to sockets, receive-buffer drops) of this namespace."""
    if family == 6:
        values: dict[str, int] = {}
        with open("/proc/net/snmp6") as f:
            for line in f:
                name, value = line.split()
                values[name] = int(value)
        return values["Udp6InDatagrams"], values["Udp6RcvbufErrors"]
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    udp = dict(zip(rows[0][1:], rows[1][1:], strict=True))
    return int(udp["InDatagrams"]), int(udp["RcvbufErrors"])


class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _Stop


def _pin(cpu: int) -> None:
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})


def _sink_main(family: int, port: int, rcvbuf: int, cpu: int = -1) -> None:
    """Child: count UDP datagrams on ``port`` until SIGTERM, then print JSON."""
    _pin(cpu)
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    s = socket.socket(af, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("::" if family == 6 else "0.0.0.0", port))
    signal.signal(signal.SIGTERM, _raise_stop)
    _, drops0 = _udp_counters(family)
    print("ready", flush=True)
    buf = bytearray(65536)
    recv = s.recv_into
    received = nbytes = 0
    try:
        while True:
            nbytes += recv(buf)
            received += 1
    except _Stop:
        pass
    _, drops1 = _udp_counters(family)
    out = {"received": received, "bytes": nbytes, "sink_drops": drops1 - drops0}
    print(json.dumps(out), flush=True)


def _gen_main(
    family: int, addr: str, port: int, rate: float, seconds: float, size: int, cpu: int = -1
) -> None:
    """Child: after a line on stdin, send ``rate`` datagrams/s for ``seconds``; print JSON."""
    _pin(cpu)
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    s = socket.socket(af, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect((addr, port))
    data = bytes(size)
    send, mono, sleep = s.send, time.monotonic, time.sleep
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = mono()
    end = t0 + seconds
    attempts = errors = 0
    while True:
        now = mono()
        if now >= end:
            break
        n = int((now - t0) * rate) + 1 - attempts  # due by now
        if n <= 0:
            sleep(min(t0 + attempts / rate, end) - now)
            continue
        n = min(n, GEN_BATCH)
        attempts += n
        for _ in range(n):
            try:
                send(data)
            except OSError:
                errors += 1
    elapsed = mono() - t0
    print(json.dumps({"sent": attempts - errors, "send_errors": errors, "seconds": elapsed}))


def netns_cmd(ns: str | None, *cmd: str) -> list[str]:
    """``cmd`` prefixed with ``ip netns exec NS`` (unchanged when ``ns`` is None)."""
    return ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)


def _child(ns: str | None, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    """Start this file as a child in namespace ``ns`` and wait for its 'ready' line."""
    cmd = netns_cmd(ns, sys.executable, str(THIS), *args)
    proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{' '.join(cmd)} did not start: {line!r}")
    return proc


def _wait_exit_nowait(pid: int, timeout: float) -> None:
    """Wait until ``pid`` exits without reaping it (its /proc/PID/stat stays readable)."""
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} still running after {timeout:.0f} s")
        time.sleep(0.005)


def run_udp_rate(
    src_ns: str | None,
    dst_ns: str | None,
    dst_addr: str,
    rate_pps: float,
    seconds: float,
    payload: int = 1024,
    family: int = 4,
    port: int = 9977,
    rcvbuf: int = 4 << 20,
    gen_cpu: int | None = None,
    sink_cpu: int | None = None,
) -> dict[str, float]:
    """Send UDP at a constant rate from ``src_ns`` to a sink in ``dst_ns`` and count.

    rate_pps [packet/s], seconds [s], payload [bytes of UDP payload], family 4 or 6,
    rcvbuf [bytes] of the sink's socket, gen_cpu / sink_cpu pin the children to a CPU
    (default: not pinned). A namespace of None means the current one.
    Returns a dict:

    * ``sent``, ``received`` [packets], ``loss`` = 1 - received/sent (0..1), so the
      success ratio S(R) is ``1 - loss``;
    * ``seconds`` [s] the sender actually sent for, ``rate_pps`` [packet/s] it achieved
      (check it against the requested rate: above ~200k packet/s the generator saturates);
    * ``offered_ratio`` = received / (rate_pps x seconds requested): delivered / *offered*,
      which, unlike 1 - loss, also drops when the sender could not keep the rate (on this
      machine a slow path slows the sender rather than losing packets; see the module
      docstring). ``pdr_search`` should use this (``udp_trial`` does);
    * ``sink_drops`` [packets]: UDP receive-buffer drops in the sink's namespace during the
      run (the sink, not the path, lost these), ``send_errors`` [packets];
    * CPU during the sending window, % of one core (see ``cpu_sampler``): ``cpu_busy_pct``
      (U(R)), ``cpu_softirq_pct``, ``cpu_generator_pct``, ``cpu_sink_pct``,
      ``cpu_rest_pct`` (busy - generator - sink).

    The interpreter start-up of both children happens before the window opens.
    """
    if family not in (4, 6):
        raise ValueError("family must be 4 or 6")
    gcpu, scpu = (str(-1 if c is None else c) for c in (gen_cpu, sink_cpu))
    sink = _child(dst_ns, "_sink", str(family), str(port), str(rcvbuf), scpu)
    gen = None
    try:
        gen_args = ("_gen", str(family), dst_addr, str(port), repr(float(rate_pps)))
        gen_args += (str(seconds), str(payload), gcpu)
        gen = _child(src_ns, *gen_args, stdin=subprocess.PIPE)
        assert gen.stdin is not None and gen.stdout is not None and sink.stdout is not None
        with cpu_sampler() as cpu:
            cpu.watch(gen.pid, "generator")
            cpu.watch(sink.pid, "sink")
            gen.stdin.write("go\n")
            gen.stdin.flush()
            _wait_exit_nowait(gen.pid, seconds + 30)
        gen_out = json.loads(gen.communicate(timeout=10)[0])
        time.sleep(0.2)  # let the last packets reach the sink (not in the CPU window)
        sink.send_signal(signal.SIGTERM)
        sink_out = json.loads(sink.communicate(timeout=10)[0])
    finally:
        for proc in (gen, sink):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    sent = gen_out["sent"]
    received = sink_out["received"]
    return {
        "sent": sent,
        "received": received,
        "loss": 1 - received / sent if sent else math.nan,
        "offered_ratio": received / (rate_pps * seconds),
        "seconds": gen_out["seconds"],
        "rate_pps": sent / gen_out["seconds"],
        "sink_drops": sink_out["sink_drops"],
        "send_errors": gen_out["send_errors"],
        "cpu_busy_pct": cpu.busy_pct,
        "cpu_softirq_pct": cpu.softirq_pct,
        "cpu_generator_pct": cpu.proc_pct("generator"),
        "cpu_sink_pct": cpu.proc_pct("sink"),
        "cpu_rest_pct": cpu.rest_pct,
    }


# ---------------------------------------------------------------------------------------
# Partial drop rate (SRPerf)
# ---------------------------------------------------------------------------------------


@dataclass
class PdrResult:
    """Outcome of ``pdr_search``: ``pdr_pps`` [packet/s] is the highest rate tried whose
    trial ratio met the threshold (0 if none did); ``trials`` lists every
    (rate [packet/s], ratio returned by the trial) tried, in order."""

    pdr_pps: float
    trials: list[tuple[float, float]]


def pdr_search(
    trial: Callable[[float], float],
    start_pps: float,
    max_pps: float,
    threshold: float = 0.995,
    precision: float = 0.05,
) -> PdrResult:
    """Partial drop rate, SRPerf style: start at ``start_pps``, double while
    ``trial(rate) >= threshold`` (capped at ``max_pps``), then bisect between the last
    passing and the first failing rate until they are within ``precision`` (relative, of
    the failing rate). ``trial(rate)`` runs one trial at ``rate`` [packet/s] and returns
    delivered/offered (0..1; see ``udp_trial``). Rates tried are whole packets/s. If
    ``start_pps`` already fails, the search bisects between 0 and it, giving up (PDR 0)
    below start_pps/64.
    """
    trials: list[tuple[float, float]] = []

    def ok(rate: float) -> bool:
        ratio = trial(rate)
        trials.append((rate, ratio))
        return ratio >= threshold

    good, bad = 0.0, None
    rate = float(round(start_pps))
    while True:
        if ok(rate):
            good = rate
            if rate >= max_pps:
                return PdrResult(good, trials)
            rate = float(round(min(rate * 2, max_pps)))
        else:
            bad = rate
            break
    while bad - good > precision * bad and bad > start_pps / 64:
        mid = float(round((good + bad) / 2))
        if mid in (good, bad):
            break
        if ok(mid):
            good = mid
        else:
            bad = mid
    return PdrResult(good, trials)


def udp_trial(
    src_ns: str | None, dst_ns: str | None, dst_addr: str, seconds: float = 10, **kwargs: int
) -> Callable[[float], float]:
    """A ``pdr_search`` trial: one ``run_udp_rate`` of ``seconds`` [s] (SRPerf uses 10 s)
    returning its ``offered_ratio`` (delivered / offered); ``kwargs`` go to
    ``run_udp_rate`` (payload, family, port, gen_cpu, ...)."""

    def trial(rate_pps: float) -> float:
        return run_udp_rate(src_ns, dst_ns, dst_addr, rate_pps, seconds, **kwargs)["offered_ratio"]

    return trial


# ---------------------------------------------------------------------------------------
# ping and iperf3
# ---------------------------------------------------------------------------------------

_RTT = re.compile(r"time[=<]([0-9.]+) ms")


def ping_rtt(
    src_ns: str | None, dst_addr: str, count: int = 10, interval: float = 0.2
) -> list[float]:
    """RTTs [ms] of ``count`` pings from ``src_ns`` to ``dst_addr`` every ``interval`` s
    (IPv4 or IPv6, from the address). Lost pings are missing from the list."""
    cmd = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", dst_addr]
    out = subprocess.run(netns_cmd(src_ns, *cmd), capture_output=True, text=True, check=False)
    return [float(v) for v in _RTT.findall(out.stdout)]


def _iperf3(
    src_ns: str | None, dst_ns: str | None, client_args: list[str], port: int
) -> dict[str, object]:
    """Run ``iperf3 -s -1`` in ``dst_ns`` and ``iperf3 -c ... -J`` in ``src_ns``."""
    server_cmd = netns_cmd(dst_ns, "iperf3", "-s", "-1", "-p", str(port), "--forceflush")
    server = subprocess.Popen(
        server_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:  # wait until it listens
            if "listening" in line:
                break
        else:
            raise RuntimeError("iperf3 server did not start")
        cmd = netns_cmd(src_ns, "iperf3", "-p", str(port), "-J", *client_args)
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        data: dict[str, object] = json.loads(out.stdout)
        if "error" in data:
            raise RuntimeError(f"iperf3: {data['error']}")
        return data
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=5)
        if server.poll() is None:
            server.kill()
            server.wait()


def iperf3_tcp(
    src_ns: str | None,
    dst_ns: str | None,
    addr: str,
    seconds: float = 3,
    reverse: bool = False,
    port: int = 5299,
) -> float:
    """Throughput [bit/s] of one TCP flow from ``src_ns`` to ``addr`` (served in
    ``dst_ns``); ``reverse`` makes the server send (dst -> src) over the same connection."""
    args = ["-c", addr, "-t", str(seconds)] + (["-R"] if reverse else [])
    data = _iperf3(src_ns, dst_ns, args, port)
    return float(data["end"]["sum_received"]["bits_per_second"])  # type: ignore[index]


def iperf3_udp(
    src_ns: str | None,
    dst_ns: str | None,
    addr: str,
    seconds: float = 3,
    bitrate: float = 1e9,
    length: int = 1024,
    reverse: bool = False,
    port: int = 5299,
) -> dict[str, float]:
    """One UDP flow at ``bitrate`` [bit/s] of ``length``-byte datagrams (iperf3 -u -b -l).

    Returns ``bps`` [bit/s] received, ``packets`` sent, ``lost`` [packets], ``loss`` (0..1)
    and ``jitter_ms`` [ms] as iperf3 reports them (seed 002 found its receive counts
    inexact at high rates; use ``run_udp_rate`` for loss curves).
    """
    args = ["-c", addr, "-u", "-t", str(seconds), "-b", str(int(bitrate)), "-l", str(length)]
    data = _iperf3(src_ns, dst_ns, args + (["-R"] if reverse else []), port)
    s = data["end"]["sum"]  # type: ignore[index]
    return {
        "bps": float(s["bits_per_second"]),
        "packets": float(s["packets"]),
        "lost": float(s["lost_packets"]),
        "loss": float(s["lost_percent"]) / 100,
        "jitter_ms": float(s["jitter_ms"]),
    }


# ---------------------------------------------------------------------------------------
# Plots (matplotlib, Agg backend; imported lazily so the children stay light)
# ---------------------------------------------------------------------------------------


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _err(half: float) -> float:
    return 0.0 if math.isnan(half) else half


def plot_bars(
    groups: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    title: str,
    ylabel: str,
    confidence: float = 0.95,
) -> Path:
    """Grouped bar chart of means with CI error bars, written as PNG to ``path``.

    ``groups`` maps a group label (x axis, e.g. "TCP v4 a->b") to series (bars within the
    group, e.g. "plain", "chain") to the raw samples of that bar; each bar is
    ``mean_ci(samples, confidence)``. Series missing from a group leave a gap.
    """
    plt = _pyplot()
    series: list[str] = []
    for bars in groups.values():
        series += [s for s in bars if s not in series]
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) * max(len(series), 1)), 4.5))
    for i, name in enumerate(series):
        xs, means, errs = [], [], []
        for g, bars in enumerate(groups.values()):
            if bars.get(name):
                mean, half = mean_ci(bars[name], confidence)
                xs.append(g + (i - (len(series) - 1) / 2) * width)
                means.append(mean)
                errs.append(_err(half))
        ax.bar(xs, means, width, yerr=errs, capsize=4, label=name)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n(mean, {confidence:.0%} CI)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@dataclass
class RatePoint:
    """All runs at one offered rate: ``rate_pps`` [packet/s], per run ``success`` (S,
    delivered/sent, 0..1), ``cpu_pct`` (U, % of one core) and ``achieved_pps`` (the
    rate the generator reached, packet/s; empty if not recorded)."""

    rate_pps: float
    success: list[float] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)
    achieved_pps: list[float] = field(default_factory=list)

    def add(self, run: Mapping[str, float]) -> None:
        """Record one ``run_udp_rate`` result."""
        self.success.append(1 - run["loss"])
        self.cpu_pct.append(run["cpu_busy_pct"])
        self.achieved_pps.append(run["rate_pps"])

    @property
    def x_pps(self) -> float:
        """Where to plot the point [packet/s]: mean achieved rate, else offered."""
        return statistics.fmean(self.achieved_pps) if self.achieved_pps else self.rate_pps

    @property
    def reached(self) -> bool:
        """The generator reached 99 % of the offered rate on average (True if unknown)."""
        return not self.achieved_pps or statistics.fmean(self.achieved_pps) >= 0.99 * self.rate_pps


def no_loss_fit(
    points: Sequence[RatePoint], threshold: float = 0.995
) -> tuple[float, float, float] | None:
    """U = m R + k on the no-loss region (points whose mean S >= ``threshold`` and whose
    offered rate the generator reached), every run a sample; returns
    (m [%/(packet/s)], k [%], r2) or None with fewer than 2 such rates."""
    good = [p for p in points if statistics.fmean(p.success) >= threshold and p.reached]
    xs = [p.rate_pps for p in good for _ in p.cpu_pct]
    ys = [u for p in good for u in p.cpu_pct]
    if len({p.rate_pps for p in good}) < 2:
        return None
    return linear_fit(xs, ys)


def plot_rate_curves(
    configs: Mapping[str, Sequence[RatePoint]],
    path: str | Path,
    threshold: float = 0.995,
    confidence: float = 0.95,
    title: str = "",
) -> tuple[Path, Path]:
    """Seed 002's figures 5 and 6 for several configurations on the same axes.

    Points sit at the mean rate the generator achieved (``RatePoint.x_pps``), so an offered
    rate it could not reach shows where it really was; they are drawn hollow.
    Writes ``<stem>-success.png`` (S(R) [%] vs R [kpacket/s], mean and CI per rate) and
    ``<stem>-cpu.png`` (U(R) [% of one core] vs R with the line U = m R + k fitted on each
    configuration's no-loss region, S >= ``threshold``; the legend gives m [%/kpps], k and
    R^2) next to ``path`` (its suffix is replaced). Returns the two paths.
    """
    plt = _pyplot()
    base = Path(path)
    out_s = base.with_name(base.stem + "-success.png")
    out_u = base.with_name(base.stem + "-cpu.png")
    fig_s, ax_s = plt.subplots(figsize=(7, 4.5))
    fig_u, ax_u = plt.subplots(figsize=(7, 4.5))
    n = len(configs)
    all_rates = sorted({p.rate_pps for pts in configs.values() for p in pts})
    step = min((b - a for a, b in zip(all_rates, all_rates[1:], strict=False)), default=1000)
    for i, (label, pts) in enumerate(configs.items()):
        pts = sorted(pts, key=lambda p: p.rate_pps)
        color = f"C{i}"
        shift = (i - (n - 1) / 2) * step * 0.06 / 1000  # keep CI bars apart, in kpps
        rs = [p.x_pps / 1000 + shift for p in pts]
        s_ci = [mean_ci([100 * s for s in p.success], confidence) for p in pts]
        u_ci = [mean_ci(p.cpu_pct, confidence) for p in pts]
        ax_s.errorbar(
            rs, [m for m, _ in s_ci], yerr=[_err(h) for _, h in s_ci],
            marker="o", capsize=4, color=color, label=label,
        )  # fmt: skip
        missed = [i for i, p in enumerate(pts) if not p.reached]  # drawn hollow
        for ax, ci in ((ax_s, s_ci), (ax_u, u_ci)):
            if missed:
                xy = [rs[i] for i in missed], [ci[i][0] for i in missed]
                ax.plot(*xy, "o", color=color, markerfacecolor="white", zorder=3)
        fit = no_loss_fit(pts, threshold)
        fit_label = label
        if fit is not None:
            m, k, r2 = fit
            fit_label = f"{label}: m={m * 1000:.2f} %/kpps, k={k:.1f} %, R²={r2:.3f}"
        ax_u.errorbar(
            rs, [m for m, _ in u_ci], yerr=[_err(h) for _, h in u_ci],
            marker="o", capsize=4, color=color, linestyle="none", label=fit_label,
        )  # fmt: skip
        if fit is not None:
            m, k, _ = fit
            xs = [0.0, max(p.x_pps for p in pts)]
            ax_u.plot([x / 1000 for x in xs], [m * x + k for x in xs], "--", color=color)
    ax_s.axhline(100 * threshold, color="grey", linewidth=0.8, linestyle=":")
    ax_s.set_xlabel("rate R [kpacket/s] (achieved)")
    ax_s.set_ylabel("success ratio S(R) [%]")
    ax_s.set_title(f"{title} success ratio (mean, {confidence:.0%} CI)".strip())
    ax_u.set_xlabel("rate R [kpacket/s] (achieved)")
    ax_u.set_ylim(0, 105 * (os.cpu_count() or 1))  # U cannot exceed all cores; clip CI bars
    ax_u.set_ylabel("CPU load U(R) [% of one core]")
    ax_u.set_title(f"{title} CPU load, U = mR + k on the no-loss region".strip())
    for fig, ax, out in ((fig_s, ax_s, out_s), (fig_u, ax_u, out_u)):
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return out_s, out_u


# ---------------------------------------------------------------------------------------
# Self-demo: two namespaces joined by a veth
# ---------------------------------------------------------------------------------------

DEMO_NS = ("x7-a", "x7-b")


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def _demo_down() -> None:
    existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns in DEMO_NS:
        if re.search(rf"^{re.escape(ns)}( |$)", existing, re.M):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def _demo_up() -> None:
    a, b = DEMO_NS
    _demo_down()  # a previous demo killed before its cleanup
    _sh("ip", "netns", "add", a)
    _sh("ip", "netns", "add", b)
    _sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
    for ns, n in ((a, 1), (b, 2)):
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "-n", ns, "addr", "add", f"10.77.0.{n}/24", "dev", "eth0")
        _sh("ip", "-n", ns, "addr", "add", f"fd77::{n}/64", "dev", "eth0", "nodad")
        _sh("ip", "-n", ns, "link", "set", "eth0", "up")


def demo(out: Path, rates: Sequence[float], runs: int, seconds: float) -> None:
    """Sweep S(R)/U(R) over IPv4 and IPv6 (interleaved), a PDR search, ping and iperf3
    between x7-a and x7-b; plots into ``out``."""
    a, b = DEMO_NS
    out.mkdir(parents=True, exist_ok=True)
    targets = {"IPv4 veth": ("10.77.0.2", 4), "IPv6 veth": ("fd77::2", 6)}
    try:
        _demo_up()
        print(f"ping a->b IPv4: {ping_rtt(a, '10.77.0.2', 5, 0.05)} ms")
        curves: dict[str, dict[float, RatePoint]] = {c: {} for c in targets}
        print(f"{'config':10} {'R req':>8} {'R sent':>8} {'S %':>8} {'U %':>6} {'softirq':>7} "
              f"{'gen':>5} {'sink':>5} {'rest':>5} {'sinkdrop':>8}")  # fmt: skip
        for _ in range(runs):
            for rate in rates:
                order = list(targets.items())
                random.shuffle(order)
                for label, (addr, fam) in order:
                    r = run_udp_rate(a, b, addr, rate, seconds, family=fam)
                    curves[label].setdefault(rate, RatePoint(rate)).add(r)
                    print(
                        f"{label:10} {rate:8.0f} {r['rate_pps']:8.0f} {100 * (1 - r['loss']):8.3f}"
                        f" {r['cpu_busy_pct']:6.1f} {r['cpu_softirq_pct']:7.1f}"
                        f" {r['cpu_generator_pct']:5.1f} {r['cpu_sink_pct']:5.1f}"
                        f" {r['cpu_rest_pct']:5.1f} {r['sink_drops']:8.0f}"
                    )
        configs = {c: list(pts.values()) for c, pts in curves.items()}
        for label, pts in configs.items():
            fit = no_loss_fit(pts)
            if fit:
                m, k, r2 = fit
                print(f"{label}: U = {m * 1000:.3f} %/kpps * R + {k:.2f} %, R2 {r2:.3f}")
        paths = plot_rate_curves(configs, out / "rate.png", title="demo veth")
        print("wrote", *paths)

        pdr = pdr_search(udp_trial(a, b, "10.77.0.2", 1.0), 20_000, 400_000)
        print(f"PDR (IPv4, 1 s trials): {pdr.pdr_pps:.0f} packet/s; trials {pdr.trials}")

        groups: dict[str, dict[str, list[float]]] = {}
        for _ in range(2):
            for fam_label, addr in (("v4", "10.77.0.2"), ("v6", "fd77::2")):
                for rev in (False, True):
                    g = groups.setdefault(f"TCP {fam_label} {'b->a' if rev else 'a->b'}", {})
                    g.setdefault("veth", []).append(iperf3_tcp(a, b, addr, 2, rev) / 1e9)
        udp = iperf3_udp(a, b, "10.77.0.2", 2, bitrate=500e6)
        print(f"iperf3 UDP 500 Mbit/s, 1024 B: {udp}")
        for g, bars in groups.items():
            mean, half = mean_ci(bars["veth"])
            print(f"{g}: {mean:.2f} +- {half:.2f} Gbit/s")
        print("wrote", plot_bars(groups, out / "tcp.png", "demo: TCP over veth", "Gbit/s"))
    finally:
        _demo_down()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_sink":
        _sink_main(*(int(v) for v in sys.argv[2:6]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_gen":
        fam, addr, port, rate, secs, size, cpu = sys.argv[2:9]
        _gen_main(int(fam), addr, int(port), float(rate), float(secs), int(size), int(cpu))
        return
    ap = argparse.ArgumentParser(description="chainlib self-demo (namespaces x7-a, x7-b)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/chainlib-demo"))
    ap.add_argument("--rates", default="20000,50000,100000,150000,250000")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    demo(args.out, [float(r) for r in args.rates.split(",")], args.runs, args.seconds)


if __name__ == "__main__":
    main()
