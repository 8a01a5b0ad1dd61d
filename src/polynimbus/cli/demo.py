"""``polynimbus demo``: the bundled three-site PrEstoCloud deployment, end to end."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from polynimbus.cli.app import Seconds, StateDir, app, err, handle_errors, out
from polynimbus.cli.plan import print_plan
from polynimbus.cli.up import run_up
from polynimbus.cli.verify import run_and_print
from polynimbus.intent import load_intent
from polynimbus.orchestrate import lab_down
from polynimbus.plan import build_plan


def bundled_example(name: str = "prestocloud.yaml") -> Path:
    """Path of a bundled example intent."""
    return Path(str(resources.files("polynimbus") / "examples" / name))


@app.command()
@handle_errors
def demo(
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Leave the lab up at the end (remove it later with polynimbus down)."
        ),
    ] = False,
    seconds: Seconds = 2,
    state_dir: StateDir = None,
) -> None:
    """Run the three-site PrEstoCloud lab end to end: up, verify --throughput, down.

    The bundled examples/prestocloud.yaml: a private OpenStack, AWS Frankfurt and Azure
    West Europe joined by WireGuard in a full mesh (seed 003, chapter 3). Needs root.
    """
    path = bundled_example()
    intent = load_intent(path)
    plan = build_plan(intent)
    out.rule(f"polynimbus demo: {path.name}")
    print_plan(plan)
    ok = False
    try:
        out.rule("up")
        run_up(intent, state_dir)
        out.rule("verify --throughput")
        report = run_and_print(plan, throughput=True, seconds=seconds, as_json=False)
        ok = report.ok
        out.rule("summary")
        hosts = sum(len(s.hosts) for s in plan.sites)
        out.print(
            f"{len(plan.sites)} sites, {hosts} hosts, {len(plan.tunnels)} "
            f"{plan.transport} tunnels ({plan.topology}); "
            f"{sum(p.reachable for p in report.pairs)}/{len(report.pairs)} host pairs "
            "reachable" + ("" if ok else " [red](FAILED)[/]")
        )
        ratios = [t.ratio for t in report.throughput if t.ratio]
        if ratios:
            out.print(
                f"overlay/underlay throughput: {min(ratios):.3f} to {max(ratios):.3f} "
                "(user-space WireGuard over TUN is far slower than the kernel path)"
            )
    finally:
        if keep:
            out.print(
                f"the lab is still up: polynimbus exec i3s/app-1 -- ping 10.1.0.1; "
                f"remove it with: polynimbus down {path}"
            )
        else:
            out.rule("down")
            err.print("taking the lab down...")
            lab_down(plan.name, state_dir)
            out.print(f"lab {plan.name!r} removed")
    if not ok:
        raise typer.Exit(1)
