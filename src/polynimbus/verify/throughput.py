"""Throughput with iperf3: through the overlay (host to host across sites) and over the
underlay (gateway to gateway on their public addresses, no tunnel), in the same run so the
two can be compared (this machine is noisy: compare ratios, not absolute figures)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from polynimbus import names
from polynimbus.errors import VerifyError
from polynimbus.plan.model import Plan, SitePlan
from polynimbus.render.nftables import FAMILY, PROBE_SET, TABLE
from polynimbus.verify.proc import STUCK_HINT, ns_argv, run_in_ns

IPERF_PORT = 5201
PROBE_TIMEOUT_S = 60
"""Lifetime of an ``underlay_probe`` set element, in s (it only has to admit the SYN)."""
SERVER_START_S = 5.0
"""How long the client keeps retrying while the iperf3 server starts, in s."""
SERVER_STOP_S = 5.0
"""How long to wait for the killed iperf3 server to exit, in s."""
CONNECT_TIMEOUT_MS = 3000
"""iperf3 client ``--connect-timeout``, in ms."""
IPERF_MARGIN_S = 10.0
"""Slack on an iperf3 client's deadline beyond the flow and the connect, in s."""
NFT_TIMEOUT_S = 5.0
"""Deadline of one ``nft`` command, in s."""

Progress = Callable[[str, int, int], None]
"""``progress(text, index, total)``, called before each site pair is measured."""


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


def check_seconds(seconds: float) -> int:
    """The length of an iperf3 flow as iperf3 takes it: a whole number of seconds >= 1
    (iperf3 reads ``-t`` as an integer, and ``-t 0`` runs forever).

    Accepts an ``int`` or an integral ``float`` (``3.0``); returns it as ``int``.

    Raises:
        VerifyError: ``seconds`` is not a whole number >= 1.
    """
    ok = (
        not isinstance(seconds, bool)
        and isinstance(seconds, int | float)
        and float(seconds).is_integer()
        and seconds >= 1
    )
    if not ok:
        raise VerifyError(
            f"the length of an iperf3 flow must be a whole number of seconds >= 1, not {seconds!r}",
            "use e.g. --seconds 2",
        )
    return int(seconds)


def iperf3_client_timeout_s(seconds: int) -> float:
    """Deadline of one iperf3 client run, in s: the flow, the connect, and the margin."""
    return seconds + CONNECT_TIMEOUT_MS / 1000 + IPERF_MARGIN_S


def _stop_server(server: subprocess.Popen[str], ns: str, strict: bool) -> None:
    """Kill the iperf3 server and wait for it; if it does not exit within SERVER_STOP_S,
    raise VerifyError when ``strict`` (else leave it: another error is on its way)."""
    server.kill()
    try:
        server.wait(timeout=SERVER_STOP_S)
    except subprocess.TimeoutExpired:
        if strict:
            raise VerifyError(
                f"the iperf3 server in {ns} (pid {server.pid}) did not exit within "
                f"{SERVER_STOP_S:g} s of being killed",
                STUCK_HINT,
            ) from None
    finally:
        if server.stderr is not None:
            server.stderr.close()


def iperf3(
    client_ns: str, server_ns: str, server_addr: str, seconds: int = 2, port: int = IPERF_PORT
) -> float:
    """One TCP flow of ``seconds`` (s) from ``client_ns`` to an iperf3 server started in
    ``server_ns`` on ``server_addr``; returns the received rate in bit/s.

    The client connects with ``--connect-timeout`` :data:`CONNECT_TIMEOUT_MS` and is killed
    after :func:`iperf3_client_timeout_s`; the server is killed when the flow is over.

    Raises:
        VerifyError: ``seconds`` is not a whole number >= 1; the server did not start; the
            client failed or did not finish in time.
    """
    seconds = check_seconds(seconds)
    server = subprocess.Popen(
        ns_argv(server_ns, "iperf3", "-s", "-1", "-B", server_addr, "-p", str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rate = _client(client_ns, server_ns, server, server_addr, seconds, port)
    except BaseException:
        _stop_server(server, server_ns, strict=False)
        raise
    _stop_server(server, server_ns, strict=True)
    return rate


def _client(
    client_ns: str,
    server_ns: str,
    server: subprocess.Popen[str],
    server_addr: str,
    seconds: int,
    port: int,
) -> float:
    """Run the client, retrying while the server is still starting; bit/s."""
    deadline = time.monotonic() + SERVER_START_S
    what = f"iperf3 from {client_ns} to {server_addr}"
    while True:
        res = run_in_ns(
            client_ns,
            [
                "iperf3",
                "-c",
                server_addr,
                "-p",
                str(port),
                "-t",
                str(seconds),
                "--connect-timeout",
                str(CONNECT_TIMEOUT_MS),
                "-J",
            ],
            iperf3_client_timeout_s(seconds),
            what,
        )
        try:
            data = json.loads(res.stdout)
        except json.JSONDecodeError:
            data = {"error": res.stderr.strip() or "no output"}
        if not isinstance(data, dict):
            data = {"error": "unexpected output"}
        if "error" not in data:
            try:
                return float(data["end"]["sum_received"]["bits_per_second"])
            except (KeyError, TypeError, ValueError):
                raise VerifyError(f"{what}: no received rate in iperf3's report") from None
        refused = "connect" in str(data["error"])
        if refused and server.poll() is not None:
            said = server.stderr.read().strip() if server.stderr else ""
            raise VerifyError(
                f"the iperf3 server in {server_ns} on {server_addr}:{port} exited "
                f"({server.returncode}): {said or 'no output'}",
                f"is port {port} taken in {server_ns}? polynimbus exec can look",
            )
        if not refused or time.monotonic() > deadline:
            raise VerifyError(f"{what} failed: {data['error']}")
        time.sleep(0.1)


def _first_line(text: str) -> str:
    """nft's message: its first non-empty line (the next ones echo the command)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _probe_element(src_addr: str, port: int, timeout: bool) -> str:
    life = f" timeout {PROBE_TIMEOUT_S}s" if timeout else ""
    return f"{{ {src_addr} . {port}{life} }}"


def _open_probe(site: SitePlan, gw_ns: str, src_addr: str, port: int) -> None:
    """Admit TCP ``port`` from ``src_addr`` on the gateway's internet side for
    :data:`PROBE_TIMEOUT_S` (an element of the ``underlay_probe`` set).

    Raises:
        VerifyError: nft failed (with its stderr) or did not finish in time.
    """
    res = run_in_ns(
        gw_ns,
        ["nft", "add", "element", FAMILY, TABLE, PROBE_SET, _probe_element(src_addr, port, True)],
        NFT_TIMEOUT_S,
        f"nft on the gateway of {site.name} ({gw_ns})",
    )
    if res.returncode != 0:
        said = _first_line(res.stderr) or f"exit status {res.returncode}"
        raise VerifyError(
            f"could not open port {port} for {src_addr} on the gateway of {site.name} "
            f"({gw_ns}): nft: {said}",
            "the gateway's ruleset is missing or not the planned one; "
            "polynimbus up FILE repairs it",
        )


def _close_probe(site: SitePlan, gw_ns: str, src_addr: str, port: int) -> str | None:
    """Remove the element :func:`_open_probe` added; a warning text if that failed (the
    element expires by itself after :data:`PROBE_TIMEOUT_S`), else ``None``."""
    try:
        res = run_in_ns(
            gw_ns,
            ["nft", "delete", "element", FAMILY, TABLE, PROBE_SET]
            + [_probe_element(src_addr, port, False)],
            NFT_TIMEOUT_S,
            f"nft on the gateway of {site.name} ({gw_ns})",
        )
    except VerifyError as exc:
        said = exc.message
    else:
        if res.returncode == 0:
            return None
        said = "nft: " + (_first_line(res.stderr) or f"exit status {res.returncode}")
    return (
        f"could not close port {port} for {src_addr} on the gateway of {site.name} "
        f"({gw_ns}): {said}; it closes by itself within {PROBE_TIMEOUT_S} s"
    )


def require_site_pairs(plan: Plan) -> None:
    """Raise unless the plan has at least two sites (a site pair to measure).

    Raises:
        VerifyError: fewer than two sites.
    """
    if len(plan.sites) < 2:
        raise VerifyError(
            f"nothing to measure: --throughput compares sites, and the lab {plan.name!r} "
            f"has {len(plan.sites)}",
            "add a second site to the intent, or leave out --throughput",
        )


def measure_pairs(
    plan: Plan,
    seconds: int = 2,
    progress: Progress | None = None,
    warnings: list[str] | None = None,
) -> list[ThroughputResult]:
    """For every unordered site pair, one overlay flow (first host to first host, when both
    sites have hosts) and one underlay flow (gateway to gateway), run one at a time.

    Args:
        seconds: length of each flow, in s (a whole number >= 1).
        progress: optional callable ``(text, index, total)``.
        warnings: where to append problems that did not stop the measurement (a probe
            port that could not be closed).

    Returns:
        one result per site pair, in plan order.

    Raises:
        VerifyError: fewer than two sites; ``seconds`` invalid; a flow failed or timed out;
            the probe port could not be opened on a gateway.
    """
    require_site_pairs(plan)
    seconds = check_seconds(seconds)
    lab = plan.name
    pairs = [(a, b) for i, a in enumerate(plan.sites) for b in plan.sites[i + 1 :]]
    out = []
    for k, (a, b) in enumerate(pairs):
        if progress is not None:
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
        _open_probe(b, gw_b, a.public_address, IPERF_PORT)
        try:
            underlay = iperf3(gw_a, gw_b, b.public_address, seconds)
        finally:
            warning = _close_probe(b, gw_b, a.public_address, IPERF_PORT)
            if warning and warnings is not None:
                warnings.append(warning)
        out.append(ThroughputResult(a.name, b.name, overlay, underlay))
    return out
