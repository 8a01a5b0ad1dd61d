"""Plan time and peak memory for a generated N-site intent (default 1,000), per topology.

Each measurement runs in a fresh process, so peak RSS is the plan's own.
Goal (issue 2): under 1 s and under 200 MB peak memory for 1,000 sites.

    python bench/plan_scale.py [--sites N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, random, resource, sys, time, tracemalloc
from polynimbus.intent.models import Intent
from polynimbus.plan import build_plan
n, topology = int(sys.argv[1]), sys.argv[2]
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
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
intent = Intent.model_validate(data)
t1 = time.perf_counter()
tracemalloc.start()
plan = build_plan(intent)
t2 = time.perf_counter()
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
routes = sum(len(p.reaches) for s in plan.sites for p in s.peers)
print(json.dumps({"validate_s": t1 - t0, "plan_s": t2 - t1, "traced_peak_mb": peak / 2**20,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tunnels": len(plan.tunnels), "routes": routes}))
"""


def measure(n: int, topology: str) -> dict[str, float]:
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), topology], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(
        f"plan of a generated {args.sites}-site intent (2 hosts per site), best of "
        f"{args.repeat}; plan time excludes loading/validating the intent"
    )
    print(
        f"{'topology':10} {'plan s':>8} {'validate s':>10} {'traced peak MB':>15} "
        f"{'max RSS MB':>11} {'tunnels':>8} {'routes':>9}"
    )
    for topology in ("mst", "hub", "full-mesh"):
        runs = [measure(args.sites, topology) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["plan_s"])
        print(
            f"{topology:10} {best['plan_s']:8.3f} {best['validate_s']:10.3f} "
            f"{best['traced_peak_mb']:15.1f} {max(r['maxrss_mb'] for r in runs):11.1f} "
            f"{best['tunnels']:8d} {best['routes']:9d}"
        )


if __name__ == "__main__":
    main()
