"""``polynimbus cut FILE SITE1 SITE2`` and ``polynimbus heal FILE [SITE1 SITE2]``: cut and
restore the internet path between two gateways of a running lab; ``polynimbus kill FILE
SITE/gateway``: a gateway dies (``polynimbus up FILE`` revives it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from polynimbus import capabilities
from polynimbus.cli.app import IntentFile, app, handle_errors, out
from polynimbus.cli.exec_ import resolve_node
from polynimbus.errors import LabNotFoundError, PolynimbusError
from polynimbus.intent import load_intent
from polynimbus.plan import build_plan
from polynimbus.plan.model import Plan
from polynimbus.targets.lab import faults, list_lab_namespaces

Site = Annotated[str, typer.Argument(help="A site of the intent.", show_default=False)]


def _running_plan(file: Path) -> Plan:
    capabilities.require_root("cut and heal")
    capabilities.require_tools(["ip", "nft"])
    plan = build_plan(load_intent(file))
    if not list_lab_namespaces(plan.name):
        raise LabNotFoundError(f"the lab {plan.name!r} is not up", f"run: polynimbus up {file}")
    return plan


def _public(plan: Plan, site: str) -> str:
    try:
        return plan.site(site).public_address
    except KeyError:
        raise PolynimbusError(
            f"no site {site!r} in {plan.name!r}",
            "sites: " + ", ".join(s.name for s in plan.sites),
        ) from None


@app.command()
@handle_errors
def cut(file: IntentFile, site1: Site, site2: Site) -> None:
    """Cut the internet path between two sites' gateways (lab only), to watch failover.

    The lab's internet router drops every packet between the two gateways' public
    addresses, both ways; the tunnel between them dies, everything else is untouched.
    With `overlay: {failover: true}` the gateways move that traffic through a detour site
    within a second (see the event log and `polynimbus monitor`).

    Example:

      polynimbus cut examples/prestocloud.yaml i3s aws-fra

    Undo with `polynimbus heal FILE SITE1 SITE2` (or `heal FILE` for every cut); `down`
    removes cuts with the lab.
    """
    plan = _running_plan(file)
    if site1 == site2:
        raise PolynimbusError("a path needs two different sites", f"e.g. {site1} and another")
    a, b = _public(plan, site1), _public(plan, site2)
    if faults.cut(plan.name, a, b):
        out.print(f"cut the internet path {site1} ({a}) <-> {site2} ({b})")
    else:
        out.print(f"the internet path {site1} <-> {site2} was already cut")
    out.print(f"heal it with: polynimbus heal {file} {site1} {site2}")


@app.command()
@handle_errors
def heal(
    file: IntentFile,
    sites: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[SITE1 SITE2]", help="The path to restore (default: every cut path)."
        ),
    ] = None,
) -> None:
    """Restore internet paths cut by `polynimbus cut` (lab only).

    Examples:

      polynimbus heal examples/prestocloud.yaml i3s aws-fra

      polynimbus heal examples/prestocloud.yaml
    """
    plan = _running_plan(file)
    if sites and len(sites) != 2:
        raise typer.BadParameter("give two sites, or none for every cut path")
    by_address = {s.public_address: s.name for s in plan.sites}
    if sites:
        healed = faults.heal(plan.name, _public(plan, sites[0]), _public(plan, sites[1]))
    else:
        healed = faults.heal(plan.name)
    if not healed:
        out.print("nothing to heal: no such cut path")
    for x, y in healed:
        out.print(f"healed {by_address.get(x, x)} <-> {by_address.get(y, y)}")


@app.command()
@handle_errors
def kill(
    file: IntentFile,
    target: Annotated[
        str,
        typer.Argument(
            metavar="SITE/gateway",
            help="The gateway to kill: SITE/gateway, or SITE/gateway-2 (a standby).",
            show_default=False,
        ),
    ],
) -> None:
    """Kill a gateway of a running lab (lab only), to watch a standby take over.

    Every interface of the gateway goes down and every process in it is killed at once
    (SIGKILL), as when a machine loses power. With `gateways: 2` on the site and
    `overlay: {failover: true}`, the standby takes the hosts' gateway address and the
    tunnels within a second (see the event log and `polynimbus monitor`).

    Example:

      polynimbus kill examples/two-gateways.yaml paris/gateway

    Revive it with `polynimbus up FILE`: links up, daemons started; the primary takes
    the gateway address back 1.5 s after it returns.
    """
    plan = _running_plan(file)
    site, _, node = target.partition("/")
    if node not in ("gateway", "gw", "gateway-2"):
        raise PolynimbusError(
            f"{target!r} is not a gateway", "write SITE/gateway or SITE/gateway-2"
        )
    _public(plan, site)  # the site exists
    if node == "gateway-2" and plan.site(site).standby is None:
        raise PolynimbusError(
            f"site {site!r} has one gateway", f"write {site}/gateway, or set gateways: 2"
        )
    ns = resolve_node(target, plan.name)
    killed = faults.kill_node(ns)
    out.print(f"killed {target}: links down, {len(killed)} process(es) killed")
    out.print(f"revive it with: polynimbus up {file}")
