"""Seed 002's CPU-versus-rate methodology for the NFV node of a service chain (issue 6).

Needs root. What: UDP datagrams with 1024-byte payloads at rising offered packet rates R,
from a no-loss region to saturation, several runs per rate (``--runs``), for three
configurations measured interleaved in one run (every run shuffles every (rate,
configuration) pair):

* ``plain``: the same path without the chain (a sibling generator host on the same LAN
  whose traffic no chain steers: IPv6 through the same gateways, carried by the
  overlay's kernel VXLAN like every un-chained packet);
* ``SR-aware``: an all-IPv6 chain through one SR-aware function (End) on the NFV node;
* ``SR-unaware``: the same through one SR-unaware (legacy, plain IP forwarding) function
  behind the connector's emulated End.AS static proxy (decapsulate, hand the inner
  packet to the function, re-encapsulate by the interface it returns on).

Per rate: the success ratio S(R) = delivered / sent at the sink and the CPU load U(R)
(mean and 95 % CI over the runs); U = m R + k fitted by least squares on the no-loss
region (S >= 99.5 % and the generator reached the offered rate) with R²; the partial
drop rate (PDR) at 0.5 % loss found SRPerf style (start low, double, bisect; trials of
``--pdr-seconds``, delivered / offered). Printed: m [CPU % per kpacket/s] per
configuration, m_unaware / m_aware (issue 6 goal: within 1.5x) and the comparison with
seed 002's cost model (router f; NFV node with n SR-aware functions (n+2)f; with n
SR-unaware ones d + 2nf + e + f).

Topology (``bench/intents/chain-rate.yaml``): two sites, the three generators in site a,
the NFV node (both functions) and the sink in site b, ``carrier: tunnels`` over kernel
VXLAN (chained and plain packets cross the same tunnel). It is the
smallest lab in which the chains cross the internet, a gateway classifying (T.Encaps)
and one decapsulating (End.DX6), as chains really do, while the three configurations
share everything but the chain: the configurations differ only by the NFV detour (aware)
and the proxy's decapsulation and re-encapsulation (unaware).

CPU: this machine has 2 cores shared by the generator, the sink and every namespace's
forwarding (and by other sessions). The generator is pinned to CPU 0 and the sink to
CPU 1 (``--no-pin`` to leave them free). Three measures of U are fitted, all from
``chainlib.cpu_sampler``: ``busy`` (the whole machine, seed 002's U(R)), ``softirq``
(the machine's softirq share: packet receive and forwarding in every namespace) and
``process`` (generator + sink, from /proc/PID/stat). On this kernel the path's
forwarding runs in softirq in the sender's context and is charged to the generator (see
bench/chainlib.py's docstring), so ``process`` holds the whole path's cost plus the
Python generator's and sink's own per-packet work (the same in every configuration), and
none of the other sessions' load. On a shared machine the sweep's fits do not resolve
the configurations; the per-packet cost below does.

Per-packet cost (``--cost-blocks N``, the goal's measure): the slope m is CPU per packet,
so it is measured directly at one no-loss rate (``--cost-rate``, 20k packet/s) in N
blocks, each running ``local`` (the generator sending to a sink on its own host: no
forwarding), plain, SR-aware and SR-unaware in a shuffled order. The generator
(``_cgen``, here) wakes every millisecond rather than per packet, so its own per-packet
cost stays small; CPU = its exact scheduler time (/proc/PID/schedstat; this kernel has
no IRQ_TIME_ACCOUNTING, so the path's softirq run in its context is included) + every
ksoftirqd's, per sent packet. Differences within a block (paired) cancel the generator
and the sink; printed with their 95 % CI: the chain's own cost through each function
(config - plain) and their ratio, the goal's m_unaware / m_aware, with a bootstrap CI.
``busy`` and ``softirq`` are machine-wide and swing with other sessions' work; the
softirq split is also tick-sampled (it reads 0 at low rates). Above the rate the sender
can drive through a path, the path slows the sender instead of losing packets: the
achieved rate falls short of R while S stays ~100 %, so the achieved-versus-offered plot
and the PDR (delivered/offered) show the saturation.

Output: tables on stdout; ``--out`` (default /tmp/chain-rate) gets
``rate-busy-success.png`` (S(R), seed 002 Fig. 5), ``rate-process-cpu.png``,
``rate-softirq-cpu.png`` and ``rate-busy-cpu.png`` (U(R) with the fitted lines, Fig. 6/7),
``rate-achieved.png`` and ``results.json`` (``--from-json`` re-analyses it, no lab).

Sources: seed 002 (§III cost model, §IV-B methodology, §V Fig. 5-7 and Table I),
SRPerf's PDR method, bench/chainlib.py, issue 6.

    python bench/chain_rate.py [--runs 3] [--rates 4000,8000,...] [--seconds 2]
        [--cost-blocks 25 [--cost-rate 20000]] [--no-sweep] [--no-pdr]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chainlib import (  # noqa: E402
    RatePoint,
    _pyplot,
    mean_ci,
    netns_cmd,
    no_loss_fit,
    pdr_search,
    plot_rate_curves,
    run_udp_rate,
    udp_trial,
)

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).with_name("polynimbus"))
CHAINLIB = HERE / "chainlib.py"
CONFIGS = ("plain", "SR-aware", "SR-unaware")
COST_CONFIGS = ("local", *CONFIGS)  # local: the generator's own host, no forwarding at all
THRESHOLD = 0.995
RATES = "4000,8000,12000,16000,20000,24000,28000,32000,40000,48000"


def _run(*cmd: str) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip() or out.stdout}")
    return out.stdout


def roles(intent_path: Path) -> tuple[str, dict[str, str], str, str, str]:
    """(lab name, configuration -> generator namespace, sink namespace, sink IPv6, the
    plain generator's IPv6)."""
    intent = yaml.safe_load(intent_path.read_text())
    name = intent["name"]
    if not name.startswith("bench-chain"):
        raise SystemExit(f"{intent_path}: lab names must start with bench-chain")
    plan = json.loads(_run(CLI, "plan", "--json", str(intent_path)))
    addr6 = {f"{s['name']}/{h['name']}": h["address6"] for s in plan["sites"] for h in s["hosts"]}
    modes = {s["name"]: s["mode"] for s in intent["services"]}
    gens: dict[str, str] = {}
    sink = ""
    for c in intent["chains"]:
        if c["family"] != "ipv6" or len(c["through"]) != 1:
            raise SystemExit(f"{intent_path}: chains must be all-IPv6 through one function")
        mode = modes[c["through"][0]]
        gens["SR-unaware" if mode == "sr-unaware" else "SR-aware"] = c["from"]
        sink = c["to"]
    site = gens["SR-aware"].split("/")[0]
    plain = [h for h in addr6 if h.startswith(site + "/") and h not in gens.values()]
    gens["plain"] = plain[0]
    ns = f"pn.{name}."
    return (
        name,
        {c: ns + gens[c].replace("/", ".") for c in CONFIGS},
        ns + sink.replace("/", "."),
        addr6[sink],
        addr6[gens["plain"]],
    )


# -- per-packet cost at one rate (the slope, resolved by paired differences) -------------


def _schedstat_ns(pid: int | str) -> int:
    """CPU time of a task [ns], exact (scheduler clock). Without IRQ_TIME_ACCOUNTING (this
    kernel) it includes the softirq the task ran in its own context."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def _ksoftirqd() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().startswith("ksoftirqd/"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _cpu_idle() -> list[int]:
    """Idle + iowait ticks per CPU (exact on this NO_HZ kernel)."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                out.append(v[3] + v[4])
    return out


def _net_rx() -> list[int]:
    with open("/proc/softirqs") as f:
        for line in f:
            if line.strip().startswith("NET_RX:"):
                return [int(x) for x in line.split()[1:]]
    return []


def _cgen_main(addr: str, port: int, rate: float, seconds: float, size: int, cpu: int) -> None:
    """Child: paced UDP sender that wakes every millisecond (not per packet) and sends what
    is due, then prints sent/errors/elapsed and its own CPU time [ns] (schedstat: Python,
    the send system calls and the path's softirq that ran in its context)."""
    import socket  # noqa: PLC0415

    os.sched_setaffinity(0, {cpu})
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect((addr, port))
    data, send, mono = bytes(size), s.send, time.monotonic
    print("ready", flush=True)
    sys.stdin.readline()
    cpu0 = _schedstat_ns("self")
    t0 = mono()
    end = t0 + seconds
    attempts = errors = 0
    while (now := mono()) < end:
        n = int((now - t0) * rate) - attempts
        attempts += max(n, 0)
        for _ in range(n):
            try:
                send(data)
            except OSError:
                errors += 1
        time.sleep(0.001)
    out = {"sent": attempts - errors, "send_errors": errors, "seconds": mono() - t0}
    out["gen_ns"] = _schedstat_ns("self") - cpu0
    print(json.dumps(out), flush=True)


def cost_trial(gen_ns: str, sink_ns: str, addr: str, rate: float, seconds: float,
               payload: int) -> dict[str, float]:  # fmt: skip
    """One paced run; generator on CPU 0, sink on CPU 1. CPU per sent packet [µs]:
    ``path_us`` = generator (its schedstat, softirq in its context included) + every
    ksoftirqd (softirq deferred out of it); ``sink_us``; ``cpu0_us``/``cpu1_us`` = the
    CPU's busy time (wall - idle, other sessions' load included); NET_RX softirqs."""
    sink = subprocess.Popen(
        netns_cmd(sink_ns, sys.executable, str(CHAINLIB), "_sink", "6", "9978", str(4 << 20), "1"),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    gen = None
    try:
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != "ready":
            raise RuntimeError("sink did not start")
        gen = subprocess.Popen(
            netns_cmd(gen_ns, sys.executable, str(Path(__file__).resolve()), "_cgen", addr,
                      "9978", repr(rate), repr(seconds), str(payload), "0"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert gen.stdin is not None and gen.stdout is not None
        if gen.stdout.readline().strip() != "ready":
            raise RuntimeError("generator did not start")
        ks = _ksoftirqd()
        sink_t0, ks0, idle0, rx0 = _schedstat_ns(sink.pid), [_schedstat_ns(p) for p in ks], \
            _cpu_idle(), _net_rx()  # fmt: skip
        t0 = time.monotonic()
        gen.stdin.write("go\n")
        gen.stdin.flush()
        line = gen.stdout.readline()
        wall = time.monotonic() - t0
        sink_t1, ks1, idle1, rx1 = _schedstat_ns(sink.pid), [_schedstat_ns(p) for p in ks], \
            _cpu_idle(), _net_rx()  # fmt: skip
        g = json.loads(line)
        gen.wait(timeout=10)
        time.sleep(0.2)
        sink.send_signal(signal.SIGTERM)
        so = json.loads(sink.communicate(timeout=10)[0])
    finally:
        for proc in (gen, sink):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    n = g["sent"] or 1
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    busy = [wall * 1e6 - (b - a) * tick_us for a, b in zip(idle0, idle1, strict=True)]
    return {
        "sent": g["sent"], "received": so["received"], "loss": 1 - so["received"] / n,
        "rate_pps": g["sent"] / g["seconds"], "sink_drops": so["sink_drops"],
        "gen_us": g["gen_ns"] / 1e3 / n,
        "ksoftirqd_us": sum(b - a for a, b in zip(ks0, ks1, strict=True)) / 1e3 / n,
        "path_us": (g["gen_ns"] + sum(b - a for a, b in zip(ks0, ks1, strict=True))) / 1e3 / n,
        "sink_us": (sink_t1 - sink_t0) / 1e3 / n,
        "cpu0_us": busy[0] / n, "cpu1_us": busy[1] / n,
        "netrx0_per_pkt": (rx1[0] - rx0[0]) / n, "netrx1_per_pkt": (rx1[1] - rx0[1]) / n,
    }  # fmt: skip


def _boot_ratio(num: list[float], den: list[float], rng: random.Random) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of mean(num)/mean(den) over paired blocks."""
    idx = range(len(num))
    rs = []
    for _ in range(4000):
        pick = [rng.choice(idx) for _ in idx]
        d = statistics.fmean(den[i] for i in pick)
        if d > 0:
            rs.append(statistics.fmean(num[i] for i in pick) / d)
    rs.sort()
    return rs[int(0.025 * len(rs))], rs[int(0.975 * len(rs)) - 1]


def cost_report(cost: list[dict], rate: float, seconds: float) -> None:
    """Per-packet CPU per configuration and the paired differences, with CIs."""
    blocks = sorted({c["block"] for c in cost})
    by = {(c["block"], c["cfg"]): c for c in cost}
    full = [b for b in blocks if all((b, k) in by for k in COST_CONFIGS)]
    print(f"## Per-packet cost at R = {rate / 1000:g} kpacket/s: {len(full)} blocks of "
          f"{len(COST_CONFIGS)} runs of {seconds:g} s, each block in a shuffled order; "
          "generator on CPU 0, sink on CPU 1; CPU µs per sent packet, mean ± 95% CI\n")  # fmt: skip
    print(
        "| config | achieved kpps | S % | path µs (gen + ksoftirqd) | of which ksoftirqd "
        "| sink µs | CPU0 busy µs | CPU1 busy µs | NET_RX softirqs/packet CPU0, CPU1 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in COST_CONFIGS:
        rs = [by[(b, k)] for b in full]
        col = lambda key, d=2, rs=rs: ci([r[key] for r in rs], d)  # noqa: E731
        print(f"| {k} | {ci([r['rate_pps'] / 1000 for r in rs], 2)} | "
              f"{ci([100 * (1 - r['loss']) for r in rs], 2)} | {col('path_us')} | "
              f"{col('ksoftirqd_us')} | {col('sink_us')} | {col('cpu0_us')} | "
              f"{col('cpu1_us')} | {col('netrx0_per_pkt')}, {col('netrx1_per_pkt')} |")  # fmt: skip
    print()

    def diff(a: str, b: str, key: str = "path_us") -> list[float]:
        return [by[(x, a)][key] - by[(x, b)][key] for x in full]

    print("Paired differences (same block), path µs per packet (= m in %/kpps x 10):\n")
    for a, b, what in (
        ("plain", "local", "the plain path's forwarding (gateways, internet, VXLAN)"),
        ("SR-aware", "plain", "chain through the SR-aware function: SRv6 encap/decap + NFV"),
        ("SR-unaware", "plain", "chain through the SR-unaware function behind the proxy"),
        ("SR-unaware", "SR-aware", "the proxy: d + e (+ the function's plain forwarding)"),
    ):
        print(f"- {a} - {b}: {ci(diff(a, b), 2)} µs ({what}); CPU0 busy: "
              f"{ci(diff(a, b, 'cpu0_us'), 2)} µs")  # fmt: skip
    rng = random.Random(1)
    mu, ma, mp, ml = ([by[(x, k)]["path_us"] for x in full] for k in
                      ("SR-unaware", "SR-aware", "plain", "local"))  # fmt: skip
    du, da = diff("SR-unaware", "plain"), diff("SR-aware", "plain")
    r1 = statistics.fmean(du) / statistics.fmean(da)
    lo1, hi1 = _boot_ratio(du, da, rng)
    pu = [u - loc for u, loc in zip(mu, ml, strict=True)]
    pa = [a - loc for a, loc in zip(ma, ml, strict=True)]
    r2 = statistics.fmean(pu) / statistics.fmean(pa)
    lo2, hi2 = _boot_ratio(pu, pa, rng)
    r3 = statistics.fmean(mu) / statistics.fmean(ma)
    lo3, hi3 = _boot_ratio(mu, ma, rng)
    print()
    print(
        f"- chain's own cost, (m_unaware - m_plain) / (m_aware - m_plain) = {r1:.2f} "
        f"[95% bootstrap {lo1:.2f}, {hi1:.2f}]"
    )
    print(
        f"- whole path minus the generator's own cost, (m_unaware - m_local) / "
        f"(m_aware - m_local) = {r2:.2f} [{lo2:.2f}, {hi2:.2f}]"
    )
    print(f"- whole measure, m_unaware / m_aware = {r3:.2f} [{lo3:.2f}, {hi3:.2f}]")
    verdict = "met" if hi1 <= 1.5 else "MISSED" if lo1 > 1.5 else "undetermined (CI spans 1.5)"
    print(f"- goal (chain's own cost ratio <= 1.5, whole CI): {verdict}\n")


def ci(values: list[float], digits: int = 1) -> str:
    mean, half = mean_ci(values)
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--intent", type=Path, default=HERE / "intents" / "chain-rate.yaml")
    ap.add_argument("--rates", default=RATES, help="offered rates, packet/s, comma-separated")
    ap.add_argument("--runs", type=int, default=3, help="runs per rate (default 3)")
    ap.add_argument("--seconds", type=float, default=2.0, help="sending window per run, s")
    ap.add_argument("--payload", type=int, default=1024, help="UDP payload, bytes")
    ap.add_argument("--pdr-seconds", type=float, default=2.0, help="PDR trial length, s")
    ap.add_argument("--no-pdr", action="store_true", help="skip the PDR search")
    ap.add_argument("--no-pin", action="store_true", help="do not pin generator/sink CPUs")
    ap.add_argument("--no-sweep", action="store_true", help="skip the S(R)/U(R) sweep")
    ap.add_argument(
        "--cost-blocks",
        type=int,
        default=25,
        help="blocks of the per-packet cost measurement (0: skip it)",
    )
    ap.add_argument("--cost-rate", type=float, default=20000.0, help="its rate, packet/s")
    ap.add_argument("--cost-seconds", type=float, default=1.5, help="its run length, s")
    ap.add_argument("--out", type=Path, default=Path("/tmp/chain-rate"), help="PNG/JSON dir")
    ap.add_argument("--seed", type=int, default=0, help="shuffle seed")
    ap.add_argument(
        "--from-json", type=Path, help="re-analyse a results.json of an earlier run (no lab)"
    )
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    pin = {} if args.no_pin else {"gen_cpu": 0, "sink_cpu": 1}
    raw: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    pdr: dict[str, object] = {}
    cost: list[dict] = []
    t0 = time.monotonic()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        raw, pdr, cost = saved["raw"], saved["pdr"], saved.get("cost", [])
        rates = sorted({r["offered"] for rs in raw.values() for r in rs})
        for k in ("runs", "seconds", "payload", "cost_rate", "cost_seconds"):
            if k in saved["args"]:
                setattr(args, k, type(getattr(args, k))(saved["args"][k]))
        args.no_pin = saved["args"]["no_pin"] == "True"
    else:
        measure_lab(args, rates, pin, raw, pdr, cost, t0)
    if cost:
        cost_report(cost, args.cost_rate, args.cost_seconds)
    if any(raw.values()):
        analyse(args, rates, raw, pdr, t0)
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "raw": raw,
                "pdr": pdr,
                "cost": cost,
            },
            indent=1,
        )  # fmt: skip
    )


def measure_lab(args, rates, pin, raw, pdr, cost, t0) -> None:  # type: ignore[no-untyped-def]
    """Bring the lab up, the per-packet cost blocks, sweep the rates (interleaved), search
    the PDRs, take it down."""
    name, gens, sink_ns, sink_addr, plain_addr = roles(args.intent)
    with tempfile.TemporaryDirectory(prefix="chain-rate-") as tmp:
        state = str(Path(tmp) / name)
        try:
            _run(CLI, "up", str(args.intent), "--state-dir", state)
            print(f"# {name} up; generators {gens}; sink {sink_ns} {sink_addr}", file=sys.stderr)
            rng = random.Random(args.seed)
            for block in range(args.cost_blocks):
                order = list(COST_CONFIGS)
                rng.shuffle(order)
                for cfg in order:
                    local = cfg == "local"
                    r = cost_trial(
                        gens["plain"] if local else gens[cfg], gens["plain"] if local else sink_ns,
                        plain_addr if local else sink_addr, args.cost_rate, args.cost_seconds,
                        args.payload,
                    )  # fmt: skip
                    cost.append({**r, "cfg": cfg, "block": block})
                if block % 5 == 4:
                    print(f"# cost block {block + 1}/{args.cost_blocks}, "
                          f"{time.monotonic() - t0:.0f} s", file=sys.stderr)  # fmt: skip
            for run in range(0 if args.no_sweep else args.runs):
                cells = [(r, c) for r in rates for c in CONFIGS]
                rng.shuffle(cells)
                for rate, cfg in cells:
                    r = run_udp_rate(
                        gens[cfg], sink_ns, sink_addr, rate, args.seconds,
                        payload=args.payload, family=6, **pin,
                    )  # fmt: skip
                    r.update(offered=rate, run=run)
                    raw[cfg].append(r)
                print(
                    f"# run {run + 1}/{args.runs}, {time.monotonic() - t0:.0f} s", file=sys.stderr
                )
            if not args.no_pdr and not args.no_sweep:
                for cfg in CONFIGS:
                    trial = udp_trial(
                        gens[cfg], sink_ns, sink_addr, args.pdr_seconds,  # type: ignore[arg-type]
                        payload=args.payload, family=6, **pin,
                    )  # fmt: skip
                    res = pdr_search(trial, rates[0], 4 * rates[-1], THRESHOLD)
                    pdr[cfg] = {"pdr_pps": res.pdr_pps, "trials": res.trials}
                    print(f"# PDR {cfg}: {res.pdr_pps:.0f}", file=sys.stderr)
        finally:
            subprocess.run(
                [CLI, "down", str(args.intent), "--state-dir", state],
                capture_output=True, check=False,
            )  # fmt: skip


def analyse(args, rates, raw, pdr, t0) -> None:  # type: ignore[no-untyped-def]
    """Tables, fits, goal, cost model and plots from the raw runs."""
    # -- per rate table ----------------------------------------------------------------
    print(f"## S(R) and U(R): UDP {args.payload} B payload, all-IPv6, {args.runs} runs of "
          f"{args.seconds:g} s per rate, mean ± 95% CI; U in % of one core (2 cores: 0-200)"
          f"{'' if args.no_pin else '; generator on CPU 0, sink on CPU 1'}\n")  # fmt: skip
    print("| config | R offered pps | R achieved pps | S % | U busy % | U softirq % "
          "| generator % | sink % | softirq µs/packet |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    busy_pts: dict[str, list[RatePoint]] = {}
    soft_pts: dict[str, list[RatePoint]] = {}
    proc_pts: dict[str, list[RatePoint]] = {}
    for cfg in CONFIGS:
        busy_pts[cfg], soft_pts[cfg], proc_pts[cfg] = [], [], []
        for rate in rates:
            rs = [r for r in raw[cfg] if r["offered"] == rate]
            if not rs:
                continue
            b, s, q = RatePoint(rate), RatePoint(rate), RatePoint(rate)
            for r in rs:
                b.add(r)
                s.add({**r, "cpu_busy_pct": r["cpu_softirq_pct"]})
                q.add({**r, "cpu_busy_pct": r["cpu_generator_pct"] + r["cpu_sink_pct"]})
            busy_pts[cfg].append(b)
            soft_pts[cfg].append(s)
            proc_pts[cfg].append(q)
            per_pkt = [1e4 * r["cpu_softirq_pct"] / r["rate_pps"] for r in rs if r["rate_pps"]]
            cols = [ci([r[k] for r in rs]) for k in ("cpu_busy_pct", "cpu_softirq_pct")]
            cols += [ci([r[k] for r in rs]) for k in ("cpu_generator_pct", "cpu_sink_pct")]
            print(
                f"| {cfg} | {rate:.0f} | {ci([r['rate_pps'] for r in rs], 0)} | "
                f"{ci([100 * (1 - r['loss']) for r in rs], 2)} | " + " | ".join(cols)
                + f" | {ci(per_pkt, 2)} |"
            )  # fmt: skip
    print()

    # -- fits ------------------------------------------------------------------------------
    measures = {"process": proc_pts, "softirq": soft_pts, "busy": busy_pts}
    fits = {
        ms: {c: no_loss_fit(pts[c], THRESHOLD) for c in CONFIGS} for ms, pts in measures.items()
    }
    print("## U = m R + k on the no-loss region (S >= 99.5 %, offered rate reached)\n")
    print("U measures: process = generator + sink CPU (their /proc/PID/stat; carries the path's")
    print("softirq, which runs in the sender's context, and not other sessions' load);")
    print("softirq = the machine's softirq share; busy = the whole machine (seed 002's U).\n")
    print("| config | measure | m %/kpps | k % | R² | no-loss rates | PDR pps (0.5 % loss) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for cfg in CONFIGS:
        good = [
            p.rate_pps for p in busy_pts[cfg]
            if statistics.fmean(p.success) >= THRESHOLD and p.reached
        ]  # fmt: skip
        span = f"{min(good) / 1000:g}-{max(good) / 1000:g}k ({len(good)})" if good else "-"
        p = pdr.get(cfg)
        pdr_s = f"{p['pdr_pps']:.0f}" if isinstance(p, dict) else "-"
        for ms in measures:
            f = fits[ms][cfg]
            cols = ["-"] * 3 if f is None else [f"{f[0] * 1000:.3f}", f"{f[1]:.1f}", f"{f[2]:.3f}"]
            print(f"| {cfg} | {ms} | " + " | ".join(cols) + f" | {span} | {pdr_s} |")
    print()

    # -- goal and cost model ---------------------------------------------------------------
    def m(measure: str, cfg: str) -> float:
        f = fits[measure][cfg]
        return math.nan if f is None else f[0] * 1000

    for measure in measures:
        mp, ma, mu = (m(measure, c) for c in CONFIGS)
        ratio = mu / ma if ma else math.nan
        tag = (
            " (sweep fit; the goal's measure is the per-packet cost)"
            if measure == "process"
            else ""
        )
        print(f"- {measure}{tag}: m plain {mp:.3f}, SR-aware {ma:.3f}, SR-unaware {mu:.3f} "
              f"%/kpps; m_unaware/m_aware = {ratio:.3f}; "
              f"m_aware/m_plain = {ma / mp:.3f}, m_unaware/m_plain = {mu / mp:.3f}")  # fmt: skip
        # Seed 002's model for the NFV node with n = 1: SR-aware 3f, SR-unaware d + 3f + e.
        # Path differences here (see the module docstring): aware - plain = 4 forwardings
        # (gateway b -> NFV node -> function -> NFV node -> gateway b) + (SRv6 encap/decap -
        # VXLAN encap/decap, taken as ~0); unaware - aware = d + e.
        f_est = (ma - mp) / 4
        de = mu - ma
        ok = f_est > 0
        print(f"  cost model: f ~ (m_aware - m_plain)/4 = {f_est:.3f} %/kpps; d + e = "
              f"m_unaware - m_aware = {de:.3f} %/kpps = {de / f_est if ok else math.nan:.2f} f; "
              f"NFV node unaware/aware (d+3f+e)/3f = "
              f"{(de + 3 * f_est) / (3 * f_est) if ok else math.nan:.2f}")  # fmt: skip
    print()

    # -- plots -----------------------------------------------------------------------------
    paths = list(plot_rate_curves(busy_pts, args.out / "rate-busy.png", THRESHOLD,
                                  title="NFV node, machine busy:"))  # fmt: skip
    for ms in ("softirq", "process"):
        paths.append(plot_rate_curves(measures[ms], args.out / f"rate-{ms}.png", THRESHOLD,
                                      title=f"NFV node, {ms}:")[1])  # fmt: skip
        (args.out / f"rate-{ms}-success.png").unlink(missing_ok=True)  # same as busy's
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, cfg in enumerate(CONFIGS):
        pts = busy_pts[cfg]
        ach = [mean_ci(p.achieved_pps) for p in pts]
        ax.errorbar([p.rate_pps / 1000 for p in pts], [a / 1000 for a, _ in ach],
                    yerr=[0 if math.isnan(h) else h / 1000 for _, h in ach],
                    marker="o", capsize=4, color=f"C{i}", label=cfg)  # fmt: skip
    top = max(rates) / 1000
    ax.plot([0, top], [0, top], ":", color="grey", label="achieved = offered")
    ax.set_xlabel("offered rate R [kpacket/s]")
    ax.set_ylabel("achieved rate [kpacket/s]")
    ax.set_title("Generator's achieved rate (a slow path slows the sender)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "rate-achieved.png", dpi=110)
    plt.close(fig)
    paths.append(args.out / "rate-achieved.png")
    print("Plots: " + ", ".join(str(p) for p in paths))
    print(f"total {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_cgen"]:
        a = sys.argv[2:]
        _cgen_main(a[0], int(a[1]), float(a[2]), float(a[3]), int(a[4]), int(a[5]))
    else:
        main()
