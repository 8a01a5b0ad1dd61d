"""``polynimbus exec TARGET -- CMD...``."""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer

from polynimbus import capabilities, names
from polynimbus.cli.app import app, choose_lab, handle_errors
from polynimbus.errors import LabNotFoundError, PolynimbusError
from polynimbus.targets.lab import list_lab_namespaces


def resolve_node(target: str, lab: str | None) -> str:
    """The namespace of ``TARGET`` (``SITE/HOST``, ``SITE/gateway``, ``SITE/gateway-2`` (the
    standby of a ``gateways: 2`` site; its LAN switch is ``SITE/lan``), ``SITE/nfv`` (the NFV
    node), ``SITE/SERVICE`` (a network function), ``TENANT:SITE/HOST`` (a tenant host),
    ``TENANT:SITE/router`` (a tenant's router) or ``internet``).

    Raises:
        LabNotFoundError: no lab is up, several are and ``lab`` is not given, or no such node.
    """
    lab, _ = choose_lab(lab)
    if target == "internet":
        ns = names.internet_ns(lab)
    elif target.count(":") == 1 and target.count("/") == 1:
        tenant, rest = target.split(":")
        site, host = rest.split("/")
        ns = names.tenant_host_ns(lab, site, tenant, host)
    elif target.count("/") == 1:
        site, host = target.split("/")
        ns = (
            names.gateway_ns(lab, site)
            if host in ("gateway", "gw")
            else names.host_ns(lab, site, host)
        )
    else:
        raise PolynimbusError(
            f"bad target {target!r}",
            "write SITE/HOST, SITE/gateway, TENANT:SITE/HOST or internet",
        )
    present = list_lab_namespaces(lab)
    if ns not in present:
        nodes = sorted(_node_name(n, lab) for n in present)
        raise LabNotFoundError(
            f"no node {target!r} in lab {lab!r}",
            "nodes: " + ", ".join(nodes) if nodes else "the lab is not up",
        )
    return ns


def _node_name(ns: str, lab: str) -> str:
    rest = ns[len(names.lab_prefix(lab)) :]
    parts = rest.split(".")
    if len(parts) == 3:  # SITE.TENANT.HOST
        return f"{parts[1]}:{parts[0]}/{parts[2]}"
    return rest if rest == "internet" else rest.replace(".", "/", 1)


@app.command(name="exec", context_settings={"allow_interspersed_args": False})
@handle_errors
def exec_(
    target: Annotated[
        str,
        typer.Argument(
            help="SITE/HOST, SITE/gateway, SITE/gateway-2, SITE/nfv, SITE/SERVICE, "
            "TENANT:SITE/HOST, "
            "TENANT:SITE/router or internet.",
            show_default=False,
        ),
    ],
    command: Annotated[
        list[str] | None,
        typer.Argument(help="The command and its arguments (after --).", show_default=False),
    ] = None,
    lab: Annotated[str | None, typer.Option("--lab", help="The lab, when several are up.")] = None,
) -> None:
    """Run a command inside a lab node, like 'docker exec'.

    TARGET is SITE/HOST, SITE/gateway, SITE/gateway-2 (the standby gateway of a site with
    gateways: 2), SITE/nfv (the NFV node of a site with service chains), SITE/SERVICE (a
    network function), TENANT:SITE/HOST (a tenant's host), TENANT:SITE/router (its
    virtual router on a site) or internet. --lab may come before
    or after TARGET;
    '--' then starts the command (needed when the command has options of its own, e.g.
    '-h', which would otherwise be taken as the command).
    Exits with the command's status.

    Examples:

      polynimbus exec i3s/app-1 -- ping -c 3 10.1.0.1

      polynimbus exec aws-fra/gateway -- nft list ruleset

      polynimbus exec --lab tenants acme:i3s/web-1 -- ping -c 1 172.16.0.50

      polynimbus exec --lab prestocloud internet -- ip route
    """
    command, lab = split_command(command or [], lab)
    if not command:
        raise PolynimbusError("no command given", "e.g. polynimbus exec SITE/HOST -- ip addr")
    capabilities.require_root("exec")
    capabilities.require_tools(["ip"])
    ns = resolve_node(target, lab)
    if shutil.which(command[0]) is None:
        raise PolynimbusError(
            f"command not found: {command[0]}",
            "the nodes share this host's files: install it here, or give its full path",
        )
    os.execvp("ip", ["ip", "netns", "exec", ns, *command])


def split_command(args: list[str], lab: str | None) -> tuple[list[str], str | None]:
    """Take ``--lab NAME`` / ``--lab=NAME`` given after TARGET and a ``--`` separator off
    the front of ``args``; the rest is the command.

    Returns:
        ``(command, lab)``.

    Raises:
        PolynimbusError: ``--lab`` without a value.
    """
    rest = list(args)
    while rest:
        head = rest[0]
        if head == "--":
            return rest[1:], lab
        if head == "--lab":
            if len(rest) < 2:
                raise PolynimbusError("--lab needs a lab name", "e.g. --lab prestocloud")
            lab, rest = rest[1], rest[2:]
        elif head.startswith("--lab="):
            lab, rest = head.split("=", 1)[1], rest[1:]
        else:
            break
    return rest, lab
