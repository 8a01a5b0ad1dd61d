"""Failover of a cut tunnel (issue 9): how long traffic stops, over many trials. Needs root.

A three-site lab (``bn-fo``, ``overlay.failover: true``) with a ping every 10 ms from
``a/h1`` to ``b/h1`` and one iperf3 TCP flow between them. Each trial cuts the internet
path between the gateways of ``a`` and ``b`` (``polynimbus cut``), waits, heals it, waits
for the traffic to move back, and reads:

- the ping's longest gap at the cut (failover) and at the heal (failback), ms: the time
  between two consecutive answers (:mod:`polynimbus.verify.gaps`);
- how long the agents took to log the failover after the cut (events), ms;
- whether the TCP flow carried bytes in every second of the trial.

With ``--gateway``, the lab is ``g2-bench`` (site ``b`` has ``gateways: 2``) and each
trial kills b's active gateway instead (``polynimbus kill``: every process SIGKILLed,
every link down), waits, and revives it (``polynimbus up``), reading:

- the ping's longest gap at the death (the standby takes over) and at the revival (the
  primary takes the address back 1.5 s after it returns), ms;
- how long after the death the standby logged its takeover, ms;
- whether the TCP flow carried bytes in every second of the trial.

Prints one line per trial, then median and maximum. The lab is removed at the end, also on
failure or Ctrl-C; nothing else is touched.

    python bench/failover.py [--trials 10] [--hold 2.0] [--gateway]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from polynimbus import names
from polynimbus.events import read_events
from polynimbus.intent import load_intent_text
from polynimbus.orchestrate import lab_down, lab_up
from polynimbus.plan import build_plan
from polynimbus.targets.lab import faults
from polynimbus.verify.gaps import FastPing

INTENT = """name: bn-fo
overlay: {failover: true}
sites:
  - {name: a, provider: aws, hosts: [h1]}
  - {name: b, provider: azure, hosts: [h1]}
  - {name: c, provider: openstack, hosts: [h1]}
"""


INTENT_GATEWAY = """name: g2-bench
overlay: {failover: true}
sites:
  - {name: a, provider: aws, hosts: [h1]}
  - {name: b, provider: azure, hosts: [h1], gateways: 2}
  - {name: c, provider: openstack, hosts: [h1]}
"""


def holds(ns: str, address: str) -> bool:
    res = subprocess.run(
        ["ip", "-n", ns, "-o", "addr", "show", "to", f"{address}/32"],
        capture_output=True,
        text=True,
    )
    return address in res.stdout


def wait_until(cond, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def start_flow(
    src: str, dst: str, address: str, seconds: int
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[str]]:
    """An iperf3 server in namespace ``dst`` and a TCP flow paced at 100 Mbit/s to it from
    ``src`` for ``seconds`` (JSON on the client's stdout): ``(server, client)``."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", dst, "iperf3", "-s", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    client = subprocess.Popen(
        ["ip", "netns", "exec", src, "iperf3", "-c", address]
        + ["-t", str(seconds), "-b", "100M", "-J"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return server, client


def gateway_trial(intent, plan, sdir: Path, hold: float) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """One death and revival of b's active gateway under a ping and a TCP flow."""
    b = plan.site("b")
    primary = names.gateway_ns(plan.name, "b")
    src = names.host_ns(plan.name, "a", "h1")
    dst = names.host_ns(plan.name, "b", "h1")
    seconds = int(2 * hold + 6)
    server, client = start_flow(src, dst, b.hosts[0].address, seconds)
    try:
        started = time.time()
        time.sleep(0.5)
        ping = FastPing(src, b.hosts[0].address)
        time.sleep(0.5)
        killed_at = time.time()
        faults.kill_node(primary)
        time.sleep(hold)
        death = ping.stop()
        ping = FastPing(src, b.hosts[0].address)
        up_at = time.monotonic()
        lab_up(intent, sdir)
        up_s = time.monotonic() - up_at
        wait_until(lambda: holds(primary, b.gateway_address), 5)
        revived_at = time.time()
        time.sleep(hold)
        revival = ping.stop()
        out, _ = client.communicate(timeout=seconds + 30)
    finally:
        server.kill()
        server.wait()
    events = [e for e in read_events(sdir, since=killed_at) if e["kind"] == "takeover"]
    takeover = [e["ts"] for e in events if e.get("peer") == "gateway-2"]
    detect = (min(takeover) - killed_at) * 1000 if takeover else None
    try:
        intervals = [i["sum"] for i in json.loads(out)["intervals"]]
    except (ValueError, KeyError):
        intervals = []
    per_second = [i["bytes"] for i in intervals]
    silent = [f"{i['start']:.1f}-{i['end']:.1f} s" for i in intervals if not i["bytes"]]
    return {
        "killed_s": killed_at - started,
        "revived_s": revived_at - started,
        "silent": silent,
        "death_gap_ms": death.gap_ms,
        "revival_gap_ms": revival.gap_ms,
        "takeover_ms": detect,
        "up_s": up_s,
        "tcp_every_second": bool(per_second) and all(x > 0 for x in per_second),
        "tcp_mbit_s": [round(x * 8 / 1e6) for x in per_second],
    }


def trial(plan, sdir: Path, hold: float) -> dict[str, object]:  # type: ignore[no-untyped-def]
    a, b = plan.site("a"), plan.site("b")
    src = names.host_ns(plan.name, "a", "h1")
    dst = names.host_ns(plan.name, "b", "h1")
    seconds = int(2 * hold + 3)
    server, client = start_flow(src, dst, b.hosts[0].address, seconds)
    try:
        time.sleep(0.5)
        ping = FastPing(src, b.hosts[0].address)
        time.sleep(0.5)
        cut_at = time.time()
        faults.cut(plan.name, a.public_address, b.public_address)
        time.sleep(hold)
        before_heal = ping.stop()
        ping = FastPing(src, b.hosts[0].address)
        faults.heal(plan.name)
        time.sleep(hold)
        after_heal = ping.stop()
        out, _ = client.communicate(timeout=seconds + 20)
    finally:
        faults.heal(plan.name)
        server.kill()
        server.wait()
    events = [e for e in read_events(sdir, since=cut_at) if e["kind"] == "failover"]
    detect = (min(e["ts"] for e in events) - cut_at) * 1000 if events else None
    try:
        per_second = [i["sum"]["bytes"] for i in json.loads(out)["intervals"]]
    except (ValueError, KeyError):
        per_second = []
    return {
        "failover_gap_ms": before_heal.gap_ms,
        "failback_gap_ms": after_heal.gap_ms,
        "detect_ms": detect,
        "tcp_every_second": bool(per_second) and all(x > 0 for x in per_second),
        "tcp_mbit_s": [round(x * 8 / 1e6) for x in per_second],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--hold", type=float, default=2.0, help="seconds cut, then healed")
    ap.add_argument(
        "--gateway", action="store_true", help="kill and revive a site's active gateway"
    )
    args = ap.parse_args()
    if args.gateway:
        return main_gateway(args.trials, args.hold)
    intent = load_intent_text(INTENT)
    plan = build_plan(intent)
    with tempfile.TemporaryDirectory(prefix="pn-bench-fo-") as tmp:
        sdir = Path(tmp) / "state"
        try:
            lab_up(intent, sdir)
            time.sleep(2)  # the agents' first answers
            rows = []
            for i in range(args.trials):
                r = trial(plan, sdir, args.hold)
                rows.append(r)
                print(
                    f"trial {i + 1}: failover gap {r['failover_gap_ms']:.0f} ms, "
                    f"detected after {r['detect_ms']:.0f} ms, "
                    f"failback gap {r['failback_gap_ms']:.0f} ms, "
                    f"TCP every second: {r['tcp_every_second']} {r['tcp_mbit_s']} Mbit/s",
                    flush=True,
                )
                time.sleep(1.5)  # back on the direct tunnel (up after 1 s of answers)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            lab_down(plan.name, sdir)
    for key in ("failover_gap_ms", "failback_gap_ms", "detect_ms"):
        values = [float(r[key]) for r in rows if r[key] is not None]  # type: ignore[arg-type]
        print(
            f"{key}: median {statistics.median(values):.0f}, max {max(values):.0f} "
            f"over {len(values)} trials"
        )
    ok = sum(bool(r["tcp_every_second"]) for r in rows)
    print(f"TCP flow carried bytes every second in {ok} of {len(rows)} trials")
    return 0


def main_gateway(trials: int, hold: float) -> int:
    """``--gateway``: trials of the death and revival of b's active gateway."""
    intent = load_intent_text(INTENT_GATEWAY)
    plan = build_plan(intent)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pn-bench-g2-") as tmp:
        sdir = Path(tmp) / "state"
        try:
            lab_up(intent, sdir)
            time.sleep(2)  # the agents' first answers, keepalived's first master
            for i in range(trials):
                r = gateway_trial(intent, plan, sdir, hold)
                rows.append(r)
                print(
                    f"trial {i + 1}: death gap {r['death_gap_ms']:.0f} ms, "
                    f"takeover logged after {r['takeover_ms']:.0f} ms, "
                    f"revival gap {r['revival_gap_ms']:.0f} ms (up {r['up_s']:.1f} s), "
                    f"TCP every second: {r['tcp_every_second']} {r['tcp_mbit_s']} Mbit/s"
                    + (
                        f" (killed at {r['killed_s']:.1f} s, primary back at "
                        f"{r['revived_s']:.1f} s, silent {r['silent']})"
                        if r["silent"]
                        else ""
                    ),
                    flush=True,
                )
                time.sleep(1.0)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            lab_down(plan.name, sdir)
    for key in ("death_gap_ms", "revival_gap_ms", "takeover_ms"):
        values = [float(r[key]) for r in rows if r[key] is not None]  # type: ignore[arg-type]
        print(
            f"{key}: median {statistics.median(values):.0f}, max {max(values):.0f} "
            f"over {len(values)} trials"
        )
    ok = sum(bool(r["tcp_every_second"]) for r in rows)
    print(f"TCP flow carried bytes every second in {ok} of {len(rows)} trials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
