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
    backend = get_transport(plan.transport)
    low, high = backend.port_range(plan.port, plan.parallel, len(plan.sites))
    ports = f"UDP {low}" + (f"-{high}" if high > low else "")
    if plan.parallel > 1:
        ports += f", {plan.parallel} tunnels per pair"
    out.print(
        f"[bold]{plan.name}[/]: {len(plan.sites)} sites, {plan.topology} "
        f"({len(plan.tunnels)} tunnel{'' if len(plan.tunnels) == 1 else 's'}), "
        f"{plan.transport} on {ports}; "
        f"address space {plan.address_space}"
    )
    out.print(
        f"{plan.transport} on this machine: {backend.implementation_note(backend.implementation())}"
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
            s.block + (f"\n{s.block6}" if s.block6 else ""),
            s.gateway_address + (f"\n{s.gateway_address6}" if s.gateway_address6 else ""),
            s.public_address + (f"\n{s.public_address6}" if s.public_address6 else ""),
            ", ".join(
                f"{h.name} {h.address}" + (f" {h.address6}" if h.address6 else "") for h in s.hosts
            )
            or "-",
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
    if plan.failover:
        from polynimbus.plan import failover

        t = Table(
            title="Failover detours (used after "
            f"{failover.DOWN_AFTER * failover.PROBE_INTERVAL_MS} ms of silence)",
            title_justify="left",
        )
        for col in ("tunnel", "detours (in order)"):
            t.add_column(col)
        for tun in plan.tunnels:
            via = [plan.sites[i].name for i in failover.detours(plan, tun.a, tun.b)]
            t.add_row(f"{plan.sites[tun.a].name} - {plan.sites[tun.b].name}", ", ".join(via))
        out.print(t)
    if any(s.standby for s in plan.sites):
        print_standby_plan(plan)
    if plan.srv6 is not None:
        print_srv6(plan)
    if plan.tenants:
        print_tenants_plan(plan)


def print_standby_plan(plan: Plan) -> None:
    """The sites with two gateways: each gateway's own LAN and public addresses, and the
    shared gateway address keepalived moves between them."""
    t = Table(
        title="Two gateways (gateways: 2; VRRP keeps the shared address)", title_justify="left"
    )
    for col in ("site", "shared", "gateway (own, public)", "gateway-2 (own, public)", "VRID"):
        t.add_column(col)
    for s in plan.sites:
        if s.standby is None:
            continue
        sb = s.standby
        t.add_row(
            s.name,
            s.gateway_address,
            f"{sb.primary_address}, {s.public_address}",
            f"{sb.address}, {sb.public_address}",
            str(sb.vrid),
        )
    out.print(t)


def print_tenants_plan(plan: Plan) -> None:
    """Each tenant's networks: subnet, VNI, sites (layer 2 when several), router and hosts."""
    out.print(
        f"tenants: {len(plan.tenants)}; every tenant interface has MTU {plan.tenant_mtu} "
        f"bytes (tunnel MTU {plan.tunnel_mtu} less 50 bytes of VXLAN); TCP MSS "
        f"{plan.tenant_mtu - 40}"
    )
    t = Table(
        title="Tenant networks (router: the last usable address of each subnet)",
        title_justify="left",
    )
    for col in ("tenant", "network", "subnet", "VNI", "sites", "hosts"):
        t.add_column(col)
    for tenant in plan.tenants:
        rate = f"\n{tenant.rate_bps / 1e6:g} Mbit/s" if tenant.rate_bps else ""
        for n in tenant.networks:
            t.add_row(
                tenant.name + rate,
                n.name,
                n.subnet,
                str(n.vni),
                "\n".join(n.sites) + ("\n(layer 2)" if n.layer2 else ""),
                "\n".join(f"{h.key} {h.address}" for h in n.hosts) or "-",
            )
    out.print(t)


def print_srv6(plan: Plan) -> None:
    """SID blocks, every SID with its behaviour, and each chain's segment lists."""
    sr = plan.srv6
    assert sr is not None
    how = "inside the tunnels" if sr.carrier == "tunnels" else "in clear over the underlay"
    out.print(
        f"SRv6: carried {how}; SID blocks " + ", ".join(f"{k} {v}" for k, v in sr.blocks.items())
    )
    t = Table(title="SIDs", title_justify="left")
    for col in ("SID", "site", "node", "behaviour", "for"):
        t.add_column(col, overflow="fold")
    for x in sr.sids:
        what = f"{x.chain} {x.direction}" if x.chain else "decapsulate to the site"
        t.add_row(x.sid, x.site, x.node, x.behaviour, what)
    out.print(t)
    t = Table(title="Chains (segment lists in travel order)", title_justify="left")
    for col in ("chain", "direction", "classify at", "match", "sub-paths: pusher [segments]"):
        t.add_column(col, overflow="fold")
    for c in sr.chains:
        match = f"{' '.join(c.src)} -> {' '.join(c.dst)}"
        if c.protocol:
            match += f" {c.protocol}"
        if c.dport:
            match += f" dport {c.dport}"
        if c.sport:
            match += f" sport {c.sport}"
        subs = "\n".join(f"{who} [{', '.join(segs)}]" for who, segs in c.subpaths)
        t.add_row(c.chain, f"{c.direction} ({c.family})", c.ingress, match, subs)
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
    routes (with transit), tunnel MTU and TCP MSS. With SRv6 service chains: every SID
    with its behaviour and each chain's segment lists. Pure: touches nothing.
    """
    p = build_plan(load_intent(file))
    if json_:
        sys.stdout.write(p.to_json())
    else:
        print_plan(p)
