"""The monitor's pure parts: durations and addresses, path enumeration, ICMP checksums,
WireGuard's UAPI and /proc/net/dev parsing, the summary statistics against ``statistics``,
and the metrics fed from the database (events, ABW estimates) and the monitor's memory."""

from __future__ import annotations

import json
import random
import statistics
import struct
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from polynimbus.intent import load_intent_text
from polynimbus.plan import build_plan
from polynimbus.verify.figures import summarize, write_summary
from polynimbus.verify.monitor import (
    MetricsCollector,
    Monitor,
    Sample,
    echo_request,
    icmp_checksum,
    open_db,
    parse_duration,
    parse_listen,
    parse_net_dev,
    parse_uapi,
    probe_packet,
    probe_paths,
    read_samples,
    record_abw,
    record_event,
)


def plan_of(n_sites: int = 3):  # type: ignore[no-untyped-def]
    sites = "".join(
        f"  - name: s{i}\n    provider: aws\n    hosts: [h1, h2]\n" for i in range(n_sites)
    )
    return build_plan(load_intent_text(f"name: mo-unit\nsites:\n{sites}"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800), ("45", 45), ("1.5h", 5400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-1h", "0", "h", "1 hour"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9464", "host:", ":80", "h:70000", "h:p"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


def test_paths_every_gateway_pair_both_channels_and_a_fixed_host_sample() -> None:
    plan = plan_of(5)
    paths = probe_paths(plan, hosts=7, seed=3)
    gw = [p for p in paths if p.src.endswith("/gateway")]
    assert len(gw) == 2 * 10  # 5 sites: 10 unordered pairs, two channels each
    pairs = {(p.src_site, p.dst_site) for p in gw}
    idx = {s.name: i for i, s in enumerate(plan.sites)}
    assert all(idx[a] < idx[b] for a, b in pairs) and len(pairs) == 10
    for p in gw:
        a, b = plan.site(p.src_site), plan.site(p.dst_site)
        want = (
            (a.gateway_address, b.gateway_address)
            if p.channel == "overlay"
            else (a.public_address, b.public_address)
        )
        assert (p.src_addr, p.dst_addr) == want
        assert p.ns == f"pn.mo-unit.{a.name}.gateway"
    hosts = [p for p in paths if not p.src.endswith("/gateway")]
    assert len(hosts) == 7 and len({p.path for p in hosts}) == 7
    assert all(p.src_site != p.dst_site and p.channel == "overlay" for p in hosts)
    assert probe_paths(plan, hosts=7, seed=3) == paths  # deterministic
    assert probe_paths(plan, hosts=7, seed=4) != paths
    # more than there are: all 5 * 2 * 4 * 2 = 80 ordered inter-site host pairs
    assert len(probe_paths(plan, hosts=1000)) == 20 + 80
    assert len(probe_paths(plan, hosts=0)) == 20
    with pytest.raises(ValueError):
        probe_paths(plan, hosts=-1)


def test_echo_request_checksum_verifies_and_the_monitor_template_matches() -> None:
    for ident, seq in ((0, 0), (1, 65535), (0xBEEF, 12345)):
        payload = b"\x01\x02\x03\x04" + struct.pack("!I", ident)
        pkt = echo_request(ident, seq, payload)
        assert icmp_checksum(pkt) == 0  # a correct checksum makes the whole sum 0xffff
        assert pkt[0] == 8 and struct.unpack("!HH", pkt[4:8]) == (ident, seq)
        # the monitor's incremental checksum gives the same packet
        _, base = Monitor._template(ident, payload)
        assert probe_packet(base, ident, seq, payload) == pkt


def test_parse_uapi_and_net_dev() -> None:
    uapi = (
        "private_key=aa\nlisten_port=51820\npublic_key=bb\nendpoint=198.18.2.1:51820\n"
        "last_handshake_time_sec=100\nlast_handshake_time_nsec=5\nallowed_ip=10.1.0.0/24\n"
        "public_key=cc\nendpoint=[2001:db8::1]:51820\nlast_handshake_time_sec=0\nerrno=0\n\n"
    )
    peers = parse_uapi(uapi)
    assert [p["public_key"] for p in peers] == ["bb", "cc"]
    assert peers[0]["last_handshake_time_sec"] == "100"
    assert "private_key" not in peers[0]
    dev = (
        "Inter-|   Receive |  Transmit\n face |bytes packets ...|bytes packets ...\n"
        "    lo:       0       0    0    0    0     0          0         0        0       0"
        "    0    0    0     0       0          0\n"
        "wg6c2c030000:    6552     182    0    0    0     0          0         0     6888"
        "     189    0    0    0     0       0          0\n"
    )
    assert parse_net_dev(dev) == {"lo": (0, 0, 0, 0), "wg6c2c030000": (6552, 6888, 182, 189)}


def test_summary_matches_statistics(tmp_path: Path) -> None:
    rng = random.Random(7)
    samples = []
    for k in range(500):
        for path, ch in (("a->b", "overlay"), ("a->b", "underlay"), ("c->d", "overlay")):
            lost = rng.random() < (0.1 if ch == "overlay" else 0.0)
            rtt = None if lost else rng.lognormvariate(0, 0.5)
            samples.append(Sample(1000.0 + k, path, ch, path[0], path[-1], rtt))
    rows = summarize(samples)
    assert [(r.path, r.channel) for r in rows] == [
        ("a->b", "overlay"),
        ("a->b", "underlay"),
        ("c->d", "overlay"),
    ]
    for r in rows:
        mine = [s.rtt_ms for s in samples if (s.path, s.channel) == (r.path, r.channel)]
        ok = [x for x in mine if x is not None]
        q = statistics.quantiles(ok, n=100, method="inclusive")
        assert r.probes == 500 and r.lost == 500 - len(ok)
        assert r.loss_pct == pytest.approx(100 * (500 - len(ok)) / 500)
        assert r.median_ms == pytest.approx(statistics.median(ok), abs=1e-12)
        assert r.p95_ms == pytest.approx(q[94], abs=1e-12)
        assert r.p99_ms == pytest.approx(q[98], abs=1e-12)
        assert r.mean_ms == pytest.approx(statistics.fmean(ok))
    assert rows[1].lost == 0 and rows[0].lost > 0
    # a path with every probe lost has no percentiles
    none = summarize([Sample(1.0, "x->y", "overlay", "x", "y", None)])[0]
    assert none.median_ms is None and none.loss_pct == 100.0
    files = write_summary(rows, tmp_path / "out")
    assert json.loads(files[1].read_text())[0]["path"] == "a->b"
    assert files[0].read_text().splitlines()[0].startswith("path,channel,src,dst,probes")


def test_database_is_private_and_read_back_by_time(tmp_path: Path) -> None:
    con = open_db(tmp_path)
    with con:
        con.execute("INSERT INTO paths (path, channel, src, dst) VALUES ('a->b','overlay','a','b')")
        con.executemany(
            "INSERT INTO samples VALUES (?, 1, ?)",
            [(1.0, 0.5), (2.0, None), (10**10, 0.7)],  # the last one in the future
        )
    con.close()
    assert (tmp_path / "monitor.sqlite").stat().st_mode & 0o777 == 0o600
    every = read_samples(tmp_path)
    assert [s.rtt_ms for s in every] == [0.5, None, 0.7]
    assert [s.ts for s in read_samples(tmp_path, since_s=3600)] == [10**10]


def test_metrics_from_memory_events_jsonl_and_abw(tmp_path: Path) -> None:
    plan = plan_of()
    paths = probe_paths(plan, hosts=0)
    mon = Monitor(plan, tmp_path, paths)  # not opened: no socket, no lab needed
    mon.states[0].last_rtt_ms = 1.25
    for lost in (False, False, True, False):
        mon.states[0].window.append(lost)
    mon.states[0].sent, mon.states[0].lost = 4, 1
    record_event(tmp_path, "failover", "via os", site="aws", peer="az")
    record_event(tmp_path, "failover", site="aws", peer="az")
    record_event(tmp_path, "failback", site="aws", peer="az")
    # the gateway agents' own log is counted beside the table
    (tmp_path / "events.jsonl").write_text(
        json.dumps({"ts": 1.0, "kind": "failover", "site": "aws", "peer": "az", "via": None})
        + "\nnot json\n"
        + json.dumps(
            {"ts": 2.0, "kind": "takeover", "site": "aws", "gateway": "gateway-2", "peer": "x"}
        )
        + "\n"
    )
    record_abw(tmp_path, "os", "aws", "overlay", 1e8, 2e8, ts=1.0)
    record_abw(tmp_path, "os", "aws", "overlay", 3e8, 4e8, ts=2.0)  # the latest wins
    record_abw(tmp_path, "os", "aws", "underlay", 5e8, None, ts=1.0)
    reg = CollectorRegistry()
    reg.register(MetricsCollector(mon))
    text = generate_latest(reg).decode()
    p = paths[0]
    labels = f'channel="{p.channel}",dst="{p.dst}",path="{p.path}",src="{p.src}"'
    assert f"polynimbus_rtt_ms{{{labels}}} 1.25" in text
    assert f"polynimbus_probe_loss_ratio{{{labels}}} 0.25" in text
    assert f"polynimbus_probes_lost_total{{{labels}}} 1.0" in text
    assert text.count("polynimbus_rtt_ms{") == 1  # the other paths have no reply yet
    assert 'polynimbus_failover_events_total{kind="failover",peer="az",site="aws"} 3.0' in text
    assert 'polynimbus_failover_events_total{kind="failback",peer="az",site="aws"} 1.0' in text
    # the standby of a two-gateway site is told apart from the primary
    assert (
        'polynimbus_failover_events_total{kind="takeover",peer="x",site="aws/gateway-2"} 1.0'
        in text
    )
    assert 'polynimbus_abw_bps{bound="low",channel="overlay",dst="aws",src="os"} 3e+08' in text
    assert 'polynimbus_abw_bps{bound="high",channel="overlay",dst="aws",src="os"} 4e+08' in text
    assert 'polynimbus_abw_bps{bound="low",channel="underlay",dst="aws",src="os"} 5e+08' in text
    assert 'bound="high",channel="underlay"' not in text
    mon.close()


def test_record_needs_a_state_directory(tmp_path: Path) -> None:
    from polynimbus.errors import StateError

    with pytest.raises(StateError, match="no state directory"):
        record_event(tmp_path / "absent", "failover")
    with pytest.raises(StateError, match="no monitor data"):
        read_samples(tmp_path)
