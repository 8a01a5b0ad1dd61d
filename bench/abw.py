"""Available bandwidth with SLoPS (``polynimbus abw``, issue 9) against a shaped lab's ground
truth. Needs root.

For each capacity C (``--capacities``, Mbit/s) a two-site lab ``ab-bench-C``: site ``b``'s
internet link is shaped to C (``underlay: {rate: ...}``, tbf), site ``a``'s is not. For
each load u (``--loads``), constant-rate UDP cross traffic (iperf3 ``-u -b``, 1400-byte
datagrams, 100 µs pacing timer, SCHED_FIFO so that the prober's busy-waiting sender on this
2-core machine does not make it bursty) runs from a's gateway to b's public address through
the tight link (the internet router's shaped port towards b), and ``--runs`` estimates of
``abw a b --channel underlay`` are made while it runs.

Ground truth: the link carries C bit/s of Ethernet frames; the cross traffic takes
X = b · (1400 + 42) / 1400 of them (b: iperf3's payload rate; 42 bytes of UDP, IP and
Ethernet headers); the probes' IP-layer available bandwidth is
A = (C − X) · P / (P + 14), P the probes' IP size. Error = |middle of the range − A| / A.

Reference bytes: one 10 s iperf3 TCP test a -> b on the same path under the same load, and
one without load (the path's capacity).

Every lab and process this script makes is removed at the end, also on failure or Ctrl-C.

    python bench/abw.py [--capacities 50,100] [--loads 0.2,0.5,0.8] [--runs 10] [--json F]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from polynimbus import names
from polynimbus.intent import load_intent_text
from polynimbus.orchestrate import lab_down, lab_up
from polynimbus.plan import build_plan
from polynimbus.plan.model import Plan
from polynimbus.verify.abw import estimate

CROSS_PAYLOAD = 1400
"""Cross traffic's UDP payload, bytes."""
CROSS_PORT = 5201
REF_PORT = 5202
GOAL_ERROR = 0.10


def intent(capacity_mbit: int) -> str:
    return f"""name: ab-bench-{capacity_mbit}
sites:
  - name: a
    provider: aws
    hosts: [h1]
  - name: b
    provider: azure
    hosts: [h1]
    underlay: {{rate: {capacity_mbit}mbit}}
"""


def ns_run(ns: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


class Path2:
    """The measured path of one lab: a's gateway to b's public address."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.a = names.gateway_ns(plan.name, "a")
        self.b = names.gateway_ns(plan.name, "b")
        self.src = plan.site("a").public_address
        self.dst = plan.site("b").public_address
        self.procs: list[subprocess.Popen[str]] = []

    def open_ports(self) -> None:
        for port in (CROSS_PORT, REF_PORT):
            element = f"{{ {self.src} . {port} timeout 3600s }}"
            res = ns_run(
                self.b, "nft", "add", "element", "inet", "polynimbus", "underlay_probe", element
            )
            if res.returncode:
                raise RuntimeError(f"nft: {res.stderr}")
        for port in (CROSS_PORT, REF_PORT):
            self.procs.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        self.b,
                        "iperf3",
                        "-s",
                        "-B",
                        self.dst,
                        "-p",
                        str(port),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        time.sleep(0.5)

    def cross(self, bps: float) -> subprocess.Popen[str]:
        """Start constant-rate UDP cross traffic of ``bps`` payload bit/s (until stopped)."""
        argv = ["ip", "netns", "exec", self.a, "chrt", "-f", "20", "iperf3", "-c", self.dst]
        argv += ["-p", str(CROSS_PORT), "-u", "-b", str(int(bps)), "-l", str(CROSS_PAYLOAD)]
        argv += ["--pacing-timer", "100", "-t", "3600"]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        time.sleep(1.0)
        return p

    def tcp_bytes(self, seconds: int = 10) -> tuple[int, float]:
        """One iperf3 TCP test a -> b: bytes sent and received bit/s."""
        res = ns_run(
            self.a,
            "iperf3",
            "-c",
            self.dst,
            "-p",
            str(REF_PORT),
            "-t",
            str(seconds),
            "-J",
            timeout=seconds + 30,
        )
        end = json.loads(res.stdout)["end"]
        return int(end["sum_sent"]["bytes"]), float(end["sum_received"]["bits_per_second"])

    def stop(self, p: subprocess.Popen[str] | None = None) -> None:
        for q in [p] if p is not None else list(self.procs):
            if q.poll() is None:
                q.terminate()
                try:
                    q.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    q.kill()
                    q.wait()
            if q in self.procs:
                self.procs.remove(q)


def truth(capacity_bps: float, cross_bps: float, packet_bytes: int) -> float:
    cross_l2 = cross_bps * (CROSS_PAYLOAD + 42) / CROSS_PAYLOAD
    return (capacity_bps - cross_l2) * packet_bytes / (packet_bytes + 14)


def bench_capacity(cap: int, loads: list[float], runs: int, rows: list[dict]) -> None:
    text = intent(cap)
    it = load_intent_text(text)
    plan = build_plan(it)
    with tempfile.TemporaryDirectory() as tmp:
        sdir = Path(tmp) / "state"
        lab_up(it, sdir)
        path = Path2(plan)
        try:
            path.open_ports()
            unloaded_bytes, unloaded_bps = path.tcp_bytes()
            print(
                f"C={cap} Mbit/s: iperf3 10 s unloaded {unloaded_bytes / 1e6:.1f} MB "
                f"({unloaded_bps / 1e6:.1f} Mbit/s)",
                flush=True,
            )
            for u in loads:
                cross_bps = u * cap * 1e6 * CROSS_PAYLOAD / (CROSS_PAYLOAD + 42)
                p = path.cross(cross_bps)
                try:
                    loaded_bytes, loaded_bps = path.tcp_bytes()
                    for i in range(runs):
                        r = estimate(plan, "a", "b", "underlay")
                        a = truth(cap * 1e6, cross_bps, r.packet_bytes)
                        err = abs(r.estimate_bps - a) / a
                        row = {
                            "capacity_mbit": cap,
                            "load": u,
                            "run": i,
                            "truth_bps": a,
                            "error": err,
                            "iperf3_bytes_loaded": loaded_bytes,
                            "iperf3_bytes_unloaded": unloaded_bytes,
                            **r.to_dict(),
                        }
                        rows.append(row)
                        print(
                            f"  u={u:.0%} run {i}: {r.low_bps / 1e6:.1f}-{r.high_bps / 1e6:.1f} "
                            f"truth {a / 1e6:.1f} err {err:.1%} {r.seconds:.1f} s "
                            f"{r.bytes_sent / 1e3:.0f} kB fleets {r.fleets} "
                            f"disc {r.streams_discarded} conv {r.converged}",
                            flush=True,
                        )
                finally:
                    path.stop(p)
        finally:
            path.stop()
            lab_down(plan.name, sdir)


def summary(rows: list[dict]) -> str:
    out = [
        "| C Mbit/s | load | truth Mbit/s | within 10 % | median error | max error | "
        "median s | max s | median kB | / iperf3 10 s loaded | / unloaded | converged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["capacity_mbit"], r["load"]) for r in rows})
    for cap, u in keys:
        rs = [r for r in rows if r["capacity_mbit"] == cap and r["load"] == u]
        errs = [r["error"] for r in rs]
        secs = [r["seconds"] for r in rs]
        kb = [r["bytes_sent"] for r in rs]
        out.append(
            f"| {cap} | {u:.0%} | {statistics.median(r['truth_bps'] for r in rs) / 1e6:.1f} | "
            f"{sum(e <= GOAL_ERROR for e in errs)}/{len(rs)} | {statistics.median(errs):.1%} | "
            f"{max(errs):.1%} | {statistics.median(secs):.1f} | {max(secs):.1f} | "
            f"{statistics.median(kb) / 1e3:.0f} | "
            f"{max(kb) / rs[0]['iperf3_bytes_loaded']:.1%} (max) | "
            f"{max(kb) / rs[0]['iperf3_bytes_unloaded']:.1%} (max) | "
            f"{sum(r['converged'] for r in rs)}/{len(rs)} |"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capacities", default="50,100")
    ap.add_argument("--loads", default="0.2,0.5,0.8")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    caps = [int(c) for c in args.capacities.split(",")]
    loads = [float(u) for u in args.loads.split(",")]
    rows: list[dict] = []
    started = dt.datetime.now(dt.UTC)
    try:
        for cap in caps:
            bench_capacity(cap, loads, args.runs, rows)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{started:%Y-%m-%d %H:%M} UTC, {' '.join(sys.argv)}")
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
