"""Plan time and memory for a generated N-site intent (default 1,000), per topology.

Goals (issue 5, 1,000 sites): MST and hub plans under 0.5 s; a full mesh under 3 s and
under 500 MB max RSS (a full mesh need not hold a million peer records as Python objects).

Each measurement runs in a fresh process, so the plan time includes what a CLI run pays
the first time (e.g. importing networkx for hub and mst routing) and max RSS is that of a
process which validated and planned once. Plan time and max RSS come from runs without
tracemalloc (tracing slows every allocation, imports included); "traced peak" (what the
plan allocates) and "traced s" (the plan time under tracing, as this script measured
before 2026-11-23) from one more, traced run. To compare with another version in the same
run (the machine is noisy: compare within one run), pass its source tree; the versions
are run interleaved, round by round:

    git worktree add /tmp/pn-old fd467fa
    python bench/plan_scale.py --baseline-src /tmp/pn-old/src

    python bench/plan_scale.py [--sites N] [--repeat R] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, random, resource, sys, time, tracemalloc
from polynimbus.intent.models import Intent
from polynimbus.plan import build_plan
n, topology, traced = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "trace"
rng = random.Random(42)
providers = ["aws", "azure", "openstack", "gcp", "onprem", "edge"]
sites = []
for i in range(n):
    sites.append({"name": f"site-{i:04d}", "provider": providers[i % 6],
                  "location": {"lat": rng.uniform(-60, 70), "lon": rng.uniform(-180, 180)},
                  "hosts": [f"vm-{j}" for j in range(2)]})
data = {"name": "bench", "overlay": {"topology": topology, "hub": "site-0000" if topology == "hub" else None}, "sites": sites}
if topology != "hub":
    del data["overlay"]["hub"]
t0 = time.perf_counter()
intent = Intent.model_validate(data)
t1 = time.perf_counter()
if traced:
    tracemalloc.start()
plan = build_plan(intent)
t2 = time.perf_counter()
peak = tracemalloc.get_traced_memory()[1] if traced else 0
tracemalloc.stop()
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
routes = sum(len(p.reaches) for s in plan.sites for p in s.peers)
print(json.dumps({"validate_s": t1 - t0, "plan_s": t2 - t1, "traced_peak_mb": peak / 2**20,
                  "maxrss_mb": maxrss, "tunnels": len(plan.tunnels), "routes": routes}))
"""


def measure(n: int, topology: str, mode: str, src: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), topology, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--baseline-src", type=Path, help="another version's src/ to measure in the same run"
    )
    args = ap.parse_args()
    versions: list[tuple[str, Path | None]] = [("this", None)]
    if args.baseline_src:
        versions.insert(0, ("baseline", args.baseline_src))
    print(
        f"plan of a generated {args.sites}-site intent (2 hosts per site), best of "
        f"{args.repeat} fresh processes; plan time excludes loading/validating the intent"
    )
    print(
        f"{'version':9} {'topology':10} {'plan s':>8} {'validate s':>10} {'traced s':>9} "
        f"{'traced peak MB':>15} {'max RSS MB':>11} {'tunnels':>8} {'routes':>9}"
    )
    for topology in ("mst", "hub", "full-mesh"):
        runs: dict[str, list[dict[str, float]]] = {v: [] for v, _ in versions}
        traces: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            for label, src in versions:
                runs[label].append(measure(args.sites, topology, "time", src))
        for label, src in versions:
            traces[label] = measure(args.sites, topology, "trace", src)
        for label, _ in versions:
            best = min(runs[label], key=lambda r: r["plan_s"])
            print(
                f"{label:9} {topology:10} {best['plan_s']:8.3f} {best['validate_s']:10.3f} "
                f"{traces[label]['plan_s']:9.3f} {traces[label]['traced_peak_mb']:15.1f} "
                f"{max(r['maxrss_mb'] for r in runs[label]):11.1f} "
                f"{best['tunnels']:8d} {best['routes']:9d}"
            )


if __name__ == "__main__":
    main()
