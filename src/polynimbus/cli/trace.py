"""``polynimbus trace [FILE] CHAIN [--json] [--lab NAME]``: the path a probe of a chain
really took."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from polynimbus import capabilities, state
from polynimbus.cli.app import app, choose_lab, err, handle_errors, out
from polynimbus.errors import LabNotFoundError, VerifyError
from polynimbus.intent import Intent, load_intent, load_intent_text
from polynimbus.plan import build_plan
from polynimbus.targets.lab import list_lab_namespaces
from polynimbus.verify.chains import ChainResult, probe_chain


def print_trace(results: list[ChainResult]) -> None:
    """Each direction as a numbered hop list: node, behaviour, SID or segment list,
    packets the probe added there."""
    for r in results:
        t = Table(
            title=f"chain {r.chain}, {r.direction} ({r.family}): {r.src} -> {r.dst}",
            title_justify="left",
        )
        for col in ("#", "node", "what happens", "SID / segment list", "packets"):
            t.add_column(
                col, justify="right" if col in ("#", "packets") else "left", overflow="fold"
            )
        for i, h in enumerate(r.hops, 1):
            where = f"{h.site}/{h.node}"
            detail = h.sid or ""
            if h.segments:
                detail = (detail + " " if detail else "") + "push [" + ", ".join(h.segments) + "]"
            n = str(h.packets) if h.packets > 0 else "[red]0[/]"
            t.add_row(str(i), where, h.behaviour, detail, n)
        out.print(t)
        probe = []
        if r.ping is not None:
            probe.append("ping " + ("answered" if r.ping else "[red]not answered[/]"))
        if r.tcp_bps is not None:
            probe.append(f"bulk TCP {r.tcp_bps / 1e6:.0f} Mbit/s")
        if r.udp_echoed is not None:
            probe.append(f"UDP {r.udp_echoed} datagrams echoed")
        out.print("probe: " + ", ".join(probe))
        for e in r.errors:
            out.print(f"[red]problem[/]: {escape(e)}", soft_wrap=True)


@app.command()
@handle_errors
def trace(
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="[FILE] CHAIN",
            help="The chain's name, after the intent file (or alone: the running lab's).",
            show_default=False,
        ),
    ],
    json_: Annotated[bool, typer.Option("--json", help="Print the hops as JSON.")] = False,
    lab: Annotated[
        str | None, typer.Option("--lab", help="The lab, when several are up (CHAIN alone).")
    ] = None,
) -> None:
    """Send a probe through a service chain and print the path it really took, hop by hop.

    The probe is what the chain steers (a ping and a short bulk TCP transfer, or UDP
    datagrams to an echo responder, as its match allows), from its first source host to
    its first destination host. Each hop is read
    from counters in the lab, before and after the probe: the ingress gateway and the
    segment list it pushes, each function in order (SR-aware: End; SR-unaware: the
    connector's proxy decapsulates to it and re-encapsulates what comes back), and the
    egress gateway's decapsulation. Replies show a symmetric chain's reverse direction.

    With CHAIN alone, the lab is the one running (or --lab NAME) and its plan comes from
    the intent its last up kept in its state directory.

    Examples:

      polynimbus trace examples/service-chain.yaml web-v4

      polynimbus trace web-v6 --lab service-chain

    Exit status: 0 every hop saw the probe; 1 a hop saw nothing, or trace could not run
    (not root, the lab not up, no such chain); 2 an invalid intent or command line.
    """
    if len(args) == 2:
        file: Path | None = Path(args[0])
        chain = args[1]
    elif len(args) == 1:
        file, chain = None, args[0]
    else:
        raise typer.BadParameter(
            f"expected [FILE] CHAIN, got {len(args)} arguments "
            "(e.g. polynimbus trace examples/service-chain.yaml web-v4)",
            param_hint="[FILE] CHAIN",
        )
    capabilities.require_root("trace")
    if file is not None:
        plan = build_plan(load_intent(file))
        where = str(file)
    else:
        plan = build_plan(running_intent(lab))
        where = f"lab {plan.name!r}"
    capabilities.require_tools(["ip", "nft", "iperf3", "ping"])
    if not list_lab_namespaces(plan.name):
        raise LabNotFoundError(
            f"the lab {plan.name!r} is not up", f"run: polynimbus up {file or 'FILE'}"
        )
    if plan.srv6 is None or chain not in plan.srv6.chain_names():
        known = plan.srv6.chain_names() if plan.srv6 else []
        raise VerifyError(
            f"no chain named {chain!r} in {where}",
            "chains: " + ", ".join(known) if known else "the intent has no chains",
        )
    with err.status(f"probing chain {chain}", spinner="dots") if not json_ else nullcontext():
        results = probe_chain(plan, chain)
    if json_:
        sys.stdout.write(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    else:
        print_trace(results)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def running_intent(lab: str | None, usage: str = "polynimbus trace FILE CHAIN") -> Intent:
    """The intent of a running lab (``lab``, or the only one up), as its last ``up``
    kept it.

    Raises:
        LabNotFoundError: no lab is up, several are and ``lab`` is not given, or the lab
            has no kept intent (brought up by polynimbus 0.2 or older).
        IntentError: the kept intent no longer validates.
    """
    lab, labs = choose_lab(lab)
    if lab not in labs:
        raise LabNotFoundError(
            f"the lab {lab!r} is not up",
            f"labs up: {', '.join(labs)}" if labs else "run: polynimbus up FILE",
        )
    sdir = state.recorded_state_dir(lab)
    text = state.saved_intent(sdir) if sdir is not None else None
    if text is None:
        raise LabNotFoundError(
            f"the lab {lab!r} kept no intent in its state directory",
            f"give the intent file: {usage}",
        )
    return load_intent_text(text, str(sdir / state.INTENT_FILE) if sdir else None)
