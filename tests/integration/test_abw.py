"""``polynimbus abw`` on a shaped lab against its ground truth (issue 9: error <= 10 %).

Site b's internet link is shaped to 50 Mbit/s (tbf); constant-rate UDP cross traffic
(iperf3, SCHED_FIFO so that the prober's busy-waiting sender does not make it bursty on a
2-core machine) runs from a's gateway to b's through that link. Ground truth as in
bench/abw.py: A = (C - X) · P / (P + 14), X the cross traffic's Ethernet rate, P the
probes' IP size. The issue's goal is 9 runs of 10 within 10 %: each load gets one more
run when the first misses, and both are reported.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time

from typer.testing import CliRunner, Result

from polynimbus import names, procs
from polynimbus.cli import app
from polynimbus.orchestrate import lab_up
from polynimbus.plan import build_plan
from polynimbus.verify.monitor import db_path
from tests.integration.test_cli import POLYNIMBUS, wait_until

LAB = "ab-t"
CAPACITY = 50e6
CROSS_PAYLOAD = 1400
INTENT = f"""name: {LAB}
sites:
  - name: a
    provider: aws
  - name: b
    provider: azure
    underlay: {{rate: {int(CAPACITY)}bit}}
"""


def sh(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)


def probe_set(gw: str) -> str:
    return sh(gw, "nft", "list", "set", "inet", "polynimbus", "underlay_probe").stdout


def agents() -> list[str]:
    return [" ".join(p.argv) for p in procs.processes() if any("abw_agent" in a for a in p.argv)]


def cli(*args: str) -> Result:
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert res.exit_code == 0, f"{args}: {res.exit_code}\n{res.output}"
    return res


def test_abw_estimates_a_shaped_link_within_ten_percent(lab) -> None:
    path = lab.write(INTENT)
    sdir = lab.state(LAB)
    lab_up(lab.intent(INTENT), sdir)
    plan = build_plan(lab.intent(INTENT))
    gw_a, gw_b = names.gateway_ns(LAB, "a"), names.gateway_ns(LAB, "b")
    src, dst = plan.site("a").public_address, plan.site("b").public_address
    element = f"{{ {src} . 5201 timeout 120s }}"
    opened = sh(gw_b, "nft", "add", "element", "inet", "polynimbus", "underlay_probe", element)
    assert opened.returncode == 0, opened.stderr
    server = subprocess.Popen(
        ["ip", "netns", "exec", gw_b, "iperf3", "-s", "-B", dst],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cross: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(0.3)
        for load in (0.2, 0.8):
            bps = load * CAPACITY * CROSS_PAYLOAD / (CROSS_PAYLOAD + 42)
            cross = subprocess.Popen(
                ["ip", "netns", "exec", gw_a, "chrt", "-f", "20", "iperf3", "-c", dst]
                + ["-u", "-b", str(int(bps)), "-l", str(CROSS_PAYLOAD), "--pacing-timer", "100"]
                + ["-t", "30"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.7)
            runs = []
            for _ in range(2):
                # in-process (a fresh interpreter per run cost seconds on a loaded machine;
                # test_cli runs the README's abw command as a user would)
                res = cli("abw", str(path), "a", "b", "--json", "--state-dir", str(sdir))
                doc = json.loads(res.stdout)
                assert {"low_bps", "high_bps", "seconds", "bytes_sent", "converged"} <= set(doc)
                p = doc["packet_bytes"]
                truth = (CAPACITY - bps * (CROSS_PAYLOAD + 42) / CROSS_PAYLOAD) * p / (p + 14)
                error = abs((doc["low_bps"] + doc["high_bps"]) / 2 - truth) / truth
                runs.append({"truth_mbps": round(truth / 1e6, 2), "error": error, **doc})
                assert doc["low_bps"] <= doc["high_bps"] and doc["seconds"] < 10, runs
                # 5 % of a 10 s iperf3 test at the full 50 Mbit/s is 3 MB
                assert 0 < doc["bytes_sent"] < 3e6, runs
                if error <= 0.10:
                    break
            assert runs[-1]["error"] <= 0.10, f"load {load:.0%}: {runs}"
            cross.terminate()
            cross.wait()
            cross = None
        # the probe port was opened for the estimate only; no agent is left behind
        assert probe_set(gw_b).count(f"{src} . ") == 1, probe_set(gw_b)
        assert agents() == []
        # each estimate was recorded for polynimbus monitor
        con = sqlite3.connect(db_path(sdir))
        try:
            n = con.execute("SELECT COUNT(*) FROM abw WHERE src='a' AND dst='b'").fetchone()[0]
        finally:
            con.close()
        assert n >= 2

        # the text report, through the tunnel (no figure is asserted: see docs/benchmarks.md)
        res = cli("abw", str(path), "b", "a", "--channel", "overlay")
        assert "available bandwidth b -> a (overlay):" in res.stdout, res.stdout
        assert "Mbit/s" in res.stdout and "sent" in res.stdout

        # Ctrl-C while probing: exit 130, both agents gone, the probe port closed again
        def interruptible() -> None:
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        run = subprocess.Popen(
            [POLYNIMBUS, "abw", str(path), "a", "b"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        )
        assert wait_until(lambda: any(" send " in a for a in agents()), 20), agents()
        run.send_signal(signal.SIGINT)
        _, said = run.communicate(timeout=20)
        assert run.returncode == 130 and "interrupted: no estimate" in said, said
        assert agents() == []
        assert probe_set(gw_b).count(f"{src} . ") == 1, probe_set(gw_b)
    finally:
        for p in (cross, server):
            if p is not None:
                p.kill()
                p.wait()

    # a lab that is not up (the other errors need no lab: tests/unit/test_abw_cli.py)
    other = lab.tmp / "other.yaml"
    other.write_text(INTENT.replace(f"name: {LAB}", "name: ab-t-not-up"))
    res = CliRunner().invoke(app, ["abw", str(other), "a", "b"])
    assert res.exit_code == 1 and "error: the lab 'ab-t-not-up' is not up" in res.output
