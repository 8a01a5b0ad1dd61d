"""Tenant overlay vs provider overlay throughput, and move downtime (issue 7). Needs root.

1. One TCP flow (iperf3), host to host between two sites, interleaved round by round over
   the same tunnel: a site host to a site host (the provider overlay), a tenant host to a
   tenant host of another site routed through the tenant's routers (VXLAN transit inside
   the tunnel, stacked MTU), and two hosts of one stretched network (layer 2 in VXLAN).
   Goal: tenant / provider >= 0.9.
2. ``--moves N`` live moves of one host back and forth between the two sites, each with
   its downtime seen by a 10 ms ping from its network's other host. Goal: below 1 s;
   median and maximum reported.

    python bench/tenants.py [--transport wireguard] [--rounds 5] [--seconds 3] [--moves 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from polynimbus import names
from polynimbus.intent import load_intent_text
from polynimbus.move import move_host
from polynimbus.orchestrate import lab_down, lab_up

INTENT = """name: {name}
overlay: {{topology: full-mesh, transport: {transport}}}
sites:
  - {{name: a, provider: aws, hosts: [h]}}
  - {{name: b, provider: azure, hosts: [h]}}
tenants:
  - name: t
    networks:
      - {{name: na, subnet: 192.168.1.0/24, sites: [a], hosts: [a/x]}}
      - {{name: nb, subnet: 192.168.2.0/24, sites: [b], hosts: [b/y]}}
      - {{name: l2, subnet: 172.16.0.0/24, sites: [a, b], hosts: [a/p, b/q]}}
"""


def iperf(src_ns: str, dst_ns: str, dst: str, seconds: int) -> float:
    """One TCP flow from ``src_ns`` to ``dst`` (a server in ``dst_ns``), bit/s."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", dst_ns, "iperf3", "-s", "-1", "-p", "5411"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        res = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                src_ns,
                "iperf3",
                "-c",
                dst,
                "-p",
                "5411",
                "-t",
                str(seconds),
                "-O",
                "1",
                "-J",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        )
        doc = json.loads(res.stdout)
        return float(doc["end"]["sum_received"]["bits_per_second"])
    finally:
        server.kill()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transport", default="wireguard")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--moves", type=int, default=10)
    args = ap.parse_args()
    lab = "bten"
    intent = load_intent_text(INTENT.format(name=lab, transport=args.transport))
    with tempfile.TemporaryDirectory() as tmp:
        sdir = Path(tmp) / "state"
        try:
            lab_up(intent, sdir)
            ns = {
                "provider": (
                    names.host_ns(lab, "a", "h"),
                    names.host_ns(lab, "b", "h"),
                    "10.2.0.1",
                ),
                "tenant routed": (
                    names.tenant_host_ns(lab, "a", "t", "x"),
                    names.tenant_host_ns(lab, "b", "t", "y"),
                    "192.168.2.1",
                ),
                "tenant layer 2": (
                    names.tenant_host_ns(lab, "a", "t", "p"),
                    names.tenant_host_ns(lab, "b", "t", "q"),
                    "172.16.0.2",
                ),
            }
            got: dict[str, list[float]] = {k: [] for k in ns}
            ratios: dict[str, list[float]] = {k: [] for k in ns if k != "provider"}
            print(
                f"{time.strftime('%Y-%m-%d')}: one TCP flow a -> b, {args.seconds} s each, "
                f"{args.rounds} interleaved rounds, {args.transport}"
            )
            for _ in range(args.rounds):
                this = {k: iperf(s, d, addr, args.seconds) for k, (s, d, addr) in ns.items()}
                for k, v in this.items():
                    got[k].append(v)
                for k in ratios:
                    ratios[k].append(this[k] / this["provider"])
            for k, vs in got.items():
                line = (
                    f"{k:15} median {statistics.median(vs) / 1e6:7.0f} Mbit/s "
                    f"(range {min(vs) / 1e6:.0f}-{max(vs) / 1e6:.0f})"
                )
                if k in ratios:
                    r = ratios[k]
                    line += (
                        f"; / provider: median {statistics.median(r):.2f} "
                        f"(range {min(r):.2f}-{max(r):.2f})"
                    )
                print(line)
            if args.moves:
                downs = []
                cur = intent
                where = "a"
                for _ in range(args.moves):
                    to = "b" if where == "a" else "a"
                    res = move_host(cur, f"t:{where}/p", to, sdir)
                    assert res.downtime_ms is not None, "no replies to the probe"
                    downs.append(res.downtime_ms)
                    cur, where = res.intent, to
                print(
                    f"{args.moves} moves of t:p between a and b: downtime median "
                    f"{statistics.median(downs):.0f} ms, max {max(downs):.0f} ms "
                    f"(all: {', '.join(f'{d:.0f}' for d in downs)})"
                )
        finally:
            lab_down(lab, sdir)


if __name__ == "__main__":
    main()
