"""Overlay/underlay throughput ratio per transport, measured in the same run.

For each transport a two-site lab is built; each round runs one TCP flow (iperf3) host to
host through the tunnel, then gateway to gateway over the emulated internet without a
tunnel, and reports their ratio. Needs root. Goal for VXLAN (issue 2): ratio >= 0.8.

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
from polynimbus.verify.throughput import measure_pairs

INTENT = """name: {name}
overlay: {{topology: full-mesh, transport: {transport}}}
sites:
  - {{name: a, provider: aws, hosts: [h]}}
  - {{name: b, provider: azure, hosts: [h]}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    print(f"one TCP flow, {args.seconds:g} s each, {args.rounds} rounds; Gbit/s")
    print(
        f"{'transport':10} {'overlay':>8} {'underlay':>9} {'ratio median':>13} {'ratio range':>14}"
    )
    for transport in ("vxlan", "wireguard"):
        name = f"bench-tp-{transport[:2]}"
        intent = load_intent_text(INTENT.format(name=name, transport=transport))
        plan = build_plan(intent)
        with tempfile.TemporaryDirectory() as tmp:
            sdir = Path(tmp) / "state"
            try:
                lab_up(intent, sdir)
                results = [measure_pairs(plan, args.seconds)[0] for _ in range(args.rounds)]
            finally:
                lab_down(name, sdir)
        ratios = [r.ratio for r in results if r.ratio]
        print(
            f"{transport:10} {statistics.median(r.overlay_bps for r in results) / 1e9:8.2f} "
            f"{statistics.median(r.underlay_bps for r in results) / 1e9:9.2f} "
            f"{statistics.median(ratios):13.3f} {min(ratios):6.3f}-{max(ratios):.3f}"
        )


if __name__ == "__main__":
    main()
