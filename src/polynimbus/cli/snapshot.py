"""``polynimbus snapshot save|list|diff|restore``: versioned snapshots of a lab's network
state (intent, plan and what is live), their differences, and restoring one."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.status import Status
from rich.table import Table

from polynimbus.apply import Change
from polynimbus.apply import Progress as Progress_
from polynimbus.cli.app import StateDir, app, choose_lab, err, handle_errors, out
from polynimbus.errors import PolynimbusError
from polynimbus.names import NAME_RE
from polynimbus.snapshot import store
from polynimbus.snapshot.lab import Step, describe, lab_state_dir, restore, save
from polynimbus.snapshot.lab import diff as snapshot_diff
from polynimbus.snapshot.model import SnapshotDiff

snapshot_app = typer.Typer(
    name="snapshot",
    help=(
        "Versioned snapshots of a lab's network state: its intent, its plan and what is "
        "live (namespaces, links, addresses, routes, rules, firewall tables, WireGuard "
        "configurations; never a private key).\n\n"
        "Examples:\n\n"
        "  polynimbus snapshot save before --lab prestocloud\n\n"
        "  polynimbus snapshot list --lab prestocloud\n\n"
        "  polynimbus snapshot diff before --lab prestocloud     (against the live lab)\n\n"
        "  polynimbus snapshot restore before --lab prestocloud --dry-run\n\n"
        "Snapshots live in the lab's state directory (snapshots/NAME.json, 0600) and "
        "'polynimbus down' removes them with the lab's keys."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(snapshot_app, name="snapshot")

Lab = Annotated[
    str | None,
    typer.Option("--lab", help="The lab (needed when several are up).", show_default=False),
]
Name = Annotated[
    str,
    typer.Argument(
        metavar="NAME", help="The snapshot's name (a DNS-like label).", show_default=False
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _pick(lab: str | None, state_dir: Path | None) -> tuple[str, Path]:
    """The lab (``--lab`` or the only one up) and its state directory."""
    if lab is not None and not NAME_RE.match(lab):
        raise typer.BadParameter(
            f"{lab!r} is not a lab name (1-32 lowercase letters, digits, inner hyphens)",
            param_hint="--lab",
        )
    if lab is None:
        lab, _ = choose_lab(None)
    return lab, lab_state_dir(lab, state_dir)


def _spinner(quiet: bool) -> tuple[AbstractContextManager[Any], Any]:
    """A spinner on stderr (off for JSON or when stderr is no terminal), and a step
    function that updates its text."""
    if quiet or not err.is_terminal:
        return nullcontext(), lambda _text: None
    status = Status("", console=err, spinner="dots")

    def step(text: str) -> None:
        status.update(text)

    return status, step


# ---------------------------------------------------------------------------- save
@snapshot_app.command("save")
@handle_errors
def save_cmd(
    name: Name,
    lab: Lab = None,
    state_dir: StateDir = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a snapshot of the same name.")
    ] = False,
) -> None:
    """Record the running lab's network state as snapshot NAME (needs root).

    Keeps the intent of the lab's last up (YAML), its plan (JSON) and every live
    resource polynimbus manages, read back from the kernel (sorted; payloads such as
    WireGuard private keys are never written), with a version number that grows with
    each save of the lab, the UTC time and counts.

    Examples:

      polynimbus snapshot save after --lab prestocloud

      polynimbus snapshot save after --lab prestocloud --force

    Exit status: 0 saved; 1 not saved (not root, the lab not up, the name taken without
    --force); 2 a bad command line (e.g. an invalid NAME); each with an error: line and a
    hint.
    """
    store.check_name(name)
    lab_name, sdir = _pick(lab, state_dir)
    started = time.monotonic()
    spinner, step = _spinner(False)
    with spinner:
        doc, path = save(lab_name, name, sdir, force=force, step=step)
    c = doc["counts"]
    out.print(
        f"saved snapshot {name!r} of lab {lab_name!r}: version {doc['version']}, "
        f"{c['sites']} sites, {c['hosts']} hosts, {c['tenants']} tenants, "
        f"{c['resources']} resources on {c['nodes']} nodes ({time.monotonic() - started:.1f} s)",
        markup=False,
    )
    out.print(f"  {path}", markup=False, soft_wrap=True)


# ---------------------------------------------------------------------------- list
@snapshot_app.command("list")
@handle_errors
def list_cmd(lab: Lab = None, state_dir: StateDir = None, json_: Json = False) -> None:
    """List the lab's snapshots, oldest version first.

    Columns: name, version, time (UTC), sites, hosts, tenants, resources.

    Examples:

      polynimbus snapshot list --lab prestocloud

      polynimbus snapshot list --lab prestocloud --json
    """
    lab_name, sdir = _pick(lab, state_dir)
    docs, problems = store.load_all(sdir)
    if json_:
        rows = [
            {
                "name": d["name"],
                "version": d["version"],
                "created": d["created"],
                "polynimbus": d.get("polynimbus"),
                "counts": d["counts"],
            }
            for d in docs
        ]
        sys.stdout.write(
            json.dumps({"lab": lab_name, "snapshots": rows, "problems": problems}, indent=2) + "\n"
        )
    elif not docs:
        out.print(
            f"no snapshots of lab {lab_name!r} (save one: polynimbus snapshot save NAME)",
            markup=False,
        )
    else:
        t = Table(title=f"Snapshots of lab {escape(lab_name)}", title_justify="left")
        for col in ("name", "version", "time (UTC)", "sites", "hosts", "tenants", "resources"):
            t.add_column(col, justify="left" if col in ("name", "time (UTC)") else "right")
        for d in docs:
            c = d["counts"]
            # stored text is text, never rich markup ("[/x]" would raise MarkupError)
            t.add_row(
                *(
                    escape(str(v))
                    for v in (
                        d["name"],
                        d["version"],
                        d["created"],
                        c.get("sites", "-"),
                        c.get("hosts", "-"),
                        c.get("tenants", "-"),
                        c.get("resources", "-"),
                    )
                )
            )
        out.print(t)
    for p in problems:
        err.print(f"warning: {p}", markup=False, soft_wrap=True)


# ---------------------------------------------------------------------------- diff
def print_diff(d: SnapshotDiff, verbose: bool = False) -> None:
    """The differences as text: intent objects, then resources grouped by node."""
    if d.identical:
        out.print(f"no differences: {d.a} and {d.b} are the same", markup=False)
        return
    out.print(f"differences from {d.a} to {d.b}:", markup=False)
    if d.intent or d.intent_unified:
        out.print("intent:")
        for ic in d.intent:
            out.print(f"  {ic.text()}", markup=False, soft_wrap=True)
        if not d.intent:
            out.print("  (layout or order only)")
        if verbose:
            for line in d.intent_unified:
                out.print(f"  {line}", markup=False, soft_wrap=True)
    if d.resources:
        out.print("resources (by node):")
    for node, changes in d.by_node().items():
        whole = next((c for c in changes if c.kind == "netns" and c.change != "changed"), None)
        if whole is not None and not verbose:
            sign = "+" if whole.change == "added" else "-"
            n = sum(1 for c in changes if c.change == whole.change) - 1
            out.print(f"  {sign} {node}: namespace {whole.change} with {n} resources", markup=False)
            rest = [c for c in changes if c.change != whole.change]
        else:
            out.print(f"  {node}:", markup=False)
            rest = changes
        for c in rest:
            sign = {"added": "+", "removed": "-", "changed": "~"}[c.change]
            detail = ": " + ", ".join(f.text() for f in c.fields) if c.fields else ""
            out.print(f"    {sign} {c.label}{detail}", markup=False, soft_wrap=True)
    counts = d.counts()
    out.print(
        f"{len(d.intent)} intent changes; resources: {counts['added']} added, "
        f"{counts['removed']} removed, {counts['changed']} changed",
        markup=False,
    )


@snapshot_app.command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(metavar="A", help="The older snapshot.", show_default=False)],
    b: Annotated[
        str | None,
        typer.Argument(
            metavar="B", help="The newer snapshot [default: the live lab].", show_default=False
        ),
    ] = None,
    lab: Lab = None,
    state_dir: StateDir = None,
    json_: Json = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "-v", "--verbose", help="Also print the intents' unified YAML diff, every resource."
        ),
    ] = False,
) -> None:
    """Show what differs between snapshot A and snapshot B, or the live lab (no B).

    Intent: sites, hosts (SITE/HOST), services, chains, tenants and networks
    (TENANT/NETWORK) added, removed or changed, with their fields (--verbose: the unified
    diff of the YAML). Resources: added (+), removed (-) or changed (~, with the fields
    that differ), grouped by node (namespace). Reading the live lab needs root.

    Examples:

      polynimbus snapshot diff before --lab prestocloud

      polynimbus snapshot diff before after --lab prestocloud --json

    Exit status, like diff(1): **0** no differences; **1** they differ; **2** trouble (no
    such snapshot, a snapshot that cannot be used: corrupt, or of another lab than the
    other side; the lab not up, not root, a bad command line), with an error: line.
    """
    try:
        _diff(a, b, lab, state_dir, json_, verbose)
    except PolynimbusError as exc:
        err.print(exc.render(), markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("\ninterrupted; nothing was changed.", markup=False)
        raise typer.Exit(130) from None


def _diff(
    a: str, b: str | None, lab: str | None, state_dir: Path | None, json_: bool, verbose: bool
) -> None:
    store.check_name(a)
    if b is not None:
        store.check_name(b)
    lab_name, sdir = _pick(lab, state_dir)
    spinner, step = _spinner(json_)
    with spinner:
        d = snapshot_diff(lab_name, a, b, sdir, step=step)
    if json_:
        sys.stdout.write(json.dumps(d.to_dict(), indent=2) + "\n")
    else:
        print_diff(d, verbose)
    if not d.identical:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- restore
@snapshot_app.command("restore")
@handle_errors
def restore_cmd(
    name: Name,
    lab: Lab = None,
    state_dir: StateDir = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the changes; make none.")
    ] = False,
) -> None:
    """Converge the lab back to snapshot NAME (needs root).

    Applies the snapshot's intent through the same engine as up: only what differs is
    changed, and each change is listed (a restore with nothing to do says so). Then reads
    the lab back and compares it with the snapshot's live state; anything that could not
    be restored is reported (e.g. a WireGuard key rotated since the snapshot: snapshots
    never hold private keys, so the lab keeps its current ones). The lab's stored intent
    becomes the snapshot's, so 'polynimbus snapshot diff NAME' then finds no difference.

    Examples:

      polynimbus snapshot restore before --lab prestocloud --dry-run

      polynimbus snapshot restore before --lab prestocloud

    Exit status: 0 restored, the live lab equals the snapshot; 1 the restore failed or
    something still differs (listed); 2 a bad command line (e.g. an invalid NAME), a
    snapshot that cannot be used (corrupt, another lab's) or an invalid stored intent.
    """
    store.check_name(name)
    lab_name, sdir = _pick(lab, state_dir)
    started = time.monotonic()
    with _restore_bar(dry_run) as (progress, step):
        result = restore(lab_name, name, sdir, progress=progress, dry_run=dry_run, step=step)
    for w in result.applied.warnings:
        err.print(f"warning: {w}", markup=False)
    what = describe(result.snapshot)
    changes = result.applied.changes
    if dry_run:
        for c in changes:
            out.print(f"  would {c.describe()}", markup=False, soft_wrap=True)
        out.print(
            f"{len(changes)} changes would restore {what} (dry run; nothing changed)"
            if changes
            else f"no changes needed: lab {lab_name!r} already matches the intent of {what}",
            markup=False,
        )
        return
    for c in changes:
        out.print(f"  {c.describe()}", markup=False, soft_wrap=True)
    elapsed = time.monotonic() - started
    if changes:
        n = result.applied.counts()
        out.print(
            f"restored {what} into lab {lab_name!r}: {n['create']} created, "
            f"{n['update']} updated, {n['delete']} deleted in {elapsed:.1f} s",
            markup=False,
        )
    else:
        out.print(
            f"no changes: lab {lab_name!r} already matches the intent of {what}", markup=False
        )
    if result.exact:
        out.print("the live lab equals the snapshot", markup=False)
        return
    out.print(f"{len(result.remaining)} resources still differ from the snapshot:", markup=False)
    for r in result.remaining:
        sign = {"added": "+", "removed": "-", "changed": "~"}[r.change]
        detail = ": " + ", ".join(f.text() for f in r.fields) if r.fields else ""
        out.print(f"  {sign} {r.label} on {r.node}{detail}", markup=False, soft_wrap=True)
    for note in result.notes:
        err.print(f"warning: {note}", markup=False, soft_wrap=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def _restore_bar(dry_run: bool) -> Iterator[tuple[Progress_, Step]]:
    """A progress bar for the changes, and a step text, on stderr (off for a dry run or
    when stderr is no terminal)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=dry_run or not err.is_terminal,
    ) as bar:
        task = bar.add_task("reading the snapshot", total=None)

        def progress(change: Change, i: int, n: int) -> None:
            what = f"{change.action} {change.resource.describe()}"
            bar.update(task, total=n, completed=i, description=what[:70])

        def step(text: str) -> None:
            bar.update(task, description=text[:70], total=None, completed=0)

        yield progress, step
