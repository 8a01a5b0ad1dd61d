"""``polynimbus verify FILE [--json] [--throughput] [--seconds N]``."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from polynimbus.cli.app import Seconds, StateDir, app, err, handle_errors, out
from polynimbus.intent import load_intent
from polynimbus.orchestrate import lab_drift
from polynimbus.plan import Plan, build_plan
from polynimbus.targets.lab import list_lab_namespaces
from polynimbus.verify import VerifyReport, run_verify

MATRIX_MAX_HOSTS = 12


def gbps(v: float | None) -> str:
    """bit/s as ``1.23`` Gbit/s text, ``-`` for none."""
    return f"{v / 1e9:.2f}" if v else "-"


def print_rtt_matrix(title: str, hosts: list[str], cell: Mapping[tuple[str, str], Any]) -> None:
    """A matrix of RTTs in ms, row pings column (up to :data:`MATRIX_MAX_HOSTS` hosts):
    ``cell[(src, dst)]`` has ``reachable`` and ``rtt_ms`` (and ``layer2``: marked L2)."""
    if len(hosts) > MATRIX_MAX_HOSTS:
        return
    t = Table(title=title, title_justify="left")
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
                row.append(f"{p.rtt_ms:.2f}" + (" L2" if getattr(p, "layer2", False) else ""))
            else:
                row.append("[red]✗[/]")
        t.add_row(f"#{k + 1} {src}", *row)
    out.print(t)


def print_report(plan: Plan, report: VerifyReport) -> None:
    """Reachability (a matrix of RTTs in ms, or the failures) and the throughput table."""
    hosts = [f"{s.name}/{h.name}" for s in plan.sites for h in s.hosts]
    cell = {(p.src, p.dst): p for p in report.pairs if p.family == "ipv4"}
    print_rtt_matrix("Reachability: RTT in ms (row pings column)", hosts, cell)
    for fam, label in (("ipv4", "IPv4"), ("ipv6", "IPv6")):
        pairs = [p for p in report.pairs if p.family == fam]
        if pairs:
            n_ok = sum(p.reachable for p in pairs)
            out.print(f"{n_ok}/{len(pairs)} host pairs reachable over {label}")
    for p in report.unreachable:
        out.print(f"[red]unreachable[/]: {p.src} -> {p.dst} ({p.family})")
    if report.chains:
        print_chains(report)
    if report.has_tenants:
        print_tenants(plan, report)
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


def print_tenants(plan: Plan, report: VerifyReport) -> None:
    """Per tenant, the reachability matrix (RTT in ms, L2 marks a layer-2 path); then the
    isolation matrix (row probes column: echo requests the column's hosts received)."""
    for tenant in plan.tenants:
        hosts = [h.key for _, h in tenant.hosts()]
        if len(hosts) < 2:
            continue
        cell = {(p.src, p.dst): p for p in report.tenant_pairs if p.tenant == tenant.name}
        print_rtt_matrix(
            f"Tenant {tenant.name}: RTT in ms (row pings column; L2: layer 2 across sites)",
            hosts,
            cell,
        )
        pairs = list(cell.values())
        out.print(
            f"tenant {tenant.name}: {sum(p.reachable for p in pairs)}/{len(pairs)} host "
            "pairs reachable"
        )
        for p in pairs:
            if not p.reachable:
                out.print(f"[red]unreachable[/]: {tenant.name}:{p.src} -> {p.dst}")
    if report.tenant_isolation:
        groups = list(dict.fromkeys([i.src for i in report.tenant_isolation]))
        cell_i = {(i.src, i.dst): i for i in report.tenant_isolation}
        t = Table(
            title="Isolation: echo requests received by the column's hosts while the row "
            "pinged all their addresses (must be 0)",
            title_justify="left",
        )
        t.add_column("from \\ to")
        for g in groups:
            t.add_column(g, justify="right")
        for a in groups:
            row = []
            for b in groups:
                iso = cell_i.get((a, b))
                if iso is None:
                    row.append("·")
                else:
                    got = sum(iso.received.values())
                    row.append("0" if iso.ok else f"[red]{got}[/]")
            t.add_row(a, *row)
        out.print(t)
        for iso in report.tenant_isolation:
            for host, n in iso.received.items():
                if n:
                    out.print(
                        f"[red]isolation[/]: {iso.dst} host {host} received {n} "
                        f"of {iso.src}'s probes"
                    )
            for host, n in iso.control.items():
                if not n:
                    out.print(
                        f"[red]isolation[/]: the control probe to {iso.dst} host {host} was not "
                        "counted either: the check proves nothing"
                    )


def print_chains(report: VerifyReport) -> None:
    """The chains table: each direction, its probe, and each hop's packet count."""
    t = Table(title="Service chains (packets each hop counted for the probe)", title_justify="left")
    for col in ("chain", "direction", "probe", "path: hop (packets)", "ok"):
        t.add_column(col)
    for c in report.chains:
        probe = []
        if c.ping is not None:
            probe.append("ping " + ("ok" if c.ping else "[red]failed[/]"))
        if c.tcp_bps is not None:
            probe.append(f"TCP {c.tcp_bps / 1e6:.0f} Mbit/s")
        if c.udp_echoed is not None:
            probe.append(f"UDP {c.udp_echoed} echoed")
        path = " -> ".join(
            f"{h.site}/{h.node} {h.behaviour} ({h.packets})"
            if h.packets > 0
            else f"[red]{h.site}/{h.node} {h.behaviour} (0)[/]"
            for h in c.hops
        )
        t.add_row(
            c.chain,
            f"{c.direction} ({c.family})",
            ", ".join(probe) or "-",
            f"{c.src} -> {path} -> {c.dst}",
            "[green]yes[/]" if c.ok else "[red]no[/]",
        )
    out.print(t)
    for c in report.chains:
        for e in c.errors:
            out.print(f"[red]chain {c.chain} {c.direction}[/]: {escape(e)}", soft_wrap=True)
    iso = report.isolation
    for name, n in (iso.control if iso is not None else {}).items():
        if not n:
            out.print(f"[red]isolation[/]: function {name}'s counter saw no chain probe either")
    if iso is not None and iso.pairs:
        if not any(iso.entered.values()):
            out.print(
                f"isolation: {len(iso.pairs)} host pairs outside every chain pinged; "
                "no packet entered a function"
            )
        else:
            for name, n in iso.entered.items():
                if n:
                    out.print(
                        f"[red]isolation[/]: {n} packets outside every chain entered "
                        f"function {name}"
                    )


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
            what = f"iperf3 {i + 1}/{n}: {text}" if n else text
            bar.update(task, description=what)

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
    file: Annotated[
        Path | None,
        typer.Argument(
            help="The intent YAML file (default: the running lab's own intent, as its "
            "last up, move or API change left it).",
            show_default=False,
        ),
    ] = None,
    lab: Annotated[
        str | None, typer.Option("--lab", help="Without FILE: the lab, when several are up.")
    ] = None,
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
    """Ping every host from every other host; prove every service chain; report
    reachability, RTT, chains and drift.

    On a dual-stack overlay every pair is pinged over IPv4 and IPv6. Each SRv6 chain gets
    a probe (ping and a bulk TCP transfer, or UDP datagrams to an echo responder, as its
    match allows) and every hop's counter
    must show it: the ingress gateway's classifier, each function in order, the egress
    gateway's decapsulation; replies prove a symmetric chain's reverse direction. Host
    pairs outside every chain are pinged and must add nothing to any function's counters.

    Tenants: every host of a tenant pings every other (across its networks and sites;
    L2 marks a layer-2 path); then each tenant, and the sites' own hosts, ping every
    address of each other tenant's hosts, whose kernels must count no echo request (a
    positive control from their router follows).

    Drift: what differs between the running lab and the plan (a firewall table changed
    by hand, a missing route...), read from the kernel and compared item by item; 'up'
    repairs it. A node of the plan missing from the lab is reported before any probe.

    Without FILE, the running lab's own intent is verified ('polynimbus verify --lab L').

    Needs root, the lab up, and at least two hosts (--throughput: two sites).

    Exit status: **0** every check passed; **1** a check failed (a host pair that does
    not reach, or the live lab differs from the plan: drift), the report says which;
    also **1** when verify could not run (not root, a tool missing, the lab not up, fewer
    than two hosts, a probe that failed or timed out), with an error: line on stderr and
    no report; **2** an invalid intent or command line (e.g. --seconds 0.5).
    """
    if file is None:
        from polynimbus.cli.trace import running_intent

        intent = running_intent(lab, usage="polynimbus verify FILE")
    else:
        intent = load_intent(file)
    plan = build_plan(intent)
    drift = lab_drift(intent, state_dir) if list_lab_namespaces(plan.name) else []
    report = run_and_print(plan, throughput, seconds, json_, drift=drift)
    if not report.ok:
        raise typer.Exit(1)
