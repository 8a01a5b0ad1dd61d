"""Overlay/underlay throughput ratio per transport and underlay MTU, in one interleaved run.

For each variant a two-site lab is built; each round runs, for every variant in turn, one
TCP flow (iperf3) host to host through the tunnel, then gateway to gateway over the
emulated internet without a tunnel, and takes their ratio. Needs root.

Goal (issue 5): VXLAN >= 0.85 with the default 1500-byte underlay. The 1550-byte variant
sets the intent's ``underlay_mtu`` so the tunnel carries 1500-byte packets, which shows
how much of the gap is per-packet cost (see docs/benchmarks.md and
``bench/vxlan_breakdown.py`` for the breakdown).

    python bench/throughput_ratio.py [--rounds R] [--seconds S]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from polynimbus.intent import load_intent_text
from polynimbus.orchestrate import lab_down, lab_up
from polynimbus.plan import build_plan
from polynimbus.verify.throughput import ThroughputResult, measure_pairs

INTENT = """name: {name}
overlay: {{topology: full-mesh, transport: {transport}, underlay_mtu: {mtu}}}
sites:
  - {{name: a, provider: aws, hosts: [h]}}
  - {{name: b, provider: azure, hosts: [h]}}
"""

VARIANTS = [("vxlan", 1500), ("vxlan", 1550), ("wireguard", 1500)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()
    print(f"one TCP flow, {args.seconds} s each, {args.rounds} interleaved rounds; Gbit/s")
    print(
        f"{'transport':10} {'MTU':>5} {'overlay':>8} {'underlay':>9} {'ratio median':>13} "
        f"{'ratio range':>14}"
    )
    labs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for transport, mtu in VARIANTS:
                name = f"bench-tp-{transport[:2]}-{mtu}"
                intent = load_intent_text(INTENT.format(name=name, transport=transport, mtu=mtu))
                sdir = Path(tmp) / name
                labs.append((transport, mtu, name, sdir, build_plan(intent)))
                lab_up(intent, sdir)
            results: dict[str, list[ThroughputResult]] = {name: [] for _, _, name, _, _ in labs}
            for _ in range(args.rounds):
                for _, _, name, _, plan in labs:
                    results[name].append(measure_pairs(plan, args.seconds)[0])
        finally:
            for _, _, name, sdir, _ in labs:
                lab_down(name, sdir)
    for transport, mtu, name, _, _ in labs:
        rs = results[name]
        ratios = [r.ratio for r in rs if r.ratio]
        over = statistics.median(r.overlay_bps or 0 for r in rs) / 1e9
        under = statistics.median(r.underlay_bps or 0 for r in rs) / 1e9
        print(
            f"{transport:10} {mtu:5d} {over:8.2f} {under:9.2f} {statistics.median(ratios):13.3f} "
            f"{min(ratios):6.3f}-{max(ratios):.3f}"
        )


if __name__ == "__main__":
    main()
