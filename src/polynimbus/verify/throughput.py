"""Throughput with iperf3: through the overlay (host to host across sites) and over the
underlay (gateway to gateway on their public addresses, no tunnel), in the same run so the
two can be compared (this machine is noisy: compare ratios, not absolute figures)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass

from polynimbus import names
from polynimbus.errors import VerifyError
from polynimbus.plan.model import Plan
from polynimbus.render.nftables import FAMILY, PROBE_SET, TABLE

IPERF_PORT = 5201
PROBE_TIMEOUT_S = 60


@dataclass(frozen=True)
class ThroughputResult:
    """One site pair: TCP throughput in bit/s through the overlay and over the underlay."""

    src: str
    dst: str
    overlay_bps: float | None
    underlay_bps: float | None

    @property
    def ratio(self) -> float | None:
        """overlay / underlay, or ``None``."""
        if self.overlay_bps and self.underlay_bps:
            return self.overlay_bps / self.underlay_bps
        return None


def iperf3(
    client_ns: str, server_ns: str, server_addr: str, seconds: float = 2.0, port: int = IPERF_PORT
) -> float:
    """One TCP flow of ``seconds`` from ``client_ns`` to an iperf3 server started in
    ``server_ns`` on ``server_addr``; returns the received rate in bit/s.

    Raises:
        VerifyError: the server did not start or the client failed.
    """
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            server_ns,
            "iperf3",
            "-s",
            "-1",
            "-B",
            server_addr,
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            res = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    client_ns,
                    "iperf3",
                    "-c",
                    server_addr,
                    "-p",
                    str(port),
                    "-t",
                    str(seconds),
                    "-J",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            try:
                data = json.loads(res.stdout)
            except json.JSONDecodeError:
                data = {"error": res.stderr.strip() or "no output"}
            if "error" not in data:
                return float(data["end"]["sum_received"]["bits_per_second"])
            if "connect" not in str(data["error"]) or time.monotonic() > deadline:
                raise VerifyError(
                    f"iperf3 from {client_ns} to {server_addr} failed: {data['error']}"
                )
            time.sleep(0.1)
    finally:
        server.kill()
        server.wait()


def _open_probe(gw_ns: str, src_addr: str, port: int) -> None:
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            gw_ns,
            "nft",
            "add",
            "element",
            FAMILY,
            TABLE,
            PROBE_SET,
            f"{{ {src_addr} . {port} timeout {PROBE_TIMEOUT_S}s }}",
        ],
        capture_output=True,
        check=False,
    )


def _close_probe(gw_ns: str, src_addr: str, port: int) -> None:
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            gw_ns,
            "nft",
            "delete",
            "element",
            FAMILY,
            TABLE,
            PROBE_SET,
            f"{{ {src_addr} . {port} }}",
        ],
        capture_output=True,
        check=False,
    )


def measure_pairs(
    plan: Plan, seconds: float = 2.0, progress: object = None
) -> list[ThroughputResult]:
    """For every unordered site pair, one overlay flow (first host to first host) and one
    underlay flow (gateway to gateway), run one at a time.

    Args:
        progress: optional callable ``(text, index, total)``.
    """
    lab = plan.name
    pairs = [(a, b) for i, a in enumerate(plan.sites) for b in plan.sites[i + 1 :]]
    out = []
    for k, (a, b) in enumerate(pairs):
        if callable(progress):
            progress(f"{a.name} -> {b.name}", k, len(pairs))
        overlay = None
        if a.hosts and b.hosts:
            overlay = iperf3(
                names.host_ns(lab, a.name, a.hosts[0].name),
                names.host_ns(lab, b.name, b.hosts[0].name),
                b.hosts[0].address,
                seconds,
            )
        gw_a, gw_b = names.gateway_ns(lab, a.name), names.gateway_ns(lab, b.name)
        _open_probe(gw_b, a.public_address, IPERF_PORT)
        try:
            underlay = iperf3(gw_a, gw_b, b.public_address, seconds)
        finally:
            _close_probe(gw_b, a.public_address, IPERF_PORT)
        out.append(ThroughputResult(a.name, b.name, overlay, underlay))
    return out
