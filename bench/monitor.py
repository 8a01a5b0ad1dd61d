"""Monitoring overhead: the CPU the monitor process uses to probe every path of a 50-site
lab once a second (issue 9 goal: < 5% of one core). Needs root.

Builds a lab of N sites (default 50, one host each, WireGuard full mesh) with
``polynimbus up``, runs ``polynimbus monitor`` on it (every gateway pair over the overlay
and the underlay: N*(N-1) paths, plus --hosts host pairs, one probe a second each), and
reads the monitor process's CPU time (user + system, /proc/PID/stat) over a steady
window after its start-up; also its probes and losses from /metrics. With --perf (and
perf installed), samples the process during the window and reports which share of its
CPU is the lab's emulated network: the packets' receive processing in the other
namespaces (softirq) that the kernel runs in the sender's context and charges to it.
Takes the lab down unless --keep (a kept lab is reused by the next run).

    python bench/monitor.py [--sites 50] [--window 60] [--interval 1] [--perf] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLYNIMBUS = Path(sys.executable).parent / "polynimbus"
TICK = os.sysconf("SC_CLK_TCK")


def intent(name: str, sites: int) -> str:
    body = "".join(
        f"  - name: s{i:02d}\n    provider: aws\n    hosts: [h1]\n" for i in range(sites)
    )
    return f"name: {name}\noverlay:\n  topology: full-mesh\n  transport: wireguard\nsites:\n{body}"


def cpu_s(pid: int) -> float:
    """User + system CPU time of process ``pid`` (its threads included), s."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def user_s(pid: int) -> float:
    """User CPU time of process ``pid``, s."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[11]) / TICK


PERF_PARTS = {
    "emulated network (softirq: other namespaces' receive work)": "handle_softirqs",
    "sendto (kernel send path, that softirq included)": "__sys_sendto",
    "recvmsg": "__sys_recvmsg",
}
"""perf symbols whose samples (children included) make up each part."""
PERF_DSOS = {"python interpreter (self)": "libpython", "sqlite (self)": "libsqlite3"}
"""Shared objects whose own samples make up each part."""


def perf_shares(data: Path) -> dict[str, float]:
    """Share of the samples under each of :data:`PERF_PARTS`' symbols and in each of
    :data:`PERF_DSOS`, %."""

    def report(*args: str) -> str:
        cmd = ["perf", "report", "-i", str(data), "--stdio", *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    text = report("--children", "--sort", "sym")
    out = {}
    for what, sym in PERF_PARTS.items():
        m = re.search(rf"^\s+([\d.]+)%\s+[\d.]+%\s+\[[.k]\] {re.escape(sym)}$", text, re.M)
        out[what] = float(m.group(1)) if m else 0.0
    dsos = report("--no-children", "--sort", "dso")
    for what, name in PERF_DSOS.items():
        out[what] = sum(
            float(m.group(1)) for m in re.finditer(rf"^\s+([\d.]+)%\s+{name}\S*\s*$", dsos, re.M)
        )
    return out


def scrape(url: str) -> tuple[float, float]:
    """Probes settled and lost, summed over every path."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    sent = sum(float(v) for v in re.findall(r"^polynimbus_probes_total\{.*\} (\S+)$", text, re.M))
    lost = sum(
        float(v) for v in re.findall(r"^polynimbus_probes_lost_total\{.*\} (\S+)$", text, re.M)
    )
    return sent, lost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=50)
    ap.add_argument("--window", type=float, default=60.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before the window")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--hosts", type=int, default=6)
    ap.add_argument("--name", default="mo-bench")
    ap.add_argument("--keep", action="store_true", help="leave the lab up (and reuse it)")
    ap.add_argument("--perf", action="store_true", help="break the CPU down with perf")
    a = ap.parse_args()

    tmp = Path(tempfile.gettempdir()) / f"pn-bench-{a.name}-{a.sites}"
    tmp.mkdir(exist_ok=True)
    path = tmp / f"{a.name}.yaml"
    path.write_text(intent(a.name, a.sites))
    sdir = tmp / "state"
    t = time.perf_counter()
    subprocess.run([POLYNIMBUS, "up", path, "--state-dir", sdir], check=True)
    print(f"up: {a.sites} sites in {time.perf_counter() - t:.1f} s", flush=True)
    proc = None
    try:
        proc = subprocess.Popen(
            [POLYNIMBUS, "monitor", path, "--state-dir", sdir, "--interval", str(a.interval),
             "--hosts", str(a.hosts), "--metrics", "127.0.0.1:0"],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert proc.stderr is not None
        line = proc.stderr.readline()
        print(line.strip(), flush=True)
        m = re.search(r"(\d+) paths .* metrics on (http://\S+)", line)
        assert m, line
        n_paths, url = int(m.group(1)), m.group(2)
        time.sleep(a.warmup)
        c0, w0, (s0, l0) = cpu_s(proc.pid), time.monotonic(), scrape(url)
        u0 = user_s(proc.pid)
        if a.perf:
            data = tmp / "perf.data"
            rec = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "-g"]
            subprocess.run(
                [*rec, "-p", str(proc.pid), "-o", data, "--", "sleep", str(a.window)],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        else:
            time.sleep(a.window)
        c1, w1, (s1, l1) = cpu_s(proc.pid), time.monotonic(), scrape(url)
        u1 = user_s(proc.pid)
        share = (c1 - c0) / (w1 - w0)
        rate = (s1 - s0) / (w1 - w0)
        print(
            f"monitor: {n_paths} paths every {a.interval:g} s: {rate:.0f} probes/s settled, "
            f"{l1 - l0:.0f} of {s1 - s0:.0f} lost; CPU {c1 - c0:.2f} s over {w1 - w0:.1f} s "
            f"= {100 * share:.2f}% of one core (goal < 5%); "
            f"{1e6 * (c1 - c0) / max(s1 - s0, 1):.1f} us per probe",
            flush=True,
        )
        print(
            f"  user {100 * (u1 - u0) / (w1 - w0):.2f}%, system "
            f"{100 * ((c1 - c0) - (u1 - u0)) / (w1 - w0):.2f}% of one core",
            flush=True,
        )
        if a.perf:
            for what, pct in perf_shares(tmp / "perf.data").items():
                print(
                    f"  perf: {what}: {pct:.1f}% of the samples = {share * pct:.2f}% of one core",
                    flush=True,
                )
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        print(f"monitor exit status {proc.returncode}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if not a.keep:
            subprocess.run([POLYNIMBUS, "down", path, "--state-dir", sdir], check=False)


if __name__ == "__main__":
    main()
