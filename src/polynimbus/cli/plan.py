"""``polynimbus plan FILE [--json]``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from polynimbus.cli.app import IntentFile, app, handle_errors, out
from polynimbus.intent import load_intent
from polynimbus.plan import Plan, build_plan
from polynimbus.tunnels import get_transport


def print_plan(plan: Plan) -> None:
    """The plan as tables: overlay, sites, tunnels, routes per gateway."""
    out.print(
        f"[bold]{plan.name}[/]: {len(plan.sites)} sites, {plan.topology} "
        f"({len(plan.tunnels)} tunnels), {plan.transport} on UDP {plan.port}; "
        f"address space {plan.address_space}"
    )
    out.print(
        f"tunnel MTU {plan.tunnel_mtu} bytes (underlay {plan.underlay_mtu}); "
        f"TCP MSS clamped to {plan.mss} bytes" + (f"; hub {plan.hub}" if plan.hub else "")
    )
    t = Table(title="Numbering plan", title_justify="left")
    for col in ("site", "provider", "block", "gateway", "public", "hosts"):
        t.add_column(col)
    for s in plan.sites:
        t.add_row(
            s.name,
            s.provider,
            s.block,
            s.gateway_address,
            s.public_address,
            ", ".join(f"{h.name} {h.address}" for h in s.hosts) or "-",
        )
    out.print(t)
    t = Table(title="Tunnels", title_justify="left")
    with_vni = get_transport(plan.transport).vni_per_tunnel
    for col in ("a", "b", "km") + (("vni",) if with_vni else ()):
        t.add_column(col)
    for tun in plan.tunnels:
        row = [plan.sites[tun.a].name, plan.sites[tun.b].name, f"{tun.distance_km:.0f}"]
        if with_vni:
            row.append(str(tun.vni))
        t.add_row(*row)
    out.print(t)
    t = Table(title="Routes (per gateway)", title_justify="left")
    for col in ("gateway", "prefix", "to", "via", "next hop"):
        t.add_column(col)
    for s in plan.sites:
        for r in plan.routes(s):
            t.add_row(
                s.name,
                r["prefix"],
                r["destination"],
                r["via"] + (" (transit)" if r["transit"] else ""),
                r["next_hop"],
            )
    out.print(t)


@app.command()
@handle_errors
def plan(
    file: IntentFile,
    json_: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the plan as JSON (schema polynimbus.plan/v1, docs/plan-schema.md).",
        ),
    ] = False,
) -> None:
    """Show the plan: numbering plan, tunnels, routes with transit, MTU and MSS.

    Each site's block, its gateway and host addresses, which gateways peer, each gateway's
    routes (with transit), tunnel MTU and TCP MSS. Pure: touches nothing.
    """
    p = build_plan(load_intent(file))
    if json_:
        sys.stdout.write(p.to_json())
    else:
        print_plan(p)
