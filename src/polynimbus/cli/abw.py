"""``polynimbus abw FILE SITE1 SITE2 [--channel overlay|underlay] [--json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from polynimbus import capabilities
from polynimbus.cli.app import IntentFile, StateDir, app, err, handle_errors, out
from polynimbus.errors import LabNotFoundError, PolynimbusError
from polynimbus.intent import load_intent
from polynimbus.plan import build_plan
from polynimbus.targets.lab import list_lab_namespaces
from polynimbus.verify.abw import CHANNELS, AbwResult, Channel, estimate, resolve_sites


def mbps(v: float) -> str:
    """bit/s as Mbit/s text."""
    return f"{v / 1e6:.1f}"


def print_result(r: AbwResult) -> None:
    """The range, its middle, the time and the bytes, in a few lines."""
    state = "converged" if r.converged else "[yellow]not converged[/] (time or fleets ran out)"
    out.print(
        f"available bandwidth {r.src} -> {r.dst} ({r.channel}): "
        f"[bold]{mbps(r.low_bps)} - {mbps(r.high_bps)} Mbit/s[/] "
        f"(middle {mbps(r.estimate_bps)}), {state}"
    )
    out.print(
        f"took {r.seconds:.1f} s, sent {r.bytes_sent / 1e6:.2f} MB of probes in {r.fleets} "
        f"fleets (ADR {mbps(r.adr_bps or 0)} Mbit/s; {r.streams_discarded} streams "
        "discarded: the sender was disturbed)"
    )
    out.print(
        "IP-layer rates; probe bytes include IP and UDP headers; the control channel sends "
        "nothing over the path."
    )


def _record(state_dir: Path | None, name: str, r: AbwResult) -> str | None:
    """Store the estimate for ``polynimbus monitor`` in the lab's state directory; a
    warning text when that failed, else ``None``."""
    from polynimbus import state
    from polynimbus.verify.monitor import record_abw

    sdir = state_dir or state.recorded_state_dir(name)
    if sdir is None or not sdir.is_dir():
        return None
    try:
        record_abw(sdir, r.src, r.dst, r.channel, r.low_bps, r.high_bps)
    except PolynimbusError as exc:
        return f"the estimate was not recorded for monitor: {exc.message}"
    return None


@app.command()
@handle_errors
def abw(
    file: IntentFile,
    site1: Annotated[str, typer.Argument(help="The sending site.", show_default=False)],
    site2: Annotated[str, typer.Argument(help="The receiving site.", show_default=False)],
    channel: Annotated[
        str,
        typer.Option(
            "--channel",
            help="underlay: gateway to gateway on their public addresses, no tunnel; "
            "overlay: between the gateways' overlay addresses, through the tunnel.",
        ),
    ] = "underlay",
    json_: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print {"low_bps", "high_bps", "seconds", "bytes_sent", "converged", ...}.',
        ),
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Estimate the available bandwidth from SITE1's gateway to SITE2's, with self-loading
    periodic streams (SLoPS, as Pathload: seed 003 §4.3.3).

    FILE comes first, as for every other command (the lab of that intent must be up).
    A few back-to-back packet trains give the dispersion rate, an upper bound; then
    fleets of periodic UDP streams probe one rate each: when the rate is above the
    available bandwidth, the one-way delays of a stream's packets grow (the tight link's
    queue fills). A binary search on the rate narrows the range [low, high] to 8 % of its
    middle, in a few seconds (at most 9) and about a megabyte at 100 Mbit/s.

    Rates are IP-layer bit/s. The estimate is also recorded in the lab's state directory
    for polynimbus monitor.

    Example:

      polynimbus abw examples/federation.yaml aalto nec-hd --channel underlay

    Exit status: 0 an estimate (converged or not: see converged); 1 it could not run
    (not root, the lab not up, an unknown site, the same site twice); 2 an invalid intent
    or command line; 130 interrupted (Ctrl-C).
    """
    if channel not in CHANNELS:
        raise typer.BadParameter(
            f"{channel!r} is not one of: {', '.join(CHANNELS)}", param_hint="--channel"
        )
    plan = build_plan(load_intent(file))
    resolve_sites(plan, site1, site2)
    capabilities.require_root("abw")
    capabilities.require_tools(["ip", "nft"])
    if not list_lab_namespaces(plan.name):
        raise LabNotFoundError(f"the lab {plan.name!r} is not up", f"run: polynimbus up {file}")
    chan: Channel = "overlay" if channel == "overlay" else "underlay"
    try:
        with Progress(
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=json_,
        ) as bar:
            task = bar.add_task("abw", total=None)
            result = estimate(
                plan, site1, site2, chan, progress=lambda t: bar.update(task, description=t)
            )
    except KeyboardInterrupt:
        err.print(
            "\ninterrupted: no estimate (the sender and receiver are stopped, the probe port "
            "closed again).",
            markup=False,
        )
        raise typer.Exit(130) from None
    warning = _record(state_dir, plan.name, result)
    if json_:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        print_result(result)
    if warning:
        err.print(f"warning: {warning}", markup=False)
