"""``polynimbus up FILE``."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from polynimbus.apply import ApplyResult, Change
from polynimbus.cli.app import IntentFile, StateDir, app, err, handle_errors, out
from polynimbus.intent import Intent, load_intent
from polynimbus.orchestrate import lab_up


def run_up(
    intent: Intent,
    state_dir: object = None,
    rotate_keys: bool = False,
    dry_run: bool = False,
    quiet: bool = False,
) -> ApplyResult:
    """``up`` with a progress bar on stderr; returns the result."""
    started = time.monotonic()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet or dry_run or not err.is_terminal,
    ) as bar:
        task = bar.add_task("observing the lab", total=None)

        def progress(change: Change, i: int, n: int) -> None:
            bar.update(
                task,
                total=n,
                completed=i,
                description=f"{change.action} {change.resource.describe()}"[:70],
            )

        result = lab_up(
            intent,
            state_dir,  # type: ignore[arg-type]
            rotate_keys=rotate_keys,
            progress=progress,
            dry_run=dry_run,
        )
        bar.update(task, completed=len(result.changes))
    for w in result.warnings:
        err.print(f"warning: {w}", markup=False)
    elapsed = time.monotonic() - started
    if dry_run:
        for c in result.changes:
            out.print(f"  would {c.describe()}", markup=False)
        out.print(f"{len(result.changes)} changes would be made (dry run; nothing changed)")
    elif not result.changed:
        out.print(f"no changes: the lab {intent.name!r} already matches the plan ({elapsed:.1f} s)")
    else:
        n = result.counts()
        out.print(
            f"lab {intent.name!r} is up: {n['create']} created, {n['update']} updated, "
            f"{n['delete']} deleted in {elapsed:.1f} s"
        )
    return result


@app.command()
@handle_errors
def up(
    file: IntentFile,
    state_dir: StateDir = None,
    rotate_keys: Annotated[
        bool,
        typer.Option(
            "--rotate-keys",
            help="Replace every gateway's credentials: WireGuard keys, or a new CA and "
            "certificates (openvpn, ipsec, nebula); the tunnel daemons restart.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the changes; make none.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="List every change made.")
    ] = False,
) -> None:
    """Build or converge the emulated multi-cloud lab for an intent (needs root).

    Idempotent: a second run of an unchanged intent changes nothing and says so; a changed
    intent converges, touching only what changed. Interrupted (Ctrl-C, kill -9, a failing
    command), it completes when run again; 'polynimbus down' removes it.
    """
    intent = load_intent(file)
    result = run_up(intent, state_dir, rotate_keys=rotate_keys, dry_run=dry_run)
    if verbose and not dry_run:
        for c in result.changes:
            out.print(f"  {c.describe()}", markup=False)
