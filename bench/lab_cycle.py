"""Times of `up`, a no-change `up` and `down` for an example (default: the 7-site
aws-regions), through the CLI as a user runs it, per transport. Needs root.

Goals (issue 5, 7-site example): no slower than version 0.1.0 (up about 2 s, no-change
up < 1 s, down < 1 s). To compare with another version in the same run (the machine is
noisy: compare within one run), check it out and pass its source tree; the two are run
interleaved, round by round:

    git worktree add /tmp/pn-old 4caadb6
    python bench/lab_cycle.py --baseline-src /tmp/pn-old/src

    python bench/lab_cycle.py [--intent examples/aws-regions.yaml] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def cli(src: Path | None, *args: str) -> float:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from polynimbus.cli import main; main()", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    return time.perf_counter() - t


def med(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intent", type=Path, default=ROOT / "examples" / "aws-regions.yaml")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--baseline-src", type=Path, help="another version's src/ to time in the same run"
    )
    args = ap.parse_args()
    base = yaml.safe_load(args.intent.read_text())
    n_sites = len(base["sites"])
    n_nodes = 1 + n_sites + sum(len(s.get("hosts", [])) for s in base["sites"])
    print(
        f"{args.intent.name}: {n_sites} sites, {n_nodes} namespaces; seconds, "
        f"median of {args.repeat} (CLI process start included)"
    )
    versions: list[tuple[str, Path | None]] = [("this", None)]
    if args.baseline_src:
        versions.insert(0, ("baseline", args.baseline_src))
    print(f"{'version':9} {'transport':10} {'up':>7} {'no-change up':>13} {'down':>7}")
    for transport in ("wireguard", "vxlan"):
        data = dict(
            base,
            name=f"bench-{transport[:2]}",
            overlay={**base.get("overlay", {}), "transport": transport},
        )
        times: dict[str, tuple[list[float], list[float], list[float]]] = {
            v: ([], [], []) for v, _ in versions
        }
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "intent.yaml"
            path.write_text(yaml.safe_dump(data))
            for _ in range(args.repeat):
                for label, src in versions:
                    sdir = ["--state-dir", str(Path(tmp) / f"state-{label}")]
                    ups, again, downs = times[label]
                    try:
                        ups.append(cli(src, "up", str(path), *sdir))
                        again.append(cli(src, "up", str(path), *sdir))
                    finally:
                        downs.append(cli(src, "down", str(path), *sdir))
        for label, _ in versions:
            ups, again, downs = times[label]
            print(f"{label:9} {transport:10} {med(ups):7.2f} {med(again):13.2f} {med(downs):7.2f}")


if __name__ == "__main__":
    main()
