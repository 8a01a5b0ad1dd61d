"""``polynimbus verify FILE [--json] [--throughput] [--seconds N]``."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from polynimbus.cli.app import IntentFile, Seconds, StateDir, app, err, handle_errors, out
from polynimbus.intent import load_intent
from polynimbus.orchestrate import lab_drift
from polynimbus.plan import Plan, build_plan
from polynimbus.targets.lab import list_lab_namespaces
from polynimbus.verify import VerifyReport, run_verify

MATRIX_MAX_HOSTS = 12


def gbps(v: float | None) -> str:
    """bit/s as ``1.23`` Gbit/s text, ``-`` for none."""
    return f"{v / 1e9:.2f}" if v else "-"


def print_report(plan: Plan, report: VerifyReport) -> None:
    """Reachability (a matrix of RTTs in ms, or the failures) and the throughput table."""
    hosts = [f"{s.name}/{h.name}" for s in plan.sites for h in s.hosts]
    cell = {(p.src, p.dst): p for p in report.pairs}
    if len(hosts) <= MATRIX_MAX_HOSTS:
        t = Table(title="Reachability: RTT in ms (row pings column)", title_justify="left")
        t.add_column("from \\ to")
        for i in range(len(hosts)):
            t.add_column(f"#{i + 1}", justify="right")
        for k, src in enumerate(hosts):
            row = []
            for dst in hosts:
                p = cell.get((src, dst))
                if p is None:
                    row.append("·")
                elif p.reachable:
                    row.append(f"{p.rtt_ms:.2f}")
                else:
                    row.append("[red]✗[/]")
            t.add_row(f"#{k + 1} {src}", *row)
        out.print(t)
    n_ok = sum(p.reachable for p in report.pairs)
    out.print(f"{n_ok}/{len(report.pairs)} host pairs reachable")
    for p in report.unreachable:
        out.print(f"[red]unreachable[/]: {p.src} -> {p.dst}")
    for d in report.drift:
        out.print(f"[red]drift[/]: {escape(d)}", soft_wrap=True)
    if report.throughput:
        t = Table(
            title="Throughput, one TCP flow each (iperf3), measured in one run",
            title_justify="left",
        )
        for col in ("sites", "overlay Gbit/s", "underlay Gbit/s", "overlay/underlay"):
            t.add_column(col, justify="right" if col != "sites" else "left")
        for r in report.throughput:
            t.add_row(
                f"{r.src} <-> {r.dst}",
                gbps(r.overlay_bps),
                gbps(r.underlay_bps),
                f"{r.ratio:.2f}" if r.ratio else "-",
            )
        out.print(t)
        out.print(
            "overlay: first host to first host through the tunnels; underlay: gateway "
            "to gateway over the emulated internet, no tunnel."
        )
    for w in report.warnings:
        out.print(f"[yellow]warning[/]: {escape(w)}", soft_wrap=True)


def run_and_print(
    plan: Plan, throughput: bool, seconds: int, as_json: bool, drift: list[str] | None = None
) -> VerifyReport:
    """Run verify with a spinner on stderr, then print the report (JSON on stdout when
    ``as_json``). ``seconds``: length of each iperf3 flow, s; ``drift``: see run_verify.

    Raises:
        VerifyError, CapabilityError, LabNotFoundError: as :func:`run_verify`.
    """
    with Progress(
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task("pinging every host from every host", total=None)

        def progress(text: str, i: int, n: int) -> None:
            bar.update(task, description=f"iperf3 {i + 1}/{n}: {text}")

        report = run_verify(
            plan, throughput=throughput, seconds=seconds, progress=progress, drift=drift
        )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        print_report(plan, report)
    return report


@app.command()
@handle_errors
def verify(
    file: IntentFile,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    throughput: Annotated[
        bool,
        typer.Option(
            "--throughput",
            help="Also run iperf3 between one host pair per site pair, next to "
            "the underlay (gateway to gateway, no tunnel) measured in the same run.",
        ),
    ] = False,
    seconds: Seconds = 2,
    state_dir: StateDir = None,
) -> None:
    """Ping every host from every other host; report reachability, RTT and drift.

    Drift: what differs between the running lab and the plan (a firewall table changed
    by hand, a missing route...), read from the kernel and compared item by item; 'up'
    repairs it.

    Needs root, the lab up, and at least two hosts (--throughput: two sites).

    Exit status: **0** every check passed; **1** a check failed (a host pair that does
    not reach, or the live lab differs from the plan: drift), the report says which;
    also **1** when verify could not run (not root, a tool missing, the lab not up, fewer
    than two hosts, a probe that failed or timed out), with an error: line on stderr and
    no report; **2** an invalid intent or command line (e.g. --seconds 0.5).
    """
    intent = load_intent(file)
    plan = build_plan(intent)
    drift = lab_drift(intent, state_dir) if list_lab_namespaces(plan.name) else []
    report = run_and_print(plan, throughput, seconds, json_, drift=drift)
    if not report.ok:
        raise typer.Exit(1)
