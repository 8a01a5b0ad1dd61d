"""``polynimbus move TENANT:SITE/HOST SITE``."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from polynimbus.cli.app import StateDir, app, err, handle_errors, out


@app.command()
@handle_errors
def move(
    host: Annotated[
        str,
        typer.Argument(
            help="The tenant host, TENANT:SITE/HOST.",
            metavar="TENANT:SITE/HOST",
            show_default=False,
        ),
    ],
    site: Annotated[
        str, typer.Argument(help="The site to move it to.", metavar="SITE", show_default=False)
    ],
    lab: Annotated[str | None, typer.Option("--lab", help="The lab, when several are up.")] = None,
    probe_from: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="TENANT:SITE/HOST that pings the moving host to measure the downtime "
            "(default: another host of its network, else of its tenant).",
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Move a tenant's workload to another site of its layer-2 network, live.

    The host keeps its namespace, its processes and their open TCP connections, its IP
    and its MAC (seed 001's migration): a new link to the tenant's router on SITE is made
    first, then the host switches over, announces itself (gratuitous ARP), and the
    routers converge. Another host of the tenant pings it every 10 ms meanwhile; the
    downtime printed is the longest gap between replies, less one interval.

    The lab's intent is updated (see it with 'polynimbus export'); your intent file is
    not touched. Moving into a site the network does not span is an error that says how
    to extend the network.

    Examples:

      polynimbus move acme:i3s/c1 aws-fra --lab tenants

      polynimbus move acme:aws-fra/c1 i3s --lab tenants --from acme:i3s/web-1
    """
    from polynimbus.cli.trace import running_intent
    from polynimbus.move import move_host

    intent = running_intent(lab, usage="polynimbus up FILE (it keeps the lab's intent)")

    def progress(line: str) -> None:
        if not json_:
            err.print(f"  {line}", markup=False)

    result = move_host(intent, host, site, state_dir, progress, probe_from)
    doc = {
        "host": result.host,
        "correspondent": result.correspondent,
        "sent": result.sent,
        "received": result.received,
        "downtime_ms": result.downtime_ms,
        "switch_ms": result.switch_ms,
        "total_s": result.total_s,
        "changes": [c.describe() for c in result.changes],
    }
    if json_:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    out.print(f"moved {host} to {site}: now {result.host} ({result.total_s:.1f} s)")
    if result.downtime_ms is not None:
        lost = result.sent - result.received
        out.print(
            f"downtime {result.downtime_ms:.0f} ms, seen from {result.correspondent} "
            f"({lost} of {result.sent} echo requests every 10 ms lost; switch-over "
            f"{result.switch_ms:.0f} ms)"
        )
    elif result.correspondent is None:
        out.print("downtime not measured: the tenant has no other host to ping from")
    else:
        out.print(f"downtime not measured: {result.correspondent} got no replies")
