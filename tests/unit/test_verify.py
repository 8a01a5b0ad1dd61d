"""verify without a lab: fping parsing, argument checks, deadlines, the probe port, the report.

Commands are faked with an ``ip`` script put first on PATH (every verify command runs as
``ip netns exec NS CMD ...``), so the real subprocess handling is exercised; no root needed.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polynimbus.cli import app
from polynimbus.errors import VerifyError
from polynimbus.intent import load_intent_text
from polynimbus.plan import Plan, build_plan
from polynimbus.verify import VerifyReport, reachability, report, run_verify, throughput
from polynimbus.verify.reachability import PairResult, parse_fping, ping_all
from polynimbus.verify.throughput import ThroughputResult, check_seconds, iperf3, measure_pairs
from tests.conftest import EXAMPLES, intent_text

runner = CliRunner()

# Captured from fping 5.1: `fping -C 3 -q -p 20 -t 200 -r 0 127.0.0.1 10.255.255.1 192.0.2.1`
# (stderr; the addresses are padded to one width), then IPv6 targets, a partial loss, and
# lines that are not summaries: a per-probe line (without -q), fping's ICMP error line, a
# name lookup failure, an ip netns error.
FPING_SAMPLE = """\
127.0.0.1    : 0.032 0.028 0.026
10.255.255.1 : - - -
192.0.2.1    : 0.247 0.212 0.243
::1         : 0.173 0.043 0.047
2001:db8::1 : - - -
10.1.0.2 : 0.051 - 0.024
10.8.0.1 : [0], timed out (NaN avg, 100% loss)
127.0.0.3 : [1], 64 bytes, 0.039 ms (0.035 avg, 0% loss)
ICMP Host Unreachable from 10.1.0.254 for ICMP Echo sent to 10.2.0.1
nosuch.invalid: Name or service not known

Cannot open network namespace "pn.x.a.h": No such file or directory
"""


def plan_of(sites: str, name: str = "vf-unit") -> Plan:
    return build_plan(load_intent_text(intent_text(sites, name=name)))


TWO_SITES = (
    "  - {name: a, provider: aws, hosts: [h1]}\n  - {name: b, provider: azure, hosts: [h2]}\n"
)
ONE_HOST = "  - {name: a, provider: aws, hosts: [h1]}\n  - {name: b, provider: azure}\n"


def fake_ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    """Put an ``ip`` shell script first on PATH. ``$4`` is the command run in the namespace,
    ``$5`` its first argument; every call's arguments are appended to the returned log."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "ip.log"
    script = bindir / "ip"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


IPERF_OK = (
    'if [ "$4" = iperf3 ] && [ "$5" = -s ]; then echo $$ >> {pids}; exec sleep 30; fi\n'
    'if [ "$4" = iperf3 ]; then echo \'{{"end": {{"sum_received": '
    '{{"bits_per_second": 1.5e9}}}}}}\'; exit 0; fi\n'
)


# --- parse_fping ------------------------------------------------------------------------


def test_parse_fping_real_output():
    got = parse_fping(FPING_SAMPLE)
    assert got == {
        "127.0.0.1": [0.032, 0.028, 0.026],
        "10.255.255.1": [None, None, None],
        "192.0.2.1": [0.247, 0.212, 0.243],
        "::1": [0.173, 0.043, 0.047],
        "2001:db8::1": [None, None, None],
        "10.1.0.2": [0.051, None, 0.024],
    }


def test_parse_fping_last_summary_wins_and_empty_input():
    assert parse_fping("10.0.0.1 : 1.0 2.0\n10.0.0.1 : - 3.5\n") == {"10.0.0.1": [None, 3.5]}
    assert parse_fping("") == {}
    assert parse_fping("10.0.0.1 :\n") == {}


# --- --seconds ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 0.5, 1.5, True, "2", None])
def test_seconds_must_be_a_whole_number_at_least_one(bad):
    with pytest.raises(VerifyError, match="whole number of seconds >= 1"):
        check_seconds(bad)


def test_seconds_accepted():
    assert check_seconds(1) == 1
    assert check_seconds(3.0) == 3 and isinstance(check_seconds(3.0), int)


def test_run_verify_rejects_fractional_seconds_before_touching_anything():
    with pytest.raises(VerifyError, match="not 0.5"):
        run_verify(plan_of(TWO_SITES), throughput=True, seconds=0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("cmd", ["verify", "demo"])
@pytest.mark.parametrize("value", ["0.5", "0", "-3"])
def test_cli_seconds_rejected_as_usage_error(cmd, value):
    args = [cmd, str(EXAMPLES / "prestocloud.yaml")] if cmd == "verify" else [cmd]
    res = runner.invoke(app, [*args, "--seconds", value])
    assert res.exit_code == 2, res.output
    assert "--seconds" in res.output


# --- zero pairs -----------------------------------------------------------------------------


@pytest.mark.parametrize("sites", [ONE_HOST, "  - {name: a, provider: aws}\n"])
def test_fewer_than_two_hosts_is_an_error(sites):
    plan = plan_of(sites)
    with pytest.raises(VerifyError) as exc:
        run_verify(plan)
    assert "nothing to verify" in exc.value.message
    assert "add hosts to at least two sites" in (exc.value.hint or "")
    with pytest.raises(VerifyError):
        ping_all(plan)


def test_throughput_needs_two_sites():
    plan = plan_of("  - {name: a, provider: aws, hosts: [h1, h2]}\n")
    with pytest.raises(VerifyError, match="--throughput compares sites"):
        run_verify(plan, throughput=True)


def test_cli_single_host_intent_exits_nonzero(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text(intent_text(ONE_HOST, name="vf-one"))
    res = runner.invoke(app, ["verify", str(path)])
    assert res.exit_code == 1
    assert "error: nothing to verify" in res.output and "hint: add hosts" in res.output


# --- deadlines ------------------------------------------------------------------------------


def test_fping_that_hangs_is_stopped_and_reported(tmp_path, monkeypatch):
    fake_ip(tmp_path, monkeypatch, "exec sleep 30")
    monkeypatch.setattr(reachability, "MARGIN_S", 0.3)
    start = time.monotonic()
    with pytest.raises(VerifyError) as exc:
        ping_all(plan_of(TWO_SITES), count=1, interval_ms=10, timeout_ms=10)
    assert time.monotonic() - start < 5
    assert "fping from a/h1" in exc.value.message or "fping from b/h2" in exc.value.message
    assert "did not finish within" in exc.value.message
    assert "polynimbus down FILE" in (exc.value.hint or "")


def test_fping_deadline_grows_with_the_work():
    small = reachability.fping_timeout_s(3, 20, 1000, 1)
    assert small == pytest.approx(0.06 + 1.0 + reachability.MARGIN_S)
    assert reachability.fping_timeout_s(3, 20, 1000, 100) > small + 2


def test_ping_all_parses_each_source_and_fails_without_a_result(tmp_path, monkeypatch):
    plan = plan_of(TWO_SITES)
    a, b = plan.sites[0].hosts[0].address, plan.sites[1].hosts[0].address
    fake_ip(
        tmp_path,
        monkeypatch,
        f'if [ "$3" = pn.vf-unit.a.h1 ]; then echo "{b} : 0.5 - 1.5" >&2; fi\n'
        f'if [ "$3" = pn.vf-unit.b.h2 ]; then echo "{a} : - -" >&2; fi\nexit 1',
    )
    got = ping_all(plan, count=2)
    assert got == [
        PairResult("a/h1", "b/h2", True, 1.0, 0.333),
        PairResult("b/h2", "a/h1", False, None, 1.0),
    ]
    fake_ip(tmp_path, monkeypatch, 'echo "Cannot open network namespace \\"$3\\"" >&2; exit 255')
    with pytest.raises(VerifyError, match="exited 255 without a result.*Cannot open network"):
        ping_all(plan)


def test_iperf3_client_that_hangs_is_stopped_and_the_server_killed(tmp_path, monkeypatch):
    pids = tmp_path / "server.pids"
    log = fake_ip(
        tmp_path,
        monkeypatch,
        f'if [ "$5" = -s ]; then echo $$ >> {pids}; fi\nexec sleep 30',
    )
    monkeypatch.setattr(throughput, "CONNECT_TIMEOUT_MS", 100)
    monkeypatch.setattr(throughput, "IPERF_MARGIN_S", 0.3)
    start = time.monotonic()
    with pytest.raises(VerifyError) as exc:
        iperf3("pn.c", "pn.s", "10.0.0.2", seconds=1)
    assert time.monotonic() - start < 5
    assert exc.value.message.startswith("iperf3 from pn.c to 10.0.0.2 did not finish within")
    client = [line for line in log.read_text().splitlines() if " -c " in line]
    assert client and "-t 1 --connect-timeout 100" in client[0]
    (server_pid,) = map(int, pids.read_text().split())
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(server_pid, 0)


def test_iperf3_rejects_fractional_seconds_before_starting_anything(tmp_path, monkeypatch):
    log = fake_ip(tmp_path, monkeypatch, "exit 0")
    with pytest.raises(VerifyError):
        iperf3("pn.c", "pn.s", "10.0.0.2", seconds=0.5)  # type: ignore[arg-type]
    assert not log.exists()


def test_nft_that_hangs_is_stopped(tmp_path, monkeypatch):
    pids = tmp_path / "server.pids"
    fake_ip(tmp_path, monkeypatch, IPERF_OK.format(pids=pids) + "exec sleep 30")
    monkeypatch.setattr(throughput, "NFT_TIMEOUT_S", 0.3)
    with pytest.raises(VerifyError, match=r"nft on the gateway of b .* did not finish within"):
        measure_pairs(plan_of(TWO_SITES), seconds=1)


# --- the probe port ---------------------------------------------------------------------------


NFT_ERR = "Error: Could not process rule: No such file or directory"


def test_probe_port_that_cannot_be_opened_is_an_error(tmp_path, monkeypatch):
    pids = tmp_path / "server.pids"
    log = fake_ip(
        tmp_path,
        monkeypatch,
        IPERF_OK.format(pids=pids)
        + f'if [ "$5" = add ]; then printf "{NFT_ERR}\\nadd element ...\\n ^^^\\n" >&2; exit 1; fi',
    )
    plan = plan_of(TWO_SITES)
    with pytest.raises(VerifyError) as exc:
        measure_pairs(plan, seconds=1)
    msg = exc.value.message
    assert "could not open port 5201" in msg and "gateway of b (pn.vf-unit.b.gateway)" in msg
    assert msg.endswith(f"nft: {NFT_ERR}")
    assert "polynimbus up FILE repairs it" in (exc.value.hint or "")
    # the underlay flow was never started
    assert not [line for line in log.read_text().splitlines() if "gateway iperf3" in line]


def test_probe_port_that_cannot_be_closed_is_a_warning(tmp_path, monkeypatch):
    pids = tmp_path / "server.pids"
    fake_ip(
        tmp_path,
        monkeypatch,
        IPERF_OK.format(pids=pids)
        + 'if [ "$5" = delete ]; then echo "Error: element busy" >&2; exit 1; fi\nexit 0',
    )
    warnings: list[str] = []
    got = measure_pairs(plan_of(TWO_SITES), seconds=1, warnings=warnings)
    assert got == [ThroughputResult("a", "b", 1.5e9, 1.5e9)]
    assert len(warnings) == 1
    assert "could not close port 5201" in warnings[0] and "element busy" in warnings[0]


# --- the report -------------------------------------------------------------------------------


def test_report_ok_needs_pairs_all_reachable_and_no_drift():
    good = PairResult("a/h1", "b/h2", True, 0.5, 0.0)
    assert VerifyReport("x", pairs=[good]).ok
    assert not VerifyReport("x").ok
    assert not VerifyReport("x", pairs=[good, PairResult("b/h2", "a/h1", False, None, 1.0)]).ok
    drifted = VerifyReport("x", pairs=[good], drift=["a: gateway ruleset differs"])
    assert not drifted.ok
    doc = drifted.to_dict()
    assert doc["schema"] == "polynimbus.verify/v2" and doc["ok"] is False
    assert doc["drift"] == ["a: gateway ruleset differs"] and doc["warnings"] == []
    json.dumps(doc)


def test_run_verify_stores_drift(monkeypatch):
    good = [PairResult("a/h1", "b/h2", True, 0.5, 0.0), PairResult("b/h2", "a/h1", True, 0.4, 0)]
    monkeypatch.setattr(report.capabilities, "require_root", lambda what: None)
    monkeypatch.setattr(report.capabilities, "require_tools", lambda tools: None)
    monkeypatch.setattr(
        report, "list_lab_namespaces", lambda lab: ["pn.vf-unit.a.h1", "pn.vf-unit.b.h2"]
    )
    monkeypatch.setattr(report, "ping_all", lambda plan: good)
    plan = plan_of(TWO_SITES)
    assert run_verify(plan).ok
    drifted = run_verify(plan, drift=["b: missing route 10.1.0.0/24"])
    assert not drifted.ok and drifted.drift == ["b: missing route 10.1.0.0/24"]


def test_run_verify_names_missing_nodes_before_probing(monkeypatch):
    """A lab that does not match the intent (a host moved, or a different file) is named
    as such, before any probe runs into a missing namespace."""
    monkeypatch.setattr(report.capabilities, "require_root", lambda what: None)
    monkeypatch.setattr(report.capabilities, "require_tools", lambda tools: None)
    monkeypatch.setattr(report, "list_lab_namespaces", lambda lab: ["pn.vf-unit.a.h1"])

    def no_probe(plan):
        raise AssertionError("probed a lab that does not match")

    monkeypatch.setattr(report, "ping_all", no_probe)
    with pytest.raises(VerifyError, match="no namespace pn.vf-unit.b.h2") as e:
        run_verify(plan_of(TWO_SITES))
    assert "verify --lab vf-unit" in (e.value.hint or "")


def test_cli_prints_drift_and_warnings(monkeypatch):
    from polynimbus.cli import verify as cli_verify

    plan = plan_of(TWO_SITES)
    rep = VerifyReport(
        plan.name,
        pairs=[PairResult("a/h1", "b/h2", True, 0.5, 0.0)],
        drift=["b: [gateway] ruleset differs"],
        warnings=["could not close port 5201"],
    )
    with cli_verify.out.capture() as cap:
        cli_verify.print_report(plan, rep)
    text = cap.get()
    assert "drift: b: [gateway] ruleset differs" in text
    assert "warning: could not close port 5201" in text
