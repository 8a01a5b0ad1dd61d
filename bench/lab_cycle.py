"""Times of `up`, a no-change `up` and `down` for an example (default: the 7-site
aws-regions), through the CLI as a user runs it, per transport. Needs root.

Goals (issue 2, 7-site example): up < 30 s, no-change up < 2 s, down < 15 s.

    python bench/lab_cycle.py [--intent examples/aws-regions.yaml] [--repeat R]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from polynimbus.cli import main; main()", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intent", type=Path, default=ROOT / "examples" / "aws-regions.yaml")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    base = yaml.safe_load(args.intent.read_text())
    n_sites = len(base["sites"])
    n_nodes = 1 + n_sites + sum(len(s.get("hosts", [])) for s in base["sites"])
    print(
        f"{args.intent.name}: {n_sites} sites, {n_nodes} namespaces; seconds, "
        f"median of {args.repeat} (CLI process start included)"
    )
    print(f"{'transport':10} {'up':>7} {'no-change up':>13} {'down':>7}")
    for transport in ("wireguard", "vxlan"):
        data = dict(
            base,
            name=f"bench-{transport[:2]}",
            overlay={**base.get("overlay", {}), "transport": transport},
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "intent.yaml"
            path.write_text(yaml.safe_dump(data))
            sdir = ["--state-dir", str(Path(tmp) / "state")]
            ups, again, downs = [], [], []
            for _ in range(args.repeat):
                try:
                    ups.append(cli("up", str(path), *sdir))
                    again.append(cli("up", str(path), *sdir))
                finally:
                    downs.append(cli("down", str(path), *sdir))

        def med(xs: list[float]) -> float:
            return sorted(xs)[len(xs) // 2]

        print(f"{transport:10} {med(ups):7.2f} {med(again):13.2f} {med(downs):7.2f}")


if __name__ == "__main__":
    main()
