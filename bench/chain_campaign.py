"""Seed 000's measurement campaign for an SRv6 service chain (issue 6). Needs root.

What: single-flow TCP throughput (iperf3), UDP throughput at a high offered bitrate
(iperf3 -u: received rate and loss) and RTT (ping), for a client in one site, one network
function in a second and the server in a third (seed 000's three-region chain, §IV-C,
figures 8 and 9), each

* without the chain and through an SR-unaware function (seed 002's legacy function
  behind the connector's static proxy) and through an SR-aware one (End);
* for IPv4-over-IPv6 (End.DX4 at the egress) and all-IPv6 (End.DX6);
* in both directions: client -> server and server -> client (iperf3 -R; for RTT, ping
  from either end), seed 000's figures 5/6 and 8/9;

N runs each (``--runs``), mean with a 95 % Student's t confidence interval (seed 000 §III:
30 runs of 20 s; shorter here to fit the machine). Every run measures every
configuration in a shuffled order, so all of them are compared within one run on this
shared, noisy 2-core machine.

How "without the chain" is built: the intent (``bench/intents/chain-campaign-wg.yaml`` by
default, the goal's comparison) puts
three sibling clients on the same LAN of the client site, one per mode, and one server.
``cu`` has the chains through the SR-unaware function (one per family), ``ca`` those
through the SR-aware one, ``cp`` none: its traffic crosses the same gateways and the
same emulated internet, only not steered. Chains are unmatched (all traffic), so ping
(ICMP, which has no port to select on) and iperf3's TCP control connection take the same
path as the data. Selecting the chain by port on one host pair would leave ping without
a plain twin for the same family; a twin lab would measure other gateway namespaces.

With ``carrier: underlay`` (``bench/intents/chain-campaign.yaml``) chain traffic is clear
SRv6 over the emulated internet, as in seed 000, while un-chained overlay traffic rides
the overlay's tunnels (kernel VXLAN in that intent), so its ratios compare two
encapsulations. The default ``bench/intents/chain-campaign-wg.yaml`` is the goal's
comparison: both inside WireGuard tunnels (``carrier: tunnels``, the default carrier;
wireguard-go here, ~0.3 Gbit/s). A function
in a third site makes the chain cross two tunnels where the plain path crosses one; a
chain whose function is in the destination site (a fourth client there) crosses the
same one, so its ratio is the chain's own cost. Column ``unaware-dst``/``aware-dst``.

Goal (issue 6): through one SR-unaware function in another site, single-flow TCP >= 0.8x
the same path without the chain; the ratio (SR-unaware / without, per family and
direction, and its per-run mean with CI) is printed.

Output: a markdown table on stdout, ``results-<lab>.json`` and PNG grouped bars with CI
(``<lab>-tcp.png``, ``-udp.png``, ``-udp-loss.png``, ``-rtt.png``) in ``--out``.

Sources: seed 000 (§III methodology, §IV figures 2, 5-9), seed 002 (the
SR-unaware function and its proxy), bench/chainlib.py (iperf3/ping wrappers, mean_ci,
plot_bars), issue 6.

    python bench/chain_campaign.py [--runs 5] [--seconds 3] [--intent FILE ...]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chainlib import iperf3_tcp, iperf3_udp, mean_ci, netns_cmd, ping_rtt, plot_bars  # noqa: E402

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).with_name("polynimbus"))
MODES = ("plain", "unaware", "aware", "unaware-dst", "aware-dst")  # the order of the columns
MODE_LABEL = {
    "plain": "without chain",
    "unaware": "SR-unaware",
    "aware": "SR-aware",
    "unaware-dst": "SR-unaware in dst site",
    "aware-dst": "SR-aware in dst site",
}
FAMILIES = ("ipv4", "ipv6")
FAM_LABEL = {"ipv4": "IPv4/IPv6", "ipv6": "all-IPv6"}
DIRECTIONS = ("c2s", "s2c")
DIR_LABEL = {"c2s": "client->server", "s2c": "server->client"}
METRICS = ("tcp", "udp", "rtt")


@dataclass
class Lab:
    """One lab of the campaign: its intent, namespaces and addresses."""

    intent: Path
    name: str
    carrier: str
    transport: str
    state: Path
    clients: dict[str, str]  # mode -> client namespace
    server_ns: str
    server_addr: dict[str, str]  # family -> server address
    client_addr: dict[str, dict[str, str]]  # mode -> family -> client address
    functions: dict[str, str]  # mode -> the function's namespace

    @property
    def modes(self) -> list[str]:
        """The configurations this lab has, "plain" first."""
        return [m for m in MODES if m in self.clients]


def _run(*cmd: str) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip() or out.stdout}")
    return out.stdout


def load_lab(intent_path: Path, state_root: Path) -> Lab:
    """Roles from the intent (which client has which chains), addresses from the plan."""
    intent = yaml.safe_load(intent_path.read_text())
    name = intent["name"]
    if not name.startswith("bench-chain"):
        raise SystemExit(f"{intent_path}: lab names must start with bench-chain")
    plan = json.loads(_run(CLI, "plan", "--json", str(intent_path)))
    hosts = {
        f"{s['name']}/{h['name']}": {"ipv4": h["address"], "ipv6": h["address6"]}
        for s in plan["sites"]
        for h in s["hosts"]
    }
    services = {s["name"]: s for s in intent.get("services", [])}
    ns = f"pn.{name}."
    clients: dict[str, str] = {}
    functions: dict[str, str] = {}
    server = None
    chained: set[str] = set()
    for c in intent.get("chains", []):
        if len(c["through"]) != 1:
            raise SystemExit(f"{intent_path}: chain {c['name']} must have one function")
        svc = services[c["through"][0]]
        mode = "unaware" if svc["mode"] == "sr-unaware" else "aware"
        if svc["site"] == c["to"].split("/")[0]:
            mode += "-dst"  # the function is in the destination site: no third site
        if clients.get(mode, c["from"]) != c["from"]:
            raise SystemExit(f"{intent_path}: one client per kind of chain ({mode})")
        clients[mode] = c["from"]
        functions[mode] = ns + f"{svc['site']}.{svc['name']}"
        chained.add(c["from"])
        server = c["to"]
    if server is None or not {"unaware", "aware"} <= set(clients):
        raise SystemExit(f"{intent_path}: needs chains through an SR-unaware and an SR-aware one")
    site = next(iter(clients.values())).split("/")[0]
    plain = [h for h in hosts if h.startswith(site + "/") and h not in chained]
    if not plain:
        raise SystemExit(f"{intent_path}: needs a client in {site} outside every chain")
    clients["plain"] = plain[0]
    return Lab(
        intent=intent_path,
        name=name,
        carrier=intent["overlay"].get("srv6", {}).get("carrier", "tunnels"),
        transport=intent["overlay"].get("transport", "wireguard"),
        state=state_root / name,
        clients={m: ns + h.replace("/", ".") for m, h in clients.items()},
        server_ns=ns + server.replace("/", "."),
        server_addr=hosts[server],
        client_addr={m: hosts[h] for m, h in clients.items()},
        functions=functions,
    )


_ENTERED = re.compile(r'counter packets (\d+) bytes \d+ comment "pn entered')


def entered(fn_ns: str) -> int:
    """Packets that entered a function (its ``pn entered`` nftables counter)."""
    out = subprocess.run(
        netns_cmd(fn_ns, "nft", "list", "ruleset"), capture_output=True, text=True, check=False
    ).stdout
    return sum(int(v) for v in _ENTERED.findall(out))


def measure(lab: Lab, metric: str, mode: str, fam: str, direction: str, args) -> dict:  # type: ignore[no-untyped-def]
    """One sample of one configuration."""
    cns, sns = lab.clients[mode], lab.server_ns
    rev = direction == "s2c"
    if metric == "tcp":
        bps = iperf3_tcp(cns, sns, lab.server_addr[fam], args.seconds, reverse=rev)
        return {"gbps": bps / 1e9}
    if metric == "udp":
        r = iperf3_udp(
            cns, sns, lab.server_addr[fam], args.seconds, bitrate=args.udp_bitrate,
            length=args.udp_length, reverse=rev,
        )  # fmt: skip
        return {"gbps": r["bps"] / 1e9, "loss_pct": 100 * r["loss"], "packets": r["packets"]}
    src, dst = (sns, lab.client_addr[mode][fam]) if rev else (cns, lab.server_addr[fam])
    rtts = ping_rtt(src, dst, args.pings, 0.02)
    if not rtts:
        raise RuntimeError("every ping lost")
    return {"ms": statistics.fmean(rtts), "lost": args.pings - len(rtts)}


def fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    mean, half = mean_ci(values)
    if math.isnan(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--intent", type=Path, action="append",
        help="campaign intent (repeatable; default bench/intents/chain-campaign-wg.yaml, "
        "carrier: tunnels over WireGuard; bench/intents/chain-campaign.yaml: clear SRv6 "
        "against a VXLAN baseline)",
    )  # fmt: skip
    ap.add_argument("--runs", type=int, default=5, help="runs per configuration (default 5)")
    ap.add_argument("--seconds", type=float, default=3, help="iperf3 test length, s (default 3)")
    ap.add_argument("--pings", type=int, default=20, help="pings per RTT sample (default 20)")
    ap.add_argument("--udp-bitrate", type=float, default=5e9, help="iperf3 -u -b, bit/s")
    ap.add_argument(
        "--udp-length", type=int, default=1200,
        help="UDP payload, bytes (default 1200: fits every path's MTU unfragmented)",
    )  # fmt: skip
    ap.add_argument("--metrics", default=",".join(METRICS), help="subset of tcp,udp,rtt")
    ap.add_argument("--out", type=Path, default=Path("/tmp/chain-campaign"), help="PNG/JSON dir")
    ap.add_argument("--seed", type=int, default=0, help="shuffle seed")
    args = ap.parse_args()
    intents = args.intent or [HERE / "intents" / "chain-campaign-wg.yaml"]
    metrics = [m for m in args.metrics.split(",") if m]
    args.out.mkdir(parents=True, exist_ok=True)

    # results[lab][metric][mode][fam][dir] = list of samples (dicts)
    results: dict[str, dict] = {}
    counters: dict[str, dict[str, int]] = {}
    errors: list[str] = []
    labs: list[Lab] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chain-campaign-") as tmp:
        try:
            for path in intents:
                lab = load_lab(path, Path(tmp))
                labs.append(lab)
                _run(CLI, "up", str(path), "--state-dir", str(lab.state))
                print(f"# {lab.name} up: carrier {lab.carrier}, transport {lab.transport}; "
                      f"clients {lab.clients}", file=sys.stderr)  # fmt: skip
                results[lab.name] = {
                    m: {mo: {f: {d: [] for d in DIRECTIONS} for f in FAMILIES} for mo in lab.modes}
                    for m in metrics
                }
            before = {lab.name: {m: entered(f) for m, f in lab.functions.items()} for lab in labs}
            cells = [
                (lab, m, mo, f, d)
                for lab in labs
                for m in metrics
                for mo in lab.modes
                for f in FAMILIES
                for d in DIRECTIONS
            ]
            rng = random.Random(args.seed)
            for run in range(args.runs):
                order = cells[:]
                rng.shuffle(order)
                for lab, m, mo, f, d in order:
                    try:
                        sample = measure(lab, m, mo, f, d, args)
                    except (RuntimeError, ValueError, KeyError) as exc:
                        errors.append(f"run {run} {lab.name} {m} {mo} {f} {d}: {exc}")
                        print("#", errors[-1], file=sys.stderr)
                        continue
                    sample["run"] = run
                    results[lab.name][m][mo][f][d].append(sample)
                print(f"# run {run + 1}/{args.runs} done, {time.monotonic() - t0:.0f} s",
                      file=sys.stderr)  # fmt: skip
            for lab in labs:
                counters[lab.name] = {
                    m: entered(f) - before[lab.name][m] for m, f in lab.functions.items()
                }
        finally:
            for lab in labs:
                subprocess.run(
                    [CLI, "down", str(lab.intent), "--state-dir", str(lab.state)],
                    capture_output=True, check=False,
                )  # fmt: skip

    print(f"## SRv6 chain campaign: {args.runs} runs, iperf3 {args.seconds:g} s, "
          f"UDP {args.udp_length} B at {args.udp_bitrate / 1e9:g} Gbit/s offered, "
          f"{args.pings} pings per RTT sample; mean ± 95% CI\n")  # fmt: skip
    for lab in labs:
        res = results[lab.name]
        print(f"### {lab.name}: carrier {lab.carrier}, overlay transport {lab.transport}\n")
        chained = lab.modes[1:]
        print("| metric | family | direction | " + " | ".join(MODE_LABEL[m] for m in lab.modes)
              + " | " + " | ".join(f"{m}/without" for m in chained) + " |")  # fmt: skip
        print("|---|---|---|" + "---:|" * (2 * len(lab.modes) - 1))
        rows = [("tcp", "gbps", "TCP Gbit/s", 2), ("udp", "gbps", "UDP Gbit/s", 3),
                ("udp", "loss_pct", "UDP loss %", 2), ("rtt", "ms", "RTT ms", 3)]  # fmt: skip
        for metric, key, label, digits in rows:
            if metric not in res:
                continue
            for f in FAMILIES:
                for d in DIRECTIONS:
                    vals = {mo: [s[key] for s in res[metric][mo][f][d]] for mo in lab.modes}
                    ratios = []
                    for mo in chained:
                        if (
                            key != "loss_pct"
                            and vals[mo]
                            and statistics.fmean(vals["plain"] or [0])
                        ):
                            r = statistics.fmean(vals[mo]) / statistics.fmean(vals["plain"])
                            ratios.append(f"{r:.3f}")
                        else:
                            ratios.append("-")
                    cols = [fmt(vals[mo], digits) for mo in lab.modes] + ratios
                    print(
                        f"| {label} | {FAM_LABEL[f]} | {DIR_LABEL[d]} | " + " | ".join(cols) + " |"
                    )
        print()
        if "tcp" in res:
            print("Goal (issue 6): single-flow TCP through one SR-unaware function >= 0.8x "
                  "the same path without the chain.\n")  # fmt: skip
            for um in [m for m in ("unaware", "unaware-dst") if m in lab.modes]:
                worst = math.inf
                for f in FAMILIES:
                    for d in DIRECTIONS:
                        by_run = {
                            mo: {s["run"]: s["gbps"] for s in res["tcp"][mo][f][d]}
                            for mo in lab.modes
                        }
                        paired = [
                            by_run[um][r] / by_run["plain"][r]
                            for r in by_run["plain"]
                            if r in by_run[um] and by_run["plain"][r] > 0
                        ]
                        u, p = by_run[um].values(), by_run["plain"].values()
                        if not u or not p:
                            continue
                        ratio = statistics.fmean(u) / statistics.fmean(p)
                        worst = min(worst, ratio)
                        verdict = "met" if ratio >= 0.8 else "MISSED"
                        print(f"- TCP ratio {MODE_LABEL[um]}/without, {FAM_LABEL[f]}, "
                              f"{DIR_LABEL[d]}: {ratio:.3f} (per-run ratios {fmt(paired, 3)}): "
                              f"{verdict}")  # fmt: skip
                print(f"- {MODE_LABEL[um]}, worst: {worst:.3f}: "
                      f"goal {'met' if worst >= 0.8 else 'MISSED'}\n")  # fmt: skip
        if lab.name in counters:
            print(f"Packets that entered each function during the campaign: "
                  f"{counters[lab.name]} (the chains really were taken)\n")  # fmt: skip

        # plots (seed 000 figures 5-9 style: grouped bars with CI)
        def groups(
            metric: str, key: str, res=res, modes=lab.modes
        ) -> dict[str, dict[str, list[float]]]:
            return {
                f"{FAM_LABEL[f]}\n{DIR_LABEL[d]}": {
                    MODE_LABEL[mo]: [s[key] for s in res[metric][mo][f][d]] for mo in modes
                }
                for f in FAMILIES
                for d in DIRECTIONS
            }

        where = f"{lab.name} ({lab.carrier}, {lab.transport})"
        plots = []
        if "tcp" in res:
            plots.append(plot_bars(groups("tcp", "gbps"), args.out / f"{lab.name}-tcp.png",
                                   f"single-flow TCP throughput, {where}", "Gbit/s"))  # fmt: skip
        if "udp" in res:
            plots.append(plot_bars(groups("udp", "gbps"), args.out / f"{lab.name}-udp.png",
                                   f"UDP received rate ({args.udp_length} B), {where}",
                                   "Gbit/s"))  # fmt: skip
            plots.append(plot_bars(groups("udp", "loss_pct"),
                                   args.out / f"{lab.name}-udp-loss.png",
                                   f"UDP loss at {args.udp_bitrate / 1e9:g} Gbit/s offered, "
                                   f"{where}", "loss %"))  # fmt: skip
        if "rtt" in res:
            plots.append(plot_bars(groups("rtt", "ms"), args.out / f"{lab.name}-rtt.png",
                                   f"RTT (ping), {where}", "ms"))  # fmt: skip
        print("Plots: " + ", ".join(str(p) for p in plots) + "\n")
        raw = args.out / f"results-{lab.name}.json"
        raw.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                   "results": res, "entered": counters.get(lab.name),
                                   "errors": errors}, indent=1))  # fmt: skip
    if errors:
        print(f"{len(errors)} failed measurements: " + "; ".join(errors))
    print(f"total {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
