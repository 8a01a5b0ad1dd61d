"""Tenants at scale (issue 7): 100 tenants over 5 sites. Times of plan, `up`, a no-change
`up`, and adding one tenant host (an intent change applied by `up`, as the API's writes
are), through the CLI as a user runs it. Needs root.

Goals: plan < 1 s; up < 60 s; no-change up < 5 s; one host added through the API in < 2 s
(``serve`` on the lab, one POST timed from request to answer).

    python bench/tenant_scale.py [--tenants 100] [--sites 5] [--name tscale] [--keep]
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

PROVIDERS = ["openstack", "aws", "azure", "gcp", "onprem", "edge"]


def tenant_names(n: int) -> list[str]:
    """``n`` tenant names ``t0``, ``t1``, ... skipping any whose hashed id (15 bits) is
    taken by an earlier one (``t59`` has ``t1``'s), which validation would refuse."""
    from polynimbus.numbering import tenant_id

    names: list[str] = []
    ids: set[int] = set()
    i = 0
    while len(names) < n:
        tid = tenant_id(f"t{i}")
        if tid not in ids:
            ids.add(tid)
            names.append(f"t{i}")
        i += 1
    return names


def intent(n_tenants: int, n_sites: int, name: str = "tscale") -> dict:
    """``n_tenants`` tenants, each one network 192.168.1.0/24 (the same range for all)
    stretched over two neighbouring sites, one host on each; sites shaped to 1 Gbit/s,
    every tenant guaranteed a share."""
    sites = [
        {
            "name": f"s{i}",
            "provider": PROVIDERS[i % len(PROVIDERS)],
            "underlay": {"rate": "1gbit"},
            "hosts": [f"h{i}"],
        }
        for i in range(n_sites)
    ]
    rate = f"{max(1, 800 // max(1, n_tenants * 2 // n_sites))}mbit"
    tenants = []
    for t, tname in enumerate(tenant_names(n_tenants)):
        a, b = f"s{t % n_sites}", f"s{(t + 1) % n_sites}"
        tenants.append(
            {
                "name": tname,
                "rate": rate,
                "networks": [
                    {
                        "name": "net",
                        "subnet": "192.168.1.0/24",
                        "sites": [a, b],
                        "hosts": [f"{a}/x", f"{b}/y"],
                    }
                ],
            }
        )
    return {"name": name, "overlay": {"topology": "full-mesh"}, "sites": sites, "tenants": tenants}


def cli(*args: str, env: dict[str, str]) -> float:
    t = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", "from polynimbus.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    elapsed = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"polynimbus {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return elapsed


def through_api(path: Path, doc: dict, env: dict[str, str]) -> float:
    """Start ``serve`` on the lab (a no-change convergence), then time one POST that
    attaches a tenant host, from request to answer (validated, applied to the lab)."""
    import re
    import threading

    import httpx

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from polynimbus.cli import main; main()",
            "serve",
            str(path),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(env, COLUMNS="200", PYTHONUNBUFFERED="1"),
    )
    url: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            if m:
                url.append(m.group(1))
            if "Application startup complete" in line or "Uvicorn running" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(300) or not url:
            raise SystemExit("serve did not start")
        sdir = Path(env["XDG_STATE_HOME"]) / "polynimbus" / doc["name"]
        token = (sdir / "admin.token").read_text().strip()
        t = doc["tenants"][1]
        site = t["networks"][0]["sites"][0]
        with httpx.Client(base_url=url[0], timeout=120) as c:
            t0 = time.perf_counter()
            r = c.post(
                f"/v1/tenants/{t['name']}/networks/net/hosts",
                headers={"Authorization": f"Bearer {token}"},
                json={"name": f"{site}/api-1"},
            )
            elapsed = time.perf_counter() - t0
        if r.status_code != 201:
            raise SystemExit(f"the API answered {r.status_code}: {r.text}")
        return elapsed
    finally:
        proc.send_signal(2)
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--name", default="tscale", help="the lab's name (default tscale)")
    ap.add_argument("--keep", action="store_true", help="leave the lab up")
    args = ap.parse_args()
    doc = intent(args.tenants, args.sites, args.name)
    tmp = Path(tempfile.mkdtemp(prefix=f"pn-{args.name}-"))
    env = dict(os.environ, XDG_STATE_HOME=str(tmp / "xdg"))
    path = tmp / "intent.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    hosts = sum(len(n["hosts"]) for t in doc["tenants"] for n in t["networks"])
    print(
        f"{args.tenants} tenants over {args.sites} sites: {hosts} tenant hosts, "
        f"{hosts} routers ports; {time.strftime('%Y-%m-%d')}"
    )
    try:
        t_plan = cli("plan", str(path), "--json", env=env)
        print(f"plan (CLI, process start included): {t_plan:.2f} s")
        from polynimbus.intent import load_intent
        from polynimbus.plan import build_plan

        t0 = time.perf_counter()
        build_plan(load_intent(path))
        print(f"plan (load + validate + build, in process): {time.perf_counter() - t0:.2f} s")
        print(f"up: {cli('up', str(path), env=env):.1f} s")
        print(f"no-change up: {cli('up', str(path), env=env):.1f} s")
        doc["tenants"][0]["networks"][0]["hosts"].append(
            f"{doc['tenants'][0]['networks'][0]['sites'][0]}/z"
        )
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        t_add = cli("up", str(path), env=env)
        print(f"one tenant host added (up of the changed intent): {t_add:.1f} s")
        print(f"one tenant host added through the API: {through_api(path, doc, env):.2f} s")
    finally:
        import shutil

        if not args.keep:
            t = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "from polynimbus.cli import main; main()",
                    "down",
                    str(path),
                ],
                env=env,
                capture_output=True,
            )
            print(f"down: {time.perf_counter() - t:.1f} s")
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
