"""``polynimbus monitor`` and ``polynimbus report`` on a real three-site lab: /metrics scraped
over HTTP while the monitor runs, a cut of the overlay into one site seen as loss on exactly
the paths it affects, SIGTERM, then the report's PNGs and a summary checked against the
stored rows (computed here independently, with ``statistics``)."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from typer.testing import CliRunner

from polynimbus import names
from polynimbus.cli import app
from polynimbus.intent import load_intent_text
from polynimbus.orchestrate import lab_up
from polynimbus.plan import build_plan
from polynimbus.verify.monitor import probe_paths
from tests.integration.conftest import three_sites

POLYNIMBUS = Path(sys.executable).parent / "polynimbus"
INTERVAL_S = 0.25
CUT_S = 2.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRIC = re.compile(r"^(\w+)\{(.*)\} (\S+)$")


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """/metrics as ``{name: [(labels, value), ...]}`` (our text parser: labels without
    commas or quotes inside their values, which ours are)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def wait_for(cond, timeout: float, step: float = 0.1):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(step)
    return cond()


def cut_overlay_into(ns: str) -> None:
    """Drop every echo request that arrives through a tunnel (input: the gateway's own
    overlay address; forward: its hosts), in a table of the test's own."""
    rules = (
        "table inet mo_cut {\n"
        "  chain i { type filter hook input priority -10; "
        'iifname != { "wan0", "lan0", "lo" } icmp type echo-request drop; }\n'
        "  chain f { type filter hook forward priority -10; "
        'iifname != { "wan0", "lan0" } icmp type echo-request drop; }\n'
        "}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True
    )


def test_monitor_metrics_cut_sigterm_and_report(lab, tmp_path: Path) -> None:
    name = "mo-t1"
    text = three_sites(name)
    path = lab.write(text)
    sdir = lab.state(name)
    lab_up(load_intent_text(text), sdir)
    plan = build_plan(load_intent_text(text))
    paths = probe_paths(plan, hosts=6)

    proc = subprocess.Popen(
        [POLYNIMBUS, "monitor", path, "--state-dir", sdir, "--interval", str(INTERVAL_S),
         "--metrics", "127.0.0.1:0", "--hosts", "6", "--counters", "1", "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        m = re.search(r"metrics on (http://\S+/metrics)", first)
        assert m, first + proc.stderr.read()
        url = m.group(1)

        # every gateway pair over both channels, and the host pairs, have an RTT
        want = {(p.path, p.channel) for p in paths}
        assert len([p for p in paths if p.src.endswith("/gateway")]) == 6

        def all_rtts():  # type: ignore[no-untyped-def]
            got = scrape(url)
            have = {(lb["path"], lb["channel"]) for lb, _ in got.get("polynimbus_rtt_ms", [])}
            return got if have == want else None

        first_scrape = wait_for(all_rtts, 15)
        assert first_scrape, scrape(url).get("polynimbus_rtt_ms")
        for labels, v in first_scrape["polynimbus_rtt_ms"]:
            assert 0 < v < 100, (labels, v)
        for labels, v in first_scrape["polynimbus_probe_loss_ratio"]:
            assert v == 0, (labels, v)
        assert "polynimbus_tunnel_tx_bytes_total" in first_scrape, sorted(first_scrape)
        tx1 = {lb["site"]: v for lb, v in first_scrape["polynimbus_tunnel_tx_bytes_total"]}
        tx_metric = first_scrape["polynimbus_tunnel_tx_bytes_total"]
        tunnels = {(lb["site"], lb["interface"]) for lb, _ in tx_metric}
        assert tunnels == {(s.name, s.tunnel_if) for s in plan.sites}  # the tunnels, only
        ages = first_scrape["polynimbus_handshake_age_seconds"]
        assert {(lb["site"], lb["peer"]) for lb, _ in ages} == {
            (a, b) for a in tx1 for b in tx1 if a != b
        }
        assert all(0 <= v < 300 for _, v in ages)

        # the probes themselves cross the tunnels: every gateway's counters move
        time.sleep(1.5)
        second = scrape(url)
        tx2 = {lb["site"]: v for lb, v in second["polynimbus_tunnel_tx_bytes_total"]}
        rx2 = {lb["site"]: v for lb, v in second["polynimbus_tunnel_rx_packets_total"]}
        assert all(tx2[s] > tx1[s] for s in tx1), (tx1, tx2)
        assert all(v > 0 for v in rx2.values()), rx2

        # negative control: echo requests arriving through az's tunnels are dropped
        az_gw = names.gateway_ns(name, "az")
        cut_at = time.time()
        cut_overlay_into(az_gw)
        try:
            time.sleep(CUT_S)
        finally:
            heal = ["nft", "delete", "table", "inet", "mo_cut"]
            subprocess.run(["ip", "netns", "exec", az_gw, *heal], check=True)
        healed_at = time.time()
        time.sleep(4 * INTERVAL_S)

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # the series, read straight from the tables
    con = sqlite3.connect(sdir / "monitor.sqlite")
    rows = con.execute(
        "SELECT p.path, p.channel, s.ts, s.rtt_ms FROM samples s JOIN paths p ON p.id = s.path_id"
    ).fetchall()
    con.close()
    assert len(rows) >= len(paths) * 8

    # loss during the cut: exactly the overlay paths into az (their requests enter az's
    # tunnels), none elsewhere; replies into az are not requests and pass
    affected = {(p.path, p.channel) for p in paths if p.channel == "overlay" and p.dst_site == "az"}
    assert affected and affected != want
    window = (cut_at + INTERVAL_S, healed_at - INTERVAL_S)
    for key in want:
        inside = [
            r for (pth, ch, ts, r) in rows if (pth, ch) == key and window[0] <= ts <= window[1]
        ]
        lost = sum(r is None for r in inside)
        assert len(inside) >= 3, (key, inside)
        if key in affected:
            assert lost == len(inside), (key, inside)
        else:
            assert lost <= 1, (key, inside)  # one late reply on a loaded machine at most

    # report: PNGs and a summary equal to the rows' own statistics (in this process: the
    # command line is the same, without a second interpreter's start-up)
    out = tmp_path / "report"
    res = CliRunner().invoke(
        app,
        ["report", str(path), "--state-dir", str(sdir), "--since", "1h", "--out", str(out)],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    pngs = ("timeseries", "cdf-overlay", "cdf-underlay", "cdf-paths", "boxplot")
    for png in (f"{n}.png" for n in pngs):
        data = (out / png).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, png
    summary = {(r["path"], r["channel"]): r for r in json.loads((out / "summary.json").read_text())}
    assert set(summary) == want
    for key, r in summary.items():
        mine = [rtt for (pth, ch, _, rtt) in rows if (pth, ch) == key]
        answered = sorted(x for x in mine if x is not None)
        q = statistics.quantiles(answered, n=100, method="inclusive")
        assert r["probes"] == len(mine)
        assert r["lost"] == len(mine) - len(answered)
        assert abs(r["loss_pct"] - 100 * r["lost"] / len(mine)) < 1e-9
        assert abs(r["median_ms"] - statistics.median(answered)) < 1e-9, key
        assert abs(r["p95_ms"] - q[94]) < 1e-9, key
        assert abs(r["p99_ms"] - q[98]) < 1e-9, key
        if key in affected:
            assert r["lost"] > 0, key
    assert "median ms" in res.output


def test_monitor_refuses_a_lab_that_is_not_up(tmp_path: Path) -> None:
    path = tmp_path / "mo-none.yaml"
    path.write_text(three_sites("mo-none"))
    sdir = str(tmp_path / "s")
    res = CliRunner().invoke(app, ["monitor", str(path), "--state-dir", sdir, "--duration", "1"])
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.output.startswith("error: lab 'mo-none' is not up"), res.output
    res = CliRunner().invoke(app, ["report", str(path), "--state-dir", sdir, "--since", "5x"])
    assert res.exit_code == 2 and "bad duration '5x'" in res.output, res.output
    res = CliRunner().invoke(app, ["report", str(path), "--state-dir", sdir])
    assert res.exit_code == 1 and "no monitor data" in res.output, res.output


def test_a_stalled_loop_skips_probes_instead_of_losing_them(tmp_path: Path, monkeypatch) -> None:
    """The probing loop on the host's loopback (root: raw sockets), stalled for three
    intervals after its second round: the missed probes are skipped, none is lost."""
    import polynimbus.verify.monitor as mon_mod

    monkeypatch.setattr(mon_mod, "in_netns", lambda ns, fn: fn())  # this namespace
    plan = build_plan(load_intent_text(three_sites("mo-loop")))
    lo = [
        mon_mod.ProbePath(f"lo{k}", "overlay", "a", "b", "a", "b", "host", "127.0.0.1", "127.0.0.1")
        for k in range(5)
    ]
    interval = 0.1
    m = mon_mod.Monitor(plan, tmp_path, lo, interval_s=interval, counters_s=60)
    stalls = []

    def stall(rounds: int) -> None:
        if rounds == 2:
            stalls.append(rounds)
            time.sleep(3 * interval)

    with m:
        m.run(duration_s=1.0, on_round=stall)
    assert stalls == [2]
    assert m.skipped >= 2 * len(lo), m.skipped
    assert sum(s.sent for s in m.states) >= 4 * len(lo)
    assert sum(s.lost for s in m.states) == 0, [s.lost for s in m.states]
    assert all(s.last_rtt_ms is not None and s.last_rtt_ms < 50 for s in m.states)
