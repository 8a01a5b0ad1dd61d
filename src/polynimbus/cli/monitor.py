"""``polynimbus monitor FILE [--interval 1] [--metrics 127.0.0.1:9464] [--duration S]``."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from polynimbus import capabilities
from polynimbus.cli.app import StateDir, app, err, handle_errors
from polynimbus.errors import PolynimbusError
from polynimbus.intent import Intent, load_intent
from polynimbus.plan import build_plan


def lab_intent(file: Path | None, lab: str | None, usage: str) -> Intent:
    """The intent of ``file``, or of the running lab ``lab`` (its last up) without one.

    Raises:
        IntentError, LabNotFoundError: as load_intent and running_intent.
    """
    if file is not None:
        return load_intent(file)
    from polynimbus.cli.trace import running_intent

    return running_intent(lab, usage=usage)


def state_dir_of(lab: str, override: Path | None) -> Path:
    """``--state-dir``, else the one the lab's ``up`` noted, else the default."""
    from polynimbus.snapshot.lab import lab_state_dir

    return lab_state_dir(lab, override)


MIN_INTERVAL_S = 0.05
"""Shortest ``--interval``, s: faster probing floods the lab (a typo like 0.0001 would
send tens of thousands of packets a second through the emulated internet)."""


def _positive(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise typer.BadParameter("must be a number of seconds > 0")
    return value


def _interval(value: float) -> float:
    _positive(value)
    if value < MIN_INTERVAL_S:
        raise typer.BadParameter(f"must be at least {MIN_INTERVAL_S} s (one probe per path)")
    return value


def _listen(value: str) -> str:
    from polynimbus.verify.monitor import parse_listen

    try:
        parse_listen(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@app.command()
@handle_errors
def monitor(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="The intent YAML file (default: the running lab's own intent).",
            show_default=False,
        ),
    ] = None,
    lab: Annotated[
        str | None, typer.Option("--lab", help="Without FILE: the lab, when several are up.")
    ] = None,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            help=f"Seconds between two probes of a path (at least {MIN_INTERVAL_S}).",
            callback=_interval,
        ),
    ] = 1.0,
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            help="Serve Prometheus metrics on HOST:PORT (/metrics); port 0 picks a free one.",
            callback=_listen,
        ),
    ] = "127.0.0.1:9464",
    hosts: Annotated[
        int,
        typer.Option("--hosts", help="Inter-site host pairs probed too (a fixed sample).", min=0),
    ] = 6,
    counters: Annotated[
        float,
        typer.Option(
            "--counters",
            help="Seconds between two stored reads of the tunnel counters.",
            callback=_positive,
        ),
    ] = 10.0,
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="Stop after this many seconds (default: never)."),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Probe a running lab continuously; keep the series; serve Prometheus metrics.

    Every interval, one ICMP echo per path: every gateway pair through the overlay
    (overlay address to overlay address, through the tunnels) and over the underlay
    (public address to public address, the plain internet), and a fixed sample of
    inter-site host pairs (--hosts). A probe whose reply does not arrive within one
    interval is lost. Probes leave from raw sockets opened once in each node's
    namespace; no process is started per probe.

    The series go to monitor.sqlite in the lab's state directory ('polynimbus report'
    draws them). /metrics has the last RTT (polynimbus_rtt_ms), the loss over the last
    60 probes, the tunnels' byte and packet counters, WireGuard handshake ages, the
    latest available-bandwidth estimates and the failover events.

    Stops cleanly on Ctrl-C or SIGTERM (or after --duration), exit 0.

    Examples:

      polynimbus monitor examples/prestocloud.yaml --duration 3 --interval 0.5

    Without --duration it runs until Ctrl-C or SIGTERM; meanwhile, from another shell:
    `curl -s 127.0.0.1:9464/metrics | grep polynimbus_rtt_ms`.

    Needs root and the lab up. Exit status: 0 stopped; 1 the lab is not up, not root, or
    the metrics address is taken; 2 a bad option.
    """
    from polynimbus.verify.monitor import (
        Monitor,
        check_lab_up,
        parse_listen,
        paths_summary,
        probe_paths,
        serve_metrics,
    )

    if duration is not None and (not math.isfinite(duration) or duration <= 0):
        raise typer.BadParameter("must be a number of seconds > 0", param_hint="--duration")
    capabilities.require_root("monitor")
    intent = lab_intent(file, lab, "polynimbus monitor FILE")
    plan = build_plan(intent)
    if len(plan.sites) < 2:
        raise PolynimbusError(
            f"lab {plan.name!r} has one site: no path to probe", "monitor needs two sites"
        )
    check_lab_up(plan)
    sdir = state_dir_of(plan.name, state_dir)
    paths = probe_paths(plan, hosts=hosts)
    host, port = parse_listen(metrics)
    mon = Monitor(plan, sdir, paths, interval_s=interval, counters_s=counters)
    mon.open()
    server: Any = None
    old: dict[signal.Signals, Any] = {}
    try:
        server, _ = serve_metrics(mon, host, port)
        shown = server.server_address[1]
        kinds = paths_summary(paths)
        err.print(
            f"monitoring lab {plan.name}: {len(paths)} paths ({kinds['gateway-overlay']} "
            f"gateway pairs over the overlay and the underlay, {kinds['host']} host pairs) "
            f"every {interval:g} s; metrics on http://{host}:{shown}/metrics; series in "
            f"{sdir / 'monitor.sqlite'}; Ctrl-C or SIGTERM stops",
            markup=False,
            soft_wrap=True,
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda *_: mon.stop())
        mon.run(duration_s=duration)
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
        if server is not None:
            server.shutdown()
            server.server_close()
        mon.close()
    sent = sum(s.sent for s in mon.states)
    lost = sum(s.lost for s in mon.states)
    skipped = (
        f", {mon.skipped} not sent (the machine was too busy to send them on time)"
        if mon.skipped
        else ""
    )
    err.print(f"stopped: {sent} probes stored, {lost} lost{skipped}", markup=False)
